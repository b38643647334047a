import Foundation
import SwiftGPT
import XCTest

/// Reward models from preference pairs: the Bradley–Terry loss, the dev figures, a run that learns a preference,
/// and bad input.
final class RewardModelTests: XCTestCase {
    func testBradleyTerryLossIsMeanNegativeLogSigmoidOfTheMargin() {
        let rewards: [Float] = [1.5, 0.25, -0.5, 0.75]  // pairs (1.5, 0.25) and (-0.5, 0.75)
        let examples = [EncodedExample(rows: [[1, 2], [1, 3]], label: .index(0)),
                        EncodedExample(rows: [[1, 4], [1, 5]], label: .index(0))]
        let loss = RewardObjective.pairwiseLoss(Variable(Tensor(shape: [4, 1], values: rewards)), batch: TaskBatch(examples, pad: 0),
                                                tape: Tape(recording: false))
        func negativeLogSigmoid(_ x: Double) -> Double { log(1 + exp(-x)) }
        XCTAssertEqual(Double(loss.value[flat: 0]), (negativeLogSigmoid(1.25) + negativeLogSigmoid(-1.25)) / 2, accuracy: 1e-6)
    }

    func testPairMetrics() {
        let m = RewardObjective.pairMetrics(chosen: [2, 0, 1, 3], rejected: [1, 1, 1, 0])
        XCTAssertEqual(m["val_accuracy"], 0.625)  // wins, loss, tie (half), win
        XCTAssertEqual(m["val_accuracy_stderr"]!, (0.625 * 0.375 / 4).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(m["val_margin"], 0.75)  // (1 − 1 + 0 + 3) / 4
        XCTAssertEqual(m["val_reward_mean"], 9.0 / 8)
        XCTAssertEqual(m["val_reward_std"]!, ((0.765625 + 1.265625 + 0.015625 + 3.515625 + 0.015625 * 3 + 1.265625) / 8).squareRoot(), accuracy: 1e-12)
    }

    /// Pairs whose chosen reply repeats the prompt's first character and whose rejected reply does not.
    private func pairs(_ count: Int, seed: UInt64, in folder: URL, name: String) throws -> URL {
        var random = SeededRandom(seed: seed)
        func text(_ n: Int) -> String { String((0..<n).map { _ in "abc".randomElement(using: &random)! }) }
        let lines = (0..<count).map { _ -> String in
            let prompt = text(3 + random.nextInt(below: 4)), first = prompt.first!
            let other = "abc".first { $0 != first }!
            let good = text(random.nextInt(below: 3)) + String(first), bad = text(random.nextInt(below: 3)) + String(other)
            return #"{"prompt": "\#(prompt) ", "chosen": "\#(good)", "rejected": "\#(bad)"}"#
        }
        return try writeLines(lines, name, in: folder)
    }

    private func settings(in folder: URL, train: URL, dev: URL) throws -> TrainingConfiguration {
        var r = RewardModelingSettings(train: train.path, dev: dev.path)
        r.epochs = 6
        var c = TrainingConfiguration.exampleRun(.rewardModeling(r), from: try savedBase(alphabet: "abc ", in: folder),
                                                 into: folder.appendingPathComponent("run"))
        c.logInterval = 10
        return c
    }

    func testATinyRewardModelLearnsAPreferenceAndSavesAsAClassifier() throws {
        let folder = try temporaryDirectory(self)
        let c = try settings(in: folder, train: try pairs(400, seed: 1, in: folder, name: "train.jsonl"),
                             dev: try pairs(100, seed: 2, in: folder, name: "dev.jsonl"))
        let trainer = try Trainer(configuration: c)
        var last: Evaluation?
        XCTAssertEqual(try trainer.run(events: { if case .evaluation(_, let e) = $0 { last = e } }), .finished)
        XCTAssertGreaterThanOrEqual(last!.metrics["val_accuracy"]!, 0.9, last!.summary)
        XCTAssertGreaterThan(last!.metrics["val_margin"]!, 0)
        let texts = try chartTexts(URL(fileURLWithPath: c.out).appendingPathComponent("loss.svg"), name: "reward-loss.svg")
        XCTAssertTrue(texts.contains("pairwise loss −log σ(r_chosen − r_rejected)") && texts.contains("dev accuracy (chosen scored above rejected)"), "\(texts)")
        // The character tokenizer has no end-of-text token, so a pad token was added; the head has one output.
        let (model, tokenizer) = try ModelLoading.load(c.out)
        XCTAssertEqual(model.taskHead, .sequenceClassification(SequenceClassification(labels: ["reward"], problem: .regression, padTokenID: 4)))
        XCTAssertEqual(try tokenizer.encode("a<|pad|>", allowedSpecial: ["<|pad|>"]), [0, 4])
    }

    func testBadPairsNameTheFileLineAndField() throws {
        let folder = try temporaryDirectory(self)
        let good = #"{"prompt": "a", "chosen": "b", "rejected": "c"}"#
        for (line, message) in [(#"{"prompt": "a", "chosen": "b"}"#, "line 2: missing field 'rejected'"),
                                (#"{"prompt": "a", "chosen": 1, "rejected": "c"}"#, "line 2: field 'chosen' must be a string"),
                                ("[1, 2]", "line 2: not a JSON object")] {
            let url = try writeLines([good, line], "pairs.jsonl", in: folder)
            let error = assertFileError(.malformed(line: 2), "pairs.jsonl", try PreferenceDataset.load(url))
            XCTAssertTrue(error?.message.hasPrefix(message) ?? false, "\(String(describing: error)) does not name the field as '\(message)'")
        }
        let bad = try writeLines([good, #"{"prompt": "x", "chosen": "b", "rejected": "c"}"#], "chars.jsonl", in: folder)
        assertFileError(.malformed(line: 2), "chars.jsonl", try Trainer(configuration: try settings(in: folder, train: bad, dev: bad)))
        // A pair whose prompt and reply are both empty (it once failed a precondition in attention mid-run).
        let empty = try writeLines([good, #"{"prompt": "", "chosen": "", "rejected": ""}"#], "empty.jsonl", in: folder)
        assertFileError(.malformed(line: 2), "empty.jsonl", try Trainer(configuration: try settings(in: folder, train: empty, dev: empty)))
    }

    func testLongRowsKeepTheirEnd() throws {
        let pair = PreferencePair(prompt: "abcabc", chosen: "ab", rejected: "c", line: 1)
        let tokenizer = try CharacterTokenizer(characters: Array("abc".unicodeScalars))
        let encoded = try PreferenceDataset.encode([pair], from: URL(fileURLWithPath: "x.jsonl"), tokenizer: tokenizer, contextLength: 4)
        XCTAssertEqual(encoded[0].rows, [[1, 2, 0, 1], [0, 1, 2, 2]])
        XCTAssertTrue(encoded[0].truncated)
        XCTAssertEqual(encoded[0].lostFraction, 0.5, "the chosen row lost 4 of its 8 tokens, the rejected 3 of 7")
        let summary = TruncationSummary(lostFractions: [0, 0.5, 0.25, 0, 0.9])
        XCTAssertEqual(summary.count, 3)
        XCTAssertEqual(summary.description, "3 of 5 (60%), losing a median 50% of their tokens, at most 90%")
        XCTAssertEqual(TruncationSummary(lostFractions: [0, 0.2, 0.4, 0]).description, "2 of 4 (50%), losing a median 30% of their tokens, at most 40%")
        XCTAssertEqual(TruncationSummary(lostFractions: [0, 0]).description, "none of 2")
    }
}
