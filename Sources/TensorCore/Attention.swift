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
    /// `stride` (with a window) adds Sparse Transformer's strided keys: also every j with (i − j) mod stride = 0
    /// (window 1 with a stride is the strided pattern alone; window = stride is GPT-3's "local and strided").
    /// `scale` replaces the factor 1/√d of the scores.
    public func causalSelfAttention(_ qkv: Variable, heads: Int, dropout: Float, random: inout SeededRandom,
                                    keyLengths: [Int]? = nil, window: Int? = nil, stride: Int? = nil,
                                    scale: Float? = nil) -> Variable {
        precondition(qkv.value.rank == 3 && qkv.shape[2] % (3 * heads) == 0,
                     "attention: qkv \(qkv.shape) is not [batch, length, 3·width] with width divisible by \(heads) heads")
        let batch = qkv.shape[0], length = qkv.shape[1], width = qkv.shape[2] / 3, d = width / heads
        precondition(keyLengths.map { $0.count == batch && $0.allSatisfy { (1...length).contains($0) } } ?? true,
                     "attention: key lengths \(keyLengths ?? []) are not one in 1...\(length) per row")
        precondition(window.map { $0 >= 1 } ?? true, "attention: the window must be positive")
        precondition(stride == nil || (window != nil && stride! >= 1), "attention: a stride needs a window and must be positive")
        let limits = keyLengths ?? [Int](repeating: length, count: batch)
        let scale = scale ?? 1 / Float(d).squareRoot()
        let band = AttentionBand(length: length, window: window)
        let strided = StridedKeys(length: length, window: window ?? length, stride: stride, limits: limits)
        /// The first key row i sees in its band.
        func first(_ i: Int, _ valid: Int) -> Int { window.map { min(max(0, i - $0 + 1), valid - 1) } ?? 0 }
        let y = Tensor(uninitializedShape: [batch, length, width])
        // Probabilities of the kept tiles only: row block by row block, each row over the block's key band; and of
        // each row's strided keys before its band.
        let probabilities = Tensor(uninitializedShape: [batch * heads, band.size])
        let stridedProbabilities = Tensor(uninitializedShape: [batch * heads, max(strided.size, 1)])
        // With dropout, the probabilities actually applied to v (zeroed or scaled) are kept as well.
        let dropped = dropout > 0 ? Tensor(uninitializedShape: [batch * heads, band.size]) : probabilities
        let stridedDropped = dropout > 0 && strided.size > 0 ? Tensor(uninitializedShape: [batch * heads, strided.size]) : stridedProbabilities
        let seeds = dropout > 0 ? (0..<(batch * heads)).map { _ in random.next() } : []
        let keep = 1 - dropout, inverseKeep = 1 / (1 - dropout)
        let q0 = qkv.value.pointer, yp = y.pointer, pp = probabilities.pointer, dpp = dropped.pointer
        let sp0 = stridedProbabilities.pointer, sdp0 = stridedDropped.pointer
        let rowStride = 3 * width
        Parallel.forEach(batch * heads, costPerItem: 2 * (band.size + strided.size) * d) { range in
            for bh in range {
                let b = bh / heads, h = bh % heads
                let q = q0 + b * length * rowStride + h * d, k = q + width, v = q + 2 * width
                let sp = sp0 + bh * strided.size, sapplied = sdp0 + bh * strided.size
                var headRandom = SeededRandom(seed: seeds.isEmpty ? 0 : seeds[bh])
                for tile in band.tiles {
                    let p = pp + bh * band.size + tile.offset, applied = dpp + bh * band.size + tile.offset
                    let columns = tile.keyEnd - tile.keyStart
                    BLAS.gemm(transposeB: true, m: tile.rowEnd - tile.rowStart, n: columns, k: d, alpha: scale,
                              a: q + tile.rowStart * rowStride, lda: rowStride, b: k + tile.keyStart * rowStride, ldb: rowStride,
                              c: p, ldc: columns)
                    for i in tile.rowStart..<tile.rowEnd {
                        let row = p + (i - tile.rowStart) * columns
                        let valid = min(i + 1, limits[b]), start = first(i, valid)
                        // A padding row whose window holds no real key reads the band's first key (its output is
                        // never used by a real position).
                        let to = max(1, valid - tile.keyStart), from = min(max(0, start - tile.keyStart), to - 1)
                        row.update(repeating: 0, count: from)
                        let keys = strided.keys(b, i), extra = sp + strided.offset(b, i)
                        for (t, j) in keys.enumerated() { extra[t] = UnsafePointer(q + i * rowStride).dot(k + j * rowStride, d) * scale }
                        jointSoftmax(row + from, count: to - from, tail: columns - to, extra: extra, extraCount: keys.count)
                        if dropout > 0 {
                            let appliedRow = applied + (i - tile.rowStart) * columns
                            for j in 0..<columns {
                                appliedRow[j] = j >= from && j < to && headRandom.nextFloat() < keep ? row[j] * inverseKeep : 0
                            }
                            let appliedExtra = sapplied + strided.offset(b, i)
                            for t in keys.indices { appliedExtra[t] = headRandom.nextFloat() < keep ? extra[t] * inverseKeep : 0 }
                        }
                    }
                    let out = yp + (b * length + tile.rowStart) * width + h * d
                    BLAS.gemm(m: tile.rowEnd - tile.rowStart, n: d, k: columns, a: applied, lda: columns, b: v + tile.keyStart * rowStride,
                              ldb: rowStride, c: out, ldc: width)
                    for i in tile.rowStart..<tile.rowEnd {
                        let appliedExtra = sapplied + strided.offset(b, i), o = out + (i - tile.rowStart) * width
                        for (t, j) in strided.keys(b, i).enumerated() { o.axpy(appliedExtra[t], v + j * rowStride, d) }
                    }
                }
            }
        }
        let out = output(y, inputs: [qkv])
        record(out) {
            // Using the saved tensors here keeps them alive until backward.
            let pp = probabilities.pointer, dpp = dropped.pointer
            let sp0 = stridedProbabilities.pointer, sdp0 = stridedDropped.pointer
            let (dqkv, accumulate) = qkv.gradientTarget()
            let dy = out.grad!.pointer, dq0 = dqkv.pointer, beta: Float = accumulate ? 1 : 0
            Parallel.forEach(batch * heads, costPerItem: 4 * (band.size + strided.size) * d) { range in
                let scratch = Tensor(uninitializedShape: [band.largestTile]), dp = scratch.pointer
                let stridedScratch = Tensor(uninitializedShape: [max(strided.size, 1)]), sds = stridedScratch.pointer
                for bh in range {
                    let b = bh / heads, h = bh % heads
                    let offset = b * length * rowStride + h * d
                    let q = q0 + offset, k = q + width, v = q + 2 * width
                    let dq = dq0 + offset, dk = dq + width, dv = dq + 2 * width
                    let dout = dy + b * length * width + h * d
                    let sp = sp0 + bh * strided.size, sapplied = sdp0 + bh * strided.size
                    // Key bands overlap from one row block to the next: dK and dV accumulate over the blocks.
                    if !accumulate {
                        for t in 0..<length {
                            (dk + t * rowStride).update(repeating: 0, count: d)
                            (dv + t * rowStride).update(repeating: 0, count: d)
                        }
                    }
                    for tile in band.tiles {
                        let p = pp + bh * band.size + tile.offset, applied = dpp + bh * band.size + tile.offset
                        let rows = tile.rowEnd - tile.rowStart, columns = tile.keyEnd - tile.keyStart
                        let blockOut = dout + tile.rowStart * width
                        // dP = dO · Vᵀ and dV += Pᵀ · dO over the tile.
                        BLAS.gemm(transposeB: true, m: rows, n: columns, k: d, a: blockOut, lda: width,
                                  b: v + tile.keyStart * rowStride, ldb: rowStride, c: dp, ldc: columns)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: applied, lda: columns, b: blockOut, ldb: width,
                                  beta: 1, c: dv + tile.keyStart * rowStride, ldc: rowStride)
                        if dropout > 0 {
                            // Through the dropout: kept entries (non-zero where p is) scale, dropped ones get no gradient.
                            for i in 0..<(rows * columns) { dp[i] = applied[i] == 0 ? 0 : dp[i] * inverseKeep }
                        }
                        // dS = P ⊙ (dP − Σ P·dP) · scale, in place in dP (zero wherever P is: masked or outside the
                        // window); a row's strided keys join the sum and get their dS in the strided scratch.
                        for i in 0..<rows {
                            let row = tile.rowStart + i, keys = strided.keys(b, row), at = strided.offset(b, row)
                            let pr = UnsafePointer(p + i * columns), dr = dp + i * columns, go = UnsafePointer(blockOut + i * width)
                            var dot = pr.dot(dr, columns)
                            for (t, j) in keys.enumerated() {
                                var g = go.dot(v + j * rowStride, d)
                                if dropout > 0 { g = sapplied[at + t] == 0 ? 0 : g * inverseKeep }
                                sds[at + t] = g
                                dot += sp[at + t] * g
                                (dv + j * rowStride).axpy(sapplied[at + t], go, d)
                            }
                            forEachLane(columns) { j, lanes in
                                store((load(dr + j, lanes) - dot) * load(pr + j, lanes) * scale, dr + j, lanes)
                            }
                            for t in keys.indices { sds[at + t] = (sds[at + t] - dot) * sp[at + t] * scale }
                        }
                        // dQ = dS · K (rows of this block only) ; dK += dSᵀ · Q; then the strided keys' share.
                        BLAS.gemm(m: rows, n: d, k: columns, a: dp, lda: columns, b: k + tile.keyStart * rowStride, ldb: rowStride,
                                  beta: beta, c: dq + tile.rowStart * rowStride, ldc: rowStride)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: dp, lda: columns, b: q + tile.rowStart * rowStride,
                                  ldb: rowStride, beta: 1, c: dk + tile.keyStart * rowStride, ldc: rowStride)
                        for row in tile.rowStart..<tile.rowEnd {
                            let at = strided.offset(b, row)
                            for (t, j) in strided.keys(b, row).enumerated() {
                                (dq + row * rowStride).axpy(sds[at + t], k + j * rowStride, d)
                                (dk + j * rowStride).axpy(sds[at + t], q + row * rowStride, d)
                            }
                        }
                    }
                }
                withExtendedLifetime(scratch) {}
                withExtendedLifetime(stridedScratch) {}
            }
        }
        return out
    }
}

/// Softmax over `count` entries at `row` together with `extraCount` more at `extra`, in place; the `tail` entries
/// after the row's `count` become 0.
@inline(__always)
func jointSoftmax(_ row: UnsafeMutablePointer<Float>, count: Int, tail: Int, extra: UnsafeMutablePointer<Float>, extraCount: Int) {
    guard extraCount > 0 else {
        causalSoftmaxRow(row, valid: count, length: count + tail)
        return
    }
    let m = max(UnsafePointer(row).maximum(count), UnsafePointer(extra).maximum(extraCount))
    var acc = Float16x()
    for (pointer, n) in [(row, count), (extra, extraCount)] {
        forEachLane(n) { j, lanes in
            let e = VectorMath.exp(load(pointer + j, lanes) - m)
            store(e, pointer + j, lanes)
            acc += lanes == 16 ? e : e.replacing(with: 0, where: laneIndices .>= Int32(lanes))
        }
    }
    let inverse = 1 / acc.sum()
    for (pointer, n) in [(row, count), (extra, extraCount)] {
        forEachLane(n) { j, lanes in store(load(pointer + j, lanes) * inverse, pointer + j, lanes) }
    }
    (row + count).update(repeating: 0, count: tail)
}

/// The strided keys each row sees beyond its local window: j = i − k·stride ≥ 0 with i − j ≥ window (and j within
/// the row's key length), farthest first; where their probabilities sit in a per-head buffer.
struct StridedKeys {
    let window: Int, stride: Int?
    let limits: [Int]
    /// Start of row i's keys for batch row b, and floats per head.
    private let offsets: [[Int]]
    let size: Int

    init(length: Int, window: Int, stride: Int?, limits: [Int]) {
        self.window = window
        self.stride = stride
        self.limits = limits
        var offsets: [[Int]] = [], size = 0
        if stride != nil {
            for b in limits.indices {
                var running = 0, rowOffsets: [Int] = []
                for i in 0..<length {
                    rowOffsets.append(running)
                    running += Self.keys(i, limit: limits[b], window: window, stride: stride).count
                }
                offsets.append(rowOffsets)
                size = max(size, running)
            }
        }
        self.offsets = offsets
        self.size = size
    }

    /// Positions first, first + step, … (`count` of them).
    struct Positions: RandomAccessCollection {
        let first: Int, step: Int, count: Int
        var startIndex: Int { 0 }
        var endIndex: Int { count }
        subscript(t: Int) -> Int { first + t * step }
    }

    static func keys(_ i: Int, limit: Int, window: Int, stride: Int?) -> Positions {
        guard let stride else { return Positions(first: 0, step: 1, count: 0) }
        // The nearest strided key outside the window: i − k·stride with k·stride ≥ window.
        let k = (window + stride - 1) / stride
        let last = min(i - k * stride, limit - 1)
        guard last >= 0 else { return Positions(first: 0, step: stride, count: 0) }
        let first = (i - k * stride) % stride
        return Positions(first: first, step: stride, count: last >= first ? (last - first) / stride + 1 : 0)
    }

    @inline(__always) func keys(_ b: Int, _ i: Int) -> Positions {
        Self.keys(i, limit: limits[b], window: window, stride: stride)
    }

    @inline(__always) func offset(_ b: Int, _ i: Int) -> Int { stride == nil ? 0 : offsets[b][i] }
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
