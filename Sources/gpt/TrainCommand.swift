import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Pretrain a GPT on a prepared data directory (next-token prediction).",
        discussion: """
        Settings come from --config (a JSON file with the field names of TrainingConfiguration, e.g. \
        {"preset": "baby", "maxIterations": 2000}) and then from flags, which win. The output directory gets \
        last/ (the latest checkpoint: Hugging Face model files, tokenizer, optimizer and loop state), best/ (the \
        model with the lowest validation loss), metrics.jsonl and loss.svg. --resume continues the run in --out \
        exactly where it stopped. SIGINT (Ctrl-C), SIGTERM and SIGHUP write a checkpoint and exit 0.
        """
    )

    @Option(help: "JSON file with settings (flags override it).") var config: String?
    @Option(help: "Model preset: \(GPTConfig.presets.keys.sorted().joined(separator: ", ")).") var preset: String?
    @Option(help: "Number of layers (overrides the preset).") var layers: Int?
    @Option(help: "Attention heads (overrides the preset).") var heads: Int?
    @Option(help: "Attention kind per layer, cycled: global, local, strided, local+strided, fixed (e.g. global,local alternates as GPT-3).") var attention: String?
    @Option(help: "Window of the local attention layers.") var window: Int?
    @Option(help: "Stride of the strided attention layers, block of the fixed ones (default: the window).") var stride: Int?
    @Option(help: "Summaries per block of the fixed attention layers (default 8, at most the block).") var summaries: Int?
    @Option(help: "Embedding width (overrides the preset; MLP is 4x).") var width: Int?
    @Option(help: "Context length and training window (overrides the preset).") var context: Int?
    @Option(help: "Dropout probability.") var dropout: Float?
    @Option(help: "Prepared data directory (from `gpt prepare`).") var data: String?
    @Option(help: "Output directory.") var out: String?
    @Option(help: "scratch, or a model to start from: a directory (SwiftGPT or Hugging Face GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode) or a Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull).") var initFrom: String?
    @Flag(help: "Continue the run in --out from its last checkpoint.") var resume = false
    @Option(help: "Sequences per micro-batch.") var batchSize: Int?
    @Option(help: "Micro-batches per optimizer step.") var gradientAccumulation: Int?
    @Option(help: "Optimizer steps in all.") var maxIterations: Int?
    @Option(help: "Peak learning rate.") var learningRate: Float?
    @Option(help: "Learning rate at the end of the cosine decay.") var minLearningRate: Float?
    @Option(help: "Linear warmup steps.") var warmupIterations: Int?
    @Option(help: "Steps of cosine decay (default: max iterations).") var decayIterations: Int?
    @Option(help: "AdamW beta1.") var beta1: Float?
    @Option(help: "AdamW beta2.") var beta2: Float?
    @Option(help: "AdamW epsilon.") var epsilon: Float?
    @Option(help: "AdamW weight decay (matrices and embeddings only).") var weightDecay: Float?
    @Option(help: "Gradient-norm clip (0: off).") var gradientClip: Float?
    @Option(help: "Steps between evaluations and checkpoints.") var evalInterval: Int?
    @Option(help: "Batches per evaluation.") var evalIterations: Int?
    @Option(help: "Steps between metric log lines.") var logInterval: Int?
    @Option(help: "Random seed (weights, batches, dropout).") var seed: UInt64?
    @Option(help: "Matrix-product inputs: bf16 (mixed precision) or fp32 (default: bf16 where the CPU multiplies bf16 natively).") var precision: ProductPrecision?

    @Flag(help: "Under mpirun: each rank keeps AdamW's moments for its share of the parameters only (ZeRO stage 1).") var shardOptimizer = false
    @Option(help: "Under mpirun: seconds to wait for the other ranks in a collective operation before stopping with an error (default 300).") var rankTimeout: Double?
    @Option(help: "Keep the checkpoints of the last K saves too, as step-NNNNNNNN/ folders beside last/ (their files hard links to last/'s; default 0: last/ and best/ only).") var keepCheckpoints: Int?

    func settings() throws -> TrainingConfiguration {
        var c = TrainingConfiguration()
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else { throw CommandError("cannot read \(config)") }
            do { c = try JSONDecoder().decode(TrainingConfiguration.self, from: data) } catch {
                throw CommandError("\(config): not a valid training configuration (\(error))")
            }
        }
        if let preset { c.preset = preset }
        if let layers { c.layers = layers }
        if let heads { c.heads = heads }
        if let attention { c.attention = attention.split(separator: ",").map { String($0) } }
        if let window { c.window = window }
        if let stride { c.stride = stride }
        if let summaries { c.summaries = summaries }
        if let width { c.width = width }
        if let context { c.context = context }
        if let dropout { c.dropout = dropout }
        if let data { c.data = data }
        if let out { c.out = out }
        if let initFrom { c.initFrom = initFrom }
        if let batchSize { c.batchSize = batchSize }
        if let gradientAccumulation { c.gradientAccumulation = gradientAccumulation }
        if let maxIterations { c.maxIterations = maxIterations }
        if let learningRate { c.learningRate = learningRate }
        if let minLearningRate { c.minLearningRate = minLearningRate }
        if let warmupIterations { c.warmupIterations = warmupIterations }
        if let decayIterations { c.decayIterations = decayIterations }
        if let beta1 { c.beta1 = beta1 }
        if let beta2 { c.beta2 = beta2 }
        if let epsilon { c.epsilon = epsilon }
        if let weightDecay { c.weightDecay = weightDecay }
        if let gradientClip { c.gradientClip = gradientClip }
        if let evalInterval { c.evalInterval = evalInterval }
        if let evalIterations { c.evalIterations = evalIterations }
        if let logInterval { c.logInterval = logInterval }
        if let seed { c.seed = seed }
        if let precision { c.precision = precision }
        if shardOptimizer { c.shardOptimizer = true }
        if let rankTimeout { c.rankTimeout = rankTimeout }
        if let keepCheckpoints { c.keepCheckpoints = keepCheckpoints }
        return c
    }

    func run() throws {
        let trainer: Trainer
        if resume {
            guard let out else { throw ValidationError("--resume needs --out, the directory of the run to continue") }
            trainer = try TrainingCommand.train.resume(out, maxIterations: maxIterations)
        } else {
            trainer = try Trainer(configuration: settings())
        }
        try TrainingRun.run(trainer)
    }
}
