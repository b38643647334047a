import Foundation
import GPTUtilities
import TensorCore

/// How a task's examples are scored.
package enum EvaluationOutputType: String, Sendable, CaseIterable {
    /// Each choice scored by the summed log-likelihood of its tokens after the prompt: `acc`, `acc_norm` and,
    /// with an unconditional prompt, `acc_uncond`.
    case multipleChoice = "multiple_choice"
    /// One target continuation: whether greedy decoding gives it (`acc`) and `perplexity`.
    case loglikelihood
    /// Greedy generation until a stop sequence: `exact_match` and `f1` after normalisation.
    case generateUntil = "generate_until"
    /// Documents scored whole in overlapping windows: token, byte and word perplexity and bits per byte.
    case rollingPerplexity = "rolling_perplexity"
}

/// A task for `gpt eval`, read from a small JSON file: where the examples are, how a prompt is written and how the
/// answer is scored. Prompts follow lm-evaluation-harness: an optional description, then each demonstration as
/// `template + target_delimiter + answer + fewshot_delimiter`, then the query's `template`; a choice or target is
/// scored as the continuation `target_delimiter + choice`.
package struct EvaluationTask: Sendable {
    package var name: String
    package var outputType: EvaluationOutputType
    /// The examples: JSONL (one object a line); for `rolling_perplexity` also a plain text file (one document).
    package var data: URL
    /// Where demonstrations come from (default: `data`, never the query itself).
    package var fewShotData: URL?
    /// A field whose value groups the examples: a query's demonstrations come only from pool examples with the
    /// same value (for instance one subject of many, or one synthetic episode).
    package var fewShotGroup: String?
    /// Text put once at the very start of every prompt (GPT-3's task description), as written.
    package var description: String
    package var template: PromptTemplate
    package var targetDelimiter: String
    package var fewShotDelimiter: String
    package var choices: ChoiceSource?
    package var answer: PromptTemplate?
    /// A neutral prompt such as "Answer:": with it, multiple choice also reports `acc_uncond`, each choice's
    /// log-likelihood less its log-likelihood after this prompt (GPT-3's normalisation).
    package var unconditionalPrompt: String?
    package var stop: [String]
    package var maxNewTokens: Int
    /// For `rolling_perplexity`: tokens of each window that only give context, as a fraction of the model's
    /// context (0 scores disjoint windows, as lm-evaluation-harness does).
    package var rollingOverlap: Double

    /// Where the choices of a multiple-choice example come from.
    package enum ChoiceSource: Sendable {
        /// The same list for every example, each a template.
        case templates([PromptTemplate])
        /// A field holding a list; `template` renders each item as `{choice}` (with the example's other fields).
        case field(String, template: PromptTemplate)
    }

    /// The tasks shipped with the project.
    package static var builtInNames: [String] {
        let urls = (try? FileManager.default.contentsOfDirectory(at: builtInDirectory, includingPropertiesForKeys: nil)) ?? []
        return urls.filter { $0.pathExtension == "json" }.map { $0.deletingPathExtension().lastPathComponent }.sorted()
    }

    static var builtInDirectory: URL { Bundle.module.resourceURL!.appendingPathComponent("tasks") }

    /// The definition file of a built-in task.
    package static func builtInURL(_ name: String) -> URL { builtInDirectory.appendingPathComponent(name + ".json") }

    /// Where the data of built-in tasks is looked for, in order: the current directory, then the SwiftGPT checkout
    /// this library was built from (its `data/` folder holds the datasets the built-in tasks name).
    static var builtInDataBases: [URL] {
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return [URL(fileURLWithPath: FileManager.default.currentDirectoryPath), checkout]
    }

    /// A built-in task by name, or a task file. Data paths in a task file are relative to the file; those of a
    /// built-in task are relative to the current directory when its data is there, else to the SwiftGPT checkout
    /// the tool was built from, so that `gpt eval --task sst2` works from any directory.
    package static func load(_ nameOrPath: String) throws -> EvaluationTask {
        let builtIn = builtInURL(nameOrPath)
        if !nameOrPath.contains("/"), !nameOrPath.hasSuffix(".json"), FileManager.default.fileExists(atPath: builtIn.path) {
            var first: EvaluationTask?
            for base in builtInDataBases {
                let task = try load(file: builtIn, dataBase: base)
                if FileManager.default.fileExists(atPath: task.data.path) { return task }
                first = first ?? task
            }
            return first!  // the data is nowhere: reading it names the path of the current directory
        }
        let url = URL(fileURLWithPath: nameOrPath)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TaskDefinitionError(.unknownTask, "no task \"\(nameOrPath)\": not a file, nor a built-in task (\(builtInNames.joined(separator: ", ")))")
        }
        return try load(file: url, dataBase: url.deletingLastPathComponent())
    }

    /// Reads a task file; its data paths are resolved against `dataBase`. Every error names the file and the field.
    package static func load(file: URL, dataBase: URL) throws -> EvaluationTask {
        let contents: Data
        do { contents = try Data(contentsOf: file) } catch { throw FileError(url: file, reason: .unreadable, message: "cannot read (\(error.localizedDescription))") }
        guard let object = (try? JSONSerialization.jsonObject(with: contents)) as? [String: Any] else {
            throw FileError(url: file, reason: .malformed(line: nil), message: "not a JSON object")
        }
        do {
            return try EvaluationTask(object: object, defaultName: file.deletingPathExtension().lastPathComponent, dataBase: dataBase)
        } catch let error as TaskDefinitionError {
            throw FileError(url: file, reason: .malformed(line: nil), message: error.message)
        }
    }

    static let knownKeys: Set<String> = ["name", "output_type", "data", "fewshot_data", "fewshot_group", "description", "template",
                                         "target_delimiter", "fewshot_delimiter", "choices", "choice_template", "answer",
                                         "unconditional_prompt", "stop", "max_new_tokens", "rolling_overlap"]

    /// A task from its JSON object (the keys of a task file).
    package init(object: [String: Any], defaultName: String, dataBase: URL) throws {
        if let unknown = object.keys.filter({ !Self.knownKeys.contains($0) }).sorted().first {
            throw TaskDefinitionError(.invalidField(unknown), "unknown field \"\(unknown)\" (known: \(Self.knownKeys.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String) throws -> String? {
            guard let value = object[key] else { return nil }
            guard let string = value as? String else { throw TaskDefinitionError(.invalidField(key), "field \"\(key)\" must be a string") }
            return string
        }
        func path(_ key: String) throws -> URL? {
            guard let value = try string(key) else { return nil }
            return value.hasPrefix("/") ? URL(fileURLWithPath: value) : dataBase.appendingPathComponent(value)
        }
        name = try string("name") ?? defaultName
        guard let typeName = try string("output_type") else {
            throw TaskDefinitionError(.invalidField("output_type"), "field \"output_type\" is missing (one of \(EvaluationOutputType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let type = EvaluationOutputType(rawValue: typeName) else {
            throw TaskDefinitionError(.invalidField("output_type"), "field \"output_type\": unknown type \"\(typeName)\" (one of \(EvaluationOutputType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        outputType = type
        guard let data = try path("data") else { throw TaskDefinitionError(.invalidField("data"), "field \"data\" is missing (the examples, a JSONL file)") }
        self.data = data
        fewShotData = try path("fewshot_data")
        fewShotGroup = try string("fewshot_group")
        description = try string("description") ?? ""
        func template(_ key: String) throws -> PromptTemplate? {
            guard let source = try string(key) else { return nil }
            do { return try PromptTemplate(source) } catch let error as TaskDefinitionError {
                throw TaskDefinitionError(.invalidField(key), "field \"\(key)\": \(error.message)")
            }
        }
        if let template = try template("template") {
            self.template = template
        } else if type == .rollingPerplexity {
            self.template = try PromptTemplate("{text}")
        } else {
            throw TaskDefinitionError(.invalidField("template"), "field \"template\" is missing (the prompt, with {field} placeholders)")
        }
        targetDelimiter = try string("target_delimiter") ?? " "
        fewShotDelimiter = try string("fewshot_delimiter") ?? "\n\n"
        answer = try template("answer")
        unconditionalPrompt = try string("unconditional_prompt")
        switch object["choices"] {
        case nil:
            choices = nil
        case let field as String:
            choices = .field(field, template: try template("choice_template") ?? PromptTemplate("{choice}"))
        case let list as [Any]:
            guard object["choice_template"] == nil else { throw TaskDefinitionError(.invalidField("choice_template"), "field \"choice_template\" goes with \"choices\" naming a field, not a list") }
            choices = .templates(try list.enumerated().map { index, item in
                guard let source = item as? String else { throw TaskDefinitionError(.invalidField("choices"), "field \"choices\": item \(index + 1) is not a string") }
                do { return try PromptTemplate(source) } catch let error as TaskDefinitionError {
                    throw TaskDefinitionError(.invalidField("choices"), "field \"choices\": \(error.message)")
                }
            })
        default:
            throw TaskDefinitionError(.invalidField("choices"), "field \"choices\" must be a list of strings or the name of a field that holds the list")
        }
        switch object["stop"] {
        case nil: stop = [fewShotDelimiter]
        case let list as [String]: stop = list
        default: throw TaskDefinitionError(.invalidField("stop"), "field \"stop\" must be a list of strings")
        }
        switch object["max_new_tokens"] {
        case nil: maxNewTokens = 32
        case let number as Int where number > 0: maxNewTokens = number
        default: throw TaskDefinitionError(.invalidField("max_new_tokens"), "field \"max_new_tokens\" must be a positive integer")
        }
        switch object["rolling_overlap"] {
        case nil: rollingOverlap = 0.5
        case let number as Double where number >= 0 && number < 1: rollingOverlap = number
        default: throw TaskDefinitionError(.invalidField("rolling_overlap"), "field \"rolling_overlap\" must be a number in [0, 1)")
        }
        switch type {
        case .multipleChoice:
            guard choices != nil else { throw TaskDefinitionError(.invalidField("choices"), "field \"choices\" is missing (multiple_choice needs the choices)") }
            guard answer != nil else { throw TaskDefinitionError(.invalidField("answer"), "field \"answer\" is missing (the correct choice: its index or its text)") }
        case .loglikelihood, .generateUntil:
            guard answer != nil else { throw TaskDefinitionError(.invalidField("answer"), "field \"answer\" is missing (the target text, a template)") }
        case .rollingPerplexity:
            break
        }
    }
}
