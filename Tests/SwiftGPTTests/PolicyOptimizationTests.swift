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

    func testFillingAColumnPassesNoGradientThroughIt() {
        let tape = Tape()
        let x = Variable(Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), requiresGrad: true)
        let y = tape.fillingColumn(x, column: 1, with: -1e9)
        XCTAssertEqual(y.value.scalars, [1, -1e9, 3, 4, -1e9, 6])
        tape.backward(from: y, seed: Tensor(shape: [2, 3], values: [1, 1, 1, 2, 2, 2]))
        XCTAssertEqual(x.grad!.scalars, [1, 0, 1, 2, 0, 2])
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

    // MARK: End to end

    /// A policy over "a", "b" and an end-of-text token, a reward model trained to prefer replies of "a"s, and prompts.
    static func setup(in folder: URL) throws -> TrainingConfiguration {
        let policyTokenizer = try CharacterTokenizer(characters: Array("ab".unicodeScalars), specialTokens: ["<|endoftext|>"])
        let policy = try GPTModel(config: GPTConfig(vocabularySize: 3, contextLength: 16, layerCount: 1, headCount: 2, embeddingWidth: 16), seed: 5)
        let policyURL = folder.appendingPathComponent("policy")
        try TrainingCheckpoint.save(model: policy, tokenizer: policyTokenizer, optimizer: nil, state: nil, to: policyURL)
        var random = SeededRandom(seed: 9)
        func text(_ n: Int, _ letters: String = "ab") -> String { String((0..<n).map { _ in letters.randomElement(using: &random)! }) }
        let pairs = (0..<300).map { _ -> String in
            let prompt = text(2), length = 1 + random.nextInt(below: 5)
            var good = Array(text(length)), bad = good
            let k = random.nextInt(below: length)
            (good[k], bad[k]) = ("a", "b")
            return #"{"prompt": "\#(prompt)", "chosen": "\#(String(good))", "rejected": "\#(String(bad))"}"#
        }
        let rmBase = try savedBase(alphabet: "ab", layers: 1, width: 16, name: "rm-base", in: folder)
        var rm = TrainingConfiguration()
        let pairsURL = try writeLines(pairs, "pairs.jsonl", in: folder)
        var preferences = RewardModelingSettings(train: pairsURL.path, dev: pairsURL.path)
        preferences.epochs = 4
        rm.objective = .rewardModeling(preferences)
        rm.initFrom = rmBase.path
        rm.out = folder.appendingPathComponent("rm").path
        rm.batchSize = 16
        rm.learningRate = 3e-3
        rm.precision = .float32
        XCTAssertEqual(try Trainer(configuration: rm).run(), .finished)

        let prompts = try writeLines((0..<24).map { _ in #"{"prompt": "\#(text(2))"}"# }, "prompts.jsonl", in: folder)
        var settings = PolicyOptimizationSettings(prompts: prompts.path, reward: rm.out, chatTemplate: .default)
        settings.heldOutPrompts = 8
        settings.iterations = 12
        settings.rolloutSize = 16
        settings.epochsPerRollout = 2
        settings.maxNewTokens = 6
        settings.klCoefficient = 0.02
        settings.targetKL = 1
        settings.klHorizon = 100
        var c = TrainingConfiguration()
        c.policyOptimization = settings
        c.initFrom = policyURL.path
        c.out = folder.appendingPathComponent("ppo").path
        c.batchSize = 8
        c.learningRate = 1e-2
        c.minLearningRate = 1e-2
        c.weightDecay = 0
        c.precision = .float32
        return c
    }

    /// Bad prompts and reward specifications stop a new run before anything is written, naming what is wrong.
    func testBadPromptsAndRewardsAreReported() throws {
        let folder = try temporaryDirectory(self)
        let c = try Self.setup(in: folder)
        let good = #"{"prompt": "ab"}"#
        for (line, message) in [(#"{"text": "ab"}"#, "line 2: a prompt line holds 'prompt' (text) or 'messages'"),
                                (#"{"prompt": ""}"#, "line 2: field 'prompt' must be a non-empty string"),
                                (#"{"messages": [{"role": "robot", "content": "x"}]}"#, "line 2: messages[0].role must be one of system, user, assistant")] {
            var bad = c
            bad.policyOptimization!.prompts = try writeLines([good, line], "prompts-bad.jsonl", in: folder).path
            let error = assertFileError(.malformed(line: 2), "prompts-bad.jsonl", try Trainer(configuration: bad))
            XCTAssertTrue(error?.message.hasPrefix(message) ?? false, "\(String(describing: error)) does not name the field as '\(message)'")
        }
        for (reward, reason) in [(c.initFrom, ConfigurationError.Reason.unsuitableModel), ("classifier:\(c.initFrom)", .invalidSetting("reward")),
                                 ("classifier:\(c.initFrom):1", .unsuitableModel)] {
            var bad = c
            bad.policyOptimization!.reward = reward
            assertThrows(ConfigurationError.self, reason, try Trainer(configuration: bad))
        }
        var greedy = c
        greedy.policyOptimization!.heldOutPrompts = 24
        assertThrows(ConfigurationError.self, .invalidSetting("heldOutPrompts"), try Trainer(configuration: greedy))
        XCTAssertFalse(FileManager.default.fileExists(atPath: URL(fileURLWithPath: c.out).appendingPathComponent("last").path))
    }

    /// PPO against the reward model raises the mean score well above where it started; the metrics, chart,
    /// samples and a causal-LM checkpoint with its value head are written.
    func testPPORaisesTheRewardOfATinyPolicy() throws {
        let folder = try temporaryDirectory(self)
        let trainer = try Trainer(configuration: try Self.setup(in: folder))
        var scores: [Double] = [], betas: [Double] = []
        XCTAssertEqual(try trainer.run(events: { event in
            if case .evaluation(_, let e) = event {
                scores.append(e.metrics["score"]!)
                betas.append(e.metrics["beta"]!)
                // best/ is chosen by the mean score on the held-out prompts.
                XCTAssertEqual(e.score, e.metrics["held_out_score"])
            }
        }), .finished)
        XCTAssertEqual(scores.count, 13)
        XCTAssertGreaterThan(scores.suffix(3).reduce(0, +) / 3, scores[0] + 0.5, "\(scores)")
        XCTAssertNotEqual(betas.first, betas.last)
        let out = URL(fileURLWithPath: trainer.configuration.out)
        // metrics.jsonl holds the mean score each rollout reported (not the objective score − β·KL).
        let logged = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["kl"] != nil }.compactMap { $0["score"] as? Double }
        XCTAssertEqual(logged.count, scores.count)
        for (file, reported) in zip(logged, scores) { XCTAssertEqual(file, reported, accuracy: 1e-9) }
        for file in ["metrics.jsonl", "reward.svg", "loss.svg", "samples.jsonl", "best/config.json", "last/ppo_state.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        // Score and KL have axes of their own; the loss chart names PPO's loss and has no empty validation entry.
        let reward = try chartTexts(out.appendingPathComponent("reward.svg"), name: "ppo-reward.svg")
        XCTAssertTrue(reward.contains("mean score of the policy's responses (the reward)") && reward.contains("KL to the starting policy, per response (nats)"), "\(reward)")
        let loss = try chartTexts(out.appendingPathComponent("loss.svg"), name: "ppo-loss.svg")
        XCTAssertTrue(loss.contains { $0.hasPrefix("PPO loss: clipped policy loss") }, "\(loss)")
        XCTAssertFalse(loss.contains { $0.contains("validation") || $0.contains("val ") }, "\(loss)")
        let (model, _) = try ModelLoading.load(out.path)
        XCTAssertEqual(model.taskHead, .value)
    }

    /// PPO with LoRA on the policy: rollouts sample from the adapted policy (its merged weights), the value head
    /// trains whole beside the adapters, and the run raises the score and resumes exactly.
    func testPPOWithAnAdapter() throws {
        let folder = try temporaryDirectory(self)
        var c = try Self.setup(in: folder)
        (c.loraRank, c.loraAlpha, c.loraDropout, c.learningRate, c.minLearningRate) = (4, 8, 0, 3e-2, 3e-2)
        c.policyOptimization!.iterations = 6
        let whole = try Trainer(configuration: c)
        XCTAssertEqual(whole.model.adapter?.savedParameters, ["v_head.summary.weight", "v_head.summary.bias"])
        var scores: [Double] = []
        XCTAssertEqual(try whole.run(events: { if case .evaluation(_, let e) = $0 { scores.append(e.metrics["score"]!) } }), .finished)
        XCTAssertGreaterThan(scores.suffix(2).reduce(0, +) / 2, scores[0] + 0.3, "\(scores)")
        c.out = folder.appendingPathComponent("ppo-interrupted").path
        let first = try Trainer(configuration: c)
        XCTAssertEqual(try first.run(shouldStop: { first.step == 5 }), .interrupted)
        let resumed = try Trainer.resume(output: URL(fileURLWithPath: c.out))
        XCTAssertEqual(try resumed.run(), .finished)
        XCTAssertEqual(resumed.model.adapter!.parameters.values.scalars, whole.model.adapter!.parameters.values.scalars)
        // Over a base held in int8: the rollouts decode with the adapter beside the packed weights.
        (c.out, c.loraBasePrecision, c.policyOptimization!.iterations) = (folder.appendingPathComponent("ppo-int8").path, .int8, 6)
        let packed = try Trainer(configuration: c)
        XCTAssertEqual(packed.model.packedBase?.format, .int8)
        scores = []
        XCTAssertEqual(try packed.run(events: { if case .evaluation(_, let e) = $0 { scores.append(e.metrics["score"]!) } }), .finished)
        XCTAssertGreaterThan(scores.suffix(2).reduce(0, +) / 2, scores[0] + 0.3, "\(scores)")
    }

    /// A run interrupted in the middle of an iteration and resumed ends with the parameters of the uninterrupted run.
    func testResumedPPOIsBitIdentical() throws {
        let folder = try temporaryDirectory(self)
        var c = try Self.setup(in: folder)
        c.policyOptimization!.iterations = 3
        let whole = try Trainer(configuration: c)
        XCTAssertEqual(try whole.run(), .finished)
        c.out = folder.appendingPathComponent("ppo-interrupted").path
        let first = try Trainer(configuration: c)
        XCTAssertEqual(try first.run(shouldStop: { first.step == 5 }), .interrupted)
        let resumed = try Trainer.resume(output: URL(fileURLWithPath: c.out))
        XCTAssertEqual(resumed.step, 5)
        XCTAssertEqual(try resumed.run(), .finished)
        for name in whole.model.parameters.names {
            XCTAssertEqual(resumed.model.parameters[name].value.scalars, whole.model.parameters[name].value.scalars, name)
        }
    }
}
