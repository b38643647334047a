import Foundation
import TensorCore
import Tokenizers

/// A class index (classification, entailment, paraphrase, the right choice) or a real value (regression).
package enum TaskLabel: Equatable, Sendable {
    case index(Int)
    case value(Float)

    /// The label as a regression target (a class index as its number).
    package var target: Float {
        switch self {
        case .index(let i): return Float(i)
        case .value(let v): return v
        }
    }

    /// The class index, or nil for a real value.
    package var classIndex: Int? {
        if case .index(let i) = self { return i }
        return nil
    }
}

/// A task input as token sequences (one per row the model runs), with its label.
package struct EncodedExample: Equatable, Sendable {
    package var rows: [[Int32]]
    package var label: TaskLabel?
    /// The largest fraction of a row's tokens cut to fit the context (0 when nothing was).
    package var lostFraction: Double
    /// Whether a text was cut to fit the context.
    package var truncated: Bool { lostFraction > 0 }

    package init(rows: [[Int32]], label: TaskLabel?, lostFraction: Double = 0) {
        self.rows = rows
        self.label = label
        self.lostFraction = lostFraction
    }
}

/// Examples laid out as right-padded rows of equal length: the input of one forward pass.
package struct TaskBatch {
    package let ids: [Int32]
    package let rowCount: Int
    package let length: Int
    /// Each row's real length; the positions after it hold the pad id.
    package let lengths: [Int]
    /// The rows of each example.
    package let exampleRows: [Range<Int>]

    package init(_ examples: some Collection<EncodedExample>, pad: Int32) {
        let rows = examples.flatMap(\.rows)
        length = rows.map(\.count).max() ?? 1
        rowCount = rows.count
        lengths = rows.map(\.count)
        var ids = [Int32](repeating: pad, count: rows.count * length)
        for (r, row) in rows.enumerated() { ids.replaceSubrange((r * length)..<(r * length + row.count), with: row) }
        self.ids = ids
        var ranges: [Range<Int>] = [], next = 0
        for example in examples {
            ranges.append(next..<(next + example.rows.count))
            next += example.rows.count
        }
        exampleRows = ranges
    }

    /// Index, among the real tokens (row after row, padding left out), of each row's last token (its extract token).
    package var lastTokens: [Int] {
        var end = 0
        return lengths.map { end += $0; return end - 1 }
    }

    /// Number of real tokens (padding left out).
    package var tokenCount: Int { lengths.reduce(0, +) }
}
