import Foundation
import TensorCore
import XCTest

/// The vectorised transcendental functions against libm over their useful range.
final class VectorMathTests: XCTestCase {
    func testExpTanhErfMatchLibm() {
        var x: Float = -90
        while x <= 88 {
            let e = VectorMath.exp(x), reference = Foundation.exp(x)
            XCTAssertLessThanOrEqual(abs(e - reference), 3e-7 * reference + 2e-38, "exp(\(x)) = \(e), libm \(reference)")
            if abs(x) < 30 {
                XCTAssertEqual(VectorMath.tanh(x), Foundation.tanh(x), accuracy: 2e-7, "tanh(\(x))")
                XCTAssertEqual(VectorMath.erf(x), Foundation.erf(x), accuracy: 5e-7, "erf(\(x))")
            }
            x += 0.037
        }
        XCTAssertEqual(VectorMath.exp(-Float.infinity), 0)
    }
}
