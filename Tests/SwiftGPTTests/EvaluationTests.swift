import Foundation
import SwiftGPT
import TensorCore
import XCTest

final class EvaluationTests: XCTestCase {
    let base = URL(fileURLWithPath: "/tmp")

    func task(_ object: [String: Any]) throws -> EvaluationTask {
        var fields: [String: Any] = ["output_type": "multiple_choice", "data": "unused.jsonl", "template": "{q}",
                                     "choices": [" no", " yes"], "answer": "{label}"]
        fields.merge(object) { $1 }
        return try EvaluationTask(object: fields, defaultName: "test", dataBase: base)
    }

    func testPromptRenderingIsByteForByte() throws {
        let t = try task(["description": "Answer the questions.\n\n", "template": "Q: {q}\nA:", "target_delimiter": "",
                          "fewshot_delimiter": "\n\n"])
        let demos = [try t.example(line: 1, ["q": "one", "label": 1]), try t.example(line: 2, ["q": "two", "label": 0])]
        let query = try t.example(line: 3, ["q": "three", "label": 1])
        let assembly = PromptAssembly(task: t, tokenizer: try TokenizerLoading.gpt2(), contextLength: 1024)
        XCTAssertEqual(assembly.text(query: query, demonstrations: demos),
                       "Answer the questions.\n\nQ: one\nA: yes\n\nQ: two\nA: no\n\nQ: three\nA:")
        XCTAssertEqual(assembly.text(query: query, demonstrations: []), "Answer the questions.\n\nQ: three\nA:")
        XCTAssertEqual(assembly.continuationTexts(query), [" no", " yes"])
        // The default target delimiter is a space, put between the prompt and every choice.
        let spaced = try task(["template": "{q}:", "choices": ["no", "yes"]])
        let example = try spaced.example(line: 1, ["q": "x", "label": 0])
        let spacedAssembly = PromptAssembly(task: spaced, tokenizer: try TokenizerLoading.gpt2(), contextLength: 1024)
        XCTAssertEqual(spacedAssembly.text(query: example, demonstrations: [example]), "x: no\n\nx:")
        XCTAssertEqual(spacedAssembly.continuationTexts(example), [" no", " yes"])
    }

    func testBuiltInTasksRenderLmEvaluationHarnessPrompts() throws {
        let copa = try EvaluationTask.load(file: EvaluationTask.builtInURL("copa"), dataBase: base)
        let example = try copa.example(line: 1, ["context": "The man broke his toe. ", "question": "cause",
                                                 "choices": ["He dropped a hammer on his foot.", "Ok."], "label": 0])
        XCTAssertEqual(example.query, "The man broke his toe because")
        XCTAssertEqual(example.choices, [" he dropped a hammer on his foot.", " ok."])
        XCTAssertEqual(example.gold, 0)
        let sst2 = try EvaluationTask.load(file: EvaluationTask.builtInURL("sst2"), dataBase: base)
        let review = try sst2.example(line: 1, ["text": "a gem", "label": 1])
        XCTAssertEqual(review.query, "a gem\nQuestion: Is this sentence positive or negative?\nAnswer:")
        XCTAssertEqual(review.choices, [" negative", " positive"])
        XCTAssertEqual(review.gold, 1)
        let rte = try EvaluationTask.load(file: EvaluationTask.builtInURL("rte"), dataBase: base)
        let pair = try rte.example(line: 1, ["premise": "P.", "hypothesis": "H.", "label": 0])
        XCTAssertEqual(pair.query, "P.\nQuestion: H. True or False?\nAnswer:")
        XCTAssertEqual(pair.choices[pair.gold!], " True")
        XCTAssertEqual(Set(EvaluationTask.builtInNames), ["copa", "mrpc", "noisy-label", "rte", "sst2"])
    }

    /// Built-in tasks find their data from any directory (the checkout the tool was built from), not only from
    /// the project root.
    func testBuiltInTasksFindTheirDataFromAnyDirectory() throws {
        let here = FileManager.default.currentDirectoryPath
        defer { _ = FileManager.default.changeCurrentDirectoryPath(here) }
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(try temporaryDirectory(self).path))
        for name in ["sst2", "copa"] {
            let task = try EvaluationTask.load(name)
            XCTAssertTrue(FileManager.default.fileExists(atPath: task.data.path), task.data.path)
            XCTAssertFalse(try task.examples().isEmpty)
        }
    }

    func testTemplateErrorsNameTheFieldAndTheFile() throws {
        assertThrows(TaskDefinitionError.self, .invalidTemplate, try PromptTemplate("{a|shout}"))
        assertThrows(TaskDefinitionError.self, .invalidTemplate, try PromptTemplate("{a"))
        XCTAssertEqual(try PromptTemplate("{{x}} {a}").render(["a": 3]), "{x} 3")
        assertThrows(TaskDefinitionError.self, .invalidExample, try PromptTemplate("{q|map:a=b}").render(["q": "c"]))
        assertThrows(TaskDefinitionError.self, .invalidField("output_type"), try task(["output_type": "ranking"]))
        assertThrows(TaskDefinitionError.self, .invalidField("templat"), try task(["templat": "{q}"]))
        assertThrows(TaskDefinitionError.self, .invalidField("choices"), try task(["choices": 3]))

        let dir = try temporaryDirectory(self)
        try Data("{\"q\": \"fine\", \"label\": 1}\n{\"label\": 0}\n".utf8).write(to: dir.appendingPathComponent("data.jsonl"))
        try Data("{\"output_type\": \"multiple_choice\", \"data\": \"data.jsonl\", \"template\": \"{q}\", \"choices\": [\"a\", \"b\"], \"answer\": \"{label}\"}".utf8)
            .write(to: dir.appendingPathComponent("t.json"))
        let loaded = try EvaluationTask.load(dir.appendingPathComponent("t.json").path)
        let missingField = assertFileError(.malformed(line: 2), "data.jsonl", try loaded.examples())
        XCTAssertEqual(missingField?.message.hasPrefix("line 2: no field \"q\""), true, "\(String(describing: missingField))")
        try Data("{\"output_type\": \"multiple_choice\", \"data\": \"data.jsonl\", \"template\": \"{q}\", \"choices\": [\"a\", \"b\"]}".utf8)
            .write(to: dir.appendingPathComponent("u.json"))
        assertFileError(.malformed(line: nil), "u.json", try EvaluationTask.load(dir.appendingPathComponent("u.json").path))
        assertThrows(TaskDefinitionError.self, .unknownTask, try EvaluationTask.load("no-such-task"))
    }

    func testFewShotSamplingIsDeterministicAndNeverTheQuery() {
        let sampler = FewShotSampler(poolSize: 10, poolIsData: true, seed: 7)
        for query in 0..<10 {
            let drawn = sampler.sample(5, forQuery: query)
            XCTAssertEqual(drawn, sampler.sample(5, forQuery: query))
            XCTAssertEqual(drawn.count, 5)
            XCTAssertEqual(Set(drawn).count, 5)
            XCTAssertFalse(drawn.contains(query))
        }
        XCTAssertEqual(sampler.sample(9, forQuery: 3).sorted(), [0, 1, 2, 4, 5, 6, 7, 8, 9])
        XCTAssertNotEqual(sampler.sample(5, forQuery: 0), FewShotSampler(poolSize: 10, poolIsData: true, seed: 8).sample(5, forQuery: 0))
        XCTAssertEqual(FewShotSampler(poolSize: 3, poolIsData: false, seed: 1).sample(3, forQuery: 0).sorted(), [0, 1, 2])
    }

    /// A tiny GPT-2-vocabulary model and the scorer's answers against log-softmax sums of a full forward pass.
    func testScoresEqualLogSoftmaxSumsOfAFullPass() throws {
        var config = GPTConfig(vocabularySize: 50257, contextLength: 32, layerCount: 2, headCount: 2, embeddingWidth: 16)
        try checkScores(try GPTModel(config: config, seed: 5))
        // A local layer of window 2: its cache is a ring of 4 positions, and feeds go in chunks of 2 tokens.
        config.attentionPatterns = [.local(window: 2), .dense]
        try checkScores(try GPTModel(config: config, seed: 5))
    }

    private func checkScores(_ model: GPTModel) throws {
        let context: [Int32] = [464, 3290, 318, 257], choices: [[Int32]] = [[922], [1263, 290, 11], [4171, 13]]
        let scored = try LoglikelihoodScorer(model: model, slots: 4).score([
            ScoringRequest(context: context, continuations: choices),
            ScoringRequest(context: [50256], continuations: [[11, 12, 13, 14]]),
        ])
        func reference(_ context: [Int32], _ continuation: [Int32]) -> (Double, Bool) {
            let ids = context + continuation.dropLast()
            let rows = logits(model, ids, batch: 1)
            var total = 0.0, greedy = true
            for (i, token) in continuation.enumerated() {
                let row = Array(rows.scalars[(context.count - 1 + i) * 50257..<(context.count + i) * 50257]).map(Double.init)
                let m = row.max()!
                let logSum = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) }) + m
                total += row[Int(token)] - logSum
                greedy = greedy && row.firstIndex(of: m)! == Int(token)
            }
            return (total, greedy)
        }
        for (i, choice) in choices.enumerated() {
            let (expected, greedy) = reference(context, choice)
            XCTAssertEqual(scored[0][i].logLikelihood, expected, accuracy: 1e-4)
            XCTAssertEqual(scored[0][i].isGreedy, greedy)
            XCTAssertEqual(scored[0][i].tokenCount, choice.count)
        }
        XCTAssertEqual(scored[1][0].logLikelihood, reference([50256], [11, 12, 13, 14]).0, accuracy: 1e-4)
        // The cache reuse across choices and requests gives what one request at a time, one slot each, gives.
        let alone = try LoglikelihoodScorer(model: model, slots: 3).score(choices.map { ScoringRequest(context: context, continuations: [$0]) })
        for i in choices.indices { XCTAssertEqual(alone[i][0].logLikelihood, scored[0][i].logLikelihood, accuracy: 1e-5) }
        // A bfloat16 cache (`gpt eval --cache-precision bf16`) scores from rounded keys and values: near, not equal.
        let rounded = try LoglikelihoodScorer(model: model, slots: 4, cachePrecision: .bfloat16)
            .score([ScoringRequest(context: context, continuations: choices)])
        for i in choices.indices {
            XCTAssertNotEqual(rounded[0][i].logLikelihood, scored[0][i].logLikelihood)
            XCTAssertEqual(rounded[0][i].logLikelihood, scored[0][i].logLikelihood, accuracy: 2e-2)
        }
        assertThrows(GenerationError.self, .exceedsContext,
                     try LoglikelihoodScorer(model: model, slots: 2).score([ScoringRequest(context: Array(repeating: 1, count: 30), continuations: [[1, 2, 3, 4]])]))
    }

    func testContinuationsAreSplitAsLmEvaluationHarnessDoes() throws {
        let t = try task(["template": "{q}"])
        let tokenizer = try TokenizerLoading.gpt2()
        let assembly = PromptAssembly(task: t, tokenizer: tokenizer, contextLength: 1024)
        // The trailing space moves to the continuation: "Answer:" + " yes" rather than "Answer: " + "yes".
        let (context, continuations) = try assembly.encode(context: "Answer: ", continuations: ["yes", "no way"])
        XCTAssertEqual(context, try tokenizer.encode("Answer:"))
        XCTAssertEqual(continuations[0], try tokenizer.encode(" yes"))
        XCTAssertEqual(continuations[1], try tokenizer.encode(" no way"))
        let (empty, _) = try assembly.encode(context: "", continuations: ["x"])
        XCTAssertEqual(empty, [50256])
    }

    func testLongPromptsDropDemonstrationsThenCutFromTheLeft() throws {
        let t = try task(["template": "{q}", "target_delimiter": " ", "choices": ["yes", "no"]])
        let tokenizer = try TokenizerLoading.gpt2()
        let demo = try t.example(line: 1, ["q": String(repeating: "word ", count: 20), "label": 0])
        let short = try t.example(line: 2, ["q": "short question", "label": 0])
        let assembly = PromptAssembly(task: t, tokenizer: tokenizer, contextLength: 50)
        let fits = try assembly.assemble(query: short, demonstrations: [demo, demo, demo])
        XCTAssertEqual(fits.demonstrations, 2)
        XCTAssertEqual(fits.droppedDemonstrations, 1)
        XCTAssertFalse(fits.truncatedLeft)
        XCTAssertLessThanOrEqual(fits.context.count + 1 - 1, 50)
        let long = try t.example(line: 3, ["q": String(repeating: "long ", count: 80) + "end", "label": 1])
        let cut = try assembly.assemble(query: long, demonstrations: [demo])
        XCTAssertEqual(cut.demonstrations, 0)
        XCTAssertTrue(cut.truncatedLeft)
        XCTAssertEqual(cut.context.count, 50)
        let (full, _) = try assembly.encode(context: long.query, continuations: [" yes"])
        XCTAssertEqual(cut.context, Array(full.suffix(50)))
    }

    func testRollingWindowsScoreEveryTokenOnce() {
        let tokens = (0..<37).map(Int32.init)
        for overlap in [1, 4, 8] {
            let windows = RollingWindows.windows(tokens, prefix: 99, length: 8, overlap: overlap)
            XCTAssertEqual(windows.flatMap(\.predicted), tokens)
            XCTAssertEqual(windows[0].context, [99])
            for window in windows {
                XCTAssertLessThanOrEqual(window.context.count + window.predicted.count - 1, 8)
                if window != windows[0] {
                    let start = Int(window.predicted[0])
                    XCTAssertEqual(window.context, Array(tokens[max(0, start + window.predicted.count - 9)..<start]))
                }
            }
        }
        XCTAssertEqual(RollingWindows.windows(tokens, prefix: nil, length: 8, overlap: 1).flatMap(\.predicted), Array(tokens.dropFirst()))
    }

    func testMetrics() {
        XCTAssertEqual(EvaluationMetrics.exactMatch("The Eiffel tower!", "eiffel  Tower"), 1)
        XCTAssertEqual(EvaluationMetrics.tokenF1("a red big car", "the big red bus"), 2.0 / 3.0, accuracy: 1e-12)
        XCTAssertEqual(EvaluationMetrics.wordCount("two words"), 2)
        XCTAssertEqual(EvaluationMetrics.wordCount(" lead\nand  trail "), 5)
        let (mean, error) = EvaluationMetrics.mean([1, 0, 1, 1])
        XCTAssertEqual(mean, 0.75)
        XCTAssertEqual(error!, (0.25 / 4).squareRoot(), accuracy: 1e-12)
    }

    func testEvaluatorEndToEndAndErrors() throws {
        let dir = try temporaryDirectory(self)
        try NoisyLabelTask().write(to: dir, episodes: 0, queries: 2, demonstrations: 4)
        let task = try EvaluationTask.load(dir.appendingPathComponent("noisy-label.json").path)
        let examples = try task.examples(), pool = try task.examples(from: task.fewShotData)
        let tokenizer = try CharacterTokenizer(characters: Array("abcdefghijklmnopqrstuvwxyz0123456789=\n".unicodeScalars))
        let model = try GPTModel(config: GPTConfig(vocabularySize: 38, contextLength: 64, layerCount: 1, headCount: 2, embeddingWidth: 8), seed: 2)
        let evaluator = Evaluator(model: model, tokenizer: tokenizer)
        let run = try evaluator.evaluate(task, shots: 3, examples: examples, pool: pool, poolIsData: false, seed: 1)
        XCTAssertEqual(run.results.map(\.metric), ["acc", "acc_norm"])
        XCTAssertEqual(run.results.map(\.meanDemonstrations), [3, 3], "every prompt holds its 3 demonstrations")
        XCTAssertEqual(run.samples.count, 20)
        // A context too short for the demonstrations: the figures say how many the prompts really held.
        let short = try GPTModel(config: GPTConfig(vocabularySize: 38, contextLength: 8, layerCount: 1, headCount: 2, embeddingWidth: 8), seed: 2)
        let cramped = try Evaluator(model: short, tokenizer: tokenizer).evaluate(task, shots: 3, examples: examples, pool: pool, poolIsData: false, seed: 1)
        let held = Double(cramped.samples.reduce(0) { $0 + ($1["demonstrations"] as! Int) }) / Double(cramped.samples.count)
        XCTAssertLessThan(held, 3)
        XCTAssertEqual(cramped.results[0].meanDemonstrations, held, accuracy: 1e-12)
        XCTAssertEqual(cramped.results[0].truncated, cramped.samples.filter { $0["truncated"] as! Bool }.count)
        let again = try evaluator.evaluate(task, shots: 3, examples: examples, pool: pool, poolIsData: false, seed: 1)
        XCTAssertEqual(run.results, again.results)
        let first = run.samples[0]
        XCTAssertEqual((first["prompt"] as! String).split(separator: "\n").count, 4)
        XCTAssertEqual(first["loglikelihoods"] as! [Double], again.samples[0]["loglikelihoods"] as! [Double])
        // Demonstrations come from the query's own episode only.
        for sample in run.samples {
            let episode = examples[sample["index"] as! Int].group!
            let lines = (sample["prompt"] as! String).split(separator: "\n").dropLast()
            let shown = pool.filter { $0.group == episode }.map { $0.query + $0.choices[$0.gold!] }
            for line in lines { XCTAssert(shown.contains(String(line)), "\(line) is not from episode \(episode)") }
        }
        assertThrows(TaskDefinitionError.self, .invalidShots, try evaluator.evaluate(task, shots: 5, examples: examples, pool: pool, poolIsData: false, seed: 1))
        XCTAssertThrowsError(try evaluator.evaluate(task, shots: 2, examples: examples, pool: examples, poolIsData: true, seed: 1))
    }

    func testShippedNoisyLabelDataIsTheGeneratorsOutput() throws {
        let dir = try temporaryDirectory(self)
        try NoisyLabelTask().write(to: dir, episodes: 0, queries: 20, demonstrations: 40)
        let shipped = packageRoot.appendingPathComponent("data/noisy-label")
        for name in ["eval.jsonl", "pool.jsonl"] {
            XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent(name)), try Data(contentsOf: shipped.appendingPathComponent(name)), name)
        }
    }

    /// Rolling perplexity over several windows equals the per-token log-probabilities of one full pass; the other
    /// output types run end to end on a small model.
    func testRollingPerplexityLoglikelihoodAndGenerationTasks() throws {
        let dir = try temporaryDirectory(self)
        let text = "to be or not to be that is the question whether tis nobler in the mind to suffer"
        try Data(text.utf8).write(to: dir.appendingPathComponent("doc.txt"))
        let tokenizer = try TokenizerLoading.gpt2()
        let model = try GPTModel(config: GPTConfig(vocabularySize: 50257, contextLength: 8, layerCount: 1, headCount: 2, embeddingWidth: 16), seed: 9)
        let rolling = try EvaluationTask(object: ["output_type": "rolling_perplexity", "data": "doc.txt", "rolling_overlap": 0.0],
                                         defaultName: "doc", dataBase: dir)
        let run = try Evaluator(model: model, tokenizer: tokenizer).evaluate(rolling, shots: 0, examples: try rolling.examples(), pool: [], poolIsData: true, seed: 0)
        let tokens = try tokenizer.encode(text)
        XCTAssertGreaterThan(tokens.count, 8)
        XCTAssertEqual(run.samples[0]["scored_tokens"] as? Int, tokens.count)
        // The reference: each window's tokens scored by a full pass over that window alone.
        var expected = 0.0
        for window in RollingWindows.windows(tokens, prefix: 50256, length: 8, overlap: 1) {
            let ids = window.context + window.predicted.dropLast()
            let rows = logits(model, ids, batch: 1)
            for (i, token) in window.predicted.enumerated() {
                let row = Array(rows.scalars[(window.context.count - 1 + i) * 50257..<(window.context.count + i) * 50257]).map(Double.init)
                let m = row.max()!
                expected += row[Int(token)] - m - Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            }
        }
        XCTAssertEqual(run.samples[0]["loglikelihood"] as! Double, expected, accuracy: 1e-3)
        let byToken = run.results.first { $0.metric == "token_perplexity" }!.value
        XCTAssertEqual(byToken, Foundation.exp(-expected / Double(tokens.count)), accuracy: 1e-3 * byToken)
        let words = run.results.first { $0.metric == "word_perplexity" }!.value
        XCTAssertEqual(words, Foundation.exp(-expected / 18), accuracy: 1e-3 * words)

        try Data("{\"q\": \"to be or\", \"a\": \"not\"}\n{\"q\": \"the\", \"a\": \"mind\"}\n".utf8).write(to: dir.appendingPathComponent("qa.jsonl"))
        let likelihood = try EvaluationTask(object: ["output_type": "loglikelihood", "data": "qa.jsonl", "template": "{q}", "answer": "{a}"],
                                            defaultName: "qa", dataBase: dir)
        let scored = try Evaluator(model: model, tokenizer: tokenizer).evaluate(likelihood, shots: 1, examples: try likelihood.examples(),
                                                                                pool: try likelihood.examples(), poolIsData: true, seed: 0)
        XCTAssertEqual(scored.results.map(\.metric), ["acc", "perplexity"])
        XCTAssertEqual(scored.samples[0]["prompt"] as? String, "the mind\n\nto be or")
        let generate = try EvaluationTask(object: ["output_type": "generate_until", "data": "qa.jsonl", "template": "{q}", "answer": "{a}",
                                                   "max_new_tokens": 3, "stop": ["."]], defaultName: "qa", dataBase: dir)
        let generated = try Evaluator(model: model, tokenizer: tokenizer).evaluate(generate, shots: 0, examples: try generate.examples(),
                                                                                   pool: [], poolIsData: true, seed: 0)
        let greedy = try Generator(model: model, tokenizer: tokenizer).generate(prompts: [try tokenizer.encode("to be or")], options: {
            var o = SamplingOptions(); o.temperature = 0; o.maxNewTokens = 3; o.stop = ["."]; return o }())
        XCTAssertEqual(generated.samples[0]["completion"] as? String, greedy[0].text)
        XCTAssertEqual(generated.results.map(\.metric), ["exact_match", "f1"])
    }

    /// scripts/lmeval_compare.py on a tiny random GPT-2: gpt eval against lm-evaluation-harness example by example,
    /// at 0 shots (both render the prompts) and at 2 shots (lm-eval's prompts). Skips without lm-eval.
    func testSameScoresAsLmEvaluationHarness() throws {
        try requirePython("lm_eval, lm_eval.models.huggingface", install: "pip install lm-eval accelerate")
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        for arguments in [["--task", "copa"], ["--task", "sst2", "--limit", "40", "--shots", "2"]] {
            let (status, output) = try runPythonScript("lmeval_compare.py", ["--model", "random-gpt2-tiny", "--gpt", gpt.path] + arguments)
            XCTAssertEqual(status, 0, output)
            XCTAssert(output.contains("SAME"), output)
        }
    }

    /// The same comparison with lm-eval scoring through `gpt serve` (its `local-completions` model: the completions
    /// API with `echo` and `logprobs`): the server's scores equal `gpt eval`'s. Skips without lm-eval's API extras.
    func testLmEvaluationHarnessThroughTheServerScoresAsGptEval() throws {
        try requirePython("lm_eval, lm_eval.models.huggingface, tenacity", install: "pip install 'lm-eval[api]' accelerate")
        let gpt = packageRoot.appendingPathComponent(".build/release/gpt")
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        for arguments in [["--task", "copa"], ["--task", "sst2", "--limit", "40", "--shots", "2"]] {
            let (status, output) = try runPythonScript("lmeval_compare.py", ["--model", "random-gpt2-tiny", "--gpt", gpt.path, "--server"] + arguments)
            XCTAssertEqual(status, 0, output)
            XCTAssert(output.contains("SAME"), output)
        }
    }
}
