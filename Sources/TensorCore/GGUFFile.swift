import Foundation
import GPTUtilities

/// How a GGUF file stores a tensor's values: the types SwiftGPT reads (ggml has more; a file holding one of those is
/// refused by its name). The other block types are read because llama.cpp's quantizer puts them in files of other
/// names: its `q4_0` of a GPT-2 keeps the token embedding in Q6_K, its `q4_K_M` mixes Q4_K and Q6_K, and rows that are
/// not whole 256-value blocks fall back to Q5_0, Q5_1 or Q8_0.
package enum GGUFTensorType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k

    /// ggml's number for the type.
    package var ggmlType: UInt32 {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q4_1: 3
        case .q5_0: 6
        case .q5_1: 7
        case .q8_0: 8
        case .q4_k: 12
        case .q5_k: 13
        case .q6_k: 14
        case .bf16: 30
        }
    }

    /// The type ggml numbers `number`, when it is one of these.
    package init?(ggmlType number: UInt32) {
        guard let type = Self.allCases.first(where: { $0.ggmlType == number }) else { return nil }
        self = type
    }

    /// Values a block holds: rows of the block types are whole blocks.
    package var blockLength: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: 32
        case .q4_k, .q5_k, .q6_k: 256
        }
    }

    /// Bytes of a row of `count` values (a multiple of `blockLength`).
    package func rowBytes(_ count: Int) -> Int {
        switch self {
        case .f32: count * 4
        case .f16, .bf16: count * 2
        case .q8_0: count / 32 * 34
        case .q4_0: count / 32 * 18
        case .q4_1: count / 32 * 20
        case .q5_0: count / 32 * 22
        case .q5_1: count / 32 * 24
        case .q4_k: count / 256 * 144
        case .q5_k: count / 256 * 176
        case .q6_k: count / 256 * 210
        }
    }

    /// ggml's name of the type numbered `number` (for refusals of the ones SwiftGPT does not read).
    package static func name(ofGGMLType number: UInt32) -> String {
        if let type = GGUFTensorType(ggmlType: number) { return type.rawValue.uppercased() }
        let others: [UInt32: String] = [9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
                                         21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
                                         29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"]
        return others[number].map { "\($0) (ggml type \(number))" } ?? "ggml type \(number)"
    }
}

/// A GGUF file (versions 2 and 3, little-endian), llama.cpp's model container: a header of typed key/value pairs and
/// tensor descriptions, then the tensors' data, aligned. Read memory-mapped and validated before any value is used:
/// every count, length, shape, type and offset is checked against the file (sizes with checked arithmetic), so a
/// corrupt or hostile file is an error naming the file and the field, never a crash or an unbounded allocation.
package struct GGUFFile {
    /// A metadata value. Integers of every width are `integer` (a u64 beyond Int64's range is refused).
    package enum Value: Equatable, Sendable {
        case integer(Int64)
        case float(Double)
        case bool(Bool)
        case string(String)
        case array([Value])
    }

    /// One tensor's description: its dimensions ggml's way (`dimensions[0]` the length of a row, the fastest-varying),
    /// its type, and its bytes in the file.
    package struct TensorInfo: Sendable {
        package let name: String
        package let dimensions: [Int]
        /// The type, when SwiftGPT reads it (`ggmlType` is the file's number either way).
        package let type: GGUFTensorType?
        package let ggmlType: UInt32
        /// The tensor's bytes, from the start of the file (empty for a type SwiftGPT does not read).
        let byteRange: Range<Int>

        /// Values of a row: `dimensions[0]`.
        package var rowLength: Int { dimensions[0] }
        /// Rows: the product of the other dimensions.
        package var rowCount: Int { dimensions.dropFirst().reduce(1, *) }
    }

    /// The file read.
    package let url: URL
    /// The format version (2 or 3).
    package let version: Int
    /// The key/value pairs.
    package let values: [String: Value]
    /// The tensors, in the file's order.
    package let tensors: [TensorInfo]
    private let tensorIndex: [String: Int]
    private let file: FileMapping

    /// The most elements a metadata array may claim (a tokenizer's vocabulary is a few hundred thousand).
    static let arrayLimit = 1 << 24
    /// Dimensions a tensor may have (ggml's limit).
    static let dimensionLimit = 4
    /// The largest size of one dimension.
    static let dimensionBound = 1 << 48

    /// Opens and validates `url`; every problem is a `FileError` that names the file and the field.
    package init(contentsOf url: URL) throws {
        self.url = url
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        let file = try FileMapping.opening(url)
        var reader = Reader(bytes: file.bytes, fail: fail)
        guard file.bytes.count >= 4, Array(file.bytes[0..<4]) == Array("GGUF".utf8) else { throw fail("not a GGUF file (it does not start with 'GGUF')") }
        reader.position = 4
        let version = try reader.integer(UInt32.self, "the version")
        guard version == 2 || version == 3 else {
            let swapped = version.byteSwapped
            throw FileError(url: url, reason: .unsupported, message: swapped == 2 || swapped == 3
                            ? "a big-endian GGUF file; SwiftGPT reads little-endian ones"
                            : "GGUF version \(version); SwiftGPT reads versions 2 and 3")
        }
        self.version = Int(version)
        // Each tensor description takes at least 32 bytes and each key/value pair 13, so counts the file cannot hold
        // are refused before anything is allocated for them.
        let tensorCount = try reader.count("the tensor count", elementBytes: 32)
        let valueCount = try reader.count("the key/value count", elementBytes: 13)
        var values: [String: Value] = [:]
        for index in 0..<valueCount {
            let key = try reader.string("the key of pair \(index)")
            guard values[key] == nil else { throw fail("key '\(key)' appears twice") }
            let type = try reader.integer(UInt32.self, "the type of '\(key)'")
            values[key] = try reader.value(type: type, field: "'\(key)'", depth: 0)
        }
        self.values = values

        var alignment = 32
        if let given = values["general.alignment"] {
            guard case .integer(let a) = given, a > 0, a <= 1 << 16, a & (a - 1) == 0 else {
                throw fail("'general.alignment' is \(given), not a power of two up to 65536")
            }
            alignment = Int(a)
        }
        var infos: [(name: String, dimensions: [Int], type: UInt32, offset: Int)] = []
        infos.reserveCapacity(tensorCount)
        var tensorIndex: [String: Int] = [:]
        for index in 0..<tensorCount {
            let name = try reader.string("the name of tensor \(index)")
            guard tensorIndex[name] == nil else { throw fail("tensor '\(name)' appears twice") }
            let dimensionCount = try reader.integer(UInt32.self, "the dimension count of tensor '\(name)'")
            guard (1...UInt32(Self.dimensionLimit)).contains(dimensionCount) else {
                throw fail("tensor '\(name)' has \(dimensionCount) dimensions; ggml's tensors have 1 to \(Self.dimensionLimit)")
            }
            var dimensions: [Int] = []
            for d in 0..<Int(dimensionCount) {
                let size = try reader.integer(UInt64.self, "dimension \(d) of tensor '\(name)'")
                // Bounded so that a row's bytes cannot overflow; the product of the dimensions is checked below.
                guard size >= 1, size <= UInt64(Self.dimensionBound) else {
                    throw fail("tensor '\(name)' has dimension \(d) of \(size), not a positive size up to 2^48")
                }
                dimensions.append(Int(size))
            }
            let type = try reader.integer(UInt32.self, "the type of tensor '\(name)'")
            let offset = try reader.integer(UInt64.self, "the offset of tensor '\(name)'")
            guard offset <= UInt64(Int.max), offset % UInt64(alignment) == 0 else {
                throw fail("tensor '\(name)' starts at data offset \(offset), not a multiple of the alignment (\(alignment))")
            }
            tensorIndex[name] = index
            infos.append((name, dimensions, type, Int(offset)))
        }
        let (dataStart, startOverflow) = reader.position.addingReportingOverflow(alignment - 1)
        guard !startOverflow else { throw fail("the header is too long") }
        let dataOffset = dataStart / alignment * alignment
        let dataBytes = max(0, file.bytes.count - dataOffset)

        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(infos.count)
        for info in infos {
            guard let type = GGUFTensorType(ggmlType: info.type) else {
                tensors.append(TensorInfo(name: info.name, dimensions: info.dimensions, type: nil, ggmlType: info.type, byteRange: 0..<0))
                continue
            }
            guard info.dimensions[0] % type.blockLength == 0 else {
                throw fail("tensor '\(info.name)' is \(type.rawValue.uppercased()) with rows of \(info.dimensions[0]) values, not whole blocks of \(type.blockLength)")
            }
            // Bytes with checked arithmetic: a shape such as [2^40, 2^40] overflows Int when multiplied out.
            var bytes: Int? = type.rowBytes(info.dimensions[0])
            for size in info.dimensions.dropFirst() {
                bytes = bytes.flatMap { b in
                    let (product, overflow) = b.multipliedReportingOverflow(by: size)
                    return overflow ? nil : product
                }
            }
            guard let bytes, info.offset <= dataBytes, bytes <= dataBytes - info.offset else {
                throw fail("tensor '\(info.name)' of dimensions \(info.dimensions) (\(type.rawValue.uppercased())) lies outside the file's \(dataBytes) bytes of data (truncated?)")
            }
            let start = dataOffset + info.offset
            tensors.append(TensorInfo(name: info.name, dimensions: info.dimensions, type: type, ggmlType: info.type, byteRange: start..<(start + bytes)))
        }
        var end = 0, previous = ""
        for tensor in tensors.filter({ !$0.byteRange.isEmpty }).sorted(by: { $0.byteRange.lowerBound < $1.byteRange.lowerBound }) {
            guard tensor.byteRange.lowerBound >= end else { throw fail("tensors '\(previous)' and '\(tensor.name)' overlap") }
            (end, previous) = (tensor.byteRange.upperBound, tensor.name)
        }
        self.tensors = tensors
        self.tensorIndex = tensorIndex
        self.file = file
    }

    /// The tensor `name`; an error (naming the file) when there is none.
    package func tensor(_ name: String) throws -> TensorInfo {
        guard let index = tensorIndex[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        return tensors[index]
    }

    /// A reader of the named tensor's rows as float32 (F16 and BF16 converted, Q8_0 and Q4_0 blocks decoded as ggml
    /// decodes them): `reader(rows, target)` writes those rows' values into `target` and lets their pages go from this
    /// process's memory. It may be called from several threads at once; rows must lie within the tensor. A tensor of a
    /// type SwiftGPT does not read is an error naming the type.
    package func rowReader(_ name: String) throws -> @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void {
        let tensor = try tensor(name)
        guard let type = tensor.type else {
            throw FileError(url: url, reason: .unsupported, message: "tensor '\(name)' is \(GGUFTensorType.name(ofGGMLType: tensor.ggmlType)); "
                            + "SwiftGPT reads \(GGUFTensorType.allCases.map { $0.rawValue.uppercased() }.joined(separator: ", "))")
        }
        let length = tensor.rowLength, rowCount = tensor.rowCount, rowBytes = type.rowBytes(length)
        let file = file, start = tensor.byteRange.lowerBound
        return { rows, target in
            precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "rows \(rows) outside the tensor's \(rowCount)")
            let first = start + rows.lowerBound * rowBytes
            let source = file.bytes.baseAddress! + first
            Self.decode(source, type: type, count: rows.count * length, into: target)
            file.release(first..<(first + rows.count * rowBytes))
        }
    }

    /// Writes the named tensor's values into `target` as float32 (see `rowReader(_:)`).
    package func read(_ name: String, into target: UnsafeMutablePointer<Float>) throws {
        let reader = try rowReader(name)
        reader(0..<(try tensor(name).rowCount), target)
    }

    /// Lets every page of the file that this process still maps go from its memory.
    package func releaseMappedPages() { file.release(0..<file.bytes.count) }

    /// `count` values stored in `type` at `source` (whole blocks), as float32, as ggml decodes them.
    package static func decode(_ source: UnsafeRawPointer, type: GGUFTensorType, count: Int, into target: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32: memcpy(target, source, count * 4)
        case .f16: for i in 0..<count { target[i] = halfToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bf16: for i in 0..<count { target[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
        case .q8_0:
            for b in 0..<(count / 32) {
                let block = source + 34 * b, scale = halfToFloat(block.loadUnaligned(as: UInt16.self)), out = target + 32 * b
                for j in 0..<32 { out[j] = Float(Int8(bitPattern: block.load(fromByteOffset: 2 + j, as: UInt8.self))) * scale }
            }
        case .q4_0:
            for b in 0..<(count / 32) {
                let block = source + 18 * b, scale = halfToFloat(block.loadUnaligned(as: UInt16.self)), out = target + 32 * b
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    out[j] = Float(Int(byte & 15) - 8) * scale
                    out[j + 16] = Float(Int(byte >> 4) - 8) * scale
                }
            }
        case .q4_1, .q5_0, .q5_1:
            // 32 values: an f16 scale, (Q4_1, Q5_1) an f16 minimum, (Q5_0, Q5_1) 32 fifth bits, then 4-bit codes as
            // Q4_0's; a value is scale × code + minimum (Q5_0: scale × (code − 16)).
            let blockBytes = type.rowBytes(32), hasMinimum = type != .q5_0, hasFifthBit = type != .q4_1
            let codesAt = 2 + (hasMinimum ? 2 : 0) + (hasFifthBit ? 4 : 0)
            for b in 0..<(count / 32) {
                let block = source + blockBytes * b, out = target + 32 * b
                let scale = halfToFloat(block.loadUnaligned(as: UInt16.self))
                let minimum = hasMinimum ? halfToFloat(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) : 0
                let fifth = hasFifthBit ? UInt32(littleEndian: block.loadUnaligned(fromByteOffset: codesAt - 4, as: UInt32.self)) : 0
                let offset: Float = hasMinimum ? 0 : 16
                for j in 0..<16 {
                    let byte = UInt32(block.load(fromByteOffset: codesAt + j, as: UInt8.self))
                    let low = byte & 15 | (fifth >> j & 1) << 4, high = byte >> 4 | (fifth >> (j + 16) & 1) << 4
                    out[j] = scale * (Float(low) - offset) + minimum
                    out[j + 16] = scale * (Float(high) - offset) + minimum
                }
            }
        case .q4_k, .q5_k:
            // 256 values: two f16 scales (d, dmin), eight 6-bit sub-block scales and mins packed in 12 bytes, then
            // (Q5_K) a bit plane of fifth bits, then 4-bit codes: sub-block pairs share 32 bytes, low nibbles first.
            let blockBytes = type == .q4_k ? 144 : 176
            for b in 0..<(count / 256) {
                let block = source + blockBytes * b, out = target + 256 * b
                let d = halfToFloat(block.loadUnaligned(as: UInt16.self)), dmin = halfToFloat(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let scales = block + 4, high = block + 16, codes = block + (type == .q4_k ? 16 : 48)
                func byte(_ p: UnsafeRawPointer, _ i: Int) -> Int { Int(p.load(fromByteOffset: i, as: UInt8.self)) }
                func scaleAndMin(_ j: Int) -> (Float, Float) {
                    if j < 4 { return (Float(byte(scales, j) & 63), Float(byte(scales, j + 4) & 63)) }
                    return (Float((byte(scales, j + 4) & 15) | (byte(scales, j - 4) >> 6) << 4),
                            Float((byte(scales, j + 4) >> 4) | (byte(scales, j) >> 6) << 4))
                }
                for pair in 0..<4 {
                    let (s1, m1) = scaleAndMin(2 * pair), (s2, m2) = scaleAndMin(2 * pair + 1)
                    let (d1, d2, o1, o2) = (d * s1, d * s2, dmin * m1, dmin * m2)
                    for l in 0..<32 {
                        let q = byte(codes, 32 * pair + l)
                        var (low, upper) = (q & 15, q >> 4)
                        if type == .q5_k {
                            let h = byte(high, l)
                            low |= ((h >> (2 * pair)) & 1) << 4
                            upper |= ((h >> (2 * pair + 1)) & 1) << 4
                        }
                        out[64 * pair + l] = d1 * Float(low) - o1
                        out[64 * pair + 32 + l] = d2 * Float(upper) - o2
                    }
                }
            }
        case .q6_k:
            // 256 values: low 4 bits (128 bytes), high 2 bits (64 bytes), sixteen int8 sub-block scales, an f16 scale.
            for b in 0..<(count / 256) {
                let block = source + 210 * b, out = target + 256 * b
                let d = halfToFloat(block.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
                func byte(_ i: Int) -> Int { Int(block.load(fromByteOffset: i, as: UInt8.self)) }
                func scale(_ i: Int) -> Float { d * Float(Int8(bitPattern: block.load(fromByteOffset: 192 + i, as: UInt8.self))) }
                for half in 0..<2 {
                    let low = 64 * half, high = 128 + 32 * half, sub = 8 * half, y = out + 128 * half
                    for l in 0..<32 {
                        let h = byte(high + l), s = l / 16
                        y[l] = scale(sub + s) * Float((byte(low + l) & 15 | (h & 3) << 4) - 32)
                        y[l + 32] = scale(sub + s + 2) * Float((byte(low + l + 32) & 15 | (h >> 2 & 3) << 4) - 32)
                        y[l + 64] = scale(sub + s + 4) * Float((byte(low + l) >> 4 | (h >> 4 & 3) << 4) - 32)
                        y[l + 96] = scale(sub + s + 6) * Float((byte(low + l + 32) >> 4 | (h >> 6 & 3) << 4) - 32)
                    }
                }
            }
        }
    }

    // MARK: Metadata

    /// The integer at `key`, nil when absent; an error naming the key when it is not an integer.
    package func integer(_ key: String) throws -> Int? {
        guard let value = values[key] else { return nil }
        guard case .integer(let v) = value else { throw malformed(key, "an integer", value) }
        return Int(v)
    }

    /// The number (integer or floating point) at `key`, nil when absent.
    package func number(_ key: String) throws -> Double? {
        switch values[key] {
        case nil: return nil
        case .integer(let v): return Double(v)
        case .float(let v): return v
        case let value?: throw malformed(key, "a number", value)
        }
    }

    /// The string at `key`, nil when absent.
    package func string(_ key: String) throws -> String? {
        guard let value = values[key] else { return nil }
        guard case .string(let v) = value else { throw malformed(key, "a string", value) }
        return v
    }

    /// The array of strings at `key`, nil when absent.
    package func strings(_ key: String) throws -> [String]? {
        guard let value = values[key] else { return nil }
        guard case .array(let elements) = value else { throw malformed(key, "an array of strings", value) }
        return try elements.map {
            guard case .string(let v) = $0 else { throw malformed(key, "an array of strings", value) }
            return v
        }
    }

    private func malformed(_ key: String, _ expected: String, _ value: Value) -> FileError {
        let kind = switch value {
        case .integer: "an integer"
        case .float: "a floating-point number"
        case .bool: "a boolean"
        case .string: "a string"
        case .array: "an array"
        }
        return FileError(url: url, reason: .malformed(line: nil), message: "'\(key)' is \(kind), not \(expected)")
    }

    /// A bounds-checked cursor over the file's header.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        let fail: (String) -> FileError
        var position = 0

        var remaining: Int { bytes.count - position }

        mutating func integer<T: FixedWidthInteger>(_: T.Type, _ field: String) throws -> T {
            guard remaining >= MemoryLayout<T>.size else { throw fail("the file ends in \(field) (truncated?)") }
            defer { position += MemoryLayout<T>.size }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        }

        /// A u64 count of things each taking at least `elementBytes` bytes of what follows.
        mutating func count(_ field: String, elementBytes: Int, limit: Int = .max) throws -> Int {
            let n = try integer(UInt64.self, field)
            guard n <= UInt64(remaining / elementBytes), n <= UInt64(limit) else {
                throw fail("\(field) is \(n), more than the file's remaining \(remaining) bytes can hold" + (limit < .max ? " or above \(limit)" : ""))
            }
            return Int(n)
        }

        mutating func string(_ field: String) throws -> String {
            let length = try integer(UInt64.self, "the length of \(field)")
            guard length <= UInt64(remaining) else { throw fail("\(field) claims \(length) bytes; the file has \(remaining) left (truncated?)") }
            let start = position
            position += Int(length)
            guard let text = String(validating: bytes[start..<position], as: UTF8.self) else { throw fail("\(field) is not valid UTF-8") }
            return text
        }

        /// A value of GGUF type `type`; arrays of arrays nest at most twice.
        mutating func value(type: UInt32, field: String, depth: Int) throws -> Value {
            switch type {
            case 0: return .integer(Int64(try integer(UInt8.self, field)))
            case 1: return .integer(Int64(try integer(Int8.self, field)))
            case 2: return .integer(Int64(try integer(UInt16.self, field)))
            case 3: return .integer(Int64(try integer(Int16.self, field)))
            case 4: return .integer(Int64(try integer(UInt32.self, field)))
            case 5: return .integer(Int64(try integer(Int32.self, field)))
            case 6: return .float(Double(Float(bitPattern: try integer(UInt32.self, field))))
            case 7:
                let byte = try integer(UInt8.self, field)
                guard byte <= 1 else { throw fail("\(field) is a boolean of value \(byte), not 0 or 1") }
                return .bool(byte == 1)
            case 8: return .string(try string(field))
            case 9:
                guard depth < 2 else { throw fail("\(field) nests arrays more than twice") }
                let elementType = try integer(UInt32.self, "the element type of \(field)")
                let elementBytes = switch elementType {
                case 0, 1, 7: 1
                case 2, 3: 2
                case 4, 5, 6: 4
                case 10, 11, 12: 8
                case 8: 8
                case 9: 12
                default: throw fail("\(field) is an array of GGUF value type \(elementType), not a type of GGUF")
                }
                let n = try count("the length of \(field)", elementBytes: elementBytes, limit: GGUFFile.arrayLimit)
                var elements: [Value] = []
                elements.reserveCapacity(n)
                for i in 0..<n { elements.append(try value(type: elementType, field: "\(field)[\(i)]", depth: depth + 1)) }
                return .array(elements)
            case 10:
                let v = try integer(UInt64.self, field)
                guard v <= UInt64(Int64.max) else { throw fail("\(field) is \(v), beyond the integers SwiftGPT reads") }
                return .integer(Int64(v))
            case 11: return .integer(try integer(Int64.self, field))
            case 12: return .float(Double(bitPattern: try integer(UInt64.self, field)))
            default: throw fail("\(field) has GGUF value type \(type), not a type of GGUF")
            }
        }
    }
}
