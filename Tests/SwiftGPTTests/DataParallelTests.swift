import Foundation
import SwiftGPT
import TensorCore
import XCTest

/// `gpt train` under `mpirun -np 2` (Open MPI): two ranks of batch B step as one process of batch 2B, and a resumed
/// data-parallel run continues exactly. Skips without mpirun or a release build.
final class DataParallelTests: XCTestCase {
    private var gpt: URL { packageRoot.appendingPathComponent(".build/release/gpt") }

    private func mpirun() throws -> URL {
        let url = ["/usr/bin/mpirun", "/usr/local/bin/mpirun", "/opt/homebrew/bin/mpirun"].map(URL.init(fileURLWithPath:))
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
        try XCTSkipIf(url == nil, "mpirun is not installed (make deps installs Open MPI)")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        return url!
    }

    /// Runs `executable` with `arguments`; fails the test with its output when it exits non-zero.
    private func run(_ executable: URL, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFTGPT_THREADS"] = "1"
        // Containers often forbid the cross-memory attach Open MPI's shared-memory transport tries first.
        environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        let (status, output) = try runCapturingOutput(executable, arguments, environment: environment)
        XCTAssertEqual(status, 0, output, file: file, line: line)
    }

    private func trainingArguments(batch: Int, out: URL, data: URL) -> [String] {
        ["train", "--data", data.path, "--out", out.path, "--preset", "baby", "--layers", "2", "--heads", "2",
         "--width", "32", "--context", "32", "--dropout", "0", "--batch-size", String(batch),
         "--learning-rate", "3e-3", "--warmup-iterations", "2", "--eval-interval", "3", "--eval-iterations", "2",
         "--log-interval", "1", "--precision", "fp32", "--seed", "3"]
    }

    private func train(ranks: Int, batch: Int, out: URL, data: URL, extra: [String] = []) throws {
        let arguments = trainingArguments(batch: batch, out: out, data: data) + extra
        if ranks == 1 {
            try run(gpt, arguments)
        } else {
            try run(try mpirun(), ["-np", String(ranks), "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                                   "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path] + arguments)
        }
    }

    private func prepared(in folder: URL) throws -> URL {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("data/tinyshakespeare/input.txt"), encoding: .utf8)
        let corpus = folder.appendingPathComponent("corpus.txt")
        try String(text.prefix(60_000)).write(to: corpus, atomically: true, encoding: .utf8)
        let data = folder.appendingPathComponent("data")
        try run(gpt, ["prepare", "--tokenizer", "char", "--out", data.path, corpus.path])
        return data
    }

    private func parameters(_ run: URL) throws -> [String: [Float]] {
        let file = try SafeTensors(contentsOf: run.appendingPathComponent("last/model.safetensors"))
        return try Dictionary(uniqueKeysWithValues: file.names.map { ($0, try file.tensor($0).scalars) })
    }

    /// The per-step values of `key` in a run's metrics.
    private func logged(_ key: String, _ run: URL) throws -> [Double] {
        let text = try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?[key] as? Double
        }
    }

    func testTwoRanksStepAsOneProcessWithTheDoubleBatch() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let single = folder.appendingPathComponent("single"), parallel = folder.appendingPathComponent("parallel")
        try train(ranks: 1, batch: 8, out: single, data: data, extra: ["--max-iterations", "6"])
        try train(ranks: 2, batch: 4, out: parallel, data: data, extra: ["--max-iterations", "6"])
        // Losses and gradient norms agree to rounding: the ranks' mean gradient is the double batch's.
        for key in ["train_loss", "grad_norm"] {
            let (a, b) = (try logged(key, single), try logged(key, parallel))
            XCTAssertEqual(a.count, 6)
            XCTAssertEqual(b.count, 6, "only rank 0 writes metrics")
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5 * abs(x), key) }
        }
        // Parameters after six AdamW steps agree to 2e-4 of each tensor's norm (measured: at most 1.2e-4, in biases):
        // AdamW divides by √v + ε, which magnifies rounding in elements whose gradients are tiny. With ε = 1e-4,
        // above those gradients' scale, they agree to 1e-5 (measured: 3e-7), as the summation order alone leaves them.
        func compare(_ single: URL, _ parallel: URL, within tolerance: Float) throws {
            let (p, q) = (try parameters(single), try parameters(parallel))
            XCTAssertEqual(p.keys.sorted(), q.keys.sorted())
            for (name, values) in p {
                let norm = values.map { $0 * $0 }.reduce(0, +).squareRoot()
                let difference = zip(values, q[name]!).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
                XCTAssertLessThanOrEqual(difference, tolerance * norm, name)
            }
        }
        try compare(single, parallel, within: 2e-4)
        let epsilon = ["--max-iterations", "6", "--epsilon", "1e-4"]
        let (singleWide, parallelWide) = (folder.appendingPathComponent("single-wide-epsilon"), folder.appendingPathComponent("parallel-wide-epsilon"))
        try train(ranks: 1, batch: 8, out: singleWide, data: data, extra: epsilon)
        try train(ranks: 2, batch: 4, out: parallelWide, data: data, extra: epsilon)
        try compare(singleWide, parallelWide, within: 1e-5)
    }

    /// SIGUSR1 to mpirun, which forwards it to the ranks (SIGTERM it answers by killing them after a few seconds,
    /// and exits 1): every rank finishes the step, rank 0 writes the checkpoint, the job exits 0 and resumes.
    func testSIGUSR1ToMpirunCheckpointsAndExitsZero() throws {
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let out = folder.appendingPathComponent("run")
        let process = Process()
        process.executableURL = try mpirun()
        process.arguments = ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                             "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path]
            + trainingArguments(batch: 4, out: out, data: data) + ["--max-iterations", "100000", "--eval-interval", "100000"]
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFTGPT_THREADS"] = "1"
        environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        // Signal once training has begun (the ranks' output reaches mpirun in blocks: watch the metrics log).
        let deadline = Date().addingTimeInterval(120)
        while (try? logged("train_loss", out).count) ?? 0 < 5 && Date() < deadline && process.isRunning { usleep(100_000) }
        kill(process.processIdentifier, SIGUSR1)
        let log = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, log)
        XCTAssertTrue(log.contains("interrupted at step"), log)
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("last/training_state.json"))) as? [String: Any]
        let step = try XCTUnwrap(state?["step"] as? Int)
        try run(try mpirun(), ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                               "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path,
                               "train", "--resume", "--out", out.path, "--max-iterations", String(step + 2)])
    }

    func testAResumedDataParallelRunContinuesExactly() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let whole = folder.appendingPathComponent("whole"), resumed = folder.appendingPathComponent("resumed")
        // With dropout: each rank's masks come from its own stream, which the resumed run continues.
        let dropout = ["--dropout", "0.1"]
        try train(ranks: 2, batch: 4, out: whole, data: data, extra: ["--max-iterations", "9", "--decay-iterations", "9"] + dropout)
        try train(ranks: 2, batch: 4, out: resumed, data: data, extra: ["--max-iterations", "6", "--decay-iterations", "9"] + dropout)
        try run(try mpirun(), ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                               "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path,
                               "train", "--resume", "--out", resumed.path, "--max-iterations", "9"])
        XCTAssertEqual(try parameters(resumed), try parameters(whole))
        XCTAssertEqual(try logged("train_loss", resumed), try logged("train_loss", whole))
    }

    /// Two nodes (network namespaces of this machine, Open MPI over TCP: scripts/two_node_mpirun.sh) train exactly as
    /// two ranks on one node do. Skips where network namespaces cannot be made (not root, no iproute2).
    func testTwoNodesOverTCPTrainAsTwoLocalRanks() throws {
        _ = try mpirun()
        try XCTSkipIf(getuid() != 0, "network namespaces need root")
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let local = folder.appendingPathComponent("local"), nodes = folder.appendingPathComponent("nodes")
        let steps = ["--max-iterations", "6"]
        try train(ranks: 2, batch: 4, out: local, data: data, extra: steps)
        let (status, output) = try runCapturingOutput(packageRoot.appendingPathComponent("scripts/two_node_mpirun.sh"),
                                                      [gpt.path] + trainingArguments(batch: 4, out: nodes, data: data) + steps)
        try XCTSkipIf([2, 3].contains(status), "no network namespaces here: \(output)")
        XCTAssertEqual(status, 0, output)
        XCTAssertEqual(try logged("train_loss", nodes), try logged("train_loss", local))
        XCTAssertEqual(try parameters(nodes), try parameters(local))
    }

    /// ZeRO-1: with each rank keeping AdamW's moments for its share of the parameters, the steps are those of the
    /// unsharded run, and the checkpoint (moments collected on rank 0) resumes exactly.
    func testShardedOptimizerStepsAsTheUnshardedOneAndResumes() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let whole = folder.appendingPathComponent("whole"), sharded = folder.appendingPathComponent("sharded")
        try train(ranks: 2, batch: 4, out: whole, data: data, extra: ["--max-iterations", "9", "--decay-iterations", "9"])
        try train(ranks: 2, batch: 4, out: sharded, data: data,
                  extra: ["--max-iterations", "6", "--decay-iterations", "9", "--shard-optimizer"])
        let moments = try SafeTensors(contentsOf: sharded.appendingPathComponent("last/optimizer.safetensors"))
        XCTAssertEqual(moments.entries["exp_avg"]?.shape, [try parameters(whole).values.reduce(0) { $0 + $1.count }],
                       "the checkpoint holds the whole arena's moments")
        try run(try mpirun(), ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                               "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path,
                               "train", "--resume", "--out", sharded.path, "--max-iterations", "9"])
        // Bit for bit: the shares' gradient sums, norm and updates are the unsharded run's arithmetic.
        XCTAssertEqual(try logged("train_loss", sharded), try logged("train_loss", whole))
        XCTAssertEqual(try logged("grad_norm", sharded), try logged("grad_norm", whole))
        XCTAssertEqual(try parameters(sharded), try parameters(whole))
    }

    /// Ranks started with different settings stop at start with an error that says so, before training.
    func testRanksWithDifferentSettingsAreRefusedAtStart() throws {
        let mpirun = try mpirun()
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let out = folder.appendingPathComponent("run")
        let arguments = [gpt.path] + trainingArguments(batch: 4, out: out, data: data) + ["--max-iterations", "3"]
        // Open MPI's MPMD form: rank 0 and rank 1 get different command lines (different seeds).
        let (status, output) = try runCapturingOutput(mpirun, [
            "--oversubscribe", "--allow-run-as-root", "-x", "OMPI_MCA_btl_vader_single_copy_mechanism=none",
            "-np", "1"] + arguments + ["--seed", "1", ":", "-np", "1"] + arguments + ["--seed", "2"])
        XCTAssertNotEqual(status, 0, output)
        XCTAssertTrue(output.contains("the ranks of this run were given different settings"), output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("metrics.jsonl").path))
    }

    /// A rank that stops answering (SIGSTOP) makes the others give up after --rank-timeout with a clear error, the
    /// job ends, and the run resumes from its last checkpoint.
    func testAHungRankEndsTheRunWithinTheTimeoutAndTheRunResumes() throws {
        let (output, log) = try startLongRun(extra: ["--rank-timeout", "3"])
        let rank = try rankProcess(1)
        kill(rank, SIGSTOP)
        defer { kill(rank, SIGKILL) }
        let (status, seconds) = try waitForExit(output.job, within: 90)
        let text = try String(contentsOf: log, encoding: .utf8)
        XCTAssertNotEqual(status, 0, text)
        XCTAssertTrue(text.contains("no answer from the other ranks"), text)
        XCTAssertLessThan(seconds, 60, "the job ends within a bounded time of the hang")
        try resumeTwoMoreSteps(output.directory)
    }

    /// A rank that dies (SIGKILL) ends the whole job promptly instead of leaving the others waiting; the run resumes.
    func testADeadRankEndsTheJobAndTheRunResumes() throws {
        let (output, log) = try startLongRun(extra: [])
        kill(try rankProcess(1), SIGKILL)
        let (status, seconds) = try waitForExit(output.job, within: 90)
        let text = try String(contentsOf: log, encoding: .utf8)
        XCTAssertNotEqual(status, 0, text)
        XCTAssertLessThan(seconds, 60)
        try resumeTwoMoreSteps(output.directory)
    }

    private var longRun: (job: Process, directory: URL)?

    /// Starts a 2-rank run that would go on for long, and waits until it has written a checkpoint and gone on.
    /// PPO on 2 ranks: each samples and scores half of the rollout with the streams one process uses, so the first
    /// rollout's figures equal one process's, and after its updates the parameters agree to rounding.
    func testPPOOnTwoRanksMatchesOneProcess() throws {
        let mpirun = try mpirun()
        let folder = try temporaryDirectory(self)
        let c = try PolicyOptimizationTests.setup(in: folder)
        let s = c.policyOptimization!
        func arguments(_ out: URL) -> [String] {
            ["ppo", "--policy", c.initFrom, "--reward", s.reward, "--prompts", s.prompts, "--out", out.path, "--iterations", "1",
             "--rollout-size", "16", "--epochs-per-rollout", "2", "--batch-size", "8", "--max-new-tokens", "6",
             "--kl-coefficient", "0.02", "--learning-rate", "1e-2", "--precision", "fp32", "--seed", "3",
             "--held-out", String(s.heldOutPrompts)]
        }
        let one = folder.appendingPathComponent("one"), two = folder.appendingPathComponent("two")
        try run(gpt, arguments(one))
        try run(mpirun, ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                         "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path] + arguments(two))
        func rollouts(_ out: URL) throws -> [[String: Any]] {
            try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
                .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .filter { $0["score"] != nil }
        }
        let (first, second) = (try rollouts(one), try rollouts(two))
        XCTAssertEqual(first.count, second.count)
        for key in ["score", "held_out_score", "kl", "entropy", "response_length", "value_mean"] {
            let a = try XCTUnwrap(first.first?[key] as? Double), b = try XCTUnwrap(second.first?[key] as? Double)
            XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(a)), key)
        }
        let (alone, ranks) = (try ModelLoading.load(one.appendingPathComponent("last").path).0,
                              try ModelLoading.load(two.appendingPathComponent("last").path).0)
        for name in alone.parameters.names {
            for (a, b) in zip(alone.parameters[name].value.scalars, ranks.parameters[name].value.scalars) {
                XCTAssertEqual(a, b, accuracy: 1e-4, name)
            }
        }
    }

    private func startLongRun(extra: [String]) throws -> (output: (job: Process, directory: URL), log: URL) {
        let mpirun = try mpirun()
        let folder = try temporaryDirectory(self)
        let data = try prepared(in: folder)
        let out = folder.appendingPathComponent("run"), log = folder.appendingPathComponent("log.txt")
        XCTAssertTrue(FileManager.default.createFile(atPath: log.path, contents: nil))
        let job = Process()
        job.executableURL = mpirun
        job.arguments = ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS=1",
                         "-x", "OMPI_MCA_btl_vader_single_copy_mechanism=none", gpt.path, "train", "--data", data.path,
                         "--out", out.path, "--preset", "baby", "--layers", "1", "--heads", "2", "--width", "32", "--context", "32",
                         "--batch-size", "4", "--max-iterations", "1000000", "--eval-interval", "5", "--eval-iterations", "1",
                         "--log-interval", "1", "--precision", "fp32"] + extra
        job.standardOutput = try FileHandle(forWritingTo: log)
        job.standardError = job.standardOutput
        try job.run()
        addTeardownBlock { if job.isRunning { kill(job.processIdentifier, SIGKILL) } }
        longRun = (job, out)
        let deadline = Date().addingTimeInterval(120)
        while (try? logged("train_loss", out).count) ?? 0 < 8 {
            guard job.isRunning, Date() < deadline else {
                XCTFail("the run stopped or is too slow: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
                throw XCTSkip("no run to fault")
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return ((job, out), log)
    }

    /// The process of rank `rank` of the long run (a child of its mpirun).
    private func rankProcess(_ rank: Int) throws -> pid_t {
        let job = try XCTUnwrap(longRun).job
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let parent = stat.split(separator: ")").last?.split(separator: " ").dropFirst().first.flatMap({ Int32($0) }),
                  parent == job.processIdentifier,
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  environment.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" })
            else { continue }
            return pid
        }
        throw XCTSkip("cannot find the process of rank \(rank) in /proc")
    }

    private func waitForExit(_ job: Process, within limit: TimeInterval) throws -> (status: Int32, seconds: TimeInterval) {
        let start = Date()
        while job.isRunning {
            if Date().timeIntervalSince(start) > limit {
                kill(job.processIdentifier, SIGKILL)
                XCTFail("mpirun still runs \(Int(limit)) s after the fault")
                break
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        job.waitUntilExit()
        return (job.terminationStatus, Date().timeIntervalSince(start))
    }

    /// Resumes the run in `directory` from its last checkpoint for two more steps, on two ranks.
    private func resumeTwoMoreSteps(_ directory: URL) throws {
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: directory.appendingPathComponent("last/training_state.json"))) as? [String: Any]
        let step = try XCTUnwrap(state?["step"] as? Int)
        try run(try mpirun(), ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                               "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path,
                               "train", "--resume", "--out", directory.path, "--max-iterations", String(step + 2)])
        XCTAssertEqual(try logged("train_loss", directory).count, step + 2)
    }

    /// A one-layer model with GPT-2's vocabulary saved in `folder/base`, and the first 24 and the next 8 lines of
    /// `data` (in the project's data folder) as train and dev files: what the example-training commands start from.
    private func exampleRun(_ data: String, in folder: URL) throws -> (base: URL, train: URL, dev: URL) {
        let base = folder.appendingPathComponent("base")
        let model = try GPTModel(config: GPTConfig(vocabularySize: 50257, contextLength: 64, layerCount: 1, headCount: 2, embeddingWidth: 16), seed: 2)
        try TrainingCheckpoint.save(model: model, tokenizer: try TokenizerLoading.gpt2(), optimizer: nil, state: nil, to: base)
        let lines = try String(contentsOf: packageRoot.appendingPathComponent(data), encoding: .utf8).split(separator: "\n").prefix(32).map(String.init)
        return (base, try writeLines(Array(lines.prefix(24)), "train.jsonl", in: folder), try writeLines(Array(lines.suffix(8)), "dev.jsonl", in: folder))
    }

    /// Runs `gpt ARGUMENTS` as one process of batch 8 and under mpirun as 2 ranks of batch 4, and checks that the
    /// metrics `keys` agree at every step and evaluation, within `tolerance` of their size.
    private func assertTwoRanksOfFourMatchOneProcessOfEight(_ arguments: [String], keys: [String], tolerance: Double = 1e-5,
                                                            in folder: URL) throws {
        let mpirun = try mpirun()
        let single = folder.appendingPathComponent("single"), parallel = folder.appendingPathComponent("parallel")
        try run(gpt, arguments + ["--batch-size", "8", "--out", single.path])
        try run(mpirun, ["-np", "2", "--oversubscribe", "--allow-run-as-root", "-x", "SWIFTGPT_THREADS",
                         "-x", "OMPI_MCA_btl_vader_single_copy_mechanism", gpt.path] + arguments + ["--batch-size", "4", "--out", parallel.path])
        for key in keys {
            let (a, b) = (try logged(key, single), try logged(key, parallel))
            XCTAssertEqual(a.count, b.count, key)
            XCTAssertFalse(a.isEmpty, key)
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: tolerance * max(abs(x), 1e-3), key) }
        }
    }

    /// SFT weighs each rank's reply-token mean by its share of the micro-batch's reply tokens, so 2 ranks of batch 4
    /// step as one process of batch 8 although the ranks hold different numbers of reply tokens.
    func testSupervisedFineTuningOnTwoRanksEqualsOneProcess() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let (base, train, dev) = try exampleRun("data/alpaca/train.jsonl", in: folder)
        try assertTwoRanksOfFourMatchOneProcessOfEight(
            ["sft", "--model", base.path, "--train", train.path, "--dev", dev.path, "--epochs", "1", "--learning-rate", "1e-3",
             "--dropout", "0", "--precision", "fp32", "--samples", "0", "--log-interval", "1"], keys: ["train_loss", "val_loss"], in: folder)
    }

    /// LoRA under MPI: only the adapter's gradients are averaged (and, with --shard-optimizer, only its moments
    /// shared out), and 2 ranks of batch 4 step as one process of batch 8.
    func testLoRAOnTwoRanksEqualsOneProcess() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let (base, train, dev) = try exampleRun("data/alpaca/train.jsonl", in: folder)
        try assertTwoRanksOfFourMatchOneProcessOfEight(
            ["sft", "--model", base.path, "--train", train.path, "--dev", dev.path, "--epochs", "1", "--learning-rate", "1e-2",
             "--dropout", "0", "--precision", "fp32", "--samples", "0", "--log-interval", "1", "--lora-rank", "4", "--lora-dropout", "0",
             "--shard-optimizer"], keys: ["train_loss", "val_loss"], in: folder)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("parallel/last/adapter_model.safetensors").path))
    }

    /// DPO: each rank computes the reference's log-probabilities of every pair, and 2 ranks of 4 pairs step as one
    /// process of 8.
    func testDPOOnTwoRanksEqualsOneProcess() throws {
        _ = try mpirun()
        let folder = try temporaryDirectory(self)
        let (base, train, dev) = try exampleRun("data/hh-rlhf/train.jsonl", in: folder)
        try assertTwoRanksOfFourMatchOneProcessOfEight(
            ["dpo", "--policy", base.path, "--train", train.path, "--dev", dev.path, "--epochs", "2", "--learning-rate", "1e-2",
             "--precision", "fp32", "--log-interval", "1"],
            // The margin is a difference of rewards, which rounding moves relatively more.
            keys: ["train_loss", "val_loss", "val_margin"], tolerance: 1e-4, in: folder)
        XCTAssertNotEqual(try logged("val_loss", folder.appendingPathComponent("single")).last, log(2.0), "the policy moved")
    }
}
