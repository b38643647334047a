import Foundation
import GPTUtilities

/// Reading Hugging Face tokenizers' `tokenizer.json`, the file most model repositories ship (GPT-NeoX's and Pythia's
/// alone). Byte-level BPE tokenizers are read exactly: the vocabulary and merges, the special tokens, the non-special
/// added tokens (cut out of any text before the merges, as the `tokenizers` library does), an NFC normalizer, and
/// numbers split off first (StarCoder's Digits pre-tokenizer). Anything else (WordPiece, Unigram, another
/// pre-tokenizer, a post-processor that adds tokens) is refused by name rather than encoded differently.
extension BPETokenizer {
    /// Loads the byte-level BPE described by the `tokenizer.json` at `url`. Errors name the file and the field.
    package static func load(huggingFaceFile url: URL) throws -> BPETokenizer {
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw FileError(url: url, reason: .unreadable, message: "cannot read (\(error.localizedDescription))") }
        guard let document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let model = document["model"] as? [String: Any] else { throw fail("no 'model' object") }
        guard let type = model["type"] as? String else { throw fail("'model.type' is missing") }
        guard type == "BPE" else {
            throw fail("'model.type' is \(type): only byte-level BPE tokenizers are supported (GPT-2's, GPT-NeoX's, GPT-J's, StarCoder's kind)").withReason(.unsupported)
        }
        if model["byte_fallback"] as? Bool == true { throw fail("'model.byte_fallback' is true: only byte-level BPE is supported").withReason(.unsupported) }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = model[key] as? String, !affix.isEmpty { throw fail("'model.\(key)' is \(affix.debugDescription): byte-level BPE has none") }
        }
        if let dropout = model["dropout"], !(dropout is NSNull) { throw fail("'model.dropout' is set: BPE dropout is not supported").withReason(.unsupported) }
        var preparation = TextPreparation(normalizesToNFC: try readNormalizer(document["normalizer"], fail: fail))
        preparation.digits = try readPreTokenizer(document["pre_tokenizer"], fail: fail)
        try checkPostProcessor(document["post_processor"], fail: fail)
        if let decoder = document["decoder"], !(decoder is NSNull), (decoder as? [String: Any])?["type"] as? String != "ByteLevel" {
            throw fail("'decoder' is not ByteLevel: only byte-level BPE is supported").withReason(.unsupported)
        }

        // Ids: the vocabulary's and the added tokens' together number 0..<count, each once.
        guard let vocabulary = model["vocab"] as? [String: Any] else { throw fail("'model.vocab' is not an object mapping tokens to ids") }
        let added = try readAddedTokens(document["added_tokens"], fail: fail)
        let limit = vocabulary.count + added.count
        var textOf: [Int: String] = [:], idOf: [String: Int] = [:]
        for (token, value) in vocabulary {
            guard let id = JSONNumber.integer(value), (0..<limit).contains(id) else {
                throw fail("'model.vocab': token \(token.debugDescription) has id \(value), not an integer in 0..<\(limit)")
            }
            guard textOf.updateValue(token, forKey: id) == nil else { throw fail("'model.vocab': id \(id) is given to two tokens") }
            idOf[token] = id
        }
        let addedIDs = Set(added.map(\.id))
        guard addedIDs.count == added.count else { throw fail("'added_tokens': an id is given to two tokens") }
        let count = (Array(textOf.keys) + Array(addedIDs)).max().map { $0 + 1 } ?? 0
        if let hole = (0..<count).first(where: { textOf[$0] == nil && !addedIDs.contains($0) }) {
            throw fail("no token has id \(hole); ids must be 0..<\(count)")
        }

        let mergeTexts = try readMerges(model["merges"], fail: fail)
        var merges: [(Int32, Int32)] = [], madeByMerge = Set<Int>()
        for (rank, (left, right)) in mergeTexts.enumerated() {
            guard let a = idOf[left], let b = idOf[right] else {
                throw fail("'model.merges' entry \(rank): \"\(left) \(right)\" uses a token missing from the vocabulary")
            }
            guard let c = idOf[left + right] else {
                throw fail("'model.merges' entry \(rank): the merge of \"\(left) \(right)\" is missing from the vocabulary")
            }
            merges.append((Int32(a), Int32(b)))
            madeByMerge.insert(c)
        }

        var tokens: [[UInt8]?] = [], specials: [String: Int32] = [:], addedTokens: [String: Int32] = [:]
        let addedByID = Dictionary(uniqueKeysWithValues: added.map { ($0.id, $0) })
        for id in 0..<count {
            let piece = textOf[id].flatMap { ByteLevel.decode($0) }.flatMap { $0.count == 1 || madeByMerge.contains(id) ? $0 : nil }
            if let token = addedByID[id] {
                if token.special { specials[token.content] = Int32(id) } else { addedTokens[token.content] = Int32(id) }
                // A non-special added token that the merges also make stays a piece for them.
                tokens.append(token.special ? nil : piece)
            } else if let piece {
                tokens.append(piece)
            } else {
                tokens.append(nil)
                specials[textOf[id]!] = Int32(id)
            }
        }
        do {
            return try BPETokenizer(tokens: tokens, specialTokens: specials, addedTokens: addedTokens, merges: merges,
                                    preparation: preparation, kind: "bpe")
        } catch let error as TokenizerError {
            throw fail(error.message)
        }
    }

    /// Whether the normalizer is NFC (false for none); any other is an error.
    private static func readNormalizer(_ value: Any?, fail: (String) -> FileError) throws -> Bool {
        guard let value, !(value is NSNull) else { return false }
        guard let normalizer = value as? [String: Any], let type = normalizer["type"] as? String else { throw fail("'normalizer' has no type") }
        switch type {
        case "NFC": return true
        case "Sequence" where (normalizer["normalizers"] as? [Any])?.isEmpty == true: return false
        default: throw fail("'normalizer' \(type) is not supported (supported: none, NFC)").withReason(.unsupported)
        }
    }

    /// The digit splitting before a ByteLevel pre-tokenizer with GPT-2's regular expression and no prefix space:
    /// ByteLevel alone (none), or a Sequence of Digits and ByteLevel (StarCoder's). Any other is an error.
    private static func readPreTokenizer(_ value: Any?, fail: (String) -> FileError) throws -> TextPreparation.DigitSplit? {
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw fail("'pre_tokenizer' is missing: a byte-level BPE needs the ByteLevel pre-tokenizer")
        }
        guard type == "Sequence" else {
            try checkByteLevel(object, field: "pre_tokenizer", fail: fail)
            return nil
        }
        let members = (object["pretokenizers"] as? [[String: Any]]) ?? []
        let names = members.map { ($0["type"] as? String) ?? "?" }
        switch names {
        case ["ByteLevel"]:
            try checkByteLevel(members[0], field: "pre_tokenizer.pretokenizers[0]", fail: fail)
            return nil
        case ["Digits", "ByteLevel"]:
            try checkByteLevel(members[1], field: "pre_tokenizer.pretokenizers[1]", fail: fail)
            return members[0]["individual_digits"] as? Bool == true ? .individual : .runs
        default:
            throw fail("'pre_tokenizer' is a Sequence of \(names.joined(separator: ", ")): supported are ByteLevel, alone or after Digits").withReason(.unsupported)
        }
    }

    /// Checks that `object` is a ByteLevel pre-tokenizer with GPT-2's regular expression and no prefix space.
    private static func checkByteLevel(_ object: [String: Any], field: String, fail: (String) -> FileError) throws {
        let type = (object["type"] as? String) ?? "?"
        guard type == "ByteLevel" else { throw fail("'\(field)' is \(type): only the ByteLevel pre-tokenizer is supported").withReason(.unsupported) }
        if object["add_prefix_space"] as? Bool == true { throw fail("'\(field).add_prefix_space' is true: not supported").withReason(.unsupported) }
        if object["use_regex"] as? Bool == false { throw fail("'\(field).use_regex' is false: not supported (GPT-2's expression is)").withReason(.unsupported) }
    }

    /// Checks that the post-processor adds no tokens: none, ByteLevel, or a template of the sequence alone.
    private static func checkPostProcessor(_ value: Any?, fail: (String) -> FileError) throws {
        guard let value, !(value is NSNull) else { return }
        guard let object = value as? [String: Any], let type = object["type"] as? String else { throw fail("'post_processor' has no type") }
        switch type {
        case "ByteLevel": return
        case "TemplateProcessing":
            if let single = object["single"] as? [[String: Any]], single.count == 1, single[0]["Sequence"] != nil { return }
            throw fail("'post_processor' adds tokens around the text (TemplateProcessing); not supported").withReason(.unsupported)
        default: throw fail("'post_processor' \(type) is not supported (supported: none, ByteLevel)").withReason(.unsupported)
        }
    }

    /// An entry of `added_tokens`.
    private struct AddedToken {
        let id: Int
        let content: String
        let special: Bool
    }

    private static func readAddedTokens(_ value: Any?, fail: (String) -> FileError) throws -> [AddedToken] {
        guard let value, !(value is NSNull) else { return [] }
        guard let entries = value as? [[String: Any]] else { throw fail("'added_tokens' is not a list of objects") }
        return try entries.enumerated().map { index, entry in
            guard let id = JSONNumber.integer(entry["id"]), id >= 0, let content = entry["content"] as? String, !content.isEmpty else {
                throw fail("'added_tokens[\(index)]' needs an integer 'id' ≥ 0 and a non-empty 'content'")
            }
            let special = entry["special"] as? Bool ?? false
            // A non-special added token is cut out of every text: its matching options must be the plain ones.
            if !special, let option = ["lstrip", "rstrip", "single_word"].first(where: { entry[$0] as? Bool == true }) {
                throw fail("'added_tokens[\(index)].\(option)' is true for the non-special token \(content.debugDescription): not supported").withReason(.unsupported)
            }
            return AddedToken(id: id, content: content, special: special)
        }
    }

    /// The merges as pairs of token texts: strings "a b" (the older form) or two-element lists.
    private static func readMerges(_ value: Any?, fail: (String) -> FileError) throws -> [(String, String)] {
        guard let list = value as? [Any] else { throw fail("'model.merges' is not a list") }
        return try list.enumerated().map { index, entry in
            if let text = entry as? String {
                let parts = text.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw fail("'model.merges' entry \(index): expected two tokens separated by one space, found \(text.debugDescription)")
                }
                return (String(parts[0]), String(parts[1]))
            }
            guard let pair = entry as? [String], pair.count == 2 else { throw fail("'model.merges' entry \(index) is not a pair of tokens") }
            return (pair[0], pair[1])
        }
    }
}

