import Foundation
import GPTModels
import GPTTraining
import TensorCore
import Tokenizers

/// A model fine-tuned for a task (`gpt finetune`, or `Trainer` with `FineTuningSettings`): a GPT body with a task head
/// and GPT-1's input format, for classification, entailment, similarity (regression) or multiple choice.
///
/// ```swift
/// let sentiment = try TaskModel(directory: URL(fileURLWithPath: "runs/sst2"))
/// let prediction = try sentiment.predict([["a gripping, funny film"]])[0]
/// print(sentiment.labels[prediction.index!], prediction.probabilities!)
/// ```
public final class TaskModel: @unchecked Sendable {
    /// What the model was fine-tuned for.
    public let task: InputFormat.Task
    /// The class names, label 0's first (empty for regression and multiple choice).
    public let labels: [String]
    private let model: GPTModel
    private let tokenizer: any Tokenizer
    private let format: InputFormat
    private let lock = NSLock()

    /// Loads a fine-tuned model folder, or a fine-tuning run's output folder (its `best/`, else `last/`).
    public init(directory: URL) throws {
        let (model, tokenizer) = try ModelLoading.load(directory.path)
        guard let format = model.inputFormat, let head = model.taskHead else {
            throw FileError(url: directory, reason: .mismatched, message: "not a fine-tuned model (it has no task head and input format)")
        }
        self.model = model
        self.tokenizer = tokenizer
        self.format = format
        task = format.task
        if case .sequenceClassification(let classification) = head, classification.problem != .regression {
            labels = classification.labels
        } else {
            labels = []
        }
    }

    /// Predictions for examples given as their texts in the task's order: classification `[text]`, entailment
    /// `[premise, hypothesis]`, similarity `[text_a, text_b]`, multiple choice `[context, choice, …]`. Texts longer
    /// than the model's context are cut, as in training.
    public func predict(_ examples: [[String]], batchSize: Int = 32) throws -> [TaskPrediction] {
        guard batchSize > 0 else { throw GenerationError(.invalidArgument, "the batch size must be positive, got \(batchSize)") }
        let tasks = examples.enumerated().map { TaskExample(segments: $1, label: nil, line: $0 + 1) }
        for example in tasks where !task.segmentCount.contains(example.segments.count) {
            let expected = task.segmentCount.upperBound == Int.max ? "\(task.segmentCount.lowerBound) or more" : "\(task.segmentCount.lowerBound)"
            throw GenerationError(.invalidArgument, "example \(example.line) has \(example.segments.count) texts; a \(task.rawValue) example has \(expected)")
        }
        let encoded = try format.encode(tasks, from: URL(fileURLWithPath: "examples"), tokenizer: tokenizer, contextLength: model.config.contextLength)
        return lock.withLock { model.predict(encoded, batchSize: batchSize, pad: format.start).predictions }
    }
}
