import Foundation
import GPTModels
import GPTUtilities
import TensorCore

/// One example of a task, rendered: the query's prompt, and what is scored.
package struct EvaluationExample: Sendable {
    /// Line in the data file (1-based); 0 for a plain text document.
    package var line: Int
    /// The template filled from the example.
    package var query: String
    /// Multiple choice: the choices' texts, and the index of the correct one.
    package var choices: [String]
    package var gold: Int?
    /// The target (loglikelihood, generate_until) or the document (rolling_perplexity).
    package var target: String
    /// The value of the task's few-shot group field: demonstrations come from examples of the same group.
    package var group: String? = nil

    /// The text of this example as a demonstration, before the few-shot delimiter.
    func demonstration(targetDelimiter: String) -> String {
        query + targetDelimiter + (gold.map { choices[$0] } ?? target)
    }
}

extension EvaluationTask {
    /// The task's examples from `url` (its data file unless given), rendered; a bad example is an error naming the
    /// file, the line and the field.
    package func examples(from url: URL? = nil) throws -> [EvaluationExample] {
        let url = url ?? data
        if outputType == .rollingPerplexity, url.pathExtension != "jsonl" {
            let contents: Data
            do { contents = try Data(contentsOf: url) } catch { throw FileError(url: url, reason: .unreadable, message: "cannot read (\(error.localizedDescription))") }
            guard let text = String(validating: contents, as: UTF8.self) else { throw FileError(url: url, reason: .malformed(line: nil), message: "not valid UTF-8") }
            guard !text.isEmpty else { throw FileError(url: url, reason: .malformed(line: nil), message: "is empty") }
            return [EvaluationExample(line: 0, query: "", choices: [], gold: nil, target: text)]
        }
        return try JSONLines.map(url) { line, object, fail in
            do { return try example(line: line, object) } catch let error as TaskDefinitionError { throw fail(error.message) }
        }
    }

    /// One example from its JSON object (`line`: where it came from).
    package func example(line: Int, _ object: [String: Any]) throws -> EvaluationExample {
        let query = try template.render(object)
        var example = try content(line: line, query: query, object)
        if let field = fewShotGroup {
            guard let value = object[field] else { throw TaskDefinitionError(.invalidExample, "no field \"\(field)\" (the few-shot group)") }
            example.group = try PromptTemplate.text(of: value, field: field)
        }
        return example
    }

    /// The example's choices and answer, or its target.
    private func content(line: Int, query: String, _ object: [String: Any]) throws -> EvaluationExample {
        switch outputType {
        case .rollingPerplexity:
            return EvaluationExample(line: line, query: "", choices: [], gold: nil, target: query)
        case .loglikelihood, .generateUntil:
            return EvaluationExample(line: line, query: query, choices: [], gold: nil, target: try answer!.render(object))
        case .multipleChoice:
            let choices = try choiceTexts(object)
            guard !choices.isEmpty else { throw TaskDefinitionError(.invalidExample, "no choices") }
            return EvaluationExample(line: line, query: query, choices: choices, gold: try goldIndex(object, choices: choices), target: "")
        }
    }

    private func choiceTexts(_ object: [String: Any]) throws -> [String] {
        switch choices! {
        case .templates(let templates):
            return try templates.map { try $0.render(object) }
        case .field(let field, let template):
            guard let list = object[field] as? [Any] else { throw TaskDefinitionError(.invalidExample, "field \"\(field)\" is missing or not a list (the choices)") }
            return try list.map { item in
                var fields = object
                fields["choice"] = try PromptTemplate.text(of: item, field: field)
                return try template.render(fields)
            }
        }
    }

    /// The answer as an index: a field holding an integer is the index; any other answer must be one of the choices.
    private func goldIndex(_ object: [String: Any], choices: [String]) throws -> Int {
        let answer = answer!
        if let field = answer.soleField, let number = object[field] as? NSNumber, String(cString: number.objCType) != "c",
           number.doubleValue == number.doubleValue.rounded() {
            let index = number.intValue
            guard choices.indices.contains(index) else {
                throw TaskDefinitionError(.invalidExample, "field \"\(field)\": answer index \(index) is outside the \(choices.count) choices")
            }
            return index
        }
        let text = try answer.render(object)
        guard let index = choices.firstIndex(of: text) else {
            throw TaskDefinitionError(.invalidExample, "answer \(PromptTemplate.quoted(text)) is not one of the choices \(choices.map(PromptTemplate.quoted).joined(separator: ", "))")
        }
        return index
    }
}
