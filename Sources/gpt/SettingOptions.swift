import ArgumentParser
import Foundation
import GPTHub
import SwiftGPT

/// The training settings a command line gives, read from the arguments ArgumentParser leaves to the command
/// (`@Argument(parsing: .allUnrecognized)`): `--option value`, `--option=value`, and a Boolean setting's option
/// alone to turn it on. Each setting is declared once, in the library's tables (`TrainingConfiguration.settings`
/// and each objective's `settings`); a command picks the ones it takes and the values they start from, and its
/// `--help` lists them from the same tables.
struct SettingOptions {
    private var given: [(option: String, value: String?)] = []
    private var applied = Set<String>()

    /// The options in `arguments`; `flags` are the options that take no value.
    init(_ arguments: [String], flags: Set<String>) throws {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--"), argument.count > 2 else { throw ValidationError("unexpected argument '\(argument)'") }
            let body = argument.dropFirst(2)
            if let equals = body.firstIndex(of: "=") {
                given.append((String(body[..<equals]), String(body[body.index(after: equals)...])))
            } else if flags.contains(String(body)) {
                given.append((String(body), nil))
            } else {
                guard index < arguments.count else { throw ValidationError("missing value for '\(argument)'") }
                given.append((String(body), arguments[index]))
                index += 1
            }
        }
    }

    /// Whether the command line gave `option`.
    func contains(_ option: String) -> Bool { given.contains { $0.option == option } }

    /// The options the command line gave, in its order.
    var options: [String] { given.map(\.option) }

    /// Sets in `root` each of `settings` that the command line gave (the last value where it gave one twice).
    mutating func apply<Root>(_ settings: [Setting<Root>], to root: inout Root) throws {
        for setting in settings {
            guard let option = setting.option else { continue }
            for (name, value) in given where name == option {
                applied.insert(option)
                let text = value ?? "true"
                guard setting.set(text, in: &root) else {
                    throw ValidationError("the value '\(text)' of --\(option) is not \(setting.expectation)")
                }
            }
        }
    }

    /// Fails on an option that no table the command applied has.
    func checkAllApplied() throws {
        if let unknown = given.first(where: { !applied.contains($0.option) }) {
            throw ValidationError("unknown option '--\(unknown.option)' (see --help)")
        }
    }

    /// The required ones of `settings` that the command line did not give.
    func missing<Root>(_ settings: [Setting<Root>]) -> [String] {
        Self.required(settings).filter { !contains($0) }
    }

    /// The options of `settings` that a new run must be given.
    static func required<Root>(_ settings: [Setting<Root>]) -> [String] {
        settings.filter(\.isRequired).compactMap(\.option)
    }

    /// The options of `settings` that take no value.
    static func flags<Root>(_ settings: [Setting<Root>]) -> Set<String> {
        Set(settings.filter(\.isFlag).compactMap(\.option))
    }

    /// `settings` as `--help` lists them, each with the value it starts from in `root`, laid out as ArgumentParser
    /// lays out options (wrapped here to 78 columns, which its own wrapping then leaves as they are).
    static func help<Root>(_ settings: [Setting<Root>], startingFrom root: Root) -> String {
        let helpColumn = 26, width = 78
        return settings.compactMap { setting -> String? in
            guard let option = setting.option else { return nil }
            var text = setting.help
            if setting.isRequired {
                text += " (required)"
            } else if let value = setting.describe(root), !(setting.isFlag && value == "false"), !value.isEmpty {
                text += " (default: \(value))"
            }
            let label = "  --\(option)" + (setting.isFlag ? "" : " <\(setting.valueName ?? option)>")
            var lines = label.count + 2 <= helpColumn
                ? [label.padding(toLength: helpColumn, withPad: " ", startingAt: 0)]
                : [label, String(repeating: " ", count: helpColumn)]
            for word in text.split(separator: " ") {
                if lines[lines.count - 1].count + word.count + 1 > width, lines[lines.count - 1].count > helpColumn {
                    lines.append(String(repeating: " ", count: helpColumn))
                }
                if lines[lines.count - 1].count > helpColumn { lines[lines.count - 1] += " " }
                lines[lines.count - 1] += word
            }
            return lines.joined(separator: "\n")
        }.joined(separator: "\n")
    }
}

/// An absolute path, so that a resumed run finds its files from any directory.
func absolutePath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

/// A model's absolute path, as `absolutePath`; a Hub name (`ORG/NAME`) becomes the folder of its cached snapshot, at
/// the commit it names now, so that a resumed run starts from the same weights.
func absoluteModelPath(_ path: String) throws -> String {
    if !FileManager.default.fileExists(atPath: path), HubCache.Reference(path) != nil { return try ModelLoading.resolve(path).path }
    return absolutePath(path)
}
