/// The products of a low-rank adapter (LoRA) on a layer of `inputs` → `outputs`: s · x · Aᵀ · Bᵀ, with A
/// `[groups · rank, inputs]` and B `[outputs, rank]`. The output columns fall into `groups` equal runs, run g adapted
/// by A's rows g·rank..<(g+1)·rank and B's rows g·outputs/groups..<(g+1)·outputs/groups: one group is plain LoRA, three
/// are separate adapters on the query, key and value projections that a model keeps as one fused layer.
package struct LowRankProduct {
    package let rank: Int
    package let groups: Int
    package let inputs: Int
    package let outputs: Int
    /// Output columns per group.
    private var width: Int { outputs / groups }

    /// The products of `a` and `b`, which must be shaped as described for a layer of `inputs` → `outputs`.
    package init(a: Tensor, b: Tensor, inputs: Int, outputs: Int) {
        let rank = b.shape.count == 2 ? b.shape[1] : 0
        precondition(rank > 0 && a.rank == 2 && a.shape[1] == inputs && a.shape[0] % rank == 0 && b.shape[0] == outputs
                     && outputs % (a.shape[0] / rank) == 0,
                     "low-rank adapter: A \(a.shape) and B \(b.shape) do not adapt a layer of \(inputs) → \(outputs)")
        (self.rank, groups, self.inputs, self.outputs) = (rank, a.shape[0] / rank, inputs, outputs)
    }

    /// x · Aᵀ for the rows of x (`[rows, inputs]`): `[rows, groups · rank]`.
    package func down(_ x: Tensor, a: Tensor) -> Tensor {
        let rows = x.count / inputs, down = Tensor(uninitializedShape: [rows, groups * rank])
        BLAS.gemm(transposeB: true, m: rows, n: groups * rank, k: inputs, a: x.pointer, lda: inputs, b: a.pointer, ldb: inputs,
                  c: down.pointer, ldc: groups * rank)
        return down
    }

    /// y = `scale` · down · Bᵀ, group by group (`[rows, outputs]`), added to y's values when `accumulate`.
    package func up(_ down: Tensor, b: Tensor, scale: Float, into y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let rows = down.shape[0]
        for g in 0..<groups {
            BLAS.gemm(transposeB: true, m: rows, n: width, k: rank, alpha: scale, a: down.pointer + g * rank, lda: groups * rank,
                      b: b.pointer + g * width * rank, ldb: rank, beta: accumulate ? 1 : 0, c: y + g * width, ldc: outputs)
        }
    }

    /// The gradient at `down` over the scale, dy · B group by group (`[rows, groups · rank]`), for the output gradient
    /// `dy` (`[rows, outputs]`).
    package func downGradient(_ dy: UnsafePointer<Float>, rows: Int, b: Tensor) -> Tensor {
        let g = Tensor(uninitializedShape: [rows, groups * rank])
        for group in 0..<groups {
            BLAS.gemm(m: rows, n: rank, k: width, a: dy + group * width, lda: outputs, b: b.pointer + group * width * rank, ldb: rank,
                      c: g.pointer + group * rank, ldc: groups * rank)
        }
        return g
    }

    /// dB (+)= `scale` · dyᵀ · down, group by group.
    package func bGradient(_ dy: UnsafePointer<Float>, down: Tensor, scale: Float, into db: UnsafeMutablePointer<Float>, accumulate: Bool) {
        for g in 0..<groups {
            BLAS.gemm(transposeA: true, m: width, n: rank, k: down.shape[0], alpha: scale, a: dy + g * width, lda: outputs,
                      b: down.pointer + g * rank, ldb: groups * rank, beta: accumulate ? 1 : 0, c: db + g * width * rank, ldc: rank)
        }
    }

    /// w (`[inputs, outputs]`) += `scale` · Aᵀ · Bᵀ, group by group: the adapter merged into the layer's weight.
    package func merge(a: Tensor, b: Tensor, scale: Float, into w: UnsafeMutablePointer<Float>) {
        for g in 0..<groups {
            BLAS.gemm(transposeA: true, transposeB: true, m: inputs, n: width, k: rank, alpha: scale, a: a.pointer + g * rank * inputs,
                      lda: inputs, b: b.pointer + g * width * rank, ldb: rank, beta: 1, c: w + g * width, ldc: outputs)
        }
    }
}
