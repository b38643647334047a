import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

extension InputFormat.Task: ExpressibleByArgument {}

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Run a fine-tuned model on a task file: one JSON line per input, and the metrics when labels are present.",
        discussion: """
        Each output line holds the prediction (class or choice index with its label name, and every probability; \
        or the predicted value for regression). With labels in the file, accuracy (and F1 for two classes), or \
        Pearson and Spearman correlation and MSE, are printed to standard error.
        """
    )

    @Option(help: "Fine-tuned model directory (from gpt finetune: the output directory, best/ or last/).") var model: String
    @Option(help: "Examples (JSONL, same schema as training; labels optional).") var data: String
    @Option(help: "Task; must match the model's (default: the model's).") var task: InputFormat.Task?
    @Option(help: "Write predictions here instead of standard output.") var output: String?
    @Option(help: "Examples per forward pass.") var batchSize = 32
    @Option(help: "Matrix-product inputs: bf16 or fp32.") var precision: ProductPrecision = .float32

    func run() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        let (gpt, tokenizer) = try ModelLoading.load(model)
        guard let format = gpt.inputFormat, let head = gpt.taskHead else {
            throw CommandError("\(model) is not a fine-tuned model (no task head and input format); fine-tune it with gpt finetune")
        }
        if let task, task != format.task {
            throw CommandError("the model was fine-tuned for \(format.task.rawValue), not \(task.rawValue)")
        }
        let url = URL(fileURLWithPath: data)
        let examples = try TaskDataset.load(url, task: format.task, labelsRequired: false)
        let encoded = try format.encode(examples, from: url, tokenizer: tokenizer, contextLength: gpt.config.contextLength)
        let start = Date()
        let (predictions, loss) = gpt.predict(encoded, batchSize: batchSize, precision: precision, pad: format.start)
        let seconds = Date().timeIntervalSince(start)
        try JSONLinesOutput.write(predictions.map { prediction in
            var record: [String: Any] = [:]
            if let index = prediction.index {
                record["prediction"] = index
                if case .sequenceClassification(let c) = head { record["label"] = c.labels[index] }
            }
            if let probabilities = prediction.probabilities { record["probabilities"] = probabilities.map(Double.init) }
            if let value = prediction.value { record["score"] = Double(value) }
            return record
        }, to: output)
        var summary = String(format: "%d examples in %.1f s (%.1f examples/s)", examples.count, seconds, Double(examples.count) / seconds)
        let truncation = TruncationSummary(lostFractions: encoded.map(\.lostFraction))
        if truncation.count > 0 { summary += "; cut to fit the context: \(truncation)" }
        if let loss { summary += String(format: ", loss %.4f", loss) }
        let metrics = TaskMetrics.compute(predictions, labels: examples.map(\.label), choices: format.task == .multipleChoice)
        for name in metrics.keys.sorted() { summary += ", \(name) " + String(format: "%.4f", metrics[name]!) }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }
}
