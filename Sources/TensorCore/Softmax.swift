import GPTUtilities

extension Tape {
    /// Softmax over the last dimension.
    package func softmax(_ x: Variable) -> Variable {
        let c = x.shape.last!
        let rows = x.value.count / max(c, 1)
        let y = x.value.copy()
        Parallel.forEach(rows, costPerItem: 3 * c) { r in
            for i in r { causalSoftmaxRow(y.pointer + i * c, valid: c, length: c) }
        }
        let out = output(y, inputs: [x])
        record(out) {
            let (g, accumulate) = x.gradientTarget()
            let dy = out.grad!.pointer, yp = y.pointer, dx = g.pointer
            // dx = y ⊙ (dy − Σ y·dy)
            Parallel.forEach(rows, costPerItem: 3 * c) { r in
                for i in r {
                    let yr = UnsafePointer(yp + i * c), gr = dy + i * c, d = dx + i * c
                    let dot = yr.dot(gr, c)
                    forEachLane(c) { j, lanes in
                        let v = load(yr + j, lanes) * (load(gr + j, lanes) - dot)
                        store(accumulate ? load(d + j, lanes) + v : v, d + j, lanes)
                    }
                }
            }
        }
        return out
    }
}
