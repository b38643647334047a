import Foundation
import GPTUtilities
import TensorCore

/// Figures of a clipped policy loss, for logging.
package struct PolicyLossStatistics: Sendable, Equatable {
    /// Share of tokens whose clipped term was the larger (their gradient is zero).
    package var clipFraction: Float
    /// ½·mean (log π − log π_old)²: how far the update has moved the policy.
    package var approximateKL: Float
    /// Mean entropy of the policy's distributions, in nats.
    package var entropy: Float
}

extension Tape {
    /// PPO's clipped surrogate loss (Schulman et al. 2017), fused over the logits: for each row r of `logits`
    /// (`[..., vocabulary]`) with the action taken there, ratio = exp(log π(a) − `oldLogProbabilities`[r]) and the
    /// row's loss is max(−A·ratio, −A·clip(ratio, 1 − ε, 1 + ε)) with A = `advantages`[r]; the result is their mean.
    /// The log-softmax, the loss, its gradient and the statistics come from two passes over the logits.
    package func clippedPolicyLoss(_ logits: Variable, actions: [Int32], oldLogProbabilities: [Float], advantages: [Float],
                                  clipRange: Float) -> (loss: Variable, statistics: PolicyLossStatistics) {
        let classes = logits.shape.last!
        let rows = logits.value.count / max(classes, 1)
        precondition(rows > 0 && actions.count == rows && oldLogProbabilities.count == rows && advantages.count == rows,
                     "clippedPolicyLoss: \(actions.count) actions, \(oldLogProbabilities.count) old log-probabilities and \(advantages.count) advantages for \(rows) rows")
        precondition(actions.allSatisfy { $0 >= 0 && Int($0) < classes }, "clippedPolicyLoss: action outside 0..<\(classes)")
        // Per row: the loss, d loss / d log π(a) (before the 1/rows of the mean), clipped or not, the squared
        // log-ratio and the entropy.
        let rowFigures = Tensor(uninitializedShape: [rows, 5])
        let xp = logits.value.pointer, figures = rowFigures.pointer
        let statistics = rowLogSumExps(xp, rows: rows, classes: classes, extraPasses: 1) { r, row, m, logSum in
            let logProbability = (row[Int(actions[r])] - m) - logSum
            let logRatio = logProbability - oldLogProbabilities[r]
            let ratio = exp(logRatio), advantage = advantages[r]
            let unclipped = -advantage * ratio
            let clipped = -advantage * min(max(ratio, 1 - clipRange), 1 + clipRange)
            figures[5 * r] = max(unclipped, clipped)
            figures[5 * r + 1] = unclipped >= clipped ? -advantage * ratio : 0
            figures[5 * r + 2] = clipped > unclipped ? 1 : 0
            figures[5 * r + 3] = logRatio * logRatio
            figures[5 * r + 4] = entropyOfRow(row, classes, maximum: m, logSum: logSum)
        }
        var sums = [Float](repeating: 0, count: 5)
        for r in 0..<rows { for k in 0..<5 { sums[k] += figures[5 * r + k] } }
        let n = Float(rows)
        let out = output(Tensor(shape: [], values: [sums[0] / n]), inputs: [logits])
        record(out) {
            let stats = statistics.pointer, figures = rowFigures.pointer  // kept alive until backward
            let (g, accumulate) = logits.gradientTarget()
            let scale = out.grad!.pointer[0] / n
            let gp = g.pointer
            Parallel.forEach(rows, costPerItem: classes * 2) { range in
                for r in range {
                    let row = xp + r * classes, d = gp + r * classes
                    // d loss / d x = s · d log π(a) / d x = −s · (softmax(x) − onehot(a)).
                    softmaxCrossEntropyGradient(row, classes, maximum: stats[2 * r], logSum: stats[2 * r + 1], target: Int(actions[r]),
                                                scale: -(scale * figures[5 * r + 1]), into: d, accumulate: accumulate)
                }
            }
        }
        return (out, PolicyLossStatistics(clipFraction: sums[2] / n, approximateKL: 0.5 * sums[3] / n, entropy: sums[4] / n))
    }

    /// PPO's clipped value loss: with v_clip = v_old + clip(v − v_old, −ε, ε), the mean over `values` (one per
    /// return, any shape) of ½·max((v − R)², (v_clip − R)²). Returns the loss and the share of values whose
    /// clipped error was the larger.
    package func clippedValueLoss(_ values: Variable, oldValues: [Float], returns: [Float], clipRange: Float) -> (loss: Variable, clipFraction: Float) {
        let n = values.value.count
        precondition(n > 0 && oldValues.count == n && returns.count == n,
                     "clippedValueLoss: \(oldValues.count) old values and \(returns.count) returns for \(n) values")
        let v = values.value.pointer
        var derivatives = [Float](repeating: 0, count: n)
        var total: Float = 0, clippedCount = 0
        for i in 0..<n {
            let change = v[i] - oldValues[i]
            let clippedValue = oldValues[i] + min(max(change, -clipRange), clipRange)
            let plain = (v[i] - returns[i]) * (v[i] - returns[i])
            let clipped = (clippedValue - returns[i]) * (clippedValue - returns[i])
            total += 0.5 * max(plain, clipped)
            if clipped > plain {
                clippedCount += 1
                // v_clip follows v only inside the clip range.
                derivatives[i] = abs(change) < clipRange ? clippedValue - returns[i] : 0
            } else {
                derivatives[i] = v[i] - returns[i]
            }
        }
        let out = output(Tensor(shape: [], values: [total / Float(n)]), inputs: [values])
        record(out) {
            let (g, accumulate) = values.gradientTarget()
            let scale = out.grad!.pointer[0] / Float(n)
            for i in 0..<n { g.pointer[i] = (accumulate ? g.pointer[i] : 0) + scale * derivatives[i] }
        }
        return (out, Float(clippedCount) / Float(n))
    }
}

/// The log-probability of `actions[r]` under softmax(`logits` row r) and the entropy of that distribution, for each
/// row of `logits` (`[..., classes]`): what a rollout records of its policy and of the reference policy.
package func actionLogProbabilities(_ logits: Tensor, actions: [Int32]) -> (logProbabilities: [Float], entropies: [Float]) {
    let classes = logits.shape.last!
    let rows = logits.count / max(classes, 1)
    precondition(actions.count == rows, "actionLogProbabilities: \(actions.count) actions for \(rows) rows")
    var logProbabilities = [Float](repeating: 0, count: rows), entropies = [Float](repeating: 0, count: rows)
    let xp = logits.pointer
    logProbabilities.withUnsafeMutableBufferPointer { lp in
        entropies.withUnsafeMutableBufferPointer { ep in
            Parallel.forEach(rows, costPerItem: classes * 3) { range in
                for r in range {
                    let row = UnsafePointer(xp + r * classes)
                    let (m, logSum) = logSumExpOfRow(row, classes)
                    lp[r] = (row[Int(actions[r])] - m) - logSum
                    ep[r] = entropyOfRow(row, classes, maximum: m, logSum: logSum)
                }
            }
        }
    }
    return (logProbabilities, entropies)
}

/// The entropy −Σ p log p of softmax(`row`), given the row's `logSumExpOfRow` figures: (m + logSum) − Σ p·x.
@inline(__always)
func entropyOfRow(_ row: UnsafePointer<Float>, _ count: Int, maximum m: Float, logSum: Float) -> Float {
    var weighted = Float16x()
    forEachLane(count) { i, lanes in
        let x = load(row + i, lanes)
        let p = VectorMath.exp((x - m) - logSum) * x
        weighted += lanes == 16 ? p : p.replacing(with: 0, where: laneIndices .>= Int32(lanes))
    }
    return (m + logSum) - weighted.sum()
}
