import Foundation
import GPTUtilities

/// Turns text into token ids and back. Training, generation and serving use tokenizers only through this protocol.
public protocol Tokenizer: Sendable {
    /// Number of token ids (the model's vocabulary size must be at least this).
    var vocabularySize: Int { get }
    /// The id that marks the end of a document, if the vocabulary has one.
    var endOfText: Int32? { get }
    /// A short name for logs and metadata, such as `gpt2` or `char`.
    var kind: String { get }

    /// Encodes UTF-8 bytes (which need not be valid UTF-8) as ordinary text: special tokens are plain text here.
    func encode(bytes: [UInt8]) throws -> [Int32]
    /// Encodes text, recognising the special tokens named in `allowedSpecial` and treating all others as plain text.
    func encode(_ text: String, allowedSpecial: Set<String>) throws -> [Int32]
    /// The bytes that `ids` stand for; throws for an id outside the vocabulary.
    func decodeBytes(_ ids: [Int32]) throws -> [UInt8]
    /// Writes the files that describe this tokenizer into `directory` (a model directory carries them).
    func save(to directory: URL) throws
    /// A copy with special tokens `names` appended, taking ids `vocabularySize`, `vocabularySize + 1`, …
    /// (a name that is already a special token is an error).
    func addingSpecialTokens(_ names: [String]) throws -> any Tokenizer
}

extension Tokenizer {
    /// Encodes text with no special tokens recognised (as tiktoken's `encode_ordinary`).
    public func encode(_ text: String) throws -> [Int32] {
        try encode(bytes: Array(text.utf8))
    }

    /// Decodes `ids` to text; byte sequences that are not valid UTF-8 become U+FFFD.
    public func decode(_ ids: [Int32]) throws -> String {
        String(decoding: try decodeBytes(ids), as: UTF8.self)
    }
}

/// Bad tokenizer input or files.
public typealias TokenizerError = DomainError<TokenizerProblem>

/// The kinds of problem a tokenizer meets (`TokenizerError`'s reasons).
public enum TokenizerProblem: Equatable, Sendable {
    /// The vocabulary, merges or special tokens that make a tokenizer contradict each other or are incomplete.
    case invalidVocabulary
    /// Text that this tokenizer cannot encode (a character outside a character vocabulary, invalid UTF-8).
    case unencodableText
    /// A token id outside the vocabulary.
    case idOutsideVocabulary
    /// A special token the vocabulary does not have.
    case unknownSpecialToken
    /// A special token added twice.
    case duplicateSpecialToken
    /// No tokenizer files where they were looked for.
    case notFound
}
