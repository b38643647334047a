import Foundation
import GPTModels
import TensorCore
import Tokenizers

/// One reported figure: a metric of a task at a number of shots.
package struct EvaluationResult: Sendable, Codable, Equatable {
    package var task: String
    package var shots: Int
    package var metric: String
    package var value: Double
    /// Standard error of the mean; nil where lm-evaluation-harness would bootstrap it (perplexities).
    package var standardError: Double?
    package var examples: Int
    /// Examples whose prompt lost demonstrations or was cut to fit the context.
    package var truncated: Int
    /// The mean number of demonstrations the prompts actually held, after whole ones were dropped to fit the
    /// context: below `shots`, the figure measures fewer shots than it is labelled with.
    package var meanDemonstrations: Double = 0

    enum CodingKeys: String, CodingKey {
        case task, shots, metric, value, examples, truncated
        case standardError = "stderr"
        case meanDemonstrations = "mean_demonstrations"
    }
}

/// The figures of one task at one number of shots, with the per-example records and the speed.
package struct TaskEvaluation {
    package var results: [EvaluationResult]
    /// One JSON object per example: prompt, continuations, scores, prediction and target.
    package var samples: [[String: Any]]
    package var seconds: Double
    package var examplesPerSecond: Double { Double(samples.count) / max(seconds, 1e-9) }
}

/// Evaluates a model on tasks in context: zero-, one- and few-shot, scored as lm-evaluation-harness scores.
package final class Evaluator {
    package let model: GPTModel
    package let tokenizer: any Tokenizer
    private let weights: DecodeWeights
    private let cachePrecision: CachedAttention.Cache.Precision
    private lazy var scorer = LoglikelihoodScorer(model: model, weights: weights, cachePrecision: cachePrecision)
    private lazy var generator = Generator(model: model, tokenizer: tokenizer, weights: weights, cachePrecision: cachePrecision)

    /// An evaluator of `model` as it is now (its weights are packed for decoding in fp32).
    package convenience init(model: GPTModel, tokenizer: any Tokenizer) {
        self.init(model: model, tokenizer: tokenizer, weights: model.decodingWeights())
    }

    /// An evaluator of `model` with its decoding weights, which scoring and generation share (see
    /// `ModelLoading.loadForDecoding`), keeping keys and values in `cachePrecision`.
    package init(model: GPTModel, tokenizer: any Tokenizer, weights: DecodeWeights,
                 cachePrecision: CachedAttention.Cache.Precision = .float32) {
        self.model = model
        self.tokenizer = tokenizer
        self.weights = weights
        self.cachePrecision = cachePrecision
    }

    /// Scores `examples` of `task` with `shots` demonstrations each, drawn by `seed` from `pool` (the examples of
    /// the whole data file when `poolIsData`, so that a query is never its own demonstration).
    package func evaluate(_ task: EvaluationTask, shots: Int, examples: [EvaluationExample], pool: [EvaluationExample],
                         poolIsData: Bool, seed: UInt64) throws -> TaskEvaluation {
        let start = Date()
        let sampler = FewShotSampler(poolGroups: pool.map(\.group), poolIsData: poolIsData, seed: seed)
        if task.outputType == .rollingPerplexity, shots > 0 {
            throw TaskDefinitionError(.invalidShots, "task \(task.name): rolling_perplexity scores documents whole and takes no demonstrations (use --shots 0)")
        }
        if shots > 0 {
            for (index, example) in examples.enumerated() {
                let available = sampler.available(forQuery: index, group: example.group)
                guard shots <= available else {
                    let scope = example.group.map { " in group \(PromptTemplate.quoted($0)) (line \(example.line))" } ?? ""
                    throw TaskDefinitionError(.invalidShots, "task \(task.name): \(shots) shots asked, but the few-shot pool has \(available) example\(available == 1 ? "" : "s")\(scope) to draw from")
                }
            }
        }
        let assembly = PromptAssembly(task: task, tokenizer: tokenizer, contextLength: model.config.contextLength)
        var evaluation: TaskEvaluation
        switch task.outputType {
        case .rollingPerplexity:
            evaluation = try rollingPerplexity(task, examples)
        case .multipleChoice, .loglikelihood, .generateUntil:
            let prompts = try examples.enumerated().map { index, example in
                do {
                    return try assembly.assemble(query: example, demonstrations: sampler.sample(shots, forQuery: index, group: example.group).map { pool[$0] })
                } catch let error as TaskDefinitionError {
                    throw TaskDefinitionError(error.reason, "task \(task.name), example \(index + 1) (line \(example.line)): \(error.message)")
                }
            }
            evaluation = task.outputType == .generateUntil
                ? try generation(task, examples, prompts)
                : try likelihoods(task, examples, prompts, assembly)
            let truncated = prompts.filter(\.wasTruncated).count
            let meanDemonstrations = prompts.isEmpty ? 0 : Double(prompts.reduce(0) { $0 + $1.demonstrations }) / Double(prompts.count)
            for i in evaluation.results.indices {
                evaluation.results[i].truncated = truncated
                evaluation.results[i].meanDemonstrations = meanDemonstrations
            }
        }
        for i in evaluation.results.indices { evaluation.results[i].shots = shots }
        for i in evaluation.samples.indices { evaluation.samples[i]["shots"] = shots }
        evaluation.seconds = Date().timeIntervalSince(start)
        return evaluation
    }

    private func result(_ task: EvaluationTask, _ metric: String, _ values: [Double]) -> EvaluationResult {
        let (value, error) = EvaluationMetrics.mean(values)
        return EvaluationResult(task: task.name, shots: 0, metric: metric, value: value, standardError: error,
                                examples: values.count, truncated: 0)
    }

    private func record(_ task: EvaluationTask, _ example: EvaluationExample, _ index: Int, _ prompt: AssembledPrompt) -> [String: Any] {
        ["task": task.name, "index": index, "line": example.line, "prompt": prompt.text,
         "demonstrations": prompt.demonstrations, "truncated": prompt.wasTruncated]
    }

    /// Multiple choice and loglikelihood: every continuation scored after its prompt.
    private func likelihoods(_ task: EvaluationTask, _ examples: [EvaluationExample], _ prompts: [AssembledPrompt],
                             _ assembly: PromptAssembly) throws -> TaskEvaluation {
        let scores = try scorer.score(prompts.map { ScoringRequest(context: $0.context, continuations: $0.continuations) })
        var samples: [[String: Any]] = []
        if task.outputType == .loglikelihood {
            var accuracy: [Double] = [], likelihood: [Double] = []
            for (index, example) in examples.enumerated() {
                let score = scores[index][0]
                accuracy.append(score.isGreedy ? 1 : 0)
                likelihood.append(score.logLikelihood)
                var sample = record(task, example, index, prompts[index])
                sample["target"] = assembly.continuationTexts(example)[0]
                sample["loglikelihood"] = score.logLikelihood
                sample["is_greedy"] = score.isGreedy
                samples.append(sample)
            }
            var perplexity = result(task, "perplexity", likelihood)
            perplexity.value = Foundation.exp(-perplexity.value)
            perplexity.standardError = nil
            return TaskEvaluation(results: [result(task, "acc", accuracy), perplexity], samples: samples, seconds: 0)
        }
        let unconditional = try unconditionalScores(task, examples, assembly)
        var accuracy: [Double] = [], normalized: [Double] = [], calibrated: [Double] = []
        for (index, example) in examples.enumerated() {
            let likelihoods = scores[index].map(\.logLikelihood)
            let gold = example.gold!
            let predicted = Self.argmax(likelihoods)
            let byLength = Self.argmax(zip(likelihoods, example.choices).map { $0 / Double($1.unicodeScalars.count) })
            accuracy.append(predicted == gold ? 1 : 0)
            normalized.append(byLength == gold ? 1 : 0)
            var sample = record(task, example, index, prompts[index])
            sample["choices"] = assembly.continuationTexts(example)
            sample["loglikelihoods"] = likelihoods
            sample["is_greedy"] = scores[index].map(\.isGreedy)
            sample["gold"] = gold
            sample["prediction"] = predicted
            sample["prediction_norm"] = byLength
            if let unconditional {
                let neutral = example.choices.map { unconditional[$0]! }
                let adjusted = Self.argmax(zip(likelihoods, neutral).map { $0 - $1 })
                calibrated.append(adjusted == gold ? 1 : 0)
                sample["unconditional_loglikelihoods"] = neutral
                sample["prediction_uncond"] = adjusted
            }
            samples.append(sample)
        }
        var results = [result(task, "acc", accuracy), result(task, "acc_norm", normalized)]
        if unconditional != nil { results.append(result(task, "acc_uncond", calibrated)) }
        return TaskEvaluation(results: results, samples: samples, seconds: 0)
    }

    /// Each distinct choice's log-likelihood after the task's neutral prompt (nil without one).
    private func unconditionalScores(_ task: EvaluationTask, _ examples: [EvaluationExample],
                                     _ assembly: PromptAssembly) throws -> [String: Double]? {
        guard let prompt = task.unconditionalPrompt else { return nil }
        var distinct: [String] = [], seen = Set<String>()
        for example in examples { for choice in example.choices where seen.insert(choice).inserted { distinct.append(choice) } }
        let requests = try distinct.map { choice in
            let (context, continuations) = try assembly.encode(context: prompt, continuations: [task.targetDelimiter + choice])
            return ScoringRequest(context: context, continuations: continuations)
        }
        let scores = try scorer.score(requests)
        return Dictionary(uniqueKeysWithValues: zip(distinct, scores.map { $0[0].logLikelihood }))
    }

    /// Greedy generation until a stop sequence, compared with the target.
    private func generation(_ task: EvaluationTask, _ examples: [EvaluationExample], _ prompts: [AssembledPrompt]) throws -> TaskEvaluation {
        var options = SamplingOptions()
        options.temperature = 0
        options.maxNewTokens = task.maxNewTokens
        options.stop = task.stop.filter { !$0.isEmpty }
        var completions: [String] = []
        let batch = 16
        for start in stride(from: 0, to: prompts.count, by: batch) {
            let chunk = prompts[start..<min(start + batch, prompts.count)].map(\.context)
            completions += try generator.generate(prompts: chunk, options: options).map(\.text)
        }
        var exact: [Double] = [], f1: [Double] = [], samples: [[String: Any]] = []
        for (index, example) in examples.enumerated() {
            exact.append(EvaluationMetrics.exactMatch(completions[index], example.target))
            f1.append(EvaluationMetrics.tokenF1(completions[index], example.target))
            var sample = record(task, example, index, prompts[index])
            sample["target"] = example.target
            sample["completion"] = completions[index]
            sample["exact_match"] = exact[index]
            sample["f1"] = f1[index]
            samples.append(sample)
        }
        return TaskEvaluation(results: [result(task, "exact_match", exact), result(task, "f1", f1)], samples: samples, seconds: 0)
    }

    /// Documents scored in windows of the model's context; each window after the first keeps
    /// `rollingOverlap` of the context from the text before it and predicts the rest.
    private func rollingPerplexity(_ task: EvaluationTask, _ examples: [EvaluationExample]) throws -> TaskEvaluation {
        let length = model.config.contextLength
        let overlap = max(1, min(length, Int(task.rollingOverlap * Double(length))))
        var requests: [ScoringRequest] = [], owner: [Int] = [], tokenCounts: [Int] = []
        for (index, example) in examples.enumerated() {
            let tokens = try tokenizer.encode(example.target)
            tokenCounts.append(tokens.count)
            for window in RollingWindows.windows(tokens, prefix: tokenizer.endOfText, length: length, overlap: overlap) {
                requests.append(ScoringRequest(context: window.context, continuations: [window.predicted]))
                owner.append(index)
            }
        }
        let scores = try scorer.score(requests)
        var likelihood = [Double](repeating: 0, count: examples.count), scored = [Int](repeating: 0, count: examples.count)
        for (request, index) in owner.enumerated() {
            likelihood[index] += scores[request][0].logLikelihood
            scored[index] += scores[request][0].tokenCount
        }
        let total = likelihood.reduce(0, +)
        let bytes = examples.reduce(0) { $0 + $1.target.utf8.count }, words = examples.reduce(0) { $0 + EvaluationMetrics.wordCount($1.target) }
        let tokens = scored.reduce(0, +)
        func figure(_ metric: String, _ value: Double) -> EvaluationResult {
            EvaluationResult(task: task.name, shots: 0, metric: metric, value: value, standardError: nil, examples: examples.count, truncated: 0)
        }
        let samples: [[String: Any]] = examples.enumerated().map { index, example in
            ["task": task.name, "index": index, "line": example.line, "tokens": tokenCounts[index],
             "scored_tokens": scored[index], "loglikelihood": likelihood[index], "bytes": example.target.utf8.count,
             "words": EvaluationMetrics.wordCount(example.target)]
        }
        return TaskEvaluation(results: [
            figure("token_perplexity", Foundation.exp(-total / Double(max(tokens, 1)))),
            figure("word_perplexity", Foundation.exp(-total / Double(max(words, 1)))),
            figure("byte_perplexity", Foundation.exp(-total / Double(max(bytes, 1)))),
            figure("bits_per_byte", -total / Double(max(bytes, 1)) / Foundation.log(2)),
        ], samples: samples, seconds: 0)
    }

    /// Index of the largest value (the first of equals, as numpy's argmax).
    static func argmax(_ values: [Double]) -> Int {
        var best = 0
        for (i, v) in values.enumerated() where v > values[best] { best = i }
        return best
    }
}
