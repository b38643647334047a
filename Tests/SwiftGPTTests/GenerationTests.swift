import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest

final class GenerationTests: XCTestCase {
    func randomIDs(_ count: Int, vocabulary: Int, seed: UInt64) -> [Int32] {
        var random = SeededRandom(seed: seed)
        return (0..<count).map { _ in Int32(random.nextInt(below: vocabulary)) }
    }

    func testCachedLogitsEqualFullForwardForBothLayouts() throws {
        var wide = tinyConfig()  // head width 64: the specialised attention kernel
        wide.embeddingWidth = 128
        wide.mlpWidth = 512
        var local = tinyConfig()  // GPT-3's layout: dense and local layers with GPT-2's conventions
        local.attentionPatterns = [.local(window: 4), .dense]
        var strided = tinyConfig()  // Sparse Transformer's strided pattern, and local + strided
        strided.attentionPatterns = [.strided(window: 1, stride: 4), .strided(window: 2, stride: 3)]
        var wideStrided = wide
        wideStrided.attentionPatterns = [.strided(window: 3, stride: 3), .local(window: 2)]
        var fixed = tinyConfig()  // Sparse Transformer's fixed pattern: its cache keeps a ring and the summaries
        fixed.attentionPatterns = [.fixed(block: 3, summaries: 1), .fixed(block: 2, summaries: 2)]
        var wideFixed = wide
        wideFixed.attentionPatterns = [.fixed(block: 4, summaries: 2), .dense]
        for config in [tinyConfig(), tinyConfig(layout: .postNorm), tinyConfig(positions: .sinusoidal, tied: false), wide,
                       tinyNeoConfig(), local, strided, wideStrided, fixed, wideFixed] + tinyFamilyConfigs() {
            let model = try GPTModel(config: config, seed: 9)
            let ids = randomIDs(12, vocabulary: config.vocabularySize, seed: 4)
            try assertDecodingMatches(model, ids: ids, prompt: 5, full: logits(model, ids, batch: 1), "\(config.layout)")
        }
    }

    /// Feeds `ids` to a decoding session, the first `prompt` of them in one pass and then one a pass, and checks the
    /// logits after each token from the prompt's last on against `full`, the whole sequence's in one training pass.
    private func assertDecodingMatches(_ model: GPTModel, weights: DecodeWeights? = nil, ids: [Int32], prompt: Int, full: Tensor,
                                       _ message: String) throws {
        let session = InferenceSession(model: model, sequences: 1, weights: weights)
        var cached = try session.feed([(0, Array(ids[0..<prompt]))]).scalars
        for t in prompt..<ids.count { cached += try session.feed([(0, [ids[t]])]).scalars }
        let expected = Array(full.scalars[((prompt - 1) * model.config.vocabularySize)...])
        XCTAssertEqual(cached.count, expected.count, message)
        for (a, b) in zip(cached, expected) { XCTAssertEqual(a, b, accuracy: 1e-4, message) }
    }

    func testSixteenEightAndFourBitDecodingComputesWithTheRoundedModel() throws {
        var config = tinyConfig()  // head width 64, and an untied output layer in the second model
        config.embeddingWidth = 128
        config.mlpWidth = 512
        for base in [config, tinyConfig(layout: .postNorm, tied: false)] {
            let ids = randomIDs(12, vocabulary: base.vocabularySize, seed: 6)
            let exact = logits(try GPTModel(config: base, seed: 9), ids, batch: 1)
            for format in [WeightFormat.bfloat16, .int8, .int4] {
                let model = try GPTModel(config: base, seed: 9)
                let weights = DecodeWeights(model: model, format: format)  // rounds the model's matrices
                let full = logits(model, ids, batch: 1)
                XCTAssertGreaterThan(zip(full.scalars, exact.scalars).map { abs($0 - $1) }.max()!, 1e-4, "\(format) rounds the weights")
                guard format == .int4 else {
                    try assertDecodingMatches(model, weights: weights, ids: ids, prompt: 10, full: full, "\(format), \(base.layout)")
                    continue
                }
                // 4-bit products also round their input to 8 bits: one token at a time (integer dot products) gives
                // what the whole sequence in one pass gives (floats), and both stay near the rounded model's logits.
                let pass = try InferenceSession(model: model, sequences: 1, weights: weights).feed([(0, ids)], everyToken: true)
                try assertDecodingMatches(model, weights: weights, ids: ids, prompt: 10, full: pass, "\(format), \(base.layout)")
                let error = zip(pass.scalars, full.scalars).map { abs($0 - $1) }.max()!
                XCTAssertGreaterThan(error, 1e-4, "int4 rounds its inputs")
                XCTAssertLessThan(error, 2e-2, "int4, \(base.layout)")
            }
        }
    }

    func testModelsLoadedForDecodingHoldOneCopyAndDecodeAsFullModels() throws {
        let folder = try temporaryDirectory(self)
        var gpt2 = tinyConfig()
        gpt2.embeddingWidth = 64
        gpt2.mlpWidth = 256
        for (index, base) in ([gpt2] + tinyFamilyConfigs()).enumerated() {
            var config = base
            config.contextLength = 96
            let directory = folder.appendingPathComponent("model\(index)")
            try HuggingFaceCheckpoint.save(try GPTModel(config: config, seed: 5), to: directory)
            // 70 prompt tokens go through the BLAS, the next ones through the streaming kernels.
            let ids = randomIDs(73, vocabulary: config.vocabularySize, seed: 7)
            for format in WeightFormat.allCases {
                let full = try HuggingFaceCheckpoint.load(from: directory)
                let expectedSession = InferenceSession(model: full, sequences: 1, weights: DecodeWeights(model: full, format: format))
                let (model, weights) = try HuggingFaceCheckpoint.loadForDecoding(from: directory, format: format)
                XCTAssertTrue(model.isDecodingOnly)
                let session = InferenceSession(model: model, sequences: 1, weights: weights)
                var expected = try expectedSession.feed([(0, Array(ids[0..<70]))], everyToken: true).scalars
                var decoded = try session.feed([(0, Array(ids[0..<70]))], everyToken: true).scalars
                for t in 70..<ids.count {
                    expected += try expectedSession.feed([(0, [ids[t]])]).scalars
                    decoded += try session.feed([(0, [ids[t]])]).scalars
                }
                XCTAssertEqual(decoded.count, expected.count)
                // int8 scales computed from the rounded fp32 weights may differ from the file's in the last bit.
                for (a, b) in zip(decoded, expected) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(config.layout) \(format)") }
            }
        }
        // The model's own memory for the matrices is never touched: an 8-bit model takes about a quarter of fp32's.
        let large = GPTConfig(vocabularySize: 8192, contextLength: 16, layerCount: 4, headCount: 8, embeddingWidth: 512)
        let directory = folder.appendingPathComponent("large")
        try HuggingFaceCheckpoint.save(try GPTModel(config: large, seed: 1), to: directory)
        let fp32Bytes = (8192 * 512 + 4 * 12 * 512 * 512) * 4
        TensorMemory.releasePooledBuffers()
        guard let before = residentBytes() else { return }
        let (model, weights) = try HuggingFaceCheckpoint.loadForDecoding(from: directory, format: .int8)
        let grown = residentBytes()! - before
        XCTAssertLessThan(grown, fp32Bytes * 4 / 10, "resident growth \(grown) bytes for \(fp32Bytes) bytes of fp32 weights")
        XCTAssertLessThan(weights.bytes, fp32Bytes * 3 / 10)
        withExtendedLifetime(model) {}
    }

    func testCopiedSequencesContinueAsTheirSourceWithBoundedCaches() throws {
        // Local and fixed layers keep rings (and summaries) that wrap here; a copy must carry all of them.
        XCTAssertEqual(CachedAttention.Cache.capacity(pattern: .fixed(block: 128, summaries: 8), contextLength: 8192), 256 + 64 * 8)
        XCTAssertEqual(CachedAttention.Cache.capacity(pattern: .local(window: 256), contextLength: 2048), 512)
        XCTAssertEqual(CachedAttention.Cache.capacity(pattern: .strided(window: 128, stride: 128), contextLength: 2048), 2048)
        var config = tinyConfig()
        config.contextLength = 40
        for patterns: [AttentionPattern] in [[.fixed(block: 4, summaries: 1), .local(window: 3)], [.dense, .fixed(block: 5, summaries: 2)]] {
            config.attentionPatterns = patterns
            let model = try GPTModel(config: config, seed: 3)
            let ids = randomIDs(30, vocabulary: config.vocabularySize, seed: 5)
            let full = logits(model, ids, batch: 1), v = config.vocabularySize
            let session = InferenceSession(model: model, sequences: 2)
            _ = try session.feed([(0, Array(ids[0..<21]))])
            session.copy(sequence: 0, to: 1)
            for t in 21..<ids.count {
                let both = try session.feed([(0, [ids[t]]), (1, [ids[t]])]).scalars
                for (k, expected) in full.scalars[(t * v)..<((t + 1) * v)].enumerated() {
                    XCTAssertEqual(both[k], expected, accuracy: 1e-4, "\(patterns)")
                    XCTAssertEqual(both[v + k], expected, accuracy: 1e-4, "\(patterns)")
                }
            }
        }
    }

    func testRaggedBatchEqualsOneSequenceAtATime() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 2)
        let a = randomIDs(7, vocabulary: 23, seed: 1), b = randomIDs(3, vocabulary: 23, seed: 2)
        let together = InferenceSession(model: model, sequences: 2)
        let first = try together.feed([(0, a), (1, b)]).scalars
        let second = try together.feed([(1, [5]), (0, [6])]).scalars
        let alone = InferenceSession(model: model, sequences: 1)
        let expectedB = try alone.feed([(0, b)]).scalars, expectedB2 = try alone.feed([(0, [5])]).scalars
        alone.reset(sequence: 0)
        let expectedA = try alone.feed([(0, a)]).scalars, expectedA2 = try alone.feed([(0, [6])]).scalars
        for (x, y) in zip(first, expectedA + expectedB) { XCTAssertEqual(x, y, accuracy: 1e-5) }
        for (x, y) in zip(second, expectedB2 + expectedA2) { XCTAssertEqual(x, y, accuracy: 1e-5) }
    }

    /// A model of 2 layers, width 64 (2 heads of 32) and context 1,024, for the key/value cache's memory.
    private func longContextModel() throws -> GPTModel {
        var config = tinyConfig()
        config.contextLength = 1024
        config.embeddingWidth = 64
        return try GPTModel(config: config, seed: 4)
    }

    /// The key/value cache takes memory as sequences grow, and gives it back when a sequence is released: a session of
    /// 32 slots at full context holds little until used; a slot filled to its context holds one slot's worth.
    func testCacheMemoryFollowsTheSequencesAndIsGivenBack() throws {
        let model = try longContextModel(), config = model.config
        let ids = randomIDs(9, vocabulary: config.vocabularySize, seed: 6)
        let long = randomIDs(1000, vocabulary: config.vocabularySize, seed: 7)
        let expected = try InferenceSession(model: model, sequences: 1).feed([(0, ids)]).scalars
        // One slot: 2 heads × 1024 positions × 32 floats, keys and values, 2 layers: 1 MiB; 32 slots: 32 MiB.
        let slotBytes = 2 * 1024 * 32 * 4 * 2 * 2
        TensorMemory.releasePooledBuffers()
        let before = residentBytes()
        let session = InferenceSession(model: model, sequences: 32)
        XCTAssertEqual(try session.feed([(31, ids)]).scalars, expected)
        // (The passes' activations go back to the system before each reading.)
        TensorMemory.releasePooledBuffers()
        let afterShort = residentBytes()
        for slot in 0..<8 { _ = try session.feed([(slot, long)]) }
        TensorMemory.releasePooledBuffers()
        let afterLong = residentBytes()
        for slot in 0..<8 { session.release(sequence: slot) }
        TensorMemory.releasePooledBuffers()
        let afterRelease = residentBytes()
        if let before, let afterShort, let afterLong, let afterRelease {
            XCTAssertLessThan(afterShort - before, 4 * slotBytes, "32 slots, one with 9 tokens, hold little")
            XCTAssertGreaterThan(afterLong - afterShort, 8 * slotBytes * 8 / 10, "8 slots of 1,000 tokens are resident")
            XCTAssertGreaterThan(afterLong - afterRelease, 8 * slotBytes * 8 / 10, "released slots give their memory back")
        }
        XCTAssertEqual(session.lengths[0], 0)
        XCTAssertEqual(try session.feed([(0, ids)]).scalars, expected, "a released slot decodes as a new one")
        XCTAssertEqual(try session.feed([(31, [ids[0]])]).scalars.count, config.vocabularySize, "the other slots keep their sequences")
    }

    /// A bfloat16 cache decodes near an fp32 one (the same greedy tokens here, logits within the rounding) and its
    /// sequences take half the memory.
    func testBFloat16CacheDecodesNearFP32InHalfTheMemory() throws {
        let model = try longContextModel(), config = model.config
        let prompt = randomIDs(100, vocabulary: config.vocabularySize, seed: 8)
        let full = InferenceSession(model: model, sequences: 1), half = InferenceSession(model: model, sequences: 1, cachePrecision: .bfloat16)
        var a = try full.feed([(0, prompt)], everyToken: true).scalars, b = try half.feed([(0, prompt)], everyToken: true).scalars
        var next = Int32(0)
        for _ in 0..<20 {
            let (x, y) = (try full.feed([(0, [next])]).scalars, try half.feed([(0, [next])]).scalars)
            XCTAssertEqual(x.indices.max { x[$0] < x[$1] }, y.indices.max { y[$0] < y[$1] }, "greedy token")
            next = Int32(x.indices.max { x[$0] < x[$1] }!)
            a += x
            b += y
        }
        let error = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(error, 0, "the keys and values are rounded")
        XCTAssertLessThan(error, 1e-2)
        // 8 slots of 1,000 tokens: 2 heads × 32 floats, keys and values, 2 layers, in 2 bytes each.
        let long = randomIDs(1000, vocabulary: config.vocabularySize, seed: 7), bytes = 8 * 1000 * 2 * 32 * 2 * 2 * 2
        TensorMemory.releasePooledBuffers()
        guard let before = residentBytes() else { return }
        let session = InferenceSession(model: model, sequences: 8, cachePrecision: .bfloat16)
        for slot in 0..<8 { _ = try session.feed([(slot, long)]) }
        TensorMemory.releasePooledBuffers()
        let grown = residentBytes()! - before
        XCTAssertGreaterThan(grown, bytes * 8 / 10)
        XCTAssertLessThan(grown, bytes * 14 / 10, "about half of an fp32 cache's \(2 * bytes) bytes")
    }

    /// A row as a product with 4-bit weights reads it: each group of 32 inputs as codes x / s rounded to nearest (ties
    /// away from zero), s = max |x| / 127 over the group, times s.
    private func roundedForInt4(_ x: UnsafePointer<Float>, count: Int) -> [Float] {
        stride(from: 0, to: count, by: 32).flatMap { first -> [Float] in
            let group = (first..<min(count, first + 32)).map { x[$0] }
            let scale = group.map(abs).max()! / 127
            return group.map { scale == 0 ? 0 : max(-127, min(127, ($0 / scale).rounded(.toNearestOrAwayFromZero))) * scale }
        }
    }

    func testMatrixVectorKernelsMatchAReference() {
        var random = SeededRandom(seed: 8)
        // Every format against a double-precision product with the weights the format holds (rounded copies), and
        // 4-bit products with their input rounded to 8 bits as well (one row by integer dot products, more as floats),
        // or as it is when asked (`exactInput`).
        for format in WeightFormat.allCases {
            // Up to 64 rows the streaming kernels, more through the BLAS (the last case widens two groups of blocks).
            for (rows, k, n) in [(1, 37, 53), (2, 64, 64), (3, 64, 100), (8, 19, 16), (5, 128, 129), (7, 8, 200), (13, 300, 70),
                                 (2, 257, 33), (1, 300, 70), (1, 1, 40), (64, 40, 70), (65, 40, 70), (66, 2100, 1030)] {
                let x = Tensor.normal(shape: [rows, k], using: &random), w = Tensor.normal(shape: [k, n], using: &random)
                let bias = Tensor.normal(shape: [n], using: &random), wt = Tensor.normal(shape: [n, k], using: &random)
                let y = Tensor(shape: [rows, n]), yt = Tensor(shape: [rows, n])
                MatrixVector.multiply(x.pointer, rows: rows, MatrixVector.PackedMatrix(w.pointer, k: k, n: n, format: format),
                                      bias: bias.pointer, into: y.pointer)
                MatrixVector.multiply(x.pointer, rows: rows, MatrixVector.PackedMatrix(transposing: wt.pointer, n: n, k: k, format: format),
                                      bias: nil, into: yt.pointer)
                let exact = Tensor(shape: [rows, n])
                MatrixVector.multiply(x.pointer, rows: rows, MatrixVector.PackedMatrix(w.pointer, k: k, n: n, format: format),
                                      bias: bias.pointer, into: exact.pointer, exactInput: true)
                let input = format == .int4 ? (0..<rows).flatMap { roundedForInt4(x.pointer + $0 * k, count: k) } : x.scalars
                if format == .int4 && rows == 1 {
                    // The portable integer product (CPUs without AVX2) gives exactly the same floats.
                    let portable = Tensor(shape: [n]), unbiased = Tensor(shape: [n])
                    let packed = MatrixVector.PackedMatrix(w.pointer, k: k, n: n, format: format)
                    MatrixVector.multiplyOneInt4RowPortably(x.pointer, packed, into: portable.pointer)
                    MatrixVector.multiply(x.pointer, rows: 1, packed, bias: nil, into: unbiased.pointer)
                    XCTAssertEqual(portable.scalars, unbiased.scalars, "int4 1×\(k)×\(n) portable")
                }
                format.round(w.pointer, inputs: k, outputs: n, oneRowPerOutput: false)
                format.round(wt.pointer, inputs: k, outputs: n, oneRowPerOutput: true)
                // A transposed matrix's columns are the rows it was packed from (a tied embedding's token rows).
                let packed = MatrixVector.PackedMatrix(transposing: wt.pointer, n: n, k: k, format: format), column = Tensor(shape: [k])
                for j in [0, n / 2, n - 1] {
                    packed.column(j, into: column.pointer)
                    XCTAssertEqual(column.scalars, Array(wt.scalars[(j * k)..<((j + 1) * k)]), "\(format) column \(j)")
                }
                for r in 0..<rows {
                    for j in 0..<n {
                        var s = Double(bias.pointer[j]), st = 0.0, se = Double(bias.pointer[j])
                        for i in 0..<k {
                            s += Double(input[r * k + i]) * Double(w.pointer[i * n + j])
                            st += Double(input[r * k + i]) * Double(wt.pointer[j * k + i])
                            se += Double(x.pointer[r * k + i]) * Double(w.pointer[i * n + j])
                        }
                        // fp32 sums of 2100 terms near 100 differ from double's by about 1e-4.
                        XCTAssertEqual(Double(y.pointer[r * n + j]), s, accuracy: 1e-4 * max(1, abs(s) / 10), "\(format) \(rows)×\(k)×\(n)")
                        XCTAssertEqual(Double(yt.pointer[r * n + j]), st, accuracy: 1e-4 * max(1, abs(st) / 10), "\(format) \(rows)×\(k)×\(n) transposed")
                        XCTAssertEqual(Double(exact.pointer[r * n + j]), se, accuracy: 1e-4 * max(1, abs(se) / 10), "\(format) \(rows)×\(k)×\(n) exact input")
                    }
                }
            }
        }
    }

    func testEightBitWeightsRoundTiesAwayFromZeroWhenPackedAndWhenRounded() {
        // A channel whose largest magnitude is 127 has scale 1, so these are the quotients themselves (a NaN, which
        // the largest magnitude passes over, is clamped to 127 by both).
        let values: [Float] = [127, 2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 0.49999997, -1.5, 3.4999998, -0.7, .nan]
        let expected: [Float] = [127, 3, -3, 1, -1, 127, -127, 0, -2, 3, -1, 127]
        let w = Tensor(shape: [1, values.count], values: values), column = Tensor(shape: [values.count])
        MatrixVector.PackedMatrix(transposing: w.pointer, n: 1, k: values.count, format: .int8).column(0, into: column.pointer)
        XCTAssertEqual(column.scalars, expected, "packed")
        WeightFormat.int8.round(w.pointer, inputs: values.count, outputs: 1, oneRowPerOutput: true)
        XCTAssertEqual(w.scalars, expected, "rounded")
    }

    func testWeightFormatsRoundPerOutputChannel() {
        var random = SeededRandom(seed: 12)
        let inputs = 50, outputs = 7
        let original = Tensor.normal(shape: [inputs, outputs], using: &random)
        original.pointer[3 * outputs + 2] = 0.3  // a channel of ties and zeros: channel 5 all zero
        for i in 0..<inputs { original.pointer[i * outputs + 5] = 0 }
        for oneRowPerOutput in [false, true] {
            let int8 = original.copy(), bf16 = original.copy()
            WeightFormat.int8.round(int8.pointer, inputs: inputs, outputs: outputs, oneRowPerOutput: oneRowPerOutput)
            WeightFormat.bfloat16.round(bf16.pointer, inputs: inputs, outputs: outputs, oneRowPerOutput: oneRowPerOutput)
            for i in 0..<(inputs * outputs) { XCTAssertEqual(bf16.pointer[i], BFloat16(original.pointer[i]).float) }
            for j in 0..<outputs {
                // Channel j: column j, or row j when the matrix holds one row per output.
                let index = { (i: Int) in oneRowPerOutput ? j * inputs + i : i * outputs + j }
                let largest = (0..<inputs).map { abs(original.pointer[index($0)]) }.max()!
                let scale = largest > 0 ? largest / 127 : 1
                var reachesTheLargest = largest == 0
                for i in 0..<inputs {
                    let value = original.pointer[index(i)], rounded = int8.pointer[index(i)]
                    let q = rounded / scale
                    XCTAssertEqual(q, q.rounded(), accuracy: 1e-3, "a multiple of the channel's scale")
                    XCTAssertLessThanOrEqual(abs(q), 127.001)
                    XCTAssertLessThanOrEqual(abs(rounded - value), scale / 2 * 1.0001)
                    if abs(value) == largest { reachesTheLargest = reachesTheLargest || abs(abs(q) - 127) < 1e-3 }
                }
                XCTAssertTrue(reachesTheLargest, "the largest weight of channel \(j) maps to ±127")
            }
        }
    }

    func testFourBitWeightsRoundPerGroupOfThirtyTwoInputs() {
        // Groups of 32 inputs of one output channel, the last group short (50 = 32 + 18), 19 channels (16 at a time,
        // then 3); a group of zeros; one whose extreme is negative with its opposite just below it; ties away from zero.
        var random = SeededRandom(seed: 13)
        let inputs = 50, outputs = 19
        let original = Tensor.normal(shape: [inputs, outputs], using: &random)
        for i in 0..<inputs { original.pointer[i * outputs + 5] = 0 }
        original.pointer[3 * outputs + 2] = -4
        original.pointer[4 * outputs + 2] = 3.999
        for oneRowPerOutput in [false, true] {
            // The same weights with one row per output when `oneRowPerOutput`.
            let w = oneRowPerOutput ? Tensor(shape: [outputs, inputs], values: (0..<(outputs * inputs)).map { original.pointer[($0 % inputs) * outputs + $0 / inputs] })
                                    : original.copy()
            let index = { (i: Int, j: Int) in oneRowPerOutput ? j * inputs + i : i * outputs + j }
            let rounded = w.copy()
            WeightFormat.int4.round(rounded.pointer, inputs: inputs, outputs: outputs, oneRowPerOutput: oneRowPerOutput)
            var error: Double = 0, errorOfLargestOverEight: Double = 0
            for j in 0..<outputs {
                for group in [0..<32, 32..<inputs] {
                    let values = group.map { w.pointer[index($0, j)] }, result = group.map { rounded.pointer[index($0, j)] }
                    XCTAssertEqual(result, Self.int4Rounded(values, scale: Self.int4ReferenceScale(values)), "channel \(j), inputs \(group)")
                    let extreme = values.max { abs($0) < abs($1) }!
                    let baseline = Self.int4Rounded(values, scale: BFloat16(extreme / -8).float)
                    func squaredError(_ r: [Float]) -> Double { zip(values, r).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) }
                    XCTAssertLessThanOrEqual(squaredError(result), squaredError(baseline), "never worse than largest / -8")
                    error += squaredError(result)
                    errorOfLargestOverEight += squaredError(baseline)
                }
            }
            XCTAssertLessThan(error, 0.95 * errorOfLargestOverEight, "the search finds better scales")
            XCTAssertEqual((0..<inputs).map { rounded.pointer[index($0, 5)] }, [Float](repeating: 0, count: inputs), "a group of zeros")
            // Packing gives the same values (the transposed packing reads one row per output).
            let packed = oneRowPerOutput ? MatrixVector.PackedMatrix(transposing: w.pointer, n: outputs, k: inputs, format: .int4)
                                         : MatrixVector.PackedMatrix(w.pointer, k: inputs, n: outputs, format: .int4)
            let column = Tensor(shape: [inputs])
            for j in 0..<outputs {
                packed.column(j, into: column.pointer)
                XCTAssertEqual(column.scalars, (0..<inputs).map { rounded.pointer[index($0, j)] }, "packed column \(j)")
            }
            // Rounding rounded weights, or packing them (as `DecodeWeights(model:format:)` does), changes nothing.
            let again = rounded.copy()
            WeightFormat.int4.round(again.pointer, inputs: inputs, outputs: outputs, oneRowPerOutput: oneRowPerOutput)
            XCTAssertEqual(again.scalars, rounded.scalars)
            let repacked = oneRowPerOutput ? MatrixVector.PackedMatrix(transposing: rounded.pointer, n: outputs, k: inputs, format: .int4)
                                           : MatrixVector.PackedMatrix(rounded.pointer, k: inputs, n: outputs, format: .int4)
            for j in 0..<outputs {
                repacked.column(j, into: column.pointer)
                XCTAssertEqual(column.scalars, (0..<inputs).map { rounded.pointer[index($0, j)] }, "repacked column \(j)")
            }
        }
        // Quotients at ties round away from zero; a NaN is clamped to +7, as 8-bit rounding clamps it (its group keeps
        // largest / -8: its errors are not finite).
        let values: [Float] = [-8, 2.5, -2.5, 0.5, -0.5, 6.5, -7.5, 0.49999997, .nan, 7.9]
        let expected: [Float] = [-8, 3, -3, 1, -1, 7, -8, 0, 7, 7]
        let w = Tensor(shape: [1, values.count], values: values), column = Tensor(shape: [values.count])
        MatrixVector.PackedMatrix(transposing: w.pointer, n: 1, k: values.count, format: .int4).column(0, into: column.pointer)
        XCTAssertEqual(column.scalars, expected, "packed")
        WeightFormat.int4.round(w.pointer, inputs: values.count, outputs: 1, oneRowPerOutput: true)
        XCTAssertEqual(w.scalars, expected, "rounded")
    }

    /// A 4-bit group's scale, one candidate at a time (what `WeightFormat.int4Scales` computes 16 groups at a time):
    /// of largest / -8, largest / d for d in -9, -8.75 … -7 and each one's least-squares refit, all in bfloat16, the
    /// first with the least squared error whose code for the largest is -7 or -8.
    static func int4ReferenceScale(_ values: [Float]) -> Float {
        let extreme = values.reduce(Float(0)) { abs($1) > abs($0) ? $1 : $0 }
        func code(_ x: Float, _ scale: Float) -> Float { int4Code(x, scale: scale) }
        func error(_ scale: Float) -> Float {
            var e: Float = 0
            for x in values { let d = x - code(x, scale) * scale; e += d * d }
            return e
        }
        func refit(_ scale: Float) -> Float {
            var xq: Float = 0, qq: Float = 0
            for x in values { let q = code(x, scale); xq += x * q; qq += q * q }
            return qq == 0 ? scale : xq / qq
        }
        var best = BFloat16(extreme / -8).float, least = error(best)
        for step in 0...8 {
            let candidate = BFloat16(extreme / (-9 + 0.25 * Float(step))).float
            for scale in [candidate, BFloat16(refit(candidate)).float] where error(scale) < least && code(extreme, scale) <= -7 {
                (best, least) = (scale, error(scale))
            }
        }
        return extreme == 0 ? 0 : best
    }

    /// Each value as its 4-bit code times `scale`.
    static func int4Rounded(_ values: [Float], scale: Float) -> [Float] { values.map { int4Code($0, scale: scale) * scale } }

    /// x / scale to the nearest integer, ties away from zero, clamped to -8…7 (a NaN to 7); 0 when the scale is 0.
    static func int4Code(_ x: Float, scale: Float) -> Float {
        guard scale != 0 else { return 0 }
        let q = x / scale
        return q.isNaN ? 7 : min(7, max(-8, q.rounded(.toNearestOrAwayFromZero)))
    }

    /// A GPT-2-vocabulary model small enough for tests, with the GPT-2 tokenizer.
    func gpt2Sized() throws -> Generator {
        var config = tinyConfig()
        config.vocabularySize = 50257
        config.contextLength = 64
        return Generator(model: try GPTModel(config: config, seed: 5), tokenizer: try TokenizerLoading.gpt2())
    }

    func testGreedyIsTheArgmaxLoopAndTopKOneIsGreedy() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 3)
        let generator = Generator(model: model, tokenizer: try CharacterTokenizer(characters: (0..<23).map { Unicode.Scalar(UInt8(97 + $0)) }))
        var options = SamplingOptions()
        options.temperature = 0
        options.maxNewTokens = 8
        let prompt: [Int32] = [1, 2, 3]
        let greedy = try generator.generate(prompts: [prompt], options: options)[0]
        var ids = prompt
        for _ in 0..<8 {
            let row = Array(logits(model, ids, batch: 1).scalars.suffix(23))
            ids.append(Int32(row.indices.max { row[$0] < row[$1] }!))
        }
        XCTAssertEqual(greedy.tokens, Array(ids.suffix(8)))
        XCTAssertEqual(greedy.finishReason, .length)
        options.temperature = 1
        options.topK = 1
        XCTAssertEqual(try generator.generate(prompts: [prompt], options: options)[0].tokens, greedy.tokens)
    }

    func testTopKAndTopPKeepOnlyTheirCandidates() throws {
        // Vocabulary of 5 with probabilities 0.5, 0.25, 0.15, 0.07, 0.03 (as logits).
        let probabilities: [Float] = [0.07, 0.5, 0.03, 0.25, 0.15]
        let logits = probabilities.map { Foundation.log($0) }
        func draws(_ configure: (inout SamplingOptions) -> Void) -> Set<Int32> {
            var options = SamplingOptions()
            configure(&options)
            var sampler = TokenSampler(options: options, stream: 0)
            return Set((0..<400).map { _ in logits.withUnsafeBufferPointer { sampler.next($0.baseAddress!, vocabulary: 5, context: [], generated: [:]) } })
        }
        XCTAssertEqual(draws { $0.topK = 2 }, [1, 3])
        XCTAssertEqual(draws { $0.topP = 0.7 }, [1, 3], "0.5 + 0.25 reaches 0.7")
        XCTAssertEqual(draws { $0.topP = 0.8 }, [1, 3, 4])
        XCTAssertEqual(draws { $0.topK = 3; $0.topP = 0.8 }, [1, 3], "0.75 of the top three's 0.9 reaches 0.8")
        XCTAssertEqual(draws { $0.minP = 0.2 }, [1, 3, 4], "at least 0.2 × 0.5")
        XCTAssertEqual(draws { _ in }, [0, 1, 2, 3, 4])
    }

    func testDrawsFollowTheSoftmaxAtTheTemperature() throws {
        // 37 tokens: two blocks of 16 and a tail of 5, with one token made impossible by a bias and one by -inf.
        var logits = (0..<37).map { Float(($0 * 7) % 11) / 3 - 1 }
        logits[20] = -.infinity
        var options = SamplingOptions()
        options.temperature = 0.7
        options.logitBias = [33: -1000]
        var sampler = TokenSampler(options: options, stream: 5)
        let draws = 60_000
        var counts = [Int](repeating: 0, count: 37)
        for _ in 0..<draws { counts[Int(logits.withUnsafeBufferPointer { sampler.next($0.baseAddress!, vocabulary: 37, context: [], generated: [:]) })] += 1 }
        var adjusted = logits.map { Double($0) / 0.7 }
        adjusted[33] = -.infinity
        let m = adjusted.max()!, z = adjusted.reduce(0) { $0 + Foundation.exp($1 - m) }
        for i in 0..<37 {
            let p = Foundation.exp(adjusted[i] - m) / z
            let tolerance = 5 * (p * (1 - p) / Double(draws)).squareRoot() + 1e-9
            XCTAssertEqual(Double(counts[i]) / Double(draws), p, accuracy: tolerance, "token \(i)")
        }
        XCTAssertEqual(counts[20], 0)
        XCTAssertEqual(counts[33], 0)
        XCTAssertEqual(argmax([1, 3, -2, 3, 0.5]), 1, "the first of equal maxima")
        XCTAssertEqual(argmax((0..<40).map { $0 == 37 ? 9 : Float($0 % 5) }), 37, "a maximum in the tail")
    }

    func testSeedsCompletionsAndContextLimits() throws {
        let generator = try gpt2Sized()
        var options = SamplingOptions()
        options.maxNewTokens = 10
        options.stopAtEndOfText = false
        options.seed = 42
        options.count = 3
        options.topP = 0.9
        options.minP = 0.01
        options.repetitionPenalty = 1.3
        options.frequencyPenalty = 0.5
        options.logprobs = 2
        let prompt = try generator.tokenizer.encode("Hello")
        let first = try generator.generate(prompts: [prompt], options: options)
        let again = try generator.generate(prompts: [prompt], options: options)
        XCTAssertEqual(first.map(\.tokens), again.map(\.tokens), "same seed, same completions")
        XCTAssertEqual(Set(first.map(\.tokens)).count, 3, "the n completions differ")
        XCTAssertEqual(first[0].logprobs?.count, 10)
        XCTAssertEqual(first[0].logprobs?[0].alternatives.count, 2)

        let long = [Int32](repeating: 15496, count: 70)
        assertThrows(GenerationError.self, .exceedsContext, try generator.generate(prompts: [long], options: options))
        options.truncateLeft = true
        options.count = 1
        let truncated = try generator.generate(prompts: [long], options: options)[0]
        XCTAssertEqual(truncated.promptTokens, 64 - options.maxNewTokens, "the cut leaves room for the tokens asked")
        XCTAssertEqual(truncated.finishReason, .length)
        XCTAssertEqual(truncated.tokens.count, options.maxNewTokens)
        options.maxNewTokens = 100
        XCTAssertEqual(try generator.generate(prompts: [long], options: options)[0].promptTokens, 1, "at least one prompt token is kept")

        options.truncateLeft = false
        options.slidingWindow = true
        options.maxNewTokens = 30
        let sliding = try generator.generate(prompts: [Array(long.prefix(60))], options: options)[0]
        XCTAssertEqual(sliding.tokens.count, 30, "a sliding window goes past the context")

        options.topP = 1.5
        XCTAssertThrowsError(try generator.generate(prompts: [prompt], options: options))
        options.topP = 1
        options.temperature = -1
        XCTAssertThrowsError(try generator.generate(prompts: [prompt], options: options))
    }

    func testStopSequencesAcrossTokensAndStreamingDeltas() throws {
        let generator = try gpt2Sized()
        var options = SamplingOptions()
        options.maxNewTokens = 40
        options.stopAtEndOfText = false
        options.seed = 7
        let prompt = try generator.tokenizer.encode("Once")
        let free = try generator.generate(prompts: [prompt], options: options)[0]
        // Choose a stop string that straddles the boundary of the 3rd and 4th generated tokens.
        let bytes = try generator.tokenizer.decodeBytes(Array(free.tokens[0..<4]))
        let third = try generator.tokenizer.decodeBytes(Array(free.tokens[0..<3])).count
        let stopBytes = Array(bytes[(third - 1)...(third)])
        guard let stop = String(validating: stopBytes, as: UTF8.self) else { throw XCTSkip("boundary bytes are not text") }
        options.stop = [stop]
        var deltas: [String] = []
        let stopped = try generator.generate(prompts: [prompt], options: options) { event in
            if case .text(_, _, let delta) = event { deltas.append(delta) }
        }[0]
        XCTAssertEqual(stopped.finishReason, .stop)
        XCTAssertFalse(stopped.text.contains(stop))
        XCTAssertTrue(free.text.hasPrefix(stopped.text))
        XCTAssertEqual(deltas.joined(), stopped.text, "the streamed text is the completion")
    }

    func testStreamIsAnAsyncSequenceOfTheSameEvents() async throws {
        let generator = try gpt2Sized()
        var options = SamplingOptions()
        options.maxNewTokens = 12
        options.seed = 1
        let prompt = try generator.tokenizer.encode("Hi")
        let expected = try generator.generate(prompts: [prompt], options: options)[0]
        var text = "", finished: Completion?
        for try await event in generator.stream(prompts: [prompt], options: options) {
            switch event {
            case .text(_, _, let delta): text += delta
            case .finished(let completion): finished = completion
            case .token: XCTFail("log-probabilities were not asked for")
            }
        }
        XCTAssertEqual(text, expected.text)
        XCTAssertEqual(finished?.tokens, expected.tokens)
    }

    /// `gpt generate` as people use it: `--logprobs` without --json is refused, not ignored; --json gives the token
    /// ids; a prompt can come on standard input; what the context does to a prompt or to --max-tokens is said.
    func testGenerateCommandLine() throws {
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let folder = try temporaryDirectory(self).appendingPathComponent("model")
        let tokenizer = try CharacterTokenizer(characters: Array("abcdefghijklmnopqrstuvH".unicodeScalars))
        try TrainingCheckpoint.save(model: try GPTModel(config: tinyConfig(), seed: 1), tokenizer: tokenizer, optimizer: nil, state: nil, to: folder)
        let model = folder.path
        let version = try runCapturingOutput(gpt, ["--version"])
        XCTAssertEqual(version.output.trimmingCharacters(in: .whitespacesAndNewlines), swiftGPTVersion)
        // A usage error found while a subcommand runs shows that subcommand's usage.
        let usage = try runCapturingOutput(gpt, ["bench", "generate", "--batch", "1,x"])
        XCTAssertEqual(usage.status, 64, usage.output)
        XCTAssertTrue(usage.output.contains("Usage: gpt bench generate") && usage.output.contains("See 'gpt bench generate --help'"), usage.output)
        let (status, output) = try runCapturingOutput(gpt, ["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "2", "--logprobs", "2"])
        XCTAssertNotEqual(status, 0, output)
        XCTAssertTrue(output.contains("--logprobs is reported in JSON: add --json"), output)
        let json = try runCapturingOutput(gpt, ["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "2", "--logprobs", "2", "--json"])
        XCTAssertEqual(json.status, 0, json.output)
        let line = try XCTUnwrap(json.output.split(separator: "\n").first { $0.hasPrefix("{") })
        let record = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertNotNil(record["logprobs"], json.output)
        let ids = try XCTUnwrap(record["token_ids"] as? [Int], json.output)
        XCTAssertEqual(ids.count, 2)
        XCTAssertEqual(String(decoding: try tokenizer.decodeBytes(ids.map(Int32.init)), as: UTF8.self), record["text"] as? String)

        // The context is 16 tokens.
        let piped = try runCapturingOutput(gpt, ["generate", "--model", model, "--max-tokens", "12", "--temperature", "0", "--json"],
                                           input: Data("Habcdefg\n".utf8))
        XCTAssertEqual(piped.status, 0, piped.output)
        XCTAssertTrue(piped.output.contains("\"prompt_tokens\":8"), "the prompt from standard input, less its final newline: \(piped.output)")
        XCTAssertTrue(piped.output.contains("note: prompt 1 has 8 tokens: the model's context of 16 leaves room for 8 of the 12 new tokens asked"), piped.output)
        let empty = try runCapturingOutput(gpt, ["generate", "--model", model], input: Data())
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.output.contains("standard input is empty"), empty.output)
        let cut = try runCapturingOutput(gpt, ["generate", "--model", model, "--prompt", String(repeating: "abc", count: 8), "--max-tokens", "5",
                                               "--truncate", "left", "--json"])
        XCTAssertEqual(cut.status, 0, cut.output)
        XCTAssertTrue(cut.output.contains("note: prompt 1 was cut from the left from 24 to 11 tokens, leaving room for the 5 new tokens asked"), cut.output)
    }
}
