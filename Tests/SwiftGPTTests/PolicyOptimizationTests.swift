import Foundation
import SwiftGPT
import TensorCore
import XCTest

final class PolicyOptimizationTests: XCTestCase {
    func testGeneralizedAdvantagesMatchAHandComputation() {
        let rewards: [Float] = [0.1, -0.2, 1.0], values: [Float] = [0.5, 0.3, 0.4]
        let (gamma, lambda): (Float, Float) = (0.9, 0.8)
        // δ2 = 1.0 − 0.4 = 0.6; δ1 = −0.2 + 0.9·0.4 − 0.3 = −0.14; δ0 = 0.1 + 0.9·0.3 − 0.5 = −0.13.
        let a2: Float = 0.6, a1: Float = -0.14 + 0.72 * a2, a0: Float = -0.13 + 0.72 * a1
        let (advantages, returns) = AdvantageEstimation.generalized(rewards: rewards, values: values, gamma: gamma, lambda: lambda)
        for (x, y) in zip(advantages, [a0, a1, a2]) { XCTAssertEqual(x, y, accuracy: 1e-6) }
        for (k, r) in returns.enumerated() { XCTAssertEqual(r, advantages[k] + values[k], accuracy: 1e-6) }
        // γ = λ = 1: the advantage is the sum of the rewards to come less the value.
        let (plain, _) = AdvantageEstimation.generalized(rewards: rewards, values: values, gamma: 1, lambda: 1)
        XCTAssertEqual(plain[0], 0.9 - 0.5, accuracy: 1e-6)
        let w = AdvantageEstimation.whitened([1, 2, 3, 4])
        XCTAssertEqual(w.reduce(0, +), 0, accuracy: 1e-6)
        XCTAssertEqual(w[3], 1.5 / (5 as Float / 3).squareRoot(), accuracy: 1e-5)
    }

    func testKLEstimators() {
        let logP: Float = log(0.5), logRef: Float = log(0.2)
        XCTAssertEqual(KLEstimator.k1.estimate(logProbability: logP, referenceLogProbability: logRef), log(2.5), accuracy: 1e-6)
        // k3 = (r − 1) − log r with r = π_ref / π = 0.4.
        XCTAssertEqual(KLEstimator.k3.estimate(logProbability: logP, referenceLogProbability: logRef), (0.4 - 1) - log(0.4), accuracy: 1e-6)
        XCTAssertEqual(KLEstimator.k3.estimate(logProbability: logRef, referenceLogProbability: logRef), 0, accuracy: 1e-7)
        // Over samples from π, both estimate KL(π ‖ π_ref) without bias.
        let p: [Float] = [0.5, 0.3, 0.2], q: [Float] = [0.2, 0.5, 0.3]
        let exact = zip(p, q).map { $0 * log($0 / $1) }.reduce(0, +)
        for estimator in KLEstimator.allCases {
            let expected = zip(p, q).map { $0 * estimator.estimate(logProbability: log($0), referenceLogProbability: log($1)) }.reduce(0, +)
            XCTAssertEqual(expected, exact, accuracy: 1e-6, "\(estimator)")
        }
    }

    func testAdaptiveKLControllerMovesBetaTowardTheTarget() {
        var fixed = KLController(coefficient: 0.1, target: nil, horizon: 100)
        fixed.update(observedKL: 50, responses: 10)
        XCTAssertEqual(fixed.coefficient, 0.1)
        var adaptive = KLController(coefficient: 0.1, target: 6, horizon: 100)
        adaptive.update(observedKL: 7.2, responses: 10)  // error 0.2: β·(1 + 0.2·10/100)
        XCTAssertEqual(adaptive.coefficient, 0.1 * 1.02, accuracy: 1e-7)
        adaptive.update(observedKL: 60, responses: 10)  // clipped to 0.2
        XCTAssertEqual(adaptive.coefficient, 0.1 * 1.02 * 1.02, accuracy: 1e-7)
        adaptive.update(observedKL: 3, responses: 50)  // error −0.2 (clipped from −0.5)
        XCTAssertEqual(adaptive.coefficient, 0.1 * 1.02 * 1.02 * 0.9, accuracy: 1e-7)
    }

    /// The clipped policy loss on one row per case, against the formula: inside the range, beyond it on the side
    /// where clipping binds (no gradient), and beyond it on the side where it does not.
    func testClippedPolicyLossAtAndBeyondTheClipRange() {
        let logits: [Float] = [0.3, -0.2, 1.1, 0.0]
        let logSum = log(logits.map { exp($0) }.reduce(0, +))
        let logP = logits[2] - logSum
        for (ratio, advantage, expected, hasGradient) in [(1.1 as Float, 2 as Float, -2.2 as Float, true), (1.5, 2, -2.4, false),
                                                         (1.5, -1, 1.5, true), (0.5, -1, 0.8, false), (0.5, 1, -0.5, true)] {
            let tape = Tape()
            let x = Variable(Tensor(shape: [1, 4], values: logits), requiresGrad: true)
            let (loss, statistics) = tape.clippedPolicyLoss(x, actions: [2], oldLogProbabilities: [logP - log(ratio)],
                                                            advantages: [advantage], clipRange: 0.2)
            XCTAssertEqual(loss.value[flat: 0], expected, accuracy: 1e-5, "ratio \(ratio), advantage \(advantage)")
            XCTAssertEqual(statistics.clipFraction, hasGradient ? 0 : 1)
            XCTAssertEqual(statistics.approximateKL, 0.5 * log(ratio) * log(ratio), accuracy: 1e-5)
            tape.backward(from: loss)
            let gradientNorm = x.grad!.scalars.map { $0 * $0 }.reduce(0, +)
            XCTAssertEqual(gradientNorm > 0, hasGradient, "ratio \(ratio), advantage \(advantage)")
        }
    }

    func testPolicyAndValueLossGradientsMatchFiniteDifferences() {
        var random = SeededRandom(seed: 4)
        let rows = 5, classes = 7
        let logits = (0..<(rows * classes)).map { _ in 2 * random.nextFloat() - 1 }
        let actions: [Int32] = [1, 6, 0, 3, 3]
        // Old log-probabilities near the current ones, so that some rows are clipped and some not.
        let logSums = (0..<rows).map { r in log(logits[(r * classes)..<((r + 1) * classes)].map { exp($0) }.reduce(0, +)) }
        let old = (0..<rows).map { r in logits[r * classes + Int(actions[r])] - logSums[r] + [0.05, -0.4, 0.3, -0.1, 0.0][r] }
        let advantages: [Float] = [1.0, -0.5, 0.7, -1.2, 0.3]
        func policyLoss(_ values: [Float], gradient: Bool) -> (Float, [Float]) {
            let tape = Tape()
            let x = Variable(Tensor(shape: [rows, classes], values: values), requiresGrad: true)
            let (loss, _) = tape.clippedPolicyLoss(x, actions: actions, oldLogProbabilities: old, advantages: advantages, clipRange: 0.2)
            if gradient { tape.backward(from: loss) }
            return (loss.value[flat: 0], gradient ? x.grad!.scalars : [])
        }
        checkGradient(logits, policyLoss)
        let values: [Float] = [0.5, -0.3, 1.2, 0.0, 0.9], oldValues: [Float] = [0.4, 0.1, 0.8, 0.05, 0.95]
        let returns: [Float] = [1.0, -0.25, 0.2, 0.5, 0.9]
        func valueLoss(_ v: [Float], gradient: Bool) -> (Float, [Float]) {
            let tape = Tape()
            let x = Variable(Tensor(shape: [rows], values: v), requiresGrad: true)
            let (loss, _) = tape.clippedValueLoss(x, oldValues: oldValues, returns: returns, clipRange: 0.2)
            if gradient { tape.backward(from: loss) }
            return (loss.value[flat: 0], gradient ? x.grad!.scalars : [])
        }
        checkGradient(values, valueLoss)
        // The value loss by hand: ½·max((v − R)², (v_clip − R)²), averaged.
        let expected = (0..<rows).map { i -> Float in
            let clipped = oldValues[i] + min(max(values[i] - oldValues[i], -0.2), 0.2)
            return 0.5 * max((values[i] - returns[i]) * (values[i] - returns[i]), (clipped - returns[i]) * (clipped - returns[i]))
        }.reduce(0, +) / Float(rows)
        XCTAssertEqual(valueLoss(values, gradient: false).0, expected, accuracy: 1e-6)
    }

    private func checkGradient(_ point: [Float], _ f: ([Float], Bool) -> (Float, [Float]), file: StaticString = #filePath, line: UInt = #line) {
        let analytic = f(point, true).1
        let h: Float = 1e-3
        for i in point.indices {
            var plus = point, minus = point
            plus[i] += h
            minus[i] -= h
            let numeric = (f(plus, false).0 - f(minus, false).0) / (2 * h)
            XCTAssertEqual(analytic[i], numeric, accuracy: 2e-3, "element \(i)", file: file, line: line)
        }
    }

    /// One PPO update on a tiny GPT: a token with a positive advantage becomes more likely, one with a negative
    /// advantage less.
    func testAPPOStepRaisesTheLogProbabilityOfARewardedToken() throws {
        let model = try GPTModel(config: tinyConfig(), seed: 7, taskHead: .value)
        let ids: [Int32] = [3, 9, 4, 1]
        func logProbabilities() -> [Float] {
            let tape = Tape(recording: false)
            let logits = model.logits(model.hidden(ids: ids, batch: 1, tape: tape).final, tape: tape).value
            let rows = Tensor(shape: [2, 23], values: Array(logits.scalars[(1 * 23)..<(3 * 23)]))
            return actionLogProbabilities(rows, actions: [4, 1]).logProbabilities
        }
        let before = logProbabilities()
        let optimizer = AdamW(parameters: model.parameters, settings: .init(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0))
        let tape = Tape()
        let hidden = model.hidden(ids: ids, batch: 1, tape: tape)
        let states = tape.gatherRows(tape.reshape(hidden.final, [4, 12]), [1, 2])
        let (loss, _) = tape.clippedPolicyLoss(model.logits(states, tape: tape), actions: [4, 1], oldLogProbabilities: before,
                                               advantages: [1, -1], clipRange: 0.2)
        let (valueLoss, _) = tape.clippedValueLoss(model.head(states, tape: tape), oldValues: [0, 0], returns: [1, 1], clipRange: 0.2)
        model.parameters.zeroGradients()
        tape.backward(from: tape.add(loss, tape.scale(valueLoss, by: 0.1)))
        optimizer.step(learningRate: 1e-2)
        let after = logProbabilities()
        XCTAssertGreaterThan(after[0], before[0])
        XCTAssertLessThan(after[1], before[1])
    }

    /// A value head saves with the language model (TRL's `v_head.summary.*` names, config still a causal LM) and
    /// loads back.
    func testAValueHeadSavesAsACausalLanguageModel() throws {
        let folder = try temporaryDirectory(self)
        let model = try GPTModel(config: tinyConfig(), seed: 2, taskHead: .value)
        try HuggingFaceCheckpoint.save(model, to: folder)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("config.json"))) as! [String: Any]
        XCTAssertEqual(config["architectures"] as? [String], ["GPT2LMHeadModel"])
        XCTAssertEqual(try SafeTensors(contentsOf: folder.appendingPathComponent("model.safetensors")).entries[TaskHead.valueWeight]?.shape, [1, 12])
        let loaded = try HuggingFaceCheckpoint.load(from: folder)
        XCTAssertEqual(loaded.taskHead, .value)
        XCTAssertEqual(loaded.parameters[TaskHead.valueWeight].value.scalars, model.parameters[TaskHead.valueWeight].value.scalars)
    }
}
