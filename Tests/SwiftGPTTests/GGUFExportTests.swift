import Foundation
import XCTest
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

final class GGUFExportTests: XCTestCase {
    /// A GPT-2 with GPT-2's tokenizer, small: width 64 (rows of whole 32-value blocks), or 40 (rows that fall back to F16
    /// in a quantized file) with an untied output layer.
    func gpt2(width: Int, tied: Bool) throws -> GPTModel {
        var config = tinyConfig(tied: tied)
        config.vocabularySize = 50257
        config.embeddingWidth = width
        config.mlpWidth = 4 * width
        config.headCount = 2
        return try GPTModel(config: config, seed: 3)
    }

    func testTheFileHoldsTheModelAsLlamaCppReadsIt() throws {
        let folder = try temporaryDirectory(self)
        let tokenizer = try TokenizerLoading.gpt2()
        for (width, tied) in [(64, true), (40, false)] {
            let model = try gpt2(width: width, tied: tied), c = model.config
            for type in GGUFExport.types {
                let url = folder.appendingPathComponent("m\(width)-\(type.rawValue).gguf")
                try GGUFExport.write(model, tokenizer: tokenizer, chatTemplate: tied ? "{{ messages }}" : nil, name: "tiny", type: type, to: url)
                let file = try ParsedGGUF(Data(contentsOf: url))
                XCTAssertEqual(file.values["general.architecture"] as? String, "gpt2")
                XCTAssertEqual(file.values["general.file_type"] as? UInt32, ["f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2][type.rawValue])
                XCTAssertEqual(file.values["gpt2.embedding_length"] as? UInt32, UInt32(width))
                XCTAssertEqual(file.values["gpt2.feed_forward_length"] as? UInt32, UInt32(4 * width))
                XCTAssertEqual(file.values["gpt2.block_count"] as? UInt32, 2)
                XCTAssertEqual(file.values["gpt2.attention.head_count"] as? UInt32, UInt32(c.headCount))
                XCTAssertEqual(file.values["gpt2.context_length"] as? UInt32, UInt32(c.contextLength))
                XCTAssertEqual(file.values["tokenizer.ggml.model"] as? String, "gpt2")
                let tokens = file.values["tokenizer.ggml.tokens"] as? [String]
                XCTAssertEqual(tokens?.count, 50257)
                XCTAssertEqual(tokens?[50256], "<|endoftext|>")
                XCTAssertEqual(tokens?[220], "Ġ", "byte-level text, as vocab.json")
                XCTAssertEqual((file.values["tokenizer.ggml.token_type"] as? [Int32])?[50256], 3, "a control token")
                XCTAssertEqual((file.values["tokenizer.ggml.merges"] as? [String])?.first, "Ġ t")
                XCTAssertEqual(file.values["tokenizer.ggml.eos_token_id"] as? UInt32, 50256)
                XCTAssertEqual(file.values["tokenizer.ggml.add_bos_token"] as? Bool, false)
                XCTAssertEqual(file.values["tokenizer.chat_template"] as? String, tied ? "{{ messages }}" : nil)
                XCTAssertEqual(file.tensors.count, 2 + 2 * 12 + 2 + (tied ? 0 : 1))

                // Every tensor against the model's parameter: Conv1D weights transposed, one row per output.
                let block = ParameterNames.Block(1)
                let cases: [(String, String, Bool)] = [("token_embd.weight", ParameterNames.tokenEmbedding, false),
                                                        ("position_embd.weight", ParameterNames.positionEmbedding, false),
                                                        ("blk.1.attn_qkv.weight", block.queryKeyValue.weight, true),
                                                        ("blk.1.ffn_down.weight", block.mlpOutput.weight, true),
                                                        ("blk.1.ffn_down.bias", block.mlpOutput.bias, false),
                                                        ("blk.1.attn_norm.weight", block.attentionNorm.weight, false),
                                                        ("output_norm.bias", ParameterNames.finalNorm.bias, false)]
                    + (tied ? [] : [("output.weight", ParameterNames.outputLayer, false)])
                for (name, parameter, transposed) in cases {
                    let tensor = try XCTUnwrap(file.tensors[name], name), value = model.parameters[parameter].value
                    let (rows, length) = value.shape.count == 1 ? (1, value.shape[0]) : transposed ? (value.shape[1], value.shape[0]) : (value.shape[0], value.shape[1])
                    XCTAssertEqual(tensor.shape, value.shape.count == 1 ? [length] : [length, rows], name)
                    let isMatrix = value.shape.count == 2 && name != "position_embd.weight"
                    let expectedType = !isMatrix ? .f32 : length % type.blockLength == 0 ? type : .f16
                    XCTAssertEqual(tensor.type, expectedType.ggmlType, "\(name) \(type)")
                    for r in [0, rows / 2, rows - 1] {
                        let row = (0..<length).map { transposed ? value.pointer[$0 * rows + r] : value.pointer[r * length + $0] }
                        let stored = file.row(tensor, r, length: length)
                        assertStored(stored, row, as: expectedType, "\(name) row \(r) \(type)")
                    }
                }
            }
        }
    }

    /// `stored` is `row` in `type`: exactly for F32, the nearest half for F16 (bfloat16 for BF16), and for the block types the values of
    /// llama.cpp's reference quantizers (within half a step of the original, the block's extreme exact for Q4_0).
    func assertStored(_ stored: [Float], _ row: [Float], as type: GGUFTensorType, _ message: String) {
        XCTAssertEqual(stored.count, row.count, message)
        switch type {
        case .f32:
            XCTAssertEqual(stored, row, message)
        case .f16:
            #if !(os(macOS) && arch(x86_64))
            XCTAssertEqual(stored, row.map { Float(Float16($0)) }, message)
            #endif
        case .bf16:
            XCTAssertEqual(stored, row.map { BFloat16($0).float }, message)
        case .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k:
            XCTFail("\(message): SwiftGPT writes no \(type)")
        case .q8_0, .q4_0:
            for block in stride(from: 0, to: row.count, by: 32) {
                let values = Array(row[block..<(block + 32)]), decoded = Array(stored[block..<(block + 32)])
                let largest = values.map(abs).max()!
                let step = type == .q8_0 ? largest / 127 : largest / 8
                for (x, y) in zip(values, decoded) {
                    // Q4_0 clamps a value near the extreme's opposite to 7 steps: up to a whole step from it.
                    let clamped = type == .q4_0 && abs(abs(y) - largest * 7 / 8) < 1e-3 * largest
                    XCTAssertLessThanOrEqual(abs(x - y), step * (clamped ? 1.01 : 0.51) + 1e-3 * largest, message)
                }
                if type == .q4_0, let extreme = values.first(where: { abs($0) == largest }) {
                    XCTAssertEqual(decoded[values.firstIndex(of: extreme)!], extreme, accuracy: largest * 1e-3, "\(message): the extreme is -8 steps")
                }
            }
        }
    }

    /// llama.cpp's `llama-completion` (built by scripts/build_llamacpp.sh; skipped when absent) continues a prompt
    /// greedily with an exported F32 file as `gpt` does: the same tokens. The model's weights are scaled up so that
    /// its next-token distributions are peaked (a random model's near-ties would compare rounding, not the format).
    func testLlamaCppContinuesAnExportedModelAsGPTDoes() throws {
        let binary = ProcessInfo.processInfo.environment["LLAMACPP_BIN"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/llama.cpp/build/bin")
        let completion = binary.appendingPathComponent("llama-completion")
        guard FileManager.default.isExecutableFile(atPath: completion.path) else {
            throw XCTSkip("llama.cpp is not built (scripts/build_llamacpp.sh, or LLAMACPP_BIN=folder of llama-completion)")
        }
        let folder = try temporaryDirectory(self), url = folder.appendingPathComponent("m.gguf")
        let tokenizer = try TokenizerLoading.gpt2()
        var config = tinyConfig()
        (config.vocabularySize, config.embeddingWidth, config.mlpWidth, config.contextLength) = (50257, 64, 256, 64)
        let model = try GPTModel(config: config, seed: 11)
        let values = model.parameters.values
        for i in 0..<values.count { values.pointer[i] *= 4 }
        model.parameters.valuesDidChange()
        try GGUFExport.write(model, tokenizer: tokenizer, chatTemplate: nil, name: "tiny", type: .f32, to: url)
        let prompt = "The quick brown fox"
        var options = SamplingOptions()
        (options.temperature, options.maxNewTokens) = (0, 12)
        let ours = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode(prompt)], options: options)[0]
        let process = Process()
        process.executableURL = completion
        process.arguments = ["-m", url.path, "-p", prompt, "-n", "12", "--temp", "0", "-no-cnv", "--no-display-prompt",
                             "-t", "2", "-c", "64", "--ignore-eos", "--no-warmup"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual(text.trimmingCharacters(in: .whitespacesAndNewlines), ours.text.trimmingCharacters(in: .whitespacesAndNewlines),
                       "tokens \(ours.tokens)")
    }

    func testHalfPrecisionRoundsToNearestEven() {
        #if !(os(macOS) && arch(x86_64))
        var random = SeededRandom(seed: 5)
        var values: [Float] = [0, -0, 1, -2.5, 65504, 65520, 65519.99, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, .infinity, -.infinity]
        values += (0..<2000).map { _ in (random.nextFloat() * 2 - 1) * [1e-6, 1e-3, 1, 100, 6e4][random.nextInt(below: 5)] }
        for x in values {
            XCTAssertEqual(GGUFExport.halfBits(x), Float16(x).bitPattern, "\(x)")
        }
        XCTAssertTrue(Float16(bitPattern: GGUFExport.halfBits(.nan)).isNaN)
        #endif
    }

    func testModelsLlamaCppCannotRunAreRefusedWithTheReason() throws {
        let folder = try temporaryDirectory(self), url = folder.appendingPathComponent("x.gguf")
        let gpt2Tokenizer = try TokenizerLoading.gpt2()
        var postNorm = tinyConfig(layout: .postNorm)
        postNorm.vocabularySize = 50257
        let neo = tinyNeoConfig()
        let characters = try CharacterTokenizer(characters: (0..<23).map { Unicode.Scalar(UInt8(97 + $0)) })
        for (config, tokenizer, reason) in [(postNorm, gpt2Tokenizer as any Tokenizer, "post-ln"), (neo, characters, "sparse attention"),
                                            (tinyConfig(), characters, "byte-level BPE")] {
            let error = assertThrows(FileError.self, .unsupported, try GGUFExport.write(try GPTModel(config: config, seed: 1), tokenizer: tokenizer,
                                                                                     chatTemplate: nil, name: "x", type: .f32, to: url))
            XCTAssertTrue(error?.message.contains(reason) ?? false, "\(String(describing: error))")
            XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        }
    }
}

/// A GGUF file read back: its key/value pairs and tensor descriptions (a reader for these tests, trusting its input).
struct ParsedGGUF {
    struct TensorInfo {
        let shape: [Int]
        let type: UInt32
        let offset: Int
    }

    var values: [String: Any] = [:]
    var tensors: [String: TensorInfo] = [:]
    let data: Data
    let dataStart: Int

    init(_ data: Data) throws {
        self.data = data
        var at = 0
        func read<T: FixedWidthInteger>(_: T.Type) -> T {
            defer { at += MemoryLayout<T>.size }
            return data.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
        }
        func string() -> String {
            let count = Int(read(UInt64.self))
            defer { at += count }
            return String(decoding: data[at..<(at + count)], as: UTF8.self)
        }
        func value(_ type: UInt32) -> Any {
            switch type {
            case 4: return read(UInt32.self)
            case 5: return read(Int32.self)
            case 6: return Float(bitPattern: read(UInt32.self))
            case 7: return read(UInt8.self) != 0
            case 8: return string()
            case 9:
                let element = read(UInt32.self), count = Int(read(UInt64.self))
                if element == 8 { return (0..<count).map { _ in string() } }
                if element == 5 { return (0..<count).map { _ in read(Int32.self) } }
                return (0..<count).map { _ in value(element) }
            default: XCTFail("value type \(type)"); return 0
            }
        }
        XCTAssertEqual(String(decoding: data[0..<4], as: UTF8.self), "GGUF")
        at = 4
        XCTAssertEqual(read(UInt32.self), 3)
        let tensorCount = Int(read(UInt64.self)), keyCount = Int(read(UInt64.self))
        for _ in 0..<keyCount {
            let key = string()
            values[key] = value(read(UInt32.self))
        }
        for _ in 0..<tensorCount {
            let name = string(), dimensions = Int(read(UInt32.self))
            let shape = (0..<dimensions).map { _ in Int(read(UInt64.self)) }
            let type = read(UInt32.self)
            tensors[name] = TensorInfo(shape: shape, type: type, offset: Int(read(UInt64.self)))
        }
        dataStart = (at + 31) / 32 * 32
    }

    /// Row `r` of a tensor whose rows hold `length` values, decoded to floats.
    func row(_ tensor: TensorInfo, _ r: Int, length: Int) -> [Float] {
        data.withUnsafeBytes { bytes in
            let base = dataStart + tensor.offset
            switch tensor.type {
            case 0:
                return (0..<length).map { Float(bitPattern: bytes.loadUnaligned(fromByteOffset: base + (r * length + $0) * 4, as: UInt32.self)) }
            case 1:
                return (0..<length).map { halfValue(bytes.loadUnaligned(fromByteOffset: base + (r * length + $0) * 2, as: UInt16.self)) }
            case 30:
                return (0..<length).map { Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: base + (r * length + $0) * 2, as: UInt16.self)) << 16) }
            case 8, 2:
                let blockBytes = tensor.type == 8 ? 34 : 18, rowStart = base + r * length / 32 * blockBytes
                return (0..<length).map { i in
                    let block = rowStart + i / 32 * blockBytes, j = i % 32
                    let scale = halfValue(bytes.loadUnaligned(fromByteOffset: block, as: UInt16.self))
                    if tensor.type == 8 { return Float(Int8(bitPattern: bytes[block + 2 + j])) * scale }
                    let byte = bytes[block + 2 + j % 16]
                    return Float(Int(j < 16 ? byte & 15 : byte >> 4) - 8) * scale
                }
            default:
                XCTFail("tensor type \(tensor.type)")
                return []
            }
        }
    }

    /// The value of IEEE half bits.
    func halfValue(_ bits: UInt16) -> Float {
        let sign: Float = bits & 0x8000 != 0 ? -1 : 1, exponent = Int(bits >> 10 & 0x1F), mantissa = Float(bits & 0x3FF)
        if exponent == 0 { return sign * mantissa * Float(sign: .plus, exponent: -24, significand: 1) }
        if exponent == 31 { return mantissa == 0 ? sign * .infinity : .nan }
        return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}
