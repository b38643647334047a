import ArgumentParser
import Foundation
import GPTBenchmarks
import GPTUtilities
import SwiftGPT
import TensorCore

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure speed (build with -c release for meaningful figures).",
        subcommands: [TrainBench.self, ForwardBench.self, GenerateBench.self, AttentionBench.self, TokenizerBench.self]
    )
}

/// Options shared by the model benchmarks.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model preset: \(GPTConfig.presets.keys.sorted().joined(separator: ", ")).")
    var preset = "gpt2"

    @Option(help: "Random seed for weights and tokens.")
    var seed: UInt64 = 0

    @Option(help: "Context length (overrides the preset's).")
    var context: Int?

    @Option(help: "Attention kind per layer, cycled: global, local, strided, local+strided, fixed (overrides the preset's).")
    var attention: String?

    @Option(help: "Window of the local layers.")
    var window = 256

    @Option(help: "Stride of the strided layers, block of the fixed ones (default: the window).")
    var stride: Int?

    @Option(help: "Summaries per block of the fixed layers (default 8, at most the block).")
    var summaries: Int?

    @Option(help: "Block design at the preset's sizes: gpt2 (the preset's own), gpt-neox (rotary positions on a quarter of each head, parallel attention and MLP, untied output layer), gpt-j (the same with one LayerNorm, bias-free attention and an output bias), gpt-bigcode (one key/value head).")
    var blocks = BlockDesign.gpt2

    /// A family's block design, applied to a preset's sizes.
    enum BlockDesign: String, ExpressibleByArgument {
        case gpt2, gptNeoX = "gpt-neox", gptJ = "gpt-j", gptBigCode = "gpt-bigcode"

        func apply(to c: inout GPTConfig) {
            switch self {
            case .gpt2: return
            case .gptNeoX, .gptJ:
                c.positions = .rotary
                c.rotaryDimensions = max(2, c.headWidth / 4 / 2 * 2)
                c.tiedOutputEmbedding = false
                c.layout = self == .gptNeoX ? .parallel : .parallelSharedNorm
                if self == .gptJ {
                    c.attentionBias = false
                    c.attentionOutputBias = false
                    c.outputBias = true
                }
            case .gptBigCode: c.keyValueHeadCount = 1
            }
        }
    }

    /// The preset without dropout (benchmarks compare compute, as the reference runs do).
    func presetWithoutDropout() throws -> GPTConfig {
        var c = try GPTConfig.preset(preset)
        blocks.apply(to: &c)
        c.dropout = 0
        if let context { c.contextLength = context }
        if let attention {
            c.attentionPatterns = try GPTConfig.patterns(cycling: attention.split(separator: ",").map(String.init), window: window,
                                                         stride: stride, summaries: summaries, layers: c.layerCount)
        }
        try c.validate()
        return c
    }

    func randomIDs(count: Int, vocabulary: Int) -> [Int32] {
        var random = SeededRandom(seed: seed &+ 1)
        return (0..<count).map { _ in Int32(random.nextInt(below: vocabulary)) }
    }
}

/// Options of the benchmarks that time passes over whole sequences (train, forward).
struct PassOptions: ParsableArguments {
    @Option(help: "Sequence length in tokens.")
    var seq = 256

    @Option(name: .customLong("precision"), help: "Matrix-product inputs: fp32 or bf16 (default: bf16 where the CPU multiplies bf16 natively).")
    var requestedPrecision: ProductPrecision?

    var precision: ProductPrecision { requestedPrecision ?? .machineDefault }

    /// The model to time, from its preset without dropout, and `batch` rows of --seq random tokens, after checking
    /// the options.
    func model(_ model: ModelOptions, batch: Int, steps: Int) throws -> (GPTModel, ids: [Int32]) {
        let c = try model.presetWithoutDropout()
        guard seq > 0, seq <= c.contextLength else {
            throw ValidationError("--seq must be in 1...\(c.contextLength) for preset \(model.preset)")
        }
        guard batch > 0, steps > 0 else { throw ValidationError("--batch and --steps must be positive") }
        return (try GPTModel(config: c, seed: model.seed), model.randomIDs(count: batch * seq, vocabulary: c.vocabularySize))
    }
}

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time training steps: forward, backward and AdamW.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var passes: PassOptions
    @Option(help: "Sequences per step.") var batch = 4
    @Option(help: "Timed steps (after one warm-up step).") var steps = 5

    func run() throws {
        let (gpt, ids) = try passes.model(model, batch: batch, steps: steps)
        let peakBefore = Benchmark.peakGEMM(precision: passes.precision)
        let optimizer = AdamW(parameters: gpt.parameters, settings: .init(beta1: 0.9, beta2: 0.95, weightDecay: 0.1))
        print("model: \(model.preset), \(gpt.parameters.count) parameters; batch \(batch) × seq \(passes.seq); precision \(passes.precision.rawValue)")
        var times: [Double] = []
        for step in 0...steps {
            var loss: Float = 0
            let t = Benchmark.time {
                gpt.parameters.zeroGradients()
                let tape = Tape(precision: passes.precision)
                let logits = gpt.logits(gpt.hidden(ids: ids, batch: batch, tape: tape).final, tape: tape)
                let l = gpt.languageModelLoss(logits, ids: ids, batch: batch, tape: tape)
                loss = l.value[flat: 0]
                tape.backward(from: l)
                optimizer.step(learningRate: 1e-4, gradientScale: gpt.parameters.gradientClipping(maximum: 1).scale)
            }
            if step > 0 { times.append(t) }
            print(String(format: "step %d: %.1f ms, loss %.4f", step, t * 1000, loss) + (step == 0 ? " (warm-up)" : ""))
        }
        // Measured before and after the steps: on a shared machine one measurement alone can land in a slow spell.
        let peak = max(peakBefore, Benchmark.peakGEMM(precision: passes.precision))
        print("peak \(passes.precision.rawValue) matrix product: "
              + String(format: "%.1f GFLOP/s (2048³, %d threads, best before and after the steps)", peak, Parallel.threadCount))
        let seconds = Benchmark.median(times)
        let tokens = batch * passes.seq
        let flops = Benchmark.trainingFLOPs(gpt.config, tokens: tokens, length: passes.seq)
        print(String(format: "median %.1f ms/step, %.0f tokens/s, %.1f GFLOP/s, MFU %.1f%% of measured peak, peak RSS %.0f MiB",
                     seconds * 1000, Double(tokens) / seconds, flops / seconds / 1e9, 100 * flops / seconds / 1e9 / peak,
                     Double(Benchmark.peakResidentBytes()) / 1_048_576))
    }
}

struct ForwardBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward", abstract: "Time inference forward passes (prefill: logits for every position).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var passes: PassOptions
    @Option(help: "Sequences per pass.") var batch = 1
    @Option(help: "Timed passes (after one warm-up pass).") var steps = 5

    func run() throws {
        let (gpt, ids) = try passes.model(model, batch: batch, steps: steps)
        var times: [Double] = []
        for step in 0...steps {
            let t = Benchmark.time {
                let tape = Tape(recording: false, precision: passes.precision)
                _ = gpt.logits(gpt.hidden(ids: ids, batch: batch, tape: tape).final, tape: tape)
            }
            if step > 0 { times.append(t) }
        }
        let seconds = Benchmark.median(times)
        print("forward \(model.preset) \(passes.precision.rawValue) " + String(format: "batch %d × seq %d: median %.1f ms, %.0f tokens/s, peak RSS %.0f MiB",
                     batch, passes.seq, seconds * 1000, Double(batch * passes.seq) / seconds,
                     Double(Benchmark.peakResidentBytes()) / 1_048_576))
    }
}

struct AttentionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Time the training attention kernel (forward, and forward + backward) by pattern and length.",
        discussion: """
        One line per length: forward and forward + backward median times, and the peak memory of forward + \
        backward beyond its input (kept probabilities, output, scratch and the input's gradient, as tensors hold \
        them). \
        scripts/bench_attention_pytorch.py runs PyTorch's scaled_dot_product_attention on the same shapes.
        """
    )

    @Option(help: "dense, local, strided, local+strided or fixed.") var pattern = "dense"
    @Option(help: "Window of the local pattern.") var window = 256
    @Option(help: "Stride of the strided patterns, block of the fixed one (default: the window).") var stride: Int?
    @Option(help: "Summaries per block of the fixed pattern (default 8, at most the block).") var summaries: Int?
    @Option(help: "Sequence lengths, comma-separated.") var seq = "1024,2048,4096"
    @Option(help: "Attention heads.") var heads = 12
    @Option(help: "Width of a head.") var headWidth = 64
    @Option(help: "Timed repetitions (after one warm-up).") var steps = 3
    @Flag(help: "Recompute the probabilities in backward at every length (by default they are kept up to 256 MiB a call).")
    var recompute = false

    func run() throws {
        let kind = pattern == "dense" ? "global" : pattern
        guard GPTConfig.attentionKindNames.contains(kind) else {
            throw ValidationError("--pattern takes dense, local, strided, local+strided or fixed")
        }
        guard heads > 0, headWidth > 0, steps > 0 else { throw ValidationError("--heads, --head-width and --steps must be positive") }
        let attention: AttentionPattern
        do {
            attention = try GPTConfig.patterns(cycling: [kind], window: window, stride: stride, summaries: summaries, layers: 1)[0]
        } catch { throw ValidationError("\(error)") }
        guard attention.isValid else { throw ValidationError("the pattern \(attention) has sizes out of range") }
        let lengths = try positiveIntegers(seq, option: "--seq")
        let width = heads * headWidth, budget = recompute ? 0 : Tape.attentionProbabilityBudget
        for length in lengths {
            var random = SeededRandom(seed: 1)
            let qkv = Tensor.normal(shape: [1, length, 3 * width], using: &random)
            let seed = Tensor.normal(shape: [1, length, width], using: &random)
            var forward: [Double] = [], both: [Double] = [], held = 0
            for step in 0...steps {
                var unused = SeededRandom(seed: 0)
                let f = Benchmark.time {
                    _ = Tape(recording: false).causalSelfAttention(Variable(qkv), heads: heads, dropout: 0, random: &unused,
                                                                   pattern: attention, probabilityBudget: budget)
                }
                let before = TensorMemory.liveBytes
                TensorMemory.resetPeak()
                let b = Benchmark.time {
                    let tape = Tape()
                    let input = Variable(qkv, requiresGrad: true)
                    let y = tape.causalSelfAttention(input, heads: heads, dropout: 0, random: &unused, pattern: attention,
                                                     probabilityBudget: budget)
                    tape.backward(from: y, seed: seed)
                }
                held = max(held, TensorMemory.peakBytes - before)
                if step > 0 { forward.append(f); both.append(b) }
            }
            let name = switch attention {
            case .dense: "dense"
            case .local(let window): "local (w=\(window))"
            case .strided(1, let stride): "strided (s=\(stride))"
            case .strided(let window, let stride): "local+strided (w=\(window), s=\(stride))"
            case .fixed(let block, let summaries): "fixed (l=\(block), c=\(summaries))"
            }
            print("attention \(name) " + String(format: "B1 H%d d%d T=%d: forward %.1f ms, forward+backward %.1f ms, memory %.1f MiB",
                         heads, headWidth, length, Benchmark.median(forward) * 1000, Benchmark.median(both) * 1000,
                         Double(held) / 1_048_576))
        }
    }
}

struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Decoding speed with the key/value cache, at batch 1 and at a larger batch.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Prompt length in tokens.") var promptTokens = 16
    @Option(help: "New tokens per sequence.") var newTokens = 128
    @Option(help: "Batch sizes to measure, comma-separated.") var batch = "1,8"
    @Option(help: "Sampling temperature of the next tokens (0: the most likely), chosen within the timed step as a server does.")
    var temperature: Float = 0
    @Option(help: "Format of the weights decoding streams: fp32, bf16, int8 (per output channel) or int4 (per 32 inputs).") var precision = WeightFormat.float32
    @Option(help: "Keys and values the cache keeps: fp32 or bf16.") var cachePrecision = CachedAttention.Cache.Precision.float32
    @Option(help: "Bytes of released tensor buffers kept for reuse, as gpt serve --pool-bytes (default: the library's bound, 8 GiB).")
    var poolBytes: Int?

    func run() throws {
        if let poolBytes {
            guard poolBytes >= 0 else { throw ValidationError("--pool-bytes must not be negative") }
            TensorMemory.poolLimitBytes = poolBytes
        }
        let batches = try positiveIntegers(batch, option: "--batch")
        let c = try model.presetWithoutDropout()
        guard promptTokens > 0, newTokens > 0, promptTokens + newTokens <= c.contextLength else {
            throw ValidationError("need prompt + new tokens within the context of \(c.contextLength)")
        }
        let gpt = try GPTModel(config: c, seed: model.seed)
        let weights = DecodeWeights(model: gpt, format: precision)
        let weightBytes = Double(weights.bytes)
        print("model: \(model.preset), \(gpt.parameters.count) parameters ("
              + String(format: "%.0f", weightBytes / 1e6) + " MB of \(precision.rawValue) weights read per decoding step)")
        for b in batches {
            let session = InferenceSession(model: gpt, sequences: b, weights: weights, cachePrecision: cachePrecision)
            let prompts = (0..<b).map { s in (sequence: s, tokens: model.randomIDs(count: promptTokens, vocabulary: c.vocabularySize)) }
            let prefill = try Benchmark.time { _ = try session.feed(prompts) }
            var options = SamplingOptions()
            options.temperature = temperature
            var samplers = (0..<b).map { TokenSampler(options: options, stream: UInt64($0)) }
            var next = (0..<b).map { _ in Int32(0) }
            var times: [Double] = []
            for _ in 0..<newTokens {
                times.append(try Benchmark.time {
                    let logits = try session.feed((0..<b).map { ($0, [next[$0]]) })
                    for s in 0..<b {
                        next[s] = samplers[s].next(logits.pointer + s * c.vocabularySize, vocabulary: c.vocabularySize, context: [], generated: [:])
                    }
                })
            }
            let total = times.reduce(0, +), perStep = total / Double(newTokens)
            print(String(format: "batch %d: %.1f tokens/s (%.2f ms/step, %.1f GB/s of weights; prefill of %d tokens %.1f ms)",
                         b, Double(b * newTokens) / total, perStep * 1000, weightBytes / perStep / 1e9, promptTokens * b, prefill * 1000))
        }
    }
}

/// The numbers of a comma-separated list given to `option`, each positive.
func positiveIntegers(_ list: String, option: String) throws -> [Int] {
    try list.split(separator: ",", omittingEmptySubsequences: false).map { item in
        guard let n = Int(item), n > 0 else { throw ValidationError("\(option) takes positive integers separated by commas") }
        return n
    }
}

extension ProductPrecision: ExpressibleByArgument {}
extension WeightFormat: ExpressibleByArgument {}
extension CachedAttention.Cache.Precision: ExpressibleByArgument {}
