import Atomics
import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest

/// GPT-1 fine-tuning: input transformations, heads and losses, padding, data validation, the training run.
final class FineTuningTests: XCTestCase {
    private let format = InputFormat(task: .classification, start: 20, delimiter: 21, extract: 22)

    private func formatted(_ task: InputFormat.Task) -> InputFormat {
        var f = format
        f.task = task
        return f
    }

    // MARK: Input transformations

    func testInputTransformationsTokenByToken() {
        let a: [Int32] = [1, 2, 3], b: [Int32] = [4, 5], c: [Int32] = [6]
        XCTAssertEqual(formatted(.classification).sequences([a], contextLength: 16).rows, [[20, 1, 2, 3, 22]])
        XCTAssertEqual(formatted(.entailment).sequences([a, b], contextLength: 16).rows, [[20, 1, 2, 3, 21, 4, 5, 22]])
        XCTAssertEqual(formatted(.similarity).sequences([a, b], contextLength: 16).rows,
                       [[20, 1, 2, 3, 21, 4, 5, 22], [20, 4, 5, 21, 1, 2, 3, 22]])
        XCTAssertEqual(formatted(.multipleChoice).sequences([a, b, c], contextLength: 16).rows,
                       [[20, 1, 2, 3, 21, 4, 5, 22], [20, 1, 2, 3, 21, 6, 22]])
        XCTAssertFalse(formatted(.multipleChoice).sequences([a, b, c], contextLength: 16).truncated)
    }

    func testTruncationCutsTheLongestTextNeverASpecialToken() {
        let long = [Int32](1...10), short: [Int32] = [11, 12]
        let result = formatted(.entailment).sequences([long, short], contextLength: 9)
        XCTAssertTrue(result.truncated)
        XCTAssertEqual(result.lostFraction, 6.0 / 12, "6 of the 12 text tokens were cut")
        // 9 = 3 special tokens + 6 text tokens: the long premise keeps its first 4, the short hypothesis stays whole.
        XCTAssertEqual(result.rows, [[20, 1, 2, 3, 4, 21, 11, 12, 22]])
        // When both are long they are cut towards equal lengths.
        let both = formatted(.entailment).sequences([long, [Int32](11...19)], contextLength: 9)
        XCTAssertEqual(both.rows, [[20, 1, 2, 3, 21, 11, 12, 13, 22]])
        XCTAssertEqual(formatted(.classification).sequences([long], contextLength: 5).rows, [[20, 1, 2, 3, 22]])
    }

    // MARK: Heads and losses

    private func model(_ head: TaskHead, task: InputFormat.Task, seed: UInt64 = 5) throws -> GPTModel {
        let m = try GPTModel(config: tinyConfig(), seed: seed, taskHead: head)
        m.inputFormat = formatted(task)
        return m
    }

    private func classifier(labels: Int = 3, problem: SequenceClassification.Problem = .singleLabel) -> TaskHead {
        .sequenceClassification(SequenceClassification(labels: (0..<labels).map { "L\($0)" }, problem: problem, padTokenID: 20))
    }

    private func encoded(_ rows: [[Int32]], _ label: TaskLabel?) -> EncodedExample {
        EncodedExample(rows: rows, label: label)
    }

    private func outputs(_ model: GPTModel, _ examples: [EncodedExample]) -> [Float] {
        var none: SeededRandom?
        return model.taskForward(TaskBatch(examples, pad: 20), tape: Tape(recording: false), random: &none).outputs.value.scalars
    }

    func testPaddedBatchEqualsOneExampleAtATime() throws {
        let m = try model(classifier(), task: .classification)
        let examples = [encoded([[20, 1, 2, 22]], .index(0)), encoded([[20, 5, 6, 7, 8, 9, 22]], .index(2)),
                        encoded([[20, 3, 22]], .index(1))]
        let batched = outputs(m, examples)
        let single = examples.flatMap { outputs(m, [$0]) }
        for (x, y) in zip(batched, single) { XCTAssertEqual(x, y, accuracy: 1e-5) }
        // The auxiliary LM loss of the padded batch is the token-weighted mean of the single ones.
        func lmLoss(_ e: [EncodedExample]) -> (Float, Int) {
            let batch = TaskBatch(e, pad: 20), tape = Tape(recording: false)
            let final = m.hidden(ids: batch.ids, batch: batch.rowCount, tape: tape, lengths: batch.lengths, withoutPadding: true).final
            return (m.taskLanguageModelLoss(final, batch: batch, tape: tape).value[flat: 0], batch.lengths.reduce(0) { $0 + $1 - 1 })
        }
        let parts = examples.map { lmLoss([$0]) }
        let weighted = parts.reduce(0) { $0 + $1.0 * Float($1.1) } / Float(parts.reduce(0) { $0 + $1.1 })
        XCTAssertEqual(lmLoss(examples).0, weighted, accuracy: 1e-5)
    }

    func testSimilarityAddsBothOrdersBeforeTheHead() throws {
        let m = try model(classifier(labels: 2), task: .similarity)
        let orders: [[Int32]] = [[20, 1, 2, 21, 3, 22], [20, 3, 21, 1, 2, 22]]
        let pair = outputs(m, [encoded(orders, .index(1))])
        // score has no bias, so score(h1 + h2) = score(h1) + score(h2): each order through a classification head.
        let classification = try model(classifier(labels: 2), task: .classification)
        classification.parameters.values.assign(m.parameters.values)
        let separate = orders.map { outputs(classification, [encoded([$0], .index(1))]) }
        for k in 0..<2 { XCTAssertEqual(pair[k], separate[0][k] + separate[1][k], accuracy: 1e-5) }
    }

    func testMultipleChoiceIsASoftmaxOverEachExamplesChoices() throws {
        let m = try model(.multipleChoice, task: .multipleChoice)
        let examples = [encoded([[20, 1, 21, 2, 22], [20, 1, 21, 3, 4, 22], [20, 1, 21, 5, 22]], .index(2)),
                        encoded([[20, 6, 21, 7, 22], [20, 6, 21, 8, 22]], .index(0))]
        let (predictions, loss) = m.predict(examples, batchSize: 2, pad: 20)
        let scores = outputs(m, examples)
        var expectedLoss = 0.0
        for (k, (range, target)) in zip([0..<3, 3..<5], [2, 0]).enumerated() {
            let e = range.map { exp(Double(scores[$0])) }, total = e.reduce(0, +)
            for (i, p) in predictions[k].probabilities!.enumerated() { XCTAssertEqual(Double(p), e[i] / total, accuracy: 1e-5) }
            XCTAssertEqual(predictions[k].index, range.map { scores[$0] }.indices.max { scores[range.lowerBound + $0] < scores[range.lowerBound + $1] })
            expectedLoss -= log(e[target] / total) / 2
        }
        XCTAssertEqual(Double(loss!), expectedLoss, accuracy: 1e-5)
    }

    /// d(L_task + λ·L_LM)/dθ against central finite differences, for a classifier and a regressor.
    func testCombinedLossGradientMatchesFiniteDifferences() throws {
        for (head, labels) in [(classifier(), [TaskLabel.index(2), .index(0)]), (classifier(labels: 1, problem: .regression), [.value(1.5), .value(-0.5)])] {
            let m = try model(head, task: .entailment, seed: 9)
            let batch = TaskBatch([encoded([[20, 1, 2, 21, 3, 22]], labels[0]), encoded([[20, 4, 21, 5, 6, 7, 22]], labels[1])], pad: 20)
            func loss(_ tape: Tape) -> Variable {
                var none: SeededRandom?
                let forward = m.taskForward(batch, tape: tape, random: &none)
                return tape.add(m.taskLoss(forward.outputs, batch: batch, labels: labels, tape: tape),
                                tape.scale(m.taskLanguageModelLoss(forward.final, batch: batch, tape: tape), by: 0.5))
            }
            m.parameters.zeroGradients()
            let tape = Tape()
            tape.backward(from: loss(tape))
            var random = SeededRandom(seed: 1)
            for name in ["wte.weight", "h.1.attn.c_attn.weight", "h.0.mlp.c_fc.bias", "ln_f.weight", TaskHead.scoreWeight] {
                let p = m.parameters[name]
                for _ in 0..<6 {
                    let i = random.nextInt(below: p.value.count), saved = p.value[flat: i], h: Float = 1e-2
                    p.value[flat: i] = saved + h
                    let plus = Double(loss(Tape(recording: false)).value[flat: 0])
                    p.value[flat: i] = saved - h
                    let minus = Double(loss(Tape(recording: false)).value[flat: 0])
                    p.value[flat: i] = saved
                    let numeric = Float((plus - minus) / Double(2 * h)), analytic = p.grad![flat: i]
                    XCTAssertEqual(analytic, numeric, accuracy: 2e-3 * max(1, abs(numeric)), "\(name)[\(i)]")
                }
            }
        }
    }

    func testMetrics() {
        let predictions: [TaskPrediction] = [1, 0, 1, 1].map { TaskPrediction(index: $0, probabilities: [0.5, 0.5]) }
        let metrics = TaskMetrics.compute(predictions, labels: [.index(1), .index(1), .index(0), .index(1)])
        XCTAssertEqual(metrics["accuracy"], 0.5)
        XCTAssertEqual(metrics["f1"]!, 2 * 2 / 6.0, accuracy: 1e-12)  // tp 2, predicted 3, actual 3
        let values: [TaskPrediction] = [1, 2, 3, 4].map { TaskPrediction(value: Float($0)) }
        let truth: [TaskLabel?] = [.value(2), .value(4), .value(5), .value(4)]
        let regression = TaskMetrics.compute(values, labels: truth)
        // Deviations (-1.5, -.5, .5, 1.5) and (-1.75, .25, 1.25, .25): 3.5 / √(5 · 4.75).
        XCTAssertEqual(regression["pearson"]!, 3.5 / (5 * 4.75).squareRoot(), accuracy: 1e-12)
        // Ranks of the truth 1, 2.5, 4, 2.5 (tied 4s share 2.5): 3 / √(5 · 4.5).
        XCTAssertEqual(regression["spearman"]!, 3 / (5 * 4.5).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(regression["mse"]!, (1 + 4 + 4 + 0) / 4.0, accuracy: 1e-12)
    }

    // MARK: Data files

    func testTaskFilesAreReadWithTheirLabelKinds() throws {
        let folder = try temporaryDirectory(self)
        let stsb = try writeLines([#"{"text_a": "a", "text_b": "b", "label": 5.0}"#, #"{"text_a": "c", "text_b": "d", "label": 3.8}"#], "s.jsonl", in: folder)
        XCTAssertEqual(try TaskDataset.load(stsb, task: .similarity, labelsRequired: true).map(\.label), [.value(5), .value(3.8)])
        let mrpc = try writeLines([#"{"text_a": "a", "text_b": "b", "label": 1}"#, "", #"{"text_a": "c", "text_b": "d", "label": 0}"#], "m.jsonl", in: folder)
        let pairs = try TaskDataset.load(mrpc, task: .similarity, labelsRequired: true)
        XCTAssertEqual(pairs.map(\.label), [.index(1), .index(0)])
        XCTAssertEqual(pairs.map(\.line), [1, 3])
        let copa = try writeLines([#"{"context": "x", "question": "cause", "choices": ["p", "q", "r"], "label": 2}"#], "c.jsonl", in: folder)
        XCTAssertEqual(try TaskDataset.load(copa, task: .multipleChoice, labelsRequired: true),
                       [TaskExample(segments: ["x", "p", "q", "r"], label: .index(2), line: 1)])
    }

    func testBadLinesNameTheFileLineAndField() throws {
        let folder = try temporaryDirectory(self)
        let cases: [(InputFormat.Task, String, String)] = [
            (.classification, #"{"label": 1}"#, "line 2: missing field 'text'"),
            (.classification, #"{"text": 3, "label": 1}"#, "line 2: field 'text' must be a string"),
            (.classification, #"{"text": "x", "label": "pos"}"#, "line 2: field 'label' must be a number"),
            (.classification, #"{"text": "x", "label": 1.5}"#, "line 2: field 'label' must be a class index"),
            (.classification, #"{"text": "x", "label": true}"#, "line 2: field 'label' must be a number"),
            (.classification, #"{"text": "x"}"#, "line 2: missing field 'label'"),
            (.classification, #"{"text": "x", "label": 1"#, "line 2: not a JSON object"),
            (.entailment, #"{"premise": "x", "label": 0}"#, "line 2: missing field 'hypothesis'"),
            (.multipleChoice, #"{"context": "x", "choices": [], "label": 0}"#, "line 2: field 'choices' must be a non-empty list of strings"),
            (.multipleChoice, #"{"context": "x", "choices": ["a", "b"], "label": 2}"#, "line 2: field 'label' is 2, but there are only 2 choices"),
        ]
        let good: [InputFormat.Task: String] = [
            .classification: #"{"text": "ok", "label": 0}"#, .entailment: #"{"premise": "a", "hypothesis": "b", "label": 0}"#,
            .multipleChoice: #"{"context": "a", "choices": ["b", "c"], "label": 0}"#,
        ]
        for (task, line, message) in cases {
            let url = try writeLines([good[task]!, line], "bad.jsonl", in: folder)
            let error = assertFileError(.malformed(line: 2), url.lastPathComponent, try TaskDataset.load(url, task: task, labelsRequired: true))
            XCTAssertTrue(error?.message.hasPrefix(message) ?? false, "\(String(describing: error)) does not name the field as '\(message)'")
        }
        var invalid = Data(#"{"text": "ok", "label": 0}"#.utf8 + [10])
        invalid += Data([0x7B, 0x22, 0xFF, 0x22, 0x7D, 10])
        let url = folder.appendingPathComponent("utf8.jsonl")
        try invalid.write(to: url)
        assertFileError(.malformed(line: 2), "utf8.jsonl", try TaskDataset.load(url, task: .classification, labelsRequired: true))
        let empty = try writeLines([""], "empty.jsonl", in: folder)
        assertFileError(.malformed(line: nil), "empty.jsonl", try TaskDataset.load(empty, task: .classification, labelsRequired: true))
    }

    // MARK: Training runs

    /// A tiny "pretrained" model over the characters a, b, c and space, saved as a checkpoint folder.
    private func baseModel(in folder: URL) throws -> URL {
        let tokenizer = try CharacterTokenizer(characters: Array("abc ".unicodeScalars))
        let model = try GPTModel(config: GPTConfig(vocabularySize: 4, contextLength: 24, layerCount: 2, headCount: 2, embeddingWidth: 32), seed: 7)
        let url = folder.appendingPathComponent("base")
        try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: nil, state: nil, to: url)
        return url
    }

    /// Texts of a, b and c whose label is whether the FIRST character is a, so only reading the input solves it.
    private func syntheticTask(_ count: Int, seed: UInt64, in folder: URL, name: String) throws -> URL {
        var random = SeededRandom(seed: seed)
        let lines = (0..<count).map { _ -> String in
            let text = String((0..<(4 + random.nextInt(below: 8))).map { _ in "abc".randomElement(using: &random)! })
            return #"{"text": "\#(text)", "label": \#(text.first == "a" ? 1 : 0)}"#
        }
        return try writeLines(lines, name, in: folder)
    }

    private func settings(base: URL, train: URL, dev: URL, out: URL) -> TrainingConfiguration {
        var f = FineTuningSettings(task: .classification, train: train.path, dev: dev.path)
        f.epochs = 4
        f.headDropout = 0
        var c = TrainingConfiguration.exampleRun(.fineTuning(f), from: base, into: out)
        c.weightDecay = 0.01
        c.logInterval = 5
        return c
    }

    func testATinyModelLearnsATaskItCanOnlySolveByReadingTheInput() throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let train = try syntheticTask(480, seed: 1, in: folder, name: "train.jsonl"), dev = try syntheticTask(100, seed: 2, in: folder, name: "dev.jsonl")
        let out = folder.appendingPathComponent("run")
        let trainer = try Trainer(configuration: settings(base: base, train: train, dev: dev, out: out))
        var last: Evaluation?
        XCTAssertEqual(try trainer.run(events: { if case .evaluation(_, let e) = $0 { last = e } }), .finished)
        XCTAssertGreaterThanOrEqual(last!.metrics["val_accuracy"]!, 0.95, last!.summary)
        // The training objective (with λ·LM) and the dev task loss are drawn on panels of their own.
        let texts = try chartTexts(out.appendingPathComponent("loss.svg"), name: "finetune-loss.svg")
        XCTAssertEqual(texts.first, "run: classification fine-tuning")
        XCTAssertTrue(texts.contains("training objective: task loss + 0.5 × LM loss"), "\(texts)")
        XCTAssertTrue(texts.contains("dev task loss") && texts.contains("accuracy"), "\(texts)")
        // The checkpoint is a sequence classifier with its input format and the special tokens in its tokenizer.
        let (loaded, tokenizer) = try ModelLoading.load(out.appendingPathComponent("best").path)
        XCTAssertEqual(loaded.inputFormat, InputFormat(task: .classification, start: 4, delimiter: 5, extract: 6))
        XCTAssertEqual(try tokenizer.encode("a<|extract|>", allowedSpecial: ["<|extract|>"]), [0, 6])
        guard case .sequenceClassification(let head)? = loaded.taskHead else { return XCTFail("no classifier head") }
        XCTAssertEqual(head.labels.count, 2)
        XCTAssertEqual(head.padTokenID, 4)
    }

    /// `--labels` names the classes in the checkpoint (id2label) instead of LABEL_0…, and a wrong number of names,
    /// or names for a regression, is refused.
    func testLabelNamesNameTheClasses() throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let train = try syntheticTask(40, seed: 1, in: folder, name: "train.jsonl")
        var c = settings(base: base, train: train, dev: train, out: folder.appendingPathComponent("run"))
        c.fineTuning!.labelNames = ["negative", "positive"]
        let (model, _) = try FineTuningObjective.startingModel(c, settings: c.fineTuning!)
        guard case .sequenceClassification(let head)? = model.taskHead else { return XCTFail("no classifier head") }
        XCTAssertEqual(head.labels, ["negative", "positive"])
        c.fineTuning!.labelNames = ["a", "b", "c"]
        c.fineTuning!.classCount = 2
        assertThrows(ConfigurationError.self, .invalidSetting("labelNames"), try c.validate())
        c.fineTuning!.classCount = nil
        c.fineTuning!.labelNames = ["a", "a"]
        assertThrows(ConfigurationError.self, .invalidSetting("labelNames"), try c.validate())
    }

    func testResumedFineTuningIsBitIdentical() throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let train = try syntheticTask(70, seed: 3, in: folder, name: "train.jsonl"), dev = try syntheticTask(20, seed: 4, in: folder, name: "dev.jsonl")
        var c = settings(base: base, train: train, dev: dev, out: folder.appendingPathComponent("whole"))
        c.fineTuning!.headDropout = 0.1
        c.dropout = 0.1
        c.gradientAccumulation = 2
        let whole = try Trainer(configuration: c)
        _ = try whole.run()
        c.out = folder.appendingPathComponent("parts").path
        let first = try Trainer(configuration: c)
        var steps = 0
        XCTAssertEqual(try first.run(shouldStop: { steps += 1; return steps == 5 }), .interrupted)
        let resumed = try Trainer.resume(output: folder.appendingPathComponent("parts"))
        XCTAssertEqual(resumed.step, 5)
        _ = try resumed.run()
        XCTAssertEqual(resumed.model.parameters.values.scalars, whole.model.parameters.values.scalars)
        // `gpt train --resume` continues pretraining runs only, and says which command continues this one.
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let parts = folder.appendingPathComponent("parts").path
        let (status, output) = try runCapturingOutput(gpt, ["train", "--resume", "--out", parts])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(output.contains("is not a pretraining run (it is classification fine-tuning); continue it with gpt finetune --resume"), output)
    }

    /// The library's calls: `Trainer.train` reports each step and stops with a checkpoint when its task is
    /// cancelled, the run resumes to the uninterrupted weights, and `TaskModel` predicts what the model does.
    func testTrainingFromSwiftIsCancelledWithItsTaskAndTheModelPredicts() async throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let train = try syntheticTask(70, seed: 3, in: folder, name: "train.jsonl"), dev = try syntheticTask(20, seed: 4, in: folder, name: "dev.jsonl")
        var c = settings(base: base, train: train, dev: dev, out: folder.appendingPathComponent("whole"))
        let whole = try Trainer(configuration: c)
        var steps: [Int] = [], evaluations: [Int] = [], checkpoints: [Int] = []
        for try await event in whole.events() {
            switch event {
            case .step(let report): steps.append(report.step)
            case .evaluation(let step, _): evaluations.append(step)
            case .checkpoint(let step, _): checkpoints.append(step)
            }
        }
        XCTAssertEqual(steps, Array(1...whole.configuration.maxIterations))
        XCTAssertEqual(evaluations, Array(stride(from: 0, through: whole.configuration.maxIterations, by: whole.configuration.evalInterval)))
        XCTAssertEqual(checkpoints, Array(evaluations.dropFirst()))

        c.out = folder.appendingPathComponent("parts").path
        let first = try Trainer(configuration: c)
        let reachedThree = expectation(description: "three steps")
        let task = Task {
            try await first.train { if case .step(let report) = $0, report.step == 3 { reachedThree.fulfill() } }
        }
        await fulfillment(of: [reachedThree], timeout: 60)
        task.cancel()
        let interrupted = try await task.value
        XCTAssertEqual(interrupted, .interrupted)
        XCTAssertLessThan(first.step, first.configuration.maxIterations)
        let resumed = try Trainer.resume(output: folder.appendingPathComponent("parts"))
        XCTAssertEqual(resumed.step, first.step, "the checkpoint was written before the call returned")
        try await resumed.train()
        XCTAssertEqual(resumed.model.parameters.values.scalars, whole.model.parameters.values.scalars)

        let classifier = try TaskModel(directory: folder.appendingPathComponent("whole"))
        XCTAssertEqual(classifier.task, .classification)
        XCTAssertEqual(classifier.labels, ["LABEL_0", "LABEL_1"])
        let texts = ["abca", "bcab", "a"]
        let predictions = try classifier.predict(texts.map { [$0] })
        let (model, tokenizer) = try ModelLoading.load(folder.appendingPathComponent("whole").path)
        let format = model.inputFormat!
        let encoded = try texts.map { EncodedExample(rows: format.sequences([try tokenizer.encode($0)], contextLength: 24).rows, label: nil) }
        XCTAssertEqual(predictions, model.predict(encoded, batchSize: 8, pad: format.start).predictions)
        assertThrows(GenerationError.self, .invalidArgument, try classifier.predict([["two", "texts"]]))
        assertFileError(.mismatched, base.lastPathComponent, try TaskModel(directory: base))
    }

    func testABadTrainingFileStopsBeforeAnythingIsWritten() throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let train = try writeLines([#"{"text": "ab", "label": 1}"#, #"{"text": "ax", "label": 0}"#], "train.jsonl", in: folder)
        let dev = try syntheticTask(5, seed: 4, in: folder, name: "dev.jsonl")
        let out = folder.appendingPathComponent("run")
        assertFileError(.malformed(line: 2), "train.jsonl", try Trainer(configuration: settings(base: base, train: train, dev: dev, out: out)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        let wrongLabel = try writeLines([#"{"text": "ab", "label": 1}"#], "train2.jsonl", in: folder)
        let devWithThree = try writeLines([#"{"text": "ab", "label": 2}"#], "dev2.jsonl", in: folder)
        let wrongLabelError = assertFileError(.malformed(line: 1), "dev2.jsonl",
                                              try Trainer(configuration: settings(base: base, train: wrongLabel, dev: devWithThree, out: out)))
        XCTAssertEqual(wrongLabelError?.message, "line 1: field 'label' is 2, but the model has 2 labels")
        // A label of 10^18 (it once sized a head of 10^18 classes), a 7 in a binary task, a label beyond --classes.
        let huge = try writeLines([#"{"text": "ab", "label": 1000000000000000000}"#], "huge.jsonl", in: folder)
        assertFileError(.malformed(line: 1), "huge.jsonl", try Trainer(configuration: settings(base: base, train: huge, dev: dev, out: out)))
        let seven = try writeLines([#"{"text": "ab", "label": 1}"#, #"{"text": "ab", "label": 0}"#, #"{"text": "ba", "label": 7}"#], "seven.jsonl", in: folder)
        let gapError = assertFileError(.malformed(line: 3), "seven.jsonl", try Trainer(configuration: settings(base: base, train: seven, dev: dev, out: out)))
        XCTAssertTrue(gapError?.message.contains("no example has class 2, 3, 4, 5, 6") ?? false, "\(String(describing: gapError))")
        var withClasses = settings(base: base, train: seven, dev: dev, out: out)
        withClasses.fineTuning!.classCount = 3
        assertFileError(.malformed(line: 3), "seven.jsonl", try Trainer(configuration: withClasses))
        withClasses.fineTuning!.classCount = 8
        let eightClasses = try Trainer(configuration: withClasses)
        guard case .sequenceClassification(let head)? = eightClasses.model.taskHead else { return XCTFail("no classifier head") }
        XCTAssertEqual(head.labels.count, 8)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("last").path))
    }

    /// A run that fails before its first checkpoint (here a non-finite loss at the first step) removes the output
    /// folder it created.
    func testARunFailingBeforeItsFirstCheckpointLeavesNothing() throws {
        let folder = try temporaryDirectory(self)
        let base = try baseModel(in: folder)
        let model = try HuggingFaceCheckpoint.load(from: base)
        model.parameters["h.0.mlp.c_fc.weight"].value.fill(.nan)
        try HuggingFaceCheckpoint.save(model, to: base)
        let train = try syntheticTask(40, seed: 3, in: folder, name: "train.jsonl"), dev = try syntheticTask(10, seed: 4, in: folder, name: "dev.jsonl")
        let out = folder.appendingPathComponent("run")
        let trainer = try Trainer(configuration: settings(base: base, train: train, dev: dev, out: out))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.path))
        assertThrows(TrainingError.self, .diverged, try trainer.run())
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "the failed run's folder is removed")
    }
}
