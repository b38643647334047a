import Foundation
import GPTUtilities
import TensorCore
import Tokenizers

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    /// Who says it.
    public enum Role: String, Sendable, Codable, CaseIterable {
        case system, user, assistant
    }

    /// Who says it.
    public var role: Role
    /// What is said.
    public var content: String

    /// A message from `role`.
    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }

    /// The messages of a JSON `messages` field: a non-empty list of `{"role", "content"}` objects. `fail` makes the
    /// error for a bad one from a message naming the field.
    package static func list(fromJSON value: Any, fail: (String) -> Error) throws -> [ChatMessage] {
        guard let list = value as? [Any], !list.isEmpty else { throw fail("field 'messages' must be a non-empty list") }
        return try list.enumerated().map { k, item -> ChatMessage in
            guard let message = item as? [String: Any] else { throw fail("messages[\(k)] must be an object") }
            guard let name = message["role"] as? String, let role = Role(rawValue: name) else {
                throw fail("messages[\(k)].role must be one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let content = message["content"] as? String else { throw fail("messages[\(k)].content must be a string") }
            return ChatMessage(role: role, content: content)
        }
    }
}

/// How a conversation becomes the text a model reads, stored with the model as `chat_template.json`. Supervised
/// fine-tuning, reward models, PPO, `gpt generate --chat` and the server's chat endpoint all render through it, so
/// that a model is always prompted the way it was trained.
///
/// Each message is its role's pattern with `{content}` replaced; every assistant turn is followed by the end-of-turn
/// marker, a special token when the tokenizer has one by that name. The default is the HH-RLHF form:
/// `\n\nHuman: {message}\n\nAssistant: {reply}<|endoftext|>`.
public struct ChatTemplate: Sendable, Equatable, Codable {
    /// Pattern of a system message.
    public var system: String
    /// Pattern of a user message.
    public var user: String
    /// Pattern of an assistant message (the end-of-turn marker follows it).
    public var assistant: String
    /// Text that opens the assistant's turn the model is asked to write.
    public var generationPrompt: String
    /// Marks the end of an assistant turn: generation stops when the model writes it.
    public var endOfTurn: String

    /// The file a model directory keeps its template in.
    package static let fileName = "chat_template.json"

    /// The HH-RLHF dialogue form, with GPT-2's end-of-text token ending each assistant turn.
    public static let `default` = ChatTemplate(
        system: "{content}", user: "\n\nHuman: {content}", assistant: "\n\nAssistant: {content}",
        generationPrompt: "\n\nAssistant:", endOfTurn: "<|endoftext|>")

    /// A template from the five patterns; each role's pattern holds `{content}` once.
    public init(system: String, user: String, assistant: String, generationPrompt: String, endOfTurn: String) {
        self.system = system
        self.user = user
        self.assistant = assistant
        self.generationPrompt = generationPrompt
        self.endOfTurn = endOfTurn
    }

    enum CodingKeys: String, CodingKey {
        case system, user, assistant
        case generationPrompt = "generation_prompt"
        case endOfTurn = "end_of_turn"
    }

    /// The template in `directory`'s `chat_template.json`, or the default when the model has none.
    public static func load(modelDirectory directory: URL) throws -> ChatTemplate {
        let url = directory.appendingPathComponent(fileName)
        return FileManager.default.fileExists(atPath: url.path) ? try load(file: url) : .default
    }

    /// The template of the model at `path` (a model directory or a training output directory, as `ModelLoading`
    /// opens it), or the default.
    package static func load(model path: String) throws -> ChatTemplate {
        try load(modelDirectory: ModelLoading.resolve(path))
    }

    /// The template in a JSON file.
    package static func load(file url: URL) throws -> ChatTemplate {
        let template: ChatTemplate
        do {
            template = try JSONDecoder().decode(ChatTemplate.self, from: try Data(contentsOf: url))
        } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not a chat template (keys system, user, assistant, generation_prompt, end_of_turn): \(error)")
        }
        try template.validate(source: url.path)
        return template
    }

    /// Writes the template into a model directory, and, as a Jinja template (`chat_template`), into its
    /// `tokenizer_config.json` when it has one, for transformers' `apply_chat_template`.
    public func save(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(self), to: directory.appendingPathComponent(Self.fileName))
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        if let data = FileManager.default.contents(atPath: configURL.path),
           var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
            config["chat_template"] = jinja
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
                                 to: configURL)
        }
    }

    /// The template in Jinja, as transformers' chat templates are written: it renders a list of messages (with
    /// `add_generation_prompt`) to the text `render` gives, the end-of-turn marker written as its text.
    package var jinja: String {
        func literal(_ text: String) -> String {
            var escaped = ""
            for character in text.unicodeScalars {
                switch character {
                case "\\": escaped += "\\\\"
                case "'": escaped += "\\'"
                case "\n": escaped += "\\n"
                case "\r": escaped += "\\r"
                case "\t": escaped += "\\t"
                default: escaped.unicodeScalars.append(character)
                }
            }
            return "'" + escaped + "'"
        }
        func message(_ pattern: String, then suffix: String = "") -> String {
            let parts = pattern.components(separatedBy: "{content}")
            return "{{ \(literal(parts[0])) + message['content'] + \(literal(parts[1] + suffix)) }}"
        }
        return "{% for message in messages %}{% if message['role'] == 'system' %}" + message(system)
            + "{% elif message['role'] == 'user' %}" + message(user)
            + "{% else %}" + message(assistant, then: endOfTurn)
            + "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ " + literal(generationPrompt) + " }}{% endif %}"
    }

    /// Checks that every role's pattern holds `{content}` once and that the end-of-turn marker is not empty.
    package func validate(source: String) throws {
        for (name, pattern) in [("system", system), ("user", user), ("assistant", assistant)]
        where pattern.components(separatedBy: "{content}").count != 2 {
            throw GenerationError(.invalidArgument, "\(source): the \(name) pattern must contain {content} exactly once")
        }
        guard !endOfTurn.isEmpty else { throw GenerationError(.invalidArgument, "\(source): end_of_turn must not be empty") }
    }

    /// What the model writes before a reply's content, after the generation prompt (a space in the default form):
    /// cut from the start of generated replies.
    package var replyPrefix: String {
        let opening = assistant.components(separatedBy: "{content}")[0]
        return opening.hasPrefix(generationPrompt) ? String(opening.dropFirst(generationPrompt.count)) : ""
    }

    /// The conversation's text, with the assistant's next turn opened when `addGenerationPrompt` is set, as pieces:
    /// plain text, and end-of-turn markers kept apart so that only the template's own markers can become special
    /// tokens (a marker typed inside a message stays text).
    package func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> [Piece] {
        var pieces: [Piece] = []
        var text = ""
        for message in messages {
            let pattern = switch message.role {
            case .system: system
            case .user: user
            case .assistant: assistant
            }
            text += pattern.replacingOccurrences(of: "{content}", with: message.content)
            if message.role == .assistant {
                pieces.append(.text(text))
                pieces.append(.endOfTurn)
                text = ""
            }
        }
        if addGenerationPrompt { text += generationPrompt }
        if !text.isEmpty { pieces.append(.text(text)) }
        return pieces
    }

    /// A part of a rendered conversation.
    package enum Piece: Equatable, Sendable {
        case text(String)
        case endOfTurn
    }

    /// The token ids of a rendered conversation: text pieces encoded as ordinary text, end-of-turn markers as the
    /// tokenizer's special token of that name when it has one, else as text.
    package func tokens(_ messages: [ChatMessage], addGenerationPrompt: Bool, tokenizer: any Tokenizer) throws -> [Int32] {
        let marker = try endOfTurnToken(tokenizer)
        var ids: [Int32] = []
        for piece in render(messages, addGenerationPrompt: addGenerationPrompt) {
            switch piece {
            case .text(let text): ids += try tokenizer.encode(text)
            case .endOfTurn:
                if let marker { ids.append(marker) } else { ids += try tokenizer.encode(endOfTurn) }
            }
        }
        return ids
    }

    /// The token ids of a whole conversation for supervised fine-tuning, with whether each token is trained: the
    /// assistant's replies (from after the generation prompt: the reply prefix, the content and the end-of-turn
    /// marker) are, everything else is not. Everything before a reply is tokenized as one text, exactly as the
    /// prompt is at generation time, so the model learns to continue the prompt it will be given.
    package func trainingTokens(_ messages: [ChatMessage], tokenizer: any Tokenizer) throws -> (ids: [Int32], trained: [Bool]) {
        let marker = try endOfTurnToken(tokenizer)
        var ids: [Int32] = [], trained: [Bool] = [], context = ""
        func append(_ tokens: [Int32], trainedAs flag: Bool) {
            ids += tokens
            trained += [Bool](repeating: flag, count: tokens.count)
        }
        for message in messages {
            switch message.role {
            case .system: context += system.replacingOccurrences(of: "{content}", with: message.content)
            case .user: context += user.replacingOccurrences(of: "{content}", with: message.content)
            case .assistant:
                let parts = assistant.components(separatedBy: "{content}")
                let opensWithPrompt = parts[0].hasPrefix(generationPrompt)
                context += opensWithPrompt ? generationPrompt : parts[0]
                append(try tokenizer.encode(context), trainedAs: false)
                context = ""
                append(try tokenizer.encode((opensWithPrompt ? replyPrefix : "") + message.content + parts[1]), trainedAs: true)
                append(try marker.map { [$0] } ?? tokenizer.encode(endOfTurn), trainedAs: true)
            }
        }
        if !context.isEmpty { append(try tokenizer.encode(context), trainedAs: false) }
        return (ids, trained)
    }

    /// A conversation's prompt, fitted to `context` tokens with room for a reply of `replyTokens`.
    package struct FittedPrompt {
        /// The rendered conversation with the assistant's turn opened.
        package var tokens: [Int32]
        /// How many of the oldest messages were left out (and removed from the conversation).
        package var droppedMessages: Int
        /// Whether the start of what remained was cut (one message longer than the context allows).
        package var cut: Bool
    }

    /// The tokens of `messages` with the assistant's turn opened, fitted to `context` with `replyTokens` after them:
    /// while they do not fit, the oldest message after the first `keeping` (a system message stays) is removed from
    /// `messages`, as long as one message is left after those; then the prompt's start is cut.
    package func fittedPrompt(_ messages: inout [ChatMessage], keeping: Int, replyTokens: Int, context: Int,
                              tokenizer: any Tokenizer) throws -> FittedPrompt {
        var prompt = try tokens(messages, addGenerationPrompt: true, tokenizer: tokenizer)
        var dropped = 0
        while prompt.count + replyTokens > context, messages.count - keeping > 1 {
            messages.remove(at: keeping)
            dropped += 1
            prompt = try tokens(messages, addGenerationPrompt: true, tokenizer: tokenizer)
        }
        let cut = prompt.count + replyTokens > context
        if cut { prompt = Array(prompt.suffix(max(1, context - replyTokens))) }
        return FittedPrompt(tokens: prompt, droppedMessages: dropped, cut: cut)
    }

    /// The stop sequences that end a generated reply: none when the end-of-turn marker is the tokenizer's end-of-text
    /// token (generation stops there anyway), else the marker's text.
    package func replyStops(_ tokenizer: any Tokenizer) throws -> [String] {
        let marker = try endOfTurnToken(tokenizer)
        return marker != nil && marker == tokenizer.endOfText ? [] : [endOfTurn]
    }

    /// The single special token that marks the end of a turn, if the tokenizer has one by that name.
    package func endOfTurnToken(_ tokenizer: any Tokenizer) throws -> Int32? {
        guard let ids = try? tokenizer.encode(endOfTurn, allowedSpecial: [endOfTurn]), ids.count == 1,
              (try? tokenizer.encode(endOfTurn)) != ids else { return nil }
        return ids[0]
    }
}
