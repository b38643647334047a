import Foundation
import GPTModels
import TensorCore
import Tokenizers

/// What PPO maximises: the score of a whole text (prompt and response) from a reward model (`gpt reward train`),
/// or a classifier's log-probability of one label (`gpt finetune --task classification`; the classic check is an
/// SST-2 classifier's "positive"). Each model reads the text with its own tokenizer.
package final class RewardFunction {
    package let model: GPTModel
    package let tokenizer: any Tokenizer
    /// The classifier's label whose log-probability is the score; nil for a reward model.
    package let label: Int?

    /// A reward model directory, or `classifier:DIR:LABEL` with LABEL a label name of the classifier or its index.
    package init(specification: String) throws {
        if specification.hasPrefix("classifier:") {
            let rest = specification.dropFirst("classifier:".count)
            guard let colon = rest.lastIndex(of: ":") else {
                throw ConfigurationError(.invalidSetting("reward"), "a classifier reward is classifier:DIR:LABEL, got '\(specification)'")
            }
            let directory = String(rest[..<colon]), name = String(rest[rest.index(after: colon)...])
            (model, tokenizer) = try ModelLoading.load(directory)
            guard model.inputFormat?.task == .classification, case .sequenceClassification(let head)? = model.taskHead,
                  head.problem == .singleLabel else {
                throw ConfigurationError(.unsuitableModel, "\(directory) is not a classifier from gpt finetune --task classification")
            }
            guard let index = head.labels.firstIndex(of: name) ?? Int(name).flatMap({ head.labels.indices.contains($0) ? $0 : nil }) else {
                throw ConfigurationError(.invalidSetting("reward"), "\(directory) has no label '\(name)' (its labels: \(head.labels.joined(separator: ", ")))")
            }
            label = index
        } else {
            (model, tokenizer) = try ModelLoading.load(specification)
            guard case .sequenceClassification(let head)? = model.taskHead, head.labels.count == 1, model.inputFormat == nil else {
                throw ConfigurationError(.unsuitableModel, "\(specification) is not a reward model (from gpt reward train); a classifier is classifier:DIR:LABEL")
            }
            label = nil
        }
    }

    /// The score of each text, `batchSize` texts a forward pass; a text longer than the model's context keeps its
    /// end (reward model) or loses tokens from its end (classifier, as fine-tuning cut it).
    package func scores(_ texts: [String], batchSize: Int, precision: ProductPrecision) throws -> [Float] {
        let context = model.config.contextLength
        let examples = try texts.map { text -> EncodedExample in
            let ids = try tokenizer.encode(text)
            if let format = model.inputFormat {
                return EncodedExample(rows: format.sequences([ids], contextLength: context).rows, label: nil)
            }
            return EncodedExample(rows: [Array(ids.suffix(context))], label: nil)
        }
        guard case .sequenceClassification(let head)? = model.taskHead else { preconditionFailure("checked at init") }
        let pad = model.inputFormat?.start ?? head.padTokenID
        let predictions = model.predict(examples, batchSize: batchSize, precision: precision, pad: pad).predictions
        if let label { return predictions.map { log(max($0.probabilities![label], .leastNormalMagnitude)) } }
        return predictions.map { $0.value! }
    }
}
