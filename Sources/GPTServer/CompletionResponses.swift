import Foundation
import GPTModels

/// The JSON of OpenAI's completion and chat responses and of their streamed chunks.
struct CompletionResponses {
    let id: String
    let created: Int
    let model: String
    /// Completions per prompt (a choice's index is prompt × n + choice).
    let choicesPerPrompt: Int

    func index(prompt: Int, choice: Int) -> Int { prompt * choicesPerPrompt + choice }

    static func finishReason(_ reason: FinishReason) -> JSONValue {
        reason == .length ? "length" : "stop"
    }

    static func usage(prompt: Int, completion: Int) -> JSONValue {
        ["prompt_tokens": JSONValue(prompt), "completion_tokens": JSONValue(completion), "total_tokens": JSONValue(prompt + completion)]
    }

    // MARK: /v1/completions

    /// The whole response to a completion request; `firstTokens` holds each prompt's first token's text (echoed
    /// prompts list it without a log-probability).
    func completion(_ completions: [Completion], firstTokens: [String], usage: JSONValue) -> JSONValue {
        let choices = completions.sorted { index(prompt: $0.prompt, choice: $0.choice) < index(prompt: $1.prompt, choice: $1.choice) }
            .map { c -> JSONValue in
                ["text": .string(c.text), "index": JSONValue(index(prompt: c.prompt, choice: c.choice)),
                 "logprobs": c.logprobs.map { legacyLogprobs(prompt: c.promptLogprobs, firstToken: firstTokens[c.prompt], generated: $0) } ?? .null,
                 "finish_reason": Self.finishReason(c.finishReason)]
            }
        return ["id": .string(id), "object": "text_completion", "created": JSONValue(created), "model": .string(model),
                "choices": .array(choices), "usage": usage]
    }

    /// A streamed piece of a completion.
    func completionChunk(prompt: Int, choice: Int, text: String, logprobs: [TokenLogprob]?, finish: FinishReason?) -> JSONValue {
        ["id": .string(id), "object": "text_completion", "created": JSONValue(created), "model": .string(model),
         "choices": [["text": .string(text), "index": JSONValue(index(prompt: prompt, choice: choice)),
                      "logprobs": logprobs.map { legacyLogprobs(prompt: nil, firstToken: "", generated: $0) } ?? .null,
                      "finish_reason": finish.map(Self.finishReason) ?? .null]]]
    }

    /// The completions endpoint's log-probabilities: token texts, their log-probabilities (null for the prompt's
    /// first token when it is echoed), the top alternatives as text → log-probability, and each token's character
    /// offset in the returned text.
    private func legacyLogprobs(prompt: [TokenLogprob]?, firstToken: String, generated: [TokenLogprob]) -> JSONValue {
        var tokens: [JSONValue] = [], values: [JSONValue] = [], tops: [JSONValue] = [], offsets: [JSONValue] = []
        var offset = 0
        func add(text: String, logprob: JSONValue, top: JSONValue) {
            tokens.append(.string(text))
            values.append(logprob)
            tops.append(top)
            offsets.append(JSONValue(offset))
            offset += text.unicodeScalars.count
        }
        func top(_ l: TokenLogprob) -> JSONValue {
            var entries: [String: JSONValue] = [:]
            for a in l.alternatives where entries[a.text] == nil { entries[a.text] = JSONValue(a.logprob) }
            return .object(entries)
        }
        if let prompt {
            // The prompt's first token has no prediction.
            add(text: firstToken, logprob: .null, top: .null)
            for l in prompt { add(text: l.text, logprob: JSONValue(l.logprob), top: top(l)) }
        }
        for l in generated { add(text: l.text, logprob: JSONValue(l.logprob), top: top(l)) }
        return ["tokens": .array(tokens), "token_logprobs": .array(values), "top_logprobs": .array(tops), "text_offset": .array(offsets)]
    }

    // MARK: /v1/chat/completions

    /// The whole response to a chat request.
    func chat(_ completions: [Completion], replies: [Int: String], usage: JSONValue) -> JSONValue {
        let choices = completions.sorted { $0.choice < $1.choice }.map { c -> JSONValue in
            ["index": JSONValue(c.choice),
             "message": ["role": "assistant", "content": .string(replies[c.choice] ?? c.text), "refusal": nil],
             "logprobs": c.logprobs.map { ["content": .array($0.map(Self.chatLogprob)), "refusal": nil] } ?? .null,
             "finish_reason": Self.finishReason(c.finishReason)]
        }
        return ["id": .string(id), "object": "chat.completion", "created": JSONValue(created), "model": .string(model),
                "choices": .array(choices), "usage": usage, "system_fingerprint": nil]
    }

    /// A streamed piece of a chat reply: `delta` holds the role (first chunk) and/or content.
    func chatChunk(choice: Int, delta: JSONValue, logprobs: [TokenLogprob]?, finish: FinishReason?) -> JSONValue {
        ["id": .string(id), "object": "chat.completion.chunk", "created": JSONValue(created), "model": .string(model),
         "system_fingerprint": nil,
         "choices": [["index": JSONValue(choice), "delta": delta,
                      "logprobs": logprobs.map { ["content": .array($0.map(Self.chatLogprob)), "refusal": nil] } ?? .null,
                      "finish_reason": finish.map(Self.finishReason) ?? .null]]]
    }

    /// The last chunk of a stream whose client asked for usage: no choices, the token counts.
    func usageChunk(object: String, usage: JSONValue) -> JSONValue {
        ["id": .string(id), "object": .string(object), "created": JSONValue(created), "model": .string(model),
         "choices": [], "usage": usage]
    }

    private static func chatLogprob(_ l: TokenLogprob) -> JSONValue {
        ["token": .string(l.text), "logprob": JSONValue(l.logprob), "bytes": .array(l.bytes.map { JSONValue(Int($0)) }),
         "top_logprobs": .array(l.alternatives.map {
             ["token": .string($0.text), "logprob": JSONValue($0.logprob), "bytes": .array($0.bytes.map { JSONValue(Int($0)) })]
         })]
    }
}
