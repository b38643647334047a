import GPTUtilities

extension Tape {
    /// Inverted dropout: each element is zeroed with `probability` and the rest scaled by 1 / (1 − probability).
    /// Identity when `probability` is 0 or the tape is not recording (inference).
    package func dropout(_ x: Variable, probability: Float, random: inout SeededRandom) -> Variable {
        precondition(probability >= 0 && probability < 1, "dropout probability must be in [0, 1), got \(probability)")
        guard probability > 0, isRecording else { return x }
        let keep = 1 / (1 - probability)
        let mask = Tensor(uninitializedShape: x.shape)
        for i in 0..<mask.count { mask.pointer[i] = random.nextFloat() < probability ? 0 : keep }
        let y = Tensor(uninitializedShape: x.shape)
        let xp = x.value.pointer, mp = mask.pointer, yp = y.pointer
        forEachBlock(y.count) { i, lanes in store(load(xp + i, lanes) * load(mp + i, lanes), yp + i, lanes) }
        let out = output(y, inputs: [x])
        record(out) {
            let mp = mask.pointer  // keeps the mask alive until backward
            let (g, accumulate) = x.gradientTarget()
            let dy = out.grad!.pointer, d = g.pointer
            forEachBlock(y.count) { i, lanes in
                let v = load(dy + i, lanes) * load(mp + i, lanes)
                store(accumulate ? load(d + i, lanes) + v : v, d + i, lanes)
            }
        }
        return out
    }
}
