#if canImport(Accelerate)
import Accelerate
#else
import CBLAS
#endif
import Foundation
import GPTUtilities

/// The one interface to matrix products: oneDNN on Linux (fp32 and bf16 inputs), Accelerate on macOS, OpenBLAS
/// where oneDNN is absent. Row-major throughout; the result is always fp32.
package enum BLAS {
    /// C = alpha · op(A) · op(B) + beta · C, with op(X) = Xᵀ when the matching `transpose` flag is set.
    /// op(A) is m×k, op(B) is k×n, C is m×n; `lda`, `ldb`, `ldc` are the row strides as stored.
    @inline(__always)
    package static func gemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let shape = Shape(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                          alpha: alpha, beta: beta)
        split(shape, a: UnsafeRawPointer(a), b: UnsafeRawPointer(b), c: c, elementSize: 4) { s, a, b, c in
            if engine == .oneDNN {
                multiplyOnOneDNN(s, type: .float32, a: a, b: b, c: c)
            } else {
                multiplyOnPlatformBLAS(s, a: a.assumingMemoryBound(to: Float.self), b: b.assumingMemoryBound(to: Float.self), c: c)
            }
        }
    }

    /// The same product with bfloat16 inputs, accumulated in fp32. Where the CPU has no native bf16 products the
    /// inputs are widened (exactly) and multiplied in fp32, which gives the same result up to summation order.
    @inline(__always)
    package static func gemm(
        transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<BFloat16>, lda: Int, b: UnsafePointer<BFloat16>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let shape = Shape(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                          alpha: alpha, beta: beta)
        if !nativeBFloat16 { return widenedProduct(shape, a: a, b: b, c: c) }
        split(shape, a: UnsafeRawPointer(a), b: UnsafeRawPointer(b), c: c, elementSize: 2) { s, a, b, c in
            multiplyOnOneDNN(s, type: .bfloat16, a: a, b: b, c: c)
        }
    }

    /// Whether bf16 products run natively on this machine (oneDNN on a CPU with AVX512-BF16 or AMX).
    package static var nativeBFloat16: Bool {
        #if canImport(CDNNL)
        return engine == .oneDNN && OneDNN.supportsBFloat16
        #else
        return false
        #endif
    }

    /// How many compiled products (oneDNN primitives) the calling thread keeps, and the most it keeps: a product of
    /// a new shape beyond that evicts the least recently used ones (0 and 0 without oneDNN).
    package static var cachedProductKernels: (count: Int, capacity: Int) {
        #if canImport(CDNNL)
        return engine == .oneDNN ? (OneDNN.ThreadState.cachedCount, OneDNN.ThreadState.capacity) : (0, 0)
        #else
        return (0, 0)
        #endif
    }

    /// The engines a product can run on.
    enum Engine { case oneDNN, platformBLAS }

    /// The element types a product's inputs may have.
    enum ElementType: Hashable { case float32, bfloat16 }

    /// oneDNN where it is linked, unless `SWIFTGPT_MATMUL=blas` asks for the platform BLAS.
    static let engine: Engine = {
        #if canImport(CDNNL)
        return ProcessInfo.processInfo.environment["SWIFTGPT_MATMUL"] == "blas" ? .platformBLAS : .oneDNN
        #else
        return .platformBLAS
        #endif
    }()

    /// A product's shape, strides and scaling.
    struct Shape: Hashable {
        var transposeA: Bool, transposeB: Bool
        var m: Int, n: Int, k: Int
        var lda: Int, ldb: Int, ldc: Int
        var alpha: Float, beta: Float
    }

    /// Runs `product` on shares of C across cores (one thread pool for the whole program, so the library's own
    /// threads never spin against the kernels' workers): each task takes a share of the rows of C, or of its
    /// columns when C is wide. Degenerate shapes are settled here.
    @inline(__always)
    static func split(_ s: Shape, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>, elementSize: Int,
                      _ product: (Shape, UnsafeRawPointer, UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void) {
        guard s.m > 0, s.n > 0 else { return }
        if s.k == 0 {
            for i in 0..<s.m { for j in 0..<s.n { c[i * s.ldc + j] = s.beta == 0 ? 0 : s.beta * c[i * s.ldc + j] } }
            return
        }
        let tasks = min(Parallel.threadCount, max(1, s.m * s.n * s.k / minimumSplitWork))
        guard tasks > 1, !WorkerPool.shared.isBusy else { return product(s, a, b, c) }
        Parallel.forEach(tasks, costPerItem: Parallel.minimumParallelWork) { r in
            for t in r {
                var part = s
                if s.m >= s.n {
                    let lo = s.m * t / tasks, hi = s.m * (t + 1) / tasks
                    part.m = hi - lo
                    product(part, a + (s.transposeA ? lo : lo * s.lda) * elementSize, b, c + lo * s.ldc)
                } else {
                    let lo = s.n * t / tasks, hi = s.n * (t + 1) / tasks
                    part.n = hi - lo
                    product(part, a, b + (s.transposeB ? lo * s.ldb : lo) * elementSize, c + lo)
                }
            }
        }
    }
    static let minimumSplitWork = 1 << 18

    @inline(__always)
    static func multiplyOnOneDNN(_ s: Shape, type: ElementType, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>) {
        #if canImport(CDNNL)
        OneDNN.multiply(.init(shape: s, type: type), a: a, b: b, c: c)
        #else
        preconditionFailure("oneDNN is not linked")
        #endif
    }

    @inline(__always)
    static func multiplyOnPlatformBLAS(_ s: Shape, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        _ = singleThreadedPlatformBLAS
        cblas_sgemm(CblasRowMajor, s.transposeA ? CblasTrans : CblasNoTrans, s.transposeB ? CblasTrans : CblasNoTrans,
                    Int32(s.m), Int32(s.n), Int32(s.k), s.alpha, a, Int32(s.lda), b, Int32(s.ldb), s.beta, c, Int32(s.ldc))
    }

    /// The platform BLAS runs on the calling thread only: `split` spreads products over the cores.
    private static let singleThreadedPlatformBLAS: Void = {
        #if !canImport(Accelerate)
        openblas_set_num_threads(1)
        #endif
    }()

    /// A bf16 product without native support: both operands widened to fp32 (exact), then an fp32 product.
    static func widenedProduct(_ s: Shape, a: UnsafePointer<BFloat16>, b: UnsafePointer<BFloat16>, c: UnsafeMutablePointer<Float>) {
        let aCount = (s.transposeA ? s.k - 1 : s.m - 1) * s.lda + (s.transposeA ? s.m : s.k)
        let bCount = (s.transposeB ? s.n - 1 : s.k - 1) * s.ldb + (s.transposeB ? s.k : s.n)
        let wideA = Tensor(uninitializedShape: [aCount]), wideB = Tensor(uninitializedShape: [bCount])
        BFloat16Conversion.widen(a, into: wideA.pointer, count: aCount)
        BFloat16Conversion.widen(b, into: wideB.pointer, count: bCount)
        gemm(transposeA: s.transposeA, transposeB: s.transposeB, m: s.m, n: s.n, k: s.k, alpha: s.alpha, a: wideA.pointer,
             lda: s.lda, b: wideB.pointer, ldb: s.ldb, beta: s.beta, c: c, ldc: s.ldc)
    }
}

/// An element type matrix products read (fp32 or bf16), so that one kernel body serves both precisions.
package protocol ProductElement {
    /// `BLAS.gemm` for inputs of this type.
    static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int)
}

extension Float: ProductElement {
    @inline(__always)
    package static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                  beta: beta, c: c, ldc: ldc)
    }
}

extension BFloat16: ProductElement {
    @inline(__always)
    package static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<BFloat16>, lda: Int,
                            b: UnsafePointer<BFloat16>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                  beta: beta, c: c, ldc: ldc)
    }
}
