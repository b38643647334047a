import Foundation
import Tokenizers

/// A small model with the same tokenizer as the one it drafts for (speculative decoding, Leviathan et al. and Chen
/// et al., 2023): for each decoding sequence it proposes `tokens` tokens, one cheap pass each; the model then reads
/// the sequence's last token and all the proposals in one pass, which costs about what one token costs while decoding
/// is bound by memory bandwidth, and keeps proposals by rejection sampling: proposal x with probability
/// min(1, p(x) / q(x)) (p the model's distribution, q the draft's, both after the sampling options), and at the first
/// rejection a token drawn from max(0, p − q), normalised; when all are kept, one more from p. The tokens are drawn
/// from the model's own distribution whatever the draft proposes; greedy decoding gives the model's greedy tokens.
package struct DraftModel {
    package let model: GPTModel
    package let weights: DecodeWeights
    /// Tokens proposed a step.
    package let tokens: Int

    /// A draft of `tokens` tokens a step for `target`, refused when the vocabularies differ, when either model's
    /// cache cannot drop positions (local or summary attention layers keep rings), or when `tokens` is not 1-16.
    /// That the two tokenizers agree is the caller's to check (`sameTokenizer`).
    package init(model: GPTModel, weights: DecodeWeights, tokens: Int, for target: GPTModel) throws {
        guard (1...16).contains(tokens) else {
            throw GenerationError(.invalidArgument, "the draft proposes 1 to 16 tokens a step, not \(tokens)")
        }
        guard model.config.vocabularySize == target.config.vocabularySize else {
            throw GenerationError(.invalidArgument, "the draft model's vocabulary has \(model.config.vocabularySize) tokens, the model's \(target.config.vocabularySize): a draft needs the same tokenizer")
        }
        func keepsEveryPosition(_ c: GPTConfig) -> Bool {
            (0..<c.layerCount).allSatisfy {
                switch c.attentionPattern(layer: $0) {
                case .dense, .strided: true
                case .local, .fixed: false
                }
            }
        }
        for (name, m) in [("model", target), ("draft model", model)] where !keepsEveryPosition(m.config) {
            throw GenerationError(.invalidArgument, "the \(name) has local or fixed attention layers, whose caches cannot drop the proposals it does not keep: speculative decoding needs dense or strided layers")
        }
        self.model = model
        self.weights = weights
        self.tokens = tokens
    }

    /// Nil when `draft` encodes every token id as `target` does (the same bytes, the same end-of-text id), else the
    /// first difference, to refuse a draft with.
    package static func tokenizerDifference(_ draft: any Tokenizer, _ target: any Tokenizer, vocabulary: Int) -> String? {
        func endOfText(_ tokenizer: any Tokenizer) -> String { tokenizer.endOfText.map { "token \($0)" } ?? "none" }
        func text(_ id: Int32, _ tokenizer: any Tokenizer) -> String {
            (try? tokenizer.decodeBytes([id])).map { "\(String(reflecting: String(decoding: $0, as: UTF8.self))) (\($0.count) byte\($0.count == 1 ? "" : "s"))" } ?? "no token"
        }
        guard draft.endOfText == target.endOfText else {
            return "the end of text is \(endOfText(draft)) to the draft's tokenizer and \(endOfText(target)) to the model's"
        }
        for id in 0..<Int32(vocabulary) where (try? draft.decodeBytes([id])) != (try? target.decodeBytes([id])) {
            return "token \(id) is \(text(id, draft)) to the draft's tokenizer and \(text(id, target)) to the model's"
        }
        return nil
    }
}

/// What speculative decoding did (`BatchDecoder.speculationStatistics`).
package struct SpeculationStatistics: Sendable {
    /// Tokens the draft proposed, and those the model kept.
    package var proposed = 0, accepted = 0
    /// Sequence steps decoded by speculation, and the tokens they produced.
    package var speculativeSteps = 0, speculativeTokens = 0
    /// Decoding steps taken without speculation while a draft was there, after speculation proved slower.
    package var plainSteps = 0

    /// Share of proposals kept.
    package var acceptanceRate: Double { proposed == 0 ? 0 : Double(accepted) / Double(proposed) }
}

/// Decides step by step whether to speculate, the same way for the same tokens (no clock: a seed gives the same
/// completions every run). Decoding one token is bound by reading the weights, so a speculative step costs about
/// 1 + k·r plain steps, r the draft's bytes of weights over the model's (plus a tenth for the model's pass over k + 1
/// tokens). When the tokens a speculative step produces (an average over the last steps, from the fourth on) fall below
/// that cost — a draft that guesses badly — the next steps are plain, 64 of them, then speculation is tried again; each
/// failed try doubles the plain steps that follow (up to 1,024), and a try that pays brings them back to 64.
struct SpeculationControl {
    private(set) var statistics = SpeculationStatistics()
    /// A speculative step's cost in plain steps.
    private let stepCost: Double
    /// Tokens a speculative sequence step produced, averaged exponentially.
    private var tokensPerStep: Double?
    private var stepsMeasured = 0
    private var plainStepsLeft = 0
    /// Plain steps after the next failed try.
    private var backoff = 64

    init(draftTokens: Int = 0, bytesRatio: Double = 0) {
        stepCost = 1.1 + Double(draftTokens) * bytesRatio
    }

    func shouldSpeculate() -> Bool { plainStepsLeft == 0 }

    /// A decoding step taken without speculation.
    mutating func countPlainStep() {
        plainStepsLeft = max(0, plainStepsLeft - 1)
        statistics.plainSteps += 1
    }

    /// One sequence's speculative step.
    mutating func count(proposed: Int, accepted: Int, produced: Int) {
        statistics.proposed += proposed
        statistics.accepted += accepted
        statistics.speculativeSteps += 1
        statistics.speculativeTokens += produced
        tokensPerStep = tokensPerStep.map { 0.8 * $0 + 0.2 * Double(produced) } ?? Double(produced)
        stepsMeasured += 1
        guard stepsMeasured >= 4, let tokensPerStep else { return }
        if tokensPerStep < stepCost {
            plainStepsLeft = backoff
            backoff = min(2 * backoff, 1024)
            self.tokensPerStep = nil
            stepsMeasured = 0
        } else if stepsMeasured >= 16 {
            backoff = 64
        }
    }
}

extension BatchDecoder {
    /// What speculative decoding did so far.
    package var speculationStatistics: SpeculationStatistics { speculation.statistics }

    /// Whether a decoding sequence can be speculated this step: one token to feed, room for the proposals in both
    /// contexts.
    func canSpeculate(_ s: SequenceState) -> Bool {
        guard let draft, s.nextInput.count == 1 else { return false }
        let context = min(model.config.contextLength, draft.model.config.contextLength)
        return session.lengths[s.slot] + draft.tokens + 1 <= context
    }

    /// One speculative step of each listed sequence: the draft proposes, the model checks all proposals in one pass,
    /// each sequence takes the tokens rejection sampling keeps and one more.
    func speculate(_ batch: [(state: RequestState, sequence: SequenceState)]) throws {
        guard let draft, let draftSession, !batch.isEmpty else { return }
        let k = draft.tokens, vocabulary = model.config.vocabularySize
        // Each sequence's tokens so far in its slot (its last one not yet fed to the model), and the draft's proposals.
        let contexts = batch.map { Array(($0.state.request.prompt + $0.sequence.tokens)[$0.sequence.windowStart...]) }
        var proposals = [[Int32]](repeating: [], count: batch.count)
        var proposalDistributions = [[[Double]]](repeating: [], count: batch.count)
        var counts = batch.map(\.sequence.counts)
        for j in 0..<k {
            // The first pass brings the draft's cache up to the sequence (its whole prompt the first time).
            let logits = try draftSession.feed(batch.indices.map { i in
                let s = batch[i].sequence
                return (s.slot, j == 0 ? Array(contexts[i][s.draftHeld...]) : [proposals[i][j - 1]])
            })
            for (i, (_, s)) in batch.enumerated() {
                let q = s.sampler.probabilities(logits.pointer + i * vocabulary, vocabulary: vocabulary,
                                                context: batch[i].state.request.prompt + s.tokens + proposals[i], generated: counts[i])
                let token = Self.draw(from: q, uniform: s.sampler.uniform())
                proposals[i].append(token)
                proposalDistributions[i].append(q)
                counts[i][token, default: 0] += 1
            }
        }
        let logits = try session.feed(batch.indices.map { (batch[$0].sequence.slot, batch[$0].sequence.nextInput + proposals[$0]) }, everyToken: true)
        for (i, (state, s)) in batch.enumerated() {
            var accepted = 0, taken = 0
            // Positions the slot held before this pass; before the token of row r, its last token and r accepted
            // proposals count too.
            let held = session.lengths[s.slot] - (k + 1), window = s.windowStart
            for r in 0...k {
                let row = UnsafePointer(logits.pointer + (i * (k + 1) + r) * vocabulary)
                let p = s.sampler.probabilities(row, vocabulary: vocabulary, context: state.request.prompt + s.tokens, generated: s.counts)
                var token: Int32, rejected = false
                if r < k {
                    let proposal = proposals[i][r], q = proposalDistributions[i][r]
                    if s.sampler.uniform() * q[Int(proposal)] < p[Int(proposal)] {
                        token = proposal
                        accepted += 1
                    } else {
                        var residual = zip(p, q).map { max(0, $0 - $1) }
                        if residual.reduce(0, +) <= 0 { residual = p }  // p = q to rounding: p itself
                        token = Self.draw(from: residual, uniform: s.sampler.uniform())
                        rejected = true
                    }
                } else {
                    token = Self.draw(from: p, uniform: s.sampler.uniform())
                }
                try take(token, for: s, of: state, from: row, held: held + 1 + r)
                taken += 1
                if s.finish != nil || rejected || s.windowStart != window { break }
            }
            speculation.count(proposed: k, accepted: accepted, produced: taken)
            // (A sequence that went on past the context with a sliding window starts again in both caches.)
            guard s.windowStart == window else { continue }
            // The model keeps what its sequence holds but the token just taken (also when it ends: the prompt cache
            // keeps what the slot holds); the draft the accepted proposals it read.
            session.truncate(sequence: s.slot, to: held + taken)
            guard s.finish == nil else { continue }
            s.draftHeld = contexts[i].count + min(accepted, k - 1)
            draftSession.truncate(sequence: s.slot, to: s.draftHeld)
        }
    }

    /// A token drawn with probability proportional to `weights`, by the uniform draw `u` in [0, 1).
    private static func draw(from weights: [Double], uniform u: Double) -> Int32 {
        var left = u * weights.reduce(0, +), last = 0
        for (i, w) in weights.enumerated() where w > 0 {
            left -= w
            last = i
            if left < 0 { return Int32(i) }
        }
        return Int32(last)
    }
}
