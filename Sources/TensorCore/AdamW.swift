import Foundation

/// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected moments, no AMSGrad), over a whole
/// `ParameterSet` in one pass, or over one range of its arena (ZeRO stage 1: each process of a data-parallel run
/// keeps the moments of, and updates, its own share of the parameters).
package final class AdamW {
    /// Hyper-parameters other than the learning rate, which is given at each step (schedules change it).
    package struct Settings: Codable, Equatable, Sendable {
        package var beta1: Float = 0.9
        package var beta2: Float = 0.999
        package var epsilon: Float = 1e-8
        package var weightDecay: Float = 0.01

        package init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    package let settings: Settings
    /// The elements of the parameter arena this optimizer updates (the whole arena unless it was given a share).
    package let range: Range<Int>
    /// First moments of the elements in `range`, in the parameter arena's layout.
    package let firstMoment: Tensor
    /// Second moments of the elements in `range`, in the parameter arena's layout.
    package let secondMoment: Tensor
    /// Number of steps taken.
    package var stepCount = 0
    /// The arena in order, cut where weight decay starts or stops applying.
    private let segments: [(range: Range<Int>, decays: Bool)]
    private let parameters: ParameterSet

    /// An optimizer for `parameters`, or for the elements `range` of their arena only (its start a multiple of 16,
    /// for aligned vector access). By default weight decay applies to parameters of rank ≥ 2 only (matrices and
    /// embeddings), not to biases and LayerNorm gains; `decays` overrides that choice by name and shape.
    package init(parameters: ParameterSet, settings: Settings, range: Range<Int>? = nil,
                decays: (String, [Int]) -> Bool = { _, shape in shape.count >= 2 }) {
        let range = range ?? 0..<parameters.count
        precondition(range.lowerBound % 16 == 0 && range.upperBound <= parameters.count, "optimizer range \(range)")
        self.parameters = parameters
        self.settings = settings
        self.range = range
        firstMoment = Tensor(shape: [range.count])
        secondMoment = Tensor(shape: [range.count])
        var segments: [(range: Range<Int>, decays: Bool)] = []
        for name in parameters.names {
            let range = parameters.ranges[name]!, decay = decays(name, parameters[name].shape)
            if let last = segments.last, last.decays == decay {
                segments[segments.count - 1].range = last.range.lowerBound..<range.upperBound
            } else {
                segments.append((range, decay))
            }
        }
        self.segments = segments
    }

    /// Applies one update with `learningRate` to every parameter in `range` from its current gradient times
    /// `gradientScale` (the clipping factor from `ParameterSet.gradientClipping(maximum:)`; the stored gradients
    /// stay unscaled). Scaling here gives the same result as scaling the gradients first, without another pass.
    package func step(learningRate lr: Float, gradientScale: Float = 1) {
        stepCount += 1
        let s = settings
        let correction1 = 1 - pow(Double(s.beta1), Double(stepCount))
        let correction2 = 1 - pow(Double(s.beta2), Double(stepCount))
        let stepSize = Float(Double(lr) / correction1)
        let root2 = Float(correction2.squareRoot())
        let p = parameters.values.pointer, g = parameters.gradients.pointer
        // The moments are indexed like the arena: element i of the arena has its moments at m[i] and v[i].
        let m = firstMoment.pointer - range.lowerBound, v = secondMoment.pointer - range.lowerBound
        // Where bf16 copies are kept, they are rounded from the new values as those are written (no second pass).
        let p16 = parameters.bfloat16Values?.pointer
        let decayFactor = 1 - lr * s.weightDecay
        let b1 = s.beta1, b2 = s.beta2, eps = s.epsilon, scale = gradientScale
        // Arrays far larger than the caches are written with streaming stores: they are not read again before the
        // next step, and skipping the read-for-ownership cuts the pass's memory traffic from 10 to 7 array lengths.
        let streaming = range.count >= 1 << 22
        precondition(!streaming || [p + range.lowerBound, m + range.lowerBound, v + range.lowerBound].allSatisfy { Int(bitPattern: $0) % 64 == 0 },
                     "streaming stores need the arenas' 64-byte alignment (TensorStorage provides it)")
        /// The update of elements lo..<hi, whose weight-decay factor is `factor`: torch's decay-then-update in one
        /// pass (the same arithmetic as the scalar formula, no fused operations), 16 lanes at a time.
        func update(_ lo: Int, _ hi: Int, factor: Float) {
            var i = lo
            func scalar(_ i: Int) {
                let grad = g[i] * scale
                m[i] += (1 - b1) * (grad - m[i])
                v[i] = b2 * v[i] + (1 - b2) * grad * grad
                p[i] = p[i] * factor - stepSize * m[i] / (v[i].squareRoot() / root2 + eps)
                p16?[i] = BFloat16(p[i])
            }
            // Streaming stores need whole aligned lines.
            while i < hi, streaming, i % 16 != 0 { scalar(i); i += 1 }
            while i + 16 <= hi {
                let grad = load(g + i) * scale
                var mi = load(m + i), vi = load(v + i)
                mi += (1 - b1) * (grad - mi)
                vi = b2 * vi + (1 - b2) * grad * grad
                let pi = load(p + i) * factor - stepSize * mi / (vi.squareRoot() / root2 + eps)
                if streaming {
                    storeStreaming(mi, m + i); storeStreaming(vi, v + i); storeStreaming(pi, p + i)
                } else {
                    store(mi, m + i); store(vi, v + i); store(pi, p + i)
                }
                if let p16 {
                    UnsafeMutableRawPointer(p16 + i).storeBytes(of: BFloat16Conversion.rounded(pi), as: SIMD16<UInt16>.self)
                }
                i += 16
            }
            while i < hi { scalar(i); i += 1 }
        }
        let segments = segments, offset = range.lowerBound
        forEachChunk(range.count) { lo, hi in
            let lo = lo + offset, hi = hi + offset
            // Split the chunk where decayed and undecayed parameters meet.
            var k = segments.firstIndex { $0.range.upperBound > lo }!
            var start = lo
            while start < hi {
                let end = min(hi, segments[k].range.upperBound)
                update(start, end, factor: segments[k].decays ? decayFactor : 1)
                start = end
                k += 1
            }
            if streaming { streamingStoreFence() }
        }
        parameters.bfloat16IsCurrent = p16 != nil && range.count == parameters.count
    }
}
