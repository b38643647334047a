import Foundation
import GPTUtilities

/// A file mapped read-only into memory, unmapped when released.
final class FileMapping: @unchecked Sendable {
    /// The file's bytes.
    let bytes: UnsafeRawBufferPointer
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Maps the file at `url`; an error says why it cannot (an empty file maps to no bytes).
    init(_ url: URL) throws {
        let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileMappingError(reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw FileMappingError(reason: String(cString: strerror(errno))) }
        let count = Int(status.st_size)
        guard count > 0 else { bytes = UnsafeRawBufferPointer(start: nil, count: 0); return }
        guard let base = mmap(nil, count, PROT_READ, MAP_PRIVATE, descriptor, 0), base != MAP_FAILED else {
            throw FileMappingError(reason: String(cString: strerror(errno)))
        }
        bytes = UnsafeRawBufferPointer(start: base, count: count)
    }

    /// Drops the pages of `range` from this process's resident memory; they are read from the file again if touched.
    func release(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let start = range.lowerBound / Self.pageSize * Self.pageSize
        let end = min(bytes.count, (range.upperBound + Self.pageSize - 1) / Self.pageSize * Self.pageSize)
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    /// The file at `url` mapped; a missing or unreadable file is a `FileError` naming it.
    static func opening(_ url: URL) throws -> FileMapping {
        guard FileManager.default.fileExists(atPath: url.path) else { throw FileError(url: url, reason: .missing, message: "no such file") }
        do { return try FileMapping(url) } catch { throw FileError(url: url, reason: .unreadable, message: "cannot read: \(error)") }
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

struct FileMappingError: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
