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
}
