import GPTUtilities
import GradientChecking
import TensorCore
import XCTest

/// Rotary embedding and repeated key/value heads against direct references, and their gradients against finite
/// differences.
final class RotaryEmbeddingTests: XCTestCase {
    /// Two query heads and one key/value head of width 6, four of whose dimensions turn.
    private let layout = AttentionRowLayout(heads: 2, keyValueHeads: 1, headWidth: 6)

    func testRotaryTurnsEachPairOfQueriesAndKeysByItsAngle() {
        let positions = [0, 3, 7], dimensions = 4, base: Float = 100
        let x = randomTensor([3, layout.rowWidth], seed: 1)
        let table = RotaryTable(dimensions: dimensions, base: base, length: 8)
        let y = Tape(recording: false).rotary(Variable(x), positions: positions, layout: layout, table: table).value
        for (r, p) in positions.enumerated() {
            for column in 0..<layout.rowWidth {
                let head = column / 6, dimension = column % 6
                let index = r * layout.rowWidth + column
                // Values (the last head) and dimensions past the rotary ones pass unchanged.
                guard head < 3, dimension < dimensions else { XCTAssertEqual(y[flat: index], x[flat: index]); continue }
                let j = dimension % 2, partner = dimension < 2 ? index + 2 : index - 2
                let angle = Double(p) * pow(Double(base), -Double(2 * j) / Double(dimensions))
                let expected = dimension < 2
                    ? Double(x[flat: index]) * cos(angle) - Double(x[flat: partner]) * sin(angle)
                    : Double(x[flat: index]) * cos(angle) + Double(x[flat: partner]) * sin(angle)
                XCTAssertEqual(Double(y[flat: index]), expected, accuracy: 1e-5, "row \(r) column \(column)")
            }
        }
    }

    func testRotaryGradients() {
        for (dimensions, positions) in [(2, [5]), (4, [0, 1, 9]), (6, [2, 2])] {
            let table = RotaryTable(dimensions: dimensions, base: 10000, length: 10)
            checkGradients([randomTensor([positions.count, layout.rowWidth], seed: 2)]) { t, v in
                t.rotary(v[0], positions: positions, layout: layout, table: table)
            }
        }
    }

    func testRepeatedKeyValueHeadsCopyTheSharedHeadForEachGroup() {
        let grouped = AttentionRowLayout(heads: 4, keyValueHeads: 2, headWidth: 3)
        let x = randomTensor([2, grouped.rowWidth], seed: 3)
        let y = Tape(recording: false).repeatingKeyValueHeads(Variable(x), layout: grouped).value
        XCTAssertEqual(y.shape, [2, 36])
        for r in 0..<2 {
            let input = Array(x.scalars[(r * 24)..<((r + 1) * 24)]), output = Array(y.scalars[(r * 36)..<((r + 1) * 36)])
            XCTAssertEqual(Array(output[0..<12]), Array(input[0..<12]), "queries unchanged")
            for part in 1...2 {
                for head in 0..<4 {
                    let source = 12 + (part - 1) * 6 + (head / 2) * 3
                    XCTAssertEqual(Array(output[(part * 12 + head * 3)..<(part * 12 + head * 3 + 3)]), Array(input[source..<(source + 3)]))
                }
            }
        }
    }

    func testRepeatedKeyValueHeadsGradients() {
        for rows in [layout, AttentionRowLayout(heads: 4, keyValueHeads: 2, headWidth: 3), AttentionRowLayout(heads: 3, keyValueHeads: 3, headWidth: 2)] {
            checkGradients([randomTensor([3, rows.rowWidth], seed: 4)]) { t, v in t.repeatingKeyValueHeads(v[0], layout: rows) }
        }
    }

    func testGradientsAccumulateIntoAnInputUsedTwice() {
        // q | k | v used by both kernels and a sum: each backward adds to what is there.
        checkGradients([randomTensor([2, layout.rowWidth], seed: 5)]) { t, v in
            let turned = t.rotary(v[0], positions: [1, 4], layout: layout, table: RotaryTable(dimensions: 4, base: 10000, length: 5))
            return t.add(t.repeatingKeyValueHeads(turned, layout: layout), t.repeatingKeyValueHeads(v[0], layout: layout))
        }
    }
}
