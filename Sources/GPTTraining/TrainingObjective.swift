import Foundation
import GPTModels
import TensorCore

/// What a training run optimises. `Trainer` owns the loop (schedule, accumulation, clipping, AdamW, evaluation,
/// checkpoints, resume); an objective owns the data and the loss: pretraining (`LanguageModelObjective`) and
/// fine-tuning (`FineTuningObjective`) are objectives of the same loop.
public protocol TrainingObjective: AnyObject {
    /// Records on `tape` the loss of micro-batch `microBatch` (of `count`) of optimizer step `step`, already
    /// weighted so that the micro-batch losses of a step add up to the step's loss; returns it with the number of
    /// token positions it ran, or nil when that micro-batch holds no data (the end of an epoch). Batches drawn at
    /// random come from `data`; dropout masks from `dropout`.
    func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                        dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)?

    /// Evaluates the model as it is after `step` optimizer steps.
    func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation
}

/// The figures of one evaluation.
public struct Evaluation: Sendable {
    /// Named figures for metrics.jsonl (`val_loss` among them).
    public var metrics: [String: Double]
    /// Higher is better: the run keeps the model with the highest score in `best/`.
    public var score: Double
    /// One line for the console.
    public var summary: String

    public init(metrics: [String: Double], score: Double, summary: String) {
        self.metrics = metrics
        self.score = score
        self.summary = summary
    }
}
