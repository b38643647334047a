import Foundation
import GPTModels
import GPTUtilities
import TensorCore

/// The metrics log of a training run (`metrics.jsonl`, one JSON object per line).
enum Metrics {
    static func url(_ output: URL) -> URL { output.appendingPathComponent("metrics.jsonl") }

    static func append(_ record: [String: Any], in output: URL) throws {
        try appendLines([record], to: url(output))
    }

    /// Appends `records` as JSON lines (sorted keys) to the file at `url`, created if missing.
    static func appendLines(_ records: [[String: Any]], to url: URL) throws {
        var lines = Data()
        for record in records {
            lines += try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
            lines.append(UInt8(ascii: "\n"))
        }
        let descriptor = open(url.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard descriptor >= 0 else { throw FileError(url: url, reason: .writeFailed, message: "cannot open for appending (\(String(cString: strerror(errno))))") }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        try handle.write(contentsOf: lines)
    }

    static func records(in output: URL) -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: url(output).path) else { return [] }
        return data.split(separator: UInt8(ascii: "\n")).compactMap {
            try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any]
        }
    }

    /// Drops records after `step` (left by a run that stopped after its last checkpoint), so a resumed run's log
    /// reads as one run.
    static func keep(upTo step: Int, in output: URL) throws {
        let records = records(in: output)
        // An evaluation record at `step` is written again by the resumed run.
        let kept = records.filter { record in
            let recordStep = record["step"] as? Int ?? 0
            return recordStep < step || (recordStep == step && record["score"] == nil && record["val_loss"] == nil)
        }
        guard kept.count != records.count else { return }
        var data = Data()
        for record in kept {
            data += try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
            data.append(UInt8(ascii: "\n"))
        }
        try AtomicFile.write(data, to: url(output))
    }
}
