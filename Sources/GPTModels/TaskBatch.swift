import Foundation
import TensorCore
import Tokenizers

/// A class index (classification, entailment, paraphrase, the right choice) or a real value (regression).
public enum TaskLabel: Equatable, Sendable {
    case index(Int)
    case value(Float)
}

/// A task input as token sequences (one per row the model runs), with its label.
public struct EncodedExample: Equatable, Sendable {
    public var rows: [[Int32]]
    public var label: TaskLabel?
    /// Whether a text was cut to fit the context.
    public var truncated: Bool

    public init(rows: [[Int32]], label: TaskLabel?, truncated: Bool) {
        self.rows = rows
        self.label = label
        self.truncated = truncated
    }
}

/// Examples laid out as right-padded rows of equal length: the input of one forward pass.
public struct TaskBatch {
    public let ids: [Int32]
    public let rowCount: Int
    public let length: Int
    /// Each row's real length; the positions after it hold the pad id.
    public let lengths: [Int]
    /// The rows of each example.
    public let exampleRows: [Range<Int>]

    public init(_ examples: some Collection<EncodedExample>, pad: Int32) {
        let rows = examples.flatMap(\.rows)
        length = rows.map(\.count).max() ?? 1
        rowCount = rows.count
        lengths = rows.map(\.count)
        var ids = [Int32](repeating: pad, count: rows.count * length)
        for (r, row) in rows.enumerated() { ids.replaceSubrange((r * length)..<(r * length + row.count), with: row) }
        self.ids = ids
        var ranges: [Range<Int>] = [], next = 0
        for example in examples {
            ranges.append(next..<(next + example.rows.count))
            next += example.rows.count
        }
        exampleRows = ranges
    }

    /// Index, in the flattened `[rows · length]` positions, of each row's last real token (its extract token).
    public var lastPositions: [Int] { lengths.enumerated().map { $0.offset * length + $0.element - 1 } }

    /// Number of positions the forward pass runs over, padding included.
    public var positionCount: Int { ids.count }
}

/// The task losses and outputs of a model with a task head and an input format.
extension GPTModel {
    /// What a forward pass over a `TaskBatch` gives.
    public struct TaskForward {
        /// Classification and regression: `[examples, labels]`; multiple choice: `[rows, 1]`, one score per choice.
        public let outputs: Variable
        /// The final hidden state, `[rows, length, width]`.
        public let final: Variable
    }

    /// Runs the batch and the task head: the pooled state of each row's last token (for similarity, the two
    /// orders' states added). With `random`, dropout is on (the body's as configured, `headDropout` on the pooled
    /// states): training.
    public func taskForward(_ batch: TaskBatch, tape: Tape, headDropout: Float = 0, random: inout SeededRandom?) -> TaskForward {
        let hidden: Hidden
        if random != nil {
            hidden = self.hidden(ids: batch.ids, batch: batch.rowCount, tape: tape, random: &random!, lengths: batch.lengths)
        } else {
            hidden = self.hidden(ids: batch.ids, batch: batch.rowCount, tape: tape, lengths: batch.lengths)
        }
        let width = config.embeddingWidth
        let flat = tape.reshape(hidden.final, [batch.positionCount, width])
        let last = batch.lastPositions
        var pooled: Variable
        if inputFormat?.task == .similarity {
            pooled = tape.add(tape.gatherRows(flat, batch.exampleRows.map { last[$0.lowerBound] }),
                              tape.gatherRows(flat, batch.exampleRows.map { last[$0.lowerBound + 1] }))
        } else {
            pooled = tape.gatherRows(flat, last)
        }
        if random != nil && headDropout > 0 { pooled = tape.dropout(pooled, probability: headDropout, random: &random!) }
        return TaskForward(outputs: head(pooled, tape: tape), final: hidden.final)
    }

    /// The task loss of `outputs` for the batch's labels: cross-entropy over labels (classification), mean squared
    /// error (regression) or cross-entropy over each example's choices (multiple choice).
    public func taskLoss(_ outputs: Variable, batch: TaskBatch, labels: [TaskLabel], tape: Tape) -> Variable {
        switch taskHead {
        case .sequenceClassification(let head)? where head.problem == .regression:
            return tape.meanSquaredError(outputs, targets: labels.map { if case .value(let v) = $0 { return v } else if case .index(let i) = $0 { return Float(i) }; return 0 })
        case .sequenceClassification?:
            return tape.crossEntropy(outputs, targets: labels.map { if case .index(let i) = $0 { return Int32(i) }; return -1 })
        case .multipleChoice?:
            return tape.groupedCrossEntropy(outputs, groups: batch.exampleRows,
                                            targets: labels.map { if case .index(let i) = $0 { return i }; return 0 })
        case nil:
            preconditionFailure("the model has no task head")
        }
    }

    /// Mean next-token cross-entropy over the real tokens of every row (GPT-1's auxiliary L_LM): each position
    /// before a row's last token predicts the token after it; padding never enters.
    public func taskLanguageModelLoss(_ final: Variable, batch: TaskBatch, tape: Tape) -> Variable {
        var positions: [Int] = [], targets: [Int32] = []
        for (r, length) in batch.lengths.enumerated() where length > 1 {
            for t in 0..<(length - 1) {
                positions.append(r * batch.length + t)
                targets.append(batch.ids[r * batch.length + t + 1])
            }
        }
        let flat = tape.reshape(final, [batch.positionCount, config.embeddingWidth])
        return tape.crossEntropy(logits(tape.gatherRows(flat, positions), tape: tape), targets: targets)
    }
}
