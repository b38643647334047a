import Foundation
import GPTUtilities
import TensorCore

/// Reads and writes low-rank adapters as Hugging Face PEFT does: `adapter_config.json` (PEFT's LoRA settings) and
/// `adapter_model.safetensors` (`base_model.model.NAME.lora_A.weight` / `lora_B.weight` for each adapted layer,
/// `base_model.model.NAME` for each trained copy), so that `peft.PeftModel.from_pretrained` loads what SwiftGPT
/// trains and SwiftGPT loads what PEFT trains. Beside them SwiftGPT writes `adapted_config.json`: the config.json of
/// the model the adapter applies to (its base with the task head and added tokens of the run), which PEFT ignores.
///
/// Adapters apply to every model type SwiftGPT reads. A layer is adapted as its checkpoint stores it: GPT-2's and
/// OpenAI-GPT's Conv1D layers as they are (PEFT's `fan_in_fan_out`), the others' `nn.Linear` layers with the same A
/// and B shapes; GPT-Neo's and GPT-J's separate query, key and value projections each get an adapter of their own
/// over SwiftGPT's fused projection, and the rows of a B follow the output columns through any reordering the model's
/// loading does (GPT-NeoX's per-head groups, GPT-J's rotary pairs).
package enum LowRankAdapterFiles {
    static let configFile = "adapter_config.json"
    static let weightsFile = "adapter_model.safetensors"
    static let adaptedConfigFile = "adapted_config.json"
    /// The prefix of every tensor name PEFT writes for a model it wraps.
    static let prefix = "base_model.model."
    /// The layers of a block that adapters apply to, in the block's order (`LowRankAdapter.Target` groups them).
    static let layerKinds: [(ParameterNames.Block) -> LayerName] = [\.queryKeyValue, \.attentionOutput, \.mlpInput, \.mlpOutput]

    /// The checkpoint modules (full names, as PEFT names the layers it wraps) that hold SwiftGPT's layer `layer` in a
    /// `modelType` checkpoint: one, or the query, key and value projections of GPT-Neo and GPT-J for the fused one.
    static func modules(_ layer: LayerName, modelType: String) -> [String] {
        let weight = layer.weight, isQueryKeyValue = weight.hasSuffix("attn.c_attn.weight")
        let names: [String]
        switch modelType {
        case "gpt_neo":
            let name = HuggingFaceCheckpoint.hfName(weight, modelType: modelType)
            names = isQueryKeyValue ? ["q_proj", "k_proj", "v_proj"].map { name.replacingOccurrences(of: "attn.c_attn.", with: "attn.attention.\($0).") }
                : [name.replacingOccurrences(of: "attn.c_proj.", with: "attn.attention.out_proj.")]
        case "gpt_neox", "gptj":
            let name = HuggingFaceCheckpoint.hfName(weight, modelType: modelType)
            names = isQueryKeyValue ? HuggingFaceCheckpoint.queryKeyValueNames(name, family: modelType) : [name]
        default:
            names = [HuggingFaceCheckpoint.hfName(weight, modelType: modelType)]
        }
        return names.map { String($0.dropLast(".weight".count)) }
    }

    /// For output column `column` of layer `layer` (`outputs` columns over `modules(layer)`): the module holding its
    /// adapter (an index into `modules(layer)`) and the row of that module's B.
    static func bRow(_ column: Int, of layer: LayerName, outputs: Int, config: GPTConfig, modelType: String) -> (module: Int, row: Int) {
        if layer.name.hasSuffix("attn.c_attn"), ["gpt_neo", "gpt_neox", "gptj"].contains(modelType) {
            let (part, row) = HuggingFaceCheckpoint.queryKeyValueSource(column, family: modelType, config: config)
            return (part, row)
        }
        return (0, column)
    }

    /// The names `target_modules` gives the modules of layer kind `kind` (an index into `layerKinds`) in `modelType`
    /// models: each module name's last part, or its last two where the last also ends another kind's module (GPT-2's
    /// `attn.c_proj` and `mlp.c_proj`).
    static func targetNames(kind: Int, modelType: String) -> [String] {
        let all = layerKinds.map { modules($0(ParameterNames.Block(0)), modelType: modelType) }
        return all[kind].map { module in
            let parts = module.split(separator: "."), last = String(parts.last!)
            let shared = all.indices.contains { $0 != kind && all[$0].contains { $0.hasSuffix("." + last) } }
            return shared ? parts.suffix(2).joined(separator: ".") : last
        }
    }

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

    /// The layers of a model of `layerCount` blocks (of `modelType`) that `settings` adapt, in the model's order,
    /// each with which of its modules (`modules(_:modelType:)`) the settings target.
    static func layers(_ settings: Settings, layerCount: Int, modelType: String, url: URL) throws -> [(layer: LayerName, targeted: [Bool])] {
        var matched: [(layer: LayerName, targeted: [Bool])] = [], used = Set<String>()
        for index in 0..<layerCount where settings.blocks?.contains(index) ?? true {
            for kind in layerKinds {
                let layer = kind(ParameterNames.Block(index))
                let targeted = modules(layer, modelType: modelType).map { module in
                    switch settings.targets {
                    case .names(let targets):
                        let hits = targets.filter { module == $0 || module.hasSuffix("." + $0) }
                        used.formUnion(hits)
                        return !hits.isEmpty
                    case .pattern(let regex, _):
                        let range = NSRange(module.startIndex..., in: module)
                        return regex.firstMatch(in: module, options: [.anchored], range: range)?.range == range
                    }
                }
                if targeted.contains(true) { matched.append((layer, targeted)) }
            }
        }
        guard !matched.isEmpty else { throw FileError(url: url, reason: .mismatched, message: "'target_modules' matches no layer of this \(modelType) model") }
        if case .names(let targets) = settings.targets, let stray = targets.first(where: { !used.contains($0) }) {
            let known = layerKinds.indices.flatMap { targetNames(kind: $0, modelType: modelType) }
            throw FileError(url: url, reason: .unsupported, message: "target module '\(stray)' is none of the layers SwiftGPT adapts in this \(modelType) model (\(known.joined(separator: ", ")))")
        }
        return matched
    }

    /// Throws unless adapters apply to models of `config` (a run with `loraRank`, before it starts): unless a Hugging
    /// Face checkpoint format holds it.
    package static func checkAdaptable(_ config: GPTConfig) throws {
        _ = try HuggingFaceCheckpoint.checkpointType(config)
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
        let modelType = try HuggingFaceCheckpoint.checkpointType(base.config)
        let file = try SafeTensors(contentsOf: weightsURL)
        let layers = try layers(settings, layerCount: base.config.layerCount, modelType: modelType, url: configURL)
        let targeted = Dictionary(uniqueKeysWithValues: layers.map { ($0.layer, $0.targeted) })
        // The key of each A and B of every layer an adapter could adapt, to the layer and module it adapts.
        var adaptedModules: [String: (layer: LayerName, module: Int)] = [:]
        for index in 0..<base.config.layerCount {
            for kind in layerKinds {
                let layer = kind(ParameterNames.Block(index))
                for (module, name) in modules(layer, modelType: modelType).enumerated() {
                    let keys = matrixKeys(name)
                    for key in [keys.a, keys.b] { adaptedModules[prefix + key] = (layer, module) }
                }
            }
        }
        let checkpointNames = Dictionary(base.parameters.names.map { (HuggingFaceCheckpoint.hfName($0, modelType: modelType), $0) },
                                         uniquingKeysWith: { first, _ in first })
        // Every other tensor is a trained copy of a model parameter, under its checkpoint name.
        var copies: [String: String] = [:]
        for key in file.names {
            guard key.hasPrefix(prefix) else { throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' is not named as PEFT names an adapter's tensors (\(prefix)…)") }
            if let (layer, module) = adaptedModules[key] {
                guard targeted[layer]?[module] == true else {
                    throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' adapts \(modules(layer, modelType: modelType)[module]), which adapter_config.json's target_modules do not name")
                }
            } else if key.hasSuffix(".lora_A.weight") || key.hasSuffix(".lora_B.weight") {
                throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' adapts no layer SwiftGPT adapts in this \(modelType) model")
            } else {
                let theirs = String(key.dropFirst(prefix.count))
                copies[TaskHead.isHeadParameter(theirs) ? theirs : checkpointNames[theirs] ?? theirs] = key
            }
        }
        if !allowingCopies, let key = copies.values.sorted().first {
            throw FileError(url: weightsURL, reason: .unsupported, message: "tensor '\(key)' trains a whole parameter (a task head or added tokens): such an adapter cannot be served beside others over one base (merge it into the model with --adapter)")
        }
        let target = try adaptedModel(base, copies: copies, directory: directory, file: file)
        for (ours, key) in copies where !target.parameters.contains(ours) {
            throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(key)' is no parameter of this \(modelType) model")
        }
        // Every shape is checked before anything is allocated: what the adapter holds is then what the file holds.
        func check(_ key: String, _ shape: [Int], adapting layer: String) throws {
            guard file.entries[key] != nil else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "missing tensor '\(key)' (adapter_config.json's target_modules adapt \(layer))")
            }
            try file.checkShape(key, shape)
        }
        for (layer, targeted) in layers {
            let shape = target.parameters[layer.weight].shape, names = modules(layer, modelType: modelType)
            for (name, isTargeted) in zip(names, targeted) where isTargeted {
                let keys = matrixKeys(name)
                try check(prefix + keys.a, [settings.rank, shape[0]], adapting: name)
                try check(prefix + keys.b, [shape[1] / names.count, settings.rank], adapting: name)
            }
        }
        for (name, key) in copies { try check(key, target.parameters[name].shape, adapting: name) }
        let adapter = LowRankAdapter(model: target, baseModel: settings.base, rank: settings.rank, alpha: settings.alpha, rankStabilized: settings.rankStabilized,
                                     dropout: settings.dropout, layers: layers.map(\.layer), savedParameters: Array(copies.keys), seed: 0)
        for (layer, targeted) in layers {
            let (a, b) = adapter.matrices(of: layer)!, names = modules(layer, modelType: modelType)
            let outputs = b.shape[0], rank = settings.rank, inputs = a.shape[1]
            a.value.fill(0)
            var bs: [Tensor?] = []
            for (module, (name, isTargeted)) in zip(names, targeted).enumerated() {
                let keys = matrixKeys(name)
                guard isTargeted else { bs.append(nil); continue }
                try file.read(prefix + keys.a, into: a.value.pointer + module * rank * inputs)
                bs.append(try file.checkedTensor(prefix + keys.b, shape: [outputs / names.count, rank]))
            }
            for column in 0..<outputs {
                let (module, row) = bRow(column, of: layer, outputs: outputs, config: target.config, modelType: modelType)
                if let part = bs[module] { (b.value.pointer + column * rank).update(from: part.pointer + row * rank, count: rank) }
            }
        }
        for (name, key) in copies { try file.read(key, into: adapter.parameters[name].value.pointer) }
        return (target, adapter)
    }

    /// The file names (without PEFT's prefix) of the A and B adapting module `module`.
    private static func matrixKeys(_ module: String) -> (a: String, b: String) { (module + ".lora_A.weight", module + ".lora_B.weight") }

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
        let modelType = try HuggingFaceCheckpoint.checkpointType(model.config)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var tensors: [(String, Tensor)] = []
        for layer in adapter.layers {
            let (a, b) = adapter.matrices(of: layer)!, names = modules(layer, modelType: modelType)
            let outputs = b.shape[0], rank = adapter.rank, inputs = a.shape[1]
            let bs = names.map { _ in Tensor(uninitializedShape: [outputs / names.count, rank]) }
            for column in 0..<outputs {
                let (module, row) = bRow(column, of: layer, outputs: outputs, config: model.config, modelType: modelType)
                (bs[module].pointer + row * rank).update(from: b.value.pointer + column * rank, count: rank)
            }
            for (module, name) in names.enumerated() {
                let part = Tensor(uninitializedShape: [rank, inputs])
                part.pointer.update(from: a.value.pointer + module * rank * inputs, count: rank * inputs)
                let keys = matrixKeys(name)
                tensors += [(prefix + keys.a, part), (prefix + keys.b, bs[module])]
            }
        }
        tensors += adapter.savedParameters.map { (prefix + HuggingFaceCheckpoint.hfName($0, modelType: modelType), adapter.parameters[$0].value) }
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent(weightsFile))
        let blocks = Set(adapter.layers.map { Int($0.name.split(separator: ".")[1])! })
        let kinds = layerKinds.indices.filter { kind in blocks.contains { adapter.layers.contains(layerKinds[kind](ParameterNames.Block($0))) } }
        // One list of module names when they adapt the same layers of every block they touch; else the exact names.
        let uniform = kinds.count * blocks.count == adapter.layers.count
        let targets: Any = uniform ? kinds.flatMap { targetNames(kind: $0, modelType: modelType) }
            : adapter.layers.flatMap { modules($0, modelType: modelType) }.map(NSRegularExpression.escapedPattern(for:)).joined(separator: "|")
        let savedModules = adapter.savedParameters.map { String(HuggingFaceCheckpoint.hfName($0, modelType: modelType).split(separator: ".").dropLast().joined(separator: ".")) }
        let taskType: Any = switch model.taskHead {
        case nil: "CAUSAL_LM"
        case .sequenceClassification: "SEQ_CLS"
        case .multipleChoice, .value: NSNull()
        }
        let json: [String: Any] = [
            "peft_type": "LORA", "task_type": taskType, "r": adapter.rank, "lora_alpha": Double("\(adapter.alpha)")!,
            "lora_dropout": Double("\(adapter.dropout)")!, "use_rslora": adapter.rankStabilized, "target_modules": targets,
            "layers_to_transform": uniform && blocks.count < model.config.layerCount ? blocks.sorted() : NSNull(),
            "fan_in_fan_out": ["gpt2", "openai-gpt"].contains(modelType), "bias": "none", "modules_to_save": savedModules.isEmpty ? NSNull() : savedModules,
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
