import Foundation
import XCTest
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

final class GGUFImportTests: XCTestCase {
    /// A GPT-2 with GPT-2's tokenizer, small (see `GGUFExportTests.gpt2`).
    func gpt2(width: Int, tied: Bool, seed: UInt64 = 3) throws -> GPTModel {
        var config = tinyConfig(tied: tied)
        (config.vocabularySize, config.embeddingWidth, config.mlpWidth, config.headCount) = (50257, width, 4 * width, 2)
        return try GPTModel(config: config, seed: seed)
    }

    func testAnExportedFileOpensAsTheModelItHolds() throws {
        let folder = try temporaryDirectory(self)
        let gpt2Tokenizer = try TokenizerLoading.gpt2()
        let text = "Hello world, it's <|endoftext|> 2026!"
        var options = SamplingOptions()
        (options.temperature, options.maxNewTokens) = (0, 6)
        for (width, tied) in [(64, true), (40, false)] {
            let original = try gpt2(width: width, tied: tied)
            for type in GGUFExport.types {
                let url = folder.appendingPathComponent("m\(width)-\(type.rawValue).gguf")
                try GGUFExport.write(original, tokenizer: gpt2Tokenizer, chatTemplate: nil, name: "tiny", type: type, to: url)
                let (model, tokenizer) = try ModelLoading.load(url.path)
                let c = model.config, o = original.config
                XCTAssertEqual([c.vocabularySize, c.contextLength, c.layerCount, c.headCount, c.embeddingWidth, c.mlpWidth],
                               [o.vocabularySize, o.contextLength, o.layerCount, o.headCount, o.embeddingWidth, o.mlpWidth])
                XCTAssertEqual(c.tiedOutputEmbedding, tied)
                XCTAssertEqual(c.layerNormEpsilon, o.layerNormEpsilon)
                XCTAssertEqual(try tokenizer.encode(text), try gpt2Tokenizer.encode(text), "\(type)")
                XCTAssertEqual(tokenizer.vocabularySize, 50257)

                // Every parameter holds what the file's values stand for (as a plain reader decodes them): the
                // original's exactly in F32.
                let file = try ParsedGGUF(Data(contentsOf: url))
                for name in original.parameters.names {
                    let loaded = model.parameters[name].value, value = original.parameters[name].value
                    XCTAssertEqual(loaded.shape, value.shape, name)
                    if type == .f32 {
                        XCTAssertEqual(Array(UnsafeBufferPointer(start: loaded.pointer, count: loaded.count)),
                                       Array(UnsafeBufferPointer(start: value.pointer, count: value.count)), name)
                    }
                }
                let block = ParameterNames.Block(1)
                for (theirs, ours, transposed) in [("token_embd.weight", ParameterNames.tokenEmbedding, false),
                                                   ("blk.1.attn_qkv.weight", block.queryKeyValue.weight, true),
                                                   ("blk.1.ffn_up.weight", block.mlpInput.weight, true)] {
                    let tensor = try XCTUnwrap(file.tensors[theirs]), loaded = model.parameters[ours].value
                    let (rows, length) = (tensor.shape[1], tensor.shape[0])
                    for r in [0, rows / 3, rows - 1] {
                        let row = (0..<length).map { transposed ? loaded.pointer[$0 * rows + r] : loaded.pointer[r * length + $0] }
                        XCTAssertEqual(row, file.row(tensor, r, length: length), "\(theirs) row \(r) \(type)")
                    }
                }

                // Opened for decoding only, it decodes as the whole model does (and as the original, in F32).
                let (decoding, decodingTokenizer, weights) = try ModelLoading.loadForDecoding(url.path, format: .float32)
                XCTAssertTrue(decoding.isDecodingOnly)
                let prompt = try gpt2Tokenizer.encode("The quick brown fox")
                let ours = try Generator(model: decoding, tokenizer: decodingTokenizer, weights: weights).generate(prompts: [prompt], options: options)[0]
                let whole = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [prompt], options: options)[0]
                XCTAssertEqual(ours.tokens, whole.tokens, "\(type)")
                if type == .f32 {
                    let reference = try Generator(model: original, tokenizer: gpt2Tokenizer).generate(prompts: [prompt], options: options)[0]
                    XCTAssertEqual(ours.tokens, reference.tokens)
                }
            }
        }
    }

    /// llama.cpp's own converter (`convert_hf_to_gguf.py` of the tree scripts/build_llamacpp.sh unpacks, with Python's
    /// torch; skipped when either is absent) makes a file of a saved model that opens with the same logits.
    func testAFileOfLlamaCppsConverterOpensWithTheSameLogits() throws {
        let script = ProcessInfo.processInfo.environment["LLAMACPP_SOURCE"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/llama.cpp/src")
        let converter = script.appendingPathComponent("convert_hf_to_gguf.py")
        guard FileManager.default.fileExists(atPath: converter.path) else {
            throw XCTSkip("llama.cpp's source is not unpacked (scripts/build_llamacpp.sh, or LLAMACPP_SOURCE=its folder)")
        }
        let folder = try temporaryDirectory(self), hf = folder.appendingPathComponent("hf"), url = folder.appendingPathComponent("m.gguf")
        // Width 256: rows of whole k-quant blocks.
        let model = try gpt2(width: 256, tied: true, seed: 7), tokenizer = try TokenizerLoading.gpt2()
        try HuggingFaceCheckpoint.save(model, to: hf)
        try tokenizer.save(to: hf)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", converter.path, hf.path, "--outfile", url.path, "--outtype", "f32"]
        process.environment = ProcessInfo.processInfo.environment.merging(["PYTHONPATH": script.appendingPathComponent("gguf-py").path]) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let log = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus != 0, log.contains("ModuleNotFoundError") {
            throw XCTSkip("llama.cpp's converter lacks a Python package: \(log.split(separator: "\n").last(where: { $0.contains("ModuleNotFoundError") }) ?? "")")
        }
        XCTAssertEqual(process.terminationStatus, 0, log)
        let (loaded, loadedTokenizer) = try ModelLoading.load(url.path)
        let ids = try tokenizer.encode("It was the best of times, it was the worst of times")
        XCTAssertEqual(try loadedTokenizer.encode("It was the best of times, it was the worst of times"), ids)
        let expected = logits(model, ids, batch: 1), actual = logits(loaded, ids, batch: 1)
        var largest: Float = 0
        for i in 0..<expected.count { largest = max(largest, abs(expected.pointer[i] - actual.pointer[i])) }
        XCTAssertLessThan(largest, 1e-4)

        // llama-quantize's q4_0 keeps GPT-2's token embedding in Q6_K, its q4_K_M mixes Q4_K and Q6_K: both open, with
        // logits near the F32 ones (4-bit rounding moves them a little).
        let quantize = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/llama.cpp/build/bin/llama-quantize")
        guard FileManager.default.isExecutableFile(atPath: quantize.path) else { return }
        for type in ["q4_0", "q4_k_m", "q5_k_m"] {
            let quantized = folder.appendingPathComponent("m-\(type).gguf")
            let run = Process()
            run.executableURL = quantize
            run.arguments = [url.path, quantized.path, type]
            run.standardOutput = FileHandle.nullDevice
            run.standardError = FileHandle.nullDevice
            try run.run()
            run.waitUntilExit()
            XCTAssertEqual(run.terminationStatus, 0, type)
            let values = logits(try ModelLoading.load(quantized.path).0, ids, batch: 1)
            var dot: Double = 0, a: Double = 0, b: Double = 0
            for i in 0..<expected.count {
                let (x, y) = (Double(expected.pointer[i]), Double(values.pointer[i]))
                (dot, a, b) = (dot + x * y, a + x * x, b + y * y)
            }
            XCTAssertGreaterThan(dot / (a * b).squareRoot(), 0.95, "\(type): cosine of its logits and the F32 ones")
        }
    }

    /// Blocks of each type SwiftGPT reads but does not write, as llama.cpp's `llama-quantize` wrote them (of a 16M GPT-2
    /// trained here), with the values gguf-py's `dequantize` (llama.cpp's Python reference) gives them: SwiftGPT decodes
    /// the same values.
    func testBlocksOfLlamaCppsOtherTypesDecodeAsLlamaCppDecodesThem() throws {
        let url = Bundle.module.url(forResource: "Resources", withExtension: nil)!.appendingPathComponent("gguf-blocks.json")
        let fixture = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: [String: Any]])
        for type in [GGUFTensorType.q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k] {
            let entry = try XCTUnwrap(fixture[type.rawValue], type.rawValue)
            let hex = try XCTUnwrap(entry["bytes"] as? String), expected = try XCTUnwrap(entry["values"] as? [Double])
            let bytes = stride(from: 0, to: hex.count, by: 2).map { i in
                UInt8(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 2)], radix: 16)!
            }
            XCTAssertEqual(bytes.count, type.rowBytes(expected.count))
            var decoded = [Float](repeating: .nan, count: expected.count)
            bytes.withUnsafeBytes { GGUFFile.decode($0.baseAddress!, type: type, count: expected.count, into: &decoded) }
            let scale = expected.map(abs).max()!
            for (i, (x, y)) in zip(decoded, expected).enumerated() {
                XCTAssertEqual(Double(x), y, accuracy: 1e-6 * scale, "\(type) value \(i)")
            }
        }
    }

    /// A small GGUF file (a byte-level BPE of 262 tokens, width 32, one block, Q8_0): what the damage tests change.
    func smallFile(type: GGUFTensorType = .q8_0) throws -> [UInt8] {
        var words = BPETrainer.WordCounts()
        words.add(Array("the cat sat on the mat; the cat ate the rat".utf8), specialTokens: ["<|endoftext|>"])
        let tokenizer = try BPETrainer(vocabularySize: 262).train(words)
        var config = tinyConfig()
        (config.vocabularySize, config.embeddingWidth, config.mlpWidth, config.layerCount, config.contextLength) = (262, 32, 64, 1, 8)
        let url = try temporaryDirectory(self).appendingPathComponent("small.gguf")
        try GGUFExport.write(try GPTModel(config: config, seed: 2), tokenizer: tokenizer, chatTemplate: nil, name: "small", type: type, to: url)
        return Array(try Data(contentsOf: url))
    }

    func testDamagedAndHostileFilesAreRefusedNamingTheField() throws {
        let folder = try temporaryDirectory(self), url = folder.appendingPathComponent("bad.gguf")
        let good = try smallFile()
        try Data(good).write(to: url)
        XCTAssertNoThrow(try GGUFImport.load(from: url))

        /// The error of opening `bytes`, which must be a FileError naming the file.
        func refusal(_ bytes: [UInt8], _ why: String, file: StaticString = #filePath, line: UInt = #line) -> FileError? {
            do {
                try Data(bytes).write(to: url)
                _ = try GGUFImport.load(from: url)
                XCTFail("\(why): opened", file: file, line: line)
            } catch let error as FileError {
                XCTAssertEqual(error.url, url, file: file, line: line)
                return error
            } catch {
                XCTFail("\(why): \(error)", file: file, line: line)
            }
            return nil
        }
        func expect(_ bytes: [UInt8], _ reason: FileError.Reason, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
            let error = refusal(bytes, words, file: file, line: line)
            XCTAssertEqual(error?.reason, reason, "\(String(describing: error))", file: file, line: line)
            XCTAssertTrue(error?.message.contains(words) ?? false, "\(String(describing: error)) should say \(words)", file: file, line: line)
        }
        /// Where `text` (a key or a tensor name, as the file writes it, after its u64 length) ends, the last time it occurs.
        func end(of text: String) -> Int {
            let needle = Array(text.utf8)
            let start = (0...(good.count - needle.count)).last { Array(good[$0..<($0 + needle.count)]) == needle }!
            return start + needle.count
        }
        func patched(_ at: Int, _ value: some FixedWidthInteger) -> [UInt8] {
            var bytes = good
            withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[at + i] = b } }
            return bytes
        }

        // Every truncation is an error, never a crash.
        for length in stride(from: 0, to: good.count, by: 37) { _ = refusal(Array(good[0..<length]), "truncated at \(length)") }
        expect(Array("GGML".utf8) + good[4...], .malformed(line: nil), "not a GGUF file")
        expect(patched(4, UInt32(1)), .unsupported, "GGUF version 1")
        expect(patched(4, UInt32(3).byteSwapped), .unsupported, "big-endian")
        expect(patched(8, UInt64.max), .malformed(line: nil), "the tensor count")
        expect(patched(16, UInt64(1) << 40), .malformed(line: nil), "the key/value count")
        expect(patched(24, UInt64.max - 3), .malformed(line: nil), "claims")
        // Values: the architecture and the tokenizer by name; a count no file could hold.
        var llama = good
        llama.replaceSubrange((end(of: "general.architecture") + 12)..<(end(of: "general.architecture") + 16), with: Array("gptj".utf8))
        expect(llama, .unsupported, "architecture 'gptj'")
        var tokenizerModel = good
        tokenizerModel.replaceSubrange((end(of: "tokenizer.ggml.model") + 12)..<(end(of: "tokenizer.ggml.model") + 16), with: Array("bert".utf8))
        expect(tokenizerModel, .unsupported, "tokenizer 'bert'")
        expect(patched(end(of: "tokenizer.ggml.tokens") + 8, UInt64(1) << 62), .malformed(line: nil), "the length of 'tokenizer.ggml.tokens'")
        expect(patched(end(of: "gpt2.block_count"), UInt32(6)), .malformed(line: nil), "'gpt2.block_count' is a floating-point number")
        expect(patched(end(of: "gpt2.block_count") + 4, UInt32(0)), .malformed(line: nil), "'gpt2.block_count' is 0")
        expect(patched(end(of: "gpt2.embedding_length") + 4, UInt32(48)), .mismatched, "shape")
        expect(patched(end(of: "tokenizer.ggml.add_bos_token") + 4, UInt8(2)), .malformed(line: nil), "not 0 or 1")
        // Tensor descriptions: dimensions, type, offset.
        let qkv = end(of: "blk.0.attn_qkv.weight")
        expect(patched(qkv, UInt32(5)), .malformed(line: nil), "5 dimensions")
        expect(patched(qkv + 4, UInt64(0)), .malformed(line: nil), "not a positive size")
        expect(patched(end(of: "output_norm.weight") + 4, UInt64(1) << 62), .malformed(line: nil), "not a positive size up to 2^48")
        expect(patched(qkv + 4, UInt64(33)), .malformed(line: nil), "not whole blocks of 32")
        expect(patched(qkv + 12, UInt64(1) << 40), .malformed(line: nil), "lies outside")
        expect(patched(qkv + 20, UInt32(10)), .unsupported, "Q2_K (ggml type 10)")
        expect(patched(qkv + 20, UInt32(14)), .malformed(line: nil), "Q6_K with rows of 32 values, not whole blocks of 256")
        expect(patched(qkv + 20, UInt32(1)), .malformed(line: nil), "overlap")
        expect(patched(qkv + 24, UInt64(1) << 50), .malformed(line: nil), "lies outside")
        expect(patched(qkv + 24, UInt64(16)), .malformed(line: nil), "not a multiple of the alignment")
        var renamed = good
        renamed[end(of: "output_norm.bias") - 1] = UInt8(ascii: "x")
        expect(renamed, .mismatched, "unexpected tensor 'output_norm.biax'")
        expect(patched(end(of: "general.alignment") + 4, UInt32(24)), .malformed(line: nil), "power of two")

        // Random damage: any outcome but a crash (an error, or a model of other values).
        var random = SeededRandom(seed: 9)
        for _ in 0..<300 {
            var bytes = good
            for _ in 0..<(1 + random.nextInt(below: 4)) { bytes[random.nextInt(below: bytes.count)] = UInt8(random.nextInt(below: 256)) }
            try Data(bytes).write(to: url)
            do { _ = try GGUFImport.load(from: url) } catch is FileError {} catch { XCTFail("\(error)") }
        }
    }
}
