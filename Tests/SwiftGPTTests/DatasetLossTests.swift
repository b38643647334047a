import Foundation
import SwiftGPT
import TensorCore
import XCTest

final class DatasetLossTests: XCTestCase {
    /// A token file of `count` random ids below `vocabulary`.
    func tokenFile(count: Int, vocabulary: Int, in folder: URL) throws -> TokenFile {
        var random = SeededRandom(seed: 9)
        let url = folder.appendingPathComponent("val.bin")
        try TokenFile.write((0..<count).map { _ in Int32(random.nextInt(below: vocabulary)) }, vocabularySize: vocabulary, to: url)
        return try TokenFile(contentsOf: url)
    }

    /// Every prediction once, batched, equals the mean of per-token losses computed one window at a time by hand
    /// (log-softmax of the logits at each position), including the short window at the end.
    func testLossCoversEveryTokenOnceAndMatchesAPerTokenReference() throws {
        let folder = try temporaryDirectory(self)
        let config = tinyConfig()
        let model = try GPTModel(config: config, seed: 4)
        let file = try tokenFile(count: 75, vocabulary: config.vocabularySize, in: folder)
        let ids = file.ids()
        var sum = 0.0, predicted = 0
        for start in stride(from: 0, to: ids.count - 1, by: 10) {
            let size = min(10, ids.count - 1 - start)
            let out = logits(model, Array(ids[start..<(start + size)]), batch: 1)
            for t in 0..<size {
                let row = (0..<config.vocabularySize).map { Double(out[flat: t * config.vocabularySize + $0]) }
                let top = row.max()!
                let logSum = top + log(row.map { exp($0 - top) }.reduce(0, +))
                sum += logSum - row[Int(ids[start + t + 1])]
                predicted += 1
            }
        }
        let result = try DatasetLoss.evaluate(model, on: file, length: 10, batch: 3)
        XCTAssertEqual(result.tokens, 74)
        XCTAssertEqual(predicted, 74)
        XCTAssertEqual(result.loss, sum / Double(predicted), accuracy: 1e-5)
        XCTAssertEqual(result.perplexity, exp(result.loss), accuracy: 1e-9)
        // Through the decoding kernels (`gpt loss --precision`): fp32 weights give the same loss; 4-bit weights give
        // the rounded model's loss, near but not equal (their products also round their input to 8 bits).
        let decoded = try DatasetLoss.evaluate(model, weights: DecodeWeights(model: model, format: .float32), on: file, length: 10, batch: 3)
        XCTAssertEqual(decoded.tokens, 74)
        XCTAssertEqual(decoded.loss, result.loss, accuracy: 1e-5)
        let int4Weights = DecodeWeights(model: model, format: .int4)  // rounds the model's matrices
        let rounded = try DatasetLoss.evaluate(model, on: file, length: 10, batch: 3).loss
        let int4 = try DatasetLoss.evaluate(model, weights: int4Weights, on: file, length: 10, batch: 3).loss
        XCTAssertNotEqual(rounded, result.loss, accuracy: 1e-5)
        XCTAssertNotEqual(int4, rounded, accuracy: 1e-6)
        XCTAssertEqual(int4, rounded, accuracy: 1e-2)
    }

    func testRejectsWindowsBeyondTheContextAndIdsBeyondTheVocabulary() throws {
        let folder = try temporaryDirectory(self)
        let model = try GPTModel(config: tinyConfig(), seed: 4)
        let file = try tokenFile(count: 40, vocabulary: 100, in: folder)
        assertFileError(.mismatched, file.url.lastPathComponent, try DatasetLoss.evaluate(model, on: file, length: 17, batch: 2))
        assertFileError(.mismatched, file.url.lastPathComponent, try DatasetLoss.evaluate(model, on: file, length: 8, batch: 2))
        assertThrows(ConfigurationError.self, .invalidSetting("batch"), try DatasetLoss.evaluate(model, on: file, length: 8, batch: 0))
    }
}
