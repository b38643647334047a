import Foundation
import GPTUtilities
import TensorCore

/// A fine-tuned model's answer for one input.
public struct TaskPrediction: Equatable, Sendable {
    /// The predicted class or choice (classification, entailment, paraphrase, multiple choice).
    public var index: Int?
    /// The probability of each class or choice.
    public var probabilities: [Float]?
    /// The predicted value (regression).
    public var value: Float?

    package init(index: Int? = nil, probabilities: [Float]? = nil, value: Float? = nil) {
        self.index = index
        self.probabilities = probabilities
        self.value = value
    }
}

extension GPTModel {
    /// Predictions for `examples` in inference mode, `batchSize` examples a forward pass, and the mean task loss
    /// when every example is labelled (else nil).
    package func predict(_ examples: [EncodedExample], batchSize: Int, precision: ProductPrecision = .float32,
                        pad: Int32) -> (predictions: [TaskPrediction], loss: Float?) {
        var predictions: [TaskPrediction] = [], lossSum: Double = 0, labelled = 0, allLabelled = true
        for start in stride(from: 0, to: examples.count, by: batchSize) {
            let slice = examples[start..<min(examples.count, start + batchSize)]
            let batch = TaskBatch(slice, pad: pad)
            let tape = Tape(recording: false, precision: precision)
            var noDropout: SeededRandom?
            let outputs = taskForward(batch, tape: tape, random: &noDropout).outputs
            let values = outputs.value.scalars
            switch taskHead {
            case .sequenceClassification(let head)? where head.problem == .regression:
                predictions += values.map { TaskPrediction(value: $0) }
            case .sequenceClassification(let head)?:
                let n = head.labels.count
                predictions += (0..<slice.count).map { TaskPrediction.choosing(Array(values[($0 * n)..<(($0 + 1) * n)])) }
            case .multipleChoice?:
                predictions += batch.exampleRows.map { TaskPrediction.choosing(Array(values[$0])) }
            case .value?, nil:
                preconditionFailure("the model has no classification or multiple-choice head")
            }
            let labels = slice.compactMap(\.label)
            if labels.count == slice.count {
                lossSum += Double(taskLoss(outputs, batch: batch, labels: labels, tape: tape).value[flat: 0]) * Double(slice.count)
                labelled += slice.count
            } else {
                allLabelled = false
            }
        }
        return (predictions, allLabelled ? Float(lossSum / Double(labelled)) : nil)
    }
}

extension TaskPrediction {
    /// The prediction of a softmax over `scores`: the most probable index (the first on ties) and every probability.
    static func choosing(_ scores: [Float]) -> TaskPrediction {
        let m = scores.max() ?? 0
        let e = scores.map { exp(Double($0 - m)) }, total = e.reduce(0, +)
        return TaskPrediction(index: argmax(scores), probabilities: e.map { Float($0 / total) })
    }
}
