import Foundation
import XCTest
import GPTTraining
import GPTModels

/// Each training setting is declared once, in its table; configuration files, checkpoints and command lines are
/// read through the tables, so no property can be left out of one of them.
final class SettingTests: XCTestCase {
    private var gpt: URL { packageRoot.appendingPathComponent(".build/release/gpt") }

    /// The stored properties of `value`, by name.
    private func properties(_ value: Any) -> Set<String> { Set(Mirror(reflecting: value).children.compactMap(\.label)) }

    func testEveryPropertyHasASettingUnderItsOwnName() {
        XCTAssertEqual(properties(TrainingConfiguration()), Set(TrainingConfiguration.settings.map(\.key) + ["objective"]))
        XCTAssertEqual(properties(FineTuningSettings(task: .classification, train: "", dev: "")), Set(FineTuningSettings.settings.map(\.key)))
        XCTAssertEqual(properties(RewardModelingSettings(train: "", dev: "")), Set(RewardModelingSettings.settings.map(\.key)))
        XCTAssertEqual(properties(SupervisedFineTuningSettings(train: "", dev: "", chatTemplate: .default)),
                       Set(SupervisedFineTuningSettings.settings.map(\.key)))
        XCTAssertEqual(properties(PolicyOptimizationSettings(prompts: "", reward: "", chatTemplate: .default)),
                       Set(PolicyOptimizationSettings.settings.map(\.key)))
        let options = TrainingConfiguration.settings.compactMap(\.option)
        XCTAssertEqual(Set(options).count, options.count, "two settings share an option")
    }

    /// A configuration with every setting moved from its default reads back equal, each value under its key; an
    /// unknown key and a missing required one are errors that name them.
    func testEverySettingRoundTripsThroughJSON() throws {
        var c = TrainingConfiguration()
        (c.preset, c.layers, c.heads, c.width, c.context, c.dropout) = ("gpt2", 3, 4, 64, 32, 0.25)
        (c.attention, c.window, c.stride, c.summaries) = (["global", "local"], 8, 4, 2)
        (c.data, c.out, c.initFrom, c.batchSize, c.gradientAccumulation, c.maxIterations) = ("d", "o", "m", 3, 2, 7)
        (c.learningRate, c.minLearningRate, c.warmupIterations, c.decayIterations, c.schedule) = (2e-3, 1e-5, 3, 6, .linear)
        (c.beta1, c.beta2, c.epsilon, c.weightDecay, c.gradientClip) = (0.8, 0.9, 1e-6, 0.2, 0.5)
        (c.evalInterval, c.evalIterations, c.logInterval, c.seed, c.precision) = (5, 2, 1, 42, .float32)
        (c.shardOptimizer, c.rankTimeout, c.keepCheckpoints) = (true, 12.5, 3)
        (c.loraRank, c.loraAlpha, c.loraDropout, c.loraTargets, c.loraBasePrecision) = (4, 8, 0.1, ["attn", "mlp"], .int8)
        var ppo = PolicyOptimizationSettings(prompts: "p", reward: "r", chatTemplate: .default)
        (ppo.iterations, ppo.targetKL, ppo.klEstimator, ppo.whitenScores, ppo.pretrainingData, ppo.heldOutPrompts) = (3, 6, .k3, true, "ptx", 2)
        c.objective = .policyOptimization(ppo)
        for (name, value) in Mirror(reflecting: c).children where name != "objective" {
            XCTAssertNotEqual("\(value)", "\(Mirror(reflecting: TrainingConfiguration()).children.first { $0.label == name }!.value)",
                              "\(name!) is at its default: the round trip would not show it is read")
        }
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as! [String: Any]
        XCTAssertEqual(json["batchSize"] as? Int, 3)
        XCTAssertEqual(((json["objective"] as? [String: Any])?["policyOptimization"] as? [String: Any])?["targetKL"] as? Double, 6)
        XCTAssertEqual(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONEncoder().encode(c)), c)

        // Unset optional settings are left out, and a file without them reads them as unset.
        let defaults = try JSONSerialization.jsonObject(with: JSONEncoder().encode(TrainingConfiguration())) as! [String: Any]
        XCTAssertNil(defaults["layers"])
        XCTAssertEqual(try JSONDecoder().decode(TrainingConfiguration.self, from: Data("{}".utf8)), TrainingConfiguration())

        XCTAssertThrowsError(try JSONDecoder().decode(TrainingConfiguration.self, from: Data(#"{"batchsize": 3}"#.utf8))) {
            guard case DecodingError.dataCorrupted(let context) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(context.codingPath.last?.stringValue, "batchsize")
        }
        XCTAssertThrowsError(try JSONDecoder().decode(TrainingConfiguration.self, from: Data(#"{"objective": {"fineTuning": {"task": "classification", "train": "t"}}}"#.utf8))) {
            guard case DecodingError.keyNotFound(let key, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(key.stringValue, "dev")
        }
        XCTAssertThrowsError(try JSONDecoder().decode(TrainingConfiguration.self, from: Data(#"{"batchSize": "3"}"#.utf8))) {
            guard case DecodingError.typeMismatch = $0 else { return XCTFail("\($0)") }
        }
    }

    /// PPO checkpoints written before held-out prompts existed held none back, and resume so.
    func testAnAbsentSettingCanReadAsAnotherValueThanItsDefault() throws {
        var settings = PolicyOptimizationSettings(prompts: "p", reward: "r", chatTemplate: .default)
        var c = TrainingConfiguration()
        c.objective = .policyOptimization(settings)
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as! [String: Any]
        var objective = json["objective"] as! [String: Any], stored = objective["policyOptimization"] as! [String: Any]
        XCTAssertEqual(stored["heldOutPrompts"] as? Int, 32)
        stored["heldOutPrompts"] = nil
        objective["policyOptimization"] = stored
        json["objective"] = objective
        settings.heldOutPrompts = 0
        c.objective = .policyOptimization(settings)
        XCTAssertEqual(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONSerialization.data(withJSONObject: json)), c)
    }

    /// Command-line text reaches each kind of value; text that spells none is refused.
    func testSettingsReadCommandLineText() {
        var c = TrainingConfiguration()
        let table = TrainingConfiguration.settings
        XCTAssertTrue(table[key: "batchSize"].set("7", in: &c))
        XCTAssertTrue(table[key: "learningRate"].set("2e-4", in: &c))
        XCTAssertTrue(table[key: "rankTimeout"].set("-5", in: &c))
        XCTAssertTrue(table[key: "attention"].set("global, local", in: &c))
        XCTAssertTrue(table[key: "schedule"].set("linear", in: &c))
        XCTAssertTrue(table[key: "shardOptimizer"].set("true", in: &c))
        XCTAssertTrue(table[key: "layers"].set("2", in: &c))
        XCTAssertEqual([c.batchSize, c.layers], [7, 2])
        XCTAssertEqual(c.learningRate, 2e-4)
        XCTAssertEqual(c.rankTimeout, -5)
        XCTAssertEqual(c.attention, ["global", "local"])
        XCTAssertEqual(c.schedule, .linear)
        XCTAssertTrue(c.shardOptimizer)
        for (key, text) in [("batchSize", "7.5"), ("batchSize", ""), ("learningRate", "nan"), ("learningRate", "inf"),
                            ("seed", "-1"), ("schedule", "step"), ("shardOptimizer", "yes"), ("precision", "fp16")] {
            XCTAssertFalse(table[key: key].set(text, in: &c), "\(key) = '\(text)'")
        }
        XCTAssertEqual(PolicyOptimizationSettings.settings[key: "targetKL"].option, "target-kl")
        XCTAssertEqual(table[key: "beta1"].option, "beta1")
        XCTAssertEqual(table[key: "gradientAccumulation"].option, "gradient-accumulation")
    }

    /// `gpt train`'s options are the table's: each is listed by --help, reaches the run's stored configuration
    /// (`--name value`, `--name=value`, a flag alone), and overrides --config's file; misspelt, malformed or
    /// misplaced options are refused before any work.
    func testTheCommandLineTakesTheTablesSettings() throws {
        try XCTSkipIf(!FileManager.default.fileExists(atPath: gpt.path), "no release build of gpt (make build)")
        let help = try runCapturingOutput(gpt, ["train", "--help"])
        for setting in TrainingConfiguration.settings {
            XCTAssertTrue(help.output.contains("--\(setting.option!)"), "--help lacks --\(setting.option!)")
        }
        let ppoHelp = try runCapturingOutput(gpt, ["ppo", "--help"]).output
        for setting in PolicyOptimizationSettings.settings where setting.option != nil {
            XCTAssertTrue(ppoHelp.contains("--\(setting.option!)"), "gpt ppo --help lacks --\(setting.option!)")
        }

        let folder = try temporaryDirectory(self)
        let data = folder.appendingPathComponent("chars")
        let prepared = try runCapturingOutput(gpt, ["prepare", "--tokenizer", "char", "--out", data.path,
                                                    packageRoot.appendingPathComponent("data/tinyshakespeare/input.txt").path])
        XCTAssertEqual(prepared.status, 0, prepared.output)
        let config = folder.appendingPathComponent("config.json")
        try Data(#"{"batchSize": 5, "seed": 9, "logInterval": 3}"#.utf8).write(to: config)
        let out = folder.appendingPathComponent("run")
        let run = try runCapturingOutput(gpt, ["train", "--config", config.path, "--data", data.path, "--out=\(out.path)",
                                               "--max-iterations", "1", "--eval-iterations", "1", "--layers", "1",
                                               "--width", "32", "--heads", "2", "--context", "16", "--batch-size", "2",
                                               "--learning-rate=3e-3", "--precision", "fp32", "--keep-checkpoints", "1"])
        XCTAssertEqual(run.status, 0, run.output)
        let state = try JSONDecoder().decode(TrainingCheckpoint.State.self,
                                             from: Data(contentsOf: out.appendingPathComponent("last/training_state.json")))
        var expected = TrainingConfiguration()
        (expected.data, expected.out, expected.maxIterations, expected.evalIterations) = (data.path, out.path, 1, 1)
        (expected.layers, expected.width, expected.heads, expected.context) = (1, 32, 2, 16)
        (expected.batchSize, expected.seed, expected.logInterval) = (2, 9, 3)
        (expected.learningRate, expected.precision, expected.keepCheckpoints) = (3e-3, .float32, 1)
        XCTAssertEqual(state.configuration, expected)

        for (arguments, message) in [
            (["--batch-size", "two"], "the value 'two' of --batch-size is not an integer"),
            (["--batchsize", "2"], "unknown option '--batchsize'"),
            (["--schedule", "step"], "is not one of cosine, linear"),
            (["--batch-size"], "missing value for '--batch-size'"),
            (["stray"], "unexpected argument 'stray'"),
        ] {
            let refused = try runCapturingOutput(gpt, ["train", "--data", data.path, "--out", folder.appendingPathComponent("x").path] + arguments)
            XCTAssertEqual(refused.status, 64, "\(arguments): \(refused.output)")
            XCTAssertTrue(refused.output.contains(message), "\(arguments): \(refused.output)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("x").path))
        let resumed = try runCapturingOutput(gpt, ["train", "--resume", "--out", out.path, "--batch-size", "3"])
        XCTAssertEqual(resumed.status, 64, resumed.output)
        XCTAssertTrue(resumed.output.contains("--batch-size cannot be given with it"), resumed.output)
        let missing = try runCapturingOutput(gpt, ["finetune", "--task", "classification", "--out", out.path])
        XCTAssertEqual(missing.status, 64, missing.output)
        XCTAssertTrue(missing.output.contains("a new run needs --train, --dev, --model"), missing.output)
    }
}
