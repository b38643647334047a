import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// One human comparison: a prompt (the dialogue so far, rendered) and two replies, `chosen` preferred.
package struct PreferencePair: Equatable, Sendable {
    package var prompt: String
    package var chosen: String
    package var rejected: String
    /// The 1-based line of the file it came from.
    package var line: Int

    package init(prompt: String, chosen: String, rejected: String, line: Int) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.line = line
    }
}

/// Reads preference files: JSONL with `{"prompt", "chosen", "rejected"}` (HH-RLHF's form: `prompt + chosen` is the
/// whole preferred dialogue), other fields ignored. Every line is checked first; the first bad one is an error
/// naming the file, the line and the field.
package enum PreferenceDataset {
    package static func load(_ url: URL) throws -> [PreferencePair] {
        try JSONLines.map(url) { line, object, fail in
            func text(_ field: String) throws -> String {
                guard let value = object[field] else { throw fail("missing field '\(field)'") }
                guard let text = value as? String else { throw fail("field '\(field)' must be a string") }
                return text
            }
            return PreferencePair(prompt: try text("prompt"), chosen: try text("chosen"), rejected: try text("rejected"), line: line)
        }
    }

    /// Each pair as two rows, the prompt followed by the chosen and by the rejected reply, tokenized; a row longer
    /// than `contextLength` keeps its last `contextLength` tokens (the reply, and as much of the prompt as fits).
    package static func encode(_ pairs: [PreferencePair], from source: URL, tokenizer: any Tokenizer,
                              contextLength: Int) throws -> [EncodedExample] {
        try pairs.map { pair in
            var rows: [[Int32]] = []
            for (name, reply) in [("chosen", pair.chosen), ("rejected", pair.rejected)] {
                do { rows.append(try tokenizer.encode(pair.prompt + reply)) } catch {
                    throw FileError(url: source, reason: .malformed(line: pair.line), message: "line \(pair.line): \(error)")
                }
                guard !rows.last!.isEmpty else {
                    throw FileError(url: source, reason: .malformed(line: pair.line), message: "line \(pair.line): fields 'prompt' and '\(name)' are empty together: a reward model needs text to score")
                }
            }
            let lost = rows.map { Double(max(0, $0.count - contextLength)) / Double($0.count) }.max() ?? 0
            return EncodedExample(rows: rows.map { Array($0.suffix(contextLength)) }, label: .index(0), lostFraction: lost)
        }
    }

    /// Each pair as the policy of DPO reads it: the prompt's tokens followed by the chosen reply's, and by the
    /// rejected reply's, each reply closed by `template`'s end-of-turn marker. A sequence longer than `contextLength`
    /// keeps its last `contextLength` tokens (the prompt loses its beginning). A pair with an empty prompt, or whose
    /// replies are the same, is an error naming the file, the line and the field.
    package static func encodeReplies(_ pairs: [PreferencePair], from source: URL, template: ChatTemplate, tokenizer: any Tokenizer,
                                      contextLength: Int) throws -> [EncodedPreferencePair] {
        let marker = try template.endOfTurnToken(tokenizer)
        return try pairs.map { pair in
            func fail(_ message: String) -> FileError {
                FileError(url: source, reason: .malformed(line: pair.line), message: "line \(pair.line): \(message)")
            }
            guard pair.chosen != pair.rejected else {
                throw fail("fields 'chosen' and 'rejected' hold the same reply: the pair prefers neither")
            }
            let prompt: [Int32], replies: [[Int32]]
            do {
                prompt = try tokenizer.encode(pair.prompt)
                let end = try marker.map { [$0] } ?? tokenizer.encode(template.endOfTurn)
                replies = try [pair.chosen, pair.rejected].map { try tokenizer.encode($0) + end }
            } catch { throw fail("\(error)") }
            guard !prompt.isEmpty else { throw fail("field 'prompt' is empty: DPO scores each reply given its prompt") }
            for (name, reply) in zip(["chosen", "rejected"], replies) where reply.isEmpty {
                throw fail("field '\(name)' is empty and the chat template's end of turn adds no token: there is no reply to score")
            }
            let whole = replies.map { prompt + $0 }
            let cuts = whole.map { max(0, $0.count - contextLength) }
            return EncodedPreferencePair(sequences: zip(whole, cuts).map { Array($0.dropFirst($1)) },
                                         replyStarts: cuts.map { max(1, prompt.count - $0) },
                                         lostFraction: zip(whole, cuts).map { Double($1) / Double($0.count) }.max()!)
        }
    }
}

/// A preference pair as DPO's policy reads it.
package struct EncodedPreferencePair: Equatable, Sendable {
    /// The chosen reply's sequence, then the rejected one's: the prompt's tokens followed by the reply's.
    package var sequences: [[Int32]]
    /// In each sequence, the index of the first token scored: the reply's first (or the sequence's second, when the
    /// context cut the whole prompt); every token from there on is scored.
    package var replyStarts: [Int]
    /// The larger fraction of the two sequences' tokens cut to fit the context (0 when nothing was).
    package var lostFraction: Double
}
