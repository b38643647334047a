import ArgumentParser
import Foundation
import SwiftGPT

/// Set by SIGINT while a reply is being written: the reply stops, the conversation goes on.
nonisolated(unsafe) private var replyInterrupted = false

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Talk with a chat model in the terminal: the conversation is kept and rendered by the model's chat template.",
        discussion: """
        Each line read is a user's message; the model's reply is printed as it is written. The whole conversation \
        (with --system first) is rendered by the model's chat template (chat_template.json, as gpt sft saves it; \
        else HH-RLHF's form) with the assistant's turn opened, and the template's end-of-turn marker ends the reply; \
        when the conversation no longer fits the context with --max-tokens, its oldest turns are left out, and a \
        note says so. Each reply draws from its own random stream (--seed plus the turn's number, from 0). /reset starts a new conversation; /exit or end of input (Ctrl-D) leaves; Ctrl-C while a reply \
        is written stops the reply (at the prompt, it leaves). Input need not be a terminal: lines can be piped in.
        """
    )

    @OptionGroup var source: DecodingModelOptions
    @Option(help: "A system message opening every conversation.") var system: String?
    @OptionGroup var sampling: SamplingArguments<ChatSamplingDefaults>

    func run() throws {
        let (gpt, tok, weights) = try source.load()
        let template = try source.chatTemplate()
        var options = try sampling.options { options in options.stop += try template.replyStops(tok) }
        let context = gpt.config.contextLength
        guard options.maxNewTokens < context else { throw ValidationError("--max-tokens must leave room for a message in the context of \(context)") }
        let opening = system.map { [ChatMessage(role: .system, content: $0)] } ?? []
        var history = opening
        let interactive = isatty(STDIN_FILENO) != 0
        if interactive {
            print("chatting with \(source.model) (context \(context) tokens); /reset starts over, /exit or Ctrl-D leaves, Ctrl-C stops a reply")
        }
        var turn: UInt64 = 0
        while true {
            if interactive { print("> ", terminator: "") }
            fflush(stdout)
            guard let line = readLine() else { break }
            let message = line.trimmingCharacters(in: .whitespaces)
            if message.isEmpty { continue }
            if message == "/exit" { break }
            if message == "/reset" {
                history = opening
                print("(a new conversation)")
                continue
            }
            history.append(ChatMessage(role: .user, content: message))
            let prompt: [Int32]
            do { prompt = try fitted(&history, opening: opening.count, template: template, tokenizer: tok, context: context) } catch {
                // A message the tokenizer cannot read (a character outside a character-level vocabulary) is refused;
                // the conversation goes on without it.
                history.removeLast()
                note("\(error)")
                continue
            }
            options.seed = sampling.seed &+ turn
            turn += 1
            let reply = try self.reply(to: prompt, options: options, model: gpt, tokenizer: tok, weights: weights)
            history.append(ChatMessage(role: .assistant, content: ReplyPrefixRemover.removing(template.replyPrefix, from: reply)))
        }
    }

    /// The conversation's tokens with the assistant's turn opened, its oldest turns left out (the system message
    /// stays) and then its start cut until the reply has room in the context, saying so.
    private func fitted(_ history: inout [ChatMessage], opening: Int, template: ChatTemplate, tokenizer tok: any Tokenizer,
                        context: Int) throws -> [Int32] {
        let fitted = try template.fittedPrompt(&history, keeping: opening, replyTokens: sampling.maxTokens, context: context, tokenizer: tok)
        let dropped = fitted.droppedMessages
        if dropped > 0 { note("\(dropped) earliest message\(dropped == 1 ? "" : "s") left out to fit the context of \(context) tokens") }
        if fitted.cut { note("the message is cut from the left to \(context - sampling.maxTokens) tokens to leave room for the reply") }
        return fitted.tokens
    }

    /// Streams the reply to `prompt` to standard output; SIGINT stops it. Returns its text.
    private func reply(to prompt: [Int32], options: SamplingOptions, model: GPTModel, tokenizer: any Tokenizer,
                       weights: DecodeWeights) throws -> String {
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, weights: weights, cachePrecision: source.cachePrecision)
        var text = ""
        let id = try decoder.add(GenerationRequest(prompt: prompt, options: options)) { event in
            if case .text(_, _, let delta) = event {
                text += delta
                FileHandle.standardOutput.write(Data(delta.utf8))
            }
        }
        replyInterrupted = false
        signal(SIGINT) { _ in replyInterrupted = true }
        defer { signal(SIGINT, SIG_DFL) }
        while !decoder.isIdle {
            if replyInterrupted {
                decoder.cancel(id)
                print(" [stopped]", terminator: "")
                break
            }
            try decoder.step()
        }
        print("")
        return text
    }

    private func note(_ text: String) {
        FileHandle.standardError.write(Data("(\(text))\n".utf8))
    }
}
