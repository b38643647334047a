import Foundation
import GPTUtilities
import TensorCore

/// JSONL files of examples: one JSON object a line, blank lines skipped, every line checked (valid UTF-8, an
/// object), errors naming the file and the line.
package enum JSONLines {
    /// `transform(line, object, fail)` applied to every line's object, in order; `fail(message)` makes the error
    /// for a bad field of that line. A file without any object is an error.
    package static func map<T>(_ url: URL, _ transform: (Int, [String: Any], (String) -> FileError) throws -> T) throws -> [T] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FileError(url: url, reason: .unreadable, message: "cannot read (\(error.localizedDescription))")
        }
        var results: [T] = []
        var lineNumber = 0
        for rawLine in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let number = lineNumber
            func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: number), message: "line \(number): \(message)") }
            let line = rawLine.last == UInt8(ascii: "\r") ? rawLine.dropLast() : rawLine
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { continue }
            guard String(validating: line, as: UTF8.self) != nil else { throw fail("not valid UTF-8") }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                throw fail("not a JSON object")
            }
            results.append(try transform(number, object, fail))
        }
        guard !results.isEmpty else { throw FileError(url: url, reason: .malformed(line: nil), message: "holds no examples") }
        return results
    }
}
