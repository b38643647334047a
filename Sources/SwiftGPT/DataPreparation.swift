import Foundation
import TensorCore
import Tokenizers

/// Turns text files into `train.bin` + `val.bin` token files, `meta.json` and the tokenizer's files.
public enum DataPreparation {
    /// What `meta.json` records.
    public struct Meta: Codable, Equatable {
        public var tokenizer: String
        public var vocabularySize: Int
        public var trainTokens: Int
        public var valTokens: Int
        public var sources: [String]
        public var bytes: Int

        enum CodingKeys: String, CodingKey {
            case tokenizer, sources, bytes
            case vocabularySize = "vocab_size", trainTokens = "train_tokens", valTokens = "val_tokens"
        }
    }

    /// Reads a text file, insisting on non-empty UTF-8.
    public static func readText(_ url: URL) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, message: "cannot read the file")
        }
        guard !data.isEmpty else { throw FileError(url: url, message: "the file is empty") }
        let bytes = Array(data)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw FileError(url: url, message: "not valid UTF-8 text")
        }
        return bytes
    }

    /// Tokenizes `files` (documents separated by the end-of-text token when the tokenizer has one), keeps the last
    /// `valFraction` of the tokens for validation and writes everything into `output`. Nothing is written unless
    /// every file was read and encoded. `progress` gets (bytes done, bytes in all).
    public static func prepare(files: [URL], tokenizer: any Tokenizer, valFraction: Double = 0.1, output: URL,
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> Meta {
        guard !files.isEmpty else { throw TokenizerError("no input files") }
        guard valFraction >= 0, valFraction < 1 else { throw TokenizerError("the validation fraction must be in [0, 1)") }
        let texts = try files.map(readText)
        let total = texts.reduce(0) { $0 + $1.count }
        var ids: [Int32] = []
        var done = 0
        for (index, text) in texts.enumerated() {
            do {
                ids += try tokenizer.encode(bytes: text)
            } catch let error as TokenizerError {
                throw FileError(url: files[index], message: error.message)
            }
            if let endOfText = tokenizer.endOfText, index + 1 < texts.count { ids.append(endOfText) }
            done += text.count
            progress(done, total)
        }
        let valCount = Int((Double(ids.count) * valFraction).rounded())
        let trainCount = ids.count - valCount
        let meta = Meta(tokenizer: tokenizer.kind, vocabularySize: tokenizer.vocabularySize, trainTokens: trainCount,
                        valTokens: valCount, sources: files.map(\.path), bytes: total)
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        try TokenFile.write(Array(ids[..<trainCount]), vocabularySize: tokenizer.vocabularySize,
                            to: output.appendingPathComponent("train.bin"))
        try TokenFile.write(Array(ids[trainCount...]), vocabularySize: tokenizer.vocabularySize,
                            to: output.appendingPathComponent("val.bin"))
        try tokenizer.save(to: output)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(try encoder.encode(meta), to: output.appendingPathComponent("meta.json"))
        return meta
    }

    /// Reads `meta.json` of a prepared data directory.
    public static func meta(in directory: URL) throws -> Meta {
        let url = directory.appendingPathComponent("meta.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, message: "missing; prepare the data with `gpt prepare`")
        }
        do { return try JSONDecoder().decode(Meta.self, from: data) } catch {
            throw FileError(url: url, message: "not a valid meta.json (\(error))")
        }
    }
}
