import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// One demonstration for supervised fine-tuning: a conversation whose assistant turns are what the model learns to
/// write.
package struct Demonstration: Equatable, Sendable {
    package var messages: [ChatMessage]
    /// The 1-based line of the file it came from.
    package var line: Int

    package init(messages: [ChatMessage], line: Int) {
        self.messages = messages
        self.line = line
    }
}

/// A demonstration as tokens: the ids, and for each id whether the loss trains the model to write it.
package struct EncodedDemonstration: Equatable, Sendable {
    package var ids: [Int32]
    package var trained: [Bool]
    /// The fraction of the demonstration's tokens cut to fit the context (0 when nothing was).
    package var lostFraction: Double
    /// Whether it was cut to fit the context.
    package var truncated: Bool { lostFraction > 0 }

    package init(ids: [Int32], trained: [Bool], lostFraction: Double = 0) {
        precondition(ids.count == trained.count, "one flag per id")
        self.ids = ids
        self.trained = trained
        self.lostFraction = lostFraction
    }

    /// Next-token targets of each position: the following id where that id is trained, else -1 (no loss).
    package var targets: [Int32] {
        (0..<ids.count).map { t in t + 1 < ids.count && trained[t + 1] ? ids[t + 1] : -1 }
    }
}

/// Reads demonstration files: JSONL with either Alpaca's `{"instruction", "input", "response"}` (the user's turn is
/// the instruction, followed by a blank line and the input when there is one; `input` may be absent) or
/// `{"messages": [{"role", "content"}, …]}` with roles system, user and assistant and at least one assistant turn.
/// Every line is checked first; the first bad one is an error naming the file, the line and the field.
package enum DemonstrationDataset {
    package static func load(_ url: URL) throws -> [Demonstration] {
        try JSONLines.map(url) { line, object, fail in
            if let value = object["messages"] {
                let messages = try ChatMessage.list(fromJSON: value, fail: fail)
                guard messages.contains(where: { $0.role == .assistant }) else { throw fail("'messages' has no assistant turn to learn") }
                return Demonstration(messages: messages, line: line)
            }
            func text(_ field: String, required: Bool = true) throws -> String {
                guard let value = object[field] else {
                    if required { throw fail("missing field '\(field)' (a line holds instruction/input/response or messages)") }
                    return ""
                }
                guard let text = value as? String else { throw fail("field '\(field)' must be a string") }
                return text
            }
            let instruction = try text("instruction"), input = try text("input", required: false), response = try text("response")
            let request = input.isEmpty ? instruction : instruction + "\n\n" + input
            return Demonstration(messages: [ChatMessage(role: .user, content: request), ChatMessage(role: .assistant, content: response)],
                                 line: line)
        }
    }

    /// Each demonstration rendered by `template` and tokenized; one longer than `contextLength` keeps its first
    /// `contextLength` tokens, and one left without a trained token is dropped (counted in `dropped`).
    package static func encode(_ demonstrations: [Demonstration], from source: URL, template: ChatTemplate,
                              tokenizer: any Tokenizer, contextLength: Int) throws -> (examples: [EncodedDemonstration], dropped: Int) {
        var examples: [EncodedDemonstration] = [], dropped = 0
        for demonstration in demonstrations {
            let (ids, trained): ([Int32], [Bool])
            do { (ids, trained) = try template.trainingTokens(demonstration.messages, tokenizer: tokenizer) } catch {
                throw FileError(url: source, reason: .malformed(line: demonstration.line), message: "line \(demonstration.line): \(error)")
            }
            let kept = min(ids.count, contextLength)
            // The first token is never a target: a demonstration needs a trained token after it.
            guard trained[1..<max(kept, 1)].contains(true) else { dropped += 1; continue }
            examples.append(EncodedDemonstration(ids: Array(ids[..<kept]), trained: Array(trained[..<kept]), lostFraction: Double(ids.count - kept) / Double(ids.count)))
        }
        return (examples, dropped)
    }
}
