import Foundation
import GPTModels
import GPTUtilities
import TensorCore

/// A file of token ids: a 32-byte header (magic `SGPTTOKS`, version 1, bytes per token 2 or 4, token count),
/// then the ids little-endian. Read memory-mapped.
package struct TokenFile {
    static let magic = Array("SGPTTOKS".utf8)
    static let headerSize = 32

    package let url: URL
    /// Number of tokens.
    package let count: Int
    /// 2 (uint16) or 4 (uint32).
    package let bytesPerToken: Int
    private let data: Data

    /// Opens and validates a token file.
    package init(contentsOf url: URL) throws {
        self.url = url
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw FileError(url: url, reason: .unreadable, message: "cannot read the token file (\(error.localizedDescription))")
        }
        guard data.count >= Self.headerSize, Array(data.prefix(8)) == Self.magic else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "not a SwiftGPT token file (bad header); make one with `gpt prepare`")
        }
        let (version, width, count) = data.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian,
             raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian,
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
        }
        guard version == 1 else { throw FileError(url: url, reason: .unsupported, message: "unsupported token-file version \(version)") }
        guard width == 2 || width == 4 else { throw FileError(url: url, reason: .malformed(line: nil), message: "corrupt header: \(width) bytes per token") }
        guard count <= UInt64(Int.max / 4), data.count == Self.headerSize + Int(count) * Int(width) else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "corrupt or truncated: the header says \(count) tokens of \(width) bytes, the file has \(data.count) bytes")
        }
        self.data = data
        self.count = Int(count)
        bytesPerToken = Int(width)
    }

    /// Copies `length` ids starting at `start` into `destination`.
    package func copy(from start: Int, length: Int, into destination: UnsafeMutablePointer<Int32>) {
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + Self.headerSize
            if bytesPerToken == 2 {
                let p = base.assumingMemoryBound(to: UInt16.self)
                for i in 0..<length { destination[i] = Int32(UInt16(littleEndian: p[start + i])) }
            } else {
                let p = base.assumingMemoryBound(to: UInt32.self)
                for i in 0..<length { destination[i] = Int32(bitPattern: UInt32(littleEndian: p[start + i])) }
            }
        }
    }

    /// All ids (for small files and tests).
    package func ids() -> [Int32] {
        [Int32](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { copy(from: 0, length: count, into: buffer.baseAddress!) }
            initialized = count
        }
    }

    /// Writes `ids` atomically, as uint16 when every id fits, else uint32.
    package static func write(_ ids: [Int32], vocabularySize: Int, to url: URL) throws {
        let width = vocabularySize <= 65536 ? 2 : 4
        var data = Data(magic)
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
        append(UInt32(1))
        append(UInt32(width))
        append(UInt64(ids.count))
        append(UInt64(0))
        data.reserveCapacity(headerSize + ids.count * width)
        if width == 2 {
            ids.map { UInt16(truncatingIfNeeded: $0).littleEndian }.withUnsafeBytes { data.append(contentsOf: $0) }
        } else {
            ids.map { UInt32(bitPattern: $0).littleEndian }.withUnsafeBytes { data.append(contentsOf: $0) }
        }
        try AtomicFile.write(data, to: url)
    }
}

/// Windows of consecutive ids from a token file, as inputs and next-token targets: random training batches, or
/// windows at chosen offsets.
package struct TokenDataset {
    package let file: TokenFile

    package init(file: TokenFile) { self.file = file }

    /// `batch` windows of `length` inputs with their next-token targets, at offsets drawn from `random`.
    package func batch(_ batch: Int, length: Int, random: inout SeededRandom) throws -> (inputs: [Int32], targets: [Int32]) {
        guard file.count > length else {
            throw FileError(url: file.url, reason: .mismatched, message: "has \(file.count) tokens, fewer than one window of \(length + 1)")
        }
        let starts = (0..<batch).map { _ in random.nextInt(below: file.count - length) }
        return windows(at: starts, length: length)
    }

    /// The windows of `length` inputs beginning at each of `starts`, with their next-token targets (each window
    /// reads `length` + 1 tokens, which must lie in the file).
    package func windows(at starts: [Int], length: Int) -> (inputs: [Int32], targets: [Int32]) {
        var inputs = [Int32](repeating: 0, count: starts.count * length)
        var targets = [Int32](repeating: 0, count: starts.count * length)
        var window = [Int32](repeating: 0, count: length + 1)
        for (b, start) in starts.enumerated() {
            window.withUnsafeMutableBufferPointer { file.copy(from: start, length: length + 1, into: $0.baseAddress!) }
            for t in 0..<length {
                inputs[b * length + t] = window[t]
                targets[b * length + t] = window[t + 1]
            }
        }
        return (inputs, targets)
    }
}
