import Foundation

/// A JSON document as a value: request bodies are read through it so that each field's type can be checked and a
/// wrong one named, and responses are written through it so that `null` fields are kept.
package enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses a request body; the error says what is wrong with it.
    package static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw APIError.invalidRequest("the request body is not valid UTF-8")
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw APIError.invalidRequest("the request body is not valid JSON (\(Self.describe(error)))")
        }
    }

    private static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return underlying ?? context.debugDescription
        }
        return "\(error)"
    }

    /// The compact JSON text of the value.
    var serialized: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let n):
            if n.isNaN || n.isInfinite {
                out += Array((n.isNaN ? "NaN" : n > 0 ? "Infinity" : "-Infinity").utf8)
            } else if n == n.rounded(), abs(n) < 1e15 {
                out += Array(String(Int64(n)).utf8)
            } else {
                out += Array("\(n)".utf8)
            }
        case .string(let s): Self.writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let fields):
            out.append(UInt8(ascii: "{"))
            for (i, key) in fields.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                fields[key]!.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSONValue: Decodable {
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? container.decode(Double.self) {
            self = .number(n)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int) { self = .number(Double(value)) }
    package init(floatLiteral value: Double) { self = .number(value) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    package init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(uniqueKeysWithValues: elements)) }
    package init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    init(_ value: Int) { self = .number(Double(value)) }
    init(_ value: Float) { self = .number(Double(value)) }
    init(_ value: String?) { self = value.map { .string($0) } ?? .null }
}

/// The fields of a request object, read one by one: each accessor checks the field's type and range and throws
/// a 400 naming the field; `finish` rejects any field that was never read (an unsupported option is refused, not
/// ignored).
struct RequestFields {
    private let fields: [String: JSONValue]
    private var read: Set<String> = []

    init(_ body: JSONValue) throws {
        guard case .object(let fields) = body else { throw APIError.invalidRequest("the request body must be a JSON object") }
        self.fields = fields
    }

    /// Marks fields as accepted without use (they have no effect here, as documented).
    mutating func accept(_ names: String...) { read.formUnion(names) }

    mutating func raw(_ name: String) -> JSONValue? {
        read.insert(name)
        guard let value = fields[name], value != .null else { return nil }
        return value
    }

    mutating func string(_ name: String) throws -> String? {
        guard let value = raw(name) else { return nil }
        guard case .string(let s) = value else { throw APIError.invalidRequest("'\(name)' must be a string", param: name) }
        return s
    }

    mutating func bool(_ name: String) throws -> Bool? {
        guard let value = raw(name) else { return nil }
        guard case .bool(let b) = value else { throw APIError.invalidRequest("'\(name)' must be a boolean", param: name) }
        return b
    }

    mutating func number(_ name: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let value = raw(name) else { return nil }
        guard case .number(let n) = value else { throw APIError.invalidRequest("'\(name)' must be a number", param: name) }
        guard range.contains(n) else {
            throw APIError.invalidRequest("'\(name)' must be between \(Self.format(range.lowerBound)) and \(Self.format(range.upperBound)); got \(Self.format(n))", param: name)
        }
        return n
    }

    mutating func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = raw(name) else { return nil }
        guard case .number(let n) = value, n == n.rounded(), abs(n) < 1e18 else {
            throw APIError.invalidRequest("'\(name)' must be an integer", param: name)
        }
        guard range.contains(Int(n)) else {
            throw APIError.invalidRequest("'\(name)' must be between \(range.lowerBound) and \(range.upperBound); got \(Int(n))", param: name)
        }
        return Int(n)
    }

    /// A string or a list of strings (as `stop`).
    mutating func strings(_ name: String, atMost limit: Int) throws -> [String]? {
        guard let value = raw(name) else { return nil }
        switch value {
        case .string(let s): return [s]
        case .array(let items):
            let strings = items.compactMap { if case .string(let s) = $0 { s } else { nil } }
            guard strings.count == items.count else { throw APIError.invalidRequest("'\(name)' must be a string or a list of strings", param: name) }
            guard strings.count <= limit else { throw APIError.invalidRequest("'\(name)' takes at most \(limit) items", param: name) }
            return strings
        default: throw APIError.invalidRequest("'\(name)' must be a string or a list of strings", param: name)
        }
    }

    /// Fails on the first field the endpoint does not handle.
    func finish() throws {
        if let unknown = fields.keys.sorted().first(where: { !read.contains($0) }) {
            throw APIError.invalidRequest("'\(unknown)' is not supported by this server", param: unknown, code: "unsupported_parameter")
        }
    }

    /// A number as a message shows it: whole numbers without a fraction, any magnitude without trapping.
    static func format(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x) }
}
