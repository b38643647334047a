import Foundation
import GPTUtilities
import TensorCore
import Tokenizers

/// Writes a GPT-2 model as a GGUF file (version 3), the format llama.cpp and ollama load: the `gpt2` architecture's
/// keys and tensor names, GPT-2's byte-level BPE vocabulary and merges, the chat template when the model has one, and
/// the weights in F32, F16, BF16, Q8_0 or Q4_0 (llama.cpp's block formats, quantized as its reference quantizer does).
package enum GGUFExport {
    /// The types it writes matrices in.
    package static let types: [GGUFTensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0]

    /// Why a model cannot be written as GGUF: llama.cpp's `gpt2` architecture has no place for it.
    package static func unsupportedReason(_ config: GPTConfig, tokenizer: any Tokenizer) -> String? {
        if config.layout != .preNorm { return "its LayerNorm layout is \(config.layout.rawValue), not GPT-2's pre-ln" }
        if config.positions != .learned { return "its positions are \(config.positions.rawValue), not GPT-2's learned embedding" }
        if config.activation != .tanh { return "its GELU is exact, not GPT-2's tanh approximation" }
        if let patterns = config.attentionPatterns, patterns.contains(where: { $0 != .dense }) { return "it has sparse attention layers" }
        if let kv = config.keyValueHeadCount, kv != config.headCount { return "its key and value heads are shared" }
        if config.attentionScale != nil { return "its attention scores are not scaled by 1/√(head width)" }
        if !config.attentionBias || !config.attentionOutputBias || config.outputBias { return "its biases are not GPT-2's" }
        guard let bpe = tokenizer as? BPETokenizer, bpe.preparation == TextPreparation(), bpe.addedTokens.isEmpty else {
            return "its tokenizer is not GPT-2's byte-level BPE (llama.cpp's gpt2 tokenizer)"
        }
        if bpe.vocabularySize != config.vocabularySize { return "its tokenizer has \(bpe.vocabularySize) tokens for \(config.vocabularySize) embeddings" }
        return nil
    }

    /// Writes `model` (GPT-2 shaped, with GPT-2's byte-level BPE `tokenizer`) to `url` as GGUF, atomically.
    package static func write(_ model: GPTModel, tokenizer: any Tokenizer, chatTemplate: String?, name: String,
                              type: GGUFTensorType, to url: URL) throws {
        precondition(types.contains(type), "GGUF export writes \(types)")
        let c = model.config
        if let reason = unsupportedReason(c, tokenizer: tokenizer) {
            throw FileError(url: url, reason: .unsupported, message: "cannot write this model as GGUF: \(reason)")
        }
        let bpe = tokenizer as! BPETokenizer
        var header = Header()
        var keys = 0
        func key(_ name: String, _ write: (inout Header) -> Void) { header.string(name); write(&header); keys += 1 }
        key("general.architecture") { $0.value("gpt2") }
        key("general.name") { $0.value(name) }
        key("general.file_type") { $0.value(type.fileType) }
        key("general.alignment") { $0.value(UInt32(alignment)) }
        key("general.quantization_version") { $0.value(UInt32(2)) }
        key("gpt2.context_length") { $0.value(UInt32(c.contextLength)) }
        key("gpt2.embedding_length") { $0.value(UInt32(c.embeddingWidth)) }
        key("gpt2.feed_forward_length") { $0.value(UInt32(c.mlpWidth)) }
        key("gpt2.block_count") { $0.value(UInt32(c.layerCount)) }
        key("gpt2.attention.head_count") { $0.value(UInt32(c.headCount)) }
        key("gpt2.attention.layer_norm_epsilon") { $0.value(c.layerNormEpsilon) }
        key("tokenizer.ggml.model") { $0.value("gpt2") }
        key("tokenizer.ggml.pre") { $0.value("gpt-2") }
        key("tokenizer.ggml.tokens") { $0.value(bpe.tokenTexts()) }
        let special = Set(bpe.specialTokens.values)
        key("tokenizer.ggml.token_type") { $0.value((0..<bpe.vocabularySize).map { special.contains(Int32($0)) ? Int32(3) : 1 }) }
        key("tokenizer.ggml.merges") { $0.value(bpe.mergeLines()) }
        if let end = bpe.endOfText {
            key("tokenizer.ggml.bos_token_id") { $0.value(UInt32(end)) }
            key("tokenizer.ggml.eos_token_id") { $0.value(UInt32(end)) }
            key("tokenizer.ggml.unknown_token_id") { $0.value(UInt32(end)) }
        }
        // GPT-2 puts no token before or after a text.
        key("tokenizer.ggml.add_bos_token") { $0.value(false) }
        key("tokenizer.ggml.add_eos_token") { $0.value(false) }
        if let chatTemplate { key("tokenizer.chat_template") { $0.value(chatTemplate) } }

        // Tensors in llama.cpp's names, each [rows, row length] with ne0 = the row length; Conv1D weights ([in, out])
        // are written transposed, one row per output, as llama.cpp multiplies.
        var tensors: [FileTensor] = []
        func add(_ name: String, _ parameter: String, transposed: Bool, quantized: Bool) {
            let value = model.parameters[parameter].value
            let (rows, length) = value.shape.count == 1 ? (1, value.shape[0]) : transposed ? (value.shape[1], value.shape[0]) : (value.shape[0], value.shape[1])
            let storedType = !quantized || value.shape.count == 1 ? .f32 : length % type.blockLength == 0 ? type : .f16
            tensors.append(FileTensor(name: name, parameter: parameter, rows: rows, length: length, transposed: transposed,
                                  isVector: value.shape.count == 1, type: storedType))
        }
        for tensor in tensorNames(layers: c.layerCount, output: !c.tiedOutputEmbedding) {
            add(tensor.file, tensor.parameter, transposed: tensor.transposed, quantized: tensor.parameter != ParameterNames.positionEmbedding)
        }

        var offset = 0
        for tensor in tensors {
            header.string(tensor.name)
            header.raw(UInt32(tensor.isVector ? 1 : 2))
            header.raw(UInt64(tensor.length))
            if !tensor.isVector { header.raw(UInt64(tensor.rows)) }
            header.raw(tensor.type.ggmlType)
            header.raw(UInt64(offset))
            offset += padded(tensor.type.rowBytes(tensor.length) * tensor.rows)
        }
        var file = Header()
        file.bytes = Array("GGUF".utf8)
        file.raw(UInt32(3))
        file.raw(UInt64(tensors.count))
        file.raw(UInt64(keys))
        file.bytes += header.bytes
        file.bytes += [UInt8](repeating: 0, count: padded(file.bytes.count) - file.bytes.count)

        try AtomicFile.write(to: url) { handle in
            try handle.write(contentsOf: file.bytes)
            for tensor in tensors {
                var bytes = tensor.encoded(model.parameters[tensor.parameter].value)
                bytes += [UInt8](repeating: 0, count: padded(bytes.count) - bytes.count)
                try handle.write(contentsOf: bytes)
            }
        }
    }

    /// llama.cpp's `gpt2` tensors of a model of `layers` blocks (with an untied `output` layer), in the order of the
    /// file: each with SwiftGPT's parameter, and whether the file holds it transposed (a Conv1D weight, [in, out] here,
    /// is stored one row per output, as llama.cpp multiplies).
    static func tensorNames(layers: Int, output: Bool) -> [(file: String, parameter: String, transposed: Bool)] {
        var names = [("token_embd.weight", ParameterNames.tokenEmbedding, false), ("position_embd.weight", ParameterNames.positionEmbedding, false)]
        for layer in 0..<layers {
            let block = ParameterNames.Block(layer), prefix = "blk.\(layer)."
            for (ours, theirs) in [(block.attentionNorm, "attn_norm"), (block.mlpNorm, "ffn_norm")] {
                names += [(prefix + theirs + ".weight", ours.weight, false), (prefix + theirs + ".bias", ours.bias, false)]
            }
            for (ours, theirs) in [(block.queryKeyValue, "attn_qkv"), (block.attentionOutput, "attn_output"),
                                   (block.mlpInput, "ffn_up"), (block.mlpOutput, "ffn_down")] {
                names += [(prefix + theirs + ".weight", ours.weight, true), (prefix + theirs + ".bias", ours.bias, false)]
            }
        }
        names += [("output_norm.weight", ParameterNames.finalNorm.weight, false), ("output_norm.bias", ParameterNames.finalNorm.bias, false)]
        if output { names.append(("output.weight", ParameterNames.outputLayer, false)) }
        return names
    }

    /// The alignment of the tensor data (GGUF's default).
    static let alignment = 32

    /// `count` rounded up to the alignment.
    static func padded(_ count: Int) -> Int { (count + alignment - 1) / alignment * alignment }

    /// One tensor of the file: where its values come from and how they are stored.
    private struct FileTensor {
        let name: String
        let parameter: String
        let rows: Int
        let length: Int
        let transposed: Bool
        let isVector: Bool
        let type: GGUFTensorType

        /// The tensor's rows in its type.
        func encoded(_ value: Tensor) -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(type.rowBytes(length) * rows)
            var row = [Float](repeating: 0, count: length)
            for r in 0..<rows {
                for i in 0..<length { row[i] = transposed ? value.pointer[i * rows + r] : value.pointer[r * length + i] }
                GGUFExport.append(row, as: type, to: &bytes)
            }
            return bytes
        }
    }

    /// Appends `row` in `type`: F32, F16, or blocks of 32 as llama.cpp's reference quantizers make them (Q8_0: scale
    /// max |x| / 127, q = round(x / scale); Q4_0: the block's value of largest magnitude m stored as −8, scale
    /// m / −8, q = min(15, ⌊x / scale + 8.5⌋)), each block's scale as F16 before its codes.
    static func append(_ row: [Float], as type: GGUFTensorType, to bytes: inout [UInt8]) {
        switch type {
        case .f32:
            for x in row { bytes.append(littleEndian: x.bitPattern) }
        case .f16:
            for x in row { bytes.append(littleEndian: halfBits(x)) }
        case .bf16:
            for x in row { bytes.append(littleEndian: BFloat16(x).bitPattern) }
        case .q8_0:
            for block in stride(from: 0, to: row.count, by: 32) {
                var largest: Float = 0
                for x in row[block..<(block + 32)] { largest = max(largest, abs(x)) }
                let scale = largest / 127, inverse: Float = scale != 0 ? 1 / scale : 0
                bytes.append(littleEndian: halfBits(scale))
                for x in row[block..<(block + 32)] { bytes.append(UInt8(bitPattern: Int8(clamping: Int((x * inverse).rounded())))) }
            }
        case .q4_0:
            for block in stride(from: 0, to: row.count, by: 32) {
                var extreme: Float = 0
                for x in row[block..<(block + 32)] where abs(x) > abs(extreme) { extreme = x }
                let scale = extreme / -8, inverse: Float = scale != 0 ? 1 / scale : 0
                bytes.append(littleEndian: halfBits(scale))
                func code(_ x: Float) -> UInt8 {
                    let shifted = x * inverse + 8.5
                    return shifted.isNaN ? 8 : UInt8(max(0, min(15, Int(max(-1, min(16, shifted))))))
                }
                for j in 0..<16 { bytes.append(code(row[block + j]) | code(row[block + j + 16]) << 4) }
            }
        case .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k:
            preconditionFailure("GGUF export writes \(types)")
        }
    }

    /// The IEEE half-precision bits nearest `value` (ties to even; overflow to infinity; NaN stays NaN).
    package static func halfBits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF), mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0) }
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            // A subnormal half (or zero): the 24-bit significand shifted into 10 bits, rounded.
            if e < -10 { return sign }
            let significand = mantissa | 0x80_0000, shift = UInt32(14 - e)
            var half = significand >> shift
            let remainder = significand & ((1 << shift) - 1), halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && half & 1 == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = UInt32(e) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        // A carry out of the mantissa moves to the next exponent (the largest half rounds up to infinity).
        if remainder > 0x1000 || (remainder == 0x1000 && half & 1 == 1) { half += 1 }
        return sign | UInt16(half)
    }

    /// GGUF's key/value section: values in their type's encoding, each after its type number.
    private struct Header {
        var bytes: [UInt8] = []

        /// A number's little-endian bytes, with no type number (the file's counts, tensor descriptions).
        mutating func raw<T: FixedWidthInteger>(_ v: T) { bytes.append(littleEndian: v) }
        /// A GGUF string: its length (u64) and UTF-8 bytes, with no type number (keys and tensor names).
        mutating func string(_ text: String) {
            raw(UInt64(text.utf8.count))
            bytes += text.utf8
        }
        mutating func value(_ v: UInt32) { raw(UInt32(4)); raw(v) }
        mutating func value(_ v: Float) { raw(UInt32(6)); raw(v.bitPattern) }
        mutating func value(_ v: Bool) { raw(UInt32(7)); bytes.append(v ? 1 : 0) }
        mutating func value(_ text: String) { raw(UInt32(8)); string(text) }
        mutating func value(_ texts: [String]) {
            raw(UInt32(9)); raw(UInt32(8)); raw(UInt64(texts.count))
            for text in texts { string(text) }
        }
        mutating func value(_ numbers: [Int32]) {
            raw(UInt32(9)); raw(UInt32(5)); raw(UInt64(numbers.count))
            for number in numbers { raw(number) }
        }
    }
}

extension GGUFTensorType {
    /// `general.file_type`: llama.cpp's name for a file whose matrices are mostly of this type.
    fileprivate var fileType: UInt32 {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q8_0: 7
        case .bf16: 32
        case .q4_1, .q5_0, .q5_1, .q4_k, .q5_k, .q6_k: preconditionFailure("GGUF export writes \(GGUFExport.types)")
        }
    }
}

extension [UInt8] {
    /// Appends the little-endian bytes of `value`.
    fileprivate mutating func append<T: FixedWidthInteger>(littleEndian value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
