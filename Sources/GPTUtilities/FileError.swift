import Foundation

/// A problem with a file, naming the file: what kind of problem it is (`reason`, for code to act on) and exactly
/// what is wrong (`message`, in words a user can act on).
public struct FileError: Error, CustomStringConvertible, Sendable {
    /// The kinds of problem a file can have.
    public enum Reason: Equatable, Sendable {
        /// The file or folder is not there, or lacks a part it must hold.
        case missing
        /// It is there but cannot be read (permissions, an I/O error).
        case unreadable
        /// Its content breaks the rules of its format; `line` is the line at fault in a file read line by line
        /// (JSON Lines, merges), when one is.
        case malformed(line: Int?)
        /// It is well formed but does not fit what it is used with: a checkpoint's tensors or a data file's tokens
        /// against the model, a document against the tokenizer.
        case mismatched
        /// It holds a format, version or option that SwiftGPT does not read.
        case unsupported
        /// Writing, renaming, flushing, linking or removing it failed.
        case writeFailed
    }

    /// The file concerned.
    public let url: URL
    /// The kind of problem.
    public let reason: Reason
    /// What is wrong, in words a user can act on.
    public let message: String

    /// An error of kind `reason` about the file at `url`.
    public init(url: URL, reason: Reason, message: String) {
        self.url = url
        self.reason = reason
        self.message = message
    }

    /// The same error with another reason (for a helper that makes errors of one kind, meeting one of another).
    package func withReason(_ reason: Reason) -> FileError { FileError(url: url, reason: reason, message: message) }

    /// The file's path, then the message.
    public var description: String { "\(url.path): \(message)" }
}
