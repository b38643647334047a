import TensorCore
import XCTest

/// Every operation's backward against finite differences, including awkward sizes (widths that are not a multiple
/// of 16, a single position, a single head).
final class KernelGradientTests: XCTestCase {
    func testLinearWithBothWeightLayouts() {
        for (rows, inputs, outputs) in [(1, 3, 5), (7, 19, 33), (4, 16, 16)] {
            checkGradients([randomTensor([rows, inputs], seed: 1), randomTensor([inputs, outputs], seed: 2),
                            randomTensor([outputs], seed: 3)]) { t, v in t.linear(v[0], weight: v[1], bias: v[2]) }
            checkGradients([randomTensor([rows, inputs], seed: 4), randomTensor([outputs, inputs], seed: 5)]) { t, v in
                t.linear(v[0], weight: v[1], transposedWeight: true)
            }
        }
    }

    func testLayerNorm() {
        for (rows, width) in [(1, 5), (3, 37), (2, 64)] {
            checkGradients([randomTensor([rows, width], seed: 6), randomTensor([width], seed: 7), randomTensor([width], seed: 8)]) { t, v in
                t.layerNorm(v[0], weight: v[1], bias: v[2])
            }
        }
    }

    func testGELUBothForms() {
        for kind in [GELUApproximation.tanh, .none] {
            checkGradients([randomTensor([3, 21], seed: 9, std: 2)]) { t, v in t.gelu(v[0], approximation: kind) }
        }
    }

    func testSoftmax() {
        checkGradients([randomTensor([4, 19], seed: 10)]) { t, v in t.softmax(v[0]) }
    }

    func testAddScaleReshape() {
        checkGradients([randomTensor([5, 17], seed: 11), randomTensor([5, 17], seed: 12)]) { t, v in
            t.reshape(t.scale(t.add(v[0], v[1]), by: 0.5), [85])
        }
    }

    func testCrossEntropyWithIgnoredRows() {
        checkGradients([randomTensor([4, 23], seed: 13)], step: 1e-2) { t, v in
            t.crossEntropy(v[0], targets: [3, -1, 22, 0])
        }
    }

    func testEmbeddingWithRepeatedIds() {
        checkGradients([randomTensor([6, 9], seed: 14), randomTensor([5, 9], seed: 15)]) { t, v in
            t.embed(ids: [1, 1, 5, 0, 1, 2], batch: 2, tokens: v[0], positions: v[1], positionOffset: 1)
        }
    }

    func testGatherRows() {
        checkGradients([randomTensor([5, 7], seed: 16)]) { t, v in t.gatherRows(v[0], [4, 0, 4]) }
    }

    func testAttention() {
        // 300 rows span five causal row blocks (the last one partial).
        for (batch, length, heads, width) in [(1, 1, 1, 4), (2, 5, 2, 6), (1, 19, 3, 48), (2, 7, 1, 17), (1, 300, 2, 8)] {
            checkGradients([randomTensor([batch, length, 3 * width], seed: 17)], tolerance: 3e-2) { t, v in
                t.causalSelfAttention(v[0], heads: heads)
            }
        }
    }

    func testAttentionWithDropout() {
        // The same seed in every call gives the same mask, so finite differences apply.
        checkGradients([randomTensor([2, 9, 3 * 8], seed: 21)], tolerance: 3e-2) { t, v in
            var random = SeededRandom(seed: 5)
            return t.causalSelfAttention(v[0], heads: 2, dropout: 0.3, random: &random)
        }
        // Dropout changes the output; probability 0 does not.
        let x = Variable(randomTensor([1, 6, 12], seed: 22))
        var random = SeededRandom(seed: 1)
        let plain = Tape(recording: false).causalSelfAttention(x, heads: 1).value.scalars
        XCTAssertNotEqual(Tape(recording: false).causalSelfAttention(x, heads: 1, dropout: 0.5, random: &random).value.scalars, plain)
        XCTAssertEqual(Tape(recording: false).causalSelfAttention(x, heads: 1, dropout: 0, random: &random).value.scalars, plain)
    }

    func testGradientsAccumulateAcrossCalls() {
        let x = Variable(randomTensor([3, 4], seed: 18), requiresGrad: true)
        for _ in 0..<2 {
            let tape = Tape()
            tape.backward(from: tape.crossEntropy(x, targets: [0, 1, 2]))
        }
        let single = Variable(x.value, requiresGrad: true)
        let tape = Tape()
        tape.backward(from: tape.crossEntropy(single, targets: [0, 1, 2]))
        for i in 0..<12 { XCTAssertEqual(x.grad![flat: i], 2 * single.grad![flat: i], accuracy: 1e-6) }
    }
}
