import Foundation
import GPTUtilities
import TensorCore
import Tokenizers

/// Reads a GPT-2 model from a GGUF file (llama.cpp's format; what `GGUFExport` writes, and what llama.cpp's
/// `convert_hf_to_gguf.py` and `llama-quantize` make of a GPT-2): the `gpt2` architecture's keys and tensors (in the
/// types `GGUFTensorType` lists), with the byte-level BPE tokenizer the file carries. Quantized tensors are decoded to the
/// values they stand for. Other architectures, tokenizers and tensor types are refused by name.
package enum GGUFImport {
    /// Whether `path` names a file (not a folder) that starts as GGUF files do.
    package static func isGGUF(_ path: String) -> Bool {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), !isFolder.boolValue,
              let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 4)) == Data("GGUF".utf8)
    }

    /// The model in the GGUF file `url` and its tokenizer; with a `format`, for decoding in it only (the model holds
    /// its weights once, in its decoding weights; see `HuggingFaceCheckpoint.loadForDecoding(from:format:)`).
    package static func load(from url: URL, packingIn format: WeightFormat? = nil) throws -> (model: GPTModel, weights: DecodeWeights?, tokenizer: BPETokenizer) {
        let file = try GGUFFile(contentsOf: url)
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        let architecture = try file.string("general.architecture")
        guard architecture == "gpt2" else {
            throw FileError(url: url, reason: .unsupported, message: architecture.map { "architecture '\($0)'; SwiftGPT reads GGUF files of GPT-2 ('gpt2')" }
                            ?? "no 'general.architecture'")
        }
        func size(_ key: String) throws -> Int {
            guard let value = try file.integer(key) else { throw fail("missing '\(key)'") }
            guard value >= 1 else { throw fail("'\(key)' is \(value), not a positive size") }
            return value
        }
        let tokenEmbedding = try file.tensor("token_embd.weight")
        guard tokenEmbedding.dimensions.count == 2 else { throw fail("'token_embd.weight' has dimensions \(tokenEmbedding.dimensions), not [width, vocabulary]") }
        let epsilon = try file.number("gpt2.attention.layer_norm_epsilon") ?? 1e-5
        guard epsilon > 0, epsilon < 1 else { throw fail("'gpt2.attention.layer_norm_epsilon' is \(epsilon), not in (0, 1)") }
        let width = try size("gpt2.embedding_length")
        guard width <= GPTConfig.limits.width else { throw fail("'gpt2.embedding_length' must be at most \(GPTConfig.limits.width), got \(width)") }
        let hasOutput = file.tensors.contains { $0.name == "output.weight" }
        let config = try HuggingFaceCheckpoint.checked(GPTConfig(
            vocabularySize: tokenEmbedding.dimensions[1], contextLength: try size("gpt2.context_length"),
            layerCount: try size("gpt2.block_count"), headCount: try size("gpt2.attention.head_count"), embeddingWidth: width,
            mlpWidth: try size("gpt2.feed_forward_length"), activation: .tanh, layerNormEpsilon: Float(epsilon), dropout: 0,
            positions: .learned, layout: .preNorm, tiedOutputEmbedding: !hasOutput), fail: fail)
        let tokenizer = try readTokenizer(file)

        let layout = GGUFExport.tensorNames(layers: config.layerCount, output: hasOutput)
        let names = Dictionary(uniqueKeysWithValues: layout.map { ($0.file, $0.parameter) })
        let transposed = Set(layout.filter(\.transposed).map(\.parameter))
        var stored: [String: HuggingFaceCheckpoint.StoredTensor] = [:]
        for tensor in file.tensors {
            guard let ours = names[tensor.name] else { throw FileError(url: url, reason: .mismatched, message: "unexpected tensor '\(tensor.name)' for a gpt2 model") }
            let name = tensor.name, dimensions = tensor.dimensions
            if transposed.contains(ours) {
                stored[ours] = .init(shape: dimensions, columnReader: { try file.rowReader(name) }) { target in
                    let rows = Tensor(uninitializedShape: dimensions.reversed())
                    try file.read(name, into: rows.pointer)
                    rows.transpose2D(into: target)
                }
            } else {
                stored[ours] = .init(shape: dimensions.reversed(), rowReader: { try file.rowReader(name) }) { try file.read(name, into: $0) }
            }
        }
        let fileNames = Dictionary(uniqueKeysWithValues: layout.map { ($0.parameter, $0.file) })
        let (model, weights) = try HuggingFaceCheckpoint.model(config: config, taskHead: nil, inputFormat: nil, tensors: stored, file: url,
                                                              nameInFile: { fileNames[$0] ?? $0 }, releasePages: file.releaseMappedPages,
                                                              packingIn: format)
        return (model, weights, tokenizer)
    }

    /// The byte-level BPE the file carries (`tokenizer.ggml.*`: GPT-2's model and pre-tokenizer).
    static func readTokenizer(_ file: GGUFFile) throws -> BPETokenizer {
        func fail(_ message: String) -> FileError { FileError(url: file.url, reason: .malformed(line: nil), message: message) }
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" else {
            throw FileError(url: file.url, reason: .unsupported, message: model.map { "tokenizer '\($0)'; SwiftGPT reads GPT-2's byte-level BPE ('gpt2')" }
                            ?? "no 'tokenizer.ggml.model'")
        }
        if let pre = try file.string("tokenizer.ggml.pre"), pre != "gpt-2", pre != "default" {
            throw FileError(url: file.url, reason: .unsupported, message: "pre-tokenizer '\(pre)'; SwiftGPT reads GPT-2's ('gpt-2')")
        }
        guard let tokens = try file.strings("tokenizer.ggml.tokens") else { throw fail("missing 'tokenizer.ggml.tokens'") }
        let mergeLines = try file.strings("tokenizer.ggml.merges") ?? []
        var merges: [(line: Int, left: String, right: String)] = []
        merges.reserveCapacity(mergeLines.count)
        for (index, line) in mergeLines.enumerated() {
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw fail("'tokenizer.ggml.merges'[\(index)] is \(line.debugDescription), not two tokens separated by one space")
            }
            merges.append((index, String(parts[0]), String(parts[1])))
        }
        return try BPETokenizer.byteLevel(tokens: tokens, merges: merges, kind: "bpe",
                                          vocabularyError: { fail("'tokenizer.ggml.tokens': \($0)") },
                                          mergeError: { index, message in fail("'tokenizer.ggml.merges'" + (index.map { "[\($0)]" } ?? "") + ": " + message) })
    }
}
