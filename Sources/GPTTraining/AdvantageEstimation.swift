import Foundation

/// Generalised advantage estimation (Schulman et al. 2016) over one response, computed backward:
/// δ_t = r_t + γ·V_{t+1} − V_t (V after the last token is 0), A_t = δ_t + γλ·A_{t+1}; the returns the value head
/// learns are A_t + V_t.
package enum AdvantageEstimation {
    package static func generalized(rewards: [Float], values: [Float], gamma: Float, lambda: Float) -> (advantages: [Float], returns: [Float]) {
        precondition(rewards.count == values.count, "one value per reward")
        var advantages = [Float](repeating: 0, count: rewards.count)
        var next: Float = 0, nextValue: Float = 0
        for t in stride(from: rewards.count - 1, through: 0, by: -1) {
            let delta = rewards[t] + gamma * nextValue - values[t]
            next = delta + gamma * lambda * next
            advantages[t] = next
            nextValue = values[t]
        }
        return (advantages, zip(advantages, values).map { $0 + $1 })
    }

    /// `values` shifted to mean 0 and scaled to standard deviation 1 (unbiased variance, as TRL's `whiten`); with
    /// `keepMean`, the mean is added back.
    package static func whitened(_ values: [Float], keepMean: Bool = false) -> [Float] {
        guard values.count > 1 else { return values }
        let mean = values.reduce(0, +) / Float(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(values.count - 1)
        let scale = 1 / (variance + 1e-8).squareRoot()
        return values.map { ($0 - mean) * scale + (keepMean ? mean : 0) }
    }
}
