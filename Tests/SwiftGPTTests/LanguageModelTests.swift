import Foundation
import SwiftGPT
import XCTest

/// The library's inference API (`LanguageModel`, `ChatSession`) against the layers it is built on.
final class LanguageModelTests: XCTestCase {
    /// A small random model with GPT-2's vocabulary saved to a folder, loaded back through the API, and the same
    /// model in memory.
    func savedModel(context: Int = 64) throws -> (LanguageModel, GPTModel) {
        var config = tinyConfig()
        config.vocabularySize = 50257
        config.contextLength = context
        let model = try GPTModel(config: config, seed: 5)
        let folder = try temporaryDirectory(self)
        try HuggingFaceCheckpoint.save(model, to: folder)
        return (try LanguageModel(directory: folder, concurrentSequences: 4), model)
    }

    func testGenerationStreamsWhatTheGeneratorProduces() async throws {
        let (api, model) = try savedModel()
        var options = SamplingOptions()
        options.maxNewTokens = 12
        options.seed = 3
        options.count = 2
        options.stopAtEndOfText = false
        let tokenizer = try TokenizerLoading.gpt2()
        let expected = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode("Hello there")], options: options)
        var pieces = ["", ""], finished: [Completion] = []
        for try await event in api.generate("Hello there", options: options) {
            switch event {
            case .text(_, let choice, let piece): pieces[choice] += piece
            case .finished(let completion): finished.append(completion)
            case .token: XCTFail("no log-probabilities were asked for")
            }
        }
        finished.sort { $0.choice < $1.choice }
        XCTAssertEqual(finished.map(\.tokens), expected.map(\.tokens))
        XCTAssertEqual(pieces, expected.map(\.text))
        XCTAssertEqual(finished.map(\.finishReason), [.length, .length])
        let completions = try await api.complete("Hello there", options: options)
        XCTAssertEqual(completions.map(\.tokens), expected.map(\.tokens), "complete() returns the same completions")
    }

    func testConcurrentTasksGetTheirOwnSeededCompletions() async throws {
        let (api, model) = try savedModel()
        let tokenizer = try TokenizerLoading.gpt2()
        let prompts = ["One", "Two words", "Three more words", "Four", "Five", "Six"]
        func options(_ seed: UInt64) -> SamplingOptions {
            var options = SamplingOptions()
            options.maxNewTokens = 10
            options.seed = seed
            options.stopAtEndOfText = false
            return options
        }
        let alone = try prompts.enumerated().map { i, prompt in
            try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode(prompt)], options: options(UInt64(i)))[0].tokens
        }
        // Six tasks at once over four slots: some wait for a slot, all are decoded in shared batches.
        let together = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, prompt) in prompts.enumerated() {
                group.addTask { (i, try await api.complete(prompt, options: options(UInt64(i)))[0].tokens) }
            }
            var results = [[Int32]](repeating: [], count: prompts.count)
            for try await (i, tokens) in group { results[i] = tokens }
            return results
        }
        XCTAssertEqual(together, alone)
    }

    func testCancellingTheReaderStopsItsGeneration() async throws {
        let (api, _) = try savedModel()
        // Generations that would run for a million tokens (the context slides): only cancelling frees their slots.
        var endless = SamplingOptions()
        endless.maxNewTokens = 1_000_000
        endless.slidingWindow = true
        endless.stopAtEndOfText = false
        // Four slots: three readers that stop reading after two pieces, and one whose task is cancelled.
        for _ in 0..<3 {
            var pieces = 0
            for try await event in api.generate("Once upon a time", options: endless) {
                if case .text = event { pieces += 1 }
                if pieces == 2 { break }
            }
            XCTAssertEqual(pieces, 2)
        }
        let started = expectation(description: "the cancelled reader got a piece")
        let cancelled = Task {
            var first = true
            for try await event in api.generate("Again", options: endless) {
                if case .text = event, first { first = false; started.fulfill() }
            }
        }
        await fulfillment(of: [started], timeout: 30)
        cancelled.cancel()
        _ = await cancelled.result
        var short = SamplingOptions()
        short.maxNewTokens = 3
        short.count = 4
        short.stopAtEndOfText = false
        let finished = try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask { try await api.complete("Then", options: short).count }
            group.addTask { try await Task.sleep(for: .seconds(30)); return nil }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        XCTAssertEqual(finished, 4, "all four slots are free again within 30 s")
    }

    func testBadRequestsFailTheirStreamWithAMessage() async throws {
        let (api, _) = try savedModel()
        var options = SamplingOptions()
        options.temperature = -1
        do {
            for try await _ in api.generate("Hi", options: options) {}
            XCTFail("a negative temperature is refused")
        } catch let error as GenerationError {
            XCTAssertEqual(error.reason, .invalidArgument, error.message)
        }
        options = SamplingOptions()
        do {
            for try await _ in api.generate(tokens: [60000], options: options) {}
            XCTFail("a token outside the vocabulary is refused")
        } catch let error as GenerationError {
            XCTAssertEqual(error.reason, .idOutsideVocabulary, "\(error)")
        }
    }

    func testChatKeepsTheConversationAndLeavesOutItsOldestTurns() async throws {
        let (api, model) = try savedModel(context: 64)
        var options = ChatSession.defaultOptions
        options.maxNewTokens = 6
        options.seed = 9
        let chat = api.chat(system: "Be brief.", options: options)
        let first = try await chat.reply(to: "Hello")
        // The reply is what the generator writes from the template's rendering of the conversation.
        let tokenizer = try TokenizerLoading.gpt2(), template = ChatTemplate.default
        var expectedOptions = options
        expectedOptions.stop = try template.replyStops(tokenizer)
        let prompt = try template.tokens([ChatMessage(role: .system, content: "Be brief."), ChatMessage(role: .user, content: "Hello")],
                                         addGenerationPrompt: true, tokenizer: tokenizer)
        let expected = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [prompt], options: expectedOptions)[0].text
        XCTAssertEqual(first, expected.hasPrefix(template.replyPrefix) ? String(expected.dropFirst(template.replyPrefix.count)) : expected)
        XCTAssertEqual(chat.messages.map(\.role), [.system, .user, .assistant])
        XCTAssertEqual(chat.messages.last?.content, first)
        // Long messages: the 64-token context holds only the system message and the newest message.
        for turn in 0..<3 { _ = try await chat.reply(to: "Message number \(turn) is a rather long one, of many words.") }
        let roles = chat.messages.map(\.role)
        XCTAssertEqual(roles.first, .system, "the system message stays")
        XCTAssertLessThan(roles.count, 1 + 2 * 4, "older turns were left out")
        XCTAssertEqual(chat.messages.suffix(2).first?.content, "Message number 2 is a rather long one, of many words.")
        chat.reset()
        XCTAssertEqual(chat.messages, [ChatMessage(role: .system, content: "Be brief.")])
    }

    func testScoresAndEmbeddingsAreTheModelsOwn() throws {
        let (api, model) = try savedModel()
        let tokenizer = try TokenizerLoading.gpt2()
        let context = try tokenizer.encode("The cat sat on the"), continuation = try tokenizer.encode(" mat")
        let score = try api.logLikelihood(of: " mat", after: "The cat sat on the")
        let ids = context + continuation
        let all = logits(model, ids, batch: 1).scalars, v = model.config.vocabularySize
        var expected = 0.0
        for (k, token) in continuation.enumerated() {
            let row = Array(all[((context.count - 1 + k) * v)..<((context.count + k) * v)])
            let m = row.max()!
            let logSum = log(row.reduce(0.0) { $0 + exp(Double($1 - m)) }) + Double(m)
            expected += Double(row[Int(token)]) - logSum
        }
        XCTAssertEqual(score.logLikelihood, expected, accuracy: 1e-3)
        XCTAssertEqual(score.tokenCount, continuation.count)

        let text = "Embed these words"
        let textIDs = try tokenizer.encode(text), width = model.config.embeddingWidth
        let states = model.hidden(ids: textIDs, batch: 1, tape: Tape(recording: false)).final.value.scalars
        let mean = try api.embedding(of: text), last = try api.embedding(of: text, pooling: .lastToken)
        XCTAssertEqual(mean.count, width)
        for i in 0..<width {
            let column = (0..<textIDs.count).map { states[$0 * width + i] }
            XCTAssertEqual(mean[i], column.reduce(0, +) / Float(textIDs.count), accuracy: 1e-5)
            XCTAssertEqual(last[i], column.last!, accuracy: 1e-5)
        }
        XCTAssertThrowsError(try api.embedding(of: String(repeating: "word ", count: 100)), "longer than the context")
    }
}
