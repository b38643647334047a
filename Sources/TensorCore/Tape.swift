/// Records the backward step of every operation in a forward pass, then replays them in reverse.
///
/// Operations are coarse (a whole LayerNorm, a fused attention) and each brings its own hand-written backward,
/// so new heads and losses compose without new backward code. With `recording` off (inference), nothing is kept.
package final class Tape {
    /// Whether backward steps are being recorded.
    package let isRecording: Bool
    /// The element type of matrix-product inputs in the operations recorded here (results stay fp32).
    package let precision: ProductPrecision
    private var backwardSteps: [() -> Void] = []

    /// A tape; pass `recording: false` for inference, where no activations or backward steps are kept, and
    /// `precision: .bfloat16` for bf16 matrix products (mixed precision).
    package init(recording: Bool = true, precision: ProductPrecision = .float32) {
        isRecording = recording
        self.precision = precision
    }

    /// Wraps an operation's result: it needs a gradient when recording and any input needs one.
    @inline(__always)
    package func output(_ value: Tensor, inputs: [Variable]) -> Variable {
        Variable(value, requiresGrad: isRecording && inputs.contains { $0.requiresGrad })
    }

    /// Adds the backward step of an operation whose result is `output`; skipped when `output` needs no gradient.
    @inline(__always)
    package func record(_ output: Variable, _ step: @escaping () -> Void) {
        if output.requiresGrad { backwardSteps.append(step) }
    }

    /// Back-propagates from a scalar `loss` (seeded with d loss / d loss = 1, times `scale`) through every
    /// recorded step, then clears the tape. Leaf gradients add to what they already hold.
    package func backward(from loss: Variable, scale: Float = 1) {
        precondition(loss.value.count == 1, "backward(from:) needs a scalar, got shape \(loss.shape)")
        backward(from: loss, seed: Tensor(shape: loss.shape, values: [scale]))
    }

    /// Back-propagates with `seed` as the gradient of `output`, then clears the tape.
    package func backward(from output: Variable, seed: Tensor) {
        precondition(seed.shape == output.shape, "seed shape \(seed.shape) differs from output shape \(output.shape)")
        guard output.requiresGrad else { backwardSteps.removeAll(); return }
        let (g, accumulate) = output.gradientTarget()
        if accumulate { g.pointer.axpy(1, seed.pointer, g.count) } else { g.assign(seed) }
        // Popping releases each step's saved activations as soon as they are no longer needed.
        while let step = backwardSteps.popLast() { step() }
    }
}
