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

/// The log-probability of a generated token and of the most likely alternatives at its position.
public struct TokenLogprob: Sendable {
    public let token: Int32
    public let text: String
    public let logprob: Float
    public let alternatives: [(token: Int32, text: String, logprob: Float)]
}

/// One generated completion.
public struct Completion: Sendable {
    /// Index of the prompt it continues.
    public let prompt: Int
    /// Index among the completions of that prompt.
    public let choice: Int
    public let text: String
    public let tokens: [Int32]
    public let finishReason: FinishReason
    public let promptTokens: Int
    public let logprobs: [TokenLogprob]?
}

/// What generation reports as it goes: text as it becomes final (never a split character, never a part of a stop
/// sequence), then each completion when it ends.
public enum GenerationEvent: Sendable {
    case text(prompt: Int, choice: Int, delta: String)
    case finished(Completion)
}

/// Generates completions for a batch of prompts together, with a key/value cache.
public final class Generator: @unchecked Sendable {
    public let model: GPTModel
    public let tokenizer: any Tokenizer

    /// The decoding copy of the weights, shared by every call.
    private let weights: DecodeWeights

    /// A generator for `model` as it is now (its weights are copied for decoding).
    public init(model: GPTModel, tokenizer: any Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
        weights = DecodeWeights(model: model)
    }

    /// One completion being generated.
    private final class PendingCompletion {
        let prompt: Int, choice: Int, slot: Int
        let promptTokens: [Int32]
        var tokens: [Int32] = []
        var counts: [Int32: Int] = [:]
        var bytes: [UInt8] = []
        var emitted = 0
        var sampler: TokenSampler
        var logprobs: [TokenLogprob] = []
        var finish: FinishReason?
        var stopAt: Int?
        /// What the next decoding step feeds for this sequence.
        var nextInput: [Int32] = []

        init(prompt: Int, choice: Int, slot: Int, promptTokens: [Int32], sampler: TokenSampler) {
            self.prompt = prompt
            self.choice = choice
            self.slot = slot
            self.promptTokens = promptTokens
            self.sampler = sampler
        }
    }

    /// Generates `options.count` completions for each prompt (token ids), calling `onEvent` as text is produced.
    public func generate(prompts: [[Int32]], options: SamplingOptions,
                         onEvent: (GenerationEvent) -> Void = { _ in }) throws -> [Completion] {
        try options.validate()
        let c = model.config
        var inputs: [[Int32]] = []
        for (index, prompt) in prompts.enumerated() {
            guard !prompt.isEmpty else { throw GenerationError("prompt \(index + 1) is empty") }
            if prompt.count > c.contextLength {
                guard options.truncateLeft else {
                    throw GenerationError("prompt \(index + 1) has \(prompt.count) tokens, more than the model's context of \(c.contextLength) (truncate it from the left to generate anyway)")
                }
                inputs.append(Array(prompt.suffix(c.contextLength)))
            } else {
                inputs.append(prompt)
            }
        }
        let stops = options.stop.map { Array($0.utf8) }
        var sequences: [PendingCompletion] = []
        for (p, prompt) in inputs.enumerated() {
            for choice in 0..<options.count {
                let slot = sequences.count
                sequences.append(PendingCompletion(prompt: p, choice: choice, slot: slot, promptTokens: prompt,
                                          sampler: TokenSampler(options: options, stream: UInt64(slot))))
            }
        }
        let session = InferenceSession(model: model, sequences: sequences.count, weights: weights)
        var results: [Completion?] = Array(repeating: nil, count: sequences.count)
        if options.echo {
            for s in sequences { onEvent(.text(prompt: s.prompt, choice: s.choice, delta: try tokenizer.decode(s.promptTokens))) }
        }
        // Prefill every prompt, then decode one token per active sequence per step.
        var active = sequences
        var feed = active.map { (sequence: $0.slot, tokens: $0.promptTokens) }
        if options.maxNewTokens == 0 {
            for s in active { s.finish = .length }
            active = []
        }
        while !active.isEmpty {
            let logits = try session.feed(feed)
            for (row, s) in active.enumerated() {
                let rowLogits = logits.pointer + row * c.vocabularySize
                let token = s.sampler.next(rowLogits, vocabulary: c.vocabularySize, context: s.promptTokens + s.tokens,
                                           generated: s.counts)
                if let n = options.logprobs { s.logprobs.append(try logprob(of: token, in: rowLogits, alternatives: n)) }
                try accept(token, into: s, options: options, stops: stops, session: session, onEvent: onEvent)
            }
            active = active.filter { $0.finish == nil }
            feed = active.map { (sequence: $0.slot, tokens: $0.nextInput) }
        }
        for s in sequences {
            let completion = try finish(s, options: options)
            results[s.slot] = completion
            onEvent(.finished(completion))
        }
        return results.map { $0! }
    }

    /// Adds a sampled token to a sequence, emits the text that became final and decides whether it ends.
    private func accept(_ token: Int32, into s: PendingCompletion, options: SamplingOptions, stops: [[UInt8]],
                        session: InferenceSession, onEvent: (GenerationEvent) -> Void) throws {
        if options.stopAtEndOfText, token == tokenizer.endOfText {
            s.finish = .endOfText
        } else {
            s.tokens.append(token)
            s.counts[token, default: 0] += 1
            s.nextInput = [token]
            s.bytes += try tokenizer.decodeBytes([token])
            if let match = Self.firstMatch(of: stops, in: s.bytes, from: max(0, s.emitted - (stops.map(\.count).max() ?? 0))) {
                s.stopAt = match
                s.finish = .stop
            } else if s.tokens.count >= options.maxNewTokens {
                s.finish = .length
            } else if session.lengths[s.slot] >= model.config.contextLength {
                if options.slidingWindow {
                    session.reset(sequence: s.slot)
                    s.nextInput = Array((s.promptTokens + s.tokens).suffix(max(1, model.config.contextLength / 2)))
                } else {
                    s.finish = .length
                }
            }
        }
        // Text is final up to the last complete character, less any tail that may begin a stop sequence.
        var end = s.stopAt ?? StreamingDecoder.completePrefixLength(s.bytes)
        if s.finish == nil {
            end -= Self.longestStopPrefix(stops, endingAt: end, in: s.bytes)
        } else if s.stopAt == nil {
            end = s.bytes.count
        }
        if end > s.emitted {
            onEvent(.text(prompt: s.prompt, choice: s.choice, delta: String(decoding: s.bytes[s.emitted..<end], as: UTF8.self)))
            s.emitted = end
        }
    }

    private func finish(_ s: PendingCompletion, options: SamplingOptions) throws -> Completion {
        let body = s.bytes[..<(s.stopAt ?? s.bytes.count)]
        var text = String(decoding: body, as: UTF8.self)
        if options.echo { text = try tokenizer.decode(s.promptTokens) + text }
        return Completion(prompt: s.prompt, choice: s.choice, text: text, tokens: s.tokens,
                          finishReason: s.finish ?? .length, promptTokens: s.promptTokens.count,
                          logprobs: options.logprobs == nil ? nil : s.logprobs)
    }

    /// The model's log-probability of `token` and of the `alternatives` most likely tokens (before any sampling
    /// adjustments).
    private func logprob(of token: Int32, in logits: UnsafePointer<Float>, alternatives: Int) throws -> TokenLogprob {
        let n = model.config.vocabularySize
        let maximum = logits.maximum(n)
        var total: Double = 0
        for i in 0..<n { total += Double(Foundation.exp(logits[i] - maximum)) }
        let logTotal = Float(Foundation.log(total)) + maximum
        // The most likely tokens from a heap, as the sampler takes its candidates (no sort of the vocabulary).
        var heap = CandidateHeap(Array(0..<Int32(n)), scores: Array(UnsafeBufferPointer(start: logits, count: n)))
        let top = (0..<alternatives).compactMap { _ in heap.pop() }
        return TokenLogprob(token: token, text: try tokenizer.decode([token]), logprob: logits[Int(token)] - logTotal,
                            alternatives: try top.map { ($0, try tokenizer.decode([$0]), logits[Int($0)] - logTotal) })
    }

    /// Start of the first occurrence of any of `needles` in `bytes` beginning at or after `from`.
    static func firstMatch(of needles: [[UInt8]], in bytes: [UInt8], from: Int) -> Int? {
        var best: Int?
        for needle in needles where needle.count <= bytes.count {
            var i = from
            while i + needle.count <= bytes.count {
                if bytes[i] == needle[0], bytes[i..<(i + needle.count)].elementsEqual(needle) {
                    if best.map({ i < $0 }) ?? true { best = i }
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// Length of the longest suffix of bytes[..<end] that is a proper prefix of a stop sequence.
    static func longestStopPrefix(_ stops: [[UInt8]], endingAt end: Int, in bytes: [UInt8]) -> Int {
        var longest = 0
        for stop in stops {
            var length = min(stop.count - 1, end)
            while length > longest {
                if bytes[(end - length)..<end].elementsEqual(stop[0..<length]) { longest = length; break }
                length -= 1
            }
        }
        return longest
    }

    /// The same generation as an asynchronous sequence of events (it runs on a background thread).
    public func stream(prompts: [[Int32]], options: SamplingOptions) -> AsyncThrowingStream<GenerationEvent, Error> {
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
