import Foundation
import GradientChecking
import SwiftGPT
import XCTest

final class DirectPreferenceTests: XCTestCase {
    /// Two pairs over a vocabulary of 7: replies of 3 and 2 scored tokens, then 1 and 4.
    private let spans = [0..<3, 3..<5, 5..<6, 6..<10]
    private let targets: [Int32] = [1, 4, 0, 6, 2, 3, 5, 1, 0, 2]

    /// The loss as written in the paper and in TRL, in double precision from the logits: each reply's log-probability
    /// is the sum of its tokens' log-softmax (IPO: their mean), the margin z, and the loss of each pair averaged.
    private func plainLoss(_ logits: [Float], classes: Int, reference: [Float], loss: DirectPreferenceSettings.Loss,
                           beta: Double, smoothing: Double) -> Double {
        let replies = spans.map { span -> Double in
            let total = span.reduce(0.0) { sum, r in
                let row = logits[(r * classes)..<((r + 1) * classes)].map(Double.init)
                return sum + row[Int(targets[r])] - log(row.map { exp($0) }.reduce(0, +))
            }
            return loss == .ipo ? total / Double(span.count) : total
        }
        var sum = 0.0
        for k in 0..<(spans.count / 2) {
            let z = (replies[2 * k] - replies[2 * k + 1]) - Double(reference[2 * k] - reference[2 * k + 1])
            switch loss {
            case .sigmoid:
                let logSigmoid = { (x: Double) in -log(1 + exp(-x)) }
                sum += -(1 - smoothing) * logSigmoid(beta * z) - smoothing * logSigmoid(-beta * z)
            case .ipo: sum += (z - 1 / (2 * beta)) * (z - 1 / (2 * beta))
            case .hinge: sum += max(0, 1 - beta * z)
            }
        }
        return sum / Double(spans.count / 2)
    }

    func testFusedLossAndGradientMatchAPlainImplementation() {
        let classes = 7
        let reference: [Float] = [-6.5, -4.0, -1.5, -9.0]
        for (loss, beta, smoothing) in [(DirectPreferenceSettings.Loss.sigmoid, Float(0.5), Float(0)), (.sigmoid, 2, 0.2),
                                        (.ipo, 0.3, 0), (.hinge, 0.5, 0)] {
            let logits = randomTensor([targets.count, classes], seed: 3)
            let normalizers = spans.map { loss == .ipo ? 1 / Float($0.count) : 1 }
            let (fused, _) = Tape(recording: false).preferenceLoss(Variable(logits), targets: targets, spans: spans, reference: reference,
                                                                  normalizers: normalizers, loss: loss, beta: beta, labelSmoothing: smoothing)
            let plain = plainLoss(logits.scalars, classes: classes, reference: reference, loss: loss, beta: Double(beta), smoothing: Double(smoothing))
            XCTAssertEqual(Double(fused.value[flat: 0]), plain, accuracy: 1e-5, "\(loss)")
            checkGradients([logits], tolerance: 2e-3, step: 1e-2) { tape, x in
                tape.preferenceLoss(x[0], targets: self.targets, spans: self.spans, reference: reference, normalizers: normalizers,
                                    loss: loss, beta: beta, labelSmoothing: smoothing).loss
            }
        }
    }

    /// At the start the policy is its reference: every margin is 0, so DPO's loss is log 2 whatever β and the
    /// replies, the hinge's is 1 and IPO's 1/(2β)²; the same holds as β → 0 with identical chosen and rejected replies.
    func testTheLossAtZeroMargin() {
        let logits = randomTensor([targets.count, 7], seed: 5)
        let ones = [Float](repeating: 1, count: spans.count)
        let (_, own) = Tape(recording: false).preferenceLoss(Variable(logits), targets: targets, spans: spans, reference: [0, 0, 0, 0],
                                                            normalizers: ones, loss: .sigmoid, beta: 1, labelSmoothing: 0)
        for beta: Float in [1e-6, 0.1, 3] {
            let sigmoid = Tape(recording: false).preferenceLoss(Variable(logits), targets: targets, spans: spans, reference: own,
                                                                normalizers: ones, loss: .sigmoid, beta: beta, labelSmoothing: 0).loss
            XCTAssertEqual(sigmoid.value[flat: 0], Float(log(2.0)), accuracy: 1e-6)
            let hinge = Tape(recording: false).preferenceLoss(Variable(logits), targets: targets, spans: spans, reference: own,
                                                              normalizers: ones, loss: .hinge, beta: beta, labelSmoothing: 0).loss
            XCTAssertEqual(hinge.value[flat: 0], 1, accuracy: 1e-5)
        }
        XCTAssertEqual(DirectPreferenceSettings.Loss.ipo.value(margin: 0, beta: 0.25, labelSmoothing: 0).loss, 4)
        // Identical replies: the same sequence as chosen and rejected has margin 0 under any policy.
        let same = [0..<3, 3..<6, 6..<8, 8..<10]
        let mirrored: [Int32] = [1, 4, 0, 1, 4, 0, 2, 3, 2, 3]
        let rows = Tensor(shape: [10, 7], values: (0..<10).flatMap { r in
            Array(logits.scalars[([0, 1, 2, 0, 1, 2, 4, 5, 4, 5][r] * 7)..<([0, 1, 2, 0, 1, 2, 4, 5, 4, 5][r] * 7 + 7)])
        })
        let identical = Tape(recording: false).preferenceLoss(Variable(rows), targets: mirrored, spans: same, reference: [0, 0, 0, 0],
                                                              normalizers: ones, loss: .sigmoid, beta: 1e-6, labelSmoothing: 0).loss
        XCTAssertEqual(identical.value[flat: 0], Float(log(2.0)), accuracy: 1e-6)
    }

    /// A policy over "a", "b" and an end-of-text token; pairs prefer the reply with more "a"s.
    private func pairs(_ count: Int, seed: UInt64, in folder: URL, name: String) throws -> URL {
        var random = SeededRandom(seed: seed)
        func text(_ n: Int) -> String { String((0..<n).map { _ in "ab".randomElement(using: &random)! }) }
        let lines = (0..<count).map { _ -> String in
            let prompt = text(2), length = 1 + random.nextInt(below: 4)
            var good = Array(text(length)), bad = good
            let k = random.nextInt(below: length)
            (good[k], bad[k]) = ("a", "b")
            return #"{"prompt": "\#(prompt)", "chosen": "\#(String(good))", "rejected": "\#(String(bad))"}"#
        }
        return try writeLines(lines, name, in: folder)
    }

    private func configuration(in folder: URL, out: String = "run") throws -> TrainingConfiguration {
        let base = folder.appendingPathComponent("base")
        if !FileManager.default.fileExists(atPath: base.path) {
            let tokenizer = try CharacterTokenizer(characters: Array("ab".unicodeScalars), specialTokens: ["<|endoftext|>"])
            let model = try GPTModel(config: GPTConfig(vocabularySize: 3, contextLength: 16, layerCount: 1, headCount: 2, embeddingWidth: 16), seed: 5)
            try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: nil, state: nil, to: base)
        }
        var settings = DirectPreferenceSettings(train: try pairs(120, seed: 1, in: folder, name: "train.jsonl").path,
                                                dev: try pairs(40, seed: 2, in: folder, name: "dev.jsonl").path, chatTemplate: .default)
        settings.epochs = 3
        settings.beta = 0.5
        var c = TrainingConfiguration.exampleRun(.directPreference(settings), from: base, into: folder.appendingPathComponent(out))
        c.learningRate = 1e-2
        return c
    }

    /// The reference's log-probability of each reply is the sum of the log-softmax of the reply's tokens and of
    /// the end-of-text token after it, from a plain forward pass over the whole sequence.
    func testReplyLogProbabilitiesAreTheModelsOwnScores() throws {
        let folder = try temporaryDirectory(self)
        let trainer = try Trainer(configuration: try configuration(in: folder))
        let objective = try XCTUnwrap(trainer.objective as? DirectPreferenceObjective)
        try objective.prepare(step: 0)
        let reference = try XCTUnwrap(objective.reference)
        let pairs = try PreferenceDataset.load(URL(fileURLWithPath: folder.appendingPathComponent("train.jsonl").path))
        let tokenizer = trainer.tokenizer
        for (k, pair) in pairs.prefix(10).enumerated() {
            for (j, reply) in [pair.chosen, pair.rejected].enumerated() {
                let prompt = try tokenizer.encode(pair.prompt)
                let ids = prompt + (try tokenizer.encode(reply)) + [tokenizer.endOfText!]
                let rows = logits(trainer.model, ids, batch: 1), v = trainer.model.config.vocabularySize
                var expected = 0.0
                for t in prompt.count..<ids.count {
                    let row = rows.scalars[((t - 1) * v)..<(t * v)].map(Double.init)
                    expected += row[Int(ids[t])] - log(row.map { exp($0) }.reduce(0, +))
                }
                XCTAssertEqual(Double(reference.train[2 * k + j]), expected, accuracy: 1e-4, "pair \(k) reply \(j)")
            }
        }
    }

    func testATinyPolicyLearnsThePreferenceAndResumesExactly() throws {
        let folder = try temporaryDirectory(self)
        let whole = try Trainer(configuration: try configuration(in: folder, out: "whole"))
        var evaluations: [Evaluation] = []
        XCTAssertEqual(try whole.run(events: { if case .evaluation(_, let e) = $0 { evaluations.append(e) } }), .finished)
        XCTAssertEqual(evaluations.first?.metrics["val_loss"] ?? 0, log(2.0), accuracy: 1e-6, "the policy starts as its reference")
        XCTAssertEqual(evaluations.first?.metrics["val_accuracy"], 0.5, "every pair a tie, which counts half")
        let last = try XCTUnwrap(evaluations.last?.metrics)
        XCTAssertGreaterThan(last["val_accuracy"]!, 0.9)
        XCTAssertGreaterThan(last["val_margin"]!, 0)
        XCTAssertLessThan(last["val_loss"]!, 0.5)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("whole/best/chat_template.json").path))

        let first = try Trainer(configuration: try configuration(in: folder, out: "parts"))
        XCTAssertEqual(try first.run(shouldStop: { first.step == 7 }), .interrupted)
        let resumed = try Trainer.resume(output: folder.appendingPathComponent("parts"))
        XCTAssertEqual(resumed.step, 7)
        XCTAssertEqual(try resumed.run(), .finished)
        XCTAssertEqual(resumed.model.parameters.values.scalars, whole.model.parameters.values.scalars)
    }

    /// DPO with LoRA: the adapted policy starts as its reference (B = 0), learns the preference through its adapter
    /// only, and resumes exactly.
    func testDPOWithAnAdapter() throws {
        let folder = try temporaryDirectory(self)
        func lora(_ out: String) throws -> TrainingConfiguration {
            var c = try configuration(in: folder, out: out)
            (c.loraRank, c.loraAlpha, c.loraDropout, c.learningRate) = (4, 8, 0, 3e-2)
            return c
        }
        let whole = try Trainer(configuration: try lora("whole"))
        var evaluations: [Evaluation] = []
        XCTAssertEqual(try whole.run(events: { if case .evaluation(_, let e) = $0 { evaluations.append(e) } }), .finished)
        XCTAssertEqual(evaluations.first?.metrics["val_loss"] ?? 0, log(2.0), accuracy: 1e-6, "the policy starts as its reference")
        XCTAssertGreaterThan(evaluations.last!.metrics["val_accuracy"]!, 0.8, evaluations.last!.summary)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("whole/best/adapter_config.json").path))
        let first = try Trainer(configuration: try lora("parts"))
        XCTAssertEqual(try first.run(shouldStop: { first.step == 7 }), .interrupted)
        let resumed = try Trainer.resume(output: folder.appendingPathComponent("parts"))
        XCTAssertEqual(try resumed.run(), .finished)
        XCTAssertEqual(resumed.model.adapter!.parameters.values.scalars, whole.model.adapter!.parameters.values.scalars)
    }

    func testBadPairsAreRefusedBeforeAnythingIsWritten() throws {
        let folder = try temporaryDirectory(self)
        var c = try configuration(in: folder)
        guard case .directPreference(var settings) = c.objective else { return XCTFail() }
        for (line, message) in [(#"{"prompt": "ab", "chosen": "ba", "rejected": "ba"}"#, "line 2: fields 'chosen' and 'rejected' hold the same reply"),
                                (#"{"prompt": "", "chosen": "a", "rejected": "b"}"#, "line 2: field 'prompt' is empty"),
                                (#"{"prompt": "ab", "chosen": "a"}"#, "line 2: missing field 'rejected'"),
                                (#"{"prompt": "ab", "chosen": "ac", "rejected": "b"}"#, "line 2: ")] {
            settings.train = try writeLines([#"{"prompt": "ab", "chosen": "a", "rejected": "b"}"#, line], "bad.jsonl", in: folder).path
            c.objective = .directPreference(settings)
            XCTAssertThrowsError(try Trainer(configuration: c)) { error in
                guard let error = error as? FileError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.reason, .malformed(line: 2))
                XCTAssertTrue(error.description.contains(message), error.description)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: c.out), "nothing is written before the data is read")
        }
        settings.labelSmoothing = 0.1
        settings.loss = .hinge
        c.objective = .directPreference(settings)
        assertThrows(ConfigurationError.self, .invalidSetting("labelSmoothing"), try c.validate())
    }
}
