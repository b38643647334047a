import Foundation
import XCTest

/// Training runs that are stopped as people and machines stop them: SIGTERM and SIGHUP (as SIGINT) write a
/// checkpoint and exit 0, and a SIGKILL at any system call of a checkpoint save loses nothing: `--resume` continues
/// from a complete checkpoint and ends with the same weights, bit for bit, as a run never stopped.
final class InterruptionTests: XCTestCase {
    private var gpt: URL { packageRoot.appendingPathComponent(".build/release/gpt") }

    /// Tiny Shakespeare prepared at character level in a fresh folder.
    private func preparedData() throws -> URL {
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let data = try temporaryDirectory(self).appendingPathComponent("chars")
        let (status, output) = try runCapturingOutput(gpt, ["prepare", "--tokenizer", "char", "--out", data.path,
                                                            packageRoot.appendingPathComponent("data/tinyshakespeare/input.txt").path])
        XCTAssertEqual(status, 0, output)
        return data
    }

    private func train(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runCapturingOutput(gpt, ["train", "--preset", "baby", "--eval-iterations", "1", "--precision", "fp32"] + arguments)
    }

    private func weights(_ run: URL) throws -> Data {
        try Data(contentsOf: run.appendingPathComponent("last/model.safetensors"))
    }

    func testSIGTERMSIGHUPAndSIGUSR1WriteACheckpointAndExitZero() throws {
        let data = try preparedData()
        let folder = try temporaryDirectory(self)
        let reference = folder.appendingPathComponent("reference")
        let finished = try train(["--data", data.path, "--out", reference.path, "--max-iterations", "200", "--eval-interval", "1000"])
        XCTAssertEqual(finished.status, 0, finished.output)
        for (name, number) in [("SIGTERM", SIGTERM), ("SIGHUP", SIGHUP), ("SIGUSR1", SIGUSR1)] {
            let out = folder.appendingPathComponent(name)
            let process = Process()
            process.executableURL = gpt
            process.arguments = ["train", "--preset", "baby", "--eval-iterations", "1", "--precision", "fp32", "--data", data.path,
                                 "--out", out.path, "--max-iterations", "200", "--eval-interval", "1000", "--log-interval", "1"]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            // Signal once training has begun.
            var log = ""
            while !log.contains("step 3/") {
                let chunk = pipe.fileHandleForReading.availableData
                guard !chunk.isEmpty else { break }
                log += String(decoding: chunk, as: UTF8.self)
            }
            kill(process.processIdentifier, number)
            log += String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, "\(name): \(log)")
            XCTAssertTrue(log.contains("interrupted at step"), "\(name): \(log)")
            let state = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("last/training_state.json"))) as? [String: Any]
            let step = try XCTUnwrap(state?["step"] as? Int, "\(name): the checkpoint's step")
            XCTAssertLessThan(step, 200, "\(name) stopped the run early")
            let resumed = try runCapturingOutput(gpt, ["train", "--resume", "--out", out.path])
            XCTAssertEqual(resumed.status, 0, resumed.output)
            XCTAssertEqual(try weights(out), try weights(reference), "\(name) at step \(step), then --resume: the weights of a run never stopped")
        }
    }

    /// `--keep-checkpoints K` leaves the newest K saves as `step-NNNNNNNN/` folders that share last/'s files, and
    /// `--resume` continues from the newest of them, exactly, when `last/` is gone.
    func testKeptStepCheckpointsResumeExactlyWhenLastIsGone() throws {
        let data = try preparedData()
        let run = try temporaryDirectory(self).appendingPathComponent("run")
        let finished = try train(["--data", data.path, "--out", run.path, "--max-iterations", "8", "--eval-interval", "2",
                                  "--keep-checkpoints", "2"])
        XCTAssertEqual(finished.status, 0, finished.output)
        let fm = FileManager.default
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: run.path).filter { $0.hasPrefix("step-") }.sorted(),
                       ["step-00000006", "step-00000008"], "the two newest saves are kept")
        let inode = { (path: String) in try XCTUnwrap(fm.attributesOfItem(atPath: path)[.systemFileNumber] as? Int) }
        XCTAssertEqual(try inode(run.appendingPathComponent("step-00000008/model.safetensors").path),
                       try inode(run.appendingPathComponent("last/model.safetensors").path), "the newest kept save shares last/'s files")
        let expected = try weights(run)
        try fm.removeItem(at: run.appendingPathComponent("last"))
        try fm.removeItem(at: run.appendingPathComponent("step-00000008"))
        let resumed = try runCapturingOutput(gpt, ["train", "--resume", "--out", run.path])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resuming from step-00000006"), resumed.output)
        XCTAssertEqual(try weights(run), expected, "resumed from step 6: the weights of the run never stopped")
        let refused = try train(["--data", data.path, "--out", run.path + "-bad", "--keep-checkpoints=-1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("checkpoints to keep"), refused.output)
    }

    /// Kills the run (SIGKILL, through strace's fault injection) at the n-th call of each file system call a
    /// checkpoint save makes — every mkdir, fsync, rename, renameat2, unlink, rmdir and link of the saves of `last/`,
    /// `best/` and the kept step checkpoint (`--keep-checkpoints 1`: the new one written, the old one removed) — then
    /// resumes; every resumed run must end with the weights of a run never killed. Skips without strace.
    func testAKillAtAnySystemCallOfACheckpointSaveLosesNothing() throws {
        let strace = URL(fileURLWithPath: "/usr/bin/strace")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: strace.path), "strace is not installed (apt-get install strace)")
        let data = try preparedData()
        let folder = try temporaryDirectory(self)
        // A run at step 2 (its checkpoint complete), continued to step 3: that continuation saves best/ and last/,
        // keeps step 3 and removes step 2.
        let start = folder.appendingPathComponent("start")
        let first = try train(["--data", data.path, "--out", start.path, "--max-iterations", "2", "--eval-interval", "100",
                               "--keep-checkpoints", "1"])
        XCTAssertEqual(first.status, 0, first.output)
        let reference = folder.appendingPathComponent("reference")
        try FileManager.default.copyItem(at: start, to: reference)
        let calls = ["mkdir", "mkdirat", "fsync", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "link", "linkat"]
        let trace = folder.appendingPathComponent("trace.txt")
        let traced = try runCapturingOutput(strace, ["-f", "-qq", "-o", trace.path, "-e", "trace=" + calls.joined(separator: ","),
                                                     gpt.path, "train", "--resume", "--out", reference.path, "--max-iterations", "3"])
        XCTAssertEqual(traced.status, 0, traced.output)
        let expected = try weights(reference)
        // How many times the continuation makes each call.
        var counts: [String: Int] = [:]
        for line in try String(contentsOf: trace, encoding: .utf8).split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 1)
            guard words.count == 2, let name = words[1].drop(while: { $0 == " " }).split(separator: "(").first.map(String.init), calls.contains(name) else { continue }
            counts[name, default: 0] += 1
        }
        XCTAssertGreaterThan(counts["fsync", default: 0], 0, "the saves flush their files")
        XCTAssertGreaterThan(counts["renameat2", default: 0] + counts["rename", default: 0], 0)
        var kills = 0
        for (call, count) in counts.sorted(by: { $0.key < $1.key }) {
            for n in 1...count {
                let run = folder.appendingPathComponent("kill-\(call)-\(n)")
                try FileManager.default.copyItem(at: start, to: run)
                let killed = try runCapturingOutput(strace, ["-f", "-qq", "-o", "/dev/null", "-e", "trace=\(call)",
                                                             "-e", "inject=\(call):signal=KILL:when=\(n)",
                                                             gpt.path, "train", "--resume", "--out", run.path, "--max-iterations", "3"])
                if killed.status != 0 { kills += 1 }
                let resumed = try runCapturingOutput(gpt, ["train", "--resume", "--out", run.path, "--max-iterations", "3"])
                XCTAssertEqual(resumed.status, 0, "killed at \(call) #\(n): \(resumed.output)")
                XCTAssertEqual(try weights(run), expected, "killed at \(call) #\(n), then resumed")
                let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.path).filter { $0.hasPrefix(".") }
                XCTAssertEqual(leftovers, [], "killed at \(call) #\(n): what the interrupted save left is removed")
                XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run.path).filter { $0.hasPrefix("step-") }, ["step-00000003"],
                               "killed at \(call) #\(n): the newest step is kept, the older one removed")
                try FileManager.default.removeItem(at: run)
            }
        }
        XCTAssertGreaterThan(kills, 20, "the runs were killed")
        print("killed a checkpointing run at \(kills) system calls (\(counts.sorted(by: { $0.key < $1.key }).map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))); every resume ended bit-exact")
    }
}
