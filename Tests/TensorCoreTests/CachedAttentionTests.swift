import Foundation
import GPTUtilities
import TensorCore
import XCTest

/// Attention over a key/value cache against a plain double-precision softmax(q·Kᵀ/√d)·V.
final class CachedAttentionTests: XCTestCase {
    func testAttentionOverTheCacheMatchesAReference() {
        var random = SeededRandom(seed: 3)
        // Head width 64 takes the kernel that scores eight keys at a time; 24 the general loop. Positions 0…36 cover
        // fewer than eight keys, whole groups of eight, and groups with a remainder.
        for d in [64, 24] {
            let heads = 2, sequences = 3, context = 40
            let capacity = CachedAttention.Cache.capacity(pattern: .dense, contextLength: context)
            let keys = Tensor.normal(shape: [sequences * heads * capacity * d], using: &random)
            let values = Tensor.normal(shape: [sequences * heads * capacity * d], using: &random)
            let cache = CachedAttention.Cache(keys: keys.pointer, values: values.pointer, heads: heads, headWidth: d,
                                              pattern: .dense, contextLength: context)
            let positions = [0, 5, 7, 8, 15, 16, 23, 36], rowSequences = positions.indices.map { $0 % sequences }
            let queries = Tensor.normal(shape: [positions.count, heads * d], using: &random)
            let output = Tensor(shape: [positions.count, heads * d])
            CachedAttention.attend(queries: queries.pointer, queryStride: heads * d, cache: cache, sequences: rowSequences,
                                   positions: positions, into: output.pointer)
            for (r, p) in positions.enumerated() {
                for h in 0..<heads {
                    let q = queries.pointer + r * heads * d + h * d
                    let base = (rowSequences[r] * heads + h) * capacity * d
                    let scores = (0...p).map { j in
                        (0..<d).reduce(0.0) { $0 + Double(q[$1]) * Double(keys.pointer[base + j * d + $1]) } / Double(d).squareRoot()
                    }
                    let top = scores.max()!, weights = scores.map { Foundation.exp($0 - top) }, total = weights.reduce(0, +)
                    for i in 0..<d {
                        let expected = (0...p).reduce(0.0) { $0 + weights[$1] / total * Double(values.pointer[base + $1 * d + i]) }
                        XCTAssertEqual(Double(output.pointer[r * heads * d + h * d + i]), expected, accuracy: 1e-5,
                                       "d \(d), position \(p), head \(h), lane \(i)")
                    }
                }
            }
        }
    }
}
