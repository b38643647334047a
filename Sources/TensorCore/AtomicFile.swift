import Foundation

/// Writes files so that readers see either the old file or the complete new one, never a partial write:
/// the content goes to a temporary file in the same folder, which is then renamed over the target.
public enum AtomicFile {
    /// Streams content through `body` into `url`, atomically. On error the temporary file is removed and any
    /// existing file at `url` is left untouched.
    public static func write(to url: URL, _ body: (FileHandle) throws -> Void) throws {
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
            throw FileError(url: url, message: "cannot create a file in \(folder.path)")
        }
        do {
            let handle = try FileHandle(forWritingTo: temporary)
            do {
                try body(handle)
                try handle.synchronize()
                try handle.close()
            } catch {
                try? handle.close()
                throw error
            }
            guard rename(temporary.path, url.path) == 0 else {
                throw FileError(url: url, message: "cannot rename the written file into place (errno \(errno))")
            }
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// Writes `data` to `url` atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(contentsOf: data) }
    }
}

/// A problem with a file, naming the file.
public struct FileError: Error, CustomStringConvertible, Sendable {
    /// The file concerned.
    public let url: URL
    /// What is wrong, in words a user can act on.
    public let message: String

    public init(url: URL, message: String) {
        self.url = url
        self.message = message
    }

    public var description: String { "\(url.path): \(message)" }
}
