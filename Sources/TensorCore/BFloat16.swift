/// A bfloat16 number: the upper half of a float32 (8-bit exponent, 7-bit mantissa).
import GPTUtilities

package struct BFloat16: Hashable, Sendable {
    /// The 16 bits as stored.
    package var bitPattern: UInt16

    /// The number with these bits.
    package init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// `value` rounded to the nearest bfloat16, ties to even (NaN stays NaN).
    @inline(__always)
    package init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN { bitPattern = UInt16(bits >> 16) | 0x40; return }
        bitPattern = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    /// The exact float32 value.
    @inline(__always)
    package var float: Float { Float(bitPattern: UInt32(bitPattern) << 16) }
}

/// Conversions between float32 and bfloat16 arrays, 16 lanes at a time and multithreaded.
package enum BFloat16Conversion {
    /// `destination[i] = BFloat16(source[i])` for i in 0..<count.
    package static func round(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<BFloat16>, count: Int) {
        Parallel.forEach((count + 15) / 16, costPerItem: 64) { range in
            let lo = range.lowerBound * 16, hi = min(count, range.upperBound * 16)
            var i = lo
            while i + 16 <= hi {
                UnsafeMutableRawPointer(destination + i).storeBytes(of: rounded(load(source + i)), as: SIMD16<UInt16>.self)
                i += 16
            }
            while i < hi { destination[i] = BFloat16(source[i]); i += 1 }
        }
    }

    /// `destination[i] = source[i].float` for i in 0..<count.
    package static func widen(_ source: UnsafePointer<BFloat16>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.forEach((count + 15) / 16, costPerItem: 64) { range in
            let lo = range.lowerBound * 16, hi = min(count, range.upperBound * 16)
            var i = lo
            while i + 16 <= hi {
                store(widened(UnsafeRawPointer(source + i).loadUnaligned(as: SIMD16<UInt16>.self)), destination + i)
                i += 16
            }
            while i < hi { destination[i] = source[i].float; i += 1 }
        }
    }

    /// Sixteen floats rounded to bfloat16 bits, ties to even; NaN lanes become quiet NaNs.
    @inline(__always)
    package static func rounded(_ v: Float16x) -> SIMD16<UInt16> {
        let bits = unsafeBitCast(v, to: SIMD16<UInt32>.self)
        var result = (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16
        result.replace(with: (bits &>> 16) | 0x40, where: v .!= v)
        return SIMD16<UInt16>(truncatingIfNeeded: result)
    }

    /// Sixteen bfloat16 bit patterns as floats (exact).
    @inline(__always)
    package static func widened(_ bits: SIMD16<UInt16>) -> Float16x {
        unsafeBitCast(SIMD16<UInt32>(truncatingIfNeeded: bits) &<< 16, to: Float16x.self)
    }
}

/// A contiguous row-major bfloat16 array (a view when made by `viewing:`). Its memory comes from the tensor buffer
/// pool, so per-step conversions reuse warm buffers.
package final class BFloat16Tensor: @unchecked Sendable {
    /// Size of each dimension, outermost first.
    package let shape: [Int]
    /// The storage (floats, two bfloat16 elements each) this tensor lives in.
    package let storage: TensorStorage
    /// Pointer to the first element.
    package let pointer: UnsafeMutablePointer<BFloat16>

    /// Number of elements.
    package var count: Int { shape.reduce(1, *) }

    /// An array of the given shape with unspecified contents.
    package init(uninitializedShape shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(uninitializedCount: (shape.reduce(1, *) + 1) / 2)
        pointer = UnsafeMutableRawPointer(storage.base).bindMemory(to: BFloat16.self, capacity: 2 * storage.count)
    }

    /// A view of `shape` elements of `other`'s storage, starting at element `offset`.
    package init(viewing other: BFloat16Tensor, offset: Int, shape: [Int]) {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= other.count, "bf16 view outside storage")
        self.shape = shape
        storage = other.storage
        pointer = other.pointer + offset
    }

    /// `tensor` rounded to bfloat16.
    package convenience init(rounding tensor: Tensor) {
        self.init(uninitializedShape: tensor.shape)
        BFloat16Conversion.round(tensor.pointer, into: pointer, count: count)
    }

    /// The elements widened to a float32 tensor.
    package func widened() -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        BFloat16Conversion.widen(pointer, into: t.pointer, count: count)
        return t
    }
}
