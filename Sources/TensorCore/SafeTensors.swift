import Foundation
import GPTUtilities

/// A `.safetensors` file (Hugging Face's tensor container): an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the raw little-endian data. Read memory-mapped.
public struct SafeTensors {
    /// Element types this reader understands.
    public enum DType: String, Sendable {
        case float32 = "F32", float16 = "F16", bfloat16 = "BF16", float64 = "F64", int64 = "I64", int32 = "I32"

        var size: Int {
            switch self {
            case .float16, .bfloat16: 2
            case .float32, .int32: 4
            case .float64, .int64: 8
            }
        }
    }

    /// One tensor's place in the file.
    package struct Entry: Sendable {
        package let dtype: DType
        package let shape: [Int]
        let byteRange: Range<Int>
    }

    /// The file read.
    package let url: URL
    /// Tensors by name.
    package let entries: [String: Entry]
    /// The `__metadata__` map of the header.
    package let metadata: [String: String]
    private let file: FileMapping
    private let dataStart: Int

    /// Opens and validates `url`; every problem is a `FileError` that names the file.
    package init(contentsOf url: URL) throws {
        self.url = url
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        let file = try FileMapping.opening(url)
        let data = file.bytes
        guard data.count >= 8 else { throw fail("truncated safetensors file: \(data.count) bytes, no header") }
        let headerLength = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(data.count - 8) else {
            throw fail("corrupt safetensors header: it claims \(headerLength) bytes but the file has \(data.count - 8)")
        }
        let header = Data(data[8..<(8 + Int(headerLength))])
        guard let json = (try? JSONSerialization.jsonObject(with: header)) as? [String: Any] else {
            throw fail("corrupt safetensors header: not a JSON object")
        }
        let payload = data.count - 8 - Int(headerLength)
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in json {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let info = value as? [String: Any], let dtypeName = info["dtype"] as? String,
                  let shapeValues = info["shape"] as? [Any], let offsetValues = info["data_offsets"] as? [Any], offsetValues.count == 2
            else { throw fail("corrupt safetensors header: entry '\(name)' lacks dtype, shape or data_offsets") }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw FileError(url: url, reason: .unsupported, message: "tensor '\(name)' has unsupported dtype \(dtypeName) (supported: F32, F16, BF16, F64, I64, I32)")
            }
            let shape = shapeValues.compactMap { JSONNumber.integer($0) }, offsets = offsetValues.compactMap { JSONNumber.integer($0) }
            guard shape.count == shapeValues.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("corrupt safetensors header: tensor '\(name)' has shape \(shapeValues), not a list of non-negative integers")
            }
            guard offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= payload else {
                throw fail("corrupt safetensors header: tensor '\(name)' lies outside the file (truncated?)")
            }
            // Sizes with checked arithmetic: a shape such as [2^62] overflows Int when multiplied out.
            var bytes: Int? = dtype.size
            for dimension in shape {
                bytes = bytes.flatMap { b in
                    let (product, overflow) = b.multipliedReportingOverflow(by: dimension)
                    return overflow ? nil : product
                }
            }
            guard let bytes, bytes == offsets[1] - offsets[0] else {
                throw fail("corrupt safetensors header: tensor '\(name)' of shape \(shape) does not fill its \(offsets[1] - offsets[0]) bytes")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, byteRange: offsets[0]..<offsets[1])
        }
        // The format indexes the whole data buffer, without holes or overlaps.
        var end = 0
        for (name, entry) in entries.sorted(by: { ($0.value.byteRange.lowerBound, $0.value.byteRange.upperBound) < ($1.value.byteRange.lowerBound, $1.value.byteRange.upperBound) }) {
            guard entry.byteRange.lowerBound == end else {
                throw fail("corrupt safetensors header: tensor '\(name)' starts at byte \(entry.byteRange.lowerBound) of the data, "
                           + (entry.byteRange.lowerBound < end ? "inside the tensor before it (they overlap)" : "after a gap from byte \(end)"))
            }
            end = entry.byteRange.upperBound
        }
        guard end == payload else {
            throw fail("corrupt safetensors file: the tensors cover \(end) bytes of data, the file holds \(payload)")
        }
        self.entries = entries
        self.metadata = metadata
        self.file = file
        self.dataStart = 8 + Int(headerLength)
    }

    /// Tensor names in the file, sorted.
    package var names: [String] { entries.keys.sorted() }

    /// The named tensor as float32 (F16, BF16 and F64 are converted).
    package func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        let t = Tensor(uninitializedShape: e.shape)
        try read(name, into: t.pointer)
        return t
    }

    /// The named tensor as float32, which must have `shape`; the error names the tensor and both shapes.
    package func checkedTensor(_ name: String, shape: [Int]) throws -> Tensor {
        try checkShape(name, shape)
        return try tensor(name)
    }

    /// Throws unless the named tensor exists with `shape`; the error names the tensor and both shapes.
    package func checkShape(_ name: String, _ shape: [Int]) throws {
        guard let e = entries[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        guard e.shape == shape else { throw FileError(url: url, reason: .mismatched, message: "tensor '\(name)' has shape \(e.shape), the config needs \(shape)") }
    }

    /// Writes the named tensor's elements into `target` as float32 (F16, BF16, F64 and integers converted), then
    /// lets the file's pages it read go from this process's memory (they stay in the system's file cache): a model
    /// read tensor by tensor into its own memory never holds the file as a second copy.
    package func read(_ name: String, into target: UnsafeMutablePointer<Float>) throws {
        let reader = try rowReader(name)
        reader(0..<(entries[name]!.shape.first ?? 1), target)
    }

    /// A reader of the named tensor's rows (along its first dimension), each as `read(_:into:)` reads the whole:
    /// `reader(rows, target)` writes those rows' elements into `target` as float32 and lets their pages go. It may
    /// be called from several threads at once; rows must lie within the tensor.
    package func rowReader(_ name: String) throws -> @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void {
        guard let e = entries[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        let rowElements = e.shape.dropFirst().reduce(1, *), rowCount = e.shape.first ?? 1, size = e.dtype.size
        let dtype = e.dtype, file = file, start = dataStart + e.byteRange.lowerBound
        return { rows, target in
            precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "rows \(rows) outside the tensor's \(rowCount)")
            let n = rows.count * rowElements, first = start + rows.lowerBound * rowElements * size
            let src = file.bytes.baseAddress! + first
            switch dtype {
            case .float32: memcpy(target, src, n * 4)
            case .float64: for i in 0..<n { target[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .bfloat16:
                for i in 0..<n { target[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            case .float16: for i in 0..<n { target[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .int64: for i in 0..<n { target[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            case .int32: for i in 0..<n { target[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
            }
            file.release(first..<(first + n * size))
        }
    }

    /// Lets every page of the file that this process still maps go from its memory (reading maps pages around the
    /// ones asked for, which a reader's own release does not reach).
    package func releaseMappedPages() { file.release(0..<file.bytes.count) }

    /// The named integer tensor (I64 or I32), flattened.
    package func integers(_ name: String) throws -> [Int] {
        guard let e = entries[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        let n = e.shape.reduce(1, *)
        let src = file.bytes.baseAddress! + dataStart + e.byteRange.lowerBound
        switch e.dtype {
        case .int64: return (0..<n).map { Int(src.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        case .int32: return (0..<n).map { Int(src.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        default: throw FileError(url: url, reason: .mismatched, message: "tensor '\(name)' is \(e.dtype.rawValue), not an integer type")
        }
    }

    /// Writes float32 tensors (in the given order) atomically to `url`, stored as `dtype` (F32, or BF16 rounded to
    /// nearest even).
    package static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:], as dtype: DType = .float32,
                             to url: URL) throws {
        try write(shapes: tensors.map { ($0.name, $0.tensor.shape) }, metadata: metadata, as: dtype, to: url) { index, write in
            let t = tensors[index].tensor
            try write(UnsafeBufferPointer(start: t.pointer, count: t.count))
        }
    }

    /// Writes float32 tensors of the given names and shapes (in that order) atomically to `url`, stored as `dtype`
    /// (F32, or BF16 rounded to nearest even), their values coming from `contents`: called once for each tensor's
    /// index, it hands the values in order, in one or more pieces, to the function it is given. A tensor given more
    /// or fewer values than its shape holds is an error.
    package static func write(shapes: [(name: String, shape: [Int])], metadata: [String: String] = [:], as dtype: DType = .float32,
                             to url: URL, contents: (_ index: Int, _ write: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) throws {
        precondition(dtype == .float32 || dtype == .bfloat16, "safetensors are written as F32 or BF16")
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, shape) in shapes {
            let count = shape.reduce(1, *)
            header[name] = ["dtype": dtype.rawValue, "shape": shape, "data_offsets": [offset, offset + dtype.size * count]] as [String: Any]
            offset += dtype.size * count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var length = UInt64(json.count).littleEndian
        try AtomicFile.write(to: url) { handle in
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: json)
            for (index, (name, shape)) in shapes.enumerated() {
                var written = 0
                try contents(index) { piece in
                    guard let base = piece.baseAddress, !piece.isEmpty else { return }
                    if dtype == .bfloat16 {
                        var rounded = [BFloat16](repeating: BFloat16(bitPattern: 0), count: piece.count)
                        rounded.withUnsafeMutableBufferPointer { BFloat16Conversion.round(base, into: $0.baseAddress!, count: piece.count) }
                        try rounded.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
                    } else {
                        try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: 4 * piece.count,
                                                          deallocator: .none))
                    }
                    written += piece.count
                }
                guard written == shape.reduce(1, *) else {
                    throw FileError(url: url, reason: .mismatched, message: "tensor '\(name)' was given \(written) values for shape \(shape)")
                }
            }
        }
    }
}

/// IEEE half precision bits to float (handles subnormals, infinities and NaN).
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int((h >> 10) & 0x1F), mantissa = UInt32(h & 0x3FF)
    switch exponent {
    case 0:
        let magnitude = Float(mantissa) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    case 31: return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    default: return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
    }
}
