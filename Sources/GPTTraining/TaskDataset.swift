import Foundation
import GPTUtilities
import TensorCore
import GPTModels
import Tokenizers

/// One labelled (or unlabelled) input of a fine-tuning task, as read from a JSONL line.
package struct TaskExample: Equatable, Sendable {
    /// The texts in the order `InputFormat.sequences` takes them: classification `[text]`, entailment
    /// `[premise, hypothesis]`, similarity `[text_a, text_b]`, multiple choice `[context, choice, …]`.
    package var segments: [String]
    package var label: TaskLabel?
    /// The 1-based line of the file it came from.
    package var line: Int

    package init(segments: [String], label: TaskLabel?, line: Int) {
        self.segments = segments
        self.label = label
        self.line = line
    }
}

/// Reads and validates task files: JSONL, one object a line, with the fields of `../shared/data/README.md`:
/// classification `{text, label}`, entailment `{premise, hypothesis, label}`, similarity `{text_a, text_b, label}`
/// (an integer label is a class, a number written with a fraction or exponent makes the file a regression task),
/// multiple choice `{context, choices, label}`. Every line is checked before anything is used; the first bad one
/// is an error naming the file, the line and the field.
package enum TaskDataset {
    /// The text fields of each task, in segment order.
    static func textFields(_ task: InputFormat.Task) -> [String] {
        switch task {
        case .classification: return ["text"]
        case .entailment: return ["premise", "hypothesis"]
        case .similarity: return ["text_a", "text_b"]
        case .multipleChoice: return ["context"]
        }
    }

    /// The examples of `url`. With `labelsRequired`, a line without a label is an error.
    package static func load(_ url: URL, task: InputFormat.Task, labelsRequired: Bool) throws -> [TaskExample] {
        try JSONLines.map(url) { line, object, fail in
            var segments: [String] = []
            for field in textFields(task) {
                guard let value = object[field] else { throw fail("missing field '\(field)'") }
                guard let text = value as? String else { throw fail("field '\(field)' must be a string") }
                segments.append(text)
            }
            var choiceCount: Int?
            if task == .multipleChoice {
                guard let value = object["choices"] else { throw fail("missing field 'choices'") }
                guard let choices = value as? [Any], !choices.isEmpty, choices.allSatisfy({ $0 is String }) else {
                    throw fail("field 'choices' must be a non-empty list of strings")
                }
                segments += choices.map { $0 as! String }
                choiceCount = choices.count
            }
            var label: TaskLabel?
            if let value = object["label"], !(value is NSNull) {
                label = try readLabel(value, task: task, choiceCount: choiceCount, fail: fail)
            } else if labelsRequired {
                throw fail("missing field 'label'")
            }
            return TaskExample(segments: segments, label: label, line: line)
        }
    }

    private static func readLabel(_ value: Any, task: InputFormat.Task, choiceCount: Int?,
                                  fail: (String) -> FileError) throws -> TaskLabel {
        guard let number = value as? NSNumber, String(cString: number.objCType) != "c", number.doubleValue.isFinite else {
            throw fail("field 'label' must be a number")
        }
        let isInteger = !isFloatingPoint(number) && number.doubleValue == number.doubleValue.rounded()
        if task == .similarity && !isInteger { return .value(number.floatValue) }
        guard isInteger, number.intValue >= 0 else {
            throw fail("field 'label' must be a class index (an integer ≥ 0), got \(number)")
        }
        guard number.intValue < FineTuningSettings.maxClassCount else {
            throw fail("field 'label' is \(number), beyond the \(FineTuningSettings.maxClassCount) classes a task may have")
        }
        if let choiceCount, number.intValue >= choiceCount {
            throw fail("field 'label' is \(number.intValue), but there are only \(choiceCount) choices")
        }
        return .index(number.intValue)
    }

    /// Whether JSON wrote the number with a fraction or an exponent (5.0 is a real value, 5 a class).
    static func isFloatingPoint(_ number: NSNumber) -> Bool {
        let type = String(cString: number.objCType)
        return type == "d" || type == "f"
    }
}

extension InputFormat {
    /// Tokenizes every example's texts (read from `source`, which errors name with the line) and lays them out as
    /// sequences of at most `contextLength` tokens.
    package func encode(_ examples: [TaskExample], from source: URL, tokenizer: any Tokenizer, contextLength: Int) throws -> [EncodedExample] {
        guard contextLength >= minimumContext else {
            throw ConfigurationError(.unsuitableModel, "a context of \(contextLength) tokens cannot hold the special tokens of a \(task.rawValue) input (\(minimumContext))")
        }
        return try examples.map { example in
            let segments: [[Int32]]
            do { segments = try example.segments.map { try tokenizer.encode($0) } } catch {
                throw FileError(url: source, reason: .malformed(line: example.line), message: "line \(example.line): \(error)")
            }
            let sequences = sequences(segments, contextLength: contextLength)
            return EncodedExample(rows: sequences.rows, label: example.label, lostFraction: sequences.lostFraction)
        }
    }
}
