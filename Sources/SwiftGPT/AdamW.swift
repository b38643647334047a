import Foundation
import TensorCore

/// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected moments, no AMSGrad), over a whole
/// `ParameterSet` in one pass.
public final class AdamW {
    /// Hyper-parameters other than the learning rate, which is given at each step (schedules change it).
    public struct Settings: Codable, Equatable, Sendable {
        public var beta1: Float = 0.9
        public var beta2: Float = 0.999
        public var epsilon: Float = 1e-8
        public var weightDecay: Float = 0.01

        public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    public let settings: Settings
    /// First moments, in the parameter arena's layout.
    public let firstMoment: Tensor
    /// Second moments, in the parameter arena's layout.
    public let secondMoment: Tensor
    /// Number of steps taken.
    public var stepCount = 0
    /// Arena ranges that receive weight decay.
    private let decayed: [Range<Int>]
    private let parameters: ParameterSet

    /// An optimizer for `parameters`. By default weight decay applies to parameters of rank ≥ 2 only (matrices
    /// and embeddings), not to biases and LayerNorm gains; `decays` overrides that choice by name and shape.
    public init(parameters: ParameterSet, settings: Settings,
                decays: (String, [Int]) -> Bool = { _, shape in shape.count >= 2 }) {
        self.parameters = parameters
        self.settings = settings
        firstMoment = Tensor(shape: [parameters.count])
        secondMoment = Tensor(shape: [parameters.count])
        decayed = parameters.names.filter { decays($0, parameters[$0].shape) }.map { parameters.ranges[$0]! }
    }

    /// Applies one update with `learningRate` to every parameter from its current gradient.
    public func step(learningRate lr: Float) {
        stepCount += 1
        let s = settings
        let correction1 = 1 - pow(Double(s.beta1), Double(stepCount))
        let correction2 = 1 - pow(Double(s.beta2), Double(stepCount))
        let stepSize = Float(Double(lr) / correction1)
        let root2 = Float(correction2.squareRoot())
        let p = parameters.values.pointer, g = parameters.gradients.pointer
        let m = firstMoment.pointer, v = secondMoment.pointer
        let decayFactor = 1 - lr * s.weightDecay
        let b1 = s.beta1, b2 = s.beta2, eps = s.epsilon
        let decayed = decayed
        // One pass over memory: within each chunk, decay the parts that belong to decayed parameters, then apply
        // the Adam update (16 lanes at a time; the same arithmetic as the scalar formula, no fused operations).
        forEachChunk(parameters.count) { lo, hi in
            for r in decayed where r.lowerBound < hi && r.upperBound > lo {
                for i in max(lo, r.lowerBound)..<min(hi, r.upperBound) { p[i] *= decayFactor }
            }
            typealias V = SIMD16<Float>
            var i = lo
            while i + 16 <= hi {
                let grad = UnsafeRawPointer(g + i).loadUnaligned(as: V.self)
                var mi = UnsafeRawPointer(m + i).loadUnaligned(as: V.self)
                var vi = UnsafeRawPointer(v + i).loadUnaligned(as: V.self)
                mi += (1 - b1) * (grad - mi)
                vi = b2 * vi + (1 - b2) * grad * grad
                let pi = UnsafeRawPointer(p + i).loadUnaligned(as: V.self) - stepSize * mi / (vi.squareRoot() / root2 + eps)
                UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: V.self)
                UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: V.self)
                UnsafeMutableRawPointer(p + i).storeBytes(of: pi, as: V.self)
                i += 16
            }
            while i < hi {
                let grad = g[i]
                m[i] += (1 - b1) * (grad - m[i])
                v[i] = b2 * v[i] + (1 - b2) * grad * grad
                p[i] -= stepSize * m[i] / (v[i].squareRoot() / root2 + eps)
                i += 1
            }
        }
    }
}
