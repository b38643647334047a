import Foundation

extension Tape {
    /// Fused causal multi-head self-attention.
    ///
    /// `qkv` is `[batch, length, 3·width]` with queries, keys and values side by side (as GPT's `c_attn` makes
    /// them), each split into `heads` consecutive groups of `width / heads` columns. Returns `[batch, length, width]`:
    /// softmax(q·kᵀ / √d, causal) · v with the heads merged back. The attention probabilities are kept for backward.
    public func causalSelfAttention(_ qkv: Variable, heads: Int) -> Variable {
        var unused = SeededRandom(seed: 0)
        return causalSelfAttention(qkv, heads: heads, dropout: 0, random: &unused)
    }

    /// The same with dropout on the attention probabilities (as GPT-2's `attn_pdrop`): each is zeroed with
    /// probability `dropout` and the rest scaled by 1 / (1 − dropout), drawn from `random`.
    ///
    /// `keyLengths`, for right-padded batches, gives each row's real length: no query sees a key at or beyond it
    /// (Hugging Face's attention mask). Real positions are unaffected by the padding either way; the padding
    /// positions then attend to the row's real tokens only.
    ///
    /// `window` makes the attention local: query i sees keys i − window < j ≤ i only (at least its own position).
    /// `scale` replaces the factor 1/√d of the scores.
    public func causalSelfAttention(_ qkv: Variable, heads: Int, dropout: Float, random: inout SeededRandom,
                                    keyLengths: [Int]? = nil, window: Int? = nil, scale: Float? = nil) -> Variable {
        precondition(qkv.value.rank == 3 && qkv.shape[2] % (3 * heads) == 0,
                     "attention: qkv \(qkv.shape) is not [batch, length, 3·width] with width divisible by \(heads) heads")
        let batch = qkv.shape[0], length = qkv.shape[1], width = qkv.shape[2] / 3, d = width / heads
        precondition(keyLengths.map { $0.count == batch && $0.allSatisfy { (1...length).contains($0) } } ?? true,
                     "attention: key lengths \(keyLengths ?? []) are not one in 1...\(length) per row")
        let limits = keyLengths ?? [Int](repeating: length, count: batch)
        let scale = scale ?? 1 / Float(d).squareRoot()
        precondition(window.map { $0 >= 1 } ?? true, "attention: the window must be positive")
        let band = AttentionBand(length: length, window: window)
        /// The first key row i sees.
        func first(_ i: Int, _ valid: Int) -> Int { window.map { min(max(0, i - $0 + 1), valid - 1) } ?? 0 }
        let y = Tensor(uninitializedShape: [batch, length, width])
        // Probabilities of the kept tiles only: row block by row block, each row over the block's key band.
        let probabilities = Tensor(uninitializedShape: [batch * heads, band.size])
        // With dropout, the probabilities actually applied to v (zeroed or scaled) are kept as well.
        let dropped = dropout > 0 ? Tensor(uninitializedShape: [batch * heads, band.size]) : probabilities
        let seeds = dropout > 0 ? (0..<(batch * heads)).map { _ in random.next() } : []
        let keep = 1 - dropout, inverseKeep = 1 / (1 - dropout)
        let q0 = qkv.value.pointer, yp = y.pointer, pp = probabilities.pointer, dpp = dropped.pointer
        let stride = 3 * width
        Parallel.forEach(batch * heads, costPerItem: 2 * band.size * d) { range in
            for bh in range {
                let b = bh / heads, h = bh % heads
                let q = q0 + b * length * stride + h * d, k = q + width, v = q + 2 * width
                var headRandom = SeededRandom(seed: seeds.isEmpty ? 0 : seeds[bh])
                for tile in band.tiles {
                    let p = pp + bh * band.size + tile.offset, applied = dpp + bh * band.size + tile.offset
                    let columns = tile.keyEnd - tile.keyStart
                    BLAS.gemm(transposeB: true, m: tile.rowEnd - tile.rowStart, n: columns, k: d, alpha: scale,
                              a: q + tile.rowStart * stride, lda: stride, b: k + tile.keyStart * stride, ldb: stride, c: p, ldc: columns)
                    for i in tile.rowStart..<tile.rowEnd {
                        let row = p + (i - tile.rowStart) * columns
                        let valid = min(i + 1, limits[b]), start = first(i, valid)
                        // A padding row whose window holds no real key reads the band's first key (its output is
                        // never used by a real position).
                        let to = max(1, valid - tile.keyStart), from = min(max(0, start - tile.keyStart), to - 1)
                        row.update(repeating: 0, count: from)
                        causalSoftmaxRow(row + from, valid: to - from, length: columns - from)
                        if dropout > 0 {
                            let appliedRow = applied + (i - tile.rowStart) * columns
                            for j in 0..<columns {
                                appliedRow[j] = j >= from && j < to && headRandom.nextFloat() < keep ? row[j] * inverseKeep : 0
                            }
                        }
                    }
                    BLAS.gemm(m: tile.rowEnd - tile.rowStart, n: d, k: columns, a: applied, lda: columns, b: v + tile.keyStart * stride,
                              ldb: stride, c: yp + (b * length + tile.rowStart) * width + h * d, ldc: width)
                }
            }
        }
        let out = output(y, inputs: [qkv])
        record(out) {
            // Using the saved tensors here keeps them alive until backward.
            let pp = probabilities.pointer, dpp = dropped.pointer
            let (dqkv, accumulate) = qkv.gradientTarget()
            let dy = out.grad!.pointer, dq0 = dqkv.pointer, beta: Float = accumulate ? 1 : 0
            Parallel.forEach(batch * heads, costPerItem: 4 * band.size * d) { range in
                let scratch = Tensor(uninitializedShape: [band.largestTile]), dp = scratch.pointer
                for bh in range {
                    let b = bh / heads, h = bh % heads
                    let offset = b * length * stride + h * d
                    let q = q0 + offset, k = q + width, v = q + 2 * width
                    let dq = dq0 + offset, dk = dq + width, dv = dq + 2 * width
                    let dout = dy + b * length * width + h * d
                    // Key bands overlap from one row block to the next: dK and dV accumulate over the blocks.
                    if !accumulate {
                        for t in 0..<length {
                            (dk + t * stride).update(repeating: 0, count: d)
                            (dv + t * stride).update(repeating: 0, count: d)
                        }
                    }
                    for tile in band.tiles {
                        let p = pp + bh * band.size + tile.offset, applied = dpp + bh * band.size + tile.offset
                        let rows = tile.rowEnd - tile.rowStart, columns = tile.keyEnd - tile.keyStart
                        let blockOut = dout + tile.rowStart * width
                        // dP = dO · Vᵀ and dV += Pᵀ · dO over the tile.
                        BLAS.gemm(transposeB: true, m: rows, n: columns, k: d, a: blockOut, lda: width,
                                  b: v + tile.keyStart * stride, ldb: stride, c: dp, ldc: columns)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: applied, lda: columns, b: blockOut, ldb: width,
                                  beta: 1, c: dv + tile.keyStart * stride, ldc: stride)
                        if dropout > 0 {
                            // Through the dropout: kept entries (non-zero where p is) scale, dropped ones get no gradient.
                            for i in 0..<(rows * columns) { dp[i] = applied[i] == 0 ? 0 : dp[i] * inverseKeep }
                        }
                        // dS = P ⊙ (dP − Σ P·dP) · scale, in place in dP (zero wherever P is: masked or outside the window).
                        for i in 0..<rows {
                            let pr = UnsafePointer(p + i * columns), dr = dp + i * columns
                            let dot = pr.dot(dr, columns)
                            forEachLane(columns) { j, lanes in
                                store((load(dr + j, lanes) - dot) * load(pr + j, lanes) * scale, dr + j, lanes)
                            }
                        }
                        // dQ = dS · K (rows of this block only) ; dK += dSᵀ · Q.
                        BLAS.gemm(m: rows, n: d, k: columns, a: dp, lda: columns, b: k + tile.keyStart * stride, ldb: stride,
                                  beta: beta, c: dq + tile.rowStart * stride, ldc: stride)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: dp, lda: columns, b: q + tile.rowStart * stride,
                                  ldb: stride, beta: 1, c: dk + tile.keyStart * stride, ldc: stride)
                    }
                }
                withExtendedLifetime(scratch) {}
            }
        }
        return out
    }
}

/// The tiles causal (optionally local) attention computes: rows in blocks of `causalBlock`, each block against the
/// band of keys its rows can see: from the window's start for the block's first row (0 when dense) to the block's
/// last row. The masked triangle beyond the diagonal, and the keys before the window, are never touched.
struct AttentionBand {
    struct Tile {
        let rowStart: Int, rowEnd: Int, keyStart: Int, keyEnd: Int
        /// Where the tile's [rows, keys] probabilities start in the band storage.
        let offset: Int
    }

    let tiles: [Tile]
    /// Floats of all tiles together, and of the largest one.
    let size: Int
    let largestTile: Int

    init(length: Int, window: Int?) {
        var tiles: [Tile] = [], size = 0, largest = 0
        for rowStart in stride(from: 0, to: length, by: causalBlock) {
            let rowEnd = min(length, rowStart + causalBlock)
            let keyStart = window.map { max(0, rowStart - $0 + 1) } ?? 0
            tiles.append(Tile(rowStart: rowStart, rowEnd: rowEnd, keyStart: keyStart, keyEnd: rowEnd, offset: size))
            let floats = (rowEnd - rowStart) * (rowEnd - keyStart)
            size += floats
            largest = max(largest, floats)
        }
        self.tiles = tiles
        self.size = size
        largestTile = largest
    }
}

/// Rows per block in causal attention: large enough for efficient products, small enough to skip most of the
/// masked triangle. Measured here on GPT-2 training at 256 tokens: 64 beats 128 by ~3% and 32 by ~5%.
let causalBlock = 64

/// Softmax of the first `valid` entries of a row in place; entries from `valid` to `length` become 0 (masked).
@inline(__always)
public func causalSoftmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, length: Int) {
    let m = UnsafePointer(row).maximum(valid)
    var acc = Float16x()
    forEachLane(valid) { j, lanes in
        let e = VectorMath.exp(load(row + j, lanes) - m)
        store(e, row + j, lanes)
        acc += lanes == 16 ? e : e.replacing(with: 0, where: laneIndices .>= Int32(lanes))
    }
    let inverse = 1 / acc.sum()
    forEachLane(valid) { j, lanes in store(load(row + j, lanes) * inverse, row + j, lanes) }
    (row + valid).update(repeating: 0, count: length - valid)
}
