import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure speed (build with -c release for meaningful figures).",
        subcommands: [TrainBench.self, ForwardBench.self, TokenizerBench.self]
    )
}

/// Options shared by the model benchmarks.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model preset: \(GPTConfig.presets.keys.sorted().joined(separator: ", ")).")
    var preset = "gpt2"

    @Option(help: "Sequence length in tokens.")
    var seq = 256

    @Option(help: "Random seed for weights and tokens.")
    var seed: UInt64 = 0

    /// The preset without dropout (benchmarks compare compute, as the reference runs do).
    func config() throws -> GPTConfig {
        var c = try GPTConfig.preset(preset)
        c.dropout = 0
        guard seq > 0, seq <= c.contextLength else {
            throw ValidationError("--seq must be in 1...\(c.contextLength) for preset \(preset)")
        }
        return c
    }

    func randomIDs(count: Int, vocabulary: Int) -> [Int32] {
        var random = SeededRandom(seed: seed &+ 1)
        return (0..<count).map { _ in Int32(random.nextInt(below: vocabulary)) }
    }
}

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time training steps: forward, backward and AdamW.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Sequences per step.") var batch = 4
    @Option(help: "Timed steps (after one warm-up step).") var steps = 5

    func run() throws {
        let c = try model.config()
        guard batch > 0, steps > 0 else { throw ValidationError("--batch and --steps must be positive") }
        let peak = Benchmark.peakGEMM()
        print(String(format: "peak sgemm: %.1f GFLOP/s (2048³, %d threads)", peak, Parallel.threadCount))
        let gpt = try GPTModel(config: c, seed: model.seed)
        let optimizer = AdamW(parameters: gpt.parameters, settings: .init(beta1: 0.9, beta2: 0.95, weightDecay: 0.1))
        let ids = model.randomIDs(count: batch * model.seq, vocabulary: c.vocabularySize)
        print("model: \(model.preset), \(gpt.parameters.count) parameters; batch \(batch) × seq \(model.seq)")
        var times: [Double] = []
        for step in 0...steps {
            var loss: Float = 0
            let t = Benchmark.time {
                gpt.parameters.zeroGradients()
                let tape = Tape()
                let logits = gpt.logits(gpt.hidden(ids: ids, batch: batch, tape: tape).final, tape: tape)
                let l = gpt.languageModelLoss(logits, ids: ids, batch: batch, tape: tape)
                loss = l.value[flat: 0]
                tape.backward(from: l)
                gpt.parameters.clipGradientNorm(to: 1)
                optimizer.step(learningRate: 1e-4)
            }
            if step > 0 { times.append(t) }
            print(String(format: "step %d: %.1f ms, loss %.4f%@", step, t * 1000, loss, step == 0 ? " (warm-up)" : ""))
        }
        let seconds = Benchmark.median(times)
        let tokens = batch * model.seq
        let flops = Benchmark.trainingFLOPs(c, tokens: tokens, length: model.seq)
        print(String(format: "median %.1f ms/step, %.0f tokens/s, %.1f GFLOP/s, MFU %.1f%% of measured peak, peak RSS %.0f MiB",
                     seconds * 1000, Double(tokens) / seconds, flops / seconds / 1e9, 100 * flops / seconds / 1e9 / peak,
                     Double(Benchmark.peakResidentBytes()) / 1_048_576))
    }
}

struct ForwardBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward", abstract: "Time inference forward passes (prefill: logits for every position).")

    @OptionGroup var model: ModelOptions
    @Option(help: "Sequences per pass.") var batch = 1
    @Option(help: "Timed passes (after one warm-up pass).") var steps = 5

    func run() throws {
        let c = try model.config()
        guard batch > 0, steps > 0 else { throw ValidationError("--batch and --steps must be positive") }
        let gpt = try GPTModel(config: c, seed: model.seed)
        let ids = model.randomIDs(count: batch * model.seq, vocabulary: c.vocabularySize)
        var times: [Double] = []
        for step in 0...steps {
            let t = Benchmark.time {
                let tape = Tape(recording: false)
                _ = gpt.logits(gpt.hidden(ids: ids, batch: batch, tape: tape).final, tape: tape)
            }
            if step > 0 { times.append(t) }
        }
        let seconds = Benchmark.median(times)
        print(String(format: "forward %@ batch %d × seq %d: median %.1f ms, %.0f tokens/s, peak RSS %.0f MiB",
                     model.preset, batch, model.seq, seconds * 1000, Double(batch * model.seq) / seconds,
                     Double(Benchmark.peakResidentBytes()) / 1_048_576))
    }
}
