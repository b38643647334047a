import Atomics
import GPTUtilities
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Vectorised transcendental functions on 16 float lanes (AVX-512 width) and the load/store helpers the kernels use.
///
/// libm works one element at a time (≈9 ns for tanhf here); these evaluate 16 lanes in a few nanoseconds.
@usableFromInline package typealias Float16x = SIMD16<Float>

/// The 16 floats at `p` (no alignment needed).
@inlinable @inline(__always) package func load(_ p: UnsafePointer<Float>) -> Float16x {
    UnsafeRawPointer(p).loadUnaligned(as: Float16x.self)
}

/// Stores 16 floats at `p` (no alignment needed).
@inlinable @inline(__always) package func store(_ v: Float16x, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float16x.self)
}

/// Stores 16 floats at the 64-byte-aligned `p` without first reading the cache line (non-temporal stores on
/// x86-64; a plain store elsewhere). For arrays much larger than the caches that are written in one pass and not
/// read again soon; it saves the read-for-ownership traffic of ordinary stores. Follow with
/// `streamingStoreFence()` before the data is handed to another thread.
@inlinable @inline(__always) package func storeStreaming(_ v: Float16x, _ p: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    // SSE's 16-byte form is in every x86-64; four of them fill one line in the write-combining buffer.
    let low = v.lowHalf, high = v.highHalf
    _mm_stream_ps(p, low.lowHalf)
    _mm_stream_ps(p + 4, low.highHalf)
    _mm_stream_ps(p + 8, high.lowHalf)
    _mm_stream_ps(p + 12, high.highHalf)
    #else
    store(v, p)
    #endif
}

/// Orders earlier `storeStreaming` stores before later memory operations (they are weakly ordered on x86-64).
@inlinable @inline(__always) package func streamingStoreFence() {
    // On x86-64 this is a locked instruction, which also drains the write-combining buffers.
    atomicMemoryFence(ordering: .sequentiallyConsistent)
}

/// The first `lanes` (≤ 16) elements at `p`, zero-padded.
@inlinable @inline(__always) package func load(_ p: UnsafePointer<Float>, _ lanes: Int) -> Float16x {
    if lanes == 16 { return load(p) }
    var v = Float16x()
    for j in 0..<lanes { v[j] = p[j] }
    return v
}

/// Stores the first `lanes` (≤ 16) lanes of `v` at `p`.
@inlinable @inline(__always) package func store(_ v: Float16x, _ p: UnsafeMutablePointer<Float>, _ lanes: Int) {
    if lanes == 16 { store(v, p); return }
    for j in 0..<lanes { p[j] = v[j] }
}

/// Runs `body(offset, lanes)` over `0..<count` in blocks of 16 elements (the last block may be shorter), in
/// parallel when the array is large. Each block is visited exactly once.
@inline(__always)
func forEachBlock(_ count: Int, _ body: (Int, Int) -> Void) {
    let blocks = (count + 15) / 16
    Parallel.forEach(blocks, costPerItem: 16 * 4) { range in
        for b in range { body(b * 16, min(16, count - b * 16)) }
    }
}

@usableFromInline package enum VectorMath {
    /// e^x for each lane; relative error below 2e-7 over the float range, exactly 0 below -87.3.
    @inlinable @inline(__always)
    package static func exp(_ x: Float16x) -> Float16x {
        let low = Float16x(repeating: -87.3), high = Float16x(repeating: 88.3)
        let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
        // Round x·log2(e) to the nearest integer n by adding 1.5·2²³: the sum's low mantissa bits then hold n,
        // which also gives 2ⁿ by shifting n + 127 into the exponent field (no float→int conversion needed).
        let magic = Float16x(repeating: 12_582_912)
        let k = clamped * 1.442_695_04 + magic
        let n = k - magic
        var r = clamped - n * 0.693_359_375
        r = r + n * 2.121_944_4e-4
        var p = Float16x(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        p = p * r * r + r + 1
        let exponent = (unsafeBitCast(k, to: SIMD16<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        let result = p * unsafeBitCast(exponent, to: Float16x.self)
        return result.replacing(with: 0, where: x .< -87.3)
    }

    /// tanh(x) for each lane, as 1 − 2 / (e^{2x} + 1); absolute error below 1e-7.
    @inline(__always)
    package static func tanh(_ x: Float16x) -> Float16x {
        let limit = Float16x(repeating: 20)
        let e = exp(2 * x.replacing(with: -limit, where: x .< -limit).replacing(with: limit, where: x .> limit))
        return 1 - 2 / (e + 1)
    }

    /// erf(x) for each lane (Abramowitz & Stegun 7.1.26 refined; absolute error below 5e-7).
    @inline(__always)
    package static func erf(_ x: Float16x) -> Float16x {
        let a = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.327_591_1 * a)
        var p = Float16x(repeating: 1.061_405_429)
        p = p * t - 1.453_152_027
        p = p * t + 1.421_413_741
        p = p * t - 0.284_496_736
        p = p * t + 0.254_829_592
        let negativeSquare: Float16x = -(a * a)
        let y = 1 - p * t * exp(negativeSquare)
        return y.replacing(with: -y, where: x .< 0)
    }

    /// Scalar versions for loop tails, computed with the same formulas as the vector ones.
    @inlinable @inline(__always) package static func exp(_ x: Float) -> Float { exp(Float16x(repeating: x))[0] }
    @inline(__always) package static func tanh(_ x: Float) -> Float { tanh(Float16x(repeating: x))[0] }
    @inline(__always) package static func erf(_ x: Float) -> Float { erf(Float16x(repeating: x))[0] }
}

extension UnsafePointer where Pointee == Float {
    /// Largest of `count` elements starting here.
    @inlinable @inline(__always) package func maximum(_ count: Int) -> Float {
        var m = Float16x(repeating: -.infinity)
        var i = 0
        while i + 16 <= count { let v = load(self + i); m.replace(with: v, where: v .> m); i += 16 }
        var result = m.max()
        while i < count { result = Swift.max(result, self[i]); i += 1 }
        return result
    }

    /// Sum of `count` elements starting here.
    @inline(__always) package func sum(_ count: Int) -> Float {
        var s = Float16x()
        var i = 0
        while i + 16 <= count { s += load(self + i); i += 16 }
        var result = s.sum()
        while i < count { result += self[i]; i += 1 }
        return result
    }

    /// Dot product with `other` over `count` elements.
    @inline(__always) package func dot(_ other: UnsafePointer<Float>, _ count: Int) -> Float {
        var s = Float16x()
        var i = 0
        while i + 16 <= count { s = s.addingProduct(load(self + i), load(other + i)); i += 16 }
        var result = s.sum()
        while i < count { result += self[i] * other[i]; i += 1 }
        return result
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    /// self[i] = (accumulate ? self[i] : 0) + alpha · x[i] for `count` elements.
    @inline(__always) package func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ count: Int, accumulate: Bool = true) {
        var i = 0
        if accumulate {
            while i + 16 <= count { store(load(self + i).addingProduct(alpha, load(x + i)), self + i); i += 16 }
            while i < count { self[i] += alpha * x[i]; i += 1 }
        } else {
            while i + 16 <= count { store(alpha * load(x + i), self + i); i += 16 }
            while i < count { self[i] = alpha * x[i]; i += 1 }
        }
    }
}
