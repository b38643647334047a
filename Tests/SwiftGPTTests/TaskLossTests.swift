import Foundation
import GradientChecking
import SwiftGPT
import XCTest

/// Losses of the task heads: regression and multiple choice.
final class TaskLossTests: XCTestCase {
    func testMeanSquaredError() {
        let x = Tensor(shape: [3, 1], values: [1, -2, 0.5])
        XCTAssertEqual(Tape(recording: false).meanSquaredError(Variable(x), targets: [0, 1, 0.5]).value[flat: 0], (1 + 9 + 0) / 3, accuracy: 1e-6)
        checkGradients([randomTensor([5, 1], seed: 30)]) { t, v in t.meanSquaredError(v[0], targets: [0.5, -1, 2, 0, 3]) }
    }

    func testGroupedCrossEntropyMatchesPerGroupSoftmax() {
        let scores: [Float] = [0.3, -1.2, 2.0, 0.7, 0.1]
        let groups = [0..<2, 2..<5]
        let loss = Tape(recording: false).groupedCrossEntropy(Variable(Tensor(shape: [5], values: scores)), groups: groups, targets: [1, 2])
        func negativeLogSoftmax(_ s: [Float], _ t: Int) -> Double {
            let total = s.map { exp(Double($0)) }.reduce(0, +)
            return -(Double(s[t]) - log(total))
        }
        let expected = (negativeLogSoftmax([0.3, -1.2], 1) + negativeLogSoftmax([2.0, 0.7, 0.1], 2)) / 2
        XCTAssertEqual(Double(loss.value[flat: 0]), expected, accuracy: 1e-6)
        checkGradients([randomTensor([7], seed: 31)], step: 1e-2) { t, v in
            t.groupedCrossEntropy(v[0], groups: [0..<3, 3..<4, 4..<7], targets: [2, 0, 1])
        }
    }
}
