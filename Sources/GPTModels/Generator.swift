import Foundation
import TensorCore
import Tokenizers

/// Why a completion ended.
public enum FinishReason: String, Sendable, Codable {
    /// A stop sequence was generated.
    case stop
    /// The token limit or the model's context was reached.
    case length
    /// The end-of-text token was generated.
    case endOfText = "end_of_text"
}

/// The log-probability of a token and of the most likely alternatives at its position.
public struct TokenLogprob: Sendable {
    /// The token's id.
    public let token: Int32
    /// The token's text (U+FFFD where its bytes are a part of a character).
    public let text: String
    /// The token's bytes (its text may hold a part of a character).
    public let bytes: [UInt8]
    /// Its natural-log probability under the model's distribution (before temperature and truncation).
    public let logprob: Float
    /// The most likely tokens at this position, most likely first (each with no alternatives of its own).
    public let alternatives: [TokenLogprob]
}

/// One generated completion.
public struct Completion: Sendable {
    /// Index of the prompt it continues.
    public let prompt: Int
    /// Index among the completions of that prompt.
    public let choice: Int
    /// The generated text (with the prompt in front when `SamplingOptions.echo` is set; stop sequences left out).
    public let text: String
    /// The generated token ids.
    public let tokens: [Int32]
    /// Why generation ended.
    public let finishReason: FinishReason
    /// Number of tokens the prompt had (after any left truncation).
    public let promptTokens: Int
    /// Each generated token's log-probability and alternatives, when `SamplingOptions.logprobs` asks for them.
    public let logprobs: [TokenLogprob]?
    /// Log-probabilities of the prompt's tokens after its first (`SamplingOptions.promptLogprobs`).
    public let promptLogprobs: [TokenLogprob]?
}

/// What generation reports as it goes: text as it becomes final (never a split character, never a part of a stop
/// sequence), each sampled token's log-probability when they are asked for, then each completion when it ends.
public enum GenerationEvent: Sendable {
    /// Text that is final: it will not change, and holds no part of a stop sequence or a character.
    case text(prompt: Int, choice: Int, delta: String)
    /// A sampled token's log-probability, when `SamplingOptions.logprobs` asks for them.
    case token(prompt: Int, choice: Int, logprob: TokenLogprob)
    /// A completion ended; it holds the whole text and the finish reason.
    case finished(Completion)
}

/// Generates completions for a batch of prompts together, with a key/value cache (a `BatchDecoder` that reads
/// every prompt in its first step).
package final class Generator: @unchecked Sendable {
    package let model: GPTModel
    package let tokenizer: any Tokenizer

    /// The decoding copy of the weights, shared by every call.
    private let weights: DecodeWeights
    /// The model that proposes tokens to check (speculative decoding), or none.
    private let draft: DraftModel?
    /// How the keys and values are kept.
    let cachePrecision: CachedAttention.Cache.Precision
    /// What speculative decoding did in the last `generate` (nil without a draft).
    package private(set) var lastSpeculation: SpeculationStatistics?

    /// A generator for `model` as it is now (its weights are copied for decoding, in `format`; a 16-, 8- or 4-bit
    /// format rounds the model's matrices in place, see `DecodeWeights`), or over the frozen base it holds packed.
    package convenience init(model: GPTModel, tokenizer: any Tokenizer, format: WeightFormat = .float32) {
        self.init(model: model, tokenizer: tokenizer, weights: model.decodingWeights(format: format))
    }

    /// A generator for `model` with its decoding weights (see `ModelLoading.loadForDecoding`), speculating with
    /// `draft` when one is given, keeping keys and values in `cachePrecision`.
    package init(model: GPTModel, tokenizer: any Tokenizer, weights: DecodeWeights, draft: DraftModel? = nil,
                 cachePrecision: CachedAttention.Cache.Precision = .float32) {
        self.model = model
        self.tokenizer = tokenizer
        self.weights = weights
        self.draft = draft
        self.cachePrecision = cachePrecision
    }

    /// Generates `options.count` completions for each prompt (token ids), calling `onEvent` as text is produced.
    /// Prompt i samples from the random streams of prompt `firstStream + i`, so that a part of a list of prompts
    /// (one process's share) samples as the whole list would.
    package func generate(prompts: [[Int32]], options: SamplingOptions, firstStream: Int = 0,
                         onEvent: (GenerationEvent) -> Void = { _ in }) throws -> [Completion] {
        try options.validate()
        let c = model.config
        var requests: [GenerationRequest] = []
        for (index, prompt) in prompts.enumerated() {
            var input = prompt
            if prompt.count > c.contextLength && !options.truncateLeft {
                throw GenerationError(.exceedsContext, "prompt \(index + 1) has \(prompt.count) tokens, more than the model's context of \(c.contextLength) (truncate it from the left to generate anyway)")
            }
            if options.truncateLeft {
                input = Array(prompt.suffix(Self.keptPromptTokens(prompt.count, maxNewTokens: options.maxNewTokens, context: c.contextLength)))
            }
            requests.append(GenerationRequest(prompt: input, options: options, index: index, stream: UInt64((firstStream + index) * options.count)))
        }
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: max(1, requests.count * options.count), weights: weights,
                                   draft: draft, cachePrecision: cachePrecision)
        defer { lastSpeculation = draft == nil ? nil : decoder.speculationStatistics }
        var results: [Completion?] = Array(repeating: nil, count: requests.count * options.count)
        try withoutActuallyEscaping(onEvent) { onEvent in
            for request in requests {
                try decoder.add(request) { event in
                    if case .finished(let completion) = event { results[completion.prompt * options.count + completion.choice] = completion }
                    onEvent(event)
                }
            }
            while !decoder.isIdle { try decoder.step() }
        }
        return results.map { $0! }
    }

    /// How many of a prompt's `count` tokens a left truncation keeps: all that fit in `context` with `maxNewTokens`
    /// after them, at least one.
    package static func keptPromptTokens(_ count: Int, maxNewTokens: Int, context: Int) -> Int {
        min(count, max(1, context - min(maxNewTokens, context)))
    }

    /// The same generation as an asynchronous sequence of events (it runs on a background thread).
    package func stream(prompts: [[Int32]], options: SamplingOptions) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let thread = Thread { [self] in
                do {
                    _ = try generate(prompts: prompts, options: options) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }
}
