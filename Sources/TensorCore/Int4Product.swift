import CMemoryHints
import GPTUtilities
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// The input of a product with 4-bit weights, rounded as the product reads it: each group of `WeightFormat.int4Group`
/// inputs (the weights' groups) becomes 8-bit codes q = x / s, rounded to nearest (ties away from zero), with
/// s = max |x| / 127 over the group — as llama.cpp's q4_0 products read their input in q8_0. One row is multiplied by
/// integer dot products (`MatrixVector.int4Row`); more rows multiply the same values, q · s, as floats, so that one
/// token, a few and a whole prompt compute the same product, up to the order of the additions.
struct Int4Input {
    /// Groups of k inputs (the last zero-padded).
    let groups: Int
    /// The codes, `groups` × 32 (padding 0).
    let codes: UnsafeMutablePointer<Int8>
    /// Each group's scale s.
    let scales: UnsafeMutablePointer<Float>
    /// Each group's sum of codes.
    let sums: UnsafeMutablePointer<Int32>

    /// Rounds the k values at `x` into `storage` (`bytes(k:)` bytes, 4-byte aligned).
    init(_ x: UnsafePointer<Float>, k: Int, storage: UnsafeMutableRawPointer) {
        groups = MatrixVector.PackedMatrix.int4Groups(k)
        scales = storage.assumingMemoryBound(to: Float.self)
        sums = (storage + groups * 4).assumingMemoryBound(to: Int32.self)
        codes = (storage + groups * 8).assumingMemoryBound(to: Int8.self)
        codes.update(repeating: 0, count: groups * WeightFormat.int4Group)
        let (codes, scales, sums) = (codes, scales, sums)
        Self.forEachGroup(x, k: k) { g, first, count, scale in
            scales[g] = scale
            var sum: Int32 = 0
            for i in first..<(first + count) {
                let q = Self.code(x[i], scale: scale)
                codes[i] = q
                sum += Int32(q)
            }
            sums[g] = sum
        }
    }

    /// Bytes `init` needs for k inputs.
    static func bytes(k: Int) -> Int { MatrixVector.PackedMatrix.int4Groups(k) * (8 + WeightFormat.int4Group) }

    /// Writes rows × k inputs rounded (q · s) into `target`.
    static func round(_ x: UnsafePointer<Float>, rows: Int, k: Int, into target: UnsafeMutablePointer<Float>) {
        Parallel.forEach(rows, costPerItem: 8 * k) { range in
            for r in range {
                let row = x + r * k, out = target + r * k
                forEachGroup(row, k: k) { _, first, count, scale in
                    for i in first..<(first + count) { out[i] = Float(code(row[i], scale: scale)) * scale }
                }
            }
        }
    }

    /// The code of input `x` in a group of scale `scale` (0 in a group of zeros).
    @inline(__always)
    private static func code(_ x: Float, scale: Float) -> Int8 { scale == 0 ? 0 : WeightFormat.int8(x, scale: scale) }

    /// Calls `body(group, first input, inputs, scale)` for each group of the k inputs at `x`.
    @inline(__always)
    private static func forEachGroup(_ x: UnsafePointer<Float>, k: Int, _ body: (Int, Int, Int, Float) -> Void) {
        var g = 0, first = 0
        while first < k {
            let count = min(WeightFormat.int4Group, k - first)
            var largest: Float = 0
            for i in first..<(first + count) { largest = max(largest, abs(x[i])) }
            body(g, first, count, largest / 127)
            g += 1
            first += count
        }
    }
}

extension MatrixVector {
    /// out[0..<32] += x · block b of the 4-bit `w`, x given rounded (`Int4Input`): per group, the integer sums
    /// Σ q · (code − 8) of each column, scaled by the input's and the column's scales.
    @inline(__always)
    static func int4Row(_ x: Int4Input, _ w: PackedMatrix, block b: Int, into out: UnsafeMutablePointer<Float>) {
        let blockStart = UnsafeRawPointer(w.storage + b * w.blockBytes)
        #if arch(x86_64)
        // Each 32-byte load holds rows 2p and 2p + 1 (16 bytes each; byte c: column c's code low, c + 16's high).
        // Interleaving the two rows byte by byte puts the pair of codes of one column side by side, so that
        // `maddubs` (unsigned codes × signed inputs, adjacent pairs summed) gives 16 columns' sums of the pair.
        let order = unsafeBitCast(SIMD8<Int32>(0, 1, 4, 5, 2, 3, 6, 7), to: SIMD4<Int64>.self)
        let interleave = unsafeBitCast(SIMD32<UInt8>(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                                     0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15),
                                       to: SIMD4<Int64>.self)
        let nibbles = unsafeBitCast(SIMD32<UInt8>(repeating: 15), to: SIMD4<Int64>.self)
        var out0 = UnsafeRawPointer(out).loadUnaligned(as: SIMD8<Float>.self)
        var out1 = UnsafeRawPointer(out + 8).loadUnaligned(as: SIMD8<Float>.self)
        var out2 = UnsafeRawPointer(out + 16).loadUnaligned(as: SIMD8<Float>.self)
        var out3 = UnsafeRawPointer(out + 24).loadUnaligned(as: SIMD8<Float>.self)
        let codes = UnsafeRawPointer(x.codes)
        for g in 0..<x.groups {
            let group = blockStart + g * PackedMatrix.int4GroupBytes
            // The hardware's prefetching alone left a third of the time waiting for memory: asking for the group 6
            // ahead (3.4 KB) took GPT-2 from 180-205 to 285-310 tokens/s here (AVX2; 2, 4, 8 and 16 ahead were slower).
            for line in 0..<(PackedMatrix.int4GroupBytes / 64) {
                prefetchIntoSecondLevelCache(group + 6 * PackedMatrix.int4GroupBytes + line * 64)
            }
            var sum0 = SIMD8<Int32>(), sum1 = SIMD8<Int32>(), sum2 = SIMD8<Int32>(), sum3 = SIMD8<Int32>()
            for half in 0..<2 {
                // Eight pairs of rows: |Σ| ≤ 8 · 2 · 15 · 127 = 30,480 fits 16 bits.
                var low = SIMD16<Int16>(), high = SIMD16<Int16>()
                for p in (half * 8)..<(half * 8 + 8) {
                    let rows = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(
                        group.loadUnaligned(fromByteOffset: p * 32, as: SIMD4<Int64>.self), order), interleave)
                    let low4 = _mm256_and_si256(rows, nibbles), high4 = _mm256_and_si256(_mm256_srli_epi16(rows, 4), nibbles)
                    let pair = unsafeBitCast(SIMD16<Int16>(repeating: codes.loadUnaligned(
                        fromByteOffset: g * WeightFormat.int4Group + 2 * p, as: Int16.self)), to: SIMD4<Int64>.self)
                    low &+= unsafeBitCast(_mm256_maddubs_epi16(low4, pair), to: SIMD16<Int16>.self)
                    high &+= unsafeBitCast(_mm256_maddubs_epi16(high4, pair), to: SIMD16<Int16>.self)
                }
                sum0 &+= SIMD8<Int32>(truncatingIfNeeded: low.lowHalf)
                sum1 &+= SIMD8<Int32>(truncatingIfNeeded: low.highHalf)
                sum2 &+= SIMD8<Int32>(truncatingIfNeeded: high.lowHalf)
                sum3 &+= SIMD8<Int32>(truncatingIfNeeded: high.highHalf)
            }
            // Σ q · (code − 8) = Σ q · code − 8 Σ q.
            let offset = SIMD8<Int32>(repeating: 8 &* x.sums[g]), inputScale = x.scales[g]
            let low = WeightFormat.widenBFloat16(group + PackedMatrix.int4CodeBytes) * inputScale
            let high = WeightFormat.widenBFloat16(group + PackedMatrix.int4CodeBytes + 32) * inputScale
            out0.addProduct(SIMD8<Float>(sum0 &- offset), low.lowHalf)
            out1.addProduct(SIMD8<Float>(sum1 &- offset), low.highHalf)
            out2.addProduct(SIMD8<Float>(sum2 &- offset), high.lowHalf)
            out3.addProduct(SIMD8<Float>(sum3 &- offset), high.highHalf)
        }
        UnsafeMutableRawPointer(out).storeBytes(of: out0, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + 8).storeBytes(of: out1, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + 16).storeBytes(of: out2, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + 24).storeBytes(of: out3, as: SIMD8<Float>.self)
        #else
        int4RowReference(x, w, block: b, into: out)
        #endif
    }

    /// out = x · w for one row x and 4-bit weights, through `int4RowReference` (what CPUs without AVX2 run), so
    /// that tests compare it with `multiply`, which takes the AVX2 path where there is one.
    package static func multiplyOneInt4RowPortably(_ x: UnsafePointer<Float>, _ w: PackedMatrix, into out: UnsafeMutablePointer<Float>) {
        precondition(w.format == .int4, "a 4-bit matrix")
        withUnsafeTemporaryAllocation(byteCount: Int4Input.bytes(k: w.k), alignment: 4) { storage in
            let input = Int4Input(x, k: w.k, storage: storage.baseAddress!)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { block in
                for b in 0..<((w.n + 31) / 32) {
                    block.baseAddress!.update(repeating: 0, count: 32)
                    int4RowReference(input, w, block: b, into: block.baseAddress!)
                    (out + b * 32).update(from: block.baseAddress!, count: min(32, w.n - b * 32))
                }
            }
        }
    }

    /// `int4Row` one code at a time: the same integer sums and the same scaling, for CPUs without AVX2.
    static func int4RowReference(_ x: Int4Input, _ w: PackedMatrix, block b: Int, into out: UnsafeMutablePointer<Float>) {
        let blockStart = UnsafeRawPointer(w.storage + b * w.blockBytes)
        for g in 0..<x.groups {
            let group = blockStart + g * PackedMatrix.int4GroupBytes
            for c in 0..<32 {
                var sum: Int32 = 0
                for i in 0..<WeightFormat.int4Group {
                    let byte = group.load(fromByteOffset: i * 16 + c % 16, as: UInt8.self)
                    sum += Int32(x.codes[g * WeightFormat.int4Group + i]) * Int32(c < 16 ? byte & 15 : byte >> 4)
                }
                let scale = group.load(fromByteOffset: PackedMatrix.int4CodeBytes + c * 2, as: BFloat16.self).float
                out[c] = out[c].addingProduct(Float(sum - 8 * x.sums[g]), scale * x.scales[g])
            }
        }
    }
}
