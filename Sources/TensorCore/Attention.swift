import Foundation
import GPTUtilities

extension Tape {
    /// The most bytes of attention probabilities one attention call keeps for backward (256 MiB). Keeping them
    /// saves backward a product and the exponentials (about a fifth of forward + backward at T = 1024); beyond
    /// this, memory stays linear in the length instead (dense attention keeps T²/2 per head: 1.6 GiB for 12 heads
    /// at T = 8192).
    package static let attentionProbabilityBudget = 256 << 20

    /// Fused causal multi-head self-attention.
    ///
    /// `qkv` is `[batch, length, 3·width]` with queries, keys and values side by side (as GPT's `c_attn` makes
    /// them), each split into `heads` consecutive groups of `width / heads` columns. Returns `[batch, length, width]`:
    /// softmax(q·kᵀ / √d, causal) · v with the heads merged back.
    package func causalSelfAttention(_ qkv: Variable, heads: Int) -> Variable {
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
    /// Rows go in blocks against the keys they see. The probabilities of those tiles are kept for backward while
    /// they take at most `probabilityBudget` bytes; beyond, only each row's log-sum-exp is kept and
    /// backward recomputes the probabilities from it in blocks of keys (as FlashAttention does), so that memory
    /// grows linearly in the length whatever the pattern. Dropout masks are a function of the positions, so
    /// backward regenerates them.
    package func causalSelfAttention(_ qkv: Variable, heads: Int, dropout: Float, random: inout SeededRandom,
                                    keyLengths: [Int]? = nil, pattern: AttentionPattern = .dense,
                                    scale: Float? = nil, probabilityBudget: Int = Tape.attentionProbabilityBudget) -> Variable {
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
        // The band tiles' probabilities, while they fit the budget; otherwise backward recomputes them.
        let kept = layout.bandFloats * batch * heads.count * MemoryLayout<Float>.size <= probabilityBudget
            ? Tensor(uninitializedShape: [batch * heads.count, layout.bandFloats]) : nil
        let yp = y.pointer, lse0 = logSumExp.pointer, kept0 = kept?.pointer
        Parallel.forEach(batch * heads.count, costPerItem: 2 * layout.keysPerHead * d) { range in
            // A tile's probabilities (unless kept), those applied to v (with dropout), the scores before the band.
            let scores = Tensor(uninitializedShape: [2, layout.largestTile]), extraScores = Tensor(uninitializedShape: [layout.extraTile])
            // Shared keys before the band, gathered: their keys and values.
            let gathered = Tensor(uninitializedShape: [2, max(1, layout.extraWidth * d)])
            let sharedK = gathered.pointer, sharedV = sharedK + max(1, layout.extraWidth * d)
            let lists = UnsafeMutablePointer<KeyPositions>.allocate(capacity: causalBlock)
            defer { lists.deallocate() }
            for bh in range {
                let b = bh / heads.count, head = heads.head(bh), lse = lse0 + bh * length
                for tile in layout.tiles {
                    let p = kept0.map { $0 + bh * layout.bandFloats + tile.offset } ?? scores.pointer
                    let applied = masks.isActive ? scores.pointer + layout.largestTile : p, extra = extraScores.pointer
                    BLAS.gemm(transposeB: true, m: tile.rows, n: tile.columns, k: d, alpha: scale, a: head.q + tile.rowStart * heads.rowStride,
                              lda: heads.rowStride, b: head.k + tile.keyStart * heads.rowStride, ldb: heads.rowStride, c: p, ldc: tile.columns)
                    let shared = layout.listKeysBeforeBand(tile, b, into: lists)
                    if let shared {
                        // Every row reads the same keys: two products instead of a dot product a key and row.
                        AttentionLayout.gather(shared, from: head.k, rowStride: heads.rowStride, d: d, into: sharedK)
                        AttentionLayout.gather(shared, from: head.v, rowStride: heads.rowStride, d: d, into: sharedV)
                        BLAS.gemm(transposeB: true, m: tile.rows, n: shared.count, k: d, alpha: scale, a: head.q + tile.rowStart * heads.rowStride,
                                  lda: heads.rowStride, b: sharedK, ldb: d, c: extra, ldc: layout.extraWidth)
                    } else {
                        layout.forEachKeyBeforeBand(tile, lists: lists) { r, t, j in
                            extra[r * layout.extraWidth + t] = UnsafePointer(head.q + (tile.rowStart + r) * heads.rowStride)
                                .dot(head.k + j * heads.rowStride, d) * scale
                        }
                    }
                    for i in tile.rowStart..<tile.rowEnd {
                        let (from, to) = layout.bandColumns(b, i, tile), r = i - tile.rowStart
                        let row = p + r * tile.columns, rowExtra = extra + r * layout.extraWidth
                        let keys = lists[r]
                        lse[i] = attentionSoftmax(row + from, count: to - from, extra: rowExtra, extraCount: keys.count)
                        row.update(repeating: 0, count: from)
                        (row + to).update(repeating: 0, count: tile.columns - to)
                        if masks.isActive {
                            let stream = masks.stream(bh, i), appliedRow = applied + r * tile.columns
                            appliedRow.update(from: row, count: tile.columns)
                            masks.apply(appliedRow + from, count: to - from, firstKey: tile.keyStart + from, stream: stream)
                            for (t, j) in keys.enumerated() where !masks.keeps(stream, j) { rowExtra[t] = 0 }
                            for t in keys.indices { rowExtra[t] *= masks.inverseKeep }
                        }
                    }
                    let out = yp + (b * length + tile.rowStart) * width + head.offset
                    BLAS.gemm(m: tile.rows, n: d, k: tile.columns, a: applied, lda: tile.columns, b: head.v + tile.keyStart * heads.rowStride,
                              ldb: heads.rowStride, c: out, ldc: width)
                    if let shared {
                        BLAS.gemm(m: tile.rows, n: d, k: shared.count, a: extra, lda: layout.extraWidth, b: sharedV, ldb: d,
                                  beta: 1, c: out, ldc: width)
                    } else {
                        layout.forEachKeyBeforeBand(tile, lists: lists) { r, t, j in
                            (out + r * width).axpy(extra[r * layout.extraWidth + t], head.v + j * heads.rowStride, d)
                        }
                    }
                }
            }
        }
        let out = output(y, inputs: [qkv])
        record(out) {
            let lse0 = logSumExp.pointer, y0 = y.pointer, kept0 = kept?.pointer  // keeps them alive until backward
            let (dqkv, accumulate) = qkv.gradientTarget()
            let dy = out.grad!.pointer, beta: Float = accumulate ? 1 : 0
            let gradients = AttentionHeads(qkv: dqkv.pointer, length: length, width: width, headCount: heads.count)
            let rowStride = heads.rowStride, chunkSize = AttentionLayout.backwardChunk
            Parallel.forEach(batch * heads.count, costPerItem: 5 * layout.keysPerHead * d) { range in
                // Per chunk of a tile's keys: probabilities (unless kept), those applied to v (after dropout), and the
                // gradient of the scores; each row's dO · O.
                let scratch = Tensor(uninitializedShape: [3 * causalBlock * chunkSize + causalBlock + 3 * layout.extraTile])
                // Shared keys before the band, gathered: keys, values, and their gradients before they are added back.
                let gathered = Tensor(uninitializedShape: [4, max(1, layout.extraWidth * d)]), gatheredSize = max(1, layout.extraWidth * d)
                let sharedK = gathered.pointer, sharedV = sharedK + gatheredSize
                let sharedDK = sharedV + gatheredSize, sharedDV = sharedDK + gatheredSize
                let lists = UnsafeMutablePointer<KeyPositions>.allocate(capacity: causalBlock)
                defer { lists.deallocate() }
                let p = scratch.pointer, applied = masks.isActive ? p + causalBlock * chunkSize : p
                let dp = p + 2 * causalBlock * chunkSize, outputDot = p + 3 * causalBlock * chunkSize
                let extraProbabilities = outputDot + causalBlock, extraApplied = extraProbabilities + layout.extraTile
                let extraGradients = extraApplied + layout.extraTile
                for bh in range {
                    let b = bh / heads.count, head = heads.head(bh), grad = gradients.head(bh), lse = lse0 + bh * length
                    let dout = dy + b * length * width + head.offset, o = y0 + b * length * width + head.offset
                    // Key bands overlap from one row block to the next: dK and dV accumulate over the blocks.
                    if !accumulate {
                        for t in 0..<length {
                            (grad.k + t * rowStride).update(repeating: 0, count: d)
                            (grad.v + t * rowStride).update(repeating: 0, count: d)
                        }
                    }
                    for tile in layout.tiles {
                        let rows = tile.rows, blockOut = dout + tile.rowStart * width
                        // Σ_j P·dP of a row is dO · O (FlashAttention's D), so the key chunks are independent.
                        for r in 0..<rows { outputDot[r] = UnsafePointer(blockOut + r * width).dot(o + (tile.rowStart + r) * width, d) }
                        for chunkStart in Swift.stride(from: tile.keyStart, to: tile.keyEnd, by: chunkSize) {
                            let columns = min(chunkSize, tile.keyEnd - chunkStart)
                            // The probabilities: kept (rows `tile.columns` apart), or again from the scores and each
                            // row's log-sum-exp; the same masks.
                            let keptChunk = kept0.map { $0 + bh * layout.bandFloats + tile.offset + chunkStart - tile.keyStart }
                            let pr = keptChunk ?? p, ldp = keptChunk == nil ? columns : tile.columns
                            if keptChunk == nil {
                                BLAS.gemm(transposeB: true, m: rows, n: columns, k: d, alpha: scale, a: head.q + tile.rowStart * rowStride,
                                          lda: rowStride, b: head.k + chunkStart * rowStride, ldb: rowStride, c: p, ldc: columns)
                            }
                            for r in 0..<rows {
                                // The row's columns of the whole tile (as forward saw them) within this chunk.
                                let i = tile.rowStart + r, band = layout.bandColumns(b, i, tile), row = pr + r * ldp
                                let from = min(max(0, tile.keyStart + band.from - chunkStart), columns)
                                let seen = max(0, min(tile.keyStart + band.to - chunkStart, columns) - from)
                                if keptChunk == nil {
                                    exponentiate(row + from, count: seen, minus: lse[i])
                                    row.update(repeating: 0, count: from)
                                    (row + from + seen).update(repeating: 0, count: columns - from - seen)
                                }
                                if masks.isActive {
                                    (applied + r * columns).update(from: row, count: columns)
                                    masks.apply(applied + r * columns + from, count: seen, firstKey: chunkStart + from, stream: masks.stream(bh, i))
                                }
                            }
                            let (ar, lda) = masks.isActive ? (UnsafePointer(applied), columns) : (UnsafePointer(pr), ldp)
                            // dP = dO · Vᵀ and dV += Aᵀ · dO over the chunk (A: the probabilities applied).
                            BLAS.gemm(transposeB: true, m: rows, n: columns, k: d, a: blockOut, lda: width,
                                      b: head.v + chunkStart * rowStride, ldb: rowStride, c: dp, ldc: columns)
                            BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: ar, lda: lda, b: blockOut, ldb: width,
                                      beta: 1, c: grad.v + chunkStart * rowStride, ldc: rowStride)
                            // dS = P ⊙ (dP' − D) · scale in place in dP, where dP' is dP through the dropout (kept
                            // entries, non-zero where A is, scale; dropped ones get no gradient).
                            for r in 0..<rows {
                                let prow = pr + r * ldp, dr = dp + r * columns, arow = applied + r * columns
                                let dot = Float16x(repeating: outputDot[r]), inverseKeep = Float16x(repeating: masks.inverseKeep)
                                forEachLane(columns) { j, lanes in
                                    var g = load(dr + j, lanes)
                                    if masks.isActive { g = (g * inverseKeep).replacing(with: 0, where: load(arow + j, lanes) .== 0) }
                                    store((g - dot) * load(prow + j, lanes) * scale, dr + j, lanes)
                                }
                            }
                            // dQ = dS · K for the block's rows; dK += dSᵀ · Q.
                            BLAS.gemm(m: rows, n: d, k: columns, a: dp, lda: columns, b: head.k + chunkStart * rowStride, ldb: rowStride,
                                      beta: chunkStart == tile.keyStart ? beta : 1, c: grad.q + tile.rowStart * rowStride, ldc: rowStride)
                            BLAS.gemm(transposeA: true, m: columns, n: d, k: rows, a: dp, lda: columns, b: head.q + tile.rowStart * rowStride,
                                      ldb: rowStride, beta: 1, c: grad.k + chunkStart * rowStride, ldc: rowStride)
                        }
                        // The keys each row sees before its band: their probabilities again, then their share.
                        guard let shared = layout.listKeysBeforeBand(tile, b, into: lists) else {
                            // One by one.
                            layout.forEachKeyBeforeBand(tile, lists: lists) { r, t, j in
                                extraProbabilities[r * layout.extraWidth + t] = UnsafePointer(head.q + (tile.rowStart + r) * rowStride)
                                    .dot(head.k + j * rowStride, d) * scale
                            }
                            for r in 0..<rows {
                                exponentiate(extraProbabilities + r * layout.extraWidth, count: lists[r].count, minus: lse[tile.rowStart + r])
                            }
                            layout.forEachKeyBeforeBand(tile, lists: lists) { r, t, j in
                                let i = tile.rowStart + r, q = UnsafePointer(head.q + i * rowStride), go = UnsafePointer(blockOut + r * width)
                                let probability = extraProbabilities[r * layout.extraWidth + t]
                                let kept = !masks.isActive || masks.keeps(masks.stream(bh, i), j), factor = masks.isActive ? masks.inverseKeep : 1
                                let g = kept ? go.dot(head.v + j * rowStride, d) * factor : 0
                                let ds = probability * (g - outputDot[r]) * scale
                                if kept { (grad.v + j * rowStride).axpy(probability * factor, go, d) }
                                (grad.q + i * rowStride).axpy(ds, head.k + j * rowStride, d)
                                (grad.k + j * rowStride).axpy(ds, q, d)
                            }
                            continue
                        }
                        // Every row reads the same keys: the band's products over the gathered keys.
                        let e = shared.count, ld = layout.extraWidth
                        AttentionLayout.gather(shared, from: head.k, rowStride: rowStride, d: d, into: sharedK)
                        AttentionLayout.gather(shared, from: head.v, rowStride: rowStride, d: d, into: sharedV)
                        BLAS.gemm(transposeB: true, m: rows, n: e, k: d, alpha: scale, a: head.q + tile.rowStart * rowStride, lda: rowStride,
                                  b: sharedK, ldb: d, c: extraProbabilities, ldc: ld)
                        let applied = masks.isActive ? extraApplied : extraProbabilities
                        for r in 0..<rows {
                            let row = extraProbabilities + r * ld
                            exponentiate(row, count: e, minus: lse[tile.rowStart + r])
                            if masks.isActive {
                                let stream = masks.stream(bh, tile.rowStart + r)
                                for (t, j) in shared.enumerated() { applied[r * ld + t] = masks.keeps(stream, j) ? row[t] * masks.inverseKeep : 0 }
                            }
                        }
                        // dP = dO · Vᵀ, dV = Aᵀ · dO; dS = P ⊙ (dP' − D) · scale; dQ += dS · K; dK = dSᵀ · Q.
                        BLAS.gemm(transposeB: true, m: rows, n: e, k: d, a: blockOut, lda: width, b: sharedV, ldb: d, c: extraGradients, ldc: ld)
                        BLAS.gemm(transposeA: true, m: e, n: d, k: rows, a: applied, lda: ld, b: blockOut, ldb: width, c: sharedDV, ldc: d)
                        for r in 0..<rows {
                            let prow = extraProbabilities + r * ld, grow = extraGradients + r * ld, arow = applied + r * ld
                            for t in 0..<e {
                                let g = masks.isActive ? (arow[t] == 0 ? 0 : grow[t] * masks.inverseKeep) : grow[t]
                                grow[t] = prow[t] * (g - outputDot[r]) * scale
                            }
                        }
                        BLAS.gemm(m: rows, n: d, k: e, a: extraGradients, lda: ld, b: sharedK, ldb: d, beta: 1,
                                  c: grad.q + tile.rowStart * rowStride, ldc: rowStride)
                        BLAS.gemm(transposeA: true, m: e, n: d, k: rows, a: extraGradients, lda: ld, b: head.q + tile.rowStart * rowStride,
                                  ldb: rowStride, c: sharedDK, ldc: d)
                        AttentionLayout.scatterAdd(shared, from: sharedDV, d: d, into: grad.v, rowStride: rowStride)
                        AttentionLayout.scatterAdd(shared, from: sharedDK, d: d, into: grad.k, rowStride: rowStride)
                    }
                }
                withExtendedLifetime(scratch) {}
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

/// Dropout on attention probabilities. Whether entry (i, j) of a head is kept is a function of the head's seed and
/// the positions alone (a counter-based hash, not a stream), so backward regenerates any block of the masks, in any
/// order, instead of keeping them.
struct AttentionDropout {
    let probability: Float
    let seeds: [UInt64]
    var isActive: Bool { probability > 0 }
    var inverseKeep: Float { 1 / (1 - probability) }
    /// An entry is kept when the top 24 bits of its hash fall below this.
    private let threshold: UInt32

    init(probability: Float, seeds: [UInt64]) {
        self.probability = probability
        self.seeds = seeds
        threshold = UInt32((Double(1 - probability) * 0x1p24).rounded())
    }

    /// The hash key of query row i of head `bh` (SplitMix64 of the head's seed and the row).
    @inline(__always) func stream(_ bh: Int, _ i: Int) -> UInt32 {
        var z = seeds[bh] &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt32(truncatingIfNeeded: z ^ (z >> 31))
    }

    /// A 32-bit mix of the row's key and the key position (lowbias32 on both).
    @inline(__always) private static func hash<V: SIMD>(_ stream: V, _ key: V) -> V where V.Scalar == UInt32 {
        var x = stream ^ (key &* 0x9E37_79B9)
        x = (x ^ (x &>> 16)) &* 0x7FEB_352D
        x = (x ^ (x &>> 15)) &* 0x846C_A68B
        return x ^ (x &>> 16)
    }

    /// Whether key j of the row with key `stream` is kept.
    @inline(__always) func keeps(_ stream: UInt32, _ j: Int) -> Bool {
        Self.hash(SIMD2(repeating: stream), SIMD2(repeating: UInt32(truncatingIfNeeded: j)))[0] &>> 8 < threshold
    }

    /// Zeroes the dropped entries of `count` consecutive keys from `firstKey` and scales the kept ones.
    @inline(__always)
    func apply(_ row: UnsafeMutablePointer<Float>, count: Int, firstKey: Int, stream: UInt32) {
        let streams = SIMD16<UInt32>(repeating: stream), limit = SIMD16<UInt32>(repeating: threshold)
        let inverseKeep = Float16x(repeating: inverseKeep)
        forEachLane(count) { j, lanes in
            let keys = SIMD16<UInt32>(truncatingIfNeeded: laneIndices) &+ UInt32(truncatingIfNeeded: firstKey + j)
            let dropped = Self.hash(streams, keys) &>> 8 .>= limit
            store((load(row + j, lanes) * inverseKeep).replacing(with: 0, where: dropped), row + j, lanes)
        }
    }
}

/// The tiles causal attention computes under a pattern: rows in blocks of `causalBlock`, each block against the band
/// of keys its rows see (from the band start of its first row to its last row); keys a row sees before its band
/// (strided keys, fixed summaries) go row by row. The masked triangle and the keys no row sees are never touched.
struct AttentionLayout {
    struct Tile {
        let rowStart: Int, rowEnd: Int, keyStart: Int, keyEnd: Int
        /// Where the tile's [rows, keys] probabilities start among a head's kept probabilities.
        let offset: Int
        var rows: Int { rowEnd - rowStart }
        var columns: Int { keyEnd - keyStart }
    }

    let pattern: AttentionPattern
    /// Each batch row's key length.
    let limits: [Int]
    let tiles: [Tile]
    /// Floats of all tiles together (a head's kept probabilities).
    let bandFloats: Int
    /// Floats of the largest tile; the most keys a row sees before its band, and floats of a tile's rows of them.
    let largestTile: Int
    let extraWidth: Int
    var extraTile: Int { max(1, causalBlock * extraWidth) }
    /// Scores one head computes (for the work estimate).
    let keysPerHead: Int
    /// Keys per block of backward's work: its probabilities, their gradient and the dropout's stay in the L2 cache.
    static let backwardChunk = 256

    init(length: Int, pattern: AttentionPattern, limits: [Int]) {
        self.pattern = pattern
        self.limits = limits
        var tiles: [Tile] = [], largest = 0, floats = 0
        for rowStart in Swift.stride(from: 0, to: length, by: causalBlock) {
            let rowEnd = min(length, rowStart + causalBlock)
            let tile = Tile(rowStart: rowStart, rowEnd: rowEnd, keyStart: pattern.bandStart(rowStart), keyEnd: rowEnd, offset: floats)
            tiles.append(tile)
            largest = max(largest, tile.rows * tile.columns)
            floats += tile.rows * tile.columns
        }
        var kept = floats
        var widest = 0
        for i in 0..<length {
            let count = pattern.keysBeforeBand(i, limit: length).count
            widest = max(widest, count)
            kept += count
        }
        self.tiles = tiles
        bandFloats = floats
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

    /// Puts the keys each row of `tile` sees before its band in `lists` (room for a tile's rows); returns them when
    /// every row sees the same ones (a fixed layer's summaries, for a tile within one block), nil otherwise.
    @inline(__always)
    func listKeysBeforeBand(_ tile: Tile, _ b: Int, into lists: UnsafeMutablePointer<KeyPositions>) -> KeyPositions? {
        for r in 0..<tile.rows { lists[r] = keysBeforeBand(b, tile.rowStart + r) }
        let first = lists[0]
        guard first.count > 0, (1..<tile.rows).allSatisfy({ lists[$0] == first }) else { return nil }
        return first
    }

    /// Calls `body(r, t, j)` for each row r of `tile` and each key j, its t-th, the row sees before its band (as
    /// `lists` holds them), key rank by key rank across the rows: consecutive rows' keys are neighbours in memory
    /// (one page, not one page a key).
    @inline(__always)
    func forEachKeyBeforeBand(_ tile: Tile, lists: UnsafePointer<KeyPositions>, _ body: (_ r: Int, _ t: Int, _ j: Int) -> Void) {
        var widest = 0
        for r in 0..<tile.rows { widest = max(widest, lists[r].count) }
        for t in 0..<widest {
            for r in 0..<tile.rows where t < lists[r].count { body(r, t, lists[r][t]) }
        }
    }

    /// Copies the d floats of each of `keys` (rows `rowStride` apart from `source`) into consecutive rows at `target`.
    @inline(__always)
    static func gather(_ keys: KeyPositions, from source: UnsafePointer<Float>, rowStride: Int, d: Int, into target: UnsafeMutablePointer<Float>) {
        for (t, j) in keys.enumerated() { (target + t * d).update(from: source + j * rowStride, count: d) }
    }

    /// Adds consecutive rows of d floats at `source` to the rows of `keys` (`rowStride` apart from `target`).
    @inline(__always)
    static func scatterAdd(_ keys: KeyPositions, from source: UnsafePointer<Float>, d: Int, into target: UnsafeMutablePointer<Float>,
                           rowStride: Int) {
        for (t, j) in keys.enumerated() { (target + j * rowStride).axpy(1, source + t * d, d) }
    }
}

/// Softmax over `count` entries at `row` together with `extraCount` more at `extra`, in place; returns the
/// log-sum-exp of the scores (from which `exponentiate` gives the probabilities back).
@inline(__always)
func attentionSoftmax(_ row: UnsafeMutablePointer<Float>, count: Int, extra: UnsafeMutablePointer<Float>, extraCount: Int) -> Float {
    let m = extraCount > 0 ? max(UnsafePointer(row).maximum(count), UnsafePointer(extra).maximum(extraCount))
        : UnsafePointer(row).maximum(count)
    let total = exponentiate(row, count: count, minus: m) + exponentiate(extra, count: extraCount, minus: m)
    let inverse = 1 / total
    forEachLane(count) { j, lanes in store(load(row + j, lanes) * inverse, row + j, lanes) }
    forEachLane(extraCount) { j, lanes in store(load(extra + j, lanes) * inverse, extra + j, lanes) }
    return m + Foundation.log(total)
}

/// exp(x − shift) of `count` entries in place; returns their sum.
@inline(__always) @discardableResult
func exponentiate(_ pointer: UnsafeMutablePointer<Float>, count: Int, minus shift: Float) -> Float {
    var acc = Float16x()
    forEachLane(count) { j, lanes in
        let e = VectorMath.exp(load(pointer + j, lanes) - shift)
        store(e, pointer + j, lanes)
        acc += lanes == 16 ? e : e.replacing(with: 0, where: laneIndices .>= Int32(lanes))
    }
    return acc.sum()
}

/// Rows per block in causal attention: large enough for efficient products, small enough to skip most of the
/// masked triangle. Measured here on GPT-2 training at 256 tokens: 64 beats 128 by ~3% and 32 by ~5%.
let causalBlock = 64

/// Softmax of the first `valid` entries of a row in place; entries from `valid` to `length` become 0 (masked).
@inline(__always)
package func causalSoftmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, length: Int) {
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
