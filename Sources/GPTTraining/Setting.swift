import Foundation
import GPTModels
import TensorCore

/// One setting of a run, declared once: its key in configuration files and checkpoints, its command-line option,
/// what it means, and the property it sets. Configuration files, checkpoints, command lines and their help are all
/// read from the tables of these (`TrainingConfiguration.settings` and each objective's `settings`), so a new
/// setting is a property and one line in its table.
package struct Setting<Root>: Sendable {
    /// The key in configuration files and checkpoints.
    package let key: String
    /// The command-line option, without its dashes (`batch-size`); nil when only files hold the setting.
    package let option: String?
    /// What the setting means, as the command line's help says it.
    package let help: String
    /// Whether the setting is a Boolean whose option takes no value and turns it on.
    package let isFlag: Bool
    /// What the command line's help calls the option's value where it is not the option's name (`cosine|linear`).
    package let valueName: String?
    /// What a command-line value must be, for the error about one that is not.
    package let expectation: String
    /// Whether a file must hold the key (and a command line that starts a run give it).
    package let isRequired: Bool
    fileprivate let read: @Sendable (KeyedDecodingContainer<AnyCodingKey>, inout Root) throws -> Void
    fileprivate let write: @Sendable (Root, inout KeyedEncodingContainer<AnyCodingKey>) throws -> Void
    private let parse: @Sendable (String, inout Root) -> Bool
    /// The setting's value in `root` as a command line spells it; nil when it is unset.
    package let describe: @Sendable (Root) -> String?

    /// A setting of `Value` at `keyPath`, on the command line as `option` (default: the key in kebab case).
    /// `whenAbsent` is the value a file without the key gives (default: the value it starts from); `isRequired`
    /// makes a file without it an error.
    package init<Value: SettingValue>(_ key: String, _ keyPath: WritableKeyPath<Root, Value> & Sendable,
                                      option: String? = nil, whenAbsent: Value? = nil, isRequired: Bool = false,
                                      _ help: String) {
        let codingKey = AnyCodingKey(stringValue: key)
        self.init(key: key, option: option ?? Self.kebabCase(key), help: help, isFlag: Value.self == Bool.self,
                  valueName: Value.valueName, expectation: Value.expectation, isRequired: isRequired,
                  read: { container, root in
                      if let value = try container.decodeIfPresent(Value.self, forKey: codingKey) {
                          root[keyPath: keyPath] = value
                      } else if let whenAbsent {
                          root[keyPath: keyPath] = whenAbsent
                      }
                  },
                  write: { root, container in try container.encode(root[keyPath: keyPath], forKey: codingKey) },
                  parse: { text, root in
                      guard let value = Value(settingText: text) else { return false }
                      root[keyPath: keyPath] = value
                      return true
                  },
                  describe: { $0[keyPath: keyPath].settingText })
    }

    /// An optional setting of `Value` at `keyPath`: unset (nil) unless a file or the command line gives it.
    package init<Value: SettingValue>(_ key: String, _ keyPath: WritableKeyPath<Root, Value?> & Sendable,
                                      option: String? = nil, _ help: String) {
        let codingKey = AnyCodingKey(stringValue: key)
        self.init(key: key, option: option ?? Self.kebabCase(key), help: help, isFlag: false,
                  valueName: Value.valueName, expectation: Value.expectation, isRequired: false,
                  read: { container, root in
                      if let value = try container.decodeIfPresent(Value.self, forKey: codingKey) { root[keyPath: keyPath] = value }
                  },
                  write: { root, container in try container.encodeIfPresent(root[keyPath: keyPath], forKey: codingKey) },
                  parse: { text, root in
                      guard let value = Value(settingText: text) else { return false }
                      root[keyPath: keyPath] = value
                      return true
                  },
                  describe: { $0[keyPath: keyPath]?.settingText })
    }

    /// A setting that files hold but no command-line option gives (its command builds it another way, as a chat
    /// template read from a file).
    package init<Value: Codable & Sendable>(file key: String, _ keyPath: WritableKeyPath<Root, Value> & Sendable,
                                            isRequired: Bool = false, _ help: String) {
        let codingKey = AnyCodingKey(stringValue: key)
        self.init(key: key, option: nil, help: help, isFlag: false, valueName: nil, expectation: "", isRequired: isRequired,
                  read: { container, root in
                      if let value = try container.decodeIfPresent(Value.self, forKey: codingKey) { root[keyPath: keyPath] = value }
                  },
                  write: { root, container in try container.encode(root[keyPath: keyPath], forKey: codingKey) },
                  parse: { _, _ in false },
                  describe: { _ in nil })
    }

    private init(key: String, option: String?, help: String, isFlag: Bool, valueName: String?, expectation: String, isRequired: Bool,
                 read: @escaping @Sendable (KeyedDecodingContainer<AnyCodingKey>, inout Root) throws -> Void,
                 write: @escaping @Sendable (Root, inout KeyedEncodingContainer<AnyCodingKey>) throws -> Void,
                 parse: @escaping @Sendable (String, inout Root) -> Bool, describe: @escaping @Sendable (Root) -> String?) {
        (self.key, self.option, self.help, self.isFlag, self.valueName) = (key, option, help, isFlag, valueName)
        (self.expectation, self.isRequired) = (expectation, isRequired)
        (self.read, self.write, self.parse, self.describe) = (read, write, parse, describe)
    }

    /// The same setting under another option and help, for a command that names it its own way (`--model` for
    /// the model a run starts from).
    package func renamed(_ option: String, help: String? = nil, isRequired: Bool? = nil) -> Setting {
        Setting(key: key, option: option, help: help ?? self.help, isFlag: isFlag, valueName: valueName,
                expectation: expectation, isRequired: isRequired ?? self.isRequired,
                read: read, write: write, parse: parse, describe: describe)
    }

    /// Sets the value `text` spells on a command line; false when it spells none of this setting's values.
    package func set(_ text: String, in root: inout Root) -> Bool { parse(text, &root) }

    /// `batchSize` → `batch-size`, `targetKL` → `target-kl`.
    static func kebabCase(_ key: String) -> String {
        var result = ""
        var previousWasLower = false
        for character in key {
            if character.isUppercase, previousWasLower { result += "-" }
            result += character.lowercased()
            previousWasLower = character.isLowercase || character.isNumber
        }
        return result
    }
}

extension Array {
    /// `root` with the settings of this table that `decoder` holds; a key no setting has (nor `alsoKnown`) is an
    /// error, so that a misspelt setting is not silently ignored.
    package func decode<Root>(_ root: Root, from decoder: Decoder, alsoKnown: [String] = []) throws -> Root where Element == Setting<Root> {
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        let known = Set(map(\.key) + alsoKnown)
        if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [unknown], debugDescription:
                "unknown setting '\(unknown.stringValue)'; known: \(known.sorted().joined(separator: ", "))"))
        }
        var root = root
        for setting in self {
            let key = AnyCodingKey(stringValue: setting.key)
            if setting.isRequired, !container.contains(key) {
                throw DecodingError.keyNotFound(key, .init(codingPath: decoder.codingPath, debugDescription: "the setting '\(setting.key)' is missing"))
            }
            try setting.read(container, &root)
        }
        return root
    }

    /// Writes every setting of `root` (an unset optional one not at all).
    package func encode<Root>(_ root: Root, to encoder: Encoder) throws where Element == Setting<Root> {
        var container = encoder.container(keyedBy: AnyCodingKey.self)
        for setting in self { try setting.write(root, &container) }
    }

    /// The setting with `key`; a precondition that the table has it.
    package subscript<Root>(key key: String) -> Setting<Root> where Element == Setting<Root> {
        guard let setting = first(where: { $0.key == key }) else { preconditionFailure("no setting '\(key)'") }
        return setting
    }
}

/// The settings of one objective kind (`FineTuningSettings`, …): its table and the values a run's settings start
/// from, from which they are read (required settings replacing the blanks) and written.
package protocol ObjectiveSettings {
    /// Every setting, in the order its command's `--help` lists them.
    static var settings: [Setting<Self>] { get }
    /// The defaults, and blanks for the required settings that a file or command line gives.
    static var blank: Self { get }
}

extension ObjectiveSettings {
    /// The settings `decoder` holds, through the table.
    package init(from decoder: Decoder) throws { self = try Self.settings.decode(Self.blank, from: decoder) }

    /// Writes every setting through the table.
    package func encode(to encoder: Encoder) throws { try Self.settings.encode(self, to: encoder) }
}

/// A value a setting can hold: read from files as JSON, and from a command line as text.
package protocol SettingValue: Codable, Sendable {
    /// The value that a command-line argument spells, or nil when it spells none.
    init?(settingText argument: String)
    /// The value as a command line spells it.
    var settingText: String { get }
    /// What the command line's help calls such a value; nil: the option's name.
    static var valueName: String? { get }
    /// What a command-line value must be, for the error about one that is not ("an integer").
    static var expectation: String { get }
}

extension SettingValue {
    /// Most values are named after their option in the help.
    package static var valueName: String? { nil }
}

/// An integer, in decimal.
extension SettingValue where Self: FixedWidthInteger {
    package init?(settingText argument: String) { self.init(argument) }
    package var settingText: String { String(self) }
    package static var expectation: String { "an integer from \(Self.min) to \(Self.max)" }
}

/// A finite number (NaN and infinities are refused).
extension SettingValue where Self: BinaryFloatingPoint & LosslessStringConvertible {
    package init?(settingText argument: String) {
        guard let value = Self(argument), value.isFinite else { return nil }
        self = value
    }
    package var settingText: String { "\(self)" }
    package static var expectation: String { "a finite number" }
}

extension Int: SettingValue {}
extension UInt64: SettingValue {}
extension Float: SettingValue {}
extension Double: SettingValue {}

extension Bool: SettingValue {
    package static var expectation: String { "true or false" }
    package init?(settingText argument: String) { self.init(argument) }
    package var settingText: String { String(self) }
    package static var valueName: String? { "true|false" }
}

extension String: SettingValue {
    package static var expectation: String { "any text" }
    package init?(settingText argument: String) { self = argument }
    package var settingText: String { self }
}

/// A list, comma-separated on the command line.
extension Array: SettingValue where Element == String {
    package static var expectation: String { "a comma-separated list" }
    package init?(settingText argument: String) {
        self = argument.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    }
    package var settingText: String { joined(separator: ",") }
}

/// A choice among named cases, each spelt by its raw value.
extension SettingValue where Self: RawRepresentable & CaseIterable, RawValue == String {
    package init?(settingText argument: String) { self.init(rawValue: argument) }
    package var settingText: String { rawValue }
    package static var valueName: String? { allCases.map(\.rawValue).joined(separator: "|") }
    package static var expectation: String { "one of " + allCases.map(\.rawValue).joined(separator: ", ") }
}

extension ProductPrecision: SettingValue {}
extension WeightFormat: SettingValue {}
extension InputFormat.Task: SettingValue {}
extension KLEstimator: SettingValue {}
extension DirectPreferenceSettings.Loss: SettingValue {}
