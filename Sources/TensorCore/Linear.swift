import GPTUtilities

extension Tape {
    /// y = x · W + b over the last dimension of `x`, through BLAS.
    ///
    /// `weight` is stored `[in, out]` (Hugging Face Conv1D) or, with `transposedWeight`, `[out, in]` (torch Linear,
    /// and a tied embedding used as output layer). `bias`, when given, has `out` elements. Under bf16 precision the
    /// three products read bf16 copies of x, W and the output gradient (W's from `weight.bfloat16` when its owner
    /// keeps one), and accumulate in fp32.
    package func linear(_ x: Variable, weight: Variable, bias: Variable? = nil, transposedWeight: Bool = false) -> Variable {
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
        let ldw = transposedWeight ? inputs : outputs
        let operands = precision == .bfloat16
            ? LinearOperands(x: BFloat16Tensor(rounding: x.value), weight: weight.bfloat16 ?? BFloat16Tensor(rounding: w))
            : nil
        if let operands {
            BLAS.gemm(transposeB: transposedWeight, m: rows, n: outputs, k: inputs, a: operands.x.pointer, lda: inputs,
                      b: operands.weight.pointer, ldb: ldw, beta: bias == nil ? 0 : 1, c: y.pointer, ldc: outputs)
        } else {
            BLAS.gemm(transposeB: transposedWeight, m: rows, n: outputs, k: inputs, a: x.value.pointer, lda: inputs,
                      b: w.pointer, ldb: ldw, beta: bias == nil ? 0 : 1, c: y.pointer, ldc: outputs)
        }
        let out = output(y, inputs: [x, weight] + (bias.map { [$0] } ?? []))
        record(out) {
            let dy = out.grad!
            if let operands {
                let dy16 = BFloat16Tensor(rounding: dy)
                linearBackward(x: x, weight: weight, transposedWeight: transposedWeight, rows: rows, inputs: inputs,
                               outputs: outputs, dy: dy16.pointer, xValues: operands.x.pointer, weightValues: operands.weight.pointer)
            } else {
                linearBackward(x: x, weight: weight, transposedWeight: transposedWeight, rows: rows, inputs: inputs,
                               outputs: outputs, dy: dy.pointer, xValues: x.value.pointer, weightValues: w.pointer)
            }
            if let bias, bias.requiresGrad {
                let (db, accumulate) = bias.gradientTarget()
                sumRows(dy.pointer, rows: rows, columns: outputs, into: db.pointer, accumulate: accumulate)
            }
        }
        return out
    }
}

/// The bf16 copies a linear layer's products read under bf16 precision.
private struct LinearOperands {
    let x: BFloat16Tensor
    let weight: BFloat16Tensor
}

/// dx (+)= dy · Wᵀ and dW (+)= xᵀ · dy (W as stored), with inputs of either element type.
@inline(__always)
private func linearBackward<Element: ProductElement>(
    x: Variable, weight: Variable, transposedWeight: Bool, rows: Int, inputs: Int, outputs: Int,
    dy: UnsafePointer<Element>, xValues: UnsafePointer<Element>, weightValues: UnsafePointer<Element>
) {
    if x.requiresGrad {
        let (dx, accumulate) = x.gradientTarget()
        Element.gemm(transposeA: false, transposeB: !transposedWeight, m: rows, n: inputs, k: outputs, a: dy, lda: outputs,
                     b: weightValues, ldb: transposedWeight ? inputs : outputs, beta: accumulate ? 1 : 0, c: dx.pointer, ldc: inputs)
    }
    if weight.requiresGrad {
        let (dw, accumulate) = weight.gradientTarget()
        if transposedWeight {
            Element.gemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows, a: dy, lda: outputs,
                         b: xValues, ldb: inputs, beta: accumulate ? 1 : 0, c: dw.pointer, ldc: inputs)
        } else {
            Element.gemm(transposeA: true, transposeB: false, m: inputs, n: outputs, k: rows, a: xValues, lda: inputs,
                         b: dy, ldb: outputs, beta: accumulate ? 1 : 0, c: dw.pointer, ldc: outputs)
        }
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
