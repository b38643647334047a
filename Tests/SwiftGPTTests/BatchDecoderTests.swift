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
