/// A tensor in a computation recorded on a `Tape`, with the gradient of the final output with respect to it.
package final class Variable: @unchecked Sendable {
    /// The forward value.
    package let value: Tensor
    /// The accumulated gradient, or nil while nothing has flowed back to this variable.
    package internal(set) var grad: Tensor?
    /// Whether gradients are computed for this variable.
    package let requiresGrad: Bool
    /// The value rounded to bfloat16, kept up to date by its owner (a parameter arena refreshes it once per
    /// optimizer step); bf16 products read it instead of rounding `value` again.
    package var bfloat16: BFloat16Tensor?

    /// A constant or a leaf. With `requiresGrad`, a gradient buffer is allocated when the first gradient arrives.
    package init(_ value: Tensor, requiresGrad: Bool = false) {
        self.value = value
        self.requiresGrad = requiresGrad
    }

    /// A trainable leaf whose gradient lives in `grad` (typically a view into a gradient arena).
    /// Gradients add into it until the owner zeroes it.
    package init(_ value: Tensor, grad: Tensor) {
        precondition(value.shape == grad.shape, "gradient shape \(grad.shape) differs from value shape \(value.shape)")
        self.value = value
        self.grad = grad
        self.requiresGrad = true
    }

    /// Shape of the value.
    package var shape: [Int] { value.shape }

    /// The buffer a backward kernel writes this variable's gradient into, and whether it must add to what is there
    /// (true) or may overwrite it (false, on the first gradient to arrive).
    @inline(__always)
    package func gradientTarget() -> (tensor: Tensor, accumulate: Bool) {
        if let g = grad { return (g, true) }
        let g = Tensor(uninitializedShape: value.shape)
        grad = g
        return (g, false)
    }
}
