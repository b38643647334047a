import Foundation
import GPTModels

/// The figures a task is judged by.
package enum TaskMetrics {
    /// Accuracy (and, for a classifier of two classes, F1 of class 1) for class or choice predictions; Pearson and
    /// Spearman correlation and mean squared error for values. Examples without a label are left out.
    package static func compute(_ predictions: [TaskPrediction], labels: [TaskLabel?], choices: Bool = false) -> [String: Double] {
        var pairs: [(TaskPrediction, TaskLabel)] = []
        for (p, l) in zip(predictions, labels) { if let l { pairs.append((p, l)) } }
        guard !pairs.isEmpty else { return [:] }
        if pairs[0].0.value != nil {
            let predicted = pairs.map { Double($0.0.value!) }
            let truth = pairs.map { Double($0.1.target) }
            let mse = zip(predicted, truth).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Double(pairs.count)
            return ["pearson": pearson(predicted, truth), "spearman": pearson(ranks(predicted), ranks(truth)), "mse": mse]
        }
        let predicted = pairs.map { $0.0.index! }
        let truth = pairs.map { $0.1.classIndex ?? -1 }
        var metrics = ["accuracy": Double(zip(predicted, truth).filter { $0 == $1 }.count) / Double(pairs.count)]
        if !choices && pairs[0].0.probabilities?.count == 2 {
            let truePositive = Double(zip(predicted, truth).filter { $0 == 1 && $1 == 1 }.count)
            let predictedPositive = Double(predicted.filter { $0 == 1 }.count), actualPositive = Double(truth.filter { $0 == 1 }.count)
            metrics["f1"] = predictedPositive + actualPositive == 0 ? 0 : 2 * truePositive / (predictedPositive + actualPositive)
        }
        return metrics
    }

    /// Pearson's correlation coefficient (0 when either side is constant).
    package static func pearson(_ x: [Double], _ y: [Double]) -> Double {
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
    package static func primary(_ metrics: [String: Double]) -> (name: String, value: Double)? {
        if let accuracy = metrics["accuracy"] { return ("accuracy", accuracy) }
        if let pearson = metrics["pearson"] { return ("pearson", pearson) }
        return nil
    }
}
