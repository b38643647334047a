import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// What a training run optimises. `Trainer` owns the loop (schedule, accumulation, clipping, AdamW, evaluation,
/// checkpoints, resume); an objective owns the data and the loss: pretraining (`LanguageModelObjective`),
/// fine-tuning (`FineTuningObjective`), reward modelling (`RewardObjective`), supervised fine-tuning
/// (`SupervisedFineTuningObjective`) and PPO (`PolicyOptimizationObjective`) are objectives of the same loop.
package protocol TrainingObjective: AnyObject {
    /// Records on `tape` the loss of micro-batch `microBatch` (of `count`) of optimizer step `step`, already
    /// weighted so that the micro-batch losses of a step add up to the step's loss; returns it with the number of
    /// token positions it ran, or nil when that micro-batch holds no data (the end of an epoch). Batches drawn at
    /// random come from `data`; dropout masks from `dropout`.
    func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                        dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)?

    /// Makes the data of the steps from `step` on when it comes from the model itself (PPO samples its rollout at
    /// the start of each iteration); called before the loop evaluates or trains at `step`, and before the run's final
    /// evaluation. Objectives whose data is fixed do nothing.
    func prepare(step: Int) throws

    /// Evaluates the model as it is after `step` optimizer steps.
    func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation

    /// Writes what a model trained by this objective carries besides weights and tokenizer (a chat template) into a
    /// checkpoint directory being written.
    func writeModelFiles(to directory: URL) throws

    /// Writes the objective's own resume state (beyond the loop's) into a `last/` checkpoint being written.
    func saveState(to directory: URL) throws

    /// Restores what `saveState` wrote, when a run resumes.
    func restoreState(from directory: URL) throws

    /// The panels of the run's `loss.svg`, from its metrics records: each quantity under a title that says what it
    /// measures, quantities of different meaning on panels of their own.
    func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel]

    /// Draws the objective's own charts from the run's metrics records, when the run ends.
    func writeCharts(to output: URL, records: [[String: Any]]) throws

    /// The length of a new run when the objective sets it from its data (epochs over examples, PPO's rollouts);
    /// nil keeps the configuration's.
    var plan: RunPlan? { get }

    /// A line on the data the run trains on (counts, steps per epoch, what was cut to fit the context), printed
    /// before training; nil when there is nothing to add.
    var dataSummary: String? { get }
}

/// What an objective is made from: the model it trains, its tokenizer, the run's settings, and the processes
/// that train together (this one alone unless started by `mpirun`).
package struct ObjectiveContext {
    package let model: GPTModel
    package let tokenizer: any Tokenizer
    package let configuration: TrainingConfiguration
    package let group: ProcessGroup

    /// This process's share of each batch.
    package var shard: Shard { Shard(index: group.rank, count: group.size) }
}

/// The length of a run an objective derives from its data: `maxIterations` steps, of which the first
/// `warmupIterations` warm up, and an evaluation (with a checkpoint) every `evalInterval` steps.
package struct RunPlan: Equatable, Sendable {
    package var maxIterations: Int
    package var warmupIterations: Int
    package var evalInterval: Int

    /// `epochs` passes over batches of `stepsPerEpoch` steps, warming up for `warmupFraction` of them and
    /// evaluating after each pass.
    package init(epochs: Int, stepsPerEpoch: Int, warmupFraction: Float) {
        maxIterations = epochs * stepsPerEpoch
        warmupIterations = Int((warmupFraction * Float(maxIterations)).rounded(.up))
        evalInterval = stepsPerEpoch
    }

    /// A plan of the given lengths.
    package init(maxIterations: Int, warmupIterations: Int, evalInterval: Int) {
        self.maxIterations = maxIterations
        self.warmupIterations = warmupIterations
        self.evalInterval = evalInterval
    }
}

extension TrainingObjective {
    package func prepare(step: Int) throws {}
    package func writeModelFiles(to directory: URL) throws {}
    package func saveState(to directory: URL) throws {}
    package func restoreState(from directory: URL) throws {}
    package func writeCharts(to output: URL, records: [[String: Any]]) throws {}
    package var plan: RunPlan? { nil }
    package var dataSummary: String? { nil }

    /// The training loss at logged steps and the validation loss at evaluations, on one panel.
    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("loss", [.init("training (logged steps)", LearningCurve.series(records, "train_loss")),
                                      .init("validation", LearningCurve.series(records, "val_loss"), dots: true)])]
    }
}

extension TrainingConfiguration {
    /// The model and tokenizer in `initFrom` that a run of `kind` ("supervised fine-tuning", "DPO") continues: a
    /// language model (no task head) from a model directory.
    func startingLanguageModel(for kind: String) throws -> (GPTModel, any Tokenizer) {
        guard initFrom != "scratch" else { throw ConfigurationError(.invalidSetting("initFrom"), "\(kind) starts from a model directory") }
        let (model, tokenizer) = try ModelLoading.load(initFrom)
        guard model.taskHead == nil else {
            throw ConfigurationError(.unsuitableModel, "\(initFrom) has a task head; \(kind) starts from a language model")
        }
        return (model, tokenizer)
    }
}

/// The share of every global batch one process takes in a data-parallel run: rank `index` of `count`. A global
/// batch holds `count` times the configured batch size, so that N ranks of batch B step as one process of batch N·B.
package struct Shard: Sendable, Equatable {
    package var index: Int
    package var count: Int

    package init(index: Int, count: Int) {
        precondition(count > 0 && (0..<count).contains(index), "rank \(index) of \(count)")
        self.index = index
        self.count = count
    }

    /// One process, the whole batch.
    package static let whole = Shard(index: 0, count: 1)
}

/// The figures of one evaluation.
public struct Evaluation: Sendable {
    /// Named figures for metrics.jsonl (`val_loss` among them).
    public var metrics: [String: Double]
    /// Higher is better: the run keeps the model with the highest score in `best/`.
    public var score: Double
    /// One line for the console.
    public var summary: String

    package init(metrics: [String: Double], score: Double, summary: String) {
        self.metrics = metrics
        self.score = score
        self.summary = summary
    }
}
