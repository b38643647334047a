import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest

final class TrainingTests: XCTestCase {
    /// A small corpus written to `folder/corpus.txt`.
    func corpus(in folder: URL) throws -> URL {
        var random = SeededRandom(seed: 3)
        let words = ["the ", "king ", "and ", "queen ", "of ", "hearts\n", "said ", "nothing. "]
        let text = (0..<3000).map { _ in words[random.nextInt(below: words.count)] }.joined()
        let url = folder.appendingPathComponent("corpus.txt")
        try Data(text.utf8).write(to: url)
        return url
    }

    /// The corpus prepared at character level in `folder/data`.
    func characterData(in folder: URL) throws -> URL {
        let text = try corpus(in: folder)
        let data = folder.appendingPathComponent("data")
        _ = try DataPreparation.prepare(files: [text], tokenizer: try CharacterTokenizer(corpus: [try String(contentsOf: text, encoding: .utf8)]), output: data)
        return data
    }

    func settings(data: URL, out: URL) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.data = data.path
        c.out = out.path
        c.layers = 2
        c.heads = 2
        c.width = 32
        c.context = 16
        c.dropout = 0.1
        c.batchSize = 4
        c.gradientAccumulation = 2
        c.maxIterations = 12
        c.warmupIterations = 3
        c.evalInterval = 4
        c.evalIterations = 2
        c.logInterval = 1
        return c
    }

    func testPrepareWritesSplitsAndRejectsBadInput() throws {
        let folder = try temporaryDirectory(self)
        let text = try corpus(in: folder)
        let tokenizer = try CharacterTokenizer(corpus: [try String(contentsOf: text, encoding: .utf8)])
        let out = folder.appendingPathComponent("data")
        let meta = try DataPreparation.prepare(files: [text], tokenizer: tokenizer, output: out)
        let train = try TokenFile(contentsOf: out.appendingPathComponent("train.bin"))
        let val = try TokenFile(contentsOf: out.appendingPathComponent("val.bin"))
        XCTAssertEqual(train.bytesPerToken, 2)
        XCTAssertEqual(train.count + val.count, try String(contentsOf: text, encoding: .utf8).unicodeScalars.count)
        XCTAssertEqual(val.count, meta.valTokens)
        XCTAssertEqual(Double(val.count) / Double(train.count + val.count), 0.1, accuracy: 0.001)
        XCTAssertEqual(try tokenizer.decode(train.ids() + val.ids()), try String(contentsOf: text, encoding: .utf8))
        XCTAssertEqual(try DataPreparation.meta(in: out), meta)

        let empty = folder.appendingPathComponent("empty.txt"), binary = folder.appendingPathComponent("binary.txt")
        try Data().write(to: empty)
        try Data([0x66, 0xFF, 0xFE]).write(to: binary)
        let nothing = folder.appendingPathComponent("nothing")
        for (file, reason) in [(empty, FileError.Reason.malformed(line: nil)), (binary, .malformed(line: nil)),
                               (folder.appendingPathComponent("missing.txt"), .unreadable)] {
            assertFileError(reason, file.lastPathComponent, try DataPreparation.prepare(files: [text, file], tokenizer: tokenizer, output: nothing))
            XCTAssertFalse(FileManager.default.fileExists(atPath: nothing.path), "no partial output")
        }
        var corrupt = try Data(contentsOf: out.appendingPathComponent("train.bin"))
        corrupt.removeLast(3)
        try corrupt.write(to: folder.appendingPathComponent("corrupt.bin"))
        assertFileError(.malformed(line: nil), "corrupt.bin", try TokenFile(contentsOf: folder.appendingPathComponent("corrupt.bin")))
    }

    func testPrepareReadsTheNamedFieldsOfJSONLines() throws {
        let folder = try temporaryDirectory(self)
        let url = folder.appendingPathComponent("pairs.jsonl")
        try Data("{\"text_a\": \"ab\", \"text_b\": \"c\", \"label\": 1}\n\n{\"text_a\": \"ba\", \"choices\": [\"a\", \"b\"]}\n".utf8).write(to: url)
        XCTAssertEqual(try DataPreparation.readDocuments(url, fields: ["text_a", "text_b", "choices"]).map { String(decoding: $0, as: UTF8.self) },
                       ["ab\nc", "ba\na\nb"])
        // Without an end-of-text token, the documents of a file are joined by a newline.
        let tokenizer = try CharacterTokenizer(characters: Array("abc\n".unicodeScalars))
        let out = folder.appendingPathComponent("data")
        _ = try DataPreparation.prepare(files: [url], fields: ["text_a", "text_b"], tokenizer: tokenizer, valFraction: 0, output: out)
        XCTAssertEqual(try tokenizer.decode(try TokenFile(contentsOf: out.appendingPathComponent("train.bin")).ids()), "ab\nc\nba")
        try Data("{\"text_a\": \"ab\"}\n{\"label\": 2}\n".utf8).write(to: url)
        assertFileError(.malformed(line: 2), "pairs.jsonl", try DataPreparation.readDocuments(url, fields: ["text_a"]))
    }

    func testLearningRateScheduleWarmsUpThenDecays() {
        var c = TrainingConfiguration()
        c.learningRate = 1e-3
        c.minLearningRate = 1e-4
        c.warmupIterations = 100
        c.maxIterations = 2000
        XCTAssertEqual(c.learningRate(at: 0), 1e-3 / 101, accuracy: 1e-9)
        XCTAssertEqual(c.learningRate(at: 100), 1e-3, accuracy: 1e-9)
        XCTAssertEqual(c.learningRate(at: 1050), 5.5e-4, accuracy: 1e-7)
        XCTAssertEqual(c.learningRate(at: 2000), 1e-4, accuracy: 1e-9)
        XCTAssertEqual(c.learningRate(at: 5000), 1e-4)
    }

    /// The objective is one value, stored as `"objective": {"KIND": SETTINGS}`; configurations and checkpoints
    /// written with the kind's key at the top level (before `objective` existed) read the same, and two kinds at once
    /// are refused.
    func testTheObjectiveIsOneValueReadInEitherForm() throws {
        var c = TrainingConfiguration()
        c.objective = .fineTuning(FineTuningSettings(task: .entailment, train: "/t.jsonl", dev: "/d.jsonl"))
        let encoded = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as! [String: Any]
        let objective = try XCTUnwrap(encoded["objective"] as? [String: Any])
        XCTAssertEqual(Array(objective.keys), ["fineTuning"])
        XCTAssertNil(encoded["fineTuning"])
        XCTAssertEqual(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONSerialization.data(withJSONObject: encoded)), c)

        var legacy = encoded
        legacy["objective"] = nil
        legacy["fineTuning"] = objective["fineTuning"]
        XCTAssertEqual(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONSerialization.data(withJSONObject: legacy)), c)

        let pretraining = try JSONDecoder().decode(TrainingConfiguration.self, from: JSONEncoder().encode(TrainingConfiguration()))
        XCTAssertEqual(pretraining.objective, .pretraining)
        XCTAssertEqual(pretraining, TrainingConfiguration())

        let reward: [String: Any] = ["train": "/t", "dev": "/d"]
        var both = legacy
        both["rewardModeling"] = reward
        var objectiveAndLegacy = encoded
        objectiveAndLegacy["rewardModeling"] = reward
        var twoInOne = encoded
        twoInOne["objective"] = ["fineTuning": objective["fineTuning"]!, "rewardModeling": reward]
        for (name, json) in [("two kinds", both), ("objective and a kind", objectiveAndLegacy), ("two in objective", twoInOne)] {
            XCTAssertThrowsError(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONSerialization.data(withJSONObject: json)), name) {
                guard case DecodingError.dataCorrupted = $0 else { return XCTFail("\(name): \($0)") }
            }
        }
        var unknown = encoded
        unknown["objective"] = ["dpo": [String: Any]()]
        XCTAssertThrowsError(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONSerialization.data(withJSONObject: unknown))) {
            guard case DecodingError.dataCorrupted(let context) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(context.debugDescription.contains("pretraining, fineTuning"), "\($0) does not list the objectives")
        }
    }

    func testResumedRunIsBitIdenticalToAnUninterruptedOne() throws {
        let folder = try temporaryDirectory(self)
        let text = try corpus(in: folder)
        let data = folder.appendingPathComponent("data")
        _ = try DataPreparation.prepare(files: [text], tokenizer: try TokenizerLoading.gpt2(), output: data)

        let straight = try Trainer(configuration: settings(data: data, out: folder.appendingPathComponent("a")))
        XCTAssertEqual(try straight.run(), .finished)

        let interrupted = try Trainer(configuration: settings(data: data, out: folder.appendingPathComponent("b")))
        XCTAssertEqual(try interrupted.run(shouldStop: { interrupted.step == 7 }), .interrupted)
        XCTAssertEqual(interrupted.step, 7)
        let resumed = try Trainer.resume(output: folder.appendingPathComponent("b"))
        XCTAssertEqual(resumed.step, 7)
        XCTAssertEqual(try resumed.run(), .finished)

        XCTAssertEqual(resumed.model.parameters.values.scalars, straight.model.parameters.values.scalars)
        XCTAssertEqual(resumed.optimizer.secondMoment.scalars, straight.optimizer.secondMoment.scalars)
        let metrics = { (name: String) -> [String] in
            // Everything but the timings.
            try String(contentsOf: folder.appendingPathComponent("\(name)/metrics.jsonl"), encoding: .utf8)
                .split(separator: "\n").map { line in
                    var record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                    record["tokens_per_s"] = nil
                    record["ms_per_step"] = nil
                    record["train_seconds"] = nil
                    return String(decoding: try JSONSerialization.data(withJSONObject: record, options: .sortedKeys), as: UTF8.self)
                }
        }
        XCTAssertEqual(try metrics("b"), try metrics("a"), "the resumed run's log reads as one run")
        for file in ["last/model.safetensors", "last/config.json", "last/vocab.json", "best/model.safetensors", "loss.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("a/\(file)").path), file)
        }
        let texts = try chartTexts(folder.appendingPathComponent("a/loss.svg"), name: "pretraining-loss.svg")
        XCTAssertTrue(texts.first?.hasPrefix("a: pretraining on ") == true, "the title names the run and its data: \(texts)")
        // The saved model loads for inference with its tokenizer.
        let (model, tokenizer) = try ModelLoading.load(folder.appendingPathComponent("a/last").path)
        XCTAssertEqual(model.parameters.values.scalars, straight.model.parameters.values.scalars)
        XCTAssertEqual(tokenizer.vocabularySize, 50257)
    }

    func testNonFiniteLossStopsNamingTheStepAndKeepsTheCheckpoint() throws {
        let folder = try temporaryDirectory(self)
        let data = try characterData(in: folder)
        var c = settings(data: data, out: folder.appendingPathComponent("run"))
        c.maxIterations = 2
        c.evalInterval = 1
        XCTAssertEqual(try Trainer(configuration: c).run(), .finished)
        XCTAssertEqual(try TrainingCheckpoint.loadState(from: folder.appendingPathComponent("run/last")).step, 2)
        // A learning rate that blows the weights up: the next evaluation stops the run; the good checkpoint stays.
        c.learningRate = 1e30
        c.warmupIterations = 0
        c.gradientClip = 0
        c.maxIterations = 4
        c.initFrom = folder.appendingPathComponent("run/last").path
        let diverged = assertThrows(TrainingError.self, .diverged, try Trainer(configuration: c).run())
        XCTAssertTrue(diverged?.message.contains("is kept") ?? false, "\(String(describing: diverged)) does not say the checkpoint is kept")
        XCTAssertEqual(try TrainingCheckpoint.loadState(from: folder.appendingPathComponent("run/last")).step, 2)
    }

    /// GPT-3 presets alternate dense and local layers; --attention and --window override them, cycled over the layers.
    func testAttentionPatternsFromPresetsAndSettings() throws {
        var settings = TrainingConfiguration()
        settings.preset = "gpt3-small"
        settings.layers = 3
        settings.window = 64
        let gpt3 = try settings.modelConfig(vocabularySize: 100)
        XCTAssertEqual(gpt3.attentionPatterns, [.dense, .local(window: 64), .dense])
        XCTAssertEqual(gpt3.contextLength, 2048)
        settings.preset = "baby"
        settings.attention = ["local", "local", "global"]
        settings.layers = 4
        settings.window = nil
        XCTAssertEqual(try settings.modelConfig(vocabularySize: 65).attentionPatterns,
                       [.local(window: 256), .local(window: 256), .dense, .local(window: 256)])
        settings.attention = ["strided", "local+strided"]
        settings.window = 16
        settings.stride = 8
        XCTAssertEqual(try settings.modelConfig(vocabularySize: 65).attentionPatterns,
                       [.strided(window: 1, stride: 8), .strided(window: 16, stride: 8), .strided(window: 1, stride: 8), .strided(window: 16, stride: 8)])
        settings.attention = ["fixed", "global"]
        settings.summaries = 2
        XCTAssertEqual(try settings.modelConfig(vocabularySize: 65).attentionPatterns,
                       [.fixed(block: 8, summaries: 2), .dense, .fixed(block: 8, summaries: 2), .dense])
        settings.summaries = 9
        assertThrows(ConfigurationError.self, .invalidSetting("attentionPatterns"), try settings.modelConfig(vocabularySize: 65))
        settings.summaries = nil
        settings.attention = ["sparse"]
        assertThrows(ConfigurationError.self, .invalidSetting("attention"), try settings.modelConfig(vocabularySize: 65))
        let decoded = try JSONDecoder().decode(TrainingConfiguration.self, from: Data(#"{"attention": ["global", "local"], "window": 8}"#.utf8))
        XCTAssertEqual(decoded.attention, ["global", "local"])
        XCTAssertEqual(decoded.window, 8)
    }

    /// `gpt prepare --tokenizer char` on files whose last line has no newline (the newline joining them must still be
    /// a character of the vocabulary).
    func testPreparingCharactersOfFilesWithoutATrailingNewline() throws {
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let folder = try temporaryDirectory(self)
        let a = folder.appendingPathComponent("a.txt"), b = folder.appendingPathComponent("b.txt")
        try Data("abcdefghij".utf8).write(to: a)
        try Data("klmnopqrst".utf8).write(to: b)
        let (status, output) = try runCapturingOutput(gpt, ["prepare", "--tokenizer", "char", "--out", folder.appendingPathComponent("data").path, a.path, b.path])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("vocabulary 21 (char)"), output)
    }

    /// The speed figures agree with each other: on the console both are over the same steps (tokens/s × ms/step ÷
    /// 1000 is the tokens of a step), and each metrics.jsonl line is its own step's tokens over its own time.
    func testReportedSpeedsDescribeTheSameSteps() throws {
        let folder = try temporaryDirectory(self)
        let data = try characterData(in: folder)
        var c = settings(data: data, out: folder.appendingPathComponent("run"))
        c.maxIterations = 30
        c.logInterval = 1
        var reports: [Trainer.StepReport] = []
        _ = try Trainer(configuration: c).run(events: { if case .step(let r) = $0 { reports.append(r) } })
        for r in reports {
            XCTAssertEqual(r.tokens, c.batchSize * c.gradientAccumulation * (try c.modelConfig(vocabularySize: 1)).contextLength)
            XCTAssertEqual(r.tokensPerSecond * r.milliseconds / 1000, Double(r.tokens), accuracy: 1e-6 * Double(r.tokens), "step \(r.step)")
        }
        let lines = try String(contentsOf: folder.appendingPathComponent("run/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.filter { $0["train_loss"] != nil }
        XCTAssertEqual(lines.count, 30)
        for line in lines {
            let tokens = try XCTUnwrap(line["tokens"] as? Double), speed = try XCTUnwrap(line["tokens_per_s"] as? Double)
            let milliseconds = try XCTUnwrap(line["ms_per_step"] as? Double)
            XCTAssertEqual(speed * milliseconds / 1000, tokens, accuracy: 1e-6 * tokens)
        }
    }
}
