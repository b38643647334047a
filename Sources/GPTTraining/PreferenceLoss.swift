import Foundation
import GPTUtilities
import TensorCore

extension DirectPreferenceSettings.Loss {
    /// A pair's loss at margin z = (log π(chosen) − log π(rejected)) − (log π_ref(chosen) − log π_ref(rejected)),
    /// and its derivative with respect to z, in double precision.
    package func value(margin z: Double, beta: Double, labelSmoothing epsilon: Double) -> (loss: Double, derivative: Double) {
        /// log(1 + eˣ), stable for large |x|.
        func softplus(_ x: Double) -> Double { max(x, 0) + log1p(exp(-abs(x))) }
        func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-x)) }
        switch self {
        case .sigmoid:
            // −(1 − ε)·log σ(βz) − ε·log σ(−βz), with −log σ(x) = softplus(−x).
            return ((1 - epsilon) * softplus(-beta * z) + epsilon * softplus(beta * z),
                    -(1 - epsilon) * beta * sigmoid(-beta * z) + epsilon * beta * sigmoid(beta * z))
        case .ipo:
            let gap = z - 1 / (2 * beta)
            return (gap * gap, 2 * gap)
        case .hinge:
            return 1 - beta * z > 0 ? (1 - beta * z, -beta) : (0, 0)
        }
    }
}

extension Tape {
    /// The DPO family's loss over pairs, fused over the logits of the scored tokens: `logits` holds one row per
    /// scored token (`[..., vocabulary]`), `targets` the token each row scores, and `spans` the rows of each reply,
    /// a pair's chosen reply then its rejected one. A reply's log-probability is the sum of its tokens' log-softmax
    /// times its `normalizers` entry (1, or 1/length for IPO's averages); with the `reference` replies' (normalised
    /// the same way) each pair's margin z gives `loss.value(margin:…)`, and the result is the mean over pairs.
    /// Returns the loss and each reply's log-probability under the policy.
    package func preferenceLoss(_ logits: Variable, targets: [Int32], spans: [Range<Int>], reference: [Float], normalizers: [Float],
                                loss kind: DirectPreferenceSettings.Loss, beta: Float, labelSmoothing: Float) -> (loss: Variable, logProbabilities: [Float]) {
        let classes = logits.shape.last!
        let rows = logits.value.count / max(classes, 1)
        precondition(targets.count == rows && !spans.isEmpty && spans.count % 2 == 0 && reference.count == spans.count
                     && normalizers.count == spans.count && spans.last!.upperBound == rows,
                     "preferenceLoss: \(targets.count) targets, \(spans.count) spans, \(reference.count) references for \(rows) rows")
        precondition(targets.allSatisfy { $0 >= 0 && Int($0) < classes }, "preferenceLoss: target outside 0..<\(classes)")
        var rowLogProbabilities = [Float](repeating: 0, count: rows)
        let xp = logits.value.pointer
        let statistics = rowLogProbabilities.withUnsafeMutableBufferPointer { lp in
            rowLogSumExps(xp, rows: rows, classes: classes) { r, row, m, logSum in lp[r] = (row[Int(targets[r])] - m) - logSum }
        }
        let logProbabilities = replyLogProbabilities(rowLogProbabilities, spans: spans, normalizers: normalizers)
        let pairs = spans.count / 2
        var total = 0.0
        // d loss / d (log-probability of each reply), before the output's gradient.
        var derivatives = [Float](repeating: 0, count: spans.count)
        for k in 0..<pairs {
            let policy = Double(logProbabilities[2 * k]) - Double(logProbabilities[2 * k + 1])
            let z = policy - (Double(reference[2 * k]) - Double(reference[2 * k + 1]))
            let (value, derivative) = kind.value(margin: z, beta: Double(beta), labelSmoothing: Double(labelSmoothing))
            total += value
            derivatives[2 * k] = Float(derivative / Double(pairs)) * normalizers[2 * k]
            derivatives[2 * k + 1] = -Float(derivative / Double(pairs)) * normalizers[2 * k + 1]
        }
        var replyOfRow = [Int](repeating: 0, count: rows)
        for (s, span) in spans.enumerated() { for r in span { replyOfRow[r] = s } }
        let out = output(Tensor(shape: [], values: [Float(total / Double(pairs))]), inputs: [logits])
        record(out) {
            let stats = statistics.pointer  // keeps the saved row statistics alive until backward
            let (g, accumulate) = logits.gradientTarget()
            let scale = out.grad!.pointer[0]
            let gp = g.pointer
            Parallel.forEach(rows, costPerItem: classes * 2) { range in
                for r in range {
                    // d loss / d x = c · d log π(t) / d x = −c · (softmax(x) − onehot(t)).
                    softmaxCrossEntropyGradient(xp + r * classes, classes, maximum: stats[2 * r], logSum: stats[2 * r + 1],
                                                target: Int(targets[r]), scale: -scale * derivatives[replyOfRow[r]],
                                                into: gp + r * classes, accumulate: accumulate)
                }
            }
        }
        return (out, logProbabilities)
    }
}

/// Each reply's log-probability: the sum, over its `spans` entry, of its tokens' log-probabilities (`tokens`, one per
/// scored row) times its `normalizers` entry (1, or 1/length for IPO's averages).
func replyLogProbabilities(_ tokens: [Float], spans: [Range<Int>], normalizers: [Float]) -> [Float] {
    zip(spans, normalizers).map { span, normalizer in Float(span.reduce(0.0) { $0 + Double(tokens[$1]) } * Double(normalizer)) }
}
