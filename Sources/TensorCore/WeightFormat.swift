#if arch(x86_64)
import GPTUtilities
import _Builtin_intrinsics.intel
#endif

/// How the decoding kernels store a weight matrix: 32-bit floats, bfloat16 (the upper half of each float, rounded to
/// nearest even), or 8-bit integers with one float scale per output channel (symmetric: w ≈ q · scale with q in
/// −127…127 and scale = max |w| / 127 over the channel). Decoding streams every weight once a token, so 16-bit
/// weights halve and 8-bit ones quarter the bytes it reads; products are still taken in fp32.
public enum WeightFormat: String, CaseIterable, Sendable {
    case float32 = "fp32"
    case bfloat16 = "bf16"
    case int8

    /// Bytes one weight takes.
    package var bytesPerWeight: Int {
        switch self {
        case .float32: 4
        case .bfloat16: 2
        case .int8: 1
        }
    }

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
