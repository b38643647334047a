/// How much of a set of examples was cut to fit the context: how many examples, and how much of each was lost.
package struct TruncationSummary: Sendable, Equatable, CustomStringConvertible {
    /// The examples in the set.
    package let total: Int
    /// The fraction of tokens lost by each example that lost any (its longest row's, for examples of several rows),
    /// in increasing order.
    package let lostFractions: [Double]

    /// The summary of examples that lost these fractions of their tokens (0: nothing cut).
    package init(lostFractions fractions: [Double]) {
        total = fractions.count
        lostFractions = fractions.filter { $0 > 0 }.sorted()
    }

    /// How many examples were cut.
    package var count: Int { lostFractions.count }

    /// "none of 1,000", or "812 of 1,000 (81%), losing a median 38% of their tokens, at most 91%".
    package var description: String {
        guard let largest = lostFractions.last else { return "none of \(total)" }
        func percent(_ x: Double) -> String { "\(Int((x * 100).rounded()))%" }
        let middle = lostFractions.count / 2
        let median = lostFractions.count % 2 == 1 ? lostFractions[middle] : (lostFractions[middle - 1] + lostFractions[middle]) / 2
        return "\(count) of \(total) (\(percent(Double(count) / Double(total)))), losing a median \(percent(median)) of their tokens, at most \(percent(largest))"
    }
}
