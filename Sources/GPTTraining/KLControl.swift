import Foundation

/// How the divergence of the policy from the reference policy is estimated at each sampled token, from the two
/// log-probabilities of the token (Schulman, "Approximating KL divergence", 2020).
public enum KLEstimator: String, Codable, Sendable, CaseIterable {
    /// log π − log π_ref: unbiased, but negative on some tokens.
    case k1
    /// (r − 1) − log r with r = π_ref / π: unbiased and never negative, lower variance.
    case k3

    package func estimate(logProbability: Float, referenceLogProbability: Float) -> Float {
        switch self {
        case .k1: return logProbability - referenceLogProbability
        case .k3:
            let logRatio = referenceLogProbability - logProbability
            return (exp(logRatio) - 1) - logRatio
        }
    }
}

/// The KL penalty's coefficient β: fixed, or adapted after every rollout by Ziegler et al.'s proportional
/// controller (used by InstructGPT): e = clip(KL / target − 1, −0.2, 0.2), β ← β·(1 + e·n / horizon), where KL is the
/// rollout's mean summed divergence per response and n the number of responses.
package struct KLController: Codable, Equatable, Sendable {
    package private(set) var coefficient: Float
    /// The KL per response to steer toward; nil keeps β fixed.
    package let target: Float?
    package let horizon: Float

    package init(coefficient: Float, target: Float?, horizon: Float) {
        self.coefficient = coefficient
        self.target = target
        self.horizon = horizon
    }

    package mutating func update(observedKL: Float, responses: Int) {
        guard let target else { return }
        let error = min(max(observedKL / target - 1, -0.2), 0.2)
        coefficient *= 1 + error * Float(responses) / horizon
    }
}
