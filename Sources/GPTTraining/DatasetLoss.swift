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
    /// forward pass; `progress` is told how many of the predictions are done. With `weights`, each window is read
    /// by the decoding kernels over them (an `InferenceSession` whose cache keeps `cachePrecision`, one window at a
    /// time), so that the loss is what decoding with those weights computes, rounding included.
    package static func evaluate(_ model: GPTModel, weights: DecodeWeights? = nil, cachePrecision: CachedAttention.Cache.Precision = .float32,
                                on file: TokenFile, length: Int, batch: Int,
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
        let session = weights.map { InferenceSession(model: model, sequences: 1, weights: $0, cachePrecision: cachePrecision) }
        let inVocabulary = { (id: Int32) in id >= 0 && Int(id) < model.config.vocabularySize }
        /// Loss summed over `count` windows of `size` inputs starting at window `first` (size ≤ length).
        func run(first: Int, count: Int, size: Int) throws {
            let (inputs, targets) = dataset.windows(at: (first..<(first + count)).map { $0 * length }, length: size)
            guard inputs.allSatisfy(inVocabulary), targets.allSatisfy(inVocabulary) else {
                throw FileError(url: file.url, reason: .mismatched, message: "holds token ids outside the model's vocabulary of \(model.config.vocabularySize) (prepared with another tokenizer?)")
            }
            if let session {
                for w in 0..<count {
                    session.reset(sequence: 0)
                    let logits = try session.feed([(0, Array(inputs[(w * size)..<((w + 1) * size)]))], everyToken: true)
                    total += crossEntropySum(logits, targets: targets[(w * size)..<((w + 1) * size)])
                }
            } else {
                total += Double(model.evaluationLoss(inputs: inputs, targets: targets, batch: count)) * Double(count * size)
            }
            done += count * size
            progress(done, predictions)
        }
        for first in stride(from: 0, to: full, by: batch) { try run(first: first, count: min(batch, full - first), size: length) }
        if predictions % length > 0 { try run(first: full, count: 1, size: predictions % length) }
        return Result(loss: total / Double(predictions), tokens: predictions)
    }

    /// Σ over rows of −log softmax(logits row)[target], in double precision.
    private static func crossEntropySum(_ logits: Tensor, targets: ArraySlice<Int32>) -> Double {
        let vocabulary = logits.count / targets.count
        var sum = 0.0
        for (r, target) in targets.enumerated() {
            let row = logits.pointer + r * vocabulary
            var largest = -Float.infinity
            for j in 0..<vocabulary { largest = max(largest, row[j]) }
            var exponentials = 0.0
            for j in 0..<vocabulary { exponentials += Foundation.exp(Double(row[j] - largest)) }
            sum += Foundation.log(exponentials) + Double(largest - row[Int(target)])
        }
        return sum
    }
}
