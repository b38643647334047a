import Foundation
import TensorCore

/// A head that reads one position of the final hidden state, beside the language-model head a model always has.
package enum TaskHead: Equatable, Sendable {
    /// A linear map from the hidden state to one value per label, without bias (`score.weight`, `[labels, width]`,
    /// stored as torch's Linear): Hugging Face's `GPT2ForSequenceClassification` / `OpenAIGPTForSequenceClassification`.
    case sequenceClassification(SequenceClassification)
    /// A linear map with bias from the hidden state to one score per choice (`multiple_choice_head.summary.*`):
    /// Hugging Face's `GPT2DoubleHeadsModel` / `OpenAIGPTDoubleHeadsModel`.
    case multipleChoice
    /// A linear map with bias from the hidden state at every position to one value (`v_head.summary.*`), as TRL's
    /// `AutoModelForCausalLMWithValueHead` stores it: PPO's critic sharing the policy's body. The checkpoint stays a
    /// causal language model (transformers loads it as `GPT2LMHeadModel`, ignoring the value head).
    case value

    /// The head's parameters for a model `width` wide, in arena order.
    package func parameterShapes(width: Int) -> [(name: String, shape: [Int])] {
        switch self {
        case .sequenceClassification(let head): return [(TaskHead.scoreWeight, [head.labels.count, width])]
        case .multipleChoice: return [(TaskHead.choiceWeight, [1, width]), (TaskHead.choiceBias, [1])]
        case .value: return [(TaskHead.valueWeight, [1, width]), (TaskHead.valueBias, [1])]
        }
    }

    /// Whether `name` is a task-head parameter.
    package static func isHeadParameter(_ name: String) -> Bool {
        name == scoreWeight || name.hasPrefix("multiple_choice_head.") || name.hasPrefix("v_head.")
    }

    package static let scoreWeight = "score.weight"
    package static let choiceWeight = "multiple_choice_head.summary.weight"
    package static let choiceBias = "multiple_choice_head.summary.bias"
    package static let valueWeight = "v_head.summary.weight"
    package static let valueBias = "v_head.summary.bias"
}

/// What a sequence-classification head predicts and how a checkpoint describes it.
package struct SequenceClassification: Equatable, Sendable {
    /// Hugging Face's `problem_type`.
    package enum Problem: String, Sendable {
        case singleLabel = "single_label_classification"
        case regression
    }

    /// Label names in id order (`id2label`); one entry for regression.
    package var labels: [String]
    package var problem: Problem
    /// The id that pads rows on the right. The head reads each row's rightmost id that is not this one, as
    /// transformers does, so it must differ from the id at the pooled position.
    package var padTokenID: Int32

    package init(labels: [String], problem: Problem, padTokenID: Int32) {
        self.labels = labels
        self.problem = problem
        self.padTokenID = padTokenID
    }

    /// The position each row is pooled from, as transformers computes it: the rightmost id that is not the pad id
    /// (0 for a row of padding only). `ids` holds rows of `length` ids.
    package func pooledPositions(_ ids: [Int32], length: Int) -> [Int] {
        stride(from: 0, to: ids.count, by: length).map { start in
            (0..<length).last { ids[start + $0] != padTokenID } ?? 0
        }
    }
}

extension GPTModel {
    /// The task head's outputs at the given rows of the final hidden state `final` (`[..., width]`), without
    /// dropout: `[rows.count, labels]` for sequence classification, `[rows.count, 1]` for multiple choice.
    package func taskOutputs(_ final: Variable, rows: [Int], tape: Tape) -> Variable {
        head(tape.gatherRows(tape.reshape(final, [final.value.count / config.embeddingWidth, config.embeddingWidth]), rows),
             tape: tape)
    }

    /// The task head applied to pooled states `[rows, width]`.
    package func head(_ pooled: Variable, tape: Tape) -> Variable {
        guard let taskHead else { preconditionFailure("the model has no task head") }
        if tape.precision == .bfloat16 && packedBase == nil { parameters.prepareBFloat16() }
        switch taskHead {
        case .sequenceClassification:
            return tape.linear(pooled, weight: parameter(TaskHead.scoreWeight), transposedWeight: true)
        case .multipleChoice:
            return tape.linear(pooled, weight: parameter(TaskHead.choiceWeight), bias: parameter(TaskHead.choiceBias),
                               transposedWeight: true)
        case .value:
            return tape.linear(pooled, weight: parameter(TaskHead.valueWeight), bias: parameter(TaskHead.valueBias),
                               transposedWeight: true)
        }
    }
}
