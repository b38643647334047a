extension Tape {
    /// y = x · W + b over the last dimension of `x`, through BLAS.
    ///
    /// `weight` is stored `[in, out]` (Hugging Face Conv1D) or, with `transposedWeight`, `[out, in]` (torch Linear,
    /// and a tied embedding used as output layer). `bias`, when given, has `out` elements.
    public func linear(_ x: Variable, weight: Variable, bias: Variable? = nil, transposedWeight: Bool = false) -> Variable {
        let w = weight.value
        precondition(w.rank == 2, "linear weight must be 2-D, got \(w.shape)")
        let (inputs, outputs) = transposedWeight ? (w.shape[1], w.shape[0]) : (w.shape[0], w.shape[1])
        precondition(x.shape.last == inputs, "linear: input \(x.shape) does not end in \(inputs)")
        precondition(bias == nil || bias!.value.count == outputs, "linear: bias does not have \(outputs) elements")
        let rows = x.value.count / max(inputs, 1)
        let y = Tensor(uninitializedShape: Array(x.shape.dropLast()) + [outputs])
        if let b = bias?.value {
            Parallel.forEach(rows, costPerItem: outputs) { r in
                for i in r { (y.pointer + i * outputs).update(from: b.pointer, count: outputs) }
            }
        }
        BLAS.gemm(transposeB: transposedWeight, m: rows, n: outputs, k: inputs,
                  a: x.value.pointer, lda: inputs, b: w.pointer, ldb: transposedWeight ? inputs : outputs,
                  beta: bias == nil ? 0 : 1, c: y.pointer, ldc: outputs)
        let out = output(y, inputs: [x, weight] + (bias.map { [$0] } ?? []))
        record(out) {
            let dy = out.grad!
            if x.requiresGrad {
                let (dx, accumulate) = x.gradientTarget()
                BLAS.gemm(transposeB: !transposedWeight, m: rows, n: inputs, k: outputs,
                          a: dy.pointer, lda: outputs, b: w.pointer, ldb: transposedWeight ? inputs : outputs,
                          beta: accumulate ? 1 : 0, c: dx.pointer, ldc: inputs)
            }
            if weight.requiresGrad {
                let (dw, accumulate) = weight.gradientTarget()
                if transposedWeight {
                    BLAS.gemm(transposeA: true, m: outputs, n: inputs, k: rows, a: dy.pointer, lda: outputs,
                              b: x.value.pointer, ldb: inputs, beta: accumulate ? 1 : 0, c: dw.pointer, ldc: inputs)
                } else {
                    BLAS.gemm(transposeA: true, m: inputs, n: outputs, k: rows, a: x.value.pointer, lda: inputs,
                              b: dy.pointer, ldb: outputs, beta: accumulate ? 1 : 0, c: dw.pointer, ldc: outputs)
                }
            }
            if let bias, bias.requiresGrad {
                let (db, accumulate) = bias.gradientTarget()
                sumRows(dy.pointer, rows: rows, columns: outputs, into: db.pointer, accumulate: accumulate)
            }
        }
        return out
    }
}

/// out[c] (+)= Σ_r x[r, c], parallel over blocks of columns.
func sumRows(_ x: UnsafePointer<Float>, rows: Int, columns: Int, into out: UnsafeMutablePointer<Float>, accumulate: Bool) {
    let blocks = (columns + 15) / 16
    Parallel.forEach(blocks, costPerItem: rows * 16) { range in
        let lo = range.lowerBound * 16, hi = min(columns, range.upperBound * 16)
        if !accumulate { (out + lo).update(repeating: 0, count: hi - lo) }
        for r in 0..<rows { (out + lo).axpy(1, x + r * columns + lo, hi - lo) }
    }
}
