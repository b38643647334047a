import Foundation
import GPTModels

/// A conversation with a `LanguageModel`: it keeps the messages, renders them with the model's chat template, and
/// when they no longer fit the context with a reply's tokens, leaves the oldest out (the system message stays), as
/// `gpt chat` does.
///
/// ```swift
/// let chat = model.chat(system: "You are a helpful assistant.")
/// for try await piece in chat.send("Hello!") { print(piece, terminator: "") }
/// ```
/// Send the next message once the previous reply's stream has ended: the reply joins the conversation then.
public final class ChatSession: @unchecked Sendable {
    /// Sampling for replies unless told otherwise: up to 256 tokens, temperature 0.7, nucleus 0.9.
    public static let defaultOptions: SamplingOptions = {
        var options = SamplingOptions()
        options.maxNewTokens = 256
        options.temperature = 0.7
        options.topP = 0.9
        return options
    }()

    /// The model that replies.
    public let model: LanguageModel
    /// Sampling for each reply (`count` is 1; the template's end-of-turn marker is added to `stop`).
    public let options: SamplingOptions
    private let opening: [ChatMessage]
    private let lock = NSLock()
    private var history: [ChatMessage]
    private var turn: UInt64 = 0

    init(model: LanguageModel, system: String?, options: SamplingOptions) {
        self.model = model
        var options = options
        options.count = 1
        self.options = options
        opening = system.map { [ChatMessage(role: .system, content: $0)] } ?? []
        history = opening
    }

    /// The conversation so far: the system message, then user and assistant turns (older ones may have been left
    /// out to fit the context).
    public var messages: [ChatMessage] { lock.withLock { history } }

    /// Starts a new conversation (the system message stays).
    public func reset() { lock.withLock { history = opening } }

    /// Sends a user's message and streams the reply as it is written (without the template's reply prefix, such as
    /// the space after "Assistant:"). When the stream ends, the reply (all of it,
    /// or what was written before the reading task was cancelled) joins the conversation. Replies are seeded by
    /// `options.seed` and the turn's number, so a conversation replays the same.
    public func send(_ message: String) -> AsyncThrowingStream<String, any Error> {
        let template = model.chatTemplate
        let events: AsyncThrowingStream<GenerationEvent, any Error>
        do {
            var options = self.options
            options.stop += try template.replyStops(model.tokenizer)
            events = try lock.withLock {
                var candidate = history + [ChatMessage(role: .user, content: message)]
                let prompt = try template.fittedPrompt(&candidate, keeping: opening.count, replyTokens: options.maxNewTokens,
                                                       context: model.configuration.contextLength, tokenizer: model.tokenizer)
                options.seed = self.options.seed &+ turn
                let events = try model.submit(prompt.tokens, options: options)
                history = candidate
                turn += 1
                return events
            }
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
        return AsyncThrowingStream { continuation in
            let task = Task {
                var prefixRemover = ReplyPrefixRemover(prefix: template.replyPrefix)
                var reply = "", failure: (any Error)?
                do {
                    for try await event in events {
                        guard case .text(_, _, let text) = event, let piece = prefixRemover.next(text) else { continue }
                        reply += piece
                        continuation.yield(piece)
                    }
                } catch {
                    failure = error
                }
                // In the conversation before the stream ends, so that a message sent after it follows the reply.
                self.lock.withLock { self.history.append(ChatMessage(role: .assistant, content: reply)) }
                continuation.finish(throwing: failure)
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Sends a user's message and returns the whole reply.
    public func reply(to message: String) async throws -> String {
        var reply = ""
        for try await piece in send(message) { reply += piece }
        return reply
    }
}
