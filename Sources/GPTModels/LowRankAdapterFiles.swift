import Foundation
import GPTUtilities
import TensorCore

/// Reads and writes low-rank adapters as Hugging Face PEFT does: `adapter_config.json` (PEFT's LoRA settings) and
/// `adapter_model.safetensors` (`base_model.model.NAME.lora_A.weight` / `lora_B.weight` for each adapted layer,
/// `base_model.model.NAME` for each trained copy), so that `peft.PeftModel.from_pretrained` loads what SwiftGPT
/// trains and SwiftGPT loads what PEFT trains. Beside them SwiftGPT writes `adapted_config.json`: the config.json of
/// the model the adapter applies to (its base with the task head and added tokens of the run), which PEFT ignores.
///
/// Adapters apply to models stored as GPT-2 or OpenAI-GPT checkpoints, whose Conv1D layers SwiftGPT keeps as they
/// are stored (PEFT's `fan_in_fan_out`).
package enum LowRankAdapterFiles {
    static let configFile = "adapter_config.json"
    static let weightsFile = "adapter_model.safetensors"
    static let adaptedConfigFile = "adapted_config.json"
    /// The prefix of every tensor name PEFT writes for a model it wraps.
    static let prefix = "base_model.model."
    /// The model types whose layers adapters apply to.
    static let supportedModelTypes = ["gpt2", "openai-gpt"]
    /// Each adaptable layer of a block, by the name PEFT's `target_modules` gives it, as it ends the layer's name.
    static let layerKinds: [(module: String, layer: (ParameterNames.Block) -> LayerName)] = [
        ("c_attn", \.queryKeyValue), ("attn.c_proj", \.attentionOutput), ("c_fc", \.mlpInput), ("mlp.c_proj", \.mlpOutput),
    ]

    /// Whether `directory` holds an adapter.
    package static func isAdapter(_ directory: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(configFile).path)
    }

    /// The base model an adapter folder names (`base_model_name_or_path`), if it names one.
    package static func baseModel(of directory: URL) throws -> String? {
        let url = directory.appendingPathComponent(configFile)
        return try settings(url).base
    }

    /// The settings of an adapter_config.json, each checked: a LoRA adapter whose options SwiftGPT applies.
    struct Settings {
        var rank: Int
        var alpha: Float
        var dropout: Float
        var rankStabilized: Bool
        /// `target_modules`: names that end the adapted layers' names, or one pattern they match whole.
        var targets: Either
        /// `layers_to_transform`: the blocks adapted (nil: all).
        var blocks: Set<Int>?
        var base: String?

        enum Either { case names([String]), pattern(NSRegularExpression, String) }
    }

    /// Reads and checks `url`, an adapter_config.json: an option SwiftGPT cannot apply is refused by name.
    static func settings(_ url: URL) throws -> Settings {
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        func unsupported(_ message: String) -> FileError { FileError(url: url, reason: .unsupported, message: message) }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, reason: .missing, message: "no such file (an adapter folder holds adapter_config.json)")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let type = json["peft_type"] as? String else { throw fail("no 'peft_type'") }
        guard type == "LORA" else { throw unsupported("'peft_type' is \(type); SwiftGPT applies LoRA adapters only") }
        guard let rank = try HuggingFaceCheckpoint.integer(json, "r", fail: fail), (1...65536).contains(rank) else {
            throw fail("'r' must be an integer rank between 1 and 65536")
        }
        let alpha = try HuggingFaceCheckpoint.number(json, "lora_alpha", default: 8, fail: fail)
        let dropout = try HuggingFaceCheckpoint.probability("lora_dropout", json, default: 0, fail: fail)
        func flag(_ key: String) throws -> Bool {
            guard let raw = json[key], !(raw is NSNull) else { return false }
            guard let value = raw as? Bool else { throw fail("'\(key)' must be true or false, got \(raw)") }
            return value
        }
        let bias = json["bias"] as? String ?? "none"
        guard bias == "none" else { throw unsupported("'bias' is \(bias); SwiftGPT applies adapters that train no biases ('none')") }
        for key in ["use_dora", "lora_bias", "use_qalora"] where try flag(key) {
            throw unsupported("'\(key)' is true; SwiftGPT applies plain LoRA")
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let pattern = json[key], !(pattern is NSNull), (pattern as? [String: Any])?.isEmpty != true {
                throw unsupported("'\(key)' gives layers ranks or scales of their own; SwiftGPT applies one rank and one alpha")
            }
        }
        for key in ["layer_replication", "target_parameters", "trainable_token_indices", "exclude_modules", "alora_invocation_tokens"] {
            if let value = json[key], !(value is NSNull) { throw unsupported("'\(key)' is set; SwiftGPT does not apply it") }
        }
        let targets: Settings.Either
        switch json["target_modules"] {
        case let names as [Any]:
            let strings = names.compactMap { $0 as? String }
            guard strings.count == names.count, !strings.isEmpty else { throw fail("'target_modules' must be a non-empty list of module names") }
            targets = .names(strings)
        case let pattern as String:
            guard let regex = try? NSRegularExpression(pattern: pattern) else { throw fail("'target_modules' is not a valid pattern: \(pattern)") }
            targets = .pattern(regex, pattern)
        default: throw fail("'target_modules' must be a list of module names or a pattern")
        }
        var blocks: Set<Int>?
        switch json["layers_to_transform"] {
        case nil, is NSNull: blocks = nil
        case let list as [Any]:
            let indices = list.compactMap { JSONNumber.integer($0) }
            guard indices.count == list.count else { throw fail("'layers_to_transform' must be a block index or a list of them") }
            blocks = Set(indices)
        case let one:
            guard let index = JSONNumber.integer(one) else { throw fail("'layers_to_transform' must be a block index or a list of them") }
            blocks = [index]
        }
        let base = json["base_model_name_or_path"] as? String
        return Settings(rank: rank, alpha: Float(alpha), dropout: Float(dropout), rankStabilized: try flag("use_rslora"),
                        targets: targets, blocks: blocks, base: base?.isEmpty == false ? base : nil)
    }

    /// The layers of a model of `layerCount` blocks (of `modelType`) that `settings` adapt, in the model's order.
    static func layers(_ settings: Settings, layerCount: Int, modelType: String, url: URL) throws -> [LayerName] {
        var matched: [LayerName] = [], used = Set<String>()
        for index in 0..<layerCount where settings.blocks?.contains(index) ?? true {
            let block = ParameterNames.Block(index)
            for (_, layerOf) in layerKinds {
                let layer = layerOf(block), name = HuggingFaceCheckpoint.hfName(layer.weight, modelType: modelType).dropLast(7)
                switch settings.targets {
                case .names(let targets):
                    let hits = targets.filter { name == $0 || name.hasSuffix("." + $0) }
                    used.formUnion(hits)
                    if !hits.isEmpty { matched.append(layer) }
                case .pattern(let regex, _):
                    let text = String(name), range = NSRange(text.startIndex..., in: text)
                    if let hit = regex.firstMatch(in: text, options: [.anchored], range: range), hit.range == range { matched.append(layer) }
                }
            }
        }
        guard !matched.isEmpty else { throw FileError(url: url, reason: .mismatched, message: "'target_modules' matches no layer of this \(modelType) model") }
        if case .names(let targets) = settings.targets, let stray = targets.first(where: { !used.contains($0) }) {
            throw FileError(url: url, reason: .unsupported, message: "target module '\(stray)' is none of the layers SwiftGPT adapts in this \(modelType) model (\(layerKinds.map(\.module).joined(separator: ", ")))")
        }
        return matched
    }

    /// The model type of `config` if adapters apply to it, else an error naming `url`.
    static func adaptableType(_ config: GPTConfig, url: URL) throws -> String {
        let type = try HuggingFaceCheckpoint.checkpointType(config)
        guard supportedModelTypes.contains(type) else { throw FileError(url: url, reason: .unsupported, message: unsupportedMessage(type)) }
        return type
    }

    /// Throws unless adapters apply to models of `config` (a run with `loraRank`, before it starts).
    package static func checkAdaptable(_ config: GPTConfig) throws {
        let type = try HuggingFaceCheckpoint.checkpointType(config)
        guard supportedModelTypes.contains(type) else { throw ConfigurationError(.unsuitableModel, unsupportedMessage(type)) }
    }

    private static func unsupportedMessage(_ type: String) -> String {
        "adapters apply to GPT-2 and OpenAI-GPT models (model_type gpt2, openai-gpt); this base is \(type)"
    }

    /// The adapter in `directory` applied to `base`: `base` itself, its parameters now frozen and the adapter
    /// attached, or, when the adapter adds a task head or token rows, a copy of it with them (`base` unchanged).
    /// Every tensor of the file must be one the adapter needs, in the shape it needs.
    package static func load(from directory: URL, base: GPTModel) throws -> GPTModel {
        let (target, adapter) = try read(from: directory, base: base, allowingCopies: true)
        target.attach(adapter)
        return target
    }

    /// The adapter in `directory` for `base` (which may hold its weights for decoding only), not attached: one of
    /// several adapters a server applies per request over one base. An adapter that trains whole parameters (a task
    /// head, added tokens) changes more than its layers and is refused.
    package static func loadForServing(from directory: URL, base: GPTModel) throws -> LowRankAdapter {
        try read(from: directory, base: base, allowingCopies: false).adapter
    }

    /// The adapter in `directory` made for `base`, and the model it applies to (see `load`).
    private static func read(from directory: URL, base: GPTModel, allowingCopies: Bool) throws -> (model: GPTModel, adapter: LowRankAdapter) {
        let configURL = directory.appendingPathComponent(configFile), weightsURL = directory.appendingPathComponent(weightsFile)
        let settings = try settings(configURL)
        let modelType = try adaptableType(base.config, url: configURL)
        let file = try SafeTensors(contentsOf: weightsURL)
        let layers = try layers(settings, layerCount: base.config.layerCount, modelType: modelType, url: configURL)
        let matrixNames = Set(layers.flatMap { [LowRankAdapter.names($0).a, LowRankAdapter.names($0).b] })
        // Every other tensor is a trained copy of a model parameter, under its checkpoint name.
        var copies: [String: String] = [:]
        for key in file.names {
            guard key.hasPrefix(prefix) else { throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' is not named as PEFT names an adapter's tensors (\(prefix)…)") }
            let theirs = String(key.dropFirst(prefix.count)), ours = HuggingFaceCheckpoint.ourName(theirs, modelType: modelType)
            if let layer = LowRankAdapter.layerOf(matrix: ours) {
                guard matrixNames.contains(ours) else {
                    throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' adapts \(layer.name), which adapter_config.json's target_modules do not name")
                }
            } else {
                copies[ours] = key
            }
        }
        if !allowingCopies, let key = copies.values.sorted().first {
            throw FileError(url: weightsURL, reason: .unsupported, message: "tensor '\(key)' trains a whole parameter (a task head or added tokens): such an adapter cannot be served beside others over one base (merge it into the model with --adapter)")
        }
        let target = try adaptedModel(base, copies: copies, directory: directory, file: file)
        for (ours, key) in copies where !target.parameters.contains(ours) {
            throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' is no parameter of this \(modelType) model")
        }
        /// The file's key of the adapter parameter `name`.
        func key(_ name: String) -> String { copies[name] ?? prefix + HuggingFaceCheckpoint.hfName(name, modelType: modelType) }
        // Every shape is checked before anything is allocated: what the adapter holds is then what the file holds.
        func check(_ name: String, _ shape: [Int]) throws {
            let key = key(name)
            guard file.entries[key] != nil else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "missing tensor '\(key)' (adapter_config.json's target_modules adapt \(LowRankAdapter.layerOf(matrix: name)?.name ?? name))")
            }
            try file.checkShape(key, shape)
        }
        for layer in layers {
            let shape = target.parameters[layer.weight].shape, names = LowRankAdapter.names(layer)
            try check(names.a, [settings.rank, shape[0]])
            try check(names.b, [shape[1], settings.rank])
        }
        for name in copies.keys { try check(name, target.parameters[name].shape) }
        let adapter = LowRankAdapter(model: target, baseModel: settings.base, rank: settings.rank, alpha: settings.alpha, rankStabilized: settings.rankStabilized,
                                     dropout: settings.dropout, layers: layers, savedParameters: Array(copies.keys), seed: 0)
        for name in adapter.parameters.names {
            try file.read(key(name), into: adapter.parameters[name].value.pointer)
        }
        return (target, adapter)
    }

    /// `base`, or a copy of it with the task head and vocabulary that the adapter's trained copies (`copies`: our
    /// names to the file's keys) and adapted_config.json describe.
    private static func adaptedModel(_ base: GPTModel, copies: [String: String], directory: URL, file: SafeTensors) throws -> GPTModel {
        let weightsURL = file.url
        var vocabulary = base.config.vocabularySize
        if let key = copies[ParameterNames.tokenEmbedding], let rows = file.entries[key]?.shape.first {
            guard rows >= vocabulary, rows <= GPTConfig.limits.vocabularySize else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' has \(rows) rows; the base's vocabulary has \(vocabulary) (an adapter may add tokens, not remove them)")
            }
            vocabulary = rows
        }
        var head = base.taskHead
        let described = directory.appendingPathComponent(adaptedConfigFile)
        if let key = copies[TaskHead.scoreWeight] {
            let labels = file.entries[key]?.shape.first ?? 0
            let url = FileManager.default.fileExists(atPath: described.path) ? described : directory.appendingPathComponent(configFile)
            head = .sequenceClassification(try HuggingFaceCheckpoint.readClassification(url, labelCount: labels, vocabularySize: vocabulary))
        } else if copies[TaskHead.valueWeight] != nil {
            head = .value
        } else if copies[TaskHead.choiceWeight] != nil {
            head = .multipleChoice
        }
        let inputFormat = try HuggingFaceCheckpoint.readInputFormat(described)
        guard vocabulary != base.config.vocabularySize || head != base.taskHead || (inputFormat != nil && inputFormat != base.inputFormat) else { return base }
        let model = try base.adapted(vocabularySize: vocabulary, taskHead: head, seed: 0)
        if let inputFormat {
            if let id = [inputFormat.start, inputFormat.delimiter, inputFormat.extract].first(where: { !(0..<Int32(vocabulary)).contains($0) }) {
                throw FileError(url: described, reason: .mismatched, message: "'\(HuggingFaceCheckpoint.inputFormatKey)' names token \(id), not a token of the model (0..<\(vocabulary))")
            }
            model.inputFormat = inputFormat
        }
        return model
    }

    /// Writes `model`'s adapter into `directory` (created if needed): adapter_config.json (naming the adapter's base
    /// model), adapter_model.safetensors, and adapted_config.json. Each file is written atomically.
    package static func save(_ model: GPTModel, to directory: URL) throws {
        guard let adapter = model.adapter else { preconditionFailure("the model has no adapter") }
        let modelType = try adaptableType(model.config, url: directory.appendingPathComponent(configFile))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let tensors = adapter.parameters.names.map { name in
            let theirs = HuggingFaceCheckpoint.hfName(name, modelType: modelType)
            return (prefix + theirs, adapter.parameters[name].value)
        }
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent(weightsFile))
        let blocks = Set(adapter.layers.map { Int($0.name.split(separator: ".")[1])! })
        let kinds = layerKinds.filter { kind in blocks.contains { adapter.layers.contains(kind.layer(ParameterNames.Block($0))) } }
        // One list of module names when they adapt the same layers of every block they touch; else the exact names.
        let uniform = kinds.count * blocks.count == adapter.layers.count
        let targets: Any = uniform ? kinds.map(\.module)
            : adapter.layers.map { NSRegularExpression.escapedPattern(for: String(HuggingFaceCheckpoint.hfName($0.weight, modelType: modelType).dropLast(7))) }.joined(separator: "|")
        let savedModules = adapter.savedParameters.map { String(HuggingFaceCheckpoint.hfName($0, modelType: modelType).split(separator: ".").dropLast().joined(separator: ".")) }
        let taskType: Any = switch model.taskHead {
        case nil: "CAUSAL_LM"
        case .sequenceClassification: "SEQ_CLS"
        case .multipleChoice, .value: NSNull()
        }
        let json: [String: Any] = [
            "peft_type": "LORA", "task_type": taskType, "r": adapter.rank, "lora_alpha": Double(adapter.alpha),
            "lora_dropout": Double(adapter.dropout), "use_rslora": adapter.rankStabilized, "target_modules": targets,
            "layers_to_transform": uniform && blocks.count < model.config.layerCount ? blocks.sorted() : NSNull(),
            "fan_in_fan_out": true, "bias": "none", "modules_to_save": savedModules.isEmpty ? NSNull() : savedModules,
            "base_model_name_or_path": adapter.baseModel ?? NSNull(), "inference_mode": true, "init_lora_weights": true, "use_dora": false,
            "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](), "revision": NSNull(),
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]),
                             to: directory.appendingPathComponent(configFile))
        var adapted = HuggingFaceCheckpoint.hfConfig(model.config, modelType: modelType, head: model.taskHead)
        adapted[HuggingFaceCheckpoint.versionKey] = swiftGPTVersion
        if let format = model.inputFormat {
            adapted[HuggingFaceCheckpoint.inputFormatKey] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(format))
        }
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: adapted, options: [.prettyPrinted, .sortedKeys]),
                             to: directory.appendingPathComponent(adaptedConfigFile))
    }
}
