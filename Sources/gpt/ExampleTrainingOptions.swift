import ArgumentParser
import Foundation
import SwiftGPT

/// The options of the commands that train on a set of examples in epochs (`gpt finetune`, `gpt reward train`, `gpt sft`):
/// output, resume and the loop's settings. Where the commands' defaults differ, the option is optional and each
/// command gives its own `Defaults`.
struct ExampleTrainingOptions: ParsableArguments {
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Continue the run in --out from its last checkpoint (its settings come from the checkpoint).") var resume = false
    @Option(help: "Passes over the training set (default: fine-tuning 3, reward model 1, SFT 2).") var epochs: Int?
    @Option(help: "Peak learning rate (default: fine-tuning 6.25e-5, reward model 1e-5, SFT 5e-5).") var learningRate: Float?
    @Option(help: "Examples (reward model: pairs) per micro-batch (default: fine-tuning 32, reward model 8, SFT 8).") var batchSize: Int?
    @Option(help: "Micro-batches per optimizer step.") var gradientAccumulation = 1
    @Option(help: "Warmup as a fraction of all steps (default: fine-tuning 0.002, reward model and SFT 0.03).") var warmupFraction: Float?
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

    /// A command's own defaults.
    struct Defaults {
        var epochs: Int
        var learningRate: Float
        var batchSize: Int
        var warmupFraction: Float
    }

    /// The epochs and warmup fraction of a new run.
    func schedule(_ defaults: Defaults) -> (epochs: Int, warmupFraction: Float) {
        (epochs ?? defaults.epochs, warmupFraction ?? defaults.warmupFraction)
    }

    /// The loop's settings for a new run starting from `model`: AdamW (0.9, 0.999), decay to 0.
    func configuration(model: String, defaults: Defaults) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.initFrom = Self.absolute(model)
        c.out = out
        c.context = context
        c.dropout = dropout
        c.batchSize = batchSize ?? defaults.batchSize
        c.gradientAccumulation = gradientAccumulation
        c.learningRate = learningRate ?? defaults.learningRate
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

    /// The run in --out resumed (which must be a run of this kind, `kind` naming it in the error), or a new one.
    func trainer(kind: String, isKind: (TrainingConfiguration) -> Bool, newRun: () throws -> TrainingConfiguration) throws -> Trainer {
        guard resume else { return try Trainer(configuration: newRun()) }
        let trainer = try Trainer.resume(output: URL(fileURLWithPath: out))
        guard isKind(trainer.configuration) else { throw CommandError("\(out) is not a \(kind) run") }
        print("resuming \(out) at step \(trainer.step)")
        return trainer
    }

    /// An absolute path, so that a resumed run finds its files from any directory.
    static func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
}
