import Foundation
import GPTUtilities
import SwiftGPT

/// Writes records as JSON lines (sorted keys) to a file, atomically, or to standard output when no file is given:
/// how `gpt predict` and `gpt reward score` hand back their results.
enum JSONLinesOutput {
    static func write(_ records: [[String: Any]], to path: String?) throws {
        var lines = Data()
        for record in records {
            lines += try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes])
            lines.append(UInt8(ascii: "\n"))
        }
        if let path { try AtomicFile.write(lines, to: URL(fileURLWithPath: path)) } else { FileHandle.standardOutput.write(lines) }
    }
}
