import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// PPO against a reward with a KL penalty toward a frozen reference policy (InstructGPT's step 3, Ziegler et al.'s
/// recipe), as an objective of the shared training loop: an optimizer step is one PPO mini-batch update; every
/// `stepsPerIteration` steps the loop's preparation phase (`prepare(step:)`) samples a new rollout, whose figures are
/// then the loop's evaluation.
///
/// A rollout samples one response per prompt with the batched KV-cache sampler, then reads every sequence once
/// with the policy (log-probabilities and values of the response tokens) and once with the reference policy. The
/// reward of token t is −β·KL_t, plus the response's score at its last token; GAE(γ, λ) gives advantages (whitened
/// over the rollout) and returns. Updates minimise the clipped policy loss plus `valueCoefficient` times the clipped
/// value loss (plus `pretrainingCoefficient` times the LM loss on pretraining data: PPO-ptx), without dropout.
///
/// Under mpirun each rank samples, reads and scores its share of the rollout's prompts (with the streams one
/// process would use for them), the ranks exchange their shares so that each holds the whole rollout, and each
/// computes its share of every update's mini-batch, as the other objectives do.
///
/// The value head (`v_head`, a linear map of the final hidden state) shares the policy's body, as TRL's
/// `AutoModelForCausalLMWithValueHead` does: one forward pass gives both, and the critic starts from the policy's
/// features instead of from scratch; its loss is weighted down (0.1) so that it does not pull the body away from
/// the policy.
package final class PolicyOptimizationObjective: TrainingObjective {
    /// The policy, with its value head.
    package let model: GPTModel
    package let reference: GPTModel
    package let tokenizer: any Tokenizer
    package let reward: RewardFunction
    package let settings: PolicyOptimizationSettings
    /// Each rollout prompt's text and tokens (cut from the left to leave room for a response).
    package let prompts: [(text: String, ids: [Int32])]
    /// The prompts held back from the rollouts, whose mean score chooses `best/`.
    package let heldOut: [(text: String, ids: [Int32])]
    /// Optimizer steps per pass over a rollout, and per rollout.
    package let stepsPerEpoch: Int
    package var stepsPerIteration: Int { settings.epochsPerRollout * stepsPerEpoch }
    let batchSize: Int
    let accumulation: Int
    let seed: UInt64
    let precision: ProductPrecision
    let pretraining: TokenDataset?
    let output: URL
    /// The processes sharing the rollouts and updates.
    let group: ProcessGroup
    private(set) var state: State

    /// What a checkpoint keeps of the objective: the KL controller, the rollout being trained on and the update
    /// statistics gathered since it was sampled.
    struct State: Codable {
        var controller: KLController
        var rollout: Rollout?
        var updates = UpdateStatistics()
    }

    /// One rollout: the sequences (prompt + response) and, per response token, what the updates need.
    struct Rollout: Codable {
        var step: Int
        var sequences: [[Int32]]
        var promptLengths: [Int]
        var logProbabilities: [[Float]]
        var values: [[Float]]
        var advantages: [[Float]]
        var returns: [[Float]]
        var metrics: [String: Double]
        var summary: String
    }

    /// Sums over the mini-batches of one rollout's updates.
    struct UpdateStatistics: Codable {
        var count = 0
        var policyLoss = 0.0, valueLoss = 0.0, clipFraction = 0.0, valueClipFraction = 0.0, approximateKL = 0.0, entropy = 0.0

        var metrics: [String: Double] {
            guard count > 0 else { return [:] }
            let n = Double(count)
            return ["policy_loss": policyLoss / n, "value_loss": valueLoss / n, "clip_fraction": clipFraction / n,
                    "value_clip_fraction": valueClipFraction / n, "approx_kl": approximateKL / n, "update_entropy": entropy / n]
        }
    }

    static let stateFile = "ppo_state.json"

    package init(_ settings: PolicyOptimizationSettings, _ context: ObjectiveContext) throws {
        let (model, tokenizer, c, group) = (context.model, context.tokenizer, context.configuration, context.group)
        guard model.taskHead == .value else {
            throw ConfigurationError(.unsuitableModel, "PPO needs a policy with a value head")
        }
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        (reference, _) = try ModelLoading.load(c.initFrom)
        guard reference.config.vocabularySize == model.config.vocabularySize else {
            throw ConfigurationError(.unsuitableModel, "the reference policy \(c.initFrom) does not match the policy's vocabulary")
        }
        reward = try RewardFunction(specification: settings.reward)
        let room = model.config.contextLength - settings.maxNewTokens
        guard room > 0 else {
            throw ConfigurationError(.invalidSetting("maxNewTokens"), "\(settings.maxNewTokens) new tokens leave no room for a prompt in the context of \(model.config.contextLength)")
        }
        let url = URL(fileURLWithPath: settings.prompts)
        let template = settings.chatTemplate
        let all = try JSONLines.map(url) { line, object, fail in
            let text: String
            if let prompt = object["prompt"] {
                guard let prompt = prompt as? String, !prompt.isEmpty else { throw fail("field 'prompt' must be a non-empty string") }
                text = prompt
            } else if let list = object["messages"] {
                let messages = try ChatMessage.list(fromJSON: list, fail: fail)
                text = template.render(messages, addGenerationPrompt: true).map { piece in
                    if case .text(let t) = piece { return t }
                    return template.endOfTurn
                }.joined()
            } else {
                throw fail("a prompt line holds 'prompt' (text) or 'messages'")
            }
            let ids: [Int32]
            do { ids = try tokenizer.encode(text, allowedSpecial: [template.endOfTurn]) } catch { throw fail("\(error)") }
            return (text: text, ids: Array(ids.suffix(room)))
        }
        guard all.count > settings.heldOutPrompts else {
            throw ConfigurationError(.invalidSetting("heldOutPrompts"), "\(url.path) holds \(all.count) prompts: holding back \(settings.heldOutPrompts) to choose best/ by leaves none for the rollouts (hold back fewer)")
        }
        prompts = Array(all.dropLast(settings.heldOutPrompts))
        heldOut = Array(all.suffix(settings.heldOutPrompts))
        batchSize = c.batchSize
        accumulation = c.gradientAccumulation
        seed = c.seed
        precision = c.resolvedPrecision
        output = URL(fileURLWithPath: c.out)
        self.group = group
        let responses = min(settings.rolloutSize, prompts.count)
        stepsPerEpoch = (responses + batchSize * accumulation - 1) / (batchSize * accumulation)
        pretraining = try settings.pretrainingData.map {
            TokenDataset(file: try TokenFile(contentsOf: URL(fileURLWithPath: $0).appendingPathComponent("train.bin")))
        }
        state = State(controller: KLController(coefficient: settings.klCoefficient, target: settings.targetKL, horizon: settings.klHorizon))
    }

    // MARK: Rollouts

    /// At the start of each iteration (every `stepsPerIteration` steps, and at the run's end), samples the rollout
    /// the iteration's updates train on: the policy as it is now, scored. A rollout restored from a checkpoint taken
    /// at `step` is kept.
    package func prepare(step: Int) throws {
        guard step % stepsPerIteration == 0, state.rollout?.step != step else { return }
        state.rollout = try sampleRollout(step: step)
        state.updates = UpdateStatistics()
    }

    /// The figures of the rollout sampled at `step`: PPO's rollouts are its evaluations.
    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        guard let rollout = state.rollout, rollout.step == step else {
            throw TrainingError(.inconsistentState, "step \(step): PPO evaluates at the start of an iteration (every \(stepsPerIteration) steps), where a rollout is sampled")
        }
        return Evaluation(metrics: rollout.metrics, score: Self.bestScore(rollout.metrics), summary: rollout.summary)
    }

    /// What `best/` is chosen by: the mean score on the held-out prompts, or without them the rollout's mean score.
    static func bestScore(_ metrics: [String: Double]) -> Double { metrics["held_out_score"] ?? metrics["score"]! }

    /// The mean score of the policy's answers to the held-out prompts: sampled as rollouts are, with the same random
    /// streams at every rollout (so that the figure moves with the policy, not with the draw), each rank answering
    /// its share.
    func heldOutScore() throws -> Double {
        let share = rankShare(of: heldOut.count)
        let completions = try Generator(model: model, tokenizer: tokenizer)
            .generate(prompts: share.map { heldOut[$0].ids }, options: samplingOptions(seed: seed &+ 0x4E1D_0BAC), firstStream: share.lowerBound)
        let scores = try reward.scores(zip(share, completions).map { heldOut[$0].text + $1.text }, batchSize: batchSize, precision: precision)
        var penalized = scores.map(Double.init)
        for (k, completion) in completions.enumerated() where completion.finishReason != .endOfText { penalized[k] -= Double(settings.unfinishedPenalty) }
        let all = group.allGather(penalized).flatMap { $0 }
        return all.reduce(0, +) / Double(all.count)
    }

    /// How responses are sampled, in rollouts and for the held-out prompts alike (with `fixedLength`, the
    /// end-of-text token is never drawn).
    func samplingOptions(seed: UInt64) -> SamplingOptions {
        var options = SamplingOptions()
        options.maxNewTokens = settings.maxNewTokens
        options.temperature = settings.temperature
        options.topP = settings.topP
        options.seed = seed
        if settings.fixedLength { options.logitBias[tokenizer.endOfText!] = Self.excludedLogit }
        return options
    }

    /// This rank's consecutive share of `count` prompts.
    func rankShare(of count: Int) -> Range<Int> {
        count * group.rank / group.size..<count * (group.rank + 1) / group.size
    }

    /// The prompts of the rollout at `iteration`: a slice of an order shuffled per pass over the prompts.
    func promptIndices(iteration: Int) -> [Int] {
        let order = EpochBatches(count: prompts.count, batchSize: min(settings.rolloutSize, prompts.count), accumulation: 1, seed: seed)
        return Array(order.microBatch(step: iteration, microBatch: 0)!.indices)
    }

    func sampleRollout(step: Int) throws -> Rollout {
        let iteration = step / stepsPerIteration
        let chosen = promptIndices(iteration: iteration)
        // This rank's consecutive share of the prompts: sampled, read by the policy and the reference, scored.
        let share = rankShare(of: chosen.count)
        let completions = try Generator(model: model, tokenizer: tokenizer)
            .generate(prompts: share.map { prompts[chosen[$0]].ids }, options: samplingOptions(seed: seed &+ 0x5EED &* UInt64(iteration + 1)),
                      firstStream: share.lowerBound)
        var part = RolloutPart()
        for (index, completion) in zip(chosen[share], completions) {
            let ended = completion.finishReason == .endOfText
            part.sequences.append(prompts[index].ids + completion.tokens + (ended ? [tokenizer.endOfText!] : []))
            part.promptLengths.append(prompts[index].ids.count)
            part.finished.append(ended)
            part.texts.append(completion.text)
        }
        (part.logProbabilities, part.entropies, part.values) = try read(part.sequences, promptLengths: part.promptLengths, with: model, values: true)
        (part.referenceLogProbabilities, _, _) = try read(part.sequences, promptLengths: part.promptLengths, with: reference, values: false)
        part.scores = try reward.scores(zip(chosen[share], part.texts).map { prompts[$0].text + $1 }, batchSize: batchSize, precision: precision)
        // Every rank then holds the whole rollout, in prompt order.
        let whole = group.size == 1 ? part : RolloutPart(joining: group.allGather(part.packed).map(RolloutPart.init(unpacking:)))
        let (sequences, promptLengths, finished) = (whole.sequences, whole.promptLengths, whole.finished)
        let (logProbabilities, entropies, values) = (whole.logProbabilities, whole.entropies, whole.values)
        let referenceLogProbabilities = whole.referenceLogProbabilities
        var scores = whole.scores
        for k in scores.indices where !finished[k] { scores[k] -= settings.unfinishedPenalty }
        let shaped = settings.whitenScores ? AdvantageEstimation.whitened(scores) : scores
        let beta = state.controller.coefficient
        var kls: [Float] = [], advantages: [[Float]] = [], returns: [[Float]] = []
        for k in sequences.indices {
            let kl = zip(logProbabilities[k], referenceLogProbabilities[k]).map {
                settings.klEstimator.estimate(logProbability: $0, referenceLogProbability: $1)
            }
            var rewards = kl.map { -beta * $0 }
            rewards[rewards.count - 1] += shaped[k]
            let estimate = AdvantageEstimation.generalized(rewards: rewards, values: values[k], gamma: settings.gamma, lambda: settings.lambda)
            advantages.append(estimate.advantages)
            returns.append(estimate.returns)
            kls.append(kl.reduce(0, +))
        }
        // Advantages whitened over every response token of the rollout.
        let counts = advantages.map(\.count)
        var flat = AdvantageEstimation.whitened(advantages.flatMap { $0 })[...]
        advantages = counts.map { n in defer { flat = flat.dropFirst(n) }; return Array(flat.prefix(n)) }
        let meanKL = Double(kls.reduce(0, +)) / Double(kls.count)
        state.controller.update(observedKL: Float(meanKL), responses: sequences.count)

        func mean(_ x: [Float]) -> Double { x.isEmpty ? 0 : Double(x.reduce(0, +)) / Double(x.count) }
        let meanScore = mean(scores)
        let scoreSpread = (scores.map { (Double($0) - meanScore) * (Double($0) - meanScore) }.reduce(0, +) / Double(scores.count)).squareRoot()
        var metrics: [String: Double] = [
            "iteration": Double(iteration), "score": meanScore, "score_std": scoreSpread, "kl": meanKL, "beta": Double(beta),
            "objective": meanScore - Double(beta) * meanKL, "entropy": mean(entropies.flatMap { $0 }),
            "response_length": mean(counts.map(Float.init)), "finished": mean(finished.map { $0 ? 1 : 0 }),
            "value_mean": mean(values.flatMap { $0 }), "return_mean": mean(returns.flatMap { $0 }),
        ]
        metrics.merge(state.updates.metrics) { a, _ in a }
        if !heldOut.isEmpty { metrics["held_out_score"] = try heldOutScore() }
        if group.isMain && (iteration % settings.sampleInterval == 0 || step == 0) {
            try logSamples(iteration: iteration, prompts: chosen.prefix(3).map { prompts[$0].text },
                           responses: Array(whole.texts.prefix(3)), scores: Array(scores.prefix(3)))
        }
        let summary = String(format: "rollout %d: score %.4f ± %.4f, KL %.3f, β %.4f, entropy %.3f, length %.1f, finished %.2f",
                             iteration, meanScore, scoreSpread, meanKL, beta, metrics["entropy"]!, metrics["response_length"]!, metrics["finished"]!)
            + (metrics["held_out_score"].map { String(format: "; held-out score %.4f", $0) } ?? "")
            + (state.updates.count > 0 ? String(format: "; last update: policy loss %.4f, value loss %.4f, clipped %.3f, approx KL %.4f",
                                                metrics["policy_loss"]!, metrics["value_loss"]!, metrics["clip_fraction"]!, metrics["approx_kl"]!) : "")
        return Rollout(step: step, sequences: sequences, promptLengths: promptLengths, logProbabilities: logProbabilities,
                       values: values, advantages: advantages, returns: returns, metrics: metrics, summary: summary)
    }

    /// Log-probabilities and entropies (and, with `values`, the value head's outputs) of every response token,
    /// read by `reader` without recording, `batchSize` sequences a pass.
    func read(_ sequences: [[Int32]], promptLengths: [Int], with reader: GPTModel, values wantValues: Bool) throws
        -> ([[Float]], [[Float]], [[Float]]) {
        var logProbabilities: [[Float]] = [], entropies: [[Float]] = [], values: [[Float]] = []
        for start in stride(from: 0, to: sequences.count, by: batchSize) {
            let range = start..<min(sequences.count, start + batchSize)
            let tape = Tape(recording: false, precision: precision)
            let batch = PackedSequences(responses: Array(sequences[range]), promptLengths: Array(promptLengths[range]))
            let states = batch.responseStates(reader, tape: tape)
            let (lp, entropy) = actionLogProbabilities(policyLogits(reader, states, tape: tape).value, actions: batch.targets)
            let v = wantValues ? reader.head(states, tape: tape).value.scalars : []
            for span in batch.spans {
                logProbabilities.append(Array(lp[span]))
                entropies.append(Array(entropy[span]))
                if wantValues { values.append(Array(v[span])) }
            }
        }
        return (logProbabilities, entropies, values)
    }

    /// The logits of a policy (or of the reference) at `states`. With `fixedLength`, the end-of-text token, never
    /// sampled, is left out of the distribution, so that log-probabilities, KL and entropy are those of the policy
    /// that is sampled.
    func policyLogits(_ reader: GPTModel, _ states: Variable, tape: Tape) -> Variable {
        let logits = reader.logits(states, tape: tape)
        return settings.fixedLength ? tape.fillingColumn(logits, column: Int(tokenizer.endOfText!), with: Self.excludedLogit) : logits
    }

    /// The logit of a token never sampled: far enough below any other that its probability underflows to 0.
    static let excludedLogit: Float = -1e9

    func logSamples(iteration: Int, prompts: [String], responses: [String], scores: [Float]) throws {
        let records = zip(prompts, zip(responses, scores)).map { prompt, sample -> [String: Any] in
            ["iteration": iteration, "prompt": prompt, "response": sample.0, "score": Double(sample.1)]
        }
        try Metrics.appendLines(records, to: output.appendingPathComponent("samples.jsonl"))
    }

    // MARK: Updates

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        guard let rollout = state.rollout, (rollout.step..<(rollout.step + stepsPerIteration)).contains(step) else {
            throw TrainingError(.inconsistentState, "step \(step + 1): no rollout for this PPO iteration")
        }
        let order = EpochBatches(count: rollout.sequences.count, batchSize: batchSize, accumulation: accumulation,
                                 seed: seed ^ UInt64(rollout.step))
        let shard = Shard(index: group.rank, count: group.size)
        guard let (whole, share) = order.microBatch(step: step - rollout.step, microBatch: microBatch),
              let (indices, _) = order.microBatch(step: step - rollout.step, microBatch: microBatch, shard: shard) else { return nil }
        let batch = PackedSequences(responses: indices.map { rollout.sequences[$0] }, promptLengths: indices.map { rollout.promptLengths[$0] })
        let states = batch.responseStates(model, tape: tape)
        let (policyLoss, statistics) = tape.clippedPolicyLoss(
            policyLogits(model, states, tape: tape), actions: batch.targets,
            oldLogProbabilities: indices.flatMap { rollout.logProbabilities[$0] }, advantages: indices.flatMap { rollout.advantages[$0] },
            clipRange: settings.clipRange)
        let (valueLoss, valueClipFraction) = tape.clippedValueLoss(
            model.head(states, tape: tape), oldValues: indices.flatMap { rollout.values[$0] },
            returns: indices.flatMap { rollout.returns[$0] }, clipRange: settings.valueClipRange)
        var loss = tape.add(policyLoss, tape.scale(valueLoss, by: settings.valueCoefficient))
        // Both losses are means over the micro-batch's response tokens: a rank's mean counts by its share of them.
        func responseTokens(_ indices: some Sequence<Int>) -> Int { indices.reduce(0) { $0 + rollout.logProbabilities[$1].count } }
        let weight = share * Float(shard.count * responseTokens(indices)) / Float(responseTokens(whole))
        if weight != 1 { loss = tape.scale(loss, by: weight) }
        var positions = batch.ids.count
        if let pretraining, settings.pretrainingCoefficient > 0 {
            let length = model.config.contextLength
            // Every rank draws the same batch and computes its share of the rows.
            let (inputs, targets) = try pretraining.batch(batchSize, length: length, random: &data)
            let rows = batchSize * shard.index / shard.count..<batchSize * (shard.index + 1) / shard.count
            if !rows.isEmpty {
                let span = rows.lowerBound * length..<rows.upperBound * length
                let hidden = model.hidden(ids: Array(inputs[span]), batch: rows.count, tape: tape)
                let lmLoss = tape.crossEntropy(model.logits(hidden.final, tape: tape), targets: Array(targets[span]))
                // As one process weighs the whole batch (its micro-batch's share of the step), over the ranks' mean.
                let rowsWeight = share * Float(shard.count * rows.count) / Float(batchSize)
                loss = tape.add(loss, tape.scale(lmLoss, by: settings.pretrainingCoefficient * rowsWeight))
                positions += span.count
            }
        }
        var u = state.updates
        u.count += 1
        u.policyLoss += Double(policyLoss.value[flat: 0])
        u.valueLoss += Double(valueLoss.value[flat: 0])
        u.clipFraction += Double(statistics.clipFraction)
        u.valueClipFraction += Double(valueClipFraction)
        u.approximateKL += Double(statistics.approximateKL)
        u.entropy += Double(statistics.entropy)
        state.updates = u
        return (loss, positions)
    }

    // MARK: Checkpoints

    package func writeModelFiles(to directory: URL) throws { try settings.chatTemplate.save(to: directory) }

    package func saveState(to directory: URL) throws {
        try AtomicFile.write(try JSONEncoder().encode(state), to: directory.appendingPathComponent(Self.stateFile))
    }

    package func restoreState(from directory: URL) throws {
        let url = directory.appendingPathComponent(Self.stateFile)
        do { state = try JSONDecoder().decode(State.self, from: try Data(contentsOf: url)) } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "missing or corrupt PPO state (\(error))")
        }
    }

    /// The loss PPO minimises at logged steps (it has no validation loss: rollouts are its evaluations).
    /// `iterations` rollouts, each followed by its updates; no warmup; each rollout is the evaluation.
    package var plan: RunPlan? {
        RunPlan(maxIterations: settings.iterations * stepsPerIteration, warmupIterations: 0, evalInterval: stepsPerIteration)
    }

    package var dataSummary: String? {
        let s = settings
        return "PPO: \(prompts.count) prompts, \(s.iterations) rollouts of \(min(s.rolloutSize, prompts.count)) responses (≤ \(s.maxNewTokens) tokens), \(s.epochsPerRollout) epochs × \(stepsPerEpoch) steps per rollout; β \(s.klCoefficient)\(s.targetKL.map { " adaptive toward KL \($0)" } ?? " fixed") (\(s.klEstimator.rawValue)); reward \(s.reward)"
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("PPO loss: clipped policy loss + \(settings.valueCoefficient) × value loss", [
            .init("logged steps", LearningCurve.series(records, "train_loss"))])]
    }

    package func writeCharts(to output: URL, records: [[String: Any]]) throws {
        func series(_ key: String) -> [(step: Int, value: Double)] { LearningCurve.series(records, key, requiring: "iteration") }
        let svg = LearningCurve.svg(title: "\(output.lastPathComponent): PPO rollouts", panels: [
            LearningCurve.Panel("mean score of the policy's responses (the reward)", [
                .init("rollout prompts", series("score"), dots: true), .init("held-out prompts (choose best/)", series("held_out_score"), dots: true)]),
            LearningCurve.Panel("KL to the starting policy, per response (nats)", [.init("KL", series("kl"), dots: true)]),
        ])
        try AtomicFile.write(Data(svg.utf8), to: output.appendingPathComponent("reward.svg"))
    }
}

/// One rank's share of a rollout: what it sampled, read and scored, packed into numbers for the exchange.
struct RolloutPart {
    var sequences: [[Int32]] = [], promptLengths: [Int] = [], finished: [Bool] = [], texts: [String] = []
    var logProbabilities: [[Float]] = [], entropies: [[Float]] = [], values: [[Float]] = []
    var referenceLogProbabilities: [[Float]] = [], scores: [Float] = []

    init() {}

    /// The parts of all ranks, one after the other.
    init(joining parts: [RolloutPart]) {
        for part in parts {
            sequences += part.sequences; promptLengths += part.promptLengths; finished += part.finished; texts += part.texts
            logProbabilities += part.logProbabilities; entropies += part.entropies; values += part.values
            referenceLogProbabilities += part.referenceLogProbabilities; scores += part.scores
        }
    }

    /// Per response: prompt length, finished, score, the token ids, the text's UTF-8 bytes, then the log-probabilities,
    /// entropies, values and reference log-probabilities of its response tokens, each list after its length. Token
    /// ids, bytes and floats are exact as doubles.
    var packed: [Double] {
        var numbers: [Double] = []
        func list<T>(_ items: [T], _ number: (T) -> Double) { numbers.append(Double(items.count)); numbers += items.map(number) }
        for k in sequences.indices {
            numbers += [Double(promptLengths[k]), finished[k] ? 1 : 0, Double(scores[k])]
            list(sequences[k]) { Double($0) }
            list(Array(texts[k].utf8)) { Double($0) }
            for floats in [logProbabilities[k], entropies[k], values[k], referenceLogProbabilities[k]] { list(floats) { Double($0) } }
        }
        return numbers
    }

    init(unpacking numbers: [Double]) {
        var at = 0
        func next() -> Double { defer { at += 1 }; return numbers[at] }
        func list<T>(_ element: (Double) -> T) -> [T] { (0..<Int(next())).map { _ in element(next()) } }
        while at < numbers.count {
            promptLengths.append(Int(next()))
            finished.append(next() == 1)
            scores.append(Float(next()))
            sequences.append(list { Int32($0) })
            texts.append(String(decoding: list { UInt8($0) }, as: UTF8.self))
            logProbabilities.append(list { Float($0) })
            entropies.append(list { Float($0) })
            values.append(list { Float($0) })
            referenceLogProbabilities.append(list { Float($0) })
        }
    }
}

extension PackedSequences {
    /// Sequences (prompt + response) as one batch, scoring their response tokens (the `targets`; PPO's actions):
    /// the states that predict them are those at the positions before them.
    init(responses sequences: [[Int32]], promptLengths: [Int]) {
        self.init(sequences) { r, t in t >= promptLengths[r] - 1 }
    }

    /// The final hidden states `[responseTokens, width]` that predict the response tokens, without dropout.
    func responseStates(_ model: GPTModel, tape: Tape) -> Variable {
        let hidden = model.hidden(ids: ids, batch: lengths.count, tape: tape, lengths: lengths, withoutPadding: true)
        return tape.gatherRows(hidden.final, positions)
    }
}

extension PolicyOptimizationObjective {
    /// The policy a new run starts from: the configuration's `initFrom` model with a value head (N(0, 0.02)), or
    /// with the value head it already has.
    package static func startingModel(_ c: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
        guard c.initFrom != "scratch" else { throw ConfigurationError(.invalidSetting("initFrom"), "PPO starts from a policy directory") }
        let (base, tokenizer) = try ModelLoading.load(c.initFrom)
        guard base.taskHead == nil || base.taskHead == .value else {
            throw ConfigurationError(.unsuitableModel, "\(c.initFrom) has a task head; PPO starts from a language model")
        }
        guard tokenizer.endOfText != nil else {
            throw ConfigurationError(.unsuitableModel, "the policy's tokenizer has no end-of-text token to end responses with")
        }
        let model = try base.adapted(vocabularySize: base.config.vocabularySize, taskHead: .value, seed: c.seed)
        if let dropout = c.dropout { model.setDropout(dropout) }
        return (model, tokenizer)
    }
}
