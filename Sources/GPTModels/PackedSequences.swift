/// Sequences of different lengths as one right-padded batch, which the model runs without its padding
/// (`GPTModel.hidden(…, lengths:, withoutPadding: true)`), and the tokens a next-token loss scores in it: for each,
/// the index among the real tokens (sequence after sequence, padding left out) of the state that predicts it.
/// Supervised fine-tuning, PPO and GPT-1's auxiliary language-model loss all build their batches with it.
package struct PackedSequences {
    /// The sequences right-padded to `length`, row after row.
    package let ids: [Int32]
    /// The rows' length: the longest sequence's.
    package let length: Int
    /// Each sequence's length.
    package let lengths: [Int]
    /// For each scored token, the index among the real tokens of the state that predicts it (the token before it).
    package let positions: [Int]
    /// The scored tokens, in the order of `positions`.
    package let targets: [Int32]
    /// Each sequence's range in `positions` and `targets`.
    package let spans: [Range<Int>]

    /// `sequences` right-padded with `pad`; in sequence r the token after position t is scored where
    /// `scored(r, t)` (t from 0 to the sequence's length − 2, in order).
    package init(_ sequences: [[Int32]], pad: Int32 = 0, scoring scored: (_ sequence: Int, _ position: Int) -> Bool) {
        let length = sequences.map(\.count).max() ?? 0
        var ids = [Int32](repeating: pad, count: sequences.count * length)
        for (r, sequence) in sequences.enumerated() {
            ids.replaceSubrange((r * length)..<(r * length + sequence.count), with: sequence)
        }
        self.init(paddedIDs: ids, length: length, lengths: sequences.map(\.count), scoring: scored)
    }

    /// Sequences already right-padded to `length` in `paddedIDs`, of `lengths` real tokens each; scored as in
    /// `init(_:pad:scoring:)`.
    package init(paddedIDs: [Int32], length: Int, lengths: [Int], scoring scored: (_ sequence: Int, _ position: Int) -> Bool) {
        precondition(paddedIDs.count == lengths.count * length && lengths.allSatisfy { $0 <= length }, "rows of \(length) ids")
        var positions: [Int] = [], targets: [Int32] = [], spans: [Range<Int>] = []
        var token = 0  // index of the sequence's first token among the real tokens
        for (r, count) in lengths.enumerated() {
            let first = positions.count
            for t in 0..<max(count - 1, 0) where scored(r, t) {
                positions.append(token + t)
                targets.append(paddedIDs[r * length + t + 1])
            }
            spans.append(first..<positions.count)
            token += count
        }
        ids = paddedIDs
        self.length = length
        self.lengths = lengths
        self.positions = positions
        self.targets = targets
        self.spans = spans
    }

    /// Number of real tokens (padding left out).
    package var tokenCount: Int { lengths.reduce(0, +) }
}
