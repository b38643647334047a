import Foundation
import GPTModels
import GPTUtilities
import TensorCore

/// Speed measurements of the kernels and model on this machine (release builds only give meaningful figures).
package enum Benchmark {
    /// Median of a non-empty list.
    package static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Seconds taken by `body`.
    package static func time(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Peak matrix-product rate of the BLAS on all cores with inputs of `precision` (fp32, or bf16 accumulated in fp32:
    /// what training's products use), in GFLOP/s (best of several 2048³ products).
    package static func peakGEMM(precision: ProductPrecision = .float32, size n: Int = 2048, repetitions: Int = 5) -> Double {
        var random = SeededRandom(seed: 1)
        let a = Tensor.normal(shape: [n, n], using: &random), b = Tensor.normal(shape: [n, n], using: &random)
        let c = Tensor(shape: [n, n])
        var best = Double.infinity
        switch precision {
        case .float32:
            for _ in 0..<repetitions {
                best = min(best, time { BLAS.gemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n) })
            }
        case .bfloat16:
            var a16 = [BFloat16](repeating: BFloat16(bitPattern: 0), count: n * n), b16 = a16
            BFloat16Conversion.round(a.pointer, into: &a16, count: n * n)
            BFloat16Conversion.round(b.pointer, into: &b16, count: n * n)
            for _ in 0..<repetitions {
                best = min(best, time { BLAS.gemm(m: n, n: n, k: n, a: a16, lda: n, b: b16, ldb: n, c: c.pointer, ldc: n) })
            }
        }
        return 2 * Double(n * n * n) / best / 1e9
    }

    /// Floating-point operations of one training step (forward + backward) over `tokens` tokens of sequences of
    /// `length`: 6 per weight per token for every matrix product (output layer included), plus 12·L·T·C per token
    /// for the attention products.
    package static func trainingFLOPs(_ c: GPTConfig, tokens: Int, length: Int) -> Double {
        let perLayer = c.embeddingWidth * 3 * c.embeddingWidth + c.embeddingWidth * c.embeddingWidth + 2 * c.embeddingWidth * c.mlpWidth
        let matrixWeights = Double(c.layerCount * perLayer + c.vocabularySize * c.embeddingWidth)
        let attention = 12 * Double(c.layerCount * length * c.embeddingWidth)
        return Double(tokens) * (6 * matrixWeights + attention)
    }

    /// Peak resident memory of this process so far, in bytes.
    package static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if os(macOS)
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)
        #else
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
        #endif
    }
}
