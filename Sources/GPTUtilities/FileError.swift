import Foundation

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
