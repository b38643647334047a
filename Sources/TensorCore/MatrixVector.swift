import CMemoryHints
import GPTUtilities

/// Products of a few rows with a weight matrix, for decoding: each weight is read from memory once per call and
/// streamed at full bandwidth (a BLAS sgemm with one row is several times slower here).
package enum MatrixVector {
    /// A [k, n] weight matrix repacked for `multiply`: column blocks of 32, each stored as k contiguous rows of 32
    /// weights, so that one block streams from memory in order (the last block is zero-padded). The weights are
    /// stored in `format`; 8-bit blocks keep one scale per column; a 4-bit block is a run of groups of 32 rows, each
    /// group 32 rows of 16 bytes (`WeightFormat.widenInt4`'s layout) followed by its 32 columns' bfloat16 scales.
    package struct PackedMatrix: @unchecked Sendable {
        package let k: Int
        package let n: Int
        package let format: WeightFormat
        /// The blocks, `blockBytes` bytes each.
        let storage: UnsafeMutableRawPointer
        /// Bytes of one block (8-bit scales apart).
        let blockBytes: Int
        /// One scale per column, padding included (int8 only).
        let scales: UnsafeMutablePointer<Float>?
        private let owner: Allocation

        /// Packs `w` ([k, n], row-major).
        package init(_ w: UnsafePointer<Float>, k: Int, n: Int, format: WeightFormat = .float32) {
            self.init(k: k, n: n, format: format) { block, b, width in
                for i in 0..<k { (block + i * 32).update(from: w + i * n + b * 32, count: width) }
            }
        }

        /// Packs the transpose of `w` ([n, k]: one row per output, as a tied embedding).
        package init(transposing w: UnsafePointer<Float>, n: Int, k: Int, format: WeightFormat = .float32) {
            self.init(transposedRows: { rows, target in target.update(from: w + rows.lowerBound * k, count: rows.count * k) },
                      n: n, k: k, format: format)
        }

        /// Packs the transpose of an [n, k] matrix (one row per output) whose rows `read(rows, target)` writes as
        /// floats, 32 at a time, from several threads: a matrix read from a file never needs a float copy of itself.
        package init(transposedRows read: (Range<Int>, UnsafeMutablePointer<Float>) -> Void, n: Int, k: Int,
                     format: WeightFormat = .float32) {
            self.init(k: k, n: n, format: format) { block, b, width in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 * k) { rows in
                    let rows = rows.baseAddress!
                    read(b * 32..<(b * 32 + width), rows)
                    for j in 0..<width {
                        let row = rows + j * k
                        for i in 0..<k { block[i * 32 + j] = row[i] }
                    }
                }
            }
        }

        /// Has `fill(block, index, width)` write each block as floats (zero-padded beyond `width` columns) and stores
        /// it in `format`, blocks in parallel.
        private init(k: Int, n: Int, format: WeightFormat, fill: (UnsafeMutablePointer<Float>, Int, Int) -> Void) {
            self.k = k
            self.n = n
            self.format = format
            let blocks = (n + 31) / 32
            let blockBytes = Self.blockBytes(k: k, format: format)
            self.blockBytes = blockBytes
            owner = Allocation(bytes: blocks * blockBytes + (format == .int8 ? blocks * 32 * 4 : 0))
            storage = owner.pointer
            let scales = format == .int8 ? (owner.pointer + blocks * blockBytes).assumingMemoryBound(to: Float.self) : nil
            self.scales = scales
            let storage = storage
            Parallel.forEach(blocks, costPerItem: 32 * k) { range in
                let floats = UnsafeMutablePointer<Float>.allocate(capacity: k * 32)
                let groupScales = UnsafeMutablePointer<Float>.allocate(capacity: 32)
                defer { floats.deallocate(); groupScales.deallocate() }
                for b in range {
                    floats.update(repeating: 0, count: k * 32)
                    fill(floats, b, min(32, n - b * 32))
                    switch format {
                    case .float32:
                        (storage + b * blockBytes).assumingMemoryBound(to: Float.self).update(from: floats, count: k * 32)
                    case .bfloat16:
                        let target = (storage + b * blockBytes).assumingMemoryBound(to: BFloat16.self)
                        for i in 0..<(k * 32) { target[i] = BFloat16(floats[i]) }
                    case .int8:
                        // Each column's scale from its largest magnitude, then every weight quantized, row by row,
                        // sixteen columns at a time: the values of `WeightFormat.int8Scale` and `WeightFormat.int8`.
                        let target = UnsafeMutableRawPointer(storage + b * blockBytes)
                        var largest = (Float16x(), Float16x())
                        for i in 0..<k {
                            let low = WeightFormat.magnitude(load(floats + i * 32))
                            let high = WeightFormat.magnitude(load(floats + i * 32 + 16))
                            largest.0 = largest.0.replacing(with: low, where: low .> largest.0)
                            largest.1 = largest.1.replacing(with: high, where: high .> largest.1)
                        }
                        let one = Float16x(repeating: 1)
                        let scale = (one.replacing(with: largest.0 / 127, where: largest.0 .> 0),
                                     one.replacing(with: largest.1 / 127, where: largest.1 .> 0))
                        store(scale.0, scales! + b * 32)
                        store(scale.1, scales! + b * 32 + 16)
                        for i in 0..<k {
                            target.storeBytes(of: Self.int8(load(floats + i * 32) / scale.0), toByteOffset: i * 32, as: SIMD16<Int8>.self)
                            target.storeBytes(of: Self.int8(load(floats + i * 32 + 16) / scale.1), toByteOffset: i * 32 + 16, as: SIMD16<Int8>.self)
                        }
                    case .int4:
                        // Per group, each column's scale (16 columns at a time), then the codes, two a byte: the
                        // values of `WeightFormat.int4Scales` and `WeightFormat.int4Code`.
                        for g in 0..<Self.int4Groups(k) {
                            let group = storage + b * blockBytes + g * Self.int4GroupBytes, first = g * WeightFormat.int4Group
                            let rows = min(WeightFormat.int4Group, k - first)
                            let scales = groupScales
                            for half in [0, 16] {
                                let halfScales = WeightFormat.int4Scales(count: rows) { load(floats + (first + $0) * 32 + half) }
                                store(halfScales, scales + half)
                                (group + Self.int4CodeBytes + half * 2).storeBytes(of: BFloat16Conversion.rounded(halfScales),
                                                                                   as: SIMD16<UInt16>.self)
                            }
                            let codes = group.assumingMemoryBound(to: UInt8.self)
                            codes.update(repeating: 0x88, count: Self.int4CodeBytes)
                            for i in 0..<rows {
                                let row = floats + (first + i) * 32
                                for c in 0..<16 {
                                    codes[i * 16 + c] = WeightFormat.int4Code(row[c], scale: scales[c])
                                        | WeightFormat.int4Code(row[c + 16], scale: scales[c + 16]) << 4
                                }
                            }
                        }
                    }
                }
            }
        }

        /// `WeightFormat.int8` of sixteen quotients (`WeightFormat.nearestInteger` within −127…127), the integer read
        /// from the low bits of its sum with 1.5 · 2²³.
        @inline(__always)
        private static func int8(_ quotient: Float16x) -> SIMD16<Int8> {
            let rounded = WeightFormat.nearestInteger(quotient, low: -127, high: 127)
            return SIMD16<Int8>(truncatingIfNeeded: unsafeBitCast(rounded + 12_582_912, to: SIMD16<Int32>.self) &- 0x4B40_0000)
        }

        /// Bytes the packed weights take, scales included.
        package var bytes: Int { (n + 31) / 32 * (blockBytes + (format == .int8 ? 32 * 4 : 0)) }

        /// Bytes of one block of k rows in `format` (8-bit scales apart).
        static func blockBytes(k: Int, format: WeightFormat) -> Int {
            switch format {
            case .float32: k * 32 * 4
            case .bfloat16: k * 32 * 2
            case .int8: k * 32
            case .int4: int4Groups(k) * int4GroupBytes
            }
        }

        /// Groups of 4-bit rows in a block of k rows (the last one zero-padded).
        static func int4Groups(_ k: Int) -> Int { (k + WeightFormat.int4Group - 1) / WeightFormat.int4Group }
        /// Bytes of a 4-bit group's codes: 32 rows of 32 codes.
        static let int4CodeBytes = WeightFormat.int4Group * 16
        /// Bytes of a 4-bit group: its codes, then 32 bfloat16 scales.
        static let int4GroupBytes = int4CodeBytes + 32 * 2

        /// Rows `rows` (within one 4-bit group `g`) of 4-bit block `b` as floats: 32 a row, rows `stride` floats apart.
        @inline(__always)
        func widenInt4(block b: Int, group g: Int, rows: Range<Int>, into target: UnsafeMutablePointer<Float>, stride: Int) {
            let group = UnsafeRawPointer(storage + b * blockBytes + g * Self.int4GroupBytes)
            let scale0 = WeightFormat.widenBFloat16(group + Self.int4CodeBytes), scale1 = WeightFormat.widenBFloat16(group + Self.int4CodeBytes + 32)
            let eight = SIMD16<Float>(repeating: 8)
            for (t, i) in rows.enumerated() {
                let (low, high) = WeightFormat.widenInt4(group + (i - g * WeightFormat.int4Group) * 16)
                store((low - eight) * scale0, target + t * stride)
                store((high - eight) * scale1, target + t * stride + 16)
            }
        }

        /// `widenInt4` over rows `rows` of block b, whichever groups they span.
        @inline(__always)
        func widenInt4(block b: Int, rows: Range<Int>, into target: UnsafeMutablePointer<Float>, stride: Int) {
            var i = rows.lowerBound
            while i < rows.upperBound {
                let g = i / WeightFormat.int4Group, end = min(rows.upperBound, (g + 1) * WeightFormat.int4Group)
                widenInt4(block: b, group: g, rows: i..<end, into: target + (i - rows.lowerBound) * stride, stride: stride)
                i = end
            }
        }

        /// The k weights of output `j` as floats (a token's row, for a packed token embedding).
        package func column(_ j: Int, into target: UnsafeMutablePointer<Float>) {
            precondition(j >= 0 && j < n, "column \(j) outside 0..<\(n)")
            let first = j / 32 * k * 32 + j % 32
            switch format {
            case .int4:
                let b = j / 32, c = j % 32
                for g in 0..<Self.int4Groups(k) {
                    let group = UnsafeRawPointer(storage + b * blockBytes + g * Self.int4GroupBytes)
                    let scale = group.load(fromByteOffset: Self.int4CodeBytes + c * 2, as: BFloat16.self).float
                    for i in (g * WeightFormat.int4Group)..<min(k, (g + 1) * WeightFormat.int4Group) {
                        let byte = group.load(fromByteOffset: (i - g * WeightFormat.int4Group) * 16 + c % 16, as: UInt8.self)
                        target[i] = WeightFormat.int4Value(c < 16 ? byte & 15 : byte >> 4, scale: scale)
                    }
                }
            case .float32:
                let source = (storage + first * 4).assumingMemoryBound(to: Float.self)
                for i in 0..<k { target[i] = source[i * 32] }
            case .bfloat16:
                let source = (storage + first * 2).assumingMemoryBound(to: BFloat16.self)
                for i in 0..<k { target[i] = source[i * 32].float }
            case .int8:
                let source = (storage + first).assumingMemoryBound(to: Int8.self), scale = scales![j]
                for i in 0..<k { target[i] = Float(source[i * 32]) * scale }
            }
        }

        /// Blocks `blocks` as floats: a [k, 32 · blocks.count] matrix with row stride `stride`, into `target`.
        func widen(blocks: Range<Int>, into target: UnsafeMutablePointer<Float>, stride: Int) {
            let k = k, storage = storage, scales = scales, format = format
            Parallel.forEach(blocks.count, costPerItem: 32 * k) { range in
                for j in range {
                    let b = blocks.lowerBound + j, out = target + j * 32
                    switch format {
                    case .float32:
                        let source = (storage + b * blockBytes).assumingMemoryBound(to: Float.self)
                        for i in 0..<k { (out + i * stride).update(from: source + i * 32, count: 32) }
                    case .bfloat16:
                        let source = UnsafeRawPointer(storage + b * blockBytes)
                        for i in 0..<k {
                            store(WeightFormat.widenBFloat16(source + i * 64), out + i * stride)
                            store(WeightFormat.widenBFloat16(source + i * 64 + 32), out + i * stride + 16)
                        }
                    case .int8:
                        let source = UnsafeRawPointer(storage + b * blockBytes)
                        let scale0 = load(scales! + b * 32), scale1 = load(scales! + b * 32 + 16)
                        for i in 0..<k {
                            store(WeightFormat.widenInt8(source + i * 32) * scale0, out + i * stride)
                            store(WeightFormat.widenInt8(source + i * 32 + 16) * scale1, out + i * stride + 16)
                        }
                    case .int4:
                        widenInt4(block: b, rows: 0..<k, into: out, stride: stride)
                    }
                }
            }
        }

        /// Rows k0..<k0+length of block b as floats: in place for fp32, widened into `scratch` otherwise.
        @inline(__always)
        func floats(block b: Int, from k0: Int, length: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
            let first = b * k * 32 + k0 * 32
            switch format {
            case .float32:
                return UnsafePointer((storage + first * 4).assumingMemoryBound(to: Float.self))
            case .bfloat16:
                let source = UnsafeRawPointer(storage + first * 2)
                for i in 0..<(length * 2) { store(WeightFormat.widenBFloat16(source + i * 32), scratch + i * 16) }
            case .int8:
                let source = UnsafeRawPointer(storage + first), scale0 = load(scales! + b * 32), scale1 = load(scales! + b * 32 + 16)
                for i in 0..<length {
                    store(WeightFormat.widenInt8(source + i * 32) * scale0, scratch + i * 32)
                    store(WeightFormat.widenInt8(source + i * 32 + 16) * scale1, scratch + i * 32 + 16)
                }
            case .int4:
                widenInt4(block: b, rows: k0..<(k0 + length), into: scratch, stride: 32)
            }
            return UnsafePointer(scratch)
        }
    }

    /// Memory of a packed matrix, 64-byte aligned, freed with its last copy.
    private final class Allocation {
        let pointer: UnsafeMutableRawPointer
        init(bytes: Int) { pointer = .allocate(byteCount: max(bytes, 1), alignment: 64) }
        deinit { pointer.deallocate() }
    }

    /// Rows up to this count stream the packed weights through this file's kernels; more rows widen them a group of
    /// blocks at a time and multiply through the BLAS. Streaming a 16-token prompt through GPT-2 124M takes a third
    /// of the BLAS's time here, 64 tokens about two thirds (with 2 or 8 rows a pass); from 128 the BLAS is faster.
    package static let streamedRows = 64

    /// Floats of the widened group of blocks a product of many rows multiplies at a time (8 MiB).
    static let widenedFloats = 1 << 21

    /// out[r, :] = bias + x[r, :] · w for any number of rows; x is [rows, k], out is [rows, n].
    ///
    /// Up to `streamedRows` rows, column blocks are split between cores and each block is read from memory once for
    /// all rows. More rows (a prompt) are a compute-bound product: groups of blocks are widened to floats (the
    /// values decoding computes with) and multiplied through the BLAS. 4-bit weights multiply x rounded to 8 bits
    /// (`Int4Input`) unless `exactInput` (training through a frozen 4-bit base, whose gradients assume x as it is).
    package static func multiply(_ x: UnsafePointer<Float>, rows: Int, _ w: PackedMatrix, bias: UnsafePointer<Float>?,
                                into out: UnsafeMutablePointer<Float>, exactInput: Bool = false) {
        precondition(rows >= 1, "multiply takes at least one row")
        let k = w.k
        if w.format == .int4 && !exactInput {
            // 4-bit weights read their input rounded to 8 bits (`Int4Input`): one row as codes, more as floats.
            if rows == 1 {
                return withUnsafeTemporaryAllocation(byteCount: Int4Input.bytes(k: k), alignment: 4) { storage in
                    streamed(x, rows: 1, w, int4Input: Int4Input(x, k: k, storage: storage.baseAddress!), bias: bias, into: out)
                }
            }
            let buffer = Tensor(uninitializedShape: [rows * k]), rounded = buffer.pointer
            defer { withExtendedLifetime(buffer) {} }
            Int4Input.round(x, rows: rows, k: k, into: rounded)
            if rows > streamedRows { return multiplyThroughBLAS(rounded, rows: rows, w, bias: bias, into: out) }
            return streamed(rounded, rows: rows, w, int4Input: nil, bias: bias, into: out)
        }
        if rows > streamedRows { return multiplyThroughBLAS(x, rows: rows, w, bias: bias, into: out) }
        streamed(x, rows: rows, w, int4Input: nil, bias: bias, into: out)
    }

    /// `multiply` for up to `streamedRows` rows (`int4Input`: the one row, rounded, of a product with 4-bit weights).
    private static func streamed(_ x: UnsafePointer<Float>, rows: Int, _ w: PackedMatrix, int4Input: Int4Input?,
                                 bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let k = w.k, n = w.n, blocks = (n + 31) / 32
        let nextLines = w.format == .float32 ? kChunk * 32 * 4 / 64 : 0
        Parallel.forEach(blocks, costPerItem: 32 * k * max(rows, 2) / 2) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * 32 + kChunk * 32) { scratch in
                let widened = scratch.baseAddress! + rows * 32
                for b in range {
                    let width = min(32, n - b * 32)
                    let direct = width == 32
                    let target = direct ? out + b * 32 : scratch.baseAddress!
                    let stride = direct ? n : 32
                    for r in 0..<rows {
                        let o = target + r * stride
                        if let bias { o.update(from: bias + b * 32, count: width) } else { o.update(repeating: 0, count: width) }
                        if !direct { (o + width).update(repeating: 0, count: 32 - width) }
                    }
                    if let int4Input {
                        int4Row(int4Input, w, block: b, into: target)
                        if !direct { (out + b * 32).update(from: target, count: width) }
                        continue
                    }
                    if rows == 1 && (w.format == .bfloat16 || w.format == .int8) {
                        // One row: 16- and 8-bit weights are widened in registers as they stream.
                        singleRow(x, w, block: b, into: target)
                        if !direct { (out + b * 32).update(from: target, count: width) }
                        continue
                    }
                    // Rows in groups that keep their outputs in registers, over chunks of the block small enough to
                    // stay in the first-level cache for the groups after the first (16-, 8- and 4-bit weights are widened
                    // into `widened` once for all the groups).
                    // Only the first group's pass reads an fp32 chunk from memory; the later ones compute from the
                    // cache and would leave memory idle. So the passes ask for the next chunk (after a block's last,
                    // the next block's first) a share at a time, and it streams into the second-level cache
                    // meanwhile: 8 rows run 11-16% faster here (AVX2; paired runs of `gpt bench generate`). 16- and
                    // 8-bit chunks are read once, by the widening, and gained nothing from it (int8 lost 10%).
                    var k0 = 0
                    while k0 < k {
                        let length = min(kChunk, k - k0)
                        let weights = w.floats(block: b, from: k0, length: length, scratch: widened)
                        let next = UnsafeRawPointer(w.storage + b * w.blockBytes + (k0 + length) * 32 * 4)
                        var first = 0, pass = 0
                        while first < rows {
                            let count = min(rowsPerPass, rows - first)
                            let prefetch = rows == 1 ? 0 : max(0, min(length, nextLines - pass * length))
                            let lines = next + pass * length * 64
                            if count == 2 && rowsPerPass == 2 {
                                pairBlock(x + first * k + k0, length, k, weights, target + first * stride, stride,
                                          prefetching: lines, prefetch)
                            } else {
                                block(x + first * k + k0, count, length, k, weights, target + first * stride, stride,
                                      prefetching: lines, prefetch)
                            }
                            first += rowsPerPass
                            pass += 1
                        }
                        k0 += length
                    }
                    if !direct {
                        for r in 0..<rows { (out + r * n + b * 32).update(from: target + r * 32, count: width) }
                    }
                }
            }
        }
    }

    /// `multiply` for many rows: groups of blocks widened into one scratch matrix, each multiplied by the BLAS.
    private static func multiplyThroughBLAS(_ x: UnsafePointer<Float>, rows: Int, _ w: PackedMatrix,
                                            bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let n = w.n
        for r in 0..<rows {
            if let bias { (out + r * n).update(from: bias, count: n) } else { (out + r * n).update(repeating: 0, count: n) }
        }
        forEachWidenedGroup(of: w) { columns, widened, stride in
            BLAS.gemm(m: rows, n: columns.count, k: w.k, a: x, lda: w.k, b: widened, ldb: stride, beta: 1, c: out + columns.lowerBound, ldc: n)
        }
    }

    /// Calls `body` with each group of `w`'s column blocks widened to floats (`widenedFloats` at most, as a
    /// [k, stride] matrix of which the group's columns are the first ones), group after group: the products of many
    /// rows read a packed matrix this way.
    private static func forEachWidenedGroup(of w: PackedMatrix,
                                            _ body: (_ columns: Range<Int>, _ widened: UnsafePointer<Float>, _ stride: Int) -> Void) {
        let k = w.k, blocks = (w.n + 31) / 32
        let groupBlocks = min(blocks, max(1, widenedFloats / (32 * k))), stride = 32 * groupBlocks
        // From the tensor pool: a server maps every large allocation afresh (`TensorMemory.fixMappingThreshold`),
        // and faulting in 8 MiB for each product of a prompt pass cost more than its arithmetic on short prompts.
        let buffer = Tensor(uninitializedShape: [k * stride]), widened = buffer.pointer
        defer { withExtendedLifetime(buffer) {} }
        var first = 0
        while first < blocks {
            let end = min(blocks, first + groupBlocks)
            w.widen(blocks: first..<end, into: widened, stride: stride)
            body((first * 32)..<min(w.n, end * 32), widened, stride)
            first = end
        }
    }

    /// dx[r, :] (+)= dy[r, :] · wᵀ for any number of rows: the gradient at the input of `multiply`'s product (dy is
    /// [rows, n], dx [rows, k]), w widened a group of blocks at a time as `multiply` widens it; added to dx's values
    /// when `accumulate`. A frozen packed weight takes no gradient of its own.
    package static func multiplyTransposed(_ dy: UnsafePointer<Float>, rows: Int, _ w: PackedMatrix,
                                           into dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        forEachWidenedGroup(of: w) { columns, widened, stride in
            BLAS.gemm(transposeB: true, m: rows, n: w.k, k: columns.count, a: dy + columns.lowerBound, lda: w.n, b: widened,
                      ldb: stride, beta: accumulate || columns.lowerBound > 0 ? 1 : 0, c: dx, ldc: w.k)
        }
    }

    /// Rows one pass of `block` takes: its rows × 32 outputs stay in registers. 8 rows need 16 registers of 512
    /// bits (AVX-512 has 32); with 16 registers of 256 bits (AVX2) or 128-bit vectors that many spill, so 2 there.
    static let rowsPerPass: Int = {
        #if arch(x86_64) && os(Linux)
        if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8), info.contains(" avx512f") { return 8 }
        #endif
        return 2
    }()

    /// Weight rows of a block read per pass: 128 × 32 floats (16 KiB) stay in the first-level cache while the
    /// groups of rows pass over them.
    static let kChunk = 128

    /// out[0..<32] += x · block b of `w` for a 16- or 8-bit `w`, widening each weight in registers; 8-bit sums are
    /// scaled once at the end.
    @inline(__always)
    private static func singleRow(_ x: UnsafePointer<Float>, _ w: PackedMatrix, block b: Int, into out: UnsafeMutablePointer<Float>) {
        let k = w.k
        switch w.format {
        case .bfloat16:
            let (low, high) = widenedProduct(x, k, UnsafeRawPointer(w.storage + b * w.blockBytes), rowBytes: 64) {
                (WeightFormat.widenBFloat16($0), WeightFormat.widenBFloat16($0 + 32))
            }
            store(load(out) + low, out); store(load(out + 16) + high, out + 16)
        case .int8:
            // The hardware's prefetching alone kept 8-bit rows waiting for memory: asking for the line 4 KB ahead
            // took GPT-2 from 128-169 to 161-230 tokens/s here (AVX2, interleaved runs; 16-bit and fp32 rows lost 2-10%).
            let (low, high) = widenedProduct(x, k, UnsafeRawPointer(w.storage + b * w.blockBytes), rowBytes: 32, prefetchBytes: 4096) {
                (WeightFormat.widenInt8($0), WeightFormat.widenInt8($0 + 16))
            }
            let scales = w.scales! + b * 32
            store(load(out) + low * load(scales), out); store(load(out + 16) + high * load(scales + 16), out + 16)
        case .float32, .int4:
            preconditionFailure("fp32 and exact-input 4-bit blocks take the general path, rounded-input 4-bit ones `int4Row`")
        }
    }

    /// Σ_i x[i] · row i of `k` rows of 32 weights, `rowBytes` bytes each, that `widenRow` turns into floats (columns
    /// 0..<16 and 16..<32): the sums of those columns. Two sets of accumulators (even and odd rows) keep two chains of
    /// additions in flight. With `prefetchBytes`, each pair of rows (one cache line of 8-bit rows) also asks for the
    /// line that many bytes ahead.
    @inline(__always)
    private static func widenedProduct(_ x: UnsafePointer<Float>, _ k: Int, _ block: UnsafeRawPointer, rowBytes: Int,
                                       prefetchBytes: Int = 0, _ widenRow: (UnsafeRawPointer) -> (SIMD16<Float>, SIMD16<Float>)) -> (SIMD16<Float>, SIMD16<Float>) {
        let zero = SIMD16<Float>()
        var a0 = zero, a1 = zero, c0 = zero, c1 = zero
        var i = 0
        while i + 2 <= k {
            let xa = SIMD16<Float>(repeating: x[i]), xc = SIMD16<Float>(repeating: x[i + 1]), row = block + i * rowBytes
            if prefetchBytes > 0 { prefetchIntoSecondLevelCache(row + prefetchBytes) }
            let (l0, h0) = widenRow(row), (l1, h1) = widenRow(row + rowBytes)
            a0.addProduct(xa, l0); a1.addProduct(xa, h0)
            c0.addProduct(xc, l1); c1.addProduct(xc, h1)
            i += 2
        }
        if i < k {
            let xa = SIMD16<Float>(repeating: x[i]), (l0, h0) = widenRow(block + i * rowBytes)
            a0.addProduct(xa, l0); a1.addProduct(xa, h0)
        }
        return (a0 + c0, a1 + c1)
    }

    /// `block` for two rows, with only their four accumulators live (the general loop's sixteen spill on CPUs
    /// with 16 vector registers). Iteration i < `prefetch` also asks for the cache line at `lines + 64·i`.
    @inline(__always)
    private static func pairBlock(_ x: UnsafePointer<Float>, _ k: Int, _ xStride: Int, _ w: UnsafePointer<Float>,
                                  _ out: UnsafeMutablePointer<Float>, _ stride: Int,
                                  prefetching lines: UnsafeRawPointer, _ prefetch: Int) {
        var a0 = load(out), a1 = load(out + 16), b0 = load(out + stride), b1 = load(out + stride + 16)
        for i in 0..<k {
            if i < prefetch { prefetchIntoSecondLevelCache(lines + i * 64) }
            let w0 = load(w + i * 32), w1 = load(w + i * 32 + 16)
            var v = SIMD16<Float>(repeating: x[i]); a0.addProduct(v, w0); a1.addProduct(v, w1)
            v = SIMD16<Float>(repeating: x[xStride + i]); b0.addProduct(v, w0); b1.addProduct(v, w1)
        }
        store(a0, out); store(a1, out + 16); store(b0, out + stride); store(b1, out + stride + 16)
    }

    /// out[r, 0..<32] += Σ_i x[r, i] · block[i, 0..<32] for `rows` ≤ 8 rows and i < k; the block holds rows of 32
    /// floats, x has row stride `xStride`, out has row stride `stride`. The rows × 32 outputs stay in registers.
    /// With two rows or more, iteration i < `prefetch` also asks for the cache line at `lines + 64·i`.
    @inline(__always)
    private static func block(_ x: UnsafePointer<Float>, _ rows: Int, _ k: Int, _ xStride: Int, _ w: UnsafePointer<Float>,
                              _ out: UnsafeMutablePointer<Float>, _ stride: Int,
                              prefetching lines: UnsafeRawPointer, _ prefetch: Int) {
        let zero = SIMD16<Float>()
        var a0 = load(out), a1 = load(out + 16)
        var b0 = zero, b1 = zero, c0 = zero, c1 = zero, d0 = zero, d1 = zero
        var e0 = zero, e1 = zero, f0 = zero, f1 = zero, g0 = zero, g1 = zero, h0 = zero, h1 = zero
        if rows > 1 { b0 = load(out + stride); b1 = load(out + stride + 16) }
        if rows > 2 { c0 = load(out + 2 * stride); c1 = load(out + 2 * stride + 16) }
        if rows > 3 { d0 = load(out + 3 * stride); d1 = load(out + 3 * stride + 16) }
        if rows > 4 { e0 = load(out + 4 * stride); e1 = load(out + 4 * stride + 16) }
        if rows > 5 { f0 = load(out + 5 * stride); f1 = load(out + 5 * stride + 16) }
        if rows > 6 { g0 = load(out + 6 * stride); g1 = load(out + 6 * stride + 16) }
        if rows > 7 { h0 = load(out + 7 * stride); h1 = load(out + 7 * stride + 16) }
        if rows == 1 {
            for i in 0..<k {
                let xa = SIMD16<Float>(repeating: x[i])
                a0.addProduct(xa, load(w + i * 32)); a1.addProduct(xa, load(w + i * 32 + 16))
            }
        } else {
            for i in 0..<k {
                if i < prefetch { prefetchIntoSecondLevelCache(lines + i * 64) }
                let w0 = load(w + i * 32), w1 = load(w + i * 32 + 16)
                var v = SIMD16<Float>(repeating: x[i]); a0.addProduct(v, w0); a1.addProduct(v, w1)
                v = SIMD16<Float>(repeating: x[xStride + i]); b0.addProduct(v, w0); b1.addProduct(v, w1)
                if rows > 2 { v = SIMD16<Float>(repeating: x[2 * xStride + i]); c0.addProduct(v, w0); c1.addProduct(v, w1) }
                if rows > 3 { v = SIMD16<Float>(repeating: x[3 * xStride + i]); d0.addProduct(v, w0); d1.addProduct(v, w1) }
                if rows > 4 { v = SIMD16<Float>(repeating: x[4 * xStride + i]); e0.addProduct(v, w0); e1.addProduct(v, w1) }
                if rows > 5 { v = SIMD16<Float>(repeating: x[5 * xStride + i]); f0.addProduct(v, w0); f1.addProduct(v, w1) }
                if rows > 6 { v = SIMD16<Float>(repeating: x[6 * xStride + i]); g0.addProduct(v, w0); g1.addProduct(v, w1) }
                if rows > 7 { v = SIMD16<Float>(repeating: x[7 * xStride + i]); h0.addProduct(v, w0); h1.addProduct(v, w1) }
            }
        }
        store(a0, out); store(a1, out + 16)
        if rows > 1 { store(b0, out + stride); store(b1, out + stride + 16) }
        if rows > 2 { store(c0, out + 2 * stride); store(c1, out + 2 * stride + 16) }
        if rows > 3 { store(d0, out + 3 * stride); store(d1, out + 3 * stride + 16) }
        if rows > 4 { store(e0, out + 4 * stride); store(e1, out + 4 * stride + 16) }
        if rows > 5 { store(f0, out + 5 * stride); store(f1, out + 5 * stride + 16) }
        if rows > 6 { store(g0, out + 6 * stride); store(g1, out + 6 * stride + 16) }
        if rows > 7 { store(h0, out + 7 * stride); store(h1, out + 7 * stride + 16) }
    }
}
