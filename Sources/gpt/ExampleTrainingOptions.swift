import ArgumentParser
import Foundation
import GPTHub
import SwiftGPT

/// The defaults of a command that trains on a set of examples in epochs, which its `--help` shows.
protocol ExampleTrainingDefaults {
    static var epochs: Int { get }
    static var learningRate: Float { get }
    static var batchSize: Int { get }
    /// What a micro-batch counts, capitalized and in the plural ("Examples", "Pairs").
    static var examples: String { get }
    static var warmupFraction: Float { get }
}

/// The options of the commands that train on a set of examples in epochs (`gpt finetune`, `gpt reward train`, `gpt sft`):
/// output, resume and the loop's settings, with the command's own defaults.
struct ExampleTrainingOptions<Defaults: ExampleTrainingDefaults>: ParsableArguments {
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Continue the run in --out from its last checkpoint (its settings come from the checkpoint).") var resume = false
    @Option(help: "Passes over the training set.") var epochs = Defaults.epochs
    @Option(help: "Peak learning rate.") var learningRate = Defaults.learningRate
    @Option(help: ArgumentHelp("\(Defaults.examples) per micro-batch.")) var batchSize = Defaults.batchSize
    @Option(help: "Micro-batches per optimizer step.") var gradientAccumulation = 1
    @Option(help: "Warmup as a fraction of all steps.") var warmupFraction = Defaults.warmupFraction
    @Option(help: "Decay after warmup, to 0: linear or cosine.") var schedule = LearningRateSchedule.linear
    @Option(help: "Dropout in the body (default: the model's own).") var dropout: Float?
    @Option(help: "AdamW weight decay (matrices and embeddings only).") var weightDecay: Float = 0.01
    @Option(help: "Gradient-norm clip (0: off).") var gradientClip: Float = 1
    @Option(help: "Longest sequence in tokens (default: the model's context); longer inputs are cut.") var context: Int?
    @Option(help: "Steps between metric log lines.") var logInterval = 10
    @Option(help: "Random seed (head, new embeddings, order, dropout).") var seed: UInt64 = 1337
    @Option(help: "Matrix-product inputs: bf16 (mixed precision) or fp32 (default: bf16 where the CPU multiplies bf16 natively).") var precision: ProductPrecision?
    @Flag(help: "Under mpirun: each rank keeps AdamW's moments for its share of the parameters only (ZeRO stage 1).") var shardOptimizer = false
    @Option(help: "Under mpirun: seconds to wait for the other ranks in a collective operation before stopping with an error.") var rankTimeout: Double = 300
    @Option(help: "Keep the checkpoints of the last K saves too, as step-NNNNNNNN/ folders beside last/ (their files hard links to last/'s; default 0: last/ and best/ only).") var keepCheckpoints = 0

    /// The loop's settings for a new run starting from `model`: AdamW (0.9, 0.999), decay to 0.
    func configuration(model: String) throws -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.initFrom = try absoluteModelPath(model)
        c.out = out
        c.context = context
        c.dropout = dropout
        c.batchSize = batchSize
        c.gradientAccumulation = gradientAccumulation
        c.learningRate = learningRate
        c.minLearningRate = 0
        c.schedule = schedule
        c.beta1 = 0.9
        c.beta2 = 0.999
        c.weightDecay = weightDecay
        c.gradientClip = gradientClip
        c.logInterval = logInterval
        c.seed = seed
        c.precision = precision
        c.shardOptimizer = shardOptimizer
        c.rankTimeout = rankTimeout
        c.keepCheckpoints = keepCheckpoints
        return c
    }

    /// The run in --out resumed (which must be one `command` trains), or a new one.
    func trainer(_ command: TrainingCommand, newRun: () throws -> TrainingConfiguration) throws -> Trainer {
        guard resume else { return try Trainer(configuration: newRun()) }
        return try command.resume(out)
    }
}

/// An absolute path, so that a resumed run finds its files from any directory.
func absolutePath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

/// A model's absolute path, as `absolutePath`; a Hub name (`ORG/NAME`) becomes the folder of its cached snapshot, at
/// the commit it names now, so that a resumed run starts from the same weights.
func absoluteModelPath(_ path: String) throws -> String {
    if !FileManager.default.fileExists(atPath: path), HubCache.Reference(path) != nil { return try ModelLoading.resolve(path).path }
    return absolutePath(path)
}
