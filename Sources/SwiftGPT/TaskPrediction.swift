import Foundation
import TensorCore

/// A fine-tuned model's answer for one input.
public struct TaskPrediction: Equatable, Sendable {
    /// The predicted class or choice (classification, entailment, paraphrase, multiple choice).
    public var index: Int?
    /// The probability of each class or choice.
    public var probabilities: [Float]?
    /// The predicted value (regression).
    public var value: Float?

    public init(index: Int? = nil, probabilities: [Float]? = nil, value: Float? = nil) {
        self.index = index
        self.probabilities = probabilities
        self.value = value
    }
}

extension GPTModel {
    /// Predictions for `examples` in inference mode, `batchSize` examples a forward pass, and the mean task loss
    /// when every example is labelled (else nil).
    public func predict(_ examples: [EncodedExample], batchSize: Int, precision: ProductPrecision = .float32,
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
            case nil:
                preconditionFailure("the model has no task head")
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

/// The figures a task is judged by.
public enum TaskMetrics {
    /// Accuracy (and F1 of class 1 when there are two classes) for class predictions; Pearson and Spearman
    /// correlation and mean squared error for values. Examples without a label are left out.
    public static func compute(_ predictions: [TaskPrediction], labels: [TaskLabel?]) -> [String: Double] {
        var pairs: [(TaskPrediction, TaskLabel)] = []
        for (p, l) in zip(predictions, labels) { if let l { pairs.append((p, l)) } }
        guard !pairs.isEmpty else { return [:] }
        if pairs[0].0.value != nil {
            let predicted = pairs.map { Double($0.0.value!) }
            let truth = pairs.map { pair -> Double in
                switch pair.1 { case .value(let v): return Double(v); case .index(let i): return Double(i) }
            }
            let mse = zip(predicted, truth).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Double(pairs.count)
            return ["pearson": pearson(predicted, truth), "spearman": pearson(ranks(predicted), ranks(truth)), "mse": mse]
        }
        let predicted = pairs.map { $0.0.index! }
        let truth = pairs.map { pair -> Int in if case .index(let i) = pair.1 { return i }; return -1 }
        var metrics = ["accuracy": Double(zip(predicted, truth).filter { $0 == $1 }.count) / Double(pairs.count)]
        if pairs[0].0.probabilities?.count == 2 {
            let truePositive = Double(zip(predicted, truth).filter { $0 == 1 && $1 == 1 }.count)
            let predictedPositive = Double(predicted.filter { $0 == 1 }.count), actualPositive = Double(truth.filter { $0 == 1 }.count)
            metrics["f1"] = predictedPositive + actualPositive == 0 ? 0 : 2 * truePositive / (predictedPositive + actualPositive)
        }
        return metrics
    }

    /// Pearson's correlation coefficient (0 when either side is constant).
    public static func pearson(_ x: [Double], _ y: [Double]) -> Double {
        let n = Double(x.count), mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) {
            sxy += (a - mx) * (b - my)
            sxx += (a - mx) * (a - mx)
            syy += (b - my) * (b - my)
        }
        return sxx == 0 || syy == 0 ? 0 : sxy / (sxx * syy).squareRoot()
    }

    /// Ranks from 1, ties sharing the mean of their ranks (as Spearman's coefficient needs).
    static func ranks(_ x: [Double]) -> [Double] {
        let order = x.indices.sorted { x[$0] < x[$1] }
        var result = [Double](repeating: 0, count: x.count), i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && x[order[j + 1]] == x[order[i]] { j += 1 }
            for k in i...j { result[order[k]] = Double(i + j) / 2 + 1 }
            i = j + 1
        }
        return result
    }

    /// The figure that picks the best checkpoint: accuracy, or Pearson's correlation for regression.
    public static func primary(_ metrics: [String: Double]) -> (name: String, value: Double)? {
        if let accuracy = metrics["accuracy"] { return ("accuracy", accuracy) }
        if let pearson = metrics["pearson"] { return ("pearson", pearson) }
        return nil
    }
}
