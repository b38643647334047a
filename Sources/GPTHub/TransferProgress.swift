import Foundation
import GPTUtilities

/// A download's progress on standard error: bytes, speed and time left, redrawn in place on a terminal (ten times a
/// second at most), otherwise one line every ten seconds and one at the end.
final class TransferProgress: @unchecked Sendable {
    private let label: String
    private let total: Int
    private let isVisible: Bool
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private let start = Date()
    private lazy var lastDraw = start
    private let lock = NSLock()
    private var done = 0

    init(label: String, total: Int, isVisible: Bool) {
        self.label = label
        self.total = max(total, 1)
        // A few small files need no progress line.
        self.isVisible = isVisible && total >= 10_000_000
    }

    /// Shows `done` bytes of the total.
    func update(_ done: Int) {
        guard isVisible else { return }
        lock.lock()
        defer { lock.unlock() }
        self.done = done
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= (isTerminal ? 0.1 : 10) else { return }
        lastDraw = now
        draw(now)
    }

    /// Draws the final state and ends the line.
    func finish() {
        guard isVisible else { return }
        lock.lock()
        defer { lock.unlock() }
        draw(Date())
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    private func draw(_ now: Date) {
        let elapsed = max(now.timeIntervalSince(start), 1e-3)
        let rate = Double(done) / elapsed
        let left = done >= total ? "done" : rate > 0 ? durationText(Double(total - done) / rate) + " left" : "time left unknown"
        let text = "\(label) " + String(format: "%3.0f%%", 100 * Double(done) / Double(total))
            + " \(Self.bytes(done))/\(Self.bytes(total)) \(Self.bytes(Int(rate)))/s, \(left)"
        FileHandle.standardError.write(Data((isTerminal ? "\r" + text + "\u{1B}[K" : text + "\n").utf8))
    }

    /// A byte count in MB or GB (decimal, as the Hub shows sizes).
    static func bytes(_ count: Int) -> String {
        count >= 1_000_000_000 ? String(format: "%.2f GB", Double(count) / 1e9) : String(format: "%.1f MB", Double(count) / 1e6)
    }
}
