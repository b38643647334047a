import ArgumentParser
import Foundation
import SwiftGPT
import Tokenizers

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue prompts with a trained model.",
        discussion: """
        --model is a SwiftGPT checkpoint, a training output directory (its best/ model), a Hugging Face folder \
        of a GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode model, or its Hub name (ORG/NAME[@REVISION]), \
        downloaded into Hugging Face's cache unless it is there (see gpt pull). Prompts come from --prompt (repeatable), --file (JSON lines {"prompt": ...}), or \
        else standard input (one prompt: all of it, less a final newline); several prompts are generated together as \
        one batch. A single completion is printed as it is generated; --json prints one JSON object per completion \
        with its text, token ids and finish reason (stop, length or end_of_text). A prompt that leaves less room in \
        the context than --max-tokens is noted on standard error (generation stops at the context's end unless \
        --sliding-window). With --chat, \
        each prompt is a user's message, rendered by the model's chat template (chat_template.json, as gpt sft \
        saves it; else HH-RLHF's form) with the assistant's turn opened, and the template's end-of-turn marker ends \
        the reply.
        """,
        aliases: ["sample"]
    )

    @OptionGroup var source: DecodingModelOptions
    @Option(help: "A prompt (repeatable).") var prompt: [String] = []
    @Option(help: "JSON lines file of prompts {\"prompt\": ...}.") var file: String?
    @OptionGroup var sampling: SamplingArguments<CompletionSamplingDefaults>
    @Option(help: "Completions per prompt.") var n = 1
    @Option(help: "Report log-probabilities with this many alternatives (with --json).") var logprobs: Int?
    @Flag(help: "Include the prompt in the output.") var echo = false
    @Option(help: "\"left\": cut prompts from the left to leave room for --max-tokens in the context, instead of failing on prompts longer than the context.") var truncate: String?
    @Flag(help: "When the context is full, continue from its last half instead of stopping.") var slidingWindow = false
    @Flag(help: "Print one JSON object per completion.") var json = false
    @Flag(help: "Treat each prompt as a user's message in the model's chat template.") var chat = false
    @OptionGroup var draft: DraftModelOptions

    struct PromptLine: Decodable { var prompt: String }

    func options() throws -> SamplingOptions {
        // Plain text has no place for them: asked for without --json, they would be silently dropped.
        if logprobs != nil && !json { throw ValidationError("--logprobs is reported in JSON: add --json") }
        if let truncate, truncate != "left" { throw ValidationError("--truncate takes \"left\"") }
        return try sampling.options { options in
            options.count = n
            options.logprobs = logprobs
            options.echo = echo
            options.slidingWindow = slidingWindow
            options.truncateLeft = truncate != nil
        }
    }

    func run() throws {
        var options = try options()
        var texts = prompt
        if let file {
            texts += try Input.jsonLines(try Input.bytes(file: file), as: PromptLine.self,
                                         expecting: "a JSON object {\"prompt\": string}").map(\.prompt)
        }
        if prompt.isEmpty && file == nil {
            guard isatty(STDIN_FILENO) == 0 else {
                throw ValidationError("give a --prompt, a --file of prompts, or a prompt on standard input (echo 'Once upon a time' | gpt generate --model M); to converse, gpt chat --model M")
            }
            texts = [try Self.standardInputPrompt()]
        }
        guard !texts.isEmpty else { throw ValidationError("the file \(file ?? "") holds no prompts") }
        let (gpt, tok, weights) = try source.load()
        let prompts: [[Int32]]
        if chat {
            let template = try source.chatTemplate()
            prompts = try texts.map { try template.tokens([ChatMessage(role: .user, content: $0)], addGenerationPrompt: true, tokenizer: tok) }
            options.stop += try template.replyStops(tok)
        } else {
            prompts = try texts.map { try tok.encode($0) }
        }
        for note in Self.contextNotes(prompts.map(\.count), options: options, context: gpt.config.contextLength) {
            FileHandle.standardError.write(Data("note: \(note)\n".utf8))
        }
        let streaming = !json && texts.count == 1 && n == 1
        let generator = Generator(model: gpt, tokenizer: tok, weights: weights, draft: try draft.load(for: gpt, tokenizer: tok, precision: source.precision),
                                  cachePrecision: source.cachePrecision)
        let start = Date()
        let completions = try generator.generate(prompts: prompts, options: options) { event in
            if streaming, case .text(_, _, let delta) = event {
                FileHandle.standardOutput.write(Data(delta.utf8))
            }
        }
        let seconds = Date().timeIntervalSince(start)
        if streaming {
            print("")
        } else if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for c in completions {
                var record = Record(prompt: c.prompt, index: c.choice, text: c.text, token_ids: c.tokens, finish_reason: c.finishReason.rawValue,
                                    prompt_tokens: c.promptTokens, completion_tokens: c.tokens.count)
                record.logprobs = c.logprobs?.map { .init(token: $0.text, logprob: $0.logprob,
                                                          top: $0.alternatives.map { .init(token: $0.text, logprob: $0.logprob) }) }
                print(String(decoding: try encoder.encode(record), as: UTF8.self))
            }
        } else {
            for c in completions {
                print("--- prompt \(c.prompt + 1), completion \(c.choice + 1) (\(c.finishReason.rawValue))")
                print(c.text)
            }
        }
        let generated = completions.reduce(0) { $0 + $1.tokens.count }
        fflush(stdout)  // the completions come before the summary, also when both streams go to one file
        FileHandle.standardError.write(Data(String(format: "%d tokens in %.2f s (%.1f tokens/s)\n", generated, seconds,
                                                   Double(generated) / seconds).utf8))
        if let s = generator.lastSpeculation {
            FileHandle.standardError.write(Data(String(format: "speculative decoding: %d tokens proposed a step, %.1f%% of %d kept; %d speculative steps made %d tokens (%.2f a step); %d plain steps\n",
                                                       draft.draftTokens, s.acceptanceRate * 100, s.proposed, s.speculativeSteps, s.speculativeTokens,
                                                       s.speculativeSteps == 0 ? 0 : Double(s.speculativeTokens) / Double(s.speculativeSteps), s.plainSteps).utf8))
        }
    }


    /// The prompt on standard input: all of it, less one final line break (as `echo` adds).
    static func standardInputPrompt() throws -> String {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        guard var text = String(data: data, encoding: .utf8) else { throw ValidationError("standard input is not UTF-8 text") }
        if text.hasSuffix("\n") { text.removeLast() }  // "\r\n" is one Character
        guard !text.isEmpty else { throw ValidationError("standard input is empty: give a prompt there, or --prompt") }
        return text
    }

    /// What the context does to prompts of `counts` tokens with these options, in sentences: a left cut, or fewer
    /// new tokens than asked (at most three prompts named, then how many more).
    static func contextNotes(_ counts: [Int], options: SamplingOptions, context: Int) -> [String] {
        var notes: [String] = []
        let asked = options.maxNewTokens
        for (index, count) in counts.enumerated() {
            let kept = options.truncateLeft ? Generator.keptPromptTokens(count, maxNewTokens: asked, context: context) : count
            if kept < count {
                let room = context - kept
                notes.append("prompt \(index + 1) was cut from the left from \(count) to \(kept) tokens, leaving room for "
                             + (room >= asked ? "the \(asked) new tokens asked" : "\(room) of the \(asked) new tokens asked")
                             + " in the model's context of \(context)")
            } else if !options.slidingWindow && kept + asked > context && kept <= context {
                notes.append("prompt \(index + 1) has \(kept) tokens: the model's context of \(context) leaves room for \(context - kept) of the "
                             + "\(asked) new tokens asked (--sliding-window goes on past the context)")
            }
        }
        return notes.count > 3 ? Array(notes.prefix(3)) + ["… and \(notes.count - 3) more prompts"] : notes
    }

    struct Record: Encodable {
        struct Alternative: Encodable { var token: String; var logprob: Float }
        struct Logprob: Encodable { var token: String; var logprob: Float; var top: [Alternative] }
        var prompt: Int
        var index: Int
        var text: String
        var token_ids: [Int32]
        var finish_reason: String
        var prompt_tokens: Int
        var completion_tokens: Int
        var logprobs: [Logprob]?
    }
}
