import Foundation
import GPTUtilities
import TensorCore

/// The task losses and outputs of a model with a task head and an input format.
extension GPTModel {
    /// What a forward pass over a `TaskBatch` gives.
    package struct TaskForward {
        /// Classification and regression: `[examples, labels]`; multiple choice: `[rows, 1]`, one score per choice.
        package let outputs: Variable
        /// The final hidden state of the real tokens, `[tokens, width]` (row after row; padding is not computed).
        package let final: Variable
    }

    /// Runs the batch and the task head: the pooled state of each row's last token (for similarity, the two
    /// orders' states added). With `random`, dropout is on (the body's as configured, `headDropout` on the pooled
    /// states): training.
    package func taskForward(_ batch: TaskBatch, tape: Tape, headDropout: Float = 0, random: inout SeededRandom?) -> TaskForward {
        let hidden: Hidden
        if random != nil {
            hidden = self.hidden(ids: batch.ids, batch: batch.rowCount, tape: tape, random: &random!, lengths: batch.lengths,
                                 withoutPadding: true)
        } else {
            hidden = self.hidden(ids: batch.ids, batch: batch.rowCount, tape: tape, lengths: batch.lengths, withoutPadding: true)
        }
        let last = batch.lastTokens
        var pooled: Variable
        if inputFormat?.task == .similarity {
            pooled = tape.add(tape.gatherRows(hidden.final, batch.exampleRows.map { last[$0.lowerBound] }),
                              tape.gatherRows(hidden.final, batch.exampleRows.map { last[$0.lowerBound + 1] }))
        } else {
            pooled = tape.gatherRows(hidden.final, last)
        }
        if random != nil && headDropout > 0 { pooled = tape.dropout(pooled, probability: headDropout, random: &random!) }
        return TaskForward(outputs: head(pooled, tape: tape), final: hidden.final)
    }

    /// The task loss of `outputs` for the batch's labels: cross-entropy over labels (classification), mean squared
    /// error (regression) or cross-entropy over each example's choices (multiple choice).
    package func taskLoss(_ outputs: Variable, batch: TaskBatch, labels: [TaskLabel], tape: Tape) -> Variable {
        switch taskHead {
        case .sequenceClassification(let head)? where head.problem == .regression:
            return tape.meanSquaredError(outputs, targets: labels.map(\.target))
        case .sequenceClassification?:
            return tape.crossEntropy(outputs, targets: labels.map { Int32($0.classIndex ?? -1) })
        case .multipleChoice?:
            return tape.groupedCrossEntropy(outputs, groups: batch.exampleRows, targets: labels.map { $0.classIndex ?? 0 })
        case .value?, nil:
            preconditionFailure("the model has no classification or multiple-choice head")
        }
    }

    /// Mean next-token cross-entropy over the real tokens of every row (GPT-1's auxiliary L_LM): each position
    /// before a row's last token predicts the token after it; padding never enters. `final` holds the real tokens'
    /// states, as `taskForward` gives them.
    package func taskLanguageModelLoss(_ final: Variable, batch: TaskBatch, tape: Tape) -> Variable {
        let rows = PackedSequences(paddedIDs: batch.ids, length: batch.length, lengths: batch.lengths) { _, _ in true }
        return tape.crossEntropy(logits(tape.gatherRows(final, rows.positions), tape: tape), targets: rows.targets)
    }
}
