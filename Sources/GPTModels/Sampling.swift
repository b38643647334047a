import Foundation
import GPTUtilities
import TensorCore

/// How to pick each next token and when to stop.
public struct SamplingOptions: Sendable, Equatable {
    /// New tokens at most per completion.
    public var maxNewTokens = 128
    /// 0 picks the most likely token (greedy); otherwise logits are divided by it before sampling.
    public var temperature: Float = 1
    /// Sample only among the k most likely tokens.
    public var topK: Int?
    /// Sample only among the most likely tokens whose probabilities sum to at least p (nucleus), in (0, 1].
    public var topP: Float = 1
    /// Drop tokens whose probability is below minP times the most likely one's, in [0, 1).
    public var minP: Float = 0
    /// Divides positive logits (multiplies negative ones) of tokens already in the prompt or output; 1 is off.
    public var repetitionPenalty: Float = 1
    /// Subtracted from the logit of every token already generated (OpenAI's presence penalty).
    public var presencePenalty: Float = 0
    /// Subtracted once per earlier occurrence in the output (OpenAI's frequency penalty).
    public var frequencyPenalty: Float = 0
    /// Added to the logits of the given tokens.
    public var logitBias: [Int32: Float] = [:]
    /// Seed of the sampling generator: the same seed gives the same completions.
    public var seed: UInt64 = 0
    /// Texts that end a completion when generated (not included in it), matched across token boundaries.
    public var stop: [String] = []
    /// Whether the end-of-text token ends a completion.
    public var stopAtEndOfText = true
    /// Completions per prompt.
    public var count = 1
    /// Report the log-probability of each chosen token and of this many most likely alternatives (nil: none).
    public var logprobs: Int?
    /// Prepend the prompt to the returned text.
    public var echo = false
    /// Report the log-probability of each prompt token after the first (with `logprobs` alternatives), as
    /// scoring a text needs; the prompt is then read with every position's logits.
    public var promptLogprobs = false
    /// Cut prompts from the left so that each, with `maxNewTokens` after it, fits in the context (keeping at least
    /// one token of it), instead of rejecting prompts longer than the context.
    public var truncateLeft = false
    /// When the context is full, keep generating from its last half (as nanoGPT's sampler crops its input)
    /// instead of ending with `length`.
    public var slidingWindow = false

    /// The defaults: sampling at temperature 1 with no truncation or penalties, one completion of up to 128 new
    /// tokens that stops at the end-of-text token.
    public init() {}

    /// Rejects settings outside their ranges, with a message naming the setting.
    package func validate() throws {
        func check(_ condition: Bool, _ message: String) throws { if !condition { throw GenerationError(.invalidArgument, message) } }
        try check(maxNewTokens >= 0, "max new tokens must not be negative")
        try check(temperature >= 0 && temperature.isFinite, "temperature must be a finite number ≥ 0")
        try check(topK.map { $0 > 0 } ?? true, "top-k must be positive")
        try check(topP > 0 && topP <= 1, "top-p must be in (0, 1]")
        try check(minP >= 0 && minP < 1, "min-p must be in [0, 1)")
        try check(repetitionPenalty > 0 && repetitionPenalty.isFinite, "repetition penalty must be positive")
        try check(presencePenalty.isFinite && frequencyPenalty.isFinite, "penalties must be finite")
        try check(count >= 1, "the number of completions must be at least 1")
        try check(logprobs.map { $0 >= 0 && $0 <= 20 } ?? true, "logprobs must be in 0...20")
        try check(stop.allSatisfy { !$0.isEmpty }, "stop sequences must not be empty")
    }
}

/// Turns a row of logits into the next token under `SamplingOptions`.
package struct TokenSampler {
    let options: SamplingOptions
    var random: SeededRandom
    private var scratch: [Float] = []
    private var blockSums: [Float] = []
    private var order: [Int32] = []

    /// A sampler whose random stream is fixed by the options' seed and `stream` (one per completion).
    package init(options: SamplingOptions, stream: UInt64) {
        self.options = options
        random = SeededRandom(seed: options.seed &+ stream &* 0x9E37_79B9_7F4A_7C15)
    }

    /// Picks a token from `logits` (count = vocabulary) given the tokens of the prompt and of the output so far.
    package mutating func next(_ logits: UnsafePointer<Float>, vocabulary: Int, context: [Int32], generated: [Int32: Int]) -> Int32 {
        switch prepare(logits, vocabulary: vocabulary, context: context, generated: generated) {
        case .token(let token):
            return token
        case .everyToken(let total):
            return draw(total: total, vocabulary: vocabulary)
        case .candidates(let candidateTotal):
            var u = random.nextDouble() * candidateTotal
            for token in order {
                u -= Double(scratch[Int(token)])
                if u < 0 { return token }
            }
            return order.last!
        }
    }

    /// The distribution `next` draws from: each token's probability after the options' adjustments (bias,
    /// penalties, temperature, top-k, top-p, min-p), zero outside the candidates; at temperature 0, all of it on the
    /// token `next` picks. Draws nothing from the random stream.
    package mutating func probabilities(_ logits: UnsafePointer<Float>, vocabulary: Int, context: [Int32], generated: [Int32: Int]) -> [Double] {
        var result = [Double](repeating: 0, count: vocabulary)
        switch prepare(logits, vocabulary: vocabulary, context: context, generated: generated) {
        case .token(let token):
            result[Int(token)] = 1
        case .everyToken(let total):
            for i in 0..<vocabulary { result[i] = Double(scratch[i]) / total }
        case .candidates(let total):
            for token in order { result[Int(token)] = Double(scratch[Int(token)]) / total }
        }
        return result
    }

    /// A uniform draw in [0, 1) from the sampler's random stream.
    package mutating func uniform() -> Double { random.nextDouble() }

    /// What `prepare` leaves for a draw.
    private enum Prepared {
        /// The token (temperature 0).
        case token(Int32)
        /// Every token, with the weights in `scratch` summing to this.
        case everyToken(Double)
        /// The tokens in `order`, with the weights in `scratch` summing over them to this.
        case candidates(Double)
    }

    /// The options' adjustments of a row of logits: the most likely token at temperature 0; else unnormalised
    /// probabilities in `scratch`, over every token or over the candidates in `order`.
    private mutating func prepare(_ logits: UnsafePointer<Float>, vocabulary: Int, context: [Int32], generated: [Int32: Int]) -> Prepared {
        let o = options
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(start: logits, count: vocabulary))
        for (token, bias) in o.logitBias where token >= 0 && Int(token) < vocabulary { scratch[Int(token)] += bias }
        if o.repetitionPenalty != 1 {
            for token in Set(context) {
                let l = scratch[Int(token)]
                scratch[Int(token)] = l > 0 ? l / o.repetitionPenalty : l * o.repetitionPenalty
            }
        }
        if o.presencePenalty != 0 || o.frequencyPenalty != 0 {
            for (token, n) in generated { scratch[Int(token)] -= o.presencePenalty + o.frequencyPenalty * Float(n) }
        }
        if o.temperature == 0 {
            return .token(Int32(scratch.withUnsafeBufferPointer { firstIndexOfMaximum($0.baseAddress!, vocabulary) }))
        }
        // Probabilities at the temperature (unnormalised), with their sums per block of 16 for the draw.
        let total = exponentiate(temperature: o.temperature, vocabulary: vocabulary)
        let needsOrder = o.topK != nil || o.topP < 1
        if !needsOrder && o.minP == 0 {
            return .everyToken(total)
        }
        let threshold = Float(Double(o.minP))  // relative to the top probability, which is exp(0) = 1
        order.removeAll(keepingCapacity: true)
        for i in 0..<vocabulary where scratch[i] >= threshold { order.append(Int32(i)) }
        if needsOrder {
            // The most likely candidates in order, popped from a heap only as far as top-k and top-p need
            // (sorting the whole vocabulary for every token would cost more than a decoding step).
            let s = scratch
            let kept = o.topK == nil ? order.reduce(0.0) { $0 + Double(s[Int($1)]) } : 0
            var heap = CandidateHeap(order, scores: s)
            var chosen: [Int32] = []
            var running: Double = 0
            while let token = heap.pop() {
                chosen.append(token)
                running += Double(s[Int(token)])
                if let k = o.topK, chosen.count == k { break }
                if o.topK == nil, running >= Double(o.topP) * kept { break }
            }
            if o.topK != nil, o.topP < 1 {
                // Top-p within the top k, renormalised.
                let mass = running
                running = 0
                var keep = 0
                for token in chosen {
                    running += Double(s[Int(token)])
                    keep += 1
                    if running >= Double(o.topP) * mass { break }
                }
                chosen.removeLast(chosen.count - keep)
            }
            order = chosen
        }
        var candidateTotal: Double = 0
        for token in order { candidateTotal += Double(scratch[Int(token)]) }
        return .candidates(candidateTotal)
    }

    /// Replaces `scratch` by exp((logit − max) / temperature) and `blockSums` by the sums of its blocks of 16
    /// (the last may be shorter); returns the total.
    private mutating func exponentiate(temperature: Float, vocabulary: Int) -> Double {
        let blocks = (vocabulary + 15) / 16
        if blockSums.count != blocks { blockSums = [Float](repeating: 0, count: blocks) }
        var total: Double = 0
        scratch.withUnsafeMutableBufferPointer { values in
            blockSums.withUnsafeMutableBufferPointer { sums in
                let p = values.baseAddress!
                let maximum = UnsafePointer(p).maximum(vocabulary)
                let inverse = Float16x(repeating: 1 / temperature), shift = Float16x(repeating: maximum)
                for b in 0..<blocks {
                    let start = b * 16
                    if start + 16 <= vocabulary {
                        let e = VectorMath.exp((load(p + start) - shift) * inverse)
                        store(e, p + start)
                        sums[b] = e.sum()
                    } else {
                        sums[b] = 0
                        for i in start..<vocabulary {
                            p[i] = VectorMath.exp((p[i] - maximum) * inverse[0])
                            sums[b] += p[i]
                        }
                    }
                    total += Double(sums[b])
                }
            }
        }
        return total
    }

    /// Draws a token with probability proportional to `scratch`, whose block sums are in `blockSums`: the block
    /// first, then the token within it.
    private mutating func draw(total: Double, vocabulary: Int) -> Int32 {
        var u = random.nextDouble() * total
        var b = 0
        while b < blockSums.count - 1, u >= Double(blockSums[b]) {
            u -= Double(blockSums[b])
            b += 1
        }
        let end = min(vocabulary, b * 16 + 16)
        var last = b * 16
        for i in (b * 16)..<end where scratch[i] > 0 {
            u -= Double(scratch[i])
            if u < 0 { return Int32(i) }
            last = i
        }
        return Int32(last)  // rounding left u just above the block's sum: its last candidate
    }
}

/// A max-heap of token ids by score (ties: the smaller id first), built in linear time.
struct CandidateHeap {
    private var items: [Int32]
    private let scores: [Float]

    init(_ items: [Int32], scores: [Float]) {
        self.items = items
        self.scores = scores
        var i = items.count / 2 - 1
        while i >= 0 { siftDown(i); i -= 1 }
    }

    @inline(__always)
    private func before(_ a: Int32, _ b: Int32) -> Bool {
        let sa = scores[Int(a)], sb = scores[Int(b)]
        return sa > sb || (sa == sb && a < b)
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var top = i
            if l < items.count, before(items[l], items[top]) { top = l }
            if r < items.count, before(items[r], items[top]) { top = r }
            if top == i { return }
            items.swapAt(i, top)
            i = top
        }
    }

    mutating func pop() -> Int32? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return first
    }
}

/// Index of the largest value; the first one on ties, as torch.argmax.
package func argmax(_ values: [Float]) -> Int {
    values.isEmpty ? 0 : values.withUnsafeBufferPointer { firstIndexOfMaximum($0.baseAddress!, $0.count) }
}

/// Index of the first of the largest of `count` (> 0) values (NaNs are passed over).
func firstIndexOfMaximum(_ values: UnsafePointer<Float>, _ count: Int) -> Int {
    let maximum = values.maximum(count)
    var i = 0
    while i < count - 1, values[i] != maximum { i += 1 }
    return i
}
