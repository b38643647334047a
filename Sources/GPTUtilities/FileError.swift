import Foundation

/// A problem with a file, naming the file.
public struct FileError: Error, CustomStringConvertible, Sendable {
    /// The file concerned.
    public let url: URL
    /// What is wrong, in words a user can act on.
    public let message: String

    /// An error about the file at `url`.
    public init(url: URL, message: String) {
        self.url = url
        self.message = message
    }

    /// The file's path, then the message.
    public var description: String { "\(url.path): \(message)" }
}
