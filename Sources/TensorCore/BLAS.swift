#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif
import Foundation

/// The one interface to the platform's tuned BLAS (OpenBLAS on Linux, Accelerate on macOS). Row-major throughout.
public enum BLAS {
    /// C = alpha · op(A) · op(B) + beta · C, with op(X) = Xᵀ when the matching `transpose` flag is set.
    /// op(A) is m×k, op(B) is k×n, C is m×n; `lda`, `ldb`, `ldc` are the row strides as stored.
    @inline(__always)
    public static func gemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        // Split the product across cores here rather than in the BLAS: one thread pool for the whole program, so
        // the BLAS's own workers never spin against the kernels' threads.
        func product(_ m: Int, _ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>) {
            cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
        let tasks = min(Parallel.threadCount, max(1, m * n * k / minimumSplitWork))
        guard tasks > 1, splitting else { return product(m, n, a, b, c) }
        // Each task takes a share of the rows of C (or of its columns, when C is wide).
        Parallel.forEach(tasks, costPerItem: Parallel.minimumParallelWork) { r in
            for t in r {
                if m >= n {
                    let lo = m * t / tasks, hi = m * (t + 1) / tasks
                    product(hi - lo, n, transposeA ? a + lo : a + lo * lda, b, c + lo * ldc)
                } else {
                    let lo = n * t / tasks, hi = n * (t + 1) / tasks
                    product(m, hi - lo, a, transposeB ? b + lo * ldb : b + lo, c + lo)
                }
            }
        }
    }

    nonisolated(unsafe) static var splitting: Bool = {
        let mode = ProcessInfo.processInfo.environment["SWIFTGPT_BLAS_SPLIT"] ?? "1"
        #if !canImport(Accelerate)
        if mode == "1" { openblas_set_num_threads(1) }
        #endif
        return mode == "1"
    }()
    static let minimumSplitWork = 1 << 18

    /// Runs `body` with the BLAS limited to the calling thread, so that independent small products can be spread
    /// over cores by the caller instead (e.g. one attention head per core).
    public static func singleThreaded<R>(_ body: () throws -> R) rethrows -> R {
        #if canImport(Accelerate)
        return try body()
        #else
        if splitting { return try body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(Parallel.threadCount)) }
        return try body()
        #endif
    }
}
