import Foundation
import GPTUtilities

/// The layout of attention rows that the position-dependent kernels below read: each row holds the queries of
/// `heads` heads, then the keys and the values of `keyValueHeads` heads, each head `headWidth` wide.
package struct AttentionRowLayout: Equatable, Sendable {
    /// Query heads.
    package var heads: Int
    /// Key and value heads (fewer than `heads` in multi-query and grouped-query attention).
    package var keyValueHeads: Int
    /// Width of every head.
    package var headWidth: Int

    package init(heads: Int, keyValueHeads: Int, headWidth: Int) {
        self.heads = heads
        self.keyValueHeads = keyValueHeads
        self.headWidth = headWidth
    }

    /// Width of one row: queries, keys and values.
    package var rowWidth: Int { (heads + 2 * keyValueHeads) * headWidth }
}

/// The cosines and sines of rotary embedding's angles p·base^(−2j/r) for every position p of a context and every
/// pair j < r/2 (r the rotary dimensions), computed once for a model, as transformers computes them: inverse
/// frequencies in float32, then the float32 product with the position.
package final class RotaryTable: @unchecked Sendable {
    /// The leading dimensions of a head that turn.
    package let dimensions: Int
    /// Positions covered: 0 ..< length.
    package let length: Int
    /// cos then sin, each `[length, dimensions / 2]`.
    private let values: Tensor

    package init(dimensions: Int, base: Float, length: Int) {
        precondition(dimensions > 0 && dimensions % 2 == 0 && length > 0, "rotary table of \(dimensions) dimensions, \(length) positions")
        self.dimensions = dimensions
        self.length = length
        let half = dimensions / 2
        let inverseFrequencies = (0..<half).map { Float(1 / pow(Double(base), Double(2 * $0) / Double(dimensions))) }
        values = Tensor(uninitializedShape: [2, length, half])
        for p in 0..<length {
            for j in 0..<half {
                let angle = Float(p) * inverseFrequencies[j]
                values.pointer[p * half + j] = cos(angle)
                values.pointer[(length + p) * half + j] = sin(angle)
            }
        }
    }

    /// The cosines of position p's angles start at `cosines + p * dimensions / 2`.
    var cosines: UnsafePointer<Float> { UnsafePointer(values.pointer) }
    /// The sines of position p's angles start at `sines + p * dimensions / 2`.
    var sines: UnsafePointer<Float> { UnsafePointer(values.pointer + length * dimensions / 2) }
}

extension Tape {
    /// Rotary position embedding (Su et al., RoFormer) of the queries and keys in `qkv` (rows laid out as `layout`
    /// says; values pass unchanged), in GPT-NeoX's layout: in each query and key head, dimensions j and j + r/2 for
    /// j < r/2 (r = `table.dimensions`, the first r of the head) turn by the table's angle for the row's position in
    /// `positions`; the head's other dimensions pass unchanged. The gradient turns back by the same angles.
    package func rotary(_ qkv: Variable, positions: [Int], layout: AttentionRowLayout, table: RotaryTable) -> Variable {
        let rowWidth = layout.rowWidth, half = table.dimensions / 2
        precondition(qkv.value.count == positions.count * rowWidth, "rotary: \(qkv.shape) is not \(positions.count) rows of \(rowWidth)")
        precondition(table.dimensions <= layout.headWidth, "rotary: \(table.dimensions) dimensions in heads of \(layout.headWidth)")
        precondition(positions.allSatisfy { (0..<table.length).contains($0) }, "rotary: a position is outside 0..<\(table.length)")
        let cosines = table.cosines, sines = table.sines
        let rotatedHeads = layout.heads + layout.keyValueHeads, d = layout.headWidth
        /// `source`'s rows (of `rowWidth`) with their rotated pairs turned by +angle (`sign` 1) or −angle (−1), written
        /// to `target` or, with `accumulate`, added to it.
        func turn(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, sign: Float, accumulate: Bool) {
            Parallel.forEach(positions.count, costPerItem: rowWidth) { rows in
                let scratch = accumulate ? UnsafeMutablePointer<Float>.allocate(capacity: rowWidth) : nil
                defer { scratch?.deallocate() }
                for r in rows {
                    let from = source + r * rowWidth, to = scratch ?? target + r * rowWidth
                    to.update(from: from, count: rowWidth)
                    let angles = positions[r] * half
                    for h in 0..<rotatedHeads {
                        let x = from + h * d, y = to + h * d
                        for j in 0..<half {
                            let c = cosines[angles + j], s = sign * sines[angles + j]
                            y[j] = x[j] * c - x[j + half] * s
                            y[j + half] = x[j + half] * c + x[j] * s
                        }
                    }
                    if let scratch { (target + r * rowWidth).axpy(1, scratch, rowWidth) }
                }
            }
        }
        let y = Tensor(uninitializedShape: qkv.shape)
        turn(qkv.value.pointer, into: y.pointer, sign: 1, accumulate: false)
        let out = output(y, inputs: [qkv])
        record(out) {
            let (g, accumulate) = qkv.gradientTarget()
            // The table's pointers are read through `turn`: the table must live as long as this step.
            withExtendedLifetime(table) { turn(out.grad!.pointer, into: g.pointer, sign: -1, accumulate: accumulate) }
        }
        return out
    }

    /// The rows of `qkv` (laid out as `layout`) with every key and value head repeated for the query heads that
    /// share it (heads h·g ..< (h+1)·g share key/value head h, g = heads / key-value heads): rows of equal numbers of
    /// query, key and value heads, which the attention kernels read. The gradient of a shared head is the sum of
    /// its copies'.
    package func repeatingKeyValueHeads(_ qkv: Variable, layout: AttentionRowLayout) -> Variable {
        let heads = layout.heads, d = layout.headWidth, group = heads / layout.keyValueHeads
        precondition(heads % layout.keyValueHeads == 0, "\(heads) query heads do not share \(layout.keyValueHeads) key/value heads evenly")
        let inWidth = layout.rowWidth, outWidth = 3 * heads * d, width = heads * d
        let rows = qkv.value.count / inWidth
        let y = Tensor(uninitializedShape: Array(qkv.shape.dropLast()) + [outWidth])
        let x = qkv.value.pointer, yp = y.pointer
        Parallel.forEach(rows, costPerItem: outWidth) { range in
            for r in range {
                let from = x + r * inWidth, to = yp + r * outWidth
                to.update(from: from, count: width)
                for part in 1...2 {
                    let source = from + width + (part - 1) * layout.keyValueHeads * d
                    for h in 0..<heads { (to + part * width + h * d).update(from: source + (h / group) * d, count: d) }
                }
            }
        }
        let out = output(y, inputs: [qkv])
        record(out) {
            let (g, accumulate) = qkv.gradientTarget()
            let dy = out.grad!.pointer, gp = g.pointer
            Parallel.forEach(rows, costPerItem: outWidth) { range in
                for r in range {
                    let to = gp + r * inWidth, from = dy + r * outWidth
                    if !accumulate { to.update(repeating: 0, count: inWidth) }
                    to.axpy(1, from, width)
                    for part in 1...2 {
                        let target = to + width + (part - 1) * layout.keyValueHeads * d
                        for h in 0..<heads { (target + (h / group) * d).axpy(1, from + part * width + h * d, d) }
                    }
                }
            }
        }
        return out
    }
}
