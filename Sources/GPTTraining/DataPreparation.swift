import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// Turns text files into `train.bin` + `val.bin` token files, `meta.json` and the tokenizer's files.
package enum DataPreparation {
    /// What `meta.json` records.
    package struct Meta: Codable, Equatable {
        package var tokenizer: String
        package var vocabularySize: Int
        package var trainTokens: Int
        package var valTokens: Int
        package var sources: [String]
        package var bytes: Int

        enum CodingKeys: String, CodingKey {
            case tokenizer, sources, bytes
            case vocabularySize = "vocab_size", trainTokens = "train_tokens", valTokens = "val_tokens"
        }
    }

    /// Reads a text file, insisting on non-empty UTF-8.
    package static func readText(_ url: URL) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, reason: .unreadable, message: "cannot read the file")
        }
        guard !data.isEmpty else { throw FileError(url: url, reason: .malformed(line: nil), message: "the file is empty") }
        let bytes = Array(data)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not valid UTF-8 text")
        }
        return bytes
    }

    /// The documents of a file: the whole text, or, for a `.jsonl` file read with `fields`, one document per line
    /// holding those fields' texts (a string, or a list of strings) joined by newlines. A line that is not a JSON
    /// object, or lacks every field, is an error naming the file and line.
    package static func readDocuments(_ url: URL, fields: [String]?) throws -> [[UInt8]] {
        let bytes = try readText(url)
        guard let fields, !fields.isEmpty, url.pathExtension == "jsonl" else { return [bytes] }
        var documents: [[UInt8]] = []
        for (index, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        where !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                throw FileError(url: url, reason: .malformed(line: index + 1), message: "line \(index + 1): not a JSON object")
            }
            let texts = fields.flatMap { field -> [String] in
                if let text = object[field] as? String { return [text] }
                return object[field] as? [String] ?? []
            }
            guard !texts.isEmpty else {
                throw FileError(url: url, reason: .malformed(line: index + 1), message: "line \(index + 1): none of the fields \(fields.joined(separator: ", ")) holds text")
            }
            documents.append(Array(texts.joined(separator: "\n").utf8))
        }
        return documents
    }

    /// Tokenizes `files` (documents separated by the end-of-text token when the tokenizer has one, else by a
    /// newline between the documents of a JSONL file), keeps the last `valFraction` of the tokens for validation and writes
    /// everything into `output`. `.jsonl` files contribute the given `fields` of each line (see `readDocuments`).
    /// Nothing is written unless every file was read and encoded. `progress` gets (bytes done, bytes in all).
    package static func prepare(files: [URL], fields: [String]? = nil, tokenizer: any Tokenizer, valFraction: Double = 0.1,
                               output: URL, progress: (Int, Int) -> Void = { _, _ in }) throws -> Meta {
        guard !files.isEmpty else { throw ConfigurationError(.invalidSetting("files"), "no input files") }
        guard valFraction >= 0, valFraction < 1 else { throw ConfigurationError(.invalidSetting("valFraction"), "the validation fraction must be in [0, 1)") }
        let files = try files.map { ($0, try readDocuments($0, fields: fields)) }
        let total = files.reduce(0) { $0 + $1.1.reduce(0) { $0 + $1.count } }
        let newline = try tokenizer.encode(bytes: [UInt8(ascii: "\n")])
        var ids: [Int32] = []
        var done = 0
        for (index, (url, documents)) in files.enumerated() {
            for (d, document) in documents.enumerated() {
                do {
                    ids += try tokenizer.encode(bytes: document)
                } catch let error as TokenizerError {
                    throw FileError(url: url, reason: .mismatched, message: documents.count > 1 ? "document \(d + 1): \(error.message)" : error.message)
                }
                // Documents are separated by the end-of-text token, or within a JSONL file by a newline without one.
                let last = index + 1 == files.count && d + 1 == documents.count
                if let endOfText = tokenizer.endOfText, !last { ids.append(endOfText) } else if d + 1 < documents.count { ids += newline }
                done += document.count
                progress(done, total)
            }
        }
        let valCount = Int((Double(ids.count) * valFraction).rounded())
        let trainCount = ids.count - valCount
        let meta = Meta(tokenizer: tokenizer.kind, vocabularySize: tokenizer.vocabularySize, trainTokens: trainCount,
                        valTokens: valCount, sources: files.map(\.0.path), bytes: total)
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
    package static func meta(in directory: URL) throws -> Meta {
        let url = directory.appendingPathComponent("meta.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, reason: .missing, message: "missing; prepare the data with `gpt prepare`")
        }
        do { return try JSONDecoder().decode(Meta.self, from: data) } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not a valid meta.json (\(error))")
        }
    }
}
