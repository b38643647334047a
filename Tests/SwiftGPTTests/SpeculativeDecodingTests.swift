import Foundation
import SwiftGPT
import TensorCore
import Tokenizers
import XCTest

/// Speculative decoding (`DraftModel`): a draft proposes, the model checks, and the tokens are the model's.
final class SpeculativeDecodingTests: XCTestCase {
    let tokenizer = try! CharacterTokenizer(characters: (0..<23).map { Unicode.Scalar(UInt8(97 + $0)) })

    func config(layers: Int) -> GPTConfig {
        var config = tinyConfig()
        config.contextLength = 64
        config.layerCount = layers
        return config
    }

    /// Sampling `tokens` tokens at `temperature`, past any end-of-text.
    func sampling(_ tokens: Int, temperature: Float) -> SamplingOptions {
        var options = SamplingOptions()
        options.temperature = temperature
        options.maxNewTokens = tokens
        options.stopAtEndOfText = false
        return options
    }

    /// The completions of `prompts` decoded together by `decoder`, in prompt order.
    func complete(_ prompts: [[Int32]], options: SamplingOptions, with decoder: BatchDecoder) throws -> [Completion] {
        var completions: [Int: Completion] = [:]
        for (index, prompt) in prompts.enumerated() {
            try decoder.add(GenerationRequest(prompt: prompt, options: options, index: index, stream: UInt64(index))) { event in
                if case .finished(let c) = event { completions[c.prompt] = c }
            }
        }
        while !decoder.isIdle { try decoder.step() }
        return try prompts.indices.map { try XCTUnwrap(completions[$0]) }
    }

    /// Greedy speculation gives the tokens of plain greedy decoding, with a draft that guesses every token (the model
    /// itself: every proposal kept) and with one that guesses few (another random model), 1, 3 and 5 tokens a step,
    /// several sequences decoded together, their log-probabilities those of plain decoding.
    func testGreedySpeculationGivesThePlainTokens() throws {
        let model = try GPTModel(config: config(layers: 2), seed: 31)
        let other = try GPTModel(config: config(layers: 1), seed: 32)
        var options = sampling(40, temperature: 0)
        options.logprobs = 0
        let prompts: [[Int32]] = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
        let plain = try complete(prompts, options: options, with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 3))
        for (draftModel, name) in [(model, "the model itself"), (other, "another model")] {
            for k in [1, 3, 5] {
                let draft = try DraftModel(model: draftModel, weights: draftModel.decodingWeights(), tokens: k, for: model)
                let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 3, draft: draft)
                let speculated = try complete(prompts, options: options, with: decoder)
                XCTAssertEqual(speculated.map(\.tokens), plain.map(\.tokens), "\(name), \(k) a step")
                for (a, b) in zip(speculated, plain) {
                    for (x, y) in zip(a.logprobs!, b.logprobs!) { XCTAssertEqual(x.logprob, y.logprob, accuracy: 1e-5, "\(name), \(k) a step") }
                }
                let statistics = decoder.speculationStatistics
                XCTAssertGreaterThan(statistics.speculativeSteps, 0, "\(name), \(k) a step")
                if draftModel === model {
                    XCTAssertEqual(statistics.acceptanceRate, 1, "the model proposes its own greedy tokens")
                }
            }
        }
    }

    /// Up to the context's end: speculation stops where the proposals no longer fit, a completion ends at the context
    /// as a plain one does, and one that goes on with a sliding window continues as the plain one.
    func testSpeculationUpToTheContextsEnd() throws {
        let model = try GPTModel(config: config(layers: 2), seed: 33)
        let draft = try DraftModel(model: model, weights: model.decodingWeights(), tokens: 5, for: model)
        let prompt = (0..<40).map { Int32($0 % 23) }
        for sliding in [false, true] {
            var options = sampling(90, temperature: 0)
            options.slidingWindow = sliding
            let plain = try complete([prompt], options: options, with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 1))[0]
            let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, draft: draft)
            let speculated = try complete([prompt], options: options, with: decoder)[0]
            XCTAssertGreaterThanOrEqual(decoder.speculationStatistics.speculativeSteps, 4)
            XCTAssertEqual(speculated.tokens, plain.tokens, "sliding window: \(sliding)")
            XCTAssertEqual(speculated.finishReason, plain.finishReason)
            XCTAssertEqual(speculated.tokens.count, sliding ? 90 : 25, "the context of 64 holds 40 + 24 fed tokens, and a 25th sampled")
        }
    }

    /// A sequence that ends within a speculative step leaves in the prompt cache only what the model read and kept:
    /// the next turn, served from the cache, gets what it gets cold.
    func testThePromptCacheKeepsOnlyTheKeptTokensOfASpeculatedSequence() throws {
        let model = try GPTModel(config: config(layers: 2), seed: 34)
        let draftModel = try GPTModel(config: config(layers: 1), seed: 35)
        let draft = try DraftModel(model: draftModel, weights: draftModel.decodingWeights(), tokens: 4, for: model)
        var options = sampling(7, temperature: 0)
        options.logprobs = 0
        for first in 1...9 {
            let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, promptCache: PromptCache(byteLimit: 1 << 20), draft: draft)
            let prompt = (0..<first).map { Int32($0 * 5 % 23) }
            let turn = try complete([prompt], options: options, with: decoder)[0]
            let next = prompt + turn.tokens + [1, 2]
            let warm = try complete([next], options: options, with: decoder)[0]
            let cold = try complete([next], options: options, with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 1))[0]
            XCTAssertEqual(warm.tokens, cold.tokens, "prompt of \(first)")
            XCTAssertEqual(warm.logprobs!.map(\.logprob), cold.logprobs!.map(\.logprob), "prompt of \(first)")
        }
    }

    /// Sampled speculation draws from the model's distribution, not the draft's: the second and third tokens of many
    /// completions (the first is drawn after the prompt, plainly) follow the model's exact marginal distributions
    /// (chi-square, 22 degrees of freedom, below the 0.1% critical value 48.3), though the draft's differ.
    func testSampledTokensFollowTheModelsDistribution() throws {
        let model = try GPTModel(config: config(layers: 2), seed: 41)
        let draftModel = try GPTModel(config: config(layers: 1), seed: 42)
        var options = sampling(3, temperature: 0.02)  // the random models' logits differ by hundredths
        options.seed = 7
        let prompt: [Int32] = [3, 1, 4]
        let draft = try DraftModel(model: draftModel, weights: draftModel.decodingWeights(), tokens: 3, for: model)
        let samples = 3000
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 23), count: 2)
        var speculativeSteps = 0
        for stream in 0..<samples {
            let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, draft: draft)
            var tokens: [Int32] = []
            try decoder.add(GenerationRequest(prompt: prompt, options: options, stream: UInt64(stream))) { event in
                if case .finished(let c) = event { tokens = c.tokens }
            }
            while !decoder.isIdle { try decoder.step() }
            counts[0][Int(tokens[1])] += 1
            counts[1][Int(tokens[2])] += 1
            speculativeSteps += decoder.speculationStatistics.speculativeSteps
        }
        XCTAssertGreaterThanOrEqual(speculativeSteps, samples, "every completion's tokens after the first were speculated")
        // The exact marginals: p(t1), then sums over the earlier tokens.
        func next(_ m: GPTModel, _ ids: [Int32]) -> [Double] {
            let row = logits(m, ids, batch: 1).scalars.suffix(23).map { Double($0) / Double(options.temperature) }
            let maximum = row.max()!
            let e = row.map { Foundation.exp($0 - maximum) }
            let total = e.reduce(0, +)
            return e.map { $0 / total }
        }
        let first = next(model, prompt)
        var second = [Double](repeating: 0, count: 23), third = [Double](repeating: 0, count: 23)
        var draftSecond = [Double](repeating: 0, count: 23)
        for a in 0..<23 where first[a] > 1e-9 {
            let afterA = next(model, prompt + [Int32(a)])
            let draftAfterA = next(draftModel, prompt + [Int32(a)])
            for b in 0..<23 {
                second[b] += first[a] * afterA[b]
                draftSecond[b] += first[a] * draftAfterA[b]
                guard first[a] * afterA[b] > 1e-9 else { continue }
                let afterB = next(model, prompt + [Int32(a), Int32(b)])
                for c in 0..<23 { third[c] += first[a] * afterA[b] * afterB[c] }
            }
        }
        func chiSquare(_ observed: [Int], _ expected: [Double]) -> Double {
            zip(observed, expected).reduce(0) { sum, pair in
                let e = pair.1 * Double(samples)
                return e < 1e-9 ? sum + (pair.0 > 0 ? .infinity : 0) : sum + (Double(pair.0) - e) * (Double(pair.0) - e) / e
            }
        }
        XCTAssertLessThan(chiSquare(counts[0], second), 48.3, "second tokens")
        XCTAssertLessThan(chiSquare(counts[1], third), 48.3, "third tokens")
        XCTAssertGreaterThan(chiSquare(counts[0], draftSecond), 200, "the draft's distribution is another one")
    }

    /// A draft that guesses badly does not slow decoding much: after a few steps whose tokens do not pay for the
    /// draft's passes, the decoder decodes plainly (and tries again later).
    func testABadDraftFallsBackToPlainDecoding() throws {
        let model = try GPTModel(config: config(layers: 2), seed: 51)
        let draftModel = try GPTModel(config: config(layers: 2), seed: 52)
        let options = sampling(50, temperature: 0)
        let draft = try DraftModel(model: draftModel, weights: draftModel.decodingWeights(), tokens: 4, for: model)
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: 1, draft: draft)
        let tokens = try complete([[1, 2]], options: options, with: decoder)[0].tokens
        let plain = try complete([[1, 2]], options: options, with: BatchDecoder(model: model, tokenizer: tokenizer, slots: 1))[0].tokens
        XCTAssertEqual(tokens, plain)
        let statistics = decoder.speculationStatistics
        XCTAssertLessThan(statistics.acceptanceRate, 0.5)
        XCTAssertGreaterThan(statistics.plainSteps, 20, "a draft as costly as the model, mostly wrong: plain steps")
    }

    /// Drafts that cannot work are refused with the reason.
    func testDraftsThatCannotWorkAreRefusedWithTheReason() throws {
        let model = try GPTModel(config: config(layers: 1), seed: 61)
        var wider = config(layers: 1)
        wider.vocabularySize = 24
        let otherVocabulary = try GPTModel(config: wider, seed: 62)
        XCTAssertTrue(assertThrows(GenerationError.self, .invalidArgument, try DraftModel(model: otherVocabulary, weights: otherVocabulary.decodingWeights(), tokens: 2, for: model))?.message.contains("24 tokens") ?? false)
        var local = tinyNeoConfig()
        local.contextLength = 64
        let neo = try GPTModel(config: local, seed: 63)
        XCTAssertTrue(assertThrows(GenerationError.self, .invalidArgument, try DraftModel(model: neo, weights: neo.decodingWeights(), tokens: 2, for: model))?.message.contains("local") ?? false)
        for k in [0, 17] {
            XCTAssertTrue(assertThrows(GenerationError.self, .invalidArgument, try DraftModel(model: model, weights: model.decodingWeights(), tokens: k, for: model))?.message.contains("1 to 16") ?? false)
        }
        let shifted = try CharacterTokenizer(characters: (0..<23).map { Unicode.Scalar(UInt8(98 + $0)) })
        XCTAssertNil(DraftModel.tokenizerDifference(tokenizer, tokenizer, vocabulary: 23))
        XCTAssertNotNil(DraftModel.tokenizerDifference(shifted, tokenizer, vocabulary: 23))
    }
}
