/// Which GELU formula to use.
public enum GELUApproximation: String, Codable, Sendable {
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's `gelu_new`, also what HF's OpenAI-GPT uses.
    case tanh
    /// x·Φ(x) with the exact error function.
    case none
}

extension Tape {
    /// The Gaussian error linear unit, element-wise.
    package func gelu(_ x: Variable, approximation: GELUApproximation = .tanh) -> Variable {
        let n = x.value.count
        let y = Tensor(uninitializedShape: x.shape)
        let xp = x.value.pointer, yp = y.pointer
        forEachBlock(n) { i, lanes in store(GELUMath.value(load(xp + i, lanes), approximation), yp + i, lanes) }
        let out = output(y, inputs: [x])
        record(out) {
            let (dx, accumulate) = x.gradientTarget()
            let dy = out.grad!.pointer, d = dx.pointer
            forEachBlock(n) { i, lanes in
                let g = load(dy + i, lanes) * GELUMath.derivative(load(xp + i, lanes), approximation)
                store(accumulate ? load(d + i, lanes) + g : g, d + i, lanes)
            }
        }
        return out
    }
}

enum GELUMath {
    static let c = Float(0.797_884_560_802_865_4) // √(2/π)

    /// √(2/π)·(x + 0.044715·x³), the argument of tanh.
    @inline(__always) static func inner(_ x: Float16x) -> Float16x {
        let cube: Float16x = x * x * x
        return c * (x + 0.044715 * cube)
    }

    @inline(__always) static func value(_ x: Float16x, _ kind: GELUApproximation) -> Float16x {
        switch kind {
        case .tanh:
            let t = VectorMath.tanh(inner(x))
            return 0.5 * x * (1 + t)
        case .none:
            let e = VectorMath.erf(x * 0.707_106_781_186_547_5)
            return 0.5 * x * (1 + e)
        }
    }

    @inline(__always) static func derivative(_ x: Float16x, _ kind: GELUApproximation) -> Float16x {
        switch kind {
        case .tanh:
            let t = VectorMath.tanh(inner(x))
            let x2 = x * x
            let slope: Float16x = c * (1 + 0.134145 * x2)
            let left: Float16x = 0.5 * (1 + t)
            let right: Float16x = 0.5 * x * (1 - t * t) * slope
            return left + right
        case .none:
            let e = VectorMath.erf(x * 0.707_106_781_186_547_5)
            let cdf: Float16x = 0.5 * (1 + e)
            let halfSquare: Float16x = -0.5 * x * x
            let pdf: Float16x = VectorMath.exp(halfSquare) * 0.398_942_280_401_432_7
            return cdf + x * pdf
        }
    }
}
