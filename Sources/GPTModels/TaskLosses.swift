import Foundation
import TensorCore

extension Tape {
    /// Mean squared error between the elements of `predictions` (any shape, one value per target) and `targets`:
    /// the regression loss of a scalar head (torch's `MSELoss`, mean reduction). Returns a scalar.
    package func meanSquaredError(_ predictions: Variable, targets: [Float]) -> Variable {
        let n = predictions.value.count
        precondition(n == targets.count && n > 0, "meanSquaredError: \(targets.count) targets for \(n) predictions")
        let x = predictions.value.pointer
        var sum: Float = 0
        for i in 0..<n { sum += (x[i] - targets[i]) * (x[i] - targets[i]) }
        let out = output(Tensor(shape: [], values: [sum / Float(n)]), inputs: [predictions])
        record(out) {
            let (g, accumulate) = predictions.gradientTarget()
            let scale = 2 * out.grad!.pointer[0] / Float(n)
            for i in 0..<n {
                let d = scale * (x[i] - targets[i])
                g.pointer[i] = accumulate ? g.pointer[i] + d : d
            }
        }
        return out
    }

    /// Mean cross-entropy of a softmax over groups of consecutive scores: group k holds the scores
    /// `scores[groups[k]]` (its candidates, any number each) and `targets[k]` is the index of the right one
    /// inside the group. `scores` holds one value per candidate (any shape). Returns a scalar: multiple choice
    /// with a varying number of choices.
    package func groupedCrossEntropy(_ scores: Variable, groups: [Range<Int>], targets: [Int]) -> Variable {
        let n = scores.value.count
        precondition(groups.count == targets.count && !groups.isEmpty, "groupedCrossEntropy: \(targets.count) targets for \(groups.count) groups")
        precondition(groups.allSatisfy { !$0.isEmpty && $0.lowerBound >= 0 && $0.upperBound <= n },
                     "groupedCrossEntropy: a group is empty or outside 0..<\(n)")
        precondition(zip(groups, targets).allSatisfy { $1 >= 0 && $1 < $0.count }, "groupedCrossEntropy: target outside its group")
        let x = scores.value.pointer
        var statistics: [(maximum: Float, logSum: Float)] = []
        var total: Float = 0
        for (group, target) in zip(groups, targets) {
            let s = logSumExpOfRow(UnsafePointer(x + group.lowerBound), group.count)
            statistics.append(s)
            total -= (x[group.lowerBound + target] - s.maximum) - s.logSum
        }
        let out = output(Tensor(shape: [], values: [total / Float(groups.count)]), inputs: [scores])
        record(out) {
            let (g, accumulate) = scores.gradientTarget()
            if !accumulate { g.fill(0) }
            let scale = out.grad!.pointer[0] / Float(groups.count)
            for (k, (group, target)) in zip(groups, targets).enumerated() {
                let (m, logSum) = statistics[k]
                for i in group {
                    g.pointer[i] += scale * (exp((x[i] - m) - logSum) - (i == group.lowerBound + target ? 1 : 0))
                }
            }
        }
        return out
    }
}
