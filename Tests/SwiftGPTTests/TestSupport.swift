import Foundation
import SwiftGPT
import TensorCore
import XCTest

/// The golden folders: the project's own copy (always present) and, when it exists, `../shared/golden`.
enum Golden {
    static let names = ["gpt2-tiny", "openai-gpt-tiny", "gpt2-doubleheads-tiny", "gpt2-seqcls-tiny", "gpt2-regression-tiny", "gptneo-tiny",
                        "gptneox-tiny", "gptj-tiny", "gptbigcode-tiny"]

    static func bundled(_ name: String) -> URL {
        Bundle.module.url(forResource: "Resources", withExtension: nil)!.appendingPathComponent("golden/\(name)")
    }

    /// `../shared/golden/<name>` relative to the package root, or nil when the shared folder is absent.
    static func shared(_ name: String) -> URL? {
        let root = packageRoot
        let url = root.deletingLastPathComponent().appendingPathComponent("shared/golden/\(name)")
        return FileManager.default.fileExists(atPath: url.appendingPathComponent("expected.safetensors").path) ? url : nil
    }
}

/// A fresh temporary directory, removed at the end of the test.
func temporaryDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("swiftgpt-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Writes `lines` as the file `name` in `folder` (a JSONL file of test data), one a line.
func writeLines(_ lines: [String], _ name: String, in folder: URL) throws -> URL {
    let url = folder.appendingPathComponent(name)
    try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
    return url
}

/// Logits of `model` for `ids` (`batch` rows), inference mode.
func logits(_ model: GPTModel, _ ids: [Int32], batch: Int) -> Tensor {
    let tape = Tape(recording: false)
    return model.logits(model.hidden(ids: ids, batch: batch, tape: tape).final, tape: tape).value
}

/// A small configuration for tests.
func tinyConfig(layout: GPTConfig.Layout = .preNorm, positions: GPTConfig.Positions = .learned, tied: Bool = true) -> GPTConfig {
    GPTConfig(vocabularySize: 23, contextLength: 16, layerCount: 2, headCount: 2, embeddingWidth: 12,
              positions: positions, layout: layout, tiedOutputEmbedding: tied)
}

/// A small GPT-Neo-style configuration: a dense then a local layer (window 3), unscaled scores, bias-free q/k/v.
func tinyNeoConfig() -> GPTConfig {
    var config = tinyConfig()
    config.attentionPatterns = [.dense, .local(window: 3)]
    config.attentionScale = 1
    config.attentionBias = false
    return config
}

/// Small configurations of the GPT-NeoX (parallel, and sequential without attention biases), GPT-J and GPTBigCode
/// families: rotary positions (on part of each head, and all of it), parallel blocks with two LayerNorms and with
/// one, an output bias, and one key/value head shared by the query heads.
func tinyFamilyConfigs() -> [GPTConfig] {
    var neox = tinyConfig(layout: .parallel, positions: .rotary, tied: false)
    neox.rotaryDimensions = 4
    neox.activation = .none
    var sequential = neox
    sequential.layout = .preNorm
    sequential.rotaryDimensions = 6
    sequential.rotaryBase = 500
    sequential.attentionBias = false
    sequential.attentionOutputBias = false
    var gptj = tinyConfig(layout: .parallelSharedNorm, positions: .rotary, tied: false)
    gptj.rotaryDimensions = 4
    gptj.attentionBias = false
    gptj.attentionOutputBias = false
    gptj.outputBias = true
    var bigcode = tinyConfig()
    bigcode.keyValueHeadCount = 1
    return [neox, sequential, gptj, bigcode]
}

/// The package root (where `scripts/` and `data/` are).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Skips the test unless python3 can import `modules` (a comma-separated list); `install` says how to get them.
func requirePython(_ modules: String, install: String) throws {
    let probe = Process()
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import \(modules)"]
    probe.standardError = FileHandle.nullDevice
    try? probe.run()
    probe.waitUntilExit()
    try XCTSkipIf(probe.terminationStatus != 0, "python3 with \(modules) is not installed (\(install))")
}

/// Runs `executable` with `arguments` (and `environment`, when given, in place of this process's; `input` on its
/// standard input, else nothing) to its end: its exit status and its output (standard output and error together).
func runCapturingOutput(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                        input: Data? = nil) throws -> (status: Int32, output: String) {
    let run = Process()
    run.executableURL = executable
    run.arguments = arguments
    if let environment { run.environment = environment }
    let pipe = Pipe()
    run.standardOutput = pipe
    run.standardError = pipe
    let inputPipe = Pipe()
    run.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
    try run.run()
    if let input {
        inputPipe.fileHandleForWriting.write(input)
        try inputPipe.fileHandleForWriting.close()
    }
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    run.waitUntilExit()
    return (run.terminationStatus, output)
}

/// Runs `scripts/<script>` with python3: its exit status and its output (standard output and error together).
func runPythonScript(_ script: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    try runCapturingOutput(URL(fileURLWithPath: "/usr/bin/env"),
                           ["python3", packageRoot.appendingPathComponent("scripts/\(script)").path] + arguments)
}

/// The texts of an SVG chart (titles, legends, tick labels), in order. With `SWIFTGPT_CHART_DIR` set, the chart is
/// also copied there under `name`, to be rendered and looked at.
func chartTexts(_ url: URL, name: String) throws -> [String] {
    let svg = try String(contentsOf: url, encoding: .utf8)
    if let folder = ProcessInfo.processInfo.environment["SWIFTGPT_CHART_DIR"] {
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try? svg.write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
    }
    var texts: [String] = []
    var rest = svg[...]
    while let open = rest.range(of: "<text"), let close = rest.range(of: ">", range: open.upperBound..<rest.endIndex),
          let end = rest.range(of: "</text>", range: close.upperBound..<rest.endIndex) {
        texts.append(String(rest[close.upperBound..<end.lowerBound]))
        rest = rest[end.upperBound...]
    }
    return texts
}

/// The process's resident memory in bytes (Linux's /proc/self/statm), nil where there is none.
func residentBytes() -> Int? {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// The fine-tuning and PPO settings of a run as optionals, as the tests read and change them: nil when the run is of
/// another kind; setting them makes the run of that kind.
extension TrainingConfiguration {
    var fineTuning: FineTuningSettings? {
        get { if case .fineTuning(let settings) = objective { settings } else { nil } }
        set { newValue.map { objective = .fineTuning($0) } }
    }
    var policyOptimization: PolicyOptimizationSettings? {
        get { if case .policyOptimization(let settings) = objective { settings } else { nil } }
        set { newValue.map { objective = .policyOptimization($0) } }
    }
}

/// A randomly initialised model over the characters of `alphabet` (as many tokens as characters), saved as a
/// checkpoint in `folder/name` for a run to start from.
func savedBase(alphabet: String, layers: Int = 2, width: Int = 32, seed: UInt64 = 3, name: String = "base", in folder: URL) throws -> URL {
    let tokenizer = try CharacterTokenizer(characters: Array(alphabet.unicodeScalars))
    let config = GPTConfig(vocabularySize: alphabet.unicodeScalars.count, contextLength: 16, layerCount: layers, headCount: 2,
                           embeddingWidth: width)
    let base = folder.appendingPathComponent(name)
    try TrainingCheckpoint.save(model: try GPTModel(config: config, seed: seed), tokenizer: tokenizer, optimizer: nil, state: nil,
                                to: base)
    return base
}

extension TrainingConfiguration {
    /// A run of `objective` from `base` into `out`, set as the tests of the objectives trained on examples set it:
    /// batches of 16, a learning rate of 3e-3 decaying linearly to 0, fp32 products.
    static func exampleRun(_ objective: Objective, from base: URL, into out: URL) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.objective = objective
        c.initFrom = base.path
        c.out = out.path
        c.batchSize = 16
        c.learningRate = 3e-3
        c.minLearningRate = 0
        c.schedule = .linear
        c.precision = .float32
        return c
    }
}
