import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest

final class BatchDecoderTests: XCTestCase {
    let tokenizer = try! CharacterTokenizer(characters: (0..<23).map { Unicode.Scalar(UInt8(97 + $0)) })

    func greedy(_ maxNewTokens: Int) -> SamplingOptions {
        var options = SamplingOptions()
        options.temperature = 0
        options.maxNewTokens = maxNewTokens
        options.stopAtEndOfText = false
        return options
    }

    /// Requests that join a running batch at different steps, with their prompts read a few tokens a step, get
    /// the tokens each would get alone.
    func testRequestsJoiningARunningBatchGetWhatTheyGetAlone() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 11)
        let prompts: [[Int32]] = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [3]]
        var sampled = SamplingOptions()
        sampled.maxNewTokens = 6
        sampled.seed = 5
        sampled.stopAtEndOfText = false
        for options in [greedy(6), sampled] {
            let alone = try prompts.map { try Generator(model: model, tokenizer: tokenizer).generate(prompts: [$0], options: options)[0].tokens }
            let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 3, prefillBudget: 3)
            var finished: [Int: [Int32]] = [:]
            var next = 0, steps = 0
            while finished.count < prompts.count {
                // One new request every other step, when a slot is free.
                if next < prompts.count, steps % 2 == 0, decoder.availableSlots > 0 {
                    try decoder.add(GenerationRequest(prompt: prompts[next], options: options, index: next)) { event in
                        if case .finished(let c) = event { finished[c.prompt] = c.tokens }
                    }
                    next += 1
                }
                try decoder.step()
                steps += 1
                XCTAssertLessThan(steps, 100)
            }
            for (i, tokens) in alone.enumerated() { XCTAssertEqual(finished[i], tokens, "prompt \(i), temperature \(options.temperature)") }
            XCTAssertEqual(decoder.availableSlots, 3)
            XCTAssertTrue(decoder.isIdle)
        }
    }

    /// n completions read the prompt once and then decode apart; greedy ones are all the same.
    func testCompletionsOfOnePromptShareItsPrefill() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 12)
        var options = greedy(5)
        options.count = 3
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 4)
        var completions: [Completion] = []
        try decoder.add(GenerationRequest(prompt: [4, 5, 6], options: options)) { event in
            if case .finished(let c) = event { completions.append(c) }
        }
        XCTAssertEqual(decoder.availableSlots, 1)
        assertThrows(GenerationError.self, .overCapacity, try decoder.add(GenerationRequest(prompt: [1], options: options)) { _ in })
        while !decoder.isIdle { try decoder.step() }
        let single = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [[4, 5, 6]], options: greedy(5))[0]
        XCTAssertEqual(completions.map(\.tokens), Array(repeating: single.tokens, count: 3))
        XCTAssertEqual(completions.map(\.choice).sorted(), [0, 1, 2])
    }

    func testCancellingFreesTheSlotsAndEndsTheEvents() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 13)
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 2)
        var events = 0
        let id = try decoder.add(GenerationRequest(prompt: [1, 2], options: greedy(10))) { _ in events += 1 }
        try decoder.step()
        try decoder.step()
        let seen = events
        decoder.cancel(id)
        XCTAssertEqual(decoder.availableSlots, 2)
        XCTAssertTrue(decoder.isIdle)
        try decoder.step()
        XCTAssertEqual(events, seen, "no event after cancel")
        // The freed slot starts clean: a new request gets what it gets alone.
        var tokens: [Int32] = []
        try decoder.add(GenerationRequest(prompt: [7, 8, 9], options: greedy(4))) { event in
            if case .finished(let c) = event { tokens = c.tokens }
        }
        while !decoder.isIdle { try decoder.step() }
        XCTAssertEqual(tokens, try Generator(model: model, tokenizer: tokenizer).generate(prompts: [[7, 8, 9]], options: greedy(4))[0].tokens)
    }

    /// The prompt's log-probabilities (what `echo` with `logprobs` returns), read in chunks, are the full forward
    /// pass's log-softmax at each position, with the top alternatives in order.
    func testPromptLogprobsAreTheFullForwardLogSoftmax() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 14)
        let prompt: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
        var options = greedy(0)
        options.promptLogprobs = true
        options.logprobs = 3
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, prefillBudget: 4)
        var completion: Completion?
        try decoder.add(GenerationRequest(prompt: prompt, options: options)) { event in
            if case .finished(let c) = event { completion = c }
        }
        while !decoder.isIdle { try decoder.step() }
        let scored = try XCTUnwrap(completion?.promptLogprobs)
        XCTAssertEqual(scored.count, prompt.count - 1)
        XCTAssertEqual(completion?.tokens, [])
        let full = logits(model, prompt, batch: 1).scalars
        for t in 0..<(prompt.count - 1) {
            let row = full[(t * 23)..<((t + 1) * 23)].map(Double.init)
            let maximum = row.max()!
            let logTotal = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - maximum) }) + maximum
            XCTAssertEqual(Double(scored[t].logprob), row[Int(prompt[t + 1])] - logTotal, accuracy: 1e-4)
            XCTAssertEqual(scored[t].token, prompt[t + 1])
            let best = row.indices.sorted { row[$0] > row[$1] }.prefix(3).map(Int32.init)
            XCTAssertEqual(scored[t].alternatives.map(\.token), best)
        }
    }

    /// Runs a request alone to its end; returns its completion and how many of its prompt tokens came from the
    /// prompt cache.
    private func complete(_ request: GenerationRequest, with decoder: BatchDecoder) throws -> (Completion, cached: Int) {
        var completion: Completion?
        let id = try decoder.add(request) { event in
            if case .finished(let c) = event { completion = c }
        }
        let cached = decoder.cachedPromptTokens(of: id)
        while !decoder.isIdle { try decoder.step() }
        return (try XCTUnwrap(completion), cached)
    }

    /// A chat's turns, each prompt the previous prompt, its reply and a new message: with a prompt cache each turn
    /// computes only its new tokens, and gets exactly the tokens it gets without one, greedy and sampled with a seed.
    /// Read in chunks of a few tokens (the decoding kernels' streamed rows, with or without the cache) its
    /// log-probabilities are the same floats. Read in one pass, a cold prompt of more than 64 tokens goes through the
    /// BLAS, which sums in another order than the streamed rows of a short remainder: the same values to rounding
    /// (a request served cold differs as much with the number of rows other requests bring to its step).
    func testPromptCacheGivesExactlyWhatAColdRequestGets() throws {
        var config = tinyConfig()
        config.contextLength = 200
        config.embeddingWidth = 96
        let model = try GPTModel(config: config, seed: 21)
        var sampled = SamplingOptions()
        sampled.maxNewTokens = 7
        sampled.seed = 3
        sampled.stopAtEndOfText = false
        for var options in [greedy(7), sampled] {
            options.logprobs = 2
            for budget in [nil, 5] {
                let cache = PromptCache(byteLimit: 1 << 20)
                let cached = BatchDecoder(model: model, tokenizer: tokenizer, slots: 2, prefillBudget: budget, promptCache: cache)
                var prompt: [Int32] = (0..<70).map { Int32($0 * 7 % 23) }
                var held = 0
                for turn in 0..<4 {
                    let (warm, fromCache) = try complete(GenerationRequest(prompt: prompt, options: options), with: cached)
                    let (cold, _) = try complete(GenerationRequest(prompt: prompt, options: options),
                                                 with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 2, prefillBudget: budget))
                    let what = "turn \(turn), temperature \(options.temperature), budget \(budget ?? 0)"
                    // The previous turn's prompt and reply but its last token (sampled, never fed).
                    XCTAssertEqual(fromCache, held, what)
                    held = prompt.count + warm.tokens.count - 1
                    XCTAssertEqual(warm.tokens, cold.tokens, what)
                    let (warmLogprobs, coldLogprobs) = (try XCTUnwrap(warm.logprobs).map(\.logprob), try XCTUnwrap(cold.logprobs).map(\.logprob))
                    if budget == nil {
                        for (w, c) in zip(warmLogprobs, coldLogprobs) { XCTAssertEqual(w, c, accuracy: 4e-6 * max(1, abs(c)), what) }
                    } else {
                        XCTAssertEqual(warmLogprobs, coldLogprobs, what)
                    }
                    XCTAssertEqual(warm.logprobs?.map { $0.alternatives.map(\.token) }, cold.logprobs?.map { $0.alternatives.map(\.token) }, what)
                    XCTAssertEqual(cache.count, 1, "each turn's sequence replaces the one it extends")
                    prompt += warm.tokens + [Int32(turn + 1), 2, 3]
                }
            }
        }
    }

    /// The cache keeps its bytes within the limit by dropping the least recently used sequences whole; a sequence
    /// that extends an entry replaces it; entries of another adapter never match.
    func testPromptCacheEvictsTheLeastRecentlyUsedWithinItsBytes() {
        let floats = 100, entryBytes = floats * 4
        let cache = PromptCache(byteLimit: 3 * entryBytes)
        func states(_ value: Float) -> [Float] { [Float](repeating: value, count: floats) }
        cache.insert([1, 2, 3], adapter: nil, states: states(1))
        cache.insert([4, 5], adapter: nil, states: states(2))
        cache.insert([6], adapter: nil, states: states(3))
        XCTAssertEqual(cache.bytes, 3 * entryBytes)
        XCTAssertEqual(cache.longestPrefix(of: [1, 2, 9], adapter: nil)?.length, 2)
        XCTAssertNil(cache.longestPrefix(of: [1, 2, 3], adapter: 0), "another adapter's keys and values")
        cache.insert([7], adapter: nil, states: states(4))
        XCTAssertEqual(cache.count, 3)
        XCTAssertNil(cache.longestPrefix(of: [4, 5], adapter: nil), "[4, 5] was the least recently used")
        XCTAssertEqual(cache.longestPrefix(of: [6], adapter: nil)?.entry.states.first, 3)
        cache.insert([1, 2, 3, 8], adapter: nil, states: states(5))
        XCTAssertEqual(cache.count, 3, "[1, 2, 3, 8] replaces [1, 2, 3]")
        XCTAssertEqual(cache.longestPrefix(of: [1, 2, 3], adapter: nil)?.entry.tokens, [1, 2, 3, 8])
        cache.insert([1, 2], adapter: nil, states: states(6))
        XCTAssertEqual(cache.count, 3, "an entry holds [1, 2] already")
        cache.insert([9], adapter: nil, states: [Float](repeating: 0, count: 4 * floats))
        XCTAssertEqual(cache.count, 3, "a sequence larger than the whole cache is not kept")
        XCTAssertLessThanOrEqual(cache.bytes, cache.byteLimit)
    }

    /// Conversations that take turns through a cache with room for about one of them: each turn reuses what is left
    /// (sometimes nothing) and gets the same tokens and log-probabilities as cold. A model with a local layer (a
    /// ring of 6 positions) reuses only sequences that fit the ring.
    func testPromptCacheUnderEvictionNeverServesAStalePrefix() throws {
        for (config, length) in [(tinyConfig(), 3), (tinyNeoConfig(), 2)] {
            let model = try GPTModel(config: config, seed: 22)
            let session = InferenceSession(model: model, sequences: 1)
            var options = greedy(2)
            options.logprobs = 1
            let cache = PromptCache(byteLimit: 9 * session.statesPerPosition * 4)
            let cached = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, prefillBudget: 2, promptCache: cache)
            var chats: [[Int32]] = [[1, 2], [1, 3], [5]]
            var reused: [Int] = []
            for turn in 0..<9 {
                let chat = turn % chats.count
                let request = GenerationRequest(prompt: chats[chat], options: options)
                let (warm, fromCache) = try complete(request, with: cached)
                let (cold, _) = try complete(request, with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, prefillBudget: 2))
                XCTAssertEqual(warm.tokens, cold.tokens, "turn \(turn)")
                XCTAssertEqual(warm.logprobs?.map(\.logprob), cold.logprobs?.map(\.logprob), "turn \(turn)")
                XCTAssertLessThanOrEqual(cache.bytes, cache.byteLimit)
                reused.append(fromCache)
                chats[chat] = Array((chats[chat] + warm.tokens + [Int32(turn % 20)]).suffix(length * 3 - 1))
            }
            XCTAssertTrue(reused.contains(0) && reused.contains { $0 > 1 }, "\(reused)")
        }
    }

    func testChatTemplateRendersTurnsAndItsOwnEndOfTurnToken() throws {
        let tokenizer = try TokenizerLoading.gpt2()
        let template = ChatTemplate.default
        let messages = [ChatMessage(role: .user, content: "Hi"), ChatMessage(role: .assistant, content: " Hello."),
                        ChatMessage(role: .user, content: "Say <|endoftext|>")]
        XCTAssertEqual(template.render(messages, addGenerationPrompt: true),
                       [.text("\n\nHuman: Hi\n\nAssistant:  Hello."), .endOfTurn, .text("\n\nHuman: Say <|endoftext|>\n\nAssistant:")])
        let ids = try template.tokens(messages, addGenerationPrompt: true, tokenizer: tokenizer)
        XCTAssertEqual(ids.filter { $0 == 50256 }.count, 1, "a marker typed in a message stays text")
        XCTAssertEqual(try template.endOfTurnToken(tokenizer), 50256)
        XCTAssertEqual(template.replyPrefix, " ")

        let directory = try temporaryDirectory(self)
        XCTAssertEqual(try ChatTemplate.load(modelDirectory: directory), .default, "no file: the default")
        let custom = ChatTemplate(system: "<s>{content}</s>", user: "<u>{content}</u>", assistant: "<a>{content}",
                                  generationPrompt: "<a>", endOfTurn: "</a>")
        try custom.save(to: directory)
        XCTAssertEqual(try ChatTemplate.load(modelDirectory: directory), custom)
        XCTAssertNil(try custom.endOfTurnToken(tokenizer), "no special token by that name: the marker is text")
        try Data(#"{"system": "{content}", "user": "no placeholder", "assistant": "{content}", "generation_prompt": "", "end_of_turn": "x"}"#.utf8)
            .write(to: directory.appendingPathComponent(ChatTemplate.fileName))
        assertThrows(GenerationError.self, .invalidArgument, try ChatTemplate.load(modelDirectory: directory))
        try Data("{".utf8).write(to: directory.appendingPathComponent(ChatTemplate.fileName))
        assertFileError(.malformed(line: nil), ChatTemplate.fileName, try ChatTemplate.load(modelDirectory: directory))
    }
}
