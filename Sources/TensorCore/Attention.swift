import Foundation

extension Tape {
    /// Fused causal multi-head self-attention.
    ///
    /// `qkv` is `[batch, length, 3·width]` with queries, keys and values side by side (as GPT's `c_attn` makes
    /// them), each split into `heads` consecutive groups of `width / heads` columns. Returns `[batch, length, width]`:
    /// softmax(q·kᵀ / √d, causal) · v with the heads merged back.
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
    /// `pattern` says which earlier keys each query sees (dense, local, strided or fixed); only those are ever
    /// computed. `scale` replaces the factor 1/√d of the scores.
    ///
    /// Memory stays linear in the length whatever the pattern: rows go in blocks against the keys they see, and
    /// only each row's log-sum-exp is kept; backward recomputes the probabilities from it, block by block (as
    /// FlashAttention does), and regenerates the dropout masks from the same draws.
    public func causalSelfAttention(_ qkv: Variable, heads: Int, dropout: Float, random: inout SeededRandom,
                                    keyLengths: [Int]? = nil, pattern: AttentionPattern = .dense,
                                    scale: Float? = nil) -> Variable {
        precondition(qkv.value.rank == 3 && qkv.shape[2] % (3 * heads) == 0,
                     "attention: qkv \(qkv.shape) is not [batch, length, 3·width] with width divisible by \(heads) heads")
        let batch = qkv.shape[0], length = qkv.shape[1], width = qkv.shape[2] / 3, d = width / heads
        precondition(keyLengths.map { $0.count == batch && $0.allSatisfy { (1...length).contains($0) } } ?? true,
                     "attention: key lengths \(keyLengths ?? []) are not one in 1...\(length) per row")
        precondition(pattern.isValid, "attention: the pattern \(pattern) has a non-positive size")
        let layout = AttentionLayout(length: length, pattern: pattern, limits: keyLengths ?? [Int](repeating: length, count: batch))
        let scale = scale ?? 1 / Float(d).squareRoot()
        let heads = AttentionHeads(qkv: qkv.value.pointer, length: length, width: width, headCount: heads)
        let y = Tensor(uninitializedShape: [batch, length, width])
        let logSumExp = Tensor(uninitializedShape: [batch * heads.count, length])
        let masks = AttentionDropout(probability: dropout, seeds: dropout > 0 ? (0..<(batch * heads.count)).map { _ in random.next() } : [])
        let yp = y.pointer, lse0 = logSumExp.pointer
        Parallel.forEach(batch * heads.count, costPerItem: 2 * layout.keysPerHead * d) { range in
            let scores = Tensor(uninitializedShape: [layout.largestTile]), extraScores = Tensor(uninitializedShape: [layout.extraTile])
            for bh in range {
                let b = bh / heads.count, head = heads.head(bh), lse = lse0 + bh * length
                var random = masks.random(bh)
                for tile in layout.tiles {
                    let p = scores.pointer, extra = extraScores.pointer
                    layout.scores(tile, b, head, scale, into: p, extra)
                    for i in tile.rowStart..<tile.rowEnd {
                        let (from, to) = layout.bandColumns(b, i, tile), r = i - tile.rowStart
                        let row = p + r * tile.columns, rowExtra = extra + r * layout.extraWidth
                        let extraCount = layout.keysBeforeBand(b, i).count
                        lse[i] = attentionSoftmax(row + from, count: to - from, extra: rowExtra, extraCount: extraCount)
                        row.update(repeating: 0, count: from)
                        (row + to).update(repeating: 0, count: tile.columns - to)
                        masks.apply(row: row, columns: tile.columns, extra: rowExtra, extraCount: extraCount, random: &random)
                    }
                    let out = yp + (b * length + tile.rowStart) * width + head.offset
                    BLAS.gemm(m: tile.rows, n: d, k: tile.columns, a: p, lda: tile.columns, b: head.v + tile.keyStart * heads.rowStride,
                              ldb: heads.rowStride, c: out, ldc: width)
                    for i in tile.rowStart..<tile.rowEnd {
                        let rowExtra = extra + (i - tile.rowStart) * layout.extraWidth, o = out + (i - tile.rowStart) * width
                        for (t, j) in layout.keysBeforeBand(b, i).enumerated() { o.axpy(rowExtra[t], head.v + j * heads.rowStride, d) }
                    }
                }
            }
        }
        let out = output(y, inputs: [qkv])
        record(out) {
            let lse0 = logSumExp.pointer  // keeps the log-sum-exp alive until backward
            let (dqkv, accumulate) = qkv.gradientTarget()
            let dy = out.grad!.pointer, beta: Float = accumulate ? 1 : 0
            let gradients = AttentionHeads(qkv: dqkv.pointer, length: length, width: width, headCount: heads.count)
            let rowStride = heads.rowStride
            Parallel.forEach(batch * heads.count, costPerItem: 5 * layout.keysPerHead * d) { range in
                // Per tile: probabilities, those applied to v (after dropout), and the gradient of the scores; the
                // same for the keys before the band.
                let tileScratch = Tensor(uninitializedShape: [3, layout.largestTile]), extraScratch = Tensor(uninitializedShape: [3, layout.extraTile])
                let p = tileScratch.pointer, applied = masks.isActive ? p + layout.largestTile : p, dp = p + 2 * layout.largestTile
                let ep = extraScratch.pointer, eApplied = masks.isActive ? ep + layout.extraTile : ep, eds = ep + 2 * layout.extraTile
                for bh in range {
                    let b = bh / heads.count, head = heads.head(bh), grad = gradients.head(bh), lse = lse0 + bh * length
                    let dout = dy + b * length * width + head.offset
                    var random = masks.random(bh)
                    // Key bands overlap from one row block to the next: dK and dV accumulate over the blocks.
                    if !accumulate {
                        for t in 0..<length {
                            (grad.k + t * rowStride).update(repeating: 0, count: d)
                            (grad.v + t * rowStride).update(repeating: 0, count: d)
                        }
                    }
                    for tile in layout.tiles {
                        let rows = tile.rows, columns = tile.columns, blockOut = dout + tile.rowStart * width
                        // The probabilities again, from the scores and each row's log-sum-exp, and the same masks.
                        layout.scores(tile, b, head, scale, into: p, ep)
                        for i in tile.rowStart..<tile.rowEnd {
                            let (from, to) = layout.bandColumns(b, i, tile), r = i - tile.rowStart
                            let row = p + r * columns, rowExtra = ep + r * layout.extraWidth
                            let extraCount = layout.keysBeforeBand(b, i).count
                            exponentiate(row + from, count: to - from, minus: lse[i])
                            exponentiate(rowExtra, count: extraCount, minus: lse[i])
                            row.update(repeating: 0, count: from)
                            (row + to).update(repeating: 0, count: columns - to)
                            if masks.isActive {
                                (applied + r * columns).update(from: row, count: columns)
                                (eApplied + r * layout.extraWidth).update(from: rowExtra, count: extraCount)
                                masks.apply(row: applied + r * columns, columns: columns, extra: eApplied + r * layout.extraWidth,
                                            extraCount: extraCount, random: &random)
                            }
                        }
                        // dP = dO · Vᵀ and dV += Aᵀ · dO over the tile (A: the probabilities applied).
                        BLAS.gemm(transposeB: true, m: rows, n: columns, k: d, a: blockOut, lda: width,
                                  b: head.v + tile.keyStart * rowStride, ldb: rowStride, c: dp, ldc: columns)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: applied, lda: columns, b: blockOut, ldb: width,
                                  beta: 1, c: grad.v + tile.keyStart * rowStride, ldc: rowStride)
                        if masks.isActive {
                            // Through the dropout: kept entries (non-zero where p is) scale, dropped ones get no gradient.
                            for n in 0..<(rows * columns) { dp[n] = applied[n] == 0 ? 0 : dp[n] * masks.inverseKeep }
                        }
                        // dS = P ⊙ (dP − Σ P·dP) · scale, in place in dP (zero wherever P is: masked or outside the
                        // band); a row's keys before the band join the sum and get their dS in `eds`.
                        for r in 0..<rows {
                            let i = tile.rowStart + r, keys = layout.keysBeforeBand(b, i)
                            let pr = UnsafePointer(p + r * columns), dr = dp + r * columns, go = UnsafePointer(blockOut + r * width)
                            let rowExtra = ep + r * layout.extraWidth, rowApplied = eApplied + r * layout.extraWidth
                            let rowGradient = eds + r * layout.extraWidth
                            var dot = pr.dot(dr, columns)
                            for (t, j) in keys.enumerated() {
                                var g = go.dot(head.v + j * rowStride, d)
                                if masks.isActive { g = rowApplied[t] == 0 ? 0 : g * masks.inverseKeep }
                                rowGradient[t] = g
                                dot += rowExtra[t] * g
                                (grad.v + j * rowStride).axpy(rowApplied[t], go, d)
                            }
                            forEachLane(columns) { j, lanes in
                                store((load(dr + j, lanes) - dot) * load(pr + j, lanes) * scale, dr + j, lanes)
                            }
                            for t in keys.indices { rowGradient[t] = (rowGradient[t] - dot) * rowExtra[t] * scale }
                        }
                        // dQ = dS · K (rows of this block only); dK += dSᵀ · Q; then the share of the keys before the band.
                        BLAS.gemm(m: rows, n: d, k: columns, a: dp, lda: columns, b: head.k + tile.keyStart * rowStride, ldb: rowStride,
                                  beta: beta, c: grad.q + tile.rowStart * rowStride, ldc: rowStride)
                        BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: dp, lda: columns, b: head.q + tile.rowStart * rowStride,
                                  ldb: rowStride, beta: 1, c: grad.k + tile.keyStart * rowStride, ldc: rowStride)
                        for r in 0..<rows {
                            let i = tile.rowStart + r, rowGradient = eds + r * layout.extraWidth
                            for (t, j) in layout.keysBeforeBand(b, i).enumerated() {
                                (grad.q + i * rowStride).axpy(rowGradient[t], head.k + j * rowStride, d)
                                (grad.k + j * rowStride).axpy(rowGradient[t], head.q + i * rowStride, d)
                            }
                        }
                    }
                }
                withExtendedLifetime(tileScratch) {}
                withExtendedLifetime(extraScratch) {}
            }
        }
        return out
    }
}

/// Where one (batch row, head)'s queries, keys and values sit in a `[batch, length, 3·width]` buffer (or its gradient).
struct AttentionHeads {
    struct Head {
        let q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>
        /// The head's first column in a `[batch, length, width]` output; floats from one position to the next
        /// in the buffer; floats of a head.
        let offset: Int, rowStride: Int, width: Int
    }

    let qkv: UnsafeMutablePointer<Float>
    let length: Int, width: Int, count: Int
    var rowStride: Int { 3 * width }
    var headWidth: Int { width / count }

    init(qkv: UnsafeMutablePointer<Float>, length: Int, width: Int, headCount: Int) {
        self.qkv = qkv
        self.length = length
        self.width = width
        count = headCount
    }

    /// Head `bh % count` of batch row `bh / count`.
    @inline(__always) func head(_ bh: Int) -> Head {
        let offset = (bh % count) * headWidth, q = qkv + (bh / count) * length * rowStride + offset
        return Head(q: q, k: q + width, v: q + 2 * width, offset: offset, rowStride: rowStride, width: headWidth)
    }
}

/// Dropout on attention probabilities: one stream of draws per (batch row, head), taken in the same order in forward
/// and backward so that backward regenerates the masks instead of keeping them.
struct AttentionDropout {
    let probability: Float
    let seeds: [UInt64]
    var isActive: Bool { probability > 0 }
    var keep: Float { 1 - probability }
    var inverseKeep: Float { 1 / (1 - probability) }

    func random(_ bh: Int) -> SeededRandom { SeededRandom(seed: seeds.isEmpty ? 0 : seeds[bh]) }

    /// Zeroes or scales one row's probabilities in place: a draw for each of the band's columns, then one for each
    /// key before the band.
    @inline(__always)
    func apply(row: UnsafeMutablePointer<Float>, columns: Int, extra: UnsafeMutablePointer<Float>, extraCount: Int,
               random: inout SeededRandom) {
        guard isActive else { return }
        let keep = keep, inverseKeep = inverseKeep
        for j in 0..<columns { row[j] = random.nextFloat() < keep ? row[j] * inverseKeep : 0 }
        for t in 0..<extraCount { extra[t] = random.nextFloat() < keep ? extra[t] * inverseKeep : 0 }
    }
}

/// The tiles causal attention computes under a pattern: rows in blocks of `causalBlock`, each block against the band
/// of keys its rows see (from the band start of its first row to its last row); keys a row sees before its band
/// (strided keys, fixed summaries) go row by row. The masked triangle and the keys no row sees are never touched.
struct AttentionLayout {
    struct Tile {
        let rowStart: Int, rowEnd: Int, keyStart: Int, keyEnd: Int
        var rows: Int { rowEnd - rowStart }
        var columns: Int { keyEnd - keyStart }
    }

    let pattern: AttentionPattern
    /// Each batch row's key length.
    let limits: [Int]
    let tiles: [Tile]
    /// Floats of the largest tile; the most keys a row sees before its band, and floats of a tile's rows of them.
    let largestTile: Int
    let extraWidth: Int
    var extraTile: Int { max(1, causalBlock * extraWidth) }
    /// Scores one head computes (for the work estimate).
    let keysPerHead: Int

    init(length: Int, pattern: AttentionPattern, limits: [Int]) {
        self.pattern = pattern
        self.limits = limits
        var tiles: [Tile] = [], largest = 0, kept = 0
        for rowStart in Swift.stride(from: 0, to: length, by: causalBlock) {
            let rowEnd = min(length, rowStart + causalBlock)
            let tile = Tile(rowStart: rowStart, rowEnd: rowEnd, keyStart: pattern.bandStart(rowStart), keyEnd: rowEnd)
            tiles.append(tile)
            largest = max(largest, tile.rows * tile.columns)
            kept += tile.rows * tile.columns
        }
        var widest = 0
        for i in 0..<length {
            let count = pattern.keysBeforeBand(i, limit: length).count
            widest = max(widest, count)
            kept += count
        }
        self.tiles = tiles
        largestTile = largest
        extraWidth = widest
        keysPerHead = kept
    }

    @inline(__always) func keysBeforeBand(_ b: Int, _ i: Int) -> KeyPositions { pattern.keysBeforeBand(i, limit: limits[b]) }

    /// The columns of `tile` that row i of batch row b sees: from..<to. A padding row (beyond its key length) whose
    /// band holds no real key reads the band's first key (its output is never used by a real position).
    @inline(__always) func bandColumns(_ b: Int, _ i: Int, _ tile: Tile) -> (from: Int, to: Int) {
        let valid = min(i + 1, limits[b]), start = min(pattern.bandStart(i), valid - 1)
        let to = max(1, valid - tile.keyStart)
        return (min(max(0, start - tile.keyStart), to - 1), to)
    }

    /// The scaled scores of a tile's rows against the tile's keys (rows of `columns` floats at `scores`) and against
    /// each row's keys before its band (rows of `extraWidth` floats at `extra`).
    @inline(__always)
    func scores(_ tile: Tile, _ b: Int, _ head: AttentionHeads.Head, _ scale: Float, into scores: UnsafeMutablePointer<Float>,
                _ extra: UnsafeMutablePointer<Float>) {
        let rowStride = head.rowStride
        BLAS.gemm(transposeB: true, m: tile.rows, n: tile.columns, k: head.width, alpha: scale,
                  a: head.q + tile.rowStart * rowStride, lda: rowStride, b: head.k + tile.keyStart * rowStride, ldb: rowStride,
                  c: scores, ldc: tile.columns)
        for i in tile.rowStart..<tile.rowEnd {
            let q = UnsafePointer(head.q + i * rowStride), rowExtra = extra + (i - tile.rowStart) * extraWidth
            for (t, j) in keysBeforeBand(b, i).enumerated() { rowExtra[t] = q.dot(head.k + j * rowStride, head.width) * scale }
        }
    }
}

/// Softmax over `count` entries at `row` together with `extraCount` more at `extra`, in place; returns the
/// log-sum-exp of the scores (from which `exponentiate` gives the probabilities back).
@inline(__always)
func attentionSoftmax(_ row: UnsafeMutablePointer<Float>, count: Int, extra: UnsafeMutablePointer<Float>, extraCount: Int) -> Float {
    let m = extraCount > 0 ? max(UnsafePointer(row).maximum(count), UnsafePointer(extra).maximum(extraCount))
        : UnsafePointer(row).maximum(count)
    var acc = Float16x()
    for (pointer, n) in [(row, count), (extra, extraCount)] {
        forEachLane(n) { j, lanes in
            let e = VectorMath.exp(load(pointer + j, lanes) - m)
            store(e, pointer + j, lanes)
            acc += lanes == 16 ? e : e.replacing(with: 0, where: laneIndices .>= Int32(lanes))
        }
    }
    let total = acc.sum(), inverse = 1 / total
    for (pointer, n) in [(row, count), (extra, extraCount)] {
        forEachLane(n) { j, lanes in store(load(pointer + j, lanes) * inverse, pointer + j, lanes) }
    }
    return m + Foundation.log(total)
}

/// exp(x − shift) of `count` entries in place.
@inline(__always)
func exponentiate(_ pointer: UnsafeMutablePointer<Float>, count: Int, minus shift: Float) {
    forEachLane(count) { j, lanes in store(VectorMath.exp(load(pointer + j, lanes) - shift), pointer + j, lanes) }
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
