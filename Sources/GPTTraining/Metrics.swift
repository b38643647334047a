import Foundation
import GPTModels
import TensorCore

/// The metrics log of a training run (`metrics.jsonl`, one JSON object per line) and its loss curve (`loss.svg`).
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
        // A file that cannot be created makes the FileHandle below throw, with the reason.
        if !FileManager.default.fileExists(atPath: url.path) { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seekToEnd()
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

    static func drawCurve(in output: URL, title: String) throws {
        let records = records(in: output)
        let train = records.compactMap { r in (r["train_loss"] as? Double).map { (step: r["step"] as! Int, loss: Float($0)) } }
        let val = records.compactMap { r in (r["val_loss"] as? Double).map { (step: r["step"] as! Int, loss: Float($0)) } }
        let svg = LearningCurve.svg(train: train, validation: val, title: title)
        try AtomicFile.write(Data(svg.utf8), to: output.appendingPathComponent("loss.svg"))
    }
}
