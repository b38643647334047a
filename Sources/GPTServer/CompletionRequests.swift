import Foundation
import GPTModels
import Tokenizers

/// What a completion or chat request asks for, checked against the model: prompts as token ids and the sampling
/// options of their completions.
package struct ParsedRequest {
    /// One entry per prompt; each gets `options.count` completions.
    package var prompts: [[Int32]]
    package var options: SamplingOptions
    package var stream: Bool
    /// Send a last chunk with the token usage (streaming).
    var includeUsage: Bool
    /// Chat: the generated text opens with this (cut from replies).
    var replyPrefix: String = ""
    /// The adapter the request's `model` names (an index into `ServedModel.adapters`), or none: the base model.
    package var adapter: Int?
}

/// The model a server answers for: what request parsing needs to know of it.
package struct ServedModel {
    let name: String
    let tokenizer: any Tokenizer
    let contextLength: Int
    let vocabularySize: Int
    let chatTemplate: ChatTemplate
    /// Most completions one request may ask for (n), bounded by the batch.
    let maxChoices: Int
    /// The names of the adapters served over the model, which a request's `model` may name instead of `name`.
    let adapters: [String]

    /// What the fuzz targets and the server build: the synthesized initializer is internal.
    package init(name: String, tokenizer: any Tokenizer, contextLength: Int, vocabularySize: Int, chatTemplate: ChatTemplate, maxChoices: Int,
                 adapters: [String] = []) {
        self.name = name
        self.tokenizer = tokenizer
        self.contextLength = contextLength
        self.vocabularySize = vocabularySize
        self.chatTemplate = chatTemplate
        self.maxChoices = maxChoices
        self.adapters = adapters
    }

    /// What a request's `model` names: the model itself (nil) or one of its adapters (its index).
    func adapter(named name: String) throws -> Int? {
        if name == self.name { return nil }
        guard let index = adapters.firstIndex(of: name) else { throw APIError.modelNotFound(name) }
        return index
    }
}

package enum CompletionRequests {
    /// Reads `/v1/completions`' body.
    package static func completion(_ body: JSONValue, model: ServedModel) throws -> ParsedRequest {
        var fields = try RequestFields(body)
        let adapter = try checkModel(&fields, model)
        let prompts = try promptTokens(fields.raw("prompt"), model: model)
        var options = try sampling(&fields, model: model)
        let maxTokens = try fields.integer("max_tokens", in: 0...model.contextLength) ?? 16
        options.maxNewTokens = maxTokens
        options.logprobs = try fields.integer("logprobs", in: 0...20)
        options.echo = try fields.bool("echo") ?? false
        options.promptLogprobs = options.echo && options.logprobs != nil
        if let bestOf = try fields.integer("best_of", in: 1...model.maxChoices), bestOf != options.count {
            throw APIError.invalidRequest("'best_of' other than n is not supported", param: "best_of")
        }
        if let suffix = try fields.string("suffix"), !suffix.isEmpty {
            throw APIError.invalidRequest("'suffix' (insertion) is not supported by GPT models", param: "suffix")
        }
        let (stream, includeUsage) = try streaming(&fields)
        try fields.finish()
        for prompt in prompts { try checkLength(prompt: prompt.count, completion: maxTokens, field: "max_tokens", model: model) }
        return ParsedRequest(prompts: prompts, options: options, stream: stream, includeUsage: includeUsage, adapter: adapter)
    }

    /// Reads `/v1/chat/completions`' body: the messages rendered with the model's chat template, generation stopping
    /// at the end of the assistant's turn.
    package static func chat(_ body: JSONValue, model: ServedModel) throws -> ParsedRequest {
        var fields = try RequestFields(body)
        let adapter = try checkModel(&fields, model)
        guard let messagesValue = fields.raw("messages") else { throw APIError.invalidRequest("'messages' is required", param: "messages") }
        let messages = try chatMessages(messagesValue)
        let template = model.chatTemplate
        let prompt: [Int32]
        do {
            prompt = try template.tokens(messages, addGenerationPrompt: true, tokenizer: model.tokenizer)
        } catch {
            throw APIError.invalidRequest("the messages cannot be tokenized: \(error)", param: "messages")
        }
        var options = try sampling(&fields, model: model)
        let limit = try fields.integer("max_completion_tokens", in: 1...model.contextLength)
            ?? (try fields.integer("max_tokens", in: 1...model.contextLength))
        let field = body.hasField("max_completion_tokens") ? "max_completion_tokens" : "max_tokens"
        try checkLength(prompt: prompt.count, completion: limit ?? 1, field: field, model: model)
        options.maxNewTokens = limit ?? (model.contextLength - prompt.count)
        if try fields.bool("logprobs") ?? false {
            options.logprobs = try fields.integer("top_logprobs", in: 0...20) ?? 0
        } else if try fields.integer("top_logprobs", in: 0...20) != nil {
            throw APIError.invalidRequest("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
        }
        // The reply ends where the template ends an assistant turn: at its special token, or at its text.
        options.stop += try template.replyStops(model.tokenizer)
        let (stream, includeUsage) = try streaming(&fields)
        try fields.finish()
        return ParsedRequest(prompts: [prompt], options: options, stream: stream, includeUsage: includeUsage,
                             replyPrefix: template.replyPrefix, adapter: adapter)
    }

    /// Reads `/tokenize`'s body: the text's tokens, after the end-of-text token when `add_special` is true.
    package static func tokenize(_ body: JSONValue, model: ServedModel) throws -> [Int32] {
        var fields = try RequestFields(body)
        fields.accept("model")
        guard let content = try fields.string("content") else { throw APIError.invalidRequest("'content' is required", param: "content") }
        let special = try fields.bool("add_special") ?? false
        try fields.finish()
        var tokens = try model.tokenizer.encode(content)
        if special, let start = model.tokenizer.endOfText { tokens.insert(start, at: 0) }
        return tokens
    }

    /// Reads `/detokenize`'s body: the text of its token ids.
    package static func detokenize(_ body: JSONValue, model: ServedModel) throws -> String {
        var fields = try RequestFields(body)
        fields.accept("model")
        guard case .array(let items)? = fields.raw("tokens") else {
            throw APIError.invalidRequest("'tokens' must be a list of token ids", param: "tokens")
        }
        try fields.finish()
        let ids = try items.map { item -> Int32 in
            guard case .number(let n) = item, n == n.rounded(), n >= 0, n < Double(model.tokenizer.vocabularySize) else {
                throw APIError.invalidRequest("'tokens' holds \(String(decoding: item.serialized, as: UTF8.self)), which is not a token id of this tokenizer", param: "tokens")
            }
            return Int32(n)
        }
        return try model.tokenizer.decode(ids)
    }

    /// The adapter the request's `model` names (nil: the model, or no `model`).
    private static func checkModel(_ fields: inout RequestFields, _ model: ServedModel) throws -> Int? {
        fields.accept("user")
        return try fields.string("model").flatMap { try model.adapter(named: $0) }
    }

    /// The sampling fields both endpoints share.
    private static func sampling(_ fields: inout RequestFields, model: ServedModel) throws -> SamplingOptions {
        var o = SamplingOptions()
        o.temperature = Float(try fields.number("temperature", in: 0...2) ?? 1)
        o.topP = Float(try fields.number("top_p", in: 0...1) ?? 1)
        if o.topP == 0 { o.temperature = 0; o.topP = 1 }
        o.count = try fields.integer("n", in: 1...model.maxChoices) ?? 1
        o.stop = try fields.strings("stop", atMost: 4) ?? []
        if o.stop.contains("") { throw APIError.invalidRequest("'stop' sequences must not be empty", param: "stop") }
        if let seed = try fields.integer("seed", in: Int.min...Int.max) { o.seed = UInt64(bitPattern: Int64(seed)) }
        o.presencePenalty = Float(try fields.number("presence_penalty", in: -2...2) ?? 0)
        o.frequencyPenalty = Float(try fields.number("frequency_penalty", in: -2...2) ?? 0)
        if let bias = fields.raw("logit_bias") {
            guard case .object(let entries) = bias else { throw APIError.invalidRequest("'logit_bias' must be an object of token id → bias", param: "logit_bias") }
            for (key, value) in entries {
                guard let id = Int32(key), id >= 0, Int(id) < model.vocabularySize else {
                    throw APIError.invalidRequest("'logit_bias' key '\(key)' is not a token id of this model", param: "logit_bias")
                }
                guard case .number(let b) = value, (-100...100).contains(b) else {
                    throw APIError.invalidRequest("'logit_bias' values must be numbers between -100 and 100", param: "logit_bias")
                }
                o.logitBias[id] = Float(b)
            }
        }
        // Extensions many servers accept (as llama.cpp and vLLM do).
        o.topK = try fields.integer("top_k", in: 0...model.vocabularySize).flatMap { $0 == 0 ? nil : $0 }
        o.minP = Float(try fields.number("min_p", in: 0...0.999) ?? 0)
        o.repetitionPenalty = Float(try fields.number("repetition_penalty", in: 0.01...10) ?? 1)
        return o
    }

    private static func streaming(_ fields: inout RequestFields) throws -> (Bool, Bool) {
        let stream = try fields.bool("stream") ?? false
        var includeUsage = false
        if let options = fields.raw("stream_options") {
            guard stream else { throw APIError.invalidRequest("'stream_options' is only allowed with 'stream': true", param: "stream_options") }
            guard case .object(let entries) = options else { throw APIError.invalidRequest("'stream_options' must be an object", param: "stream_options") }
            for (key, value) in entries {
                guard key == "include_usage" else {
                    throw APIError.invalidRequest("'stream_options.\(key)' is not supported", param: "stream_options.\(key)")
                }
                guard case .bool(let b) = value else { throw APIError.invalidRequest("'stream_options.include_usage' must be a boolean", param: "stream_options.include_usage") }
                includeUsage = b
            }
        }
        return (stream, includeUsage)
    }

    /// A prompt as a string, a list of strings, a list of token ids or a list of such lists.
    static func promptTokens(_ value: JSONValue?, model: ServedModel) throws -> [[Int32]] {
        guard let value else { throw APIError.invalidRequest("'prompt' is required", param: "prompt") }
        func text(_ s: String) throws -> [Int32] {
            if s.isEmpty {
                guard let start = model.tokenizer.endOfText else { throw APIError.invalidRequest("'prompt' must not be empty for this model", param: "prompt") }
                return [start]
            }
            return try model.tokenizer.encode(s)
        }
        func ids(_ items: [JSONValue]) throws -> [Int32]? {
            var result: [Int32] = []
            for item in items {
                guard case .number(let n) = item else { return nil }
                guard n == n.rounded(), n >= 0, n < Double(model.vocabularySize) else {
                    throw APIError.invalidRequest("'prompt' holds \(n), which is not a token id of this model (0..<\(model.vocabularySize))", param: "prompt")
                }
                result.append(Int32(n))
            }
            return result
        }
        let prompts: [[Int32]]
        switch value {
        case .string(let s): prompts = [try text(s)]
        case .array(let items) where !items.isEmpty:
            if let single = try ids(items) {
                prompts = [single]
            } else if items.allSatisfy({ if case .string = $0 { true } else { false } }) {
                prompts = try items.map { if case .string(let s) = $0 { try text(s) } else { [] } }
            } else {
                prompts = try items.map { item in
                    guard case .array(let inner) = item, !inner.isEmpty, let tokens = try ids(inner) else {
                        throw APIError.invalidRequest("'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids", param: "prompt")
                    }
                    return tokens
                }
            }
        default:
            throw APIError.invalidRequest("'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids", param: "prompt")
        }
        return prompts
    }

    /// OpenAI's messages: roles system, developer (as system), user and assistant; content a string or a list of
    /// text parts.
    static func chatMessages(_ value: JSONValue) throws -> [ChatMessage] {
        guard case .array(let items) = value, !items.isEmpty else {
            throw APIError.invalidRequest("'messages' must be a non-empty list of {role, content} objects", param: "messages")
        }
        return try items.enumerated().map { index, item in
            let where_ = "messages[\(index)]"
            guard case .object(let fields) = item else { throw APIError.invalidRequest("'\(where_)' must be an object", param: where_) }
            guard case .string(let roleName)? = fields["role"] else { throw APIError.invalidRequest("'\(where_).role' must be a string", param: "\(where_).role") }
            let role: ChatMessage.Role
            switch roleName {
            case "system", "developer": role = .system
            case "user": role = .user
            case "assistant": role = .assistant
            default: throw APIError.invalidRequest("'\(where_).role' \"\(roleName)\" is not supported (system, developer, user, assistant)", param: "\(where_).role")
            }
            if let unknown = fields.keys.sorted().first(where: { !["role", "content", "name"].contains($0) }) {
                throw APIError.invalidRequest("'\(where_).\(unknown)' is not supported", param: "\(where_).\(unknown)")
            }
            let content: String
            switch fields["content"] {
            case .string(let s)?: content = s
            case .array(let parts)?:
                content = try parts.enumerated().map { p, part -> String in
                    guard case .object(let f) = part, f["type"] == .string("text"), case .string(let text)? = f["text"] else {
                        throw APIError.invalidRequest("'\(where_).content[\(p)]' must be a text part {\"type\": \"text\", \"text\": …}", param: "\(where_).content")
                    }
                    return text
                }.joined()
            default: throw APIError.invalidRequest("'\(where_).content' must be a string or a list of text parts", param: "\(where_).content")
            }
            return ChatMessage(role: role, content: content)
        }
    }

    /// Rejects a prompt and completion that cannot fit the context, in OpenAI's words. The model reads the prompt
    /// and every generated token but the last, so a prompt filling the context still gets one token (what
    /// lm-evaluation-harness asks for when it scores a full-length window).
    static func checkLength(prompt: Int, completion: Int, field: String, model: ServedModel) throws {
        guard prompt + max(completion - 1, 0) <= model.contextLength else {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(model.contextLength) tokens (it reads at most that many and writes one more). However, you requested \(prompt + completion) tokens (\(prompt) in the messages or prompt, \(completion) in the completion). Please reduce the length of the prompt or \(field).",
                param: field, code: "context_length_exceeded")
        }
    }
}

extension JSONValue {
    func hasField(_ name: String) -> Bool {
        if case .object(let fields) = self, let value = fields[name], value != .null { return true }
        return false
    }
}
