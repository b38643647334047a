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

    /// A bfloat16 cache keeps each key and value rounded to bfloat16 and attends over those values exactly as an fp32
    /// cache holding the rounded values does (the d = 64 kernel and the general loop); `transfer` hands the values
    /// back and restores them, and `copy` duplicates a sequence.
    func testBFloat16CacheAttendsOverTheRoundedValues() {
        var random = SeededRandom(seed: 5)
        for d in [64, 24] {
            let heads = 2, context = 20
            let capacity = CachedAttention.Cache.capacity(pattern: .dense, contextLength: context)
            let count = 2 * heads * capacity * d
            let halfKeys = Tensor(shape: [count / 2]), halfValues = Tensor(shape: [count / 2])
            let keys = Tensor(shape: [count]), values = Tensor(shape: [count])
            let half = CachedAttention.Cache(keys: halfKeys.pointer, values: halfValues.pointer, precision: .bfloat16, heads: heads,
                                             headWidth: d, pattern: .dense, contextLength: context)
            let full = CachedAttention.Cache(keys: keys.pointer, values: values.pointer, heads: heads, headWidth: d,
                                             pattern: .dense, contextLength: context)
            var stored: [Float] = []
            for p in 0..<context {
                let k = Tensor.normal(shape: [heads * d], using: &random), v = Tensor.normal(shape: [heads * d], using: &random)
                half.store(key: k.pointer, value: v.pointer, sequence: 0, position: p)
                let (kr, vr) = (Tensor(shape: [heads * d], values: k.scalars.map { BFloat16($0).float }),
                                Tensor(shape: [heads * d], values: v.scalars.map { BFloat16($0).float }))
                XCTAssertNotEqual(kr.scalars, k.scalars, "rounded")
                full.store(key: kr.pointer, value: vr.pointer, sequence: 0, position: p)
                stored += kr.scalars
            }
            half.copy(sequence: 0, to: 1, length: context)
            full.copy(sequence: 0, to: 1, length: context)
            let positions = [0, 6, 7, 8, 19], rows = positions.count * 2
            let queries = Tensor.normal(shape: [rows, heads * d], using: &random)
            let fromHalf = Tensor(shape: [rows, heads * d]), fromFull = Tensor(shape: [rows, heads * d])
            let rowSequences = (0..<rows).map { $0 % 2 }, rowPositions = (0..<rows).map { positions[$0 / 2] }
            CachedAttention.attend(queries: queries.pointer, queryStride: heads * d, cache: half, sequences: rowSequences,
                                   positions: rowPositions, into: fromHalf.pointer)
            CachedAttention.attend(queries: queries.pointer, queryStride: heads * d, cache: full, sequences: rowSequences,
                                   positions: rowPositions, into: fromFull.pointer)
            XCTAssertEqual(fromHalf.scalars, fromFull.scalars, "d \(d)")
            // Out and back in: the same values.
            let outKeys = Tensor(shape: [heads * context * d]), outValues = Tensor(shape: [heads * context * d])
            half.transfer(sequence: 1, count: context, keys: outKeys.pointer, values: outValues.pointer, positions: context, restoring: false)
            for h in 0..<heads {
                for p in 0..<context {
                    XCTAssertEqual(Array(outKeys.scalars[((h * context + p) * d)..<((h * context + p + 1) * d)]),
                                   Array(stored[(p * heads * d + h * d)..<(p * heads * d + (h + 1) * d)]), "d \(d), head \(h), position \(p)")
                }
            }
            half.transfer(sequence: 0, count: context, keys: outKeys.pointer, values: outValues.pointer, positions: context, restoring: true)
            let again = Tensor(shape: [rows, heads * d])
            CachedAttention.attend(queries: queries.pointer, queryStride: heads * d, cache: half, sequences: rowSequences,
                                   positions: rowPositions, into: again.pointer)
            XCTAssertEqual(again.scalars, fromHalf.scalars, "d \(d) restored")
        }
    }
}
