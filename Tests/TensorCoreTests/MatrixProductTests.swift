import GPTUtilities
import GradientChecking
import TensorCore
import XCTest

/// Matrix products (every transpose, strides, alpha and beta, fp32 and bf16 inputs) against a plain triple loop, and
/// bf16 rounding against its definition.
final class MatrixProductTests: XCTestCase {
    /// C = alpha · op(A) · op(B) + beta · C in double precision.
    func reference(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ a: [Float], _ lda: Int,
                   _ b: [Float], _ ldb: Int, _ beta: Float, _ c: [Float], _ ldc: Int) -> [Float] {
        var out = c
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    s += Double(ta ? a[p * lda + i] : a[i * lda + p]) * Double(tb ? b[j * ldb + p] : b[p * ldb + j])
                }
                out[i * ldc + j] = Float(Double(alpha) * s + Double(beta) * Double(c[i * ldc + j]))
            }
        }
        return out
    }

    /// A server meets a new product shape with every prompt length: the compiled products a thread keeps stay within
    /// their bound, and products whose kernels were evicted are still right when they come back.
    func testCompiledProductsStayBoundedAcrossManyShapes() throws {
        let capacity = BLAS.cachedProductKernels.capacity
        try XCTSkipIf(capacity == 0, "products do not run on oneDNN here")
        var random = SeededRandom(seed: 9)
        let (n, k) = (8, 8)
        let b = (0..<(k * n)).map { _ in random.nextFloat() - 0.5 }
        // Shapes small enough to run on this thread (BLAS.gemm splits larger ones across the worker pool).
        for round in 0..<2 {
            for m in 1...(capacity + capacity / 2) {
                let a = (0..<(m * k)).map { _ in random.nextFloat() - 0.5 }
                var c = [Float](repeating: 0, count: m * n)
                BLAS.gemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
                let expected = reference(false, false, m, n, k, 1, a, k, b, n, 0, [Float](repeating: 0, count: m * n), n)
                for (x, y) in zip(c, expected) where abs(x - y) > 1e-5 {
                    XCTFail("round \(round), m \(m): \(x) against \(y)")
                    return
                }
                XCTAssertLessThanOrEqual(BLAS.cachedProductKernels.count, capacity)
            }
        }
    }

    func testEveryTransposeStrideAndScalingInBothPrecisions() {
        var random = SeededRandom(seed: 5)
        // Shapes include ones that BLAS.gemm splits across cores (m·n·k ≥ 2¹⁸) along rows and along columns.
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 33, 19), (64, 80, 96), (40, 300, 64)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (1, 0.25)] {
                    let lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 1
                    let a = (0..<((ta ? k : m) * lda)).map { _ in random.nextFloat() - 0.5 }
                    let b = (0..<((tb ? n : k) * ldb)).map { _ in random.nextFloat() - 0.5 }
                    let c = (0..<(m * ldc)).map { _ in random.nextFloat() - 0.5 }
                    var got = c
                    got.withUnsafeMutableBufferPointer { out in
                        BLAS.gemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b,
                                  ldb: ldb, beta: beta, c: out.baseAddress!, ldc: ldc)
                    }
                    assertClose(got, reference(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), 1e-4, "fp32 \(m)×\(n)×\(k) \(ta) \(tb)")

                    // bf16 inputs: the exact product of the rounded inputs, accumulated in fp32.
                    let a16 = a.map(BFloat16.init), b16 = b.map(BFloat16.init)
                    var got16 = c
                    got16.withUnsafeMutableBufferPointer { out in
                        BLAS.gemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: alpha, a: a16, lda: lda, b: b16,
                                  ldb: ldb, beta: beta, c: out.baseAddress!, ldc: ldc)
                    }
                    let rounded = reference(ta, tb, m, n, k, alpha, a16.map(\.float), lda, b16.map(\.float), ldb, beta, c, ldc)
                    assertClose(got16, rounded, 1e-4, "bf16 \(m)×\(n)×\(k) \(ta) \(tb)")
                }
            }
        }
    }

    func testProductsFromManyThreadsAtOnce() {
        // Attention runs one product per head on every core; each thread keeps its own primitives.
        let size = 48
        var random = SeededRandom(seed: 6)
        let a = (0..<(size * size)).map { _ in random.nextFloat() }, b = (0..<(size * size)).map { _ in random.nextFloat() }
        let expected = reference(false, true, size, size, size, 1, a, size, b, size, 0, [Float](repeating: 0, count: size * size), size)
        let results = Tensor(shape: [64, size * size])
        Parallel.forEach(64, costPerItem: 1 << 20) { range in
            for t in range {
                BLAS.gemm(transposeB: true, m: size, n: size, k: size, a: a, lda: size, b: b, ldb: size,
                          c: results.pointer + t * size * size, ldc: size)
            }
        }
        for t in 0..<64 { assertClose(Array(results.scalars[(t * size * size)..<((t + 1) * size * size)]), expected, 1e-4, "task \(t)") }
    }

    /// Items of unequal cost are split where the running cost reaches each core's share: every item once, and each
    /// core's work within one item of the others'.
    func testUnequalItemsAreSplitByCost() {
        let saved = Parallel.threadCount
        defer { Parallel.threadCount = saved }
        let cost = { (i: Int) in (i + 1) * 100_000 }, count = 100, total = (0..<count).map(cost).reduce(0, +)
        for threads in [1, 2, 3] {
            Parallel.threadCount = threads
            let visits = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            let work = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
            defer { visits.deallocate(); work.deallocate() }
            visits.initialize(repeating: 0)
            work.initialize(repeating: 0)
            Parallel.forEach(count, cost: cost) { range in
                for i in range { visits[i] += 1 }
                work[range.lowerBound] = range.map(cost).reduce(0, +)  // each range's cost, at its first item
            }
            XCTAssertEqual(Array(visits), [Int](repeating: 1, count: count), "\(threads) threads")
            let shares = work.filter { $0 > 0 }
            XCTAssertEqual(shares.count, threads)
            for share in shares { XCTAssertLessThanOrEqual(abs(share - total / threads), cost(count - 1), "\(threads) threads: \(shares)") }
        }
    }

    func testBFloat16RoundsToNearestEven() {
        XCTAssertEqual(BFloat16(1).bitPattern, 0x3F80)
        XCTAssertEqual(BFloat16(Float(bitPattern: 0x3F80_8000)).bitPattern, 0x3F80)  // tie, even below
        XCTAssertEqual(BFloat16(Float(bitPattern: 0x3F81_8000)).bitPattern, 0x3F82)  // tie, even above
        XCTAssertEqual(BFloat16(Float(bitPattern: 0x3F80_8001)).bitPattern, 0x3F81)  // above the tie
        XCTAssertEqual(BFloat16(Float(bitPattern: 0x7F7F_FFFF)).bitPattern, 0x7F80)  // overflows to infinity
        XCTAssertEqual(BFloat16(-Float.infinity).bitPattern, 0xFF80)
        XCTAssertTrue(BFloat16(Float.nan).float.isNaN)
        XCTAssertTrue(BFloat16(Float(bitPattern: 0x7F80_0001)).float.isNaN)  // a NaN that naive rounding makes infinite
        // The vector conversion agrees with the scalar one on every lane, including the tails.
        var random = SeededRandom(seed: 7)
        let values = (0..<1000).map { i in i % 97 == 0 ? Float.nan : (random.nextFloat() - 0.5) * 1000 }
        let rounded = BFloat16Tensor(rounding: Tensor(shape: [values.count], values: values))
        for (i, v) in values.enumerated() {
            let expected = BFloat16(v)
            XCTAssertEqual(rounded.pointer[i].bitPattern, expected.bitPattern, "element \(i)")
            if !v.isNaN { XCTAssertLessThanOrEqual(abs(expected.float - v), abs(v) / 256) }
        }
        XCTAssertEqual(rounded.widened().scalars.map(\.bitPattern), values.map { BFloat16($0).float.bitPattern })
    }

    func testLinearGradientsUnderBFloat16() {
        for (rows, inputs, outputs) in [(1, 3, 5), (7, 19, 33), (24, 64, 48)] {
            checkGradients([randomTensor([rows, inputs], seed: 1), randomTensor([inputs, outputs], seed: 2),
                            randomTensor([outputs], seed: 3)], tolerance: 3e-2, precision: .bfloat16) { t, v in
                t.linear(v[0], weight: v[1], bias: v[2])
            }
            checkGradients([randomTensor([rows, inputs], seed: 4), randomTensor([outputs, inputs], seed: 5)],
                           tolerance: 3e-2, precision: .bfloat16) { t, v in
                t.linear(v[0], weight: v[1], transposedWeight: true)
            }
        }
    }

    func assertClose(_ got: [Float], _ expected: [Float], _ tolerance: Float, _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        let worst = zip(got, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, tolerance, what, file: file, line: line)
    }
}
