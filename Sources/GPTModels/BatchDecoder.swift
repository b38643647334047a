import Foundation
import TensorCore
import Tokenizers

/// A prompt to continue, with how to sample its completions.
package struct GenerationRequest: Sendable {
    /// Token ids of the prompt (within the model's context).
    package var prompt: [Int32]
    package var options: SamplingOptions
    /// Index reported in the events of this request's completions.
    package var index: Int
    /// Random stream of the first completion; completion i draws from stream + i, so a seed gives the same
    /// completions whatever else is decoded in the same batch.
    package var stream: UInt64
    /// The decoding weights' adapter to decode with (an index into `DecodeWeights.adapters`), or none.
    package var adapter: Int?

    package init(prompt: [Int32], options: SamplingOptions, index: Int = 0, stream: UInt64 = 0, adapter: Int? = nil) {
        self.prompt = prompt
        self.options = options
        self.index = index
        self.stream = stream
        self.adapter = adapter
    }
}

/// Continuous batching: requests join and leave a running batch between steps. Each `step` feeds every running
/// sequence its next token in one pass of the model, together with a bounded share of the prompts still being
/// read (chunked prefill, so that a long prompt never stalls the running streams for long), then samples.
///
/// A request with n completions reads its prompt once: the cache is copied to the other n − 1 slots when the
/// prompt is done. With a prompt cache, a prompt that begins with a sequence decoded before starts from its keys and
/// values, and each request's sequence joins the cache when it ends. Not thread-safe: one owner calls it.
package final class BatchDecoder {
    package let model: GPTModel
    package let tokenizer: any Tokenizer
    /// Most prompt tokens read in one step, over all requests (nil: every waiting prompt whole).
    package let prefillBudget: Int?
    /// Keys and values of sequences decoded before, which prompts that begin with them reuse (nil: none kept).
    package let promptCache: PromptCache?
    /// The model that proposes tokens for this one to check (speculative decoding), or none.
    package let draft: DraftModel?
    let session: InferenceSession
    /// The draft's cache, a slot for each of `session`'s.
    let draftSession: InferenceSession?
    /// When speculation pays (see `SpeculationControl`), and what it did.
    var speculation: SpeculationControl
    private var freeSlots: [Int]
    private var requests: [Int: RequestState] = [:]
    /// Request ids in arrival order: prefill goes first come, first served.
    private var order: [Int] = []
    private var nextID = 0

    /// A decoder with `slots` sequence slots (each completion of a running request holds one), whose keys and
    /// values are kept in `cachePrecision`. With a `draft`, decoding sequences are speculated (see `DraftModel`).
    package init(model: GPTModel, tokenizer: any Tokenizer, slots: Int, weights: DecodeWeights? = nil, prefillBudget: Int? = nil,
                 promptCache: PromptCache? = nil, draft: DraftModel? = nil, cachePrecision: CachedAttention.Cache.Precision = .float32) {
        self.model = model
        self.tokenizer = tokenizer
        self.prefillBudget = prefillBudget
        self.promptCache = promptCache
        self.draft = draft
        let session = InferenceSession(model: model, sequences: slots, weights: weights, cachePrecision: cachePrecision)
        self.session = session
        draftSession = draft.map { InferenceSession(model: $0.model, sequences: slots, weights: $0.weights, cachePrecision: cachePrecision) }
        speculation = SpeculationControl(draftTokens: draft?.tokens ?? 0,
                                         bytesRatio: draft.map { Double($0.weights.bytes) / Double(session.weights.bytes) } ?? 0)
        freeSlots = Array((0..<slots).reversed())
    }

    /// Slots not held by a running request.
    package var availableSlots: Int { freeSlots.count }
    /// Completions being generated.
    package var runningSequences: Int { session.capacity - freeSlots.count }
    /// Whether no request is running.
    package var isIdle: Bool { requests.isEmpty }

    /// Starts a request; `onEvent` receives its text as it becomes final and each completion as it ends (the
    /// request then leaves the batch). Returns the id to cancel it by.
    @discardableResult
    package func add(_ request: GenerationRequest, onEvent: @escaping (GenerationEvent) -> Void) throws -> Int {
        let o = request.options
        try o.validate()
        let c = model.config
        guard !request.prompt.isEmpty else { throw GenerationError(.emptyInput, "prompt \(request.index + 1) is empty") }
        guard request.prompt.count <= c.contextLength else {
            throw GenerationError(.exceedsContext, "prompt \(request.index + 1) has \(request.prompt.count) tokens, more than the model's context of \(c.contextLength)")
        }
        if let bad = request.prompt.first(where: { $0 < 0 || Int($0) >= c.vocabularySize }) {
            throw GenerationError(.idOutsideVocabulary, "token id \(bad) is outside the vocabulary of \(c.vocabularySize)")
        }
        if let adapter = request.adapter, !session.adapterIndices.contains(adapter) {
            throw GenerationError(.invalidArgument, "no adapter \(adapter) (the decoding weights have \(session.adapterIndices.count))")
        }
        guard o.count <= freeSlots.count else {
            throw GenerationError(.overCapacity, "\(o.count) completions need as many free slots; \(freeSlots.count) are free")
        }
        let id = nextID
        nextID += 1
        let slots = (0..<o.count).map { _ in freeSlots.removeLast() }
        let echoed = o.echo ? try tokenizer.decode(request.prompt) : ""
        let state = RequestState(id: id, request: request, slots: slots, echoed: echoed, onEvent: onEvent)
        for slot in slots { session.reset(sequence: slot, adapter: request.adapter) }
        // The longest prefix decoded before, less the prompt's last token (whose logits are needed); not when every
        // prompt token's log-probability is asked for.
        let reusable = min(request.prompt.count - 1, session.reusablePositions)
        if let promptCache, !o.promptLogprobs, reusable > 0,
           let (entry, length) = promptCache.longestPrefix(of: Array(request.prompt[..<reusable]), adapter: request.adapter) {
            session.restorePrefix(entry.states, count: length, into: slots[0], adapter: request.adapter)
            state.prefilled = length
            state.cachedTokens = length
        }
        requests[id] = state
        order.append(id)
        if o.echo {
            for s in state.sequences { onEvent(.text(prompt: request.index, choice: s.choice, delta: echoed)) }
        }
        if o.maxNewTokens == 0 && !o.promptLogprobs {
            for s in state.sequences { s.finish = .length }
            end(id)
        }
        return id
    }

    /// Prompt tokens of request `id` whose keys and values came from the prompt cache.
    package func cachedPromptTokens(of id: Int) -> Int { requests[id]?.cachedTokens ?? 0 }

    /// Drops a request without further events and frees its slots.
    package func cancel(_ id: Int) {
        guard let state = requests.removeValue(forKey: id) else { return }
        order.removeAll { $0 == id }
        for slot in state.slots {
            session.release(sequence: slot)
            draftSession?.release(sequence: slot)
        }
        freeSlots += state.slots
    }

    /// One pass of the model: every running completion's next token, and the next part of the waiting prompts.
    package func step() throws {
        guard !requests.isEmpty else { return }
        let vocabulary = model.config.vocabularySize
        // What each sequence reads this step: decoding ones their last token, prefilling ones a part of the prompt
        // (rows for every token when the prompt's own log-probabilities are wanted, a separate pass).
        var lastRow: [Feed] = [], everyRow: [Feed] = []
        var speculated: [(state: RequestState, sequence: SequenceState)] = []
        let speculating = speculation.shouldSpeculate()
        var budget = prefillBudget ?? Int.max
        for id in order {
            let state = requests[id]!
            if state.prefilled < state.request.prompt.count {
                guard budget > 0 else { continue }
                let end = state.prefilled + min(budget, state.request.prompt.count - state.prefilled)
                let part = Array(state.request.prompt[state.prefilled..<end])
                budget -= part.count
                let feed = Feed(id: id, sequence: nil, slot: state.slots[0], tokens: part, start: state.prefilled)
                if state.request.options.promptLogprobs { everyRow.append(feed) } else { lastRow.append(feed) }
                state.prefilled = end
            } else {
                for s in state.sequences where s.finish == nil {
                    if speculating, canSpeculate(s) {
                        speculated.append((state, s))
                    } else {
                        lastRow.append(Feed(id: id, sequence: s.choice, slot: s.slot, tokens: s.nextInput, start: 0))
                    }
                }
            }
        }
        var rows: [(feed: Feed, logits: UnsafePointer<Float>)] = []
        let lastLogits = lastRow.isEmpty ? nil : try session.feed(lastRow.map { ($0.slot, $0.tokens) })
        if let lastLogits {
            for (i, feed) in lastRow.enumerated() { rows.append((feed, UnsafePointer(lastLogits.pointer + i * vocabulary))) }
        }
        let everyLogits = everyRow.isEmpty ? nil : try session.feed(everyRow.map { ($0.slot, $0.tokens) }, everyToken: true)
        if let everyLogits {
            var row = 0
            for feed in everyRow {
                let state = requests[feed.id]!
                let prompt = state.request.prompt
                for t in 0..<feed.tokens.count where feed.start + t + 1 < prompt.count {
                    state.promptLogprobs.append(try logprob(of: prompt[feed.start + t + 1], in: everyLogits.pointer + (row + t) * vocabulary,
                                                            alternatives: state.request.options.logprobs ?? 0))
                }
                row += feed.tokens.count
                rows.append((feed, UnsafePointer(everyLogits.pointer + (row - 1) * vocabulary)))
            }
        }
        // Sampling, in row order.
        var touched: [Int] = []
        for (feed, logits) in rows {
            let state = requests[feed.id]!
            if let choice = feed.sequence {
                try sample(state.sequences[choice], of: state, from: logits)
            } else if state.prefilled == state.request.prompt.count {
                // The prompt is read: its cache goes to every completion's slot, each samples its first token.
                for s in state.sequences.dropFirst() { session.copy(sequence: state.slots[0], to: s.slot) }
                if state.request.options.maxNewTokens == 0 {
                    for s in state.sequences { s.finish = .length }
                } else {
                    for s in state.sequences { try sample(s, of: state, from: logits) }
                }
            }
            touched.append(feed.id)
        }
        try speculate(speculated)
        touched += speculated.map(\.state.id)
        if draft != nil, !speculating, lastRow.contains(where: { $0.sequence != nil }) { speculation.countPlainStep() }
        for id in Set(touched) where requests[id]!.sequences.allSatisfy({ $0.finish != nil }) { end(id) }
    }

    private struct Feed {
        let id: Int
        /// The completion decoding (nil: the request's prompt).
        let sequence: Int?
        let slot: Int
        let tokens: [Int32]
        /// Position in the prompt of the first token (prefill).
        let start: Int
    }

    /// Ends a request whose completions are all finished: reports them and frees the slots.
    private func end(_ id: Int) {
        guard let state = requests[id] else { return }
        let o = state.request.options
        for s in state.sequences {
            let body = s.bytes[..<(s.stopAt ?? s.bytes.count)]
            let text = state.echoed + String(decoding: body, as: UTF8.self)
            let completion = Completion(prompt: state.request.index, choice: s.choice, text: text, tokens: s.tokens,
                                        finishReason: s.finish ?? .length, promptTokens: state.request.prompt.count,
                                        logprobs: o.logprobs == nil ? nil : s.logprobs,
                                        promptLogprobs: o.promptLogprobs ? state.promptLogprobs : nil)
            state.onEvent(.finished(completion))
        }
        keepInPromptCache(state)
        cancel(id)
    }

    /// Puts the keys and values of a request's first completion (prompt and generated tokens, as far as they were
    /// fed) into the prompt cache, unless an entry holds them already.
    private func keepInPromptCache(_ state: RequestState) {
        let first = state.sequences[0]
        let held = session.lengths[first.slot]
        guard let promptCache, first.windowStart == 0, held > 0, held <= session.reusablePositions else { return }
        let tokens = Array((state.request.prompt + first.tokens).prefix(held))
        guard !promptCache.covers(tokens, adapter: state.request.adapter) else { return }
        promptCache.insert(tokens, adapter: state.request.adapter, states: session.prefixStates(of: first.slot, count: held))
    }

    /// Samples a sequence's next token, emits the text that became final and decides whether it ends.
    private func sample(_ s: SequenceState, of state: RequestState, from logits: UnsafePointer<Float>) throws {
        let token = s.sampler.next(logits, vocabulary: model.config.vocabularySize, context: state.request.prompt + s.tokens, generated: s.counts)
        try take(token, for: s, of: state, from: logits, held: session.lengths[s.slot])
    }

    /// Adds `token`, chosen from `logits`, to a sequence whose slot holds `held` positions before it: reports its
    /// log-probability, emits the text that became final and decides whether the sequence ends.
    func take(_ token: Int32, for s: SequenceState, of state: RequestState, from logits: UnsafePointer<Float>, held: Int) throws {
        let o = state.request.options
        if let n = o.logprobs {
            let logprob = try logprob(of: token, in: logits, alternatives: n)
            s.logprobs.append(logprob)
            state.onEvent(.token(prompt: state.request.index, choice: s.choice, logprob: logprob))
        }
        if o.stopAtEndOfText, token == tokenizer.endOfText {
            s.finish = .endOfText
        } else {
            s.tokens.append(token)
            s.counts[token, default: 0] += 1
            s.nextInput = [token]
            s.bytes += try tokenizer.decodeBytes([token])
            if let match = StopSequences.firstMatch(of: state.stops, in: s.bytes, from: max(0, s.emitted - state.longestStop)) {
                s.stopAt = match
                s.finish = .stop
            } else if s.tokens.count >= o.maxNewTokens {
                s.finish = .length
            } else if held >= model.config.contextLength {
                if o.slidingWindow {
                    session.reset(sequence: s.slot, adapter: state.request.adapter)
                    s.nextInput = Array((state.request.prompt + s.tokens).suffix(max(1, model.config.contextLength / 2)))
                    s.windowStart = state.request.prompt.count + s.tokens.count - s.nextInput.count
                    draftSession?.reset(sequence: s.slot)
                    s.draftHeld = 0
                } else {
                    s.finish = .length
                }
            }
        }
        // Text is final up to the last complete character, less any tail that may begin a stop sequence.
        var end = s.stopAt ?? StreamingDecoder.completePrefixLength(s.bytes)
        if s.finish == nil {
            end -= StopSequences.longestPrefix(of: state.stops, endingAt: end, in: s.bytes)
        } else if s.stopAt == nil {
            end = s.bytes.count
        }
        if end > s.emitted {
            state.onEvent(.text(prompt: state.request.index, choice: s.choice, delta: String(decoding: s.bytes[s.emitted..<end], as: UTF8.self)))
            s.emitted = end
        }
    }

    /// The model's log-probability of `token` and of the `alternatives` most likely tokens (before any sampling
    /// adjustments; ties go to the lower id).
    private func logprob(of token: Int32, in logits: UnsafePointer<Float>, alternatives: Int) throws -> TokenLogprob {
        let n = model.config.vocabularySize
        let (maximum, logSum) = logSumExpOfRow(logits, n)
        let logTotal = maximum + logSum
        // The most likely tokens in one pass, kept sorted in a list as short as the request asks for.
        var top: [Int32] = []
        if alternatives > 0 {
            top.reserveCapacity(alternatives + 1)
            for i in 0..<n {
                let score = logits[i]
                if top.count == alternatives, score <= logits[Int(top[alternatives - 1])] { continue }
                var at = top.count
                while at > 0, score > logits[Int(top[at - 1])] { at -= 1 }
                top.insert(Int32(i), at: at)
                if top.count > alternatives { top.removeLast() }
            }
        }
        return TokenLogprob(token: token, text: try tokenizer.decode([token]), bytes: try tokenizer.decodeBytes([token]),
                            logprob: logits[Int(token)] - logTotal,
                            alternatives: try top.map { .init(token: $0, text: try tokenizer.decode([$0]), bytes: try tokenizer.decodeBytes([$0]),
                                                              logprob: logits[Int($0)] - logTotal, alternatives: []) })
    }
}

/// A running request: its prompt's progress and its completions.
final class RequestState {
    /// Its id in the decoder.
    let id: Int
    let request: GenerationRequest
    let slots: [Int]
    let sequences: [SequenceState]
    let onEvent: (GenerationEvent) -> Void
    let stops: [[UInt8]]
    let longestStop: Int
    /// The prompt's text when it is echoed (empty otherwise): it opens every completion's text.
    let echoed: String
    /// Prompt tokens read so far.
    var prefilled = 0
    /// Prompt tokens whose keys and values came from the prompt cache.
    var cachedTokens = 0
    /// Log-probabilities of the prompt's tokens after the first, when asked for.
    var promptLogprobs: [TokenLogprob] = []

    init(id: Int, request: GenerationRequest, slots: [Int], echoed: String, onEvent: @escaping (GenerationEvent) -> Void) {
        self.id = id
        self.request = request
        self.slots = slots
        self.echoed = echoed
        self.onEvent = onEvent
        stops = request.options.stop.map { Array($0.utf8) }
        longestStop = stops.map(\.count).max() ?? 0
        sequences = slots.enumerated().map { choice, slot in
            SequenceState(choice: choice, slot: slot,
                          sampler: TokenSampler(options: request.options, stream: request.stream &+ UInt64(choice)))
        }
    }
}

/// One completion being generated.
final class SequenceState {
    let choice: Int, slot: Int
    var tokens: [Int32] = []
    var counts: [Int32: Int] = [:]
    var bytes: [UInt8] = []
    /// Bytes already reported as text.
    var emitted = 0
    var sampler: TokenSampler
    var logprobs: [TokenLogprob] = []
    var finish: FinishReason?
    var stopAt: Int?
    /// What the next step feeds.
    var nextInput: [Int32] = []
    /// Where in its prompt and output the slot's sequence begins: 0 until the slot is emptied to go on past the
    /// context (a sliding window), then the first token it was given again.
    var windowStart = 0
    /// Tokens of its sequence (from `windowStart`) the draft's cache holds (speculative decoding).
    var draftHeld = 0

    init(choice: Int, slot: Int, sampler: TokenSampler) {
        self.choice = choice
        self.slot = slot
        self.sampler = sampler
    }
}

/// Finding stop sequences in generated bytes, across token boundaries.
enum StopSequences {
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
    static func longestPrefix(of stops: [[UInt8]], endingAt end: Int, in bytes: [UInt8]) -> Int {
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
}
