import Foundation
import GPTUtilities

/// One token per Unicode scalar, with the vocabulary taken from a corpus (as nanoGPT's shakespeare_char), and
/// optional special tokens after the characters.
package final class CharacterTokenizer: Tokenizer {
    package static let fileName = "char_tokenizer.json"
    package let kind = "char"
    /// The vocabulary, in id order.
    package let characters: [Unicode.Scalar]
    /// Special tokens, with ids from `characters.count` on.
    package let specialTokens: [String]
    private let ids: [UInt32: Int32]

    package var vocabularySize: Int { characters.count + specialTokens.count }
    /// The id of the special token `<|endoftext|>`, when the vocabulary has it.
    package var endOfText: Int32? { specialTokens.firstIndex(of: "<|endoftext|>").map { Int32(characters.count + $0) } }

    /// A tokenizer whose vocabulary is `characters` in that order, then `specialTokens` (all distinct).
    package init(characters: [Unicode.Scalar], specialTokens: [String] = []) throws {
        var ids: [UInt32: Int32] = [:]
        for (id, character) in characters.enumerated() {
            guard ids.updateValue(Int32(id), forKey: character.value) == nil else {
                throw TokenizerError(.invalidVocabulary, "character \(String(character).debugDescription) appears twice in the vocabulary")
            }
        }
        guard Set(specialTokens).count == specialTokens.count, !specialTokens.contains("") else {
            throw TokenizerError(.invalidVocabulary, "special tokens must be distinct and not empty")
        }
        self.characters = characters
        self.specialTokens = specialTokens
        self.ids = ids
    }

    package func addingSpecialTokens(_ names: [String]) throws -> any Tokenizer {
        if let name = names.first(where: specialTokens.contains) { throw TokenizerError(.duplicateSpecialToken, "\(name) is already a special token of this vocabulary") }
        return try CharacterTokenizer(characters: characters, specialTokens: specialTokens + names)
    }

    /// The vocabulary of a corpus: its distinct scalars in code-point order.
    package convenience init(corpus: some Sequence<String>) throws {
        var seen = Set<UInt32>()
        for text in corpus { for scalar in text.unicodeScalars { seen.insert(scalar.value) } }
        try self.init(characters: seen.sorted().map { Unicode.Scalar($0)! })
    }

    package func encode(bytes: [UInt8]) throws -> [Int32] {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TokenizerError(.unencodableText, "the character tokenizer needs valid UTF-8 text")
        }
        var result: [Int32] = []
        result.reserveCapacity(bytes.count)
        for scalar in text.unicodeScalars {
            guard let id = ids[scalar.value] else {
                throw TokenizerError(.unencodableText, "character \(String(scalar).debugDescription) (U+\(String(scalar.value, radix: 16, uppercase: true))) is not in the vocabulary")
            }
            result.append(id)
        }
        return result
    }

    package func encode(_ text: String, allowedSpecial: Set<String>) throws -> [Int32] {
        if let unknown = allowedSpecial.first(where: { !specialTokens.contains($0) }) {
            throw TokenizerError(.unknownSpecialToken, "unknown special token \(unknown)")
        }
        let names = specialTokens.filter(allowedSpecial.contains)
        var result: [Int32] = []
        for (run, special) in SpecialTokenSplit.segments(Array(text.utf8), specials: names.map { Array($0.utf8) }) {
            result += try encode(bytes: Array(run))
            if let special { result.append(Int32(characters.count + specialTokens.firstIndex(of: names[special])!)) }
        }
        return result
    }

    package func decodeBytes(_ ids: [Int32]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0, Int(id) < vocabularySize else {
                throw TokenizerError(.idOutsideVocabulary, "token id \(id) is outside the vocabulary (0..<\(vocabularySize))")
            }
            if Int(id) < characters.count {
                bytes += Array(String(characters[Int(id)]).utf8)
            } else {
                bytes += Array(specialTokens[Int(id) - characters.count].utf8)
            }
        }
        return bytes
    }

    private struct File: Codable {
        var type = "char"
        var characters: [String]
        var specialTokens: [String]?
    }

    package func save(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted]
        let data = try encoder.encode(File(characters: characters.map { String($0) },
                                           specialTokens: specialTokens.isEmpty ? nil : specialTokens))
        try AtomicFile.write(data, to: directory.appendingPathComponent(Self.fileName))
    }

    /// Reads a vocabulary written by `save(to:)`.
    package static func load(from url: URL) throws -> CharacterTokenizer {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FileError(url: url, reason: .unreadable, message: "cannot read the character vocabulary (\(error.localizedDescription))")
        }
        guard let file = try? JSONDecoder().decode(File.self, from: data), file.type == "char" else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not a character-tokenizer file (expected {\"type\": \"char\", \"characters\": [...]})")
        }
        var scalars: [Unicode.Scalar] = []
        for text in file.characters {
            guard text.unicodeScalars.count == 1 else {
                throw FileError(url: url, reason: .malformed(line: nil), message: "entry \(text.debugDescription) is not exactly one character")
            }
            scalars.append(text.unicodeScalars.first!)
        }
        do { return try CharacterTokenizer(characters: scalars, specialTokens: file.specialTokens ?? []) } catch let error as TokenizerError {
            throw FileError(url: url, reason: .malformed(line: nil), message: error.message)
        }
    }
}
