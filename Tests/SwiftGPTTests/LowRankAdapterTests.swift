import Foundation
import GPTUtilities
import SwiftGPT
import TensorCore
import XCTest

final class LowRankAdapterTests: XCTestCase {
    /// A tiny model (GPT-2 unless `config` says otherwise) with an adapter of rank 3 on every adaptable layer whose B is drawn (a fresh adapter's B is 0).
    private func adaptedModel(_ config: GPTConfig = tinyConfig(), seed: UInt64 = 7,
                              targets: [LowRankAdapter.Target] = LowRankAdapter.Target.allCases, drawingB: Bool = true) throws -> GPTModel {
        let model = try GPTModel(config: config, seed: seed)
        model.attach(LowRankAdapter(model: model, baseModel: nil, rank: 3, alpha: 6, dropout: 0,
                                    layers: LowRankAdapter.layers(targets, layerCount: model.config.layerCount),
                                    savedParameters: [], seed: seed))
        if drawingB {
            var random = SeededRandom(seed: seed &+ 1)
            let adapter = model.adapter!
            for layer in adapter.layers { random.fillNormal(adapter.matrices(of: layer)!.b.value.buffer, mean: 0, std: 0.2) }
        }
        return model
    }

    private let ids: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]

    /// With B = 0 (a new adapter) the adapted model computes exactly what the base computes.
    func testANewAdapterLeavesTheModelUnchanged() throws {
        let base = try GPTModel(config: tinyConfig(), seed: 7)
        let expected = logits(base, ids, batch: 2).scalars
        let model = try adaptedModel(drawingB: false)
        XCTAssertEqual(logits(model, ids, batch: 2).scalars, expected)
        XCTAssertEqual(model.adapter!.layers.count, 4 * model.config.layerCount)
        // A is drawn as PEFT draws it: uniform within ±1/√in.
        for layer in model.adapter!.layers {
            let a = model.adapter!.matrices(of: layer)!.a.value
            let bound = 1 / Float(a.shape[1]).squareRoot()
            XCTAssertTrue(a.scalars.allSatisfy { abs($0) <= bound } && a.scalars.contains { $0 != 0 })
        }
    }

    /// The gradients of the language-model loss with respect to every A and B agree with central finite
    /// differences, and the frozen base receives none.
    func testAdapterGradientsMatchFiniteDifferences() throws {
        let model = try adaptedModel()
        let targets = GPTModel.nextTokenTargets(ids, batch: 2)
        func loss() -> Double {
            let tape = Tape(recording: false, precision: .float32)
            return Double(tape.crossEntropy(model.logits(model.hidden(ids: ids, batch: 2, tape: tape).final, tape: tape), targets: targets).value[flat: 0])
        }
        let trainable = model.trainableParameters
        trainable.zeroGradients()
        let tape = Tape(precision: .float32)
        let out = tape.crossEntropy(model.logits(model.hidden(ids: ids, batch: 2, tape: tape).final, tape: tape), targets: targets)
        tape.backward(from: out)
        XCTAssertTrue(model.parameters.isFrozen)
        XCTAssertTrue(model.parameters.names.allSatisfy { model.parameters[$0].grad == nil }, "the base takes no gradient")
        var random = SeededRandom(seed: 5)
        let step: Float = 1e-2
        for name in trainable.names {
            let value = trainable[name].value, grad = trainable[name].grad!
            for _ in 0..<6 {
                let i = random.nextInt(below: value.count), saved = value[flat: i]
                value[flat: i] = saved + step
                let plus = loss()
                value[flat: i] = saved - step
                let minus = loss()
                value[flat: i] = saved
                let numeric = Float((plus - minus) / Double(2 * step)), analytic = grad[flat: i]
                XCTAssertEqual(analytic, numeric, accuracy: 2e-3 * max(1, abs(numeric)), "\(name)[\(i)]")
            }
        }
    }

    /// Merging the adapter into the weights gives the logits of the unmerged model (1e-5), and the merged model
    /// trains whole again; for every model type, GPT-Neo's and GPT-J's three adapters on the fused q/k/v included.
    func testMergedAndUnmergedGiveTheSameLogits() throws {
        for config in [tinyConfig(), tinyNeoConfig()] + tinyFamilyConfigs() {
            for targets in [[LowRankAdapter.Target.attention], LowRankAdapter.Target.allCases] {
                let model = try adaptedModel(config, targets: targets)
                let unmerged = logits(model, ids, batch: 2).scalars
                // Decoding packs the merged weights of a model that still has its adapter (PPO's rollouts).
                let session = InferenceSession(model: model, sequences: 1)
                let decoded = try session.feed([(0, Array(ids.prefix(6)))], everyToken: true).scalars
                let merged = try GPTModel(config: config, seed: 7)
                model.mergeAdapter()
                XCTAssertNil(model.adapter)
                XCTAssertFalse(model.parameters.isFrozen)
                let after = logits(model, ids, batch: 2).scalars
                for (x, y) in zip(unmerged, after) { XCTAssertEqual(x, y, accuracy: 1e-5) }
                for (x, y) in zip(unmerged.prefix(decoded.count), decoded) { XCTAssertEqual(x, y, accuracy: 1e-4) }
                XCTAssertNotEqual(logits(merged, ids, batch: 2).scalars, after, "the adapter changes the model")
            }
        }
    }

    /// Every model type's adapter files read back to the same model, under the module names its checkpoints use:
    /// GPT-Neo's and GPT-J's q_proj, k_proj and v_proj adapters (three groups over SwiftGPT's fused projection,
    /// GPT-J's rows in its rotary order), GPT-NeoX's query_key_value (rows in its per-head order). An adapter on only
    /// some of q, k and v (PEFT's default for GPT-Neo and GPT-J is q_proj and v_proj) reads as one whose other
    /// projections add nothing.
    func testEveryModelTypeSavesAndReadsItsAdapters() throws {
        let folder = try temporaryDirectory(self)
        let expectedTargets = [["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"], ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"],
                               ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"], ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
                               ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"], ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]]
        for (index, (config, targets)) in zip([tinyConfig(), tinyNeoConfig()] + tinyFamilyConfigs(), expectedTargets).enumerated() {
            let model = try adaptedModel(config)
            var random = SeededRandom(seed: 11)
            for layer in model.adapter!.layers { random.fillNormal(model.adapter!.matrices(of: layer)!.a.value.buffer, mean: 0, std: 0.3) }
            let saved = folder.appendingPathComponent("adapter-\(index)")
            try LowRankAdapterFiles.save(model, to: saved)
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: saved.appendingPathComponent("adapter_config.json"))) as! [String: Any]
            XCTAssertEqual(json["target_modules"] as? [String], targets)
            let read = try LowRankAdapterFiles.load(from: saved, base: try GPTModel(config: config, seed: 7))
            XCTAssertEqual(logits(read, ids, batch: 2).scalars, logits(model, ids, batch: 2).scalars)
            guard targets.contains("q_proj") else { continue }
            // Only q_proj and v_proj: the file without k_proj's tensors, against the model with k's rows of B zero.
            let width = config.embeddingWidth
            for layer in model.adapter!.layers where layer.name.hasSuffix("attn.c_attn") {
                let b = model.adapter!.matrices(of: layer)!.b.value
                for i in (width * b.shape[1])..<(2 * width * b.shape[1]) { b.pointer[i] = 0 }
            }
            let weights = saved.appendingPathComponent("adapter_model.safetensors"), file = try SafeTensors(contentsOf: weights)
            let kept = try file.names.filter { $0.contains("q_proj") || $0.contains("v_proj") }.map { name in
                (name, try file.checkedTensor(name, shape: file.entries[name]!.shape))
            }
            try SafeTensors.write(kept, to: weights)
            var partial = json
            partial["target_modules"] = ["q_proj", "v_proj"]
            try JSONSerialization.data(withJSONObject: partial).write(to: saved.appendingPathComponent("adapter_config.json"))
            let qv = try LowRankAdapterFiles.load(from: saved, base: try GPTModel(config: config, seed: 7))
            model.adapter!.layers.filter { !$0.name.hasSuffix("attn.c_attn") }.forEach { layer in model.adapter!.matrices(of: layer)!.b.value.fill(0) }
            for (x, y) in zip(logits(qv, ids, batch: 2).scalars, logits(model, ids, batch: 2).scalars) { XCTAssertEqual(x, y, accuracy: 1e-6) }
        }
    }

    // MARK: Training with adapters

    /// A character-level SFT task: the reply repeats the prompt's first or last letter.
    private let template = ChatTemplate(system: "{content}", user: "U{content}", assistant: "A{content}", generationPrompt: "A", endOfTurn: ";")

    private func demonstrations(_ count: Int, seed: UInt64, repeatingFirst: Bool, in folder: URL, name: String) throws -> URL {
        var random = SeededRandom(seed: seed)
        let lines = (0..<count).map { _ -> String in
            let prompt = String((0..<(2 + random.nextInt(below: 3))).map { _ in "abc".randomElement(using: &random)! })
            let letter = repeatingFirst ? prompt.first! : prompt.last!
            return #"{"instruction": "\#(prompt)", "response": "\#(String(repeating: letter, count: 3))"}"#
        }
        return try writeLines(lines, name, in: folder)
    }

    private func sftRun(repeatingFirst: Bool, from base: URL, in folder: URL, out: String) throws -> TrainingConfiguration {
        var settings = SupervisedFineTuningSettings(
            train: try demonstrations(200, seed: 1, repeatingFirst: repeatingFirst, in: folder, name: "train-\(repeatingFirst).jsonl").path,
            dev: try demonstrations(40, seed: 2, repeatingFirst: repeatingFirst, in: folder, name: "dev-\(repeatingFirst).jsonl").path,
            chatTemplate: template)
        settings.epochs = 8
        return .exampleRun(.supervisedFineTuning(settings), from: base, into: folder.appendingPathComponent(out))
    }

    /// A LoRA run (rank 8) that teaches a model fine-tuned to repeat the prompt's first letter to repeat its last.
    /// (A random model's tied output layer of N(0, 0.02) rows under a LayerNorm of gain 1 cannot make logits that
    /// differ by more than about 2, which adapters alone do not change: the base is trained first.)
    private func loraRun(in folder: URL, out: String = "run") throws -> TrainingConfiguration {
        let pretrained = folder.appendingPathComponent("first-letter")
        if !FileManager.default.fileExists(atPath: pretrained.path) {
            let base = try savedBase(alphabet: "abcUA;\n", width: 48, in: folder)
            XCTAssertEqual(try Trainer(configuration: try sftRun(repeatingFirst: true, from: base, in: folder, out: "first-letter")).run(), .finished)
        }
        var c = try sftRun(repeatingFirst: false, from: pretrained, in: folder, out: out)
        c.loraRank = 8
        c.loraAlpha = 16
        c.loraDropout = 0.05
        c.learningRate = 1e-2
        return c
    }

    /// A LoRA run trains the adapter only (the base's weights stay bit for bit), learns the task, saves PEFT
    /// folders that open as the adapted model, and resumes exactly after an interruption.
    func testALoRARunTrainsTheAdapterOnlyAndResumesExactly() throws {
        let folder = try temporaryDirectory(self)
        let c = try loraRun(in: folder)
        let trainer = try Trainer(configuration: c)
        let (base, _) = try ModelLoading.load(c.initFrom)
        var first: Evaluation?
        XCTAssertEqual(trainer.optimizer.range.count, trainer.model.adapter!.parameters.count)
        var last: Evaluation?
        XCTAssertEqual(try trainer.run(events: { if case .evaluation(_, let e) = $0 { first = first ?? e; last = e } }), .finished)
        XCTAssertGreaterThan(first!.metrics["val_loss"]!, 0.5, first!.summary)
        XCTAssertLessThan(last!.metrics["val_loss"]!, 0.1, last!.summary)
        XCTAssertEqual(trainer.model.parameters.values.scalars, base.parameters.values.scalars, "the base's weights changed")
        for name in ["best", "last"] {
            let saved = URL(fileURLWithPath: c.out).appendingPathComponent(name)
            XCTAssertTrue(FileManager.default.fileExists(atPath: saved.appendingPathComponent("adapter_model.safetensors").path))
            XCTAssertFalse(FileManager.default.fileExists(atPath: saved.appendingPathComponent("model.safetensors").path))
        }
        // The output opens as the base with the adapter merged; it answers as trained.
        let (model, tokenizer) = try ModelLoading.load(c.out)
        XCTAssertNil(model.adapter)
        var options = SamplingOptions()
        options.maxNewTokens = 4
        options.temperature = 0
        let prompt = try template.tokens([ChatMessage(role: .user, content: "cab")], addGenerationPrompt: true, tokenizer: tokenizer)
        XCTAssertEqual(try Generator(model: model, tokenizer: tokenizer).generate(prompts: [prompt], options: options)[0].text, "bbb;")
        // Interrupted after step 9 and resumed: the same adapter as the uninterrupted run's.
        var d = try loraRun(in: folder, out: "interrupted")
        d.initFrom = c.initFrom
        let interrupted = try Trainer(configuration: d)
        var steps = 0
        XCTAssertEqual(try interrupted.run(shouldStop: { steps += 1; return steps == 9 }), .interrupted)
        let resumed = try Trainer.resume(output: URL(fileURLWithPath: d.out))
        XCTAssertEqual(resumed.step, 9)
        XCTAssertEqual(try resumed.run(), .finished)
        XCTAssertEqual(resumed.model.adapter!.parameters.values.scalars, trainer.model.adapter!.parameters.values.scalars)
    }

    /// A LoRA run over a base held in bf16, int8 or int4 (`loraBasePrecision`) learns the task; its model computes what the
    /// base rounded to the format with the trained adapter computes, and decodes the same (the adapter applied beside
    /// the packed weights); it resumes exactly. A run that trains the token embedding, or a base precision without
    /// LoRA, is refused before anything is written.
    func testALoRARunOverABaseHeldInSixteenEightOrFourBits() throws {
        let folder = try temporaryDirectory(self)
        for format in [WeightFormat.bfloat16, .int8, .int4] {
            var c = try loraRun(in: folder, out: format.rawValue)
            c.loraBasePrecision = format
            let trainer = try Trainer(configuration: c)
            XCTAssertEqual(trainer.model.packedBase?.format, format)
            var last: Evaluation?
            XCTAssertEqual(try trainer.run(events: { if case .evaluation(_, let e) = $0 { last = e } }), .finished)
            XCTAssertLessThan(last!.metrics["val_loss"]!, 0.1, last!.summary)
            let (reference, _) = try ModelLoading.load(c.initFrom)
            reference.roundDecodingWeights(to: format)
            let adapted = try LowRankAdapterFiles.load(from: URL(fileURLWithPath: c.out).appendingPathComponent("last"), base: reference)
            let ids: [Int32] = [3, 0, 1, 2, 4, 5, 0]
            let expected = logits(adapted, ids, batch: 1).scalars, ours = logits(trainer.model, ids, batch: 1).scalars
            for (x, y) in zip(ours, expected) { XCTAssertEqual(x, y, accuracy: 1e-4, "\(format)") }
            let decoded = try InferenceSession(model: trainer.model, sequences: 1).feed([(0, ids)], everyToken: true).scalars
            for (x, y) in zip(decoded, expected) { XCTAssertEqual(x, y, accuracy: 1e-4, "\(format) decoded") }
            guard format == .int8 else { continue }
            var d = c
            d.out = folder.appendingPathComponent("int8-interrupted").path
            var steps = 0
            XCTAssertEqual(try Trainer(configuration: d).run(shouldStop: { steps += 1; return steps == 9 }), .interrupted)
            let resumed = try Trainer.resume(output: URL(fileURLWithPath: d.out))
            XCTAssertNotNil(resumed.model.packedBase)
            XCTAssertEqual(try resumed.run(), .finished)
            XCTAssertEqual(resumed.model.adapter!.parameters.values.scalars, trainer.model.adapter!.parameters.values.scalars)
        }
        var withoutLoRA = try loraRun(in: folder, out: "no-lora")
        (withoutLoRA.loraRank, withoutLoRA.loraBasePrecision) = (nil, .int8)
        assertThrows(ConfigurationError.self, .invalidSetting("loraBasePrecision"), try Trainer(configuration: withoutLoRA))
        // A reward model over a character tokenizer adds a padding token, whose embedding row trains.
        let pairs = try writeLines([#"{"prompt": "UaA", "chosen": "aa", "rejected": "cc"}"#], "pair.jsonl", in: folder)
        var reward = TrainingConfiguration.exampleRun(.rewardModeling(RewardModelingSettings(train: pairs.path, dev: pairs.path)),
                                                      from: try savedBase(alphabet: "abcUA;\n", in: folder), into: folder.appendingPathComponent("rm"))
        (reward.loraRank, reward.loraBasePrecision) = (2, .bfloat16)
        let error = assertThrows(ConfigurationError.self, .invalidSetting("loraBasePrecision"), try Trainer(configuration: reward))
        XCTAssertTrue(error?.message.contains("trains wte.weight whole") ?? false, "\(String(describing: error))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: reward.out))
    }

    /// A reward model trained with LoRA keeps its score head (and the token embedding, which gained a row) as trained
    /// copies (PEFT's modules_to_save) and opens with them.
    func testAHeadTrainsWholeBesideTheAdapter() throws {
        let folder = try temporaryDirectory(self)
        let pairs = (0..<40).map { i in #"{"prompt": "U\#(i % 2 == 0 ? "a" : "b")A", "chosen": "\#(i % 2 == 0 ? "aa" : "bb")", "rejected": "cc"}"# }
        let train = try writeLines(pairs, "pairs.jsonl", in: folder)
        var settings = RewardModelingSettings(train: train.path, dev: train.path)
        settings.epochs = 2
        var c = TrainingConfiguration.exampleRun(.rewardModeling(settings), from: try savedBase(alphabet: "abcUA;\n", in: folder),
                                                 into: folder.appendingPathComponent("rm"))
        c.loraRank = 2
        c.loraTargets = ["attn"]
        let trainer = try Trainer(configuration: c)
        // The character tokenizer has no end-of-text token: the run adds a padding token, whose row trains too.
        XCTAssertEqual(trainer.model.adapter!.savedParameters, ["wte.weight", "score.weight"])
        XCTAssertEqual(try trainer.run(), .finished)
        let (model, _) = try ModelLoading.load(c.out + "/last")
        guard case .sequenceClassification = model.taskHead else { return XCTFail("the reward head is lost") }
        XCTAssertEqual(model.parameters["score.weight"].value.scalars, trainer.model.adapter!.parameters["score.weight"].value.scalars)
        XCTAssertNotEqual(model.parameters["score.weight"].value.scalars, trainer.model.parameters["score.weight"].value.scalars)
    }

    // MARK: Files

    /// What PEFT writes and SwiftGPT cannot apply is refused by name, before anything else happens.
    func testAdaptersThatCannotApplyAreRefusedByName() throws {
        let folder = try temporaryDirectory(self)
        let model = try adaptedModel()
        let saved = folder.appendingPathComponent("adapter")
        try LowRankAdapterFiles.save(model, to: saved)
        let base = try GPTModel(config: tinyConfig(), seed: 7)
        XCTAssertNoThrow(try LowRankAdapterFiles.load(from: saved, base: try GPTModel(config: tinyConfig(), seed: 7)))
        let configURL = saved.appendingPathComponent("adapter_config.json")
        let original = try Data(contentsOf: configURL)
        func withConfig(_ change: (inout [String: Any]) -> Void) throws {
            var json = try JSONSerialization.jsonObject(with: original) as! [String: Any]
            change(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: configURL)
        }
        let (config, weights) = ("adapter_config.json", "adapter_model.safetensors")
        let cases: [(FileError.Reason, String, (inout [String: Any]) -> Void, String)] = [
            (.unsupported, config, { $0["peft_type"] = "IA3" }, "'peft_type' is IA3"),
            (.unsupported, config, { $0["use_dora"] = true }, "'use_dora' is true"),
            (.unsupported, config, { $0["bias"] = "all" }, "'bias' is all"),
            (.unsupported, config, { $0["rank_pattern"] = ["c_attn": 4] }, "'rank_pattern'"),
            (.unsupported, config, { $0["target_modules"] = ["c_attn", "lm_head"] }, "target module 'lm_head'"),
            (.malformed(line: nil), config, { $0["r"] = 0 }, "'r'"),
            (.malformed(line: nil), config, { $0["r"] = 2.5 }, "'r'"),
            (.malformed(line: nil), config, { $0["lora_dropout"] = 1.5 }, "'lora_dropout' must be"),
            (.malformed(line: nil), config, { $0["target_modules"] = [String]() }, "'target_modules'"),
            (.mismatched, config, { $0["layers_to_transform"] = [5] }, "matches no layer"),
            (.mismatched, weights, { $0["r"] = 4 }, "has shape [3,"),
            (.mismatched, weights, { $0["target_modules"] = ["c_attn"] }, "which adapter_config.json's target_modules do not name"),
        ]
        for (reason, file, change, message) in cases {
            try withConfig(change)
            let error = assertFileError(reason, file, try LowRankAdapterFiles.load(from: saved, base: base))
            XCTAssertTrue(error?.message.contains(message) ?? false, "\(String(describing: error)) does not say \(message)")
        }
        try original.write(to: configURL)
        // An adapter for a wider base, and a base of another architecture.
        let wider = try GPTModel(config: { var c = tinyConfig(); c.embeddingWidth = 32; c.mlpWidth = 128; return c }(), seed: 1)
        XCTAssertTrue(assertFileError(.mismatched, "adapter_model.safetensors", try LowRankAdapterFiles.load(from: saved, base: wider))?
            .message.contains("lora_A.weight' has shape") ?? false)
        let neo = try GPTModel(config: tinyNeoConfig(), seed: 1)
        XCTAssertTrue(assertFileError(.unsupported, "adapter_config.json", try LowRankAdapterFiles.load(from: saved, base: neo))?
            .message.contains("target module 'c_attn' is none of the layers SwiftGPT adapts in this gpt_neo model (q_proj, k_proj, v_proj, out_proj, c_fc, c_proj)") ?? false)
        // A tensor the adapter does not need, and a truncated weights file.
        let weightsURL = saved.appendingPathComponent("adapter_model.safetensors")
        let good = try Data(contentsOf: weightsURL)
        try SafeTensors.write([("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", Tensor(shape: [3, 12])),
                               ("base_model.model.extra.weight", Tensor(shape: [2]))], to: weightsURL)
        XCTAssertTrue(assertFileError(.mismatched, "adapter_model.safetensors", try LowRankAdapterFiles.load(from: saved, base: base))?
            .message.contains("'base_model.model.extra.weight' is no parameter") ?? false)
        try good.prefix(good.count - 5).write(to: weightsURL)
        _ = assertFileError(.malformed(line: nil), "adapter_model.safetensors", try LowRankAdapterFiles.load(from: saved, base: base))
    }

    /// Bad LoRA settings stop `gpt sft` before its output folder exists.
    func testBadLoRASettingsAreRefused() throws {
        let folder = try temporaryDirectory(self)
        var c = try loraRun(in: folder)
        for (change, setting) in [({ (c: inout TrainingConfiguration) in c.loraRank = 0 }, "loraRank"),
                                  ({ $0.loraTargets = ["attn", "lm_head"] }, "loraTargets"),
                                  ({ $0.loraDropout = 1 }, "loraDropout"),
                                  ({ $0.loraAlpha = -1 }, "loraAlpha")] {
            var bad = c
            change(&bad)
            assertThrows(ConfigurationError.self, .invalidSetting(setting), try Trainer(configuration: bad))
            XCTAssertFalse(FileManager.default.fileExists(atPath: bad.out))
        }
        c.loraRank = nil
        XCTAssertNoThrow(try c.validate())
    }

    /// PEFT opens the adapters SwiftGPT writes, and SwiftGPT the adapters PEFT writes, with equal logits (1e-4): a
    /// GPT-2 language model and sequence classifier, and every other model type (SwiftGPT's adapter on all its layers;
    /// PEFT's on its default modules: GPT-Neo's and GPT-J's q_proj and v_proj, GPT-NeoX's query_key_value,
    /// GPTBigCode's c_attn). One Python process runs every PEFT side. Skips without torch, transformers and peft.
    func testPEFTReadsAndWritesTheSameAdapters() throws {
        try requirePython("torch, transformers, peft", install: "pip install torch transformers peft")
        let folder = try temporaryDirectory(self)
        let ids: [Int32] = [1, 2, 3, 4]
        // Each job for peft_check.py, with what SwiftGPT computes for it (nil: the adapter PEFT makes, read after).
        var jobs: [(job: [String: Any], expected: [Float]?)] = []
        let gpt2 = try savedBase(alphabet: "abcdefghij", width: 32, in: folder)
        for head in [false, true] {
            var base = try HuggingFaceCheckpoint.load(from: gpt2)
            if head {
                base = try base.adapted(vocabularySize: base.config.vocabularySize, taskHead: .sequenceClassification(
                    SequenceClassification(labels: ["a", "b"], problem: .singleLabel, padTokenID: 0)), seed: 4)
            }
            base.attach(LowRankAdapter(model: base, baseModel: gpt2.path, rank: 4, alpha: 8, dropout: 0,
                                       layers: LowRankAdapter.layers([.attention, .mlp], layerCount: 2),
                                       savedParameters: base.parametersTrainedWhole, seed: 3))
            var random = SeededRandom(seed: 9)
            for layer in base.adapter!.layers { random.fillNormal(base.adapter!.matrices(of: layer)!.b.value.buffer, mean: 0, std: 0.2) }
            let ours = folder.appendingPathComponent("ours-\(head)")
            try LowRankAdapterFiles.save(base, to: ours)
            let expected = head ? base.taskOutputs(base.hidden(ids: ids, batch: 1, tape: Tape(recording: false)).final,
                                                   rows: [3], tape: Tape(recording: false)).value.scalars
                                : logits(base, ids, batch: 1).scalars
            jobs.append((["mode": "logits", "base": gpt2.path, "adapter": ours.path, "classes": head ? 2 : 0], expected))
        }
        var bases = [gpt2]
        jobs.append((["mode": "make", "base": gpt2.path, "adapter": folder.appendingPathComponent("theirs-0").path,
                      "targets": ["c_attn", "mlp.c_proj"]], nil))
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz".unicodeScalars)
        for (index, config) in ([tinyNeoConfig()] + tinyFamilyConfigs()).enumerated() {
            let base = folder.appendingPathComponent("base-\(index)")
            try TrainingCheckpoint.save(model: try GPTModel(config: config, seed: 5),
                                        tokenizer: try CharacterTokenizer(characters: Array(alphabet.prefix(config.vocabularySize))),
                                        optimizer: nil, state: nil, to: base)
            let model = try adaptedModel(config, seed: 5), ours = folder.appendingPathComponent("ours-family-\(index)")
            try LowRankAdapterFiles.save(model, to: ours)
            jobs.append((["mode": "logits", "base": base.path, "adapter": ours.path], logits(model, ids, batch: 1).scalars))
            bases.append(base)
            jobs.append((["mode": "make", "base": base.path, "adapter": folder.appendingPathComponent("theirs-\(bases.count - 1)").path], nil))
        }
        let jobsFile = folder.appendingPathComponent("jobs.json")
        try JSONSerialization.data(withJSONObject: jobs.map { $0.job.merging(["ids": ids.map(Int.init)]) { $1 } }).write(to: jobsFile)
        let (status, output) = try runPythonScript("peft_check.py", [jobsFile.path])
        XCTAssertEqual(status, 0, output)
        let results = try JSONSerialization.jsonObject(with: Data(output.split(separator: "\n").last!.utf8)) as! [[Double]]
        XCTAssertEqual(results.count, jobs.count)
        for ((job, expected), theirs) in zip(jobs, results) {
            var ours = expected
            if ours == nil {
                // PEFT's own adapter opens in SwiftGPT with PEFT's logits.
                let adapter = URL(fileURLWithPath: job["adapter"] as! String)
                ours = logits(try LowRankAdapterFiles.load(from: adapter, base: try ModelLoading.load(job["base"] as! String).0), ids, batch: 1).scalars
            }
            XCTAssertEqual(theirs.count, ours!.count, "\(job)")
            for (x, y) in zip(ours!, theirs) { XCTAssertEqual(Double(x), y, accuracy: 1e-4, "\(job)") }
        }
    }
}
