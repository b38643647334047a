import GPTUtilities
import TensorCore
import XCTest

/// Compares the tape's gradients of `Σ output ⊙ R` (R random) with central finite differences for every input
/// element (or a sample of them for large inputs). With `precision: .bfloat16` the analytic gradients come from
/// bf16 products and the finite differences from the exact (fp32) function, so the tolerance must allow for bf16's
/// 8-bit mantissa (relative rounding error 2⁻⁹ per input).
package func checkGradients(
    _ inputs: [Tensor], tolerance: Float = 2e-2, step: Float = 1e-2, precision: ProductPrecision = .float32,
    file: StaticString = #filePath, line: UInt = #line,
    _ operation: (Tape, [Variable]) -> Variable
) {
    var random = SeededRandom(seed: 99)
    let variables = inputs.map { Variable($0, requiresGrad: true) }
    let tape = Tape(precision: precision)
    let out = operation(tape, variables)
    let weights = Tensor.normal(shape: out.shape, using: &random)
    tape.backward(from: out, seed: weights)

    func objective() -> Double {
        let y = operation(Tape(recording: false), inputs.map { Variable($0) }).value
        var s = 0.0
        for i in 0..<y.count { s += Double(y[flat: i]) * Double(weights[flat: i]) }
        return s
    }
    for (k, x) in inputs.enumerated() {
        guard let grad = variables[k].grad else { XCTFail("input \(k) got no gradient", file: file, line: line); continue }
        let indices = x.count <= 64 ? Array(0..<x.count) : (0..<64).map { _ in random.nextInt(below: x.count) }
        for i in indices {
            let saved = x[flat: i]
            x[flat: i] = saved + step
            let plus = objective()
            x[flat: i] = saved - step
            let minus = objective()
            x[flat: i] = saved
            let numeric = Float((plus - minus) / Double(2 * step))
            let analytic = grad[flat: i]
            let scale = max(1, abs(numeric), abs(analytic))
            XCTAssertLessThanOrEqual(abs(numeric - analytic) / scale, tolerance,
                                     "input \(k) element \(i): analytic \(analytic), numeric \(numeric)", file: file, line: line)
        }
    }
}

package func randomTensor(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
    var random = SeededRandom(seed: seed)
    return Tensor.normal(shape: shape, std: std, using: &random)
}
