#if arch(x86_64)
import GPTUtilities
import _Builtin_intrinsics.intel
#endif

/// How the decoding kernels store a weight matrix: 32-bit floats, bfloat16 (the upper half of each float, rounded to
/// nearest even), 8-bit integers with one float scale per output channel (symmetric: w ≈ q · scale with q in
/// −127…127 and scale = max |w| / 127 over the channel), or 4-bit integers in groups of 32 inputs of one output
/// channel, each group with a bfloat16 scale (w ≈ q · scale with q in −8…7, the layout of llama.cpp's q4_0; the scale
/// is the one of a few near the group's largest magnitude / −8 that leaves the least squared error). Decoding streams
/// every weight once a token, so 16-bit weights halve, 8-bit ones quarter and 4-bit ones (4.5 bits with the scales)
/// divide by seven the bytes it reads. Products are taken in fp32, except that decoding's 4-bit products first round
/// their input to 8 bits per group of 32 (as llama.cpp's q4_0 does) and multiply one row by integer dot products.
public enum WeightFormat: String, CaseIterable, Sendable {
    case float32 = "fp32"
    case bfloat16 = "bf16"
    case int8
    case int4

    /// Inputs of one output channel that share a 4-bit scale.
    package static let int4Group = 32

    /// Rounds a matrix in place to the values this format represents, so that products with the fp32 matrix (prompt
    /// passes, training-style forwards) use exactly the weights decoding streams. The matrix is [inputs, outputs]
    /// row-major (Conv1D), or [outputs, inputs] when `oneRowPerOutput` (a tied embedding used as the output layer).
    package func round(_ w: UnsafeMutablePointer<Float>, inputs: Int, outputs: Int, oneRowPerOutput: Bool) {
        switch self {
        case .float32:
            return
        case .bfloat16:
            Parallel.forEach(inputs, costPerItem: outputs) { range in
                for i in (range.lowerBound * outputs)..<(range.upperBound * outputs) { w[i] = BFloat16(w[i]).float }
            }
        case .int8 where oneRowPerOutput:
            // Output j's channel is the row j * inputs ..< (j + 1) * inputs.
            Parallel.forEach(outputs, costPerItem: inputs) { range in
                for j in range {
                    let channel = w + j * inputs
                    var largest: Float = 0
                    for i in 0..<inputs { largest = max(largest, abs(channel[i])) }
                    let scale = Self.int8Scale(largest: largest)
                    for i in 0..<inputs { channel[i] = Float(Self.int8(channel[i], scale: scale)) * scale }
                }
            }
        case .int4 where oneRowPerOutput:
            // Output j's channel is the row j * inputs ..< (j + 1) * inputs, its groups consecutive runs of it; the
            // scales of 16 channels' groups at a time, from a copy of the 16 groups with one lane a channel.
            Parallel.forEach((outputs + 15) / 16, costPerItem: 16 * inputs) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: Self.int4Group * 16) { buffer in
                    let lanes = buffer.baseAddress!
                    for block in range {
                        let channels = (block * 16)..<min(outputs, block * 16 + 16)
                        var first = 0
                        while first < inputs {
                            let count = min(Self.int4Group, inputs - first)
                            lanes.update(repeating: 0, count: count * 16)
                            for (lane, j) in channels.enumerated() {
                                for i in 0..<count { lanes[i * 16 + lane] = w[j * inputs + first + i] }
                            }
                            let scales = Self.int4Scales(count: count) { load(lanes + $0 * 16) }
                            for (lane, j) in channels.enumerated() {
                                let group = w + j * inputs + first, scale = scales[lane]
                                for i in 0..<count { group[i] = Self.int4Value(Self.int4Code(group[i], scale: scale), scale: scale) }
                            }
                            first += count
                        }
                    }
                }
            }
        case .int4:
            // A group is `int4Group` consecutive rows of `outputs`: one group of every channel at a time.
            let groups = (inputs + Self.int4Group - 1) / Self.int4Group
            Parallel.forEach(groups, costPerItem: Self.int4Group * outputs) { range in
                var scales = [Float](repeating: 0, count: outputs)
                for g in range {
                    let rows = (g * Self.int4Group)..<min(inputs, (g + 1) * Self.int4Group)
                    var j = 0
                    while j < outputs {
                        let lanes = min(16, outputs - j), first = w + rows.lowerBound * outputs + j
                        let groupScales = Self.int4Scales(count: rows.count) { load(first + $0 * outputs, lanes) }
                        for lane in 0..<lanes { scales[j + lane] = groupScales[lane] }
                        j += 16
                    }
                    for i in rows {
                        let row = w + i * outputs
                        for j in 0..<outputs { row[j] = Self.int4Value(Self.int4Code(row[j], scale: scales[j]), scale: scales[j]) }
                    }
                }
            }
        case .int8:
            // Output j's channel is the column j of rows of `outputs`: sixteen channels at a time, so that each row
            // is read a cache line at a time rather than one element.
            let block = 16
            Parallel.forEach((outputs + block - 1) / block, costPerItem: block * inputs) { range in
                var largest = [Float](repeating: 0, count: block), scales = [Float](repeating: 1, count: block)
                for b in range {
                    let lo = b * block, count = min(block, outputs - lo)
                    for k in 0..<count { largest[k] = 0 }
                    for i in 0..<inputs {
                        let row = w + i * outputs + lo
                        for k in 0..<count { largest[k] = max(largest[k], abs(row[k])) }
                    }
                    for k in 0..<count { scales[k] = Self.int8Scale(largest: largest[k]) }
                    for i in 0..<inputs {
                        let row = w + i * outputs + lo
                        for k in 0..<count { row[k] = Float(Self.int8(row[k], scale: scales[k])) * scales[k] }
                    }
                }
            }
        }
    }

    /// The scale of an 8-bit channel whose largest magnitude is `largest` (1 for an all-zero channel).
    @inline(__always)
    static func int8Scale(largest: Float) -> Float { largest > 0 ? largest / 127 : 1 }

    /// `value / scale` rounded to the nearest integer (ties away from zero), clamped to −127…127. The rounding is
    /// spelled out (a truncating conversion, then the exact remainder) because `rounded()` calls the C library's
    /// `roundf` (x86 has no instruction that rounds ties away from zero), which made packing an 8-bit model slow.
    @inline(__always)
    static func int8(_ value: Float, scale: Float) -> Int8 {
        let x = max(-127, min(127, value / scale))
        let whole = Int32(x), part = x - Float(whole)
        return Int8(truncatingIfNeeded: whole + (part >= 0.5 ? 1 : part <= -0.5 ? -1 : 0))
    }

    /// The scales of 16 groups of 4-bit weights at once, lane by lane (weight i of group l is lane l of `weight(i)`,
    /// i in 0..<count), as floats (each a bfloat16 value). A group's scale is, of the scales that put its weight of
    /// largest magnitude (the first such) at −9 … −7 in steps of 0.25 (the codes clamped to −8…7), and each one's
    /// least-squares refit for the codes it gives, all rounded to bfloat16, the one whose codes (`int4Code`) leave the
    /// smallest squared error with that weight's code −7 or −8; extreme / −8 (the scale llama.cpp's q4_0 takes) unless
    /// another is strictly better. On the weights of a GPT-2 trained here this leaves 11-13% less squared error than
    /// extreme / −8 alone. A group of zeros has scale 0; one whose errors are not finite keeps extreme / −8.
    @inline(__always)
    static func int4Scales(count: Int, _ weight: (Int) -> Float16x) -> Float16x {
        func bfloat16(_ v: Float16x) -> Float16x { BFloat16Conversion.widened(BFloat16Conversion.rounded(v)) }
        var extreme = Float16x()
        for i in 0..<count {
            let x = weight(i)
            extreme.replace(with: x, where: magnitude(x) .> magnitude(extreme))
        }
        // The squared error of each lane's codes under `scale`, and the scale that fits those codes best.
        func error(_ scale: Float16x) -> (error: Float16x, refit: Float16x) {
            var error = Float16x(), xq = Float16x(), qq = Float16x()
            for i in 0..<count {
                let x = weight(i), q = int4Codes(x, scale: scale), d = x - q * scale
                error += d * d
                xq += x * q
                qq += q * q
            }
            return (error, (xq / qq).replacing(with: scale, where: qq .== 0))
        }
        var best = bfloat16(extreme / -8), least = error(best).error
        // Takes `scale` where it leaves less error and keeps the extreme at −7 or −8: rounding a rounded group again
        // then finds a scale that represents it exactly (extreme / −8 or / −7, up to sign), so it changes nothing.
        func consider(_ scale: Float16x, error: Float16x) {
            let better = (error .< least) .& (int4Codes(extreme, scale: scale) .<= -7)
            best.replace(with: scale, where: better)
            least.replace(with: error, where: better)
        }
        for divisor in int4Divisors {
            let candidate = bfloat16(extreme / divisor), (candidateError, refit) = error(candidate)
            consider(candidate, error: candidateError)
            let fitted = bfloat16(refit)
            consider(fitted, error: error(fitted).error)
        }
        return best.replacing(with: 0, where: extreme .== 0)
    }

    /// What the largest weight of a 4-bit group is divided by for the scales `int4Scales` tries.
    static let int4Divisors: [Float] = (0...8).map { -9 + 0.25 * Float($0) }

    /// `int4Code` less 8 (q in −8…7), lane by lane, as floats; a lane of scale 0 gives 0.
    @inline(__always)
    static func int4Codes(_ value: Float16x, scale: Float16x) -> Float16x {
        nearestInteger(value / scale, low: -8, high: 7).replacing(with: 0, where: scale .== 0)
    }

    /// Sixteen quotients clamped to low…high as the scalar codes' `min` and `max` clamp (a NaN becomes `high`), then
    /// rounded to the nearest integer, ties away from zero, as floats. Adding and subtracting 1.5 · 2²³ rounds to the
    /// nearest (ties to even) exactly at magnitudes below 2²²; a tie is then moved away from zero.
    @inline(__always)
    static func nearestInteger(_ quotient: Float16x, low: Float, high: Float) -> Float16x {
        let magic = Float16x(repeating: 12_582_912)
        var x = quotient.replacing(with: Float16x(repeating: high), where: .!(quotient .< Float16x(repeating: high)))
        x.replace(with: Float16x(repeating: low), where: .!(x .>= Float16x(repeating: low)))
        let even = (x + magic) - magic, difference = x - even
        let half = unsafeBitCast((unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x8000_0000) | 0x3F00_0000, to: Float16x.self)
        return even.replacing(with: x + half, where: (difference .== 0.5) .| (difference .== -0.5))
    }

    /// |v|, lane by lane.
    @inline(__always)
    static func magnitude(_ v: Float16x) -> Float16x {
        unsafeBitCast(unsafeBitCast(v, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: Float16x.self)
    }

    /// The stored code (q + 8, in 0…15) of `value` in a group of scale `scale`: q = value / scale rounded to the nearest
    /// integer, ties away from zero, clamped to −8…7 (a NaN becomes 7); every weight of a group of scale 0 is 0.
    @inline(__always)
    static func int4Code(_ value: Float, scale: Float) -> UInt8 {
        guard scale != 0 else { return 8 }
        let x = max(-8, min(7, value / scale))
        let whole = Int32(x), part = x - Float(whole)
        return UInt8(truncatingIfNeeded: whole + (part >= 0.5 ? 1 : part <= -0.5 ? -1 : 0) + 8)
    }

    /// The weight a 4-bit `code` stands for in a group of scale `scale`.
    @inline(__always)
    static func int4Value(_ code: UInt8, scale: Float) -> Float { Float(Int32(code) - 8) * scale }

    /// The codes of 32 weights in the 16 bytes at `p` as floats, codes 0…15 (not yet less 8): byte c holds the code of
    /// weight c in its low four bits and that of weight c + 16 in its high four.
    @inline(__always)
    static func widenInt4(_ p: UnsafeRawPointer) -> (low: SIMD16<Float>, high: SIMD16<Float>) {
        #if arch(x86_64)
        // Zero-extend eight bytes to 32-bit lanes at a time, then split each lane's two codes.
        let first = unsafeBitCast(_mm256_cvtepu8_epi32(SIMD2<Int64>(p.loadUnaligned(as: Int64.self), 0)), to: SIMD8<UInt32>.self)
        let second = unsafeBitCast(_mm256_cvtepu8_epi32(SIMD2<Int64>(p.loadUnaligned(fromByteOffset: 8, as: Int64.self), 0)),
                                   to: SIMD8<UInt32>.self)
        func floats(_ v: SIMD8<UInt32>) -> SIMD8<Float> { _mm256_cvtepi32_ps(unsafeBitCast(v, to: SIMD4<Int64>.self)) }
        return (SIMD16(lowHalf: floats(first & 15), highHalf: floats(second & 15)),
                SIMD16(lowHalf: floats(first &>> 4), highHalf: floats(second &>> 4)))
        #else
        let bytes = SIMD16<Int32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD16<UInt8>.self))
        return (SIMD16<Float>(bytes & 15), SIMD16<Float>(bytes &>> 4))
        #endif
    }

    /// The 16 bfloat16 values at `p` as floats (exact).
    @inline(__always)
    static func widenBFloat16(_ p: UnsafeRawPointer) -> SIMD16<Float> {
        #if arch(x86_64)
        // Zero-extend eight 16-bit lanes to 32 bits at a time, then move them to the upper halves.
        let low = _mm256_cvtepu16_epi32(p.loadUnaligned(as: SIMD2<Int64>.self))
        let high = _mm256_cvtepu16_epi32(p.loadUnaligned(fromByteOffset: 16, as: SIMD2<Int64>.self))
        return SIMD16(lowHalf: unsafeBitCast(unsafeBitCast(low, to: SIMD8<UInt32>.self) &<< 16, to: SIMD8<Float>.self),
                      highHalf: unsafeBitCast(unsafeBitCast(high, to: SIMD8<UInt32>.self) &<< 16, to: SIMD8<Float>.self))
        #else
        return BFloat16Conversion.widened(p.loadUnaligned(as: SIMD16<UInt16>.self))
        #endif
    }

    /// The 16 signed bytes at `p` as floats.
    @inline(__always)
    static func widenInt8(_ p: UnsafeRawPointer) -> SIMD16<Float> {
        #if arch(x86_64)
        // Sign-extend eight bytes to 32-bit lanes at a time and convert them.
        let low = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(SIMD2<Int64>(p.loadUnaligned(as: Int64.self), 0)))
        let high = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(SIMD2<Int64>(p.loadUnaligned(fromByteOffset: 8, as: Int64.self), 0)))
        return SIMD16(lowHalf: low, highHalf: high)
        #else
        return SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD16<Int8>.self)))
        #endif
    }
}
