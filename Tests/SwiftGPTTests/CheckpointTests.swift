import Foundation
import GPTUtilities
import SwiftGPT
import TensorCore
import XCTest

/// Saving and loading Hugging Face checkpoints, and the errors bad files give.
final class CheckpointTests: XCTestCase {
    private let ids: [Int32] = [1, 5, 22, 7, 7, 0, 3, 9, 11, 2]

    /// A model whose biases and LayerNorm parameters are drawn too (not zeros and ones), so that one stored in the
    /// wrong place shows.
    private func modelWithDrawnBiases(_ config: GPTConfig, seed: UInt64) throws -> GPTModel {
        let model = try GPTModel(config: config, seed: seed)
        for name in model.parameters.names where model.parameters[name].value.rank == 1 {
            var random = SeededRandom(seed: seed + 2)
            random.fillNormal(model.parameters[name].value.buffer, mean: 0, std: 0.5)
        }
        return model
    }

    func testRoundTripKeepsEveryParameterAndLogit() throws {
        for config in [tinyConfig(), tinyConfig(layout: .postNorm), tinyConfig(positions: .sinusoidal), tinyConfig(tied: false)]
            + tinyFamilyConfigs() {
            let model = try modelWithDrawnBiases(config, seed: 3)
            let dir = try temporaryDirectory(self)
            try HuggingFaceCheckpoint.save(model, to: dir)
            let loaded = try HuggingFaceCheckpoint.load(from: dir)
            XCTAssertEqual(loaded.config, config)
            XCTAssertEqual(loaded.parameters.values.scalars, model.parameters.values.scalars)
            XCTAssertEqual(logits(loaded, ids, batch: 2).scalars, logits(model, ids, batch: 2).scalars)
        }
    }

    /// Weights in shards that model.safetensors.index.json names load as one file does; an index that sends a tensor
    /// to the wrong file or out of the folder, and a folder of pickled weights only, are refused naming the file.
    func testShardedCheckpointsLoadAsOneFile() throws {
        for config in [tinyConfig(), tinyFamilyConfigs()[0]] {
            let model = try GPTModel(config: config, seed: 8)
            let dir = try temporaryDirectory(self)
            try HuggingFaceCheckpoint.save(model, to: dir)
            let single = dir.appendingPathComponent("model.safetensors")
            let file = try SafeTensors(contentsOf: single)
            let names = file.names, half = names.count / 2
            let shards = [Array(names[..<half]), Array(names[half...])]
            var map: [String: String] = [:]
            for (k, shard) in shards.enumerated() {
                let name = "model-0000\(k + 1)-of-00002.safetensors"
                try SafeTensors.write(try shard.map { ($0, try file.tensor($0)) }, to: dir.appendingPathComponent(name))
                for tensor in shard { map[tensor] = name }
            }
            try FileManager.default.removeItem(at: single)
            func writeIndex(_ map: [String: String]) throws {
                try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": map])
                    .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
            }
            try writeIndex(map)
            let loaded = try HuggingFaceCheckpoint.load(from: dir)
            XCTAssertEqual(loaded.parameters.values.scalars, model.parameters.values.scalars)
            XCTAssertEqual(logits(loaded, ids, batch: 2).scalars, logits(model, ids, batch: 2).scalars)

            var wrong = map
            wrong[names[0]] = "model-00002-of-00002.safetensors"
            try writeIndex(wrong)
            assertFileError(.malformed(line: nil), "model-00001-of-00002.safetensors", try HuggingFaceCheckpoint.load(from: dir))
            wrong = map
            wrong[names[0]] = "../model-00001-of-00002.safetensors"
            try writeIndex(wrong)
            assertFileError(.malformed(line: nil), "model.safetensors.index.json", try HuggingFaceCheckpoint.load(from: dir))
        }
        let pickled = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(try GPTModel(config: tinyConfig(), seed: 1), to: pickled)
        try FileManager.default.moveItem(at: pickled.appendingPathComponent("model.safetensors"), to: pickled.appendingPathComponent("pytorch_model.bin"))
        assertFileError(.unsupported, "pytorch_model.bin", try HuggingFaceCheckpoint.load(from: pickled))
    }

    /// Runs scripts/hf_check.py on a saved model folder and the outputs SwiftGPT computed (skips without torch).
    private func checkInTransformers(_ dir: URL, _ tensors: [(name: String, tensor: Tensor)], _ what: String) throws {
        try requirePython("torch, transformers, safetensors", install: "pip install torch transformers")
        let check = dir.appendingPathComponent("check.safetensors")
        try SafeTensors.write(tensors, to: check)
        let (status, output) = try runPythonScript("hf_check.py", [dir.path, check.path])
        XCTAssertEqual(status, 0, "\(what): \(output)")
    }

    func testSavedCheckpointLoadsInTransformers() throws {
        for config in [tinyConfig(), tinyConfig(layout: .postNorm), tinyConfig(positions: .sinusoidal), tinyConfig(tied: false),
                       tinyNeoConfig()] + tinyFamilyConfigs() {
            let model = try modelWithDrawnBiases(config, seed: 4)
            let dir = try temporaryDirectory(self)
            try HuggingFaceCheckpoint.save(model, to: dir)
            try checkInTransformers(dir, [("input_ids", Tensor(shape: [2, 5], values: ids.map(Float.init))),
                                          ("logits", logits(model, ids, batch: 2))], "\(config.layout) \(config.positions)")
        }
    }

    func testBFloat16CheckpointsHoldTheRoundedWeightsAndLoadInTransformers() throws {
        let model = try GPTModel(config: tinyConfig(tied: false), seed: 6)
        let f32 = try temporaryDirectory(self), bf16 = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(model, to: f32)
        try HuggingFaceCheckpoint.save(model, to: bf16, as: .bfloat16)
        let file = try SafeTensors(contentsOf: bf16.appendingPathComponent("model.safetensors"))
        XCTAssertTrue(file.entries.values.allSatisfy { $0.dtype == .bfloat16 })
        let size = { (dir: URL) in try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("model.safetensors").path)[.size] as! Int }
        XCTAssertLessThan(try size(bf16), try size(f32) * 6 / 10)
        let loaded = try HuggingFaceCheckpoint.load(from: bf16)
        XCTAssertEqual(loaded.parameters.values.scalars, model.parameters.values.scalars.map { BFloat16($0).float })
        try checkInTransformers(bf16, [("input_ids", Tensor(shape: [2, 5], values: ids.map(Float.init))),
                                       ("logits", logits(loaded, ids, batch: 2))], "bf16 checkpoint")
    }

    /// GPT-Neo checkpoints round-trip (separate q/k/v, [out, in] matrices, attention_types), and local layers of a
    /// GPT-2-style model survive under SwiftGPT's own config keys.
    func testLocalAttentionCheckpointsRoundTrip() throws {
        var gpt3Style = tinyConfig()
        gpt3Style.attentionPatterns = [.dense, .local(window: 5)]
        var sparse = tinyConfig()
        sparse.attentionPatterns = [.strided(window: 4, stride: 4), .strided(window: 1, stride: 4)]
        var fixed = tinyConfig()
        fixed.attentionPatterns = [.fixed(block: 4, summaries: 2), .local(window: 3)]
        for (config, type) in [(tinyNeoConfig(), "gpt_neo"), (gpt3Style, "gpt2"), (sparse, "gpt2"), (fixed, "gpt2")] {
            let model = try GPTModel(config: config, seed: 8)
            let dir = try temporaryDirectory(self)
            try HuggingFaceCheckpoint.save(model, to: dir)
            let (read, modelType) = try HuggingFaceCheckpoint.readConfig(dir.appendingPathComponent("config.json"))
            XCTAssertEqual(modelType, type)
            let written = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as? [String: Any]
            XCTAssertEqual(written?["swiftgpt_version"] as? String, swiftGPTVersion, "the checkpoint records the version that wrote it")
            XCTAssertEqual(read.attentionPatterns, config.attentionPatterns)
            let loaded = try HuggingFaceCheckpoint.load(from: dir)
            XCTAssertEqual(loaded.config, config)
            for name in model.parameters.names {
                XCTAssertEqual(loaded.parameters[name].value.scalars, model.parameters[name].value.scalars, name)
            }
        }
        var mixed = tinyNeoConfig()
        mixed.attentionScale = nil
        XCTAssertThrowsError(try HuggingFaceCheckpoint.save(try GPTModel(config: mixed), to: try temporaryDirectory(self)))
        // SwiftGPT's keys hold one window: layers with two would not come back as they were.
        var twoWindows = tinyConfig()
        twoWindows.attentionPatterns = [.local(window: 2), .local(window: 3)]
        assertThrows(ConfigurationError.self, .unsupportedFormat, try HuggingFaceCheckpoint.save(try GPTModel(config: twoWindows), to: try temporaryDirectory(self)))
    }

    /// Fine-tuned models load as transformers' sequence-classification and double-heads classes and give the
    /// same outputs on right-padded rows of different lengths.
    func testFineTunedCheckpointsLoadInTransformers() throws {
        let format = InputFormat(task: .classification, start: 20, delimiter: 21, extract: 22)
        let rows: [[Int32]] = [[20, 3, 4, 5, 21, 6, 22], [20, 7, 21, 8, 22], [20, 9, 9, 2, 1, 21, 0, 1, 17, 22]]
        func classification(_ labels: Int, _ problem: SequenceClassification.Problem) -> TaskHead {
            .sequenceClassification(SequenceClassification(labels: (0..<labels).map { "L\($0)" }, problem: problem, padTokenID: 20))
        }
        let cases: [(TaskHead, GPTConfig, InputFormat.Task)] = [
            (classification(3, .singleLabel), tinyConfig(), .classification),
            (classification(3, .singleLabel), tinyConfig(layout: .postNorm), .entailment),
            (classification(1, .regression), tinyConfig(), .similarity),
            (.multipleChoice, tinyConfig(), .multipleChoice),
            (.multipleChoice, tinyConfig(layout: .postNorm), .multipleChoice),
        ] + tinyFamilyConfigs().map { (classification(3, .singleLabel), $0, .classification) }
        for (head, config, task) in cases {
            let model = try GPTModel(config: config, seed: 6, taskHead: head)
            var taskFormat = format
            taskFormat.task = task == .similarity ? .classification : task  // transformers scores one order
            model.inputFormat = taskFormat
            let dir = try temporaryDirectory(self)
            try HuggingFaceCheckpoint.save(model, to: dir)
            let examples = task == .multipleChoice
                ? [EncodedExample(rows: rows, label: nil)]
                : rows.map { EncodedExample(rows: [$0], label: nil) }
            let batch = TaskBatch(examples, pad: 20)
            var none: SeededRandom?
            let outputs = model.taskForward(batch, tape: Tape(recording: false), random: &none).outputs.value
            let ids = Tensor(shape: task == .multipleChoice ? [1, 3, batch.length] : [3, batch.length], values: batch.ids.map(Float.init))
            let tensors: [(name: String, tensor: Tensor)] = task == .multipleChoice
                ? [("input_ids", ids), ("mc_token_ids", Tensor(shape: [1, 3], values: batch.lengths.map { Float($0 - 1) })),
                   ("mc_logits", outputs.reshaped([1, 3]))]
                : [("input_ids", ids), ("logits", outputs)]
            try checkInTransformers(dir, tensors, "\(task.rawValue) \(config.layout)")
            XCTAssertEqual(try HuggingFaceCheckpoint.load(from: dir).taskHead, head)
        }
    }

    func testBadFilesGiveErrorsNamingTheProblem() throws {
        let dir = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(try GPTModel(config: tinyConfig()), to: dir)
        let weights = dir.appendingPathComponent("model.safetensors"), configURL = dir.appendingPathComponent("config.json")
        let goodWeights = try Data(contentsOf: weights), goodConfig = try Data(contentsOf: configURL)

        func expectError(_ reason: FileError.Reason, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
            assertFileError(reason, name, try HuggingFaceCheckpoint.load(from: dir), file: file, line: line)
            try? goodWeights.write(to: weights)
            try? goodConfig.write(to: configURL)
        }

        try FileManager.default.removeItem(at: weights)
        expectError(.missing, "model.safetensors")
        try goodWeights.prefix(5).write(to: weights)
        expectError(.malformed(line: nil), "model.safetensors")
        try goodWeights.prefix(goodWeights.count - 10).write(to: weights)
        expectError(.malformed(line: nil), "model.safetensors")
        var corrupt = goodWeights
        corrupt[9] = UInt8(ascii: "#")
        try corrupt.write(to: weights)
        expectError(.malformed(line: nil), "model.safetensors")
        var wrongType = goodWeights
        wrongType.replaceSubrange(wrongType.range(of: Data("\"F32\"".utf8))!, with: Data("\"U32\"".utf8))
        try wrongType.write(to: weights)
        expectError(.unsupported, "model.safetensors")
        try Data("{\"model_type\": \"llama\"}".utf8).write(to: configURL)
        expectError(.unsupported, "config.json")
        try String(decoding: goodConfig, as: UTF8.self).replacingOccurrences(of: "\"n_embd\" : 12", with: "\"n_embd\" : 16")
            .data(using: .utf8)!.write(to: configURL)
        expectError(.mismatched, "model.safetensors")
        try FileManager.default.removeItem(at: configURL)
        expectError(.missing, "config.json")

        let model = try GPTModel(config: tinyConfig())
        let tensors = model.parameters.names.map { (name: HuggingFaceCheckpoint.hfName($0, modelType: "gpt2"), tensor: model.parameters[$0].value) }
        try SafeTensors.write(Array(tensors.dropLast()), to: weights)
        expectError(.mismatched, "model.safetensors")
        try SafeTensors.write(tensors + [(name: "transformer.extra.weight", tensor: Tensor(shape: [2]))], to: weights)
        expectError(.mismatched, "model.safetensors")
    }

    /// Hostile or corrupted model folders (what fuzzing found crashing the loader or allocating without bound): each
    /// refused with an error naming the file and the field.
    func testHostileModelFoldersAreRefusedNamingTheField() throws {
        let dir = try temporaryDirectory(self)
        let neo = dir.appendingPathComponent("neo"), gpt2 = dir.appendingPathComponent("gpt2")
        try HuggingFaceCheckpoint.save(try GPTModel(config: tinyConfig()), to: gpt2)
        try HuggingFaceCheckpoint.save(try GPTModel(config: tinyNeoConfig()), to: neo)
        func expectError(_ folder: URL, _ fragments: [String], edit: (inout [String: Any]) -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
            let url = folder.appendingPathComponent("config.json")
            let good = try Data(contentsOf: url)
            defer { try? good.write(to: url) }
            var json = try XCTUnwrap(JSONSerialization.jsonObject(with: good) as? [String: Any])
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            // The error is about config.json, and its message names the field.
            let error = assertFileError(.malformed(line: nil), "config.json", try HuggingFaceCheckpoint.load(from: folder), file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error?.message.contains(fragment) ?? true, "'\(String(describing: error))' does not name '\(fragment)'", file: file, line: line)
            }
        }
        try expectError(gpt2, ["n_embd"]) { $0["n_embd"] = Int.max }
        try expectError(gpt2, ["vocabulary size"]) { $0["vocab_size"] = 10_000_000_000 }
        try expectError(gpt2, ["context length"]) { $0["n_positions"] = 1_000_000_000 }
        try expectError(gpt2, ["MLP width"]) { $0["n_inner"] = 1_000_000_000 }
        try expectError(gpt2, ["layer count"]) { $0["n_layer"] = 1_000_000_000 }
        try expectError(gpt2, ["GB", "this machine has"]) { $0["n_layer"] = 4096; $0["n_embd"] = 8192; $0["n_head"] = 64 }
        try expectError(gpt2, ["n_embd"]) { $0["n_embd"] = 12.5 }
        try expectError(gpt2, ["LayerNorm epsilon"]) { $0["layer_norm_epsilon"] = 1e12 }
        try expectError(gpt2, ["resid_pdrop"]) { $0["resid_pdrop"] = -1 }
        try expectError(gpt2, ["swiftgpt_input_format"]) { $0["swiftgpt_input_format"] = "bogus" }
        try expectError(gpt2, ["window"]) { $0["swiftgpt_attention_layers"] = ["global", "local"]; $0["swiftgpt_window_size"] = 1 << 62 }
        try expectError(neo, ["window"]) { $0["window_size"] = 1 << 62 }
        try expectError(neo, ["attention_types"]) { $0["attention_types"] = [[["global", "local"], 1 << 62]] }
        try expectError(neo, ["attention_types"]) { $0["attention_types"] = [[["global", "local"], 1.5]] }

        // A sequence-classification model whose pad id is not a token.
        let classifier = dir.appendingPathComponent("classifier")
        let head = TaskHead.sequenceClassification(SequenceClassification(labels: ["a", "b"], problem: .singleLabel, padTokenID: 0))
        try HuggingFaceCheckpoint.save(try GPTModel(config: tinyConfig(), taskHead: head), to: classifier)
        try expectError(classifier, ["pad_token_id"]) { $0["pad_token_id"] = 1_000_000_000_000 }

        // safetensors headers: shapes whose size overflows, fractions, overlapping and gapped tensors.
        let weights = gpt2.appendingPathComponent("model.safetensors")
        let good = try Data(contentsOf: weights)
        func expectWeightsError(_ header: String, payload: Int, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
            var bytes = Data(header.utf8)
            var length = UInt64(bytes.count).littleEndian
            bytes = Data(bytes: &length, count: 8) + bytes + Data(count: payload)
            try bytes.write(to: weights)
            defer { try? good.write(to: weights) }
            // A corrupt header, and the message says which rule it breaks.
            let error = assertFileError(.malformed(line: nil), "model.safetensors", try SafeTensors(contentsOf: weights), file: file, line: line)
            XCTAssertTrue(error?.message.contains(fragment) ?? true, "'\(String(describing: error))' does not mention '\(fragment)'", file: file, line: line)
        }
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 16]}}"#, payload: 16, "does not fill")
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}"#, payload: 0, "does not fill")
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}"#, payload: 16, "non-negative integers")
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#,
                               payload: 24, "overlap")
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}}"#,
                               payload: 32, "gap")
        try expectWeightsError(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, payload: 16, "cover 8 bytes")
    }

    func testFailedWriteLeavesNoPartialFile() throws {
        let dir = try temporaryDirectory(self)
        let target = dir.appendingPathComponent("file.bin")
        try Data("old".utf8).write(to: target)
        struct Interrupted: Error {}
        XCTAssertThrowsError(try AtomicFile.write(to: target) { handle in
            try handle.write(contentsOf: Data("partial".utf8))
            throw Interrupted()
        })
        XCTAssertEqual(try String(contentsOf: target, encoding: .utf8), "old")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["file.bin"])
    }
}
