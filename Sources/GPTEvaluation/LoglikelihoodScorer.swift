import Foundation
import GPTModels
import TensorCore

/// A context and the continuations to score after it (token ids).
package struct ScoringRequest: Sendable {
    package var context: [Int32]
    package var continuations: [[Int32]]

    package init(context: [Int32], continuations: [[Int32]]) {
        self.context = context
        self.continuations = continuations
    }
}

/// The model's verdict on one continuation.
public struct ContinuationScore: Sendable, Equatable {
    /// Sum of the log-probabilities of its tokens, each given everything before it.
    public var logLikelihood: Double
    /// Whether greedy decoding would have produced every one of its tokens.
    public var isGreedy: Bool
    /// Number of the continuation's tokens that were scored.
    public var tokenCount: Int
}

/// Scores continuations of contexts with the key/value cache: each context is computed once and its cache copied
/// for every continuation, so several choices cost one pass over the prompt plus their own tokens. Requests are
/// batched: many contexts in one pass, then all their continuations in another.
package final class LoglikelihoodScorer {
    package let model: GPTModel
    private let session: InferenceSession
    /// Tokens of contexts, and of continuations (whose every row needs logits), fed in one pass at most (a request
    /// larger than that goes alone).
    private let contextTokensPerBatch = 8192, continuationTokensPerBatch = 2048

    /// A scorer holding `slots` sequences at once (default: as many as fit in about 2 GiB of cache, at most 64), their
    /// keys and values in `cachePrecision`.
    package init(model: GPTModel, slots: Int? = nil, weights: DecodeWeights? = nil,
                 cachePrecision: CachedAttention.Cache.Precision = .float32) {
        self.model = model
        let c = model.config
        let bytesPerSlot = 2 * c.layerCount * c.contextLength * c.embeddingWidth * cachePrecision.bytes
        let capacity = slots ?? max(1, min(64, (2 << 30) / max(bytesPerSlot, 1)))
        session = InferenceSession(model: model, sequences: capacity, weights: weights, cachePrecision: cachePrecision)
    }

    /// One score per continuation of each request, in order. A context must not be empty, a continuation must not
    /// be empty, and context plus continuation less its last token must fit the model's context.
    package func score(_ requests: [ScoringRequest]) throws -> [[ContinuationScore]] {
        let c = model.config
        for (index, request) in requests.enumerated() {
            guard !request.context.isEmpty else { throw GenerationError(.emptyInput, "request \(index + 1): empty context") }
            guard !request.continuations.isEmpty else { throw GenerationError(.emptyInput, "request \(index + 1): no continuation") }
            for continuation in request.continuations {
                guard !continuation.isEmpty else { throw GenerationError(.emptyInput, "request \(index + 1): an empty continuation") }
                guard request.context.count + continuation.count - 1 <= c.contextLength else {
                    throw GenerationError(.exceedsContext, "request \(index + 1): \(request.context.count) context and \(continuation.count) continuation tokens exceed the model's context of \(c.contextLength)")
                }
            }
            guard request.continuations.count <= session.capacity else {
                throw GenerationError(.overCapacity, "request \(index + 1) has \(request.continuations.count) continuations, more than the \(session.capacity) sequences the scorer holds")
            }
        }
        var results: [[ContinuationScore]] = []
        results.reserveCapacity(requests.count)
        var start = 0
        while start < requests.count {
            var end = start, slots = 0, contextTokens = 0, continuationTokens = 0
            while end < requests.count {
                let request = requests[end]
                let extra = request.continuations.reduce(0) { $0 + $1.count - 1 }
                if end > start, slots + request.continuations.count > session.capacity
                    || contextTokens + request.context.count > contextTokensPerBatch
                    || continuationTokens + extra > continuationTokensPerBatch { break }
                slots += request.continuations.count
                contextTokens += request.context.count
                continuationTokens += extra
                end += 1
            }
            results += try scoreBatch(requests[start..<end])
            start = end
        }
        return results
    }

    private func scoreBatch(_ batch: ArraySlice<ScoringRequest>) throws -> [[ContinuationScore]] {
        let vocabulary = model.config.vocabularySize
        // Slot of each continuation: a request's continuations take consecutive slots, the first holds the context.
        var firstSlot: [Int] = [], slot = 0
        for request in batch { firstSlot.append(slot); slot += request.continuations.count }
        for s in 0..<slot { session.reset(sequence: s) }
        let contextLogits = try session.feed(batch.enumerated().map { (firstSlot[$0.offset], $0.element.context) })
        var scores = batch.enumerated().map { index, request in
            request.continuations.map { continuation in
                Self.score(token: continuation[0], logits: contextLogits.pointer + index * vocabulary, vocabulary: vocabulary)
            }
        }
        // The rest of each continuation after a copy of its context's cache.
        var entries: [(sequence: Int, tokens: [Int32])] = [], owners: [(request: Int, choice: Int)] = []
        for (index, request) in batch.enumerated() {
            for (choice, continuation) in request.continuations.enumerated() where continuation.count > 1 {
                if choice > 0 { session.copy(sequence: firstSlot[index], to: firstSlot[index] + choice) }
                entries.append((firstSlot[index] + choice, Array(continuation.dropLast())))
                owners.append((index, choice))
            }
        }
        guard !entries.isEmpty else { return scores.map { $0.map(\.score) } }
        let logits = try session.feed(entries, everyToken: true)
        var row = 0
        for (entry, owner) in zip(entries, owners) {
            let continuation = batch[batch.startIndex + owner.request].continuations[owner.choice]
            for position in 1..<continuation.count {
                let next = Self.score(token: continuation[position], logits: logits.pointer + row * vocabulary, vocabulary: vocabulary)
                scores[owner.request][owner.choice].add(next)
                row += 1
            }
            precondition(entry.tokens.count == continuation.count - 1)
        }
        return scores.map { $0.map(\.score) }
    }

    /// A running score: log-likelihood so far and whether every token was the greedy one.
    private struct Partial {
        var score: ContinuationScore
        mutating func add(_ other: Partial) {
            score.logLikelihood += other.score.logLikelihood
            score.isGreedy = score.isGreedy && other.score.isGreedy
            score.tokenCount += other.score.tokenCount
        }
    }

    /// log softmax(logits)[token], and whether `token` has the largest logit.
    private static func score(token: Int32, logits: UnsafePointer<Float>, vocabulary: Int) -> Partial {
        let (maximum, logSum) = logSumExpOfRow(logits, vocabulary)
        let logit = logits[Int(token)]
        let logProbability = Double(logit - maximum) - Double(logSum)
        return Partial(score: ContinuationScore(logLikelihood: logProbability, isGreedy: logit >= maximum, tokenCount: 1))
    }
}
