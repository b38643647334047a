import Foundation
import GPTUtilities

/// Reading and writing the vocabulary files of a byte-level BPE: `vocab.json` + `merges.txt` (Hugging Face names)
/// or `encoder.json` + `vocab.bpe` (OpenAI's names for the same formats).
extension BPETokenizer {
    /// Loads the token → id map and the merge list. Errors name the file and, for merges, the line.
    package static func load(vocabulary vocabularyURL: URL, merges mergesURL: URL, kind: String) throws -> BPETokenizer {
        let vocabulary = try readVocabulary(vocabularyURL)
        var tokens = [String?](repeating: nil, count: (vocabulary.values.max() ?? -1) + 1)
        for (token, id) in vocabulary {
            guard tokens[id] == nil else {
                throw FileError(url: vocabularyURL, reason: .malformed(line: nil), message: "id \(id) is given to two tokens")
            }
            tokens[id] = token
        }
        if let hole = tokens.firstIndex(of: nil) {
            throw FileError(url: vocabularyURL, reason: .malformed(line: nil), message: "no token has id \(hole); ids must be 0..<\(tokens.count)")
        }
        return try byteLevel(tokens: tokens.map { $0! }, merges: try readMerges(mergesURL), kind: kind,
                             vocabularyError: { FileError(url: vocabularyURL, reason: .malformed(line: nil), message: $0) },
                             mergeError: { line, message in
                                 FileError(url: mergesURL, reason: .malformed(line: line), message: (line.map { "line \($0): " } ?? "") + message)
                             })
    }

    /// A byte-level BPE from its tokens' texts in id order (bytes as GPT-2's byte-to-character table writes them) and
    /// its merges ("left right", in rank order, `line` what errors name). A token that is neither one byte nor made by
    /// a merge is a special token (`<|endoftext|>`). Errors are made by `vocabularyError` and `mergeError`.
    package static func byteLevel(tokens: [String], merges mergeLines: [(line: Int, left: String, right: String)], kind: String,
                                  vocabularyError: (String) -> FileError, mergeError: (Int?, String) -> FileError) throws -> BPETokenizer {
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            if let other = vocabulary.updateValue(id, forKey: token) {
                throw vocabularyError("token \(token.debugDescription) has two ids, \(other) and \(id)")
            }
        }
        var merges: [(Int32, Int32)] = []
        var madeByMerge = Set<Int>()
        for (line, left, right) in mergeLines {
            guard let a = vocabulary[left], let b = vocabulary[right] else {
                throw mergeError(line, "\"\(left) \(right)\" uses a token missing from the vocabulary")
            }
            guard let c = vocabulary[left + right] else {
                throw mergeError(line, "the merge of \"\(left) \(right)\" is missing from the vocabulary")
            }
            merges.append((Int32(a), Int32(b)))
            madeByMerge.insert(c)
        }
        var bytes: [[UInt8]?] = [], specials: [String: Int32] = [:]
        for (id, token) in tokens.enumerated() {
            let decoded = ByteLevel.decode(token)
            if let decoded, decoded.count == 1 || madeByMerge.contains(id) {
                bytes.append(decoded)
            } else {
                bytes.append(nil)
                specials[token] = Int32(id)
            }
        }
        do {
            return try BPETokenizer(tokens: bytes, specialTokens: specials, merges: merges, kind: kind)
        } catch let error as TokenizerError {
            throw mergeError(nil, error.message)
        }
    }

    static func readVocabulary(_ url: URL) throws -> [String: Int] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FileError(url: url, reason: .unreadable, message: "cannot read the vocabulary file (\(error.localizedDescription))")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data), let map = object as? [String: Any] else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not a JSON object mapping tokens to ids")
        }
        var vocabulary: [String: Int] = [:]
        vocabulary.reserveCapacity(map.count)
        for (token, value) in map {
            // Ids number the tokens 0..<count, so a larger one is an error (and never sizes an allocation).
            guard let id = JSONNumber.integer(value), id >= 0, id < map.count else {
                throw FileError(url: url, reason: .malformed(line: nil), message: "token \(token.debugDescription) has id \(value), not an integer in 0..<\(map.count) (the number of tokens)")
            }
            vocabulary[token] = id
        }
        return vocabulary
    }

    static func readMerges(_ url: URL) throws -> [(line: Int, left: String, right: String)] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FileError(url: url, reason: .unreadable, message: "cannot read the merges file (\(error.localizedDescription))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not valid UTF-8")
        }
        var result: [(Int, String, String)] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = line.hasSuffix("\r") ? line.dropLast() : line
            if content.isEmpty || (index == 0 && content.hasPrefix("#version")) { continue }
            let parts = content.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw FileError(url: url, reason: .malformed(line: index + 1), message: "line \(index + 1): expected two tokens separated by one space, found \(String(content).debugDescription)")
            }
            result.append((index + 1, String(parts[0]), String(parts[1])))
        }
        return result
    }

    /// Writes `vocab.json` and `merges.txt` into `directory`, atomically, and the same tokenizer as Hugging Face's
    /// `tokenizer.json` (byte-level BPE, GPT-2's pre-tokenizer) and `tokenizer_config.json`, so that transformers'
    /// `AutoTokenizer` and the `tokenizers` library load it.
    package func save(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (vocabulary, merges) = try vocabularyFiles()
        try AtomicFile.write(vocabulary, to: directory.appendingPathComponent("vocab.json"))
        try AtomicFile.write(merges, to: directory.appendingPathComponent("merges.txt"))
        try AtomicFile.write(try huggingFaceTokenizer(), to: directory.appendingPathComponent("tokenizer.json"))
        var config: [String: Any] = ["tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false, "clean_up_tokenization_spaces": false]
        if let endOfText, let name = specialTokens.first(where: { $0.value == endOfText })?.key {
            (config["bos_token"], config["eos_token"], config["unk_token"]) = (name, name, name)
        }
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
                             to: directory.appendingPathComponent("tokenizer_config.json"))
    }

    /// The tokenizer as the `tokenizers` library's `tokenizer.json`.
    func huggingFaceTokenizer() throws -> Data {
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        func entry(_ name: String, _ id: Int32, special: Bool) -> [String: Any] {
            ["id": Int(id), "content": name, "single_word": false, "lstrip": false, "rstrip": false, "normalized": !special, "special": special]
        }
        let added = (specialTokens.map { entry($0.key, $0.value, special: true) } + addedTokens.map { entry($0.key, $0.value, special: false) })
            .sorted { ($0["id"] as! Int) < ($1["id"] as! Int) }
        let document: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "normalizer": preparation.normalizesToNFC ? ["type": "NFC"] as [String: Any] : NSNull(),
            "added_tokens": added,
            "pre_tokenizer": preparation.digits.map { digits -> [String: Any] in
                ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": digits == .individual], byteLevel]]
            } ?? byteLevel,
            "post_processor": byteLevel, "decoder": byteLevel,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": vocabularyTable(),
                      "merges": mergeLines()] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    /// The contents of `vocab.json` and `merges.txt`.
    func serialized() throws -> (Data, Data) {
        let json = try JSONSerialization.data(withJSONObject: vocabularyTable(), options: [.sortedKeys, .withoutEscapingSlashes])
        let text = "#version: 0.2\n" + mergeLines().map { $0 + "\n" }.joined()
        return (json, Data(text.utf8))
    }

    /// Each token's byte-level text (special tokens by name) and its id, as both file formats store the vocabulary.
    func vocabularyTable() -> [String: Int] {
        Dictionary(tokenTexts().enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { $1 })
    }

    /// Each token's byte-level text, special tokens by name, in id order (added tokens are stored as the text of
    /// their bytes, as GPT-NeoX's files store them).
    package func tokenTexts() -> [String] {
        let specialIDs = Dictionary(uniqueKeysWithValues: specialTokens.map { ($0.value, $0.key) })
        return (0..<vocabularySize).map { specialIDs[Int32($0)] ?? ByteLevel.encode(bytes(of: Int32($0))) }
    }

    /// The merges in rank order, each as its two parts' byte-level texts separated by a space.
    package func mergeLines() -> [String] {
        merges.map { ByteLevel.encode(bytes(of: $0.0)) + " " + ByteLevel.encode(bytes(of: $0.1)) }
    }
}
