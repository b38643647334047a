import GPTUtilities
import GradientChecking
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

    /// The fused layer with a low-rank adapter: its output is x·W + b + s·x_a·Aᵀ·Bᵀ computed plainly (with B spread
    /// block-diagonally over A's groups of rows when there are several), and its gradients (x feeding both paths, or
    /// a separate adapter input) match finite differences.
    func testLowRankLinear() {
        for (rows, inputs, outputs, rank, groups) in [(1, 3, 5, 1, 1), (7, 19, 33, 4, 3), (4, 16, 16, 8, 1), (3, 8, 12, 2, 3)] {
            let x = randomTensor([rows, inputs], seed: 1), w = randomTensor([inputs, outputs], seed: 2), b = randomTensor([outputs], seed: 3)
            let a = randomTensor([groups * rank, inputs], seed: 4), bb = randomTensor([outputs, rank], seed: 5)
            let xa = randomTensor([rows, inputs], seed: 6)
            let spread = Tensor(shape: [outputs, groups * rank]), width = outputs / groups
            for o in 0..<outputs {
                for j in 0..<rank { spread.pointer[o * groups * rank + (o / width) * rank + j] = bb.pointer[o * rank + j] }
            }
            let plain = Tape(recording: false)
            let expected = plain.add(plain.linear(Variable(x), weight: Variable(w), bias: Variable(b)),
                                     plain.scale(plain.linear(plain.linear(Variable(xa), weight: Variable(a), transposedWeight: true),
                                                              weight: Variable(spread), transposedWeight: true), by: 0.7))
            let fused = Tape(recording: false).lowRankLinear(Variable(x), weight: Variable(w), bias: Variable(b), adapterInput: Variable(xa),
                                                              a: Variable(a), b: Variable(bb), scale: 0.7)
            for (u, v) in zip(fused.value.scalars, expected.value.scalars) { XCTAssertEqual(u, v, accuracy: 1e-5) }
            checkGradients([x, w, b, a, bb]) { t, v in
                t.lowRankLinear(v[0], weight: v[1], bias: v[2], adapterInput: v[0], a: v[3], b: v[4], scale: 0.7)
            }
            checkGradients([x, xa, a, bb]) { t, v in
                t.lowRankLinear(v[0], weight: Variable(w), bias: nil, adapterInput: v[1], a: v[2], b: v[3], scale: 2)
            }
        }
    }

    /// A linear layer over a weight packed in each decoding format (a frozen base held in 32, 16 or 8 bits): its
    /// output is that of the layer over the weight rounded to the format, also under bf16 tape precision, and its
    /// input's gradient (through the widened weight, a group of blocks at a time), the bias's and, with a low-rank
    /// adapter, A's and B's match finite differences. Row counts on both sides of the streamed-rows limit, and widths
    /// that leave a partial block.
    func testLinearOverAPackedWeight() {
        for format in WeightFormat.allCases {
            for (rows, inputs, outputs) in [(1, 19, 33), (5, 40, 70), (MatrixVector.streamedRows + 3, 24, 40)] {
                let x = randomTensor([rows, inputs], seed: 1), w = randomTensor([inputs, outputs], seed: 2), b = randomTensor([outputs], seed: 3)
                let packed = MatrixVector.PackedMatrix(w.pointer, k: inputs, n: outputs, format: format)
                let rounded = w.copy()
                format.round(rounded.pointer, inputs: inputs, outputs: outputs, oneRowPerOutput: false)
                for precision in [ProductPrecision.float32, .bfloat16] {
                    let tape = Tape(recording: false, precision: precision)
                    let ours = tape.linear(Variable(x), packed: packed, bias: Variable(b)).value.scalars
                    let plain = Tape(recording: false).linear(Variable(x), weight: Variable(rounded), bias: Variable(b)).value.scalars
                    for (u, v) in zip(ours, plain) { XCTAssertEqual(u, v, accuracy: 1e-4 * max(1, abs(v)), "\(format) \(rows)×\(inputs)×\(outputs)") }
                }
                checkGradients([x, b]) { t, v in t.linear(v[0], packed: packed, bias: v[1]) }
                let a = randomTensor([2, inputs], seed: 4), bb = randomTensor([outputs, 2], seed: 5)
                checkGradients([x, a, bb]) { t, v in
                    t.lowRankLinear(v[0], packed: packed, bias: nil, adapterInput: v[0], a: v[1], b: v[2], scale: 0.5)
                }
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

    func testEmbeddingAtGivenPositions() {
        checkGradients([randomTensor([6, 9], seed: 14), randomTensor([5, 9], seed: 15)]) { t, v in
            t.embed(ids: [1, 1, 5, 0, 2], at: [0, 3, 1, 0, 4], tokens: v[0], positions: v[1])
        }
        // The same rows as the equal-length form gives them.
        let tape = Tape(recording: false)
        let tokens = Variable(randomTensor([6, 9], seed: 14)), positions = Variable(randomTensor([5, 9], seed: 15))
        let rows = tape.embed(ids: [1, 1, 5, 0, 1, 2], batch: 2, tokens: tokens, positions: positions, positionOffset: 1)
        let picked = tape.embed(ids: [1, 0, 2], at: [2, 1, 3], tokens: tokens, positions: positions)
        XCTAssertEqual(picked.value.scalars, tape.gatherRows(tape.reshape(rows, [6, 9]), [1, 3, 5]).value.scalars)
    }

    func testGatherRows() {
        checkGradients([randomTensor([5, 7], seed: 16)]) { t, v in t.gatherRows(v[0], [4, 0, 4]) }
    }

    func testScatterRowsIsTheInverseOfGatherRows() {
        checkGradients([randomTensor([3, 7], seed: 16)]) { t, v in t.scatterRows(v[0], [4, 0, 2], rowCount: 6) }
        let tape = Tape(recording: false)
        let x = Variable(randomTensor([3, 7], seed: 16))
        let scattered = tape.scatterRows(x, [4, 0, 2], rowCount: 6)
        XCTAssertEqual(tape.gatherRows(scattered, [4, 0, 2]).value.scalars, x.value.scalars)
        XCTAssertEqual(Array(scattered.value.scalars[7..<14]) + Array(scattered.value.scalars[21..<28]) + Array(scattered.value.scalars[35..<42]),
                       [Float](repeating: 0, count: 21), "rows no index names are zero")
    }

    func testAttention() {
        // 300 rows span five causal row blocks (the last one partial).
        for (batch, length, heads, width) in [(1, 1, 1, 4), (2, 5, 2, 6), (1, 19, 3, 48), (2, 7, 1, 17), (1, 300, 2, 8)] {
            for budget in [Tape.attentionProbabilityBudget, 0] {  // probabilities kept, and recomputed in backward
                checkGradients([randomTensor([batch, length, 3 * width], seed: 17)], tolerance: 3e-2) { t, v in
                    var unused = SeededRandom(seed: 0)
                    return t.causalSelfAttention(v[0], heads: heads, dropout: 0, random: &unused, probabilityBudget: budget)
                }
            }
        }
    }

    func testSparseAttentionAgainstANaiveReferenceAndFiniteDifferences() {
        // Windows shorter and longer than the sequence, a sequence over two row blocks, one head; scale 1 (GPT-Neo);
        // strided keys alone (window 1), with a window equal to the stride (GPT-3) and with a wider window; fixed
        // blocks shorter than, equal to and longer than a row block, one summary, all summaries, a block of 1, a
        // block longer than backward's chunk of keys.
        let cases: [(batch: Int, length: Int, heads: Int, width: Int, pattern: AttentionPattern, scale: Float)] = [
            (1, 5, 1, 4, .local(window: 8), 1), (2, 9, 2, 8, .local(window: 3), 0.5), (1, 70, 2, 8, .local(window: 8), 1),
            (1, 6, 1, 4, .local(window: 1), 1), (1, 20, 2, 8, .strided(window: 1, stride: 4), 0.5),
            (1, 70, 2, 8, .strided(window: 8, stride: 8), 0.5), (2, 9, 1, 4, .strided(window: 3, stride: 2), 1),
            (1, 20, 2, 8, .fixed(block: 4, summaries: 1), 0.5), (2, 11, 1, 4, .fixed(block: 3, summaries: 3), 1),
            (1, 150, 2, 8, .fixed(block: 64, summaries: 8), 0.5), (1, 90, 1, 4, .fixed(block: 70, summaries: 5), 1),
            (1, 7, 1, 4, .fixed(block: 1, summaries: 1), 1), (1, 3, 1, 4, .fixed(block: 8, summaries: 2), 1),
            // Rows whose band starts beyond backward's first chunk of keys of their tile.
            (1, 330, 1, 4, .fixed(block: 300, summaries: 4), 1),
        ]
        for c in cases {
            let qkv = randomTensor([c.batch, c.length, 3 * c.width], seed: 23)
            var unused = SeededRandom(seed: 0)
            let value = Tape(recording: false).causalSelfAttention(Variable(qkv), heads: c.heads, dropout: 0, random: &unused,
                                                                   pattern: c.pattern, scale: c.scale).value.scalars
            let d = c.width / c.heads
            for b in 0..<c.batch {
                for h in 0..<c.heads {
                    for i in 0..<c.length {
                        func at(_ t: Int, _ part: Int, _ k: Int) -> Float { qkv.scalars[(b * c.length + t) * 3 * c.width + part * c.width + h * d + k] }
                        let keys = (0...i).filter { j in naiveMask(c.pattern, query: i, key: j) }
                        let scores = keys.map { j in Double((0..<d).reduce(0) { $0 + at(i, 0, $1) * at(j, 1, $1) } * c.scale) }
                        let m = scores.max()!, exps = scores.map { Foundation.exp($0 - m) }, total = exps.reduce(0, +)
                        for k in 0..<d {
                            let expected = zip(keys, exps).reduce(0.0) { $0 + $1.1 / total * Double(at($1.0, 2, k)) }
                            XCTAssertEqual(Double(value[(b * c.length + i) * c.width + h * d + k]), expected, accuracy: 1e-5, "\(c)")
                        }
                    }
                }
            }
            for budget in [Tape.attentionProbabilityBudget, 0] {
                checkGradients([qkv], tolerance: 3e-2) { t, v in
                    var random = SeededRandom(seed: 0)
                    return t.causalSelfAttention(v[0], heads: c.heads, dropout: 0, random: &random, pattern: c.pattern, scale: c.scale,
                                                 probabilityBudget: budget)
                }
            }
        }
        // Dropout reaches the keys before the band too (the same seed gives the same mask, so finite differences apply).
        // A fixed block of 64 puts each row block in one block, whose rows share their summaries (products over
        // the gathered keys); a block of 4 does not.
        for pattern in [AttentionPattern.strided(window: 2, stride: 3), .fixed(block: 4, summaries: 2), .fixed(block: 64, summaries: 5)] {
            for budget in [Tape.attentionProbabilityBudget, 0] {
                checkGradients([randomTensor([1, 150, 3 * 8], seed: 24)], tolerance: 3e-2) { t, v in
                    var random = SeededRandom(seed: 5)
                    return t.causalSelfAttention(v[0], heads: 2, dropout: 0.3, random: &random, pattern: pattern, probabilityBudget: budget)
                }
            }
        }
    }

    func testSparseAttentionGradientsMatchADenseMaskedReference() {
        // The reference: Q·Kᵀ·scale plus −1e9 where the pattern masks, row softmax, times V, through the tape's own
        // products (a dense T×T computation). Gradients of q, k and v must agree to 1e-5.
        let length = 150, d = 8, scale: Float = 0.5
        let patterns: [AttentionPattern] = [.dense, .local(window: 5), .strided(window: 1, stride: 4), .strided(window: 8, stride: 8),
                                            .fixed(block: 4, summaries: 1), .fixed(block: 64, summaries: 8)]
        let qkv = randomTensor([1, length, 3 * d], seed: 29), seed = randomTensor([1, length, d], seed: 30)
        for pattern in patterns {
            let parts = (0..<3).map { part in
                Variable(Tensor(shape: [length, d], values: (0..<(length * d)).map { qkv.scalars[($0 / d) * 3 * d + part * d + $0 % d] }),
                         requiresGrad: true)
            }
            let mask = Tensor(shape: [length, length], values: (0..<(length * length)).map { n in
                let (i, j) = (n / length, n % length)
                return j <= i && naiveMask(pattern, query: i, key: j) ? 0 : -1e9
            })
            let reference = Tape()
            let scores = reference.add(reference.scale(reference.linear(parts[0], weight: parts[1], transposedWeight: true), by: scale),
                                       Variable(mask))
            let y = reference.linear(reference.softmax(scores), weight: parts[2])
            reference.backward(from: y, seed: Tensor(shape: [length, d], values: seed.scalars))
            for budget in [Tape.attentionProbabilityBudget, 0] {
                let tape = Tape(), input = Variable(qkv, requiresGrad: true)
                var unused = SeededRandom(seed: 0)
                let out = tape.causalSelfAttention(input, heads: 1, dropout: 0, random: &unused, pattern: pattern, scale: scale,
                                                   probabilityBudget: budget)
                for (a, b) in zip(out.value.scalars, y.value.scalars) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(pattern)") }
                tape.backward(from: out, seed: seed)
                let gradient = input.grad!.scalars
                for part in 0..<3 {
                    let expected = parts[part].grad!.scalars
                    for n in 0..<(length * d) {
                        XCTAssertEqual(gradient[(n / d) * 3 * d + part * d + n % d], expected[n], accuracy: 1e-5, "\(pattern) part \(part)")
                    }
                }
            }
        }
    }

    /// Whether query i sees key j ≤ i, straight from each pattern's definition.
    private func naiveMask(_ pattern: AttentionPattern, query i: Int, key j: Int) -> Bool {
        switch pattern {
        case .dense: true
        case .local(let window): i - j < window
        case .strided(let window, let stride): i - j < window || (i - j) % stride == 0
        case .fixed(let block, let summaries): i / block == j / block || j % block >= block - summaries
        }
    }

    func testAttentionGradientsOverManyRowBlocksAndWithPadding() {
        // Dense over five row blocks with dropout, and rows with fewer real keys than positions, against finite
        // differences (the backward pass recomputes probabilities and masks block by block).
        for budget in [Tape.attentionProbabilityBudget, 0] {
            checkGradients([randomTensor([1, 300, 3 * 8], seed: 25)], tolerance: 3e-2) { t, v in
                var random = SeededRandom(seed: 6)
                return t.causalSelfAttention(v[0], heads: 2, dropout: 0.2, random: &random, probabilityBudget: budget)
            }
            for pattern in [AttentionPattern.dense, .local(window: 3), .fixed(block: 4, summaries: 1)] {
                checkGradients([randomTensor([2, 9, 3 * 4], seed: 26)], tolerance: 3e-2) { t, v in
                    var random = SeededRandom(seed: 0)
                    return t.causalSelfAttention(v[0], heads: 1, dropout: 0, random: &random, keyLengths: [9, 5], pattern: pattern,
                                                 probabilityBudget: budget)
                }
            }
        }
    }

    func testRecomputedProbabilitiesGiveTheKeptOnesResultsInLessMemory() {
        // Dense over six row blocks with dropout, and local + strided: outputs and gradients agree to rounding,
        // and recomputing holds less than the kept triangle. The pool is emptied before each measurement, so the
        // buffers earlier tests left in it do not change the sizes held.
        for pattern in [AttentionPattern.dense, .strided(window: 8, stride: 8)] {
            let qkv = randomTensor([2, 380, 3 * 16], seed: 27), seed = randomTensor([2, 380, 16], seed: 28)
            var results: [(output: [Float], gradient: [Float], bytes: Int)] = []
            for budget in [Tape.attentionProbabilityBudget, 0] {
                TensorMemory.releasePooledBuffers()
                let before = TensorMemory.liveBytes
                TensorMemory.resetPeak()
                let tape = Tape(), input = Variable(qkv, requiresGrad: true)
                var random = SeededRandom(seed: 3)
                let y = tape.causalSelfAttention(input, heads: 2, dropout: 0.1, random: &random, pattern: pattern, probabilityBudget: budget)
                tape.backward(from: y, seed: seed)
                results.append((y.value.scalars, input.grad!.scalars, TensorMemory.peakBytes - before))
            }
            for (a, b) in zip(results[0].output, results[1].output) { XCTAssertEqual(a, b, accuracy: 1e-5) }
            for (a, b) in zip(results[0].gradient, results[1].gradient) { XCTAssertEqual(a, b, accuracy: 1e-4) }
            XCTAssertLessThan(results[1].bytes, results[0].bytes, "\(pattern)")
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

/// Attention over right-padded rows: the padding never reaches a real position, and padding positions see only
/// their row's real keys (as Hugging Face's attention mask).
final class PaddedAttentionTests: XCTestCase {
    func testKeyLengthsMaskPaddingKeys() {
        let (batch, length, heads, width) = (2, 6, 2, 8)
        let qkv = randomTensor([batch, length, 3 * width], seed: 40)
        var random = SeededRandom(seed: 0)
        let masked = Tape(recording: false).causalSelfAttention(Variable(qkv), heads: heads, dropout: 0, random: &random,
                                                                 keyLengths: [4, 6]).value
        let d = width / heads
        for b in 0..<batch {
            let limit = [4, 6][b]
            for h in 0..<heads {
                for i in 0..<length {
                    // Reference: plain softmax over the keys j ≤ i and j < limit.
                    let visible = 0..<min(i + 1, limit)
                    func at(_ t: Int, _ part: Int, _ c: Int) -> Double {
                        Double(qkv[flat: (b * length + t) * 3 * width + part * width + h * d + c])
                    }
                    let scores = visible.map { j in (0..<d).reduce(0.0) { $0 + at(i, 0, $1) * at(j, 1, $1) } / Double(d).squareRoot() }
                    let m = scores.max()!, e = scores.map { exp($0 - m) }, z = e.reduce(0, +)
                    for c in 0..<d {
                        let expected = zip(visible, e).reduce(0.0) { $0 + $1.1 / z * at($1.0, 2, c) }
                        XCTAssertEqual(Double(masked[flat: (b * length + i) * width + h * d + c]), expected, accuracy: 1e-5)
                    }
                }
            }
        }
        checkGradients([randomTensor([2, 9, 3 * 8], seed: 41)], tolerance: 3e-2) { t, v in
            var random = SeededRandom(seed: 0)
            return t.causalSelfAttention(v[0], heads: 2, dropout: 0, random: &random, keyLengths: [3, 9])
        }
    }
}
