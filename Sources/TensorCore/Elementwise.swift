import GPTUtilities

extension Tape {
    /// a + b, element-wise (same shapes): residual connections and sums of losses.
    package func add(_ a: Variable, _ b: Variable) -> Variable {
        precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
        let y = Tensor(uninitializedShape: a.shape)
        let ap = a.value.pointer, bp = b.value.pointer, yp = y.pointer
        forEachBlock(y.count) { i, lanes in store(load(ap + i, lanes) + load(bp + i, lanes), yp + i, lanes) }
        let out = output(y, inputs: [a, b])
        record(out) {
            let dy = out.grad!
            for v in [a, b] where v.requiresGrad {
                let (g, accumulate) = v.gradientTarget()
                g.pointer.axpyParallel(1, dy.pointer, dy.count, accumulate: accumulate)
            }
        }
        return out
    }

    /// `x` (`[..., columns]`) with element `column` of every row replaced by `value`, which then passes no gradient
    /// back: a class left out of a softmax (a large negative `value`), e.g. a token a policy is never let to sample.
    package func fillingColumn(_ x: Variable, column: Int, with value: Float) -> Variable {
        let columns = x.shape.last!
        precondition((0..<columns).contains(column), "fillingColumn: column \(column) outside 0..<\(columns)")
        let y = x.value.copy()
        for row in stride(from: column, to: y.count, by: columns) { y.pointer[row] = value }
        let out = output(y, inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            g.pointer.axpyParallel(1, out.grad!.pointer, g.count, accumulate: accumulate)
            for row in stride(from: column, to: g.count, by: columns) { g.pointer[row] -= out.grad!.pointer[row] }
        }
        return out
    }

    /// x · factor, element-wise (weights a loss term, e.g. λ·L_LM).
    package func scale(_ x: Variable, by factor: Float) -> Variable {
        let y = Tensor(uninitializedShape: x.shape)
        y.pointer.axpyParallel(factor, x.value.pointer, x.value.count, accumulate: false)
        let out = output(y, inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            g.pointer.axpyParallel(factor, out.grad!.pointer, g.count, accumulate: accumulate)
        }
        return out
    }

    /// The same elements seen with another shape; the gradient flows back unchanged.
    package func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
        let out = output(x.value.reshaped(shape), inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            g.pointer.axpyParallel(1, out.grad!.pointer, g.count, accumulate: accumulate)
        }
        return out
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    /// `axpy` split across cores for large arrays.
    func axpyParallel(_ alpha: Float, _ x: UnsafePointer<Float>, _ count: Int, accumulate: Bool) {
        let blocks = (count + 4095) / 4096
        Parallel.forEach(blocks, costPerItem: 4096) { r in
            let lo = r.lowerBound * 4096, hi = Swift.min(count, r.upperBound * 4096)
            (self + lo).axpy(alpha, x + lo, hi - lo, accumulate: accumulate)
        }
    }
}
