import Foundation
import GPTModels
import GPTUtilities
import TensorCore

/// The language-model loss of a model over a whole token file, without sampling noise: the file is cut into
/// consecutive windows of `length` tokens and every token after the first is predicted once, from the tokens
/// before it in its window (the same mix of context lengths as random training windows).
package enum DatasetLoss {
    /// Mean cross-entropy in nats per predicted token, over `tokens` predictions.
    package struct Result: Sendable {
        package var loss: Double
        package var tokens: Int
        /// exp(loss).
        package var perplexity: Double { Foundation.exp(loss) }
    }

    /// Evaluates `model` on `file` in windows of `length` (at most the model's context), `batch` windows per
    /// forward pass; `progress` is told how many of the predictions are done.
    package static func evaluate(_ model: GPTModel, on file: TokenFile, length: Int, batch: Int,
                                progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> Result {
        guard length > 0, length <= model.config.contextLength else {
            throw FileError(url: file.url, reason: .mismatched, message: "window of \(length) tokens does not fit the model's context of \(model.config.contextLength)")
        }
        guard batch > 0 else { throw ConfigurationError(.invalidSetting("batch"), "batch must be positive") }
        let predictions = file.count - 1
        guard predictions > 0 else { throw FileError(url: file.url, reason: .mismatched, message: "has \(file.count) tokens; nothing to predict") }
        let full = predictions / length
        var total = 0.0, done = 0
        let dataset = TokenDataset(file: file)
        let inVocabulary = { (id: Int32) in id >= 0 && Int(id) < model.config.vocabularySize }
        /// Loss summed over `count` windows of `size` inputs starting at window `first` (size ≤ length).
        func run(first: Int, count: Int, size: Int) throws {
            let (inputs, targets) = dataset.windows(at: (first..<(first + count)).map { $0 * length }, length: size)
            guard inputs.allSatisfy(inVocabulary), targets.allSatisfy(inVocabulary) else {
                throw FileError(url: file.url, reason: .mismatched, message: "holds token ids outside the model's vocabulary of \(model.config.vocabularySize) (prepared with another tokenizer?)")
            }
            let mean = model.evaluationLoss(inputs: inputs, targets: targets, batch: count)
            total += Double(mean) * Double(count * size)
            done += count * size
            progress(done, predictions)
        }
        for first in stride(from: 0, to: full, by: batch) { try run(first: first, count: min(batch, full - first), size: length) }
        if predictions % length > 0 { try run(first: full, count: 1, size: predictions % length) }
        return Result(loss: total / Double(predictions), tokens: predictions)
    }
}
