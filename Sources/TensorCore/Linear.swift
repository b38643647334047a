import GPTUtilities

extension Tape {
    /// y = x · W + b over the last dimension of `x`, through BLAS.
    ///
    /// `weight` is stored `[in, out]` (Hugging Face Conv1D) or, with `transposedWeight`, `[out, in]` (torch Linear,
    /// and a tied embedding used as output layer). `bias`, when given, has `out` elements. Under bf16 precision the
    /// three products read bf16 copies of x, W and the output gradient (W's from `weight.bfloat16` when its owner
    /// keeps one), and accumulate in fp32.
    package func linear(_ x: Variable, weight: Variable, bias: Variable? = nil, transposedWeight: Bool = false) -> Variable {
        let product = LinearProduct(x: x, weight: .variable(weight, transposed: transposedWeight), bias: bias, precision: precision)
        let out = output(product.y, inputs: [x, weight] + (bias.map { [$0] } ?? []))
        record(out) { product.backward(out.grad!) }
        return out
    }

    /// y = x · W + b with W `[in, out]` packed for the decoding kernels (a frozen weight held in 32, 16 or 8 bits):
    /// the products read W's values widened to fp32, whatever the tape's precision, and W takes no gradient.
    package func linear(_ x: Variable, packed weight: MatrixVector.PackedMatrix, bias: Variable? = nil) -> Variable {
        let product = LinearProduct(x: x, weight: .packed(weight), bias: bias, precision: precision)
        let out = output(product.y, inputs: [x] + (bias.map { [$0] } ?? []))
        record(out) { product.backward(out.grad!) }
        return out
    }

    /// y = x · W + b + s · x_a · Aᵀ · Bᵀ: a Conv1D layer (`weight` `[in, out]`) with a low-rank adapter (LoRA) whose A
    /// is `[groups · rank, in]` and B `[out, rank]` (`LowRankProduct`: one group, or one per run of output columns),
    /// `adapterInput` being x or a dropout of it, in one output: besides y the pass keeps only x_a · Aᵀ
    /// (`[rows, groups · rank]`) for its backward. The base product runs in the tape's precision, the adapter's (small)
    /// products in fp32. W and b are usually frozen, and then get no gradient.
    package func lowRankLinear(_ x: Variable, weight: Variable, bias: Variable?, adapterInput: Variable, a: Variable, b: Variable,
                               scale: Float) -> Variable {
        lowRankLinear(LinearProduct(x: x, weight: .variable(weight, transposed: false), bias: bias, precision: precision),
                      adapterInput: adapterInput, a: a, b: b, scale: scale, inputs: [x, weight, adapterInput, a, b] + (bias.map { [$0] } ?? []))
    }

    /// `lowRankLinear` over a frozen weight packed for the decoding kernels (see `linear(_:packed:bias:)`): a low-rank
    /// adapter trained over a base held in 16 or 8 bits (QLoRA's idea).
    package func lowRankLinear(_ x: Variable, packed weight: MatrixVector.PackedMatrix, bias: Variable?, adapterInput: Variable,
                               a: Variable, b: Variable, scale: Float) -> Variable {
        lowRankLinear(LinearProduct(x: x, weight: .packed(weight), bias: bias, precision: precision),
                      adapterInput: adapterInput, a: a, b: b, scale: scale, inputs: [x, adapterInput, a, b] + (bias.map { [$0] } ?? []))
    }

    private func lowRankLinear(_ product: LinearProduct, adapterInput: Variable, a: Variable, b: Variable, scale: Float,
                               inputs: [Variable]) -> Variable {
        precondition(adapterInput.shape == product.x.shape, "lowRankLinear: adapter input \(adapterInput.shape) is not shaped as x \(product.x.shape)")
        let adapter = LowRankProduct(a: a.value, b: b.value, inputs: product.inputs, outputs: product.outputs)
        let rows = product.rows, xa = adapterInput.value
        let down = adapter.down(xa, a: a.value)
        adapter.up(down, b: b.value, scale: scale, into: product.y.pointer, accumulate: true)
        let out = output(product.y, inputs: inputs)
        record(out) {
            let dy = out.grad!
            product.backward(dy)
            let g = adapter.downGradient(dy.pointer, rows: rows, b: b.value)
            if b.requiresGrad {
                let (db, accumulate) = b.gradientTarget()
                adapter.bGradient(dy.pointer, down: down, scale: scale, into: db.pointer, accumulate: accumulate)
            }
            let width = g.shape[1]
            if a.requiresGrad {
                let (da, accumulate) = a.gradientTarget()
                BLAS.gemm(transposeA: true, m: width, n: adapter.inputs, k: rows, alpha: scale, a: g.pointer, lda: width, b: xa.pointer,
                          ldb: adapter.inputs, beta: accumulate ? 1 : 0, c: da.pointer, ldc: adapter.inputs)
            }
            if adapterInput.requiresGrad {
                let (dx, accumulate) = adapterInput.gradientTarget()
                BLAS.gemm(m: rows, n: adapter.inputs, k: width, alpha: scale, a: g.pointer, lda: width, b: a.value.pointer,
                          ldb: adapter.inputs, beta: accumulate ? 1 : 0, c: dx.pointer, ldc: adapter.inputs)
            }
        }
        return out
    }
}

/// The weight of a linear layer as its products read it.
private enum LinearWeight {
    /// A parameter, `[in, out]`, or `[out, in]` when `transposed`.
    case variable(Variable, transposed: Bool)
    /// A frozen `[in, out]` weight packed for the decoding kernels.
    case packed(MatrixVector.PackedMatrix)
}

/// y = x · W + b through BLAS, as `Tape.linear` computes it, with what its backward needs.
private struct LinearProduct {
    let x: Variable, weight: LinearWeight, bias: Variable?
    let rows: Int, inputs: Int, outputs: Int
    /// The bf16 copies the products read under bf16 precision (a parameter's only).
    let operands: LinearOperands?
    let y: Tensor

    init(x: Variable, weight: LinearWeight, bias: Variable?, precision: ProductPrecision) {
        let (inputs, outputs): (Int, Int)
        switch weight {
        case .variable(let w, let transposed):
            precondition(w.value.rank == 2, "linear weight must be 2-D, got \(w.shape)")
            (inputs, outputs) = transposed ? (w.shape[1], w.shape[0]) : (w.shape[0], w.shape[1])
        case .packed(let w):
            (inputs, outputs) = (w.k, w.n)
        }
        precondition(x.shape.last == inputs, "linear: input \(x.shape) does not end in \(inputs)")
        precondition(bias == nil || bias!.value.count == outputs, "linear: bias does not have \(outputs) elements")
        let rows = x.value.count / max(inputs, 1)
        let y = Tensor(uninitializedShape: Array(x.shape.dropLast()) + [outputs])
        var operands: LinearOperands?
        switch weight {
        case .variable(let weight, let transposed):
            if let b = bias?.value {
                Parallel.forEach(rows, costPerItem: outputs) { r in
                    for i in r { (y.pointer + i * outputs).update(from: b.pointer, count: outputs) }
                }
            }
            let w = weight.value, ldw = transposed ? inputs : outputs
            if precision == .bfloat16 {
                let bf16 = LinearOperands(x: BFloat16Tensor(rounding: x.value), weight: weight.bfloat16 ?? BFloat16Tensor(rounding: w))
                BLAS.gemm(transposeB: transposed, m: rows, n: outputs, k: inputs, a: bf16.x.pointer, lda: inputs,
                          b: bf16.weight.pointer, ldb: ldw, beta: bias == nil ? 0 : 1, c: y.pointer, ldc: outputs)
                operands = bf16
            } else {
                BLAS.gemm(transposeB: transposed, m: rows, n: outputs, k: inputs, a: x.value.pointer, lda: inputs,
                          b: w.pointer, ldb: ldw, beta: bias == nil ? 0 : 1, c: y.pointer, ldc: outputs)
            }
        case .packed(let w):
            if rows > 0 { MatrixVector.multiply(x.value.pointer, rows: rows, w, bias: bias.map { UnsafePointer($0.value.pointer) },
                                             into: y.pointer, exactInput: true) }
        }
        (self.x, self.weight, self.bias) = (x, weight, bias)
        (self.rows, self.inputs, self.outputs, self.operands, self.y) = (rows, inputs, outputs, operands, y)
    }

    /// The gradients of x, W and b for the output gradient `dy`.
    func backward(_ dy: Tensor) {
        switch weight {
        case .variable(let weight, let transposed):
            if let operands {
                let dy16 = BFloat16Tensor(rounding: dy)
                linearBackward(x: x, weight: weight, transposedWeight: transposed, rows: rows, inputs: inputs,
                               outputs: outputs, dy: dy16.pointer, xValues: operands.x.pointer, weightValues: operands.weight.pointer)
            } else {
                linearBackward(x: x, weight: weight, transposedWeight: transposed, rows: rows, inputs: inputs,
                               outputs: outputs, dy: dy.pointer, xValues: x.value.pointer, weightValues: weight.value.pointer)
            }
        case .packed(let w):
            if x.requiresGrad, rows > 0 {
                let (dx, accumulate) = x.gradientTarget()
                MatrixVector.multiplyTransposed(dy.pointer, rows: rows, w, into: dx.pointer, accumulate: accumulate)
            }
        }
        if let bias, bias.requiresGrad {
            let (db, accumulate) = bias.gradientTarget()
            sumRows(dy.pointer, rows: rows, columns: outputs, into: db.pointer, accumulate: accumulate)
        }
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
