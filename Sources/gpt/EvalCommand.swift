import ArgumentParser
import Foundation
import GPTUtilities
import SwiftGPT

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model in context: zero-, one- and few-shot, scored as lm-evaluation-harness scores.",
        discussion: """
        --task is a built-in task (\(EvaluationTask.builtInNames.joined(separator: ", ")); their data paths are \
        relative to the current directory, the project root) or a task file (JSON; data paths relative to it). \
        Prints a table (task, shots, metric, value, standard error) and the speed; --output writes the figures as \
        JSON, --log-samples every example's prompt and scores as JSON lines, --plot an SVG of the first metric \
        against the number of shots. Demonstrations are drawn per example from the task's few-shot pool with \
        --seed, never the example itself. See README ("In-context evaluation") for the task file format.
        """
    )

    @Option(help: "Model directory (a SwiftGPT checkpoint, a training output directory, a Hugging Face folder of a GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode model, or its Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there; see gpt pull), or a GGUF file of a GPT-2.") var model: String
    @Option(help: "A low-rank adapter to apply to the model: a PEFT LoRA folder, such as a training run's with --lora-rank (merged into the weights as they load).") var adapter: String?
    @Option(help: "Tokenizer (default: the one in the model directory, or gpt2).") var tokenizer: String?
    @Option(help: "Weights to score with, as decoding holds them: fp32, bf16, int8 (per output channel) or int4 (per 32 inputs).")
    var precision = WeightFormat.float32
    @Option(help: "Keys and values the cache keeps: fp32, or bf16 (half the memory, and half the bytes attention reads).")
    var cachePrecision = CachedAttention.Cache.Precision.float32
    @Option(help: "Task: a built-in name or a task file (repeatable; or comma-separated).") var task: [String]
    @Option(help: "Numbers of demonstrations, comma-separated.") var shots = "0"
    @Option(help: "Evaluate only the first N examples.") var limit: Int?
    @Option(help: "Seed of the demonstrations' draw.") var seed: UInt64 = 1234
    @Option(help: "Examples from this file instead of the task's data (same schema).") var data: String?
    @Option(help: "Demonstrations from this file instead of the task's few-shot pool (same schema).") var fewshotData: String?
    @Option(help: "Write the figures here (JSON).") var output: String?
    @Option(help: "Write one JSON line per example and number of shots here.") var logSamples: String?
    @Option(help: "Write an SVG of the metric against the number of shots here.") var plot: String?
    @Option(help: "The metric of --plot (default: the first of each task).") var plotMetric: String?

    func run() throws {
        let shotCounts = try shots.split(separator: ",").map { item -> Int in
            guard let count = Int(item.trimmingCharacters(in: .whitespaces)), count >= 0 else {
                throw ValidationError("--shots takes non-negative integers separated by commas, e.g. 0,1,5")
            }
            return count
        }
        guard !shotCounts.isEmpty else { throw ValidationError("--shots is empty") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        let names = task.flatMap { $0.split(separator: ",").map { String($0) } }
        guard !names.isEmpty else { throw ValidationError("give a task with --task") }
        if names.count > 1, data != nil || fewshotData != nil {
            throw ValidationError("--data and --fewshot-data apply to a single task")
        }
        let tasks = try names.map { try EvaluationTask.load($0) }
        let (gpt, tokenizer, weights) = try ModelLoading.loadForDecoding(model, tokenizer: self.tokenizer, adapter: adapter, format: precision)
        let evaluator = Evaluator(model: gpt, tokenizer: tokenizer, weights: weights, cachePrecision: cachePrecision)
        var results: [EvaluationResult] = [], speeds: [[String: Any]] = [], samples: [[String: Any]] = []
        for var task in tasks {
            if let data { task.data = URL(fileURLWithPath: data) }
            if let fewshotData { task.fewShotData = URL(fileURLWithPath: fewshotData) }
            let all = try task.examples()
            let examples = limit.map { Array(all.prefix($0)) } ?? all
            let poolURL = task.fewShotData ?? task.data
            let poolIsData = poolURL.standardizedFileURL == task.data.standardizedFileURL
            let pool = shotCounts.contains(where: { $0 > 0 }) ? (poolIsData ? all : try task.examples(from: poolURL)) : []
            for count in shotCounts {
                let evaluation = try evaluator.evaluate(task, shots: count, examples: examples, pool: pool,
                                                        poolIsData: poolIsData, seed: seed)
                results += evaluation.results
                samples += evaluation.samples
                speeds.append(["task": task.name, "shots": count, "examples": examples.count,
                               "seconds": evaluation.seconds, "examples_per_second": evaluation.examplesPerSecond])
                var line = "\(task.name) \(count)-shot: " + String(format: "%d examples in %.2f s (%.1f examples/s)",
                                                                    examples.count, evaluation.seconds, evaluation.examplesPerSecond)
                if let truncated = evaluation.results.first?.truncated, truncated > 0 {
                    line += ", \(truncated) prompt\(truncated == 1 ? "" : "s") cut to fit the context of \(gpt.config.contextLength)"
                }
                FileHandle.standardError.write(Data((line + "\n").utf8))
                if let warning = Self.shortfallWarning(evaluation.results.first, contextLength: gpt.config.contextLength) {
                    FileHandle.standardError.write(Data((warning + "\n").utf8))
                }
            }
        }
        print(Self.table(results))
        if let output {
            let document: [String: Any] = [
                "model": model, "seed": seed, "limit": limit as Any? ?? NSNull(), "shots": shotCounts,
                "results": results.map { result -> [String: Any] in
                    ["task": result.task, "shots": result.shots, "metric": result.metric, "value": result.value,
                     "stderr": result.standardError as Any? ?? NSNull(), "examples": result.examples, "truncated": result.truncated,
                     "mean_demonstrations": result.meanDemonstrations]
                },
                "speed": speeds,
            ]
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]),
                                 to: URL(fileURLWithPath: output))
        }
        if let logSamples { try JSONLinesOutput.write(samples, to: logSamples) }
        if let plot {
            let metric = plotMetric ?? results.first?.metric ?? "acc"
            let title = "\(URL(fileURLWithPath: model).lastPathComponent): \(metric) against shots"
            try AtomicFile.write(Data(ShotsPlot.svg(results, metric: metric, title: title).utf8), to: URL(fileURLWithPath: plot))
        }
    }

    /// A warning when the prompts of `result` held fewer demonstrations than its shots, on average, because whole
    /// demonstrations were dropped to fit the context.
    static func shortfallWarning(_ result: EvaluationResult?, contextLength: Int) -> String? {
        guard let result, result.shots > 0, result.meanDemonstrations < Double(result.shots) else { return nil }
        return "WARNING: \(result.task) " + String(format: "%d-shot: the prompts held %.2f demonstrations on average, not %d (%d of %d prompts lost "
                      + "demonstrations to the context of %d tokens); this row measures fewer shots than it is labelled with",
                      result.shots, result.meanDemonstrations, result.shots, result.truncated, result.examples, contextLength)
    }

    /// The figures as an aligned text table; "demos" is the mean number of demonstrations the prompts held.
    static func table(_ results: [EvaluationResult]) -> String {
        var rows = [["task", "shots", "demos", "metric", "value", "stderr", "examples", "truncated"]]
        for r in results {
            rows.append([r.task, String(r.shots), String(format: "%.2f", r.meanDemonstrations) + (r.meanDemonstrations < Double(r.shots) ? "!" : ""),
                         r.metric, String(format: "%.4f", r.value),
                         r.standardError.map { String(format: "%.4f", $0) } ?? "-", String(r.examples), String(r.truncated)])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max()! }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}

struct ICLDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "icl-data",
        abstract: "Write the synthetic noisy-label task: a pretraining corpus and an evaluation split.",
        discussion: """
        Each episode draws a random label (a digit) and shows lines "k7": a random letter, then the label, a \
        --noise fraction of them a random digit instead; episodes are separated by blank lines. Only the context \
        tells an episode's label, so accuracy with no demonstrations is chance and rises with their number. Writes \
        corpus.txt (pretraining text), eval.jsonl and pool.jsonl (ten episodes, labels 0-9 in random order: \
        queries and noisy demonstrations, grouped by the field "episode") and noisy-label.json (the task for gpt \
        eval) into --out. With the defaults, eval.jsonl and pool.jsonl are the files of the built-in task \
        noisy-label (data/noisy-label).
        """
    )

    @Option(help: "Output directory.") var out: String
    @Option(help: "Episodes in the pretraining corpus (0: none).") var episodes = 20000
    @Option(help: "Queries per evaluation episode.") var queries = 20
    @Option(help: "Demonstrations per evaluation episode in the pool.") var demonstrations = 40
    @Option(help: "Lines each pretraining episode shows.") var lines = 24
    @Option(help: "Fraction of lines with a random digit, in [0, 1).") var noise = 0.25
    @Option(help: "Random seed.") var seed: UInt64 = 1

    func run() throws {
        guard lines > 0, queries > 0, demonstrations > 0, episodes >= 0 else {
            throw ValidationError("--lines, --queries and --demonstrations must be positive, --episodes not negative")
        }
        guard noise >= 0, noise < 1 else { throw ValidationError("--noise must be in [0, 1)") }
        var task = NoisyLabelTask()
        task.linesPerEpisode = lines
        task.noise = noise
        task.seed = seed
        try task.write(to: URL(fileURLWithPath: out), episodes: episodes, queries: queries, demonstrations: demonstrations)
    }
}
