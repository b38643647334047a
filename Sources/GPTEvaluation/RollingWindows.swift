/// Windows that score every token of a long text exactly once with a model of limited context, as
/// lm-evaluation-harness's rolling log-likelihood: the first window predicts the first `length` tokens after the
/// prefix token; each later one predicts up to `length − overlap + 1` new tokens with the tokens before them as
/// context, reading `length` tokens in all.
package enum RollingWindows {
    package struct Window: Sendable, Equatable {
        package var context: [Int32]
        package var predicted: [Int32]
    }

    /// The windows over `tokens`. Without a prefix token (a tokenizer with no end-of-text), the first token is
    /// context only and is not scored. `overlap` is in 1...length (1: windows that share nothing but their edge).
    package static func windows(_ tokens: [Int32], prefix: Int32?, length: Int, overlap: Int) -> [Window] {
        precondition(length >= 1 && (1...length).contains(overlap))
        guard !tokens.isEmpty else { return [] }
        var windows: [Window] = []
        var predicted: Int
        if let prefix {
            let first = min(length, tokens.count)
            windows.append(Window(context: [prefix], predicted: Array(tokens[..<first])))
            predicted = first
        } else {
            guard tokens.count > 1 else { return [] }
            let first = min(length, tokens.count - 1)
            windows.append(Window(context: [tokens[0]], predicted: Array(tokens[1...first])))
            predicted = first + 1
        }
        let step = length - overlap + 1
        while predicted < tokens.count {
            let count = min(tokens.count - predicted, step)
            let end = predicted + count
            windows.append(Window(context: Array(tokens[max(0, end - length - 1)..<(end - count)]),
                                  predicted: Array(tokens[(end - count)..<end])))
            predicted = end
        }
        return windows
    }
}
