import Foundation

/// A deterministic, seedable random number generator (xoshiro256**, seeded through SplitMix64).
///
/// The same seed gives the same sequence on every platform; its state can be saved and restored exactly.
package struct SeededRandom: RandomNumberGenerator, Sendable, Codable, Equatable {
    /// The four state words; save them to resume the sequence exactly.
    package private(set) var state: [UInt64]

    /// A generator whose sequence is determined by `seed`.
    package init(seed: UInt64) {
        var s = seed
        func splitMix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = [splitMix(), splitMix(), splitMix(), splitMix()]
    }

    package mutating func next() -> UInt64 {
        let result = rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]
        state[3] ^= state[1]
        state[1] ^= state[2]
        state[0] ^= state[3]
        state[2] ^= t
        state[3] = rotl(state[3], 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1) with 24 bits of precision.
    package mutating func nextFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [0, 1) with 53 bits of precision.
    package mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform integer in `0..<bound`.
    package mutating func nextInt(below bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }

    /// Fills `buffer` with N(mean, std²) samples (Box–Muller in double precision).
    package mutating func fillNormal(_ buffer: UnsafeMutableBufferPointer<Float>, mean: Float, std: Float) {
        var i = 0
        while i < buffer.count {
            let u1 = max(nextDouble(), 0x1p-60), u2 = nextDouble()
            let r = (-2 * log(u1)).squareRoot()
            let theta = 2 * Double.pi * u2
            buffer[i] = mean + std * Float(r * cos(theta))
            if i + 1 < buffer.count { buffer[i + 1] = mean + std * Float(r * sin(theta)) }
            i += 2
        }
    }
}
