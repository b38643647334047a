import Foundation
import GPTUtilities

/// A one-line progress display on standard error: a bar redrawn in place when it is a terminal, otherwise a plain
/// line every `plainInterval` seconds at most, and one at the end (a log file gets a few lines, not a flood).
final class ProgressBar {
    private let total: Int
    private let label: String
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var lastPlainLine = Date.distantPast
    private var finishedPlainLine = false
    static let plainInterval: TimeInterval = 10

    init(total: Int, label: String) {
        self.total = max(total, 1)
        self.label = label
    }

    /// Shows `done` of the total, with `detail` after the bar (drawn at most ten times a second).
    func update(_ done: Int, detail: String = "") {
        let fraction = min(1, Double(done) / Double(total))
        if isTerminal {
            let now = Date()
            guard done >= total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
            lastDraw = now
            let width = 30, filled = Int(fraction * Double(width))
            let elapsed = now.timeIntervalSince(start)
            let eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = "\r\(label) \(bar) " + String(format: "%3.0f%% %d/%d ", fraction * 100, done, total)
                + "\(detail) ETA \(durationText(eta))\u{1B}[K"
            FileHandle.standardError.write(Data(line.utf8))
        } else {
            let now = Date()
            guard done >= total ? !finishedPlainLine : now.timeIntervalSince(lastPlainLine) >= Self.plainInterval else { return }
            lastPlainLine = now
            finishedPlainLine = done >= total
            FileHandle.standardError.write(Data(("\(label): " + String(format: "%.0f%% (%d/%d) ", fraction * 100, done, total) + "\(detail)\n").utf8))
        }
    }

    /// Ends the bar's line.
    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
