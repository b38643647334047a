import Foundation
import GPTUtilities

extension Tape {
    /// Mean cross-entropy of softmax(`logits`) against `targets`, fused: softmax, loss and gradient in two passes
    /// over the logits and no probability tensor kept.
    ///
    /// `logits` is `[..., classes]`; `targets` has one class per row. Rows whose target is `ignoreIndex` do not
    /// count (the mean is over the rest). Returns a scalar (shape `[]`).
    package func crossEntropy(_ logits: Variable, targets: [Int32], ignoreIndex: Int32 = -1) -> Variable {
        let classes = logits.shape.last!
        let rows = logits.value.count / max(classes, 1)
        precondition(targets.count == rows, "crossEntropy: \(targets.count) targets for \(rows) rows")
        precondition(targets.allSatisfy { $0 == ignoreIndex || ($0 >= 0 && Int($0) < classes) },
                     "crossEntropy: target outside 0..<\(classes)")
        let counted = targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        let xp = logits.value.pointer
        let rowLoss = Tensor(shape: [rows])
        let statistics = targets.withUnsafeBufferPointer { tp in
            rowLogSumExps(xp, rows: rows, classes: classes) { r, row, m, logSum in
                if tp[r] != ignoreIndex { rowLoss.pointer[r] = -((row[Int(tp[r])] - m) - logSum) }
            }
        }
        let loss = Tensor(shape: [], values: [counted == 0 ? 0 : UnsafePointer(rowLoss.pointer).sum(rows) / Float(counted)])
        let out = output(loss, inputs: [logits])
        record(out) {
            let stats = statistics.pointer  // keeps the saved row statistics alive until backward
            let (g, accumulate) = logits.gradientTarget()
            let scale = counted == 0 ? 0 : out.grad!.pointer[0] / Float(counted)
            let gp = g.pointer
            targets.withUnsafeBufferPointer { tp in
                Parallel.forEach(rows, costPerItem: classes * 2) { range in
                    for r in range {
                        let row = xp + r * classes, d = gp + r * classes
                        let ignored = tp[r] == ignoreIndex
                        softmaxCrossEntropyGradient(row, classes, maximum: stats[2 * r], logSum: stats[2 * r + 1],
                                                    target: ignored ? nil : Int(tp[r]), scale: ignored ? 0 : scale,
                                                    into: d, accumulate: accumulate)
                    }
                }
            }
        }
        return out
    }
}

/// `scale` × the gradient of −log softmax(`row`)[`target`] with respect to the row, scale·(softmax(row) − onehot),
/// written to `gradient` or added to it when `accumulate`; `maximum` and `logSum` are the row's `logSumExpOfRow`
/// figures. Without a target only the softmax term is written.
@inlinable @inline(__always)
package func softmaxCrossEntropyGradient(_ row: UnsafePointer<Float>, _ count: Int, maximum m: Float, logSum: Float, target: Int?,
                                        scale s: Float, into gradient: UnsafeMutablePointer<Float>, accumulate: Bool) {
    forEachLane(count) { i, lanes in
        let p = VectorMath.exp((load(row + i, lanes) - m) - logSum) * s
        store(accumulate ? load(gradient + i, lanes) + p : p, gradient + i, lanes)
    }
    if let target { gradient[target] -= s }
}

/// For each row of `logits` (`rows` rows of `classes`), in parallel: its maximum m and log Σ exp(x − m), kept apart so
/// that log-probabilities are (x − m) − logSum, rounded as PyTorch rounds them. They are handed with the row to
/// `each` (which computes what the row gives a loss, in `extraPasses` more passes over it at most) and returned as a
/// `[rows, 2]` tensor for the backward pass.
package func rowLogSumExps(_ logits: UnsafePointer<Float>, rows: Int, classes: Int, extraPasses: Int = 0,
                           _ each: (_ row: Int, _ values: UnsafePointer<Float>, _ maximum: Float, _ logSum: Float) -> Void) -> Tensor {
    let statistics = Tensor(uninitializedShape: [rows, 2])
    let stats = statistics.pointer
    Parallel.forEach(rows, costPerItem: classes * (2 + extraPasses)) { range in
        for r in range {
            let row = logits + r * classes
            let (m, logSum) = logSumExpOfRow(row, classes)
            stats[2 * r] = m
            stats[2 * r + 1] = logSum
            each(r, row, m, logSum)
        }
    }
    return statistics
}

/// The row maximum m and log Σ exp(row[i] − m): log Σ exp(row) = m + logSum, computed stably.
@inlinable @inline(__always)
package func logSumExpOfRow(_ row: UnsafePointer<Float>, _ count: Int) -> (maximum: Float, logSum: Float) {
    let m = row.maximum(count)
    var acc = Float16x()
    forEachLane(count) { i, lanes in
        let e = VectorMath.exp(load(row + i, lanes) - m)
        acc += lanes == 16 ? e : e.replacing(with: 0, where: laneIndices .>= Int32(lanes))
    }
    return (m, log(acc.sum()))
}

/// 0, 1, …, 15: compare with a lane count to mask the padding of a short block.
@usableFromInline package let laneIndices = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

/// Runs `body(offset, lanes)` serially over `0..<count` in blocks of 16 (the last may be shorter).
@inlinable @inline(__always)
package func forEachLane(_ count: Int, _ body: (Int, Int) -> Void) {
    var i = 0
    while i + 16 <= count { body(i, 16); i += 16 }
    if i < count { body(i, count - i) }
}
