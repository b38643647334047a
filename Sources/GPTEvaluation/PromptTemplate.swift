import Foundation
import GPTUtilities

/// A text with `{field}` placeholders filled from a JSON object, as task definitions write prompts, choices and
/// answers. A placeholder may pass its value through filters: `{premise|trim|drop_last}`. `{{` and `}}` stand for
/// literal braces.
///
/// Filters: `trim` (surrounding whitespace), `drop_last` (the last character), `lowercase_first` (the first
/// character in lower case), `map:a=x,b=y` (replace a value by the one given for it; a value not listed is an error).
package struct PromptTemplate: Sendable, Equatable {
    enum Filter: Sendable, Equatable {
        case trim, dropLast, lowercaseFirst
        case map([String: String])
    }

    enum Segment: Sendable, Equatable {
        case text(String)
        case field(String, [Filter])
    }

    let segments: [Segment]
    /// The template as written.
    package let source: String

    /// Parses `source`; a malformed placeholder or an unknown filter is an error naming it.
    package init(_ source: String) throws {
        self.source = source
        var segments: [Segment] = []
        var text = ""
        var index = source.startIndex
        while index < source.endIndex {
            let character = source[index]
            let next = source.index(after: index)
            if character == "{" || character == "}", next < source.endIndex, source[next] == character {
                text.append(character)
                index = source.index(after: next)
                continue
            }
            if character == "}" { throw TaskDefinitionError(.invalidTemplate, "template \(Self.quoted(source)): a \"}\" without its \"{\" (write \"}}\" for a brace)") }
            guard character == "{" else {
                text.append(character)
                index = next
                continue
            }
            guard let close = source[next...].firstIndex(of: "}") else {
                throw TaskDefinitionError(.invalidTemplate, "template \(Self.quoted(source)): a \"{\" without its \"}\" (write \"{{\" for a brace)")
            }
            let parts = source[next..<close].split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            let name = parts[0].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw TaskDefinitionError(.invalidTemplate, "template \(Self.quoted(source)): an empty placeholder") }
            if !text.isEmpty { segments.append(.text(text)); text = "" }
            segments.append(.field(name, try parts.dropFirst().map { try Self.filter($0, in: source) }))
            index = source.index(after: close)
        }
        if !text.isEmpty { segments.append(.text(text)) }
        self.segments = segments
    }

    /// The fields the template reads.
    package var fields: [String] {
        segments.compactMap { if case .field(let name, _) = $0 { name } else { nil } }
    }

    /// When the template is exactly one placeholder without filters, the field it names.
    package var soleField: String? {
        if segments.count == 1, case .field(let name, let filters) = segments[0], filters.isEmpty { name } else { nil }
    }

    /// The text with each placeholder replaced by the object's field (strings as they are, numbers and booleans
    /// written out). A missing field, a value of another kind or a value a filter cannot take is an error naming it.
    package func render(_ object: [String: Any]) throws -> String {
        var result = ""
        for segment in segments {
            switch segment {
            case .text(let text):
                result += text
            case .field(let name, let filters):
                guard let raw = object[name] else { throw TaskDefinitionError(.invalidExample, "no field \"\(name)\" (template \(Self.quoted(source)))") }
                var value = try Self.text(of: raw, field: name)
                for filter in filters { value = try Self.apply(filter, to: value, field: name) }
                result += value
            }
        }
        return result
    }

    /// A JSON value as prompt text.
    static func text(of value: Any, field: String) throws -> String {
        switch value {
        case let string as String: return string
        case let number as NSNumber:
            if String(cString: number.objCType) == "c" { return number.boolValue ? "true" : "false" }
            let double = number.doubleValue
            if double == double.rounded(), abs(double) < 1e15 { return String(Int64(double)) }
            return "\(double)"
        default: throw TaskDefinitionError(.invalidExample, "field \"\(field)\" is not a string or a number")
        }
    }

    private static func filter(_ written: String, in source: String) throws -> Filter {
        let spec = written.trimmingCharacters(in: .whitespaces)
        switch spec {
        case "trim": return .trim
        case "drop_last": return .dropLast
        case "lowercase_first": return .lowercaseFirst
        default:
            if spec.hasPrefix("map:") {
                var table: [String: String] = [:]
                for pair in spec.dropFirst(4).split(separator: ",") {
                    let sides = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    guard sides.count == 2 else { throw TaskDefinitionError(.invalidTemplate, "template \(quoted(source)): filter \"\(spec)\" takes key=value pairs") }
                    table[String(sides[0])] = String(sides[1])
                }
                return .map(table)
            }
            throw TaskDefinitionError(.invalidTemplate, "template \(quoted(source)): unknown filter \"\(spec)\" (known: trim, drop_last, lowercase_first, map:key=value,…)")
        }
    }

    private static func apply(_ filter: Filter, to value: String, field: String) throws -> String {
        switch filter {
        case .trim: return value.trimmingCharacters(in: .whitespacesAndNewlines)
        case .dropLast: return String(value.dropLast())
        case .lowercaseFirst:
            guard let first = value.first else { return value }
            return first.lowercased() + value.dropFirst()
        case .map(let table):
            guard let mapped = table[value] else {
                throw TaskDefinitionError(.invalidExample, "field \"\(field)\": value \(quoted(value)) is not in the map (\(table.keys.sorted().joined(separator: ", ")))")
            }
            return mapped
        }
    }

    static func quoted(_ text: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed])
        return data.map { String(decoding: $0.dropFirst().dropLast(), as: UTF8.self) } ?? "\"\(text)\""
    }
}

/// A task definition or task data that cannot be used, described so that a user can fix it.
package typealias TaskDefinitionError = DomainError<TaskDefinitionProblem>

/// The kinds of problem a task can have (`TaskDefinitionError`'s reasons).
package enum TaskDefinitionProblem: Equatable, Sendable {
    /// No task file or built-in task has the name.
    case unknownTask
    /// A field of the task definition is unknown, missing or malformed; the value is its name.
    case invalidField(String)
    /// A prompt template does not parse (braces, placeholders, filters).
    case invalidTemplate
    /// An example lacks what the task's templates and fields need, or its answer is not among its choices.
    case invalidExample
    /// A prompt or continuation does not fit the model (its context, its tokenizer).
    case doesNotFitModel
    /// The number of demonstrations asked for cannot be given.
    case invalidShots
}
