/// The element type matrix products read their inputs in. Accumulation, results and every other operation stay
/// fp32 (mixed precision).
public enum ProductPrecision: String, CaseIterable, Sendable, Codable {
    case float32 = "fp32"
    case bfloat16 = "bf16"

    /// bf16 where this machine multiplies bf16 natively (AVX512-BF16 or AMX through oneDNN), fp32 elsewhere.
    public static var machineDefault: ProductPrecision { BLAS.nativeBFloat16 ? .bfloat16 : .float32 }
}
