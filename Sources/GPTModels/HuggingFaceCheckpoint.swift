import Foundation
import GPTUtilities
import TensorCore

/// Reads and writes Hugging Face checkpoints (`config.json` + `model.safetensors`) of GPT-2 (`model_type` gpt2),
/// OpenAI-GPT (`model_type` openai-gpt), GPT-Neo (`model_type` gpt_neo), GPT-NeoX / Pythia (`gpt_neox`), GPT-J
/// (`gptj`) and GPTBigCode (`gpt_bigcode`) models: the LM-head models, the double-heads models (multiple-choice head)
/// and the sequence-classification models (`score` head, classification or regression).
///
/// The whole name and layout mapping lives here: HF names carry a `transformer.` prefix, OpenAI-GPT calls the
/// embeddings `tokens_embed`/`positions_embed`, a tied `lm_head.weight` is not stored, and attention buffers are
/// skipped. GPT-2 and OpenAI-GPT need no transposes (SwiftGPT stores matrices `[in, out]` as HF's Conv1D does);
/// GPT-Neo's `nn.Linear` matrices are transposed and its q/k/v projections fused into one `c_attn`.
public enum HuggingFaceCheckpoint {
    /// Loads the model in `directory` (weights in `model.safetensors`, or in the shards `model.safetensors.index.json`
    /// names), with the task head its file holds (the multiple-choice head, a PPO value head, or a
    /// sequence-classification `score` described by config.json). Every problem throws an error naming the file.
    public static func load(from directory: URL) throws -> GPTModel {
        try load(from: directory, packingIn: nil).model
    }

    /// Loads the model in `directory` for decoding in `format`: the matrices decoding streams, the output layer and
    /// the token embedding are read from the file straight into decoding weights, never into the model's own
    /// memory, so that an open model holds its weights once, in the decoding format. The model is `isDecodingOnly`:
    /// it runs in an `InferenceSession` given these weights.
    package static func loadForDecoding(from directory: URL, format: WeightFormat) throws -> (GPTModel, DecodeWeights) {
        let (model, weights) = try load(from: directory, packingIn: format)
        return (model, weights!)
    }

    /// `load(from:)`, or with a format, `loadForDecoding(from:format:)`.
    private static func load(from directory: URL, packingIn format: WeightFormat?) throws -> (model: GPTModel, weights: DecodeWeights?) {
        let configURL = directory.appendingPathComponent("config.json")
        let (config, modelType) = try readConfig(configURL)
        let file = try CheckpointWeights(directory: directory)
        let weightsURL = file.url
        let stored = try storedTensors(file, modelType: modelType, config: config)
        var taskHead: TaskHead?
        if stored[TaskHead.choiceWeight] != nil {
            taskHead = .multipleChoice
        } else if stored[TaskHead.valueWeight] != nil {
            taskHead = .value
        } else if let score = file.entries[TaskHead.scoreWeight] {
            taskHead = .sequenceClassification(try readClassification(configURL, labelCount: score.shape.first ?? 0,
                                                                     vocabularySize: config.vocabularySize))
        }
        let inputFormat = try readInputFormat(configURL)
        if let format = inputFormat, let id = [format.start, format.delimiter, format.extract].first(where: { !(0..<Int32(config.vocabularySize)).contains($0) }) {
            throw FileError(url: configURL, reason: .mismatched, message: "'\(inputFormatKey)' names token \(id), not a token of the model (0..<\(config.vocabularySize))")
        }
        return try model(config: config, taskHead: taskHead, inputFormat: inputFormat, tensors: stored, file: weightsURL,
                         nameInFile: { hfName($0, modelType: modelType) }, releasePages: file.releaseMappedPages, packingIn: format)
    }

    /// A model of `config` with the weights `tensors` holds under SwiftGPT's names (read from the weights file
    /// `file`, which errors name, under the names `nameInFile` gives), each read once, then `releasePages` called:
    /// with a `format`, the matrices decoding streams, the output layer and the token embedding go straight into
    /// decoding weights (see `loadForDecoding(from:format:)`). A tensor missing, extra or of another shape than the
    /// config needs is an error.
    static func model(config: GPTConfig, taskHead: TaskHead?, inputFormat: InputFormat?, tensors stored: [String: StoredTensor],
                      file weightsURL: URL, nameInFile: (String) -> String, releasePages: () -> Void,
                      packingIn format: WeightFormat?) throws -> (model: GPTModel, weights: DecodeWeights?) {
        // The tensors the config needs, each of its shape, before the model's memory is allocated: a config that
        // claims more than its file holds is refused, never allocated.
        for (name, shape) in GPTModel.parameterShapes(config) {
            guard let tensor = stored[name] else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "missing tensor '\(nameInFile(name))'")
            }
            guard tensor.shape == shape else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(nameInFile(name))' has shape \(tensor.shape), the config needs \(shape)")
            }
        }
        let model = try GPTModel(config: config, seed: 0, taskHead: taskHead, initializeWeights: false)
        model.inputFormat = inputFormat
        var expected = Set(model.parameters.names)
        if config.positions == .sinusoidal { expected.remove(ParameterNames.positionEmbedding) }
        let headName = ParameterNames.outputLayer(tied: config.tiedOutputEmbedding)
        let packed = format == nil ? [:] : Dictionary(uniqueKeysWithValues: GPTModel.decodingMatrices(layers: config.layerCount).map { ($0.weight, $0) })
        var matrices: [LayerName: MatrixVector.PackedMatrix] = [:], tables: [String: MatrixVector.PackedMatrix] = [:]
        // Floats of a matrix the file holds as SwiftGPT does, on their way to being packed: pages of their own, reused
        // from matrix to matrix and unmapped at the end (pooled buffers would stay resident beside the packed weights).
        var scratch: Tensor?
        for (ours, tensor) in stored.sorted(by: { $0.key < $1.key }) {
            if ours == ParameterNames.outputLayer && config.tiedOutputEmbedding { continue }
            if ours == ParameterNames.positionEmbedding && config.positions == .sinusoidal { continue }
            let theirs = nameInFile(ours)
            guard model.parameters.contains(ours) else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "unexpected tensor '\(theirs)' for a model of this configuration")
            }
            let target = model.parameters[ours].value
            guard tensor.shape == target.shape else {
                throw FileError(url: weightsURL, reason: .mismatched, message: "tensor '\(theirs)' has shape \(tensor.shape), the config needs \(target.shape)")
            }
            expected.remove(ours)
            if let format, ours == ParameterNames.outputLayer || ours == ParameterNames.tokenEmbedding {
                tables[ours] = try packedTranspose(tensor, n: config.vocabularySize, k: config.embeddingWidth, format: format)
            } else if let format, let layer = packed[ours] {
                matrices[layer] = try packedMatrix(tensor, format: format, scratch: &scratch)
            } else {
                try tensor.fill(target.pointer)
            }
            releasePages()
        }
        if let missing = expected.sorted().first {
            throw FileError(url: weightsURL, reason: .mismatched, message: "missing tensor '\(nameInFile(missing))' (\(expected.count) missing in all)")
        }
        model.parameters.valuesDidChange()
        guard let format, let head = tables[headName], let tokenEmbedding = tables[ParameterNames.tokenEmbedding] else { return (model, nil) }
        model.isDecodingOnly = true
        return (model, DecodeWeights(matrices: matrices, head: head, tokenEmbedding: tokenEmbedding, format: format))
    }

    /// A stored [k, n] matrix packed, read a few columns at a time when the file holds it transposed, else read
    /// whole into `scratch` (made larger when it is too small).
    private static func packedMatrix(_ tensor: StoredTensor, format: WeightFormat, scratch: inout Tensor?) throws -> MatrixVector.PackedMatrix {
        let k = tensor.shape[0], n = tensor.shape[1]
        if let columnReader = tensor.columnReader {
            return MatrixVector.PackedMatrix(transposedRows: try columnReader(), n: n, k: k, format: format)
        }
        if (scratch?.count ?? 0) < k * n { scratch = Tensor(zeroedShape: [k * n]) }
        try tensor.fill(scratch!.pointer)
        return MatrixVector.PackedMatrix(scratch!.pointer, k: k, n: n, format: format)
    }

    /// A stored [n, k] tensor packed transposed, read a few rows at a time when it is stored as it is.
    private static func packedTranspose(_ tensor: StoredTensor, n: Int, k: Int, format: WeightFormat) throws -> MatrixVector.PackedMatrix {
        if let rowReader = tensor.rowReader {
            return MatrixVector.PackedMatrix(transposedRows: try rowReader(), n: n, k: k, format: format)
        }
        let floats = Tensor(uninitializedShape: tensor.shape)
        try tensor.fill(floats.pointer)
        return MatrixVector.PackedMatrix(transposing: floats.pointer, n: n, k: k, format: format)
    }

    /// Writes `model` to `directory` (created if needed) as `config.json` + `model.safetensors` that Hugging Face
    /// transformers loads unchanged, the weights stored as `dtype` (F32, or BF16: half the size). Both files are
    /// written atomically.
    public static func save(_ model: GPTModel, to directory: URL, as dtype: SafeTensors.DType = .float32) throws {
        precondition(!model.isDecodingOnly, "a model loaded for decoding only has its matrices in its decoding weights")
        let c = model.config
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let modelType = try checkpointType(c)
        var tensors = try exportedTensors(model) { model.parameters[$0].value }
        if c.positions == .sinusoidal {
            // HF has no fixed table: store it as the learned one, so HF computes the same function.
            tensors.append((hfName(ParameterNames.positionEmbedding, modelType: modelType),
                            GPTModel.sinusoidalTable(length: c.contextLength, width: c.embeddingWidth)))
        }
        try SafeTensors.write(tensors, metadata: ["format": "pt"], as: dtype, to: directory.appendingPathComponent("model.safetensors"))
        var json = hfConfig(c, modelType: modelType, head: model.taskHead)
        if dtype == .bfloat16 { json["torch_dtype"] = "bfloat16" }
        json[versionKey] = swiftGPTVersion
        if let format = model.inputFormat {
            json[inputFormatKey] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(format))
        }
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: directory.appendingPathComponent("config.json"))
    }

    // MARK: Configuration

    /// The model configuration and `model_type` that a config.json describes; errors name the file and the field.
    package static func readConfig(_ url: URL) throws -> (GPTConfig, String) {
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        guard let data = FileManager.default.contents(atPath: url.path) else { throw FileError(url: url, reason: .missing, message: "no such file (a model directory needs config.json)") }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let modelType = json["model_type"] as? String else { throw fail("no model_type") }
        guard supportedModelTypes.contains(modelType) else {
            throw FileError(url: url, reason: .unsupported, message: "unsupported model_type '\(modelType)' (supported: \(supportedModelTypes.joined(separator: ", ")))")
        }
        if modelType == "gpt_neo" { return (try readNeoConfig(json, fail: fail), modelType) }
        if modelType == "gpt_neox" { return (try readNeoXConfig(json, fail: fail), modelType) }
        if modelType == "gptj" { return (try readGPTJConfig(json, fail: fail), modelType) }
        func int(_ key: String, _ fallback: String? = nil) throws -> Int {
            guard let v = try integer(json, key, fail: fail) ?? fallback.flatMap({ try integer(json, $0, fail: fail) }) else {
                throw fail("missing or non-integer '\(key)'")
            }
            return v
        }
        func number(_ key: String, default value: Double) throws -> Double { try Self.number(json, key, default: value, fail: fail) }
        if json["scale_attn_by_inverse_layer_idx"] as? Bool == true { throw FileError(url: url, reason: .unsupported, message: "scale_attn_by_inverse_layer_idx is not supported") }
        if json["scale_attn_weights"] as? Bool == false { throw FileError(url: url, reason: .unsupported, message: "scale_attn_weights = false is not supported") }
        if json["add_cross_attention"] as? Bool == true { throw FileError(url: url, reason: .unsupported, message: "add_cross_attention is not supported") }
        let width = try int("n_embd")
        let activationName = (json[modelType == "openai-gpt" ? "afn" : "activation_function"] as? String) ?? "gelu_new"
        let activation: GELUApproximation
        switch (modelType, activationName) {
        case (_, "gelu_new"), (_, "gelu_pytorch_tanh"), ("openai-gpt", "gelu"): activation = .tanh  // HF's OpenAI-GPT maps "gelu" to gelu_new
        case ("gpt2", "gelu"), ("gpt_bigcode", "gelu"): activation = .none
        default: throw FileError(url: url, reason: .unsupported, message: "unsupported activation '\(activationName)' (supported: gelu_new, gelu)")
        }
        let dropout = try ["resid_pdrop", "embd_pdrop", "attn_pdrop"].map { try probability($0, json, default: 0.1, fail: fail) }.max()!
        guard width <= GPTConfig.limits.width else { throw fail("'n_embd' must be between 1 and \(GPTConfig.limits.width), got \(width)") }
        var config = GPTConfig(
            vocabularySize: try int("vocab_size"), contextLength: try int("n_positions", "n_ctx"),
            layerCount: try int("n_layer"), headCount: try int("n_head"), embeddingWidth: width,
            mlpWidth: try integer(json, "n_inner", fail: fail) ?? 4 * width, activation: activation,
            layerNormEpsilon: Float(try number("layer_norm_epsilon", default: 1e-5)), dropout: Float(dropout),
            positions: json["swiftgpt_positions"] as? String == "sinusoidal" ? .sinusoidal : .learned,
            layout: modelType == "openai-gpt" ? .postNorm : .preNorm,
            tiedOutputEmbedding: (json["tie_word_embeddings"] as? Bool) ?? true)
        if modelType == "gpt_bigcode", (json["multi_query"] as? Bool) ?? true { config.keyValueHeadCount = 1 }
        if let layers = json[attentionLayersKey] {
            config.attentionPatterns = try attentionPatterns(layers, window: json[windowKey], stride: json[strideKey],
                                                             summaries: json[summariesKey], fail: fail)
        }
        return (try checked(config, fail: fail), modelType)
    }

    /// The `model_type`s this reader knows.
    static let supportedModelTypes = ["gpt2", "openai-gpt", "gpt_neo", "gpt_neox", "gptj", "gpt_bigcode"]

    /// `config` once it is valid and fits this machine's memory; the error names the file.
    static func checked(_ config: GPTConfig, fail: (String) -> FileError) throws -> GPTConfig {
        do {
            try config.validate()
            try config.checkFitsInMemory()
        } catch { throw fail("\(error)") }
        return config
    }

    /// An integer field of a config.json: nil when absent (or null), an error when it is not an integer.
    static func integer(_ json: [String: Any], _ key: String, fail: (String) -> FileError) throws -> Int? {
        guard let raw = json[key], !(raw is NSNull) else { return nil }
        guard let v = JSONNumber.integer(raw) else { throw fail("missing or non-integer '\(key)'") }
        return v
    }

    /// A number field of a config.json: finite when present, `value` when absent.
    static func number(_ json: [String: Any], _ key: String, default value: Double, fail: (String) -> FileError) throws -> Double {
        guard let raw = json[key], !(raw is NSNull) else { return value }
        guard let x = JSONNumber.finite(raw) else { throw fail("'\(key)' must be a finite number, got \(raw)") }
        return x
    }

    /// A dropout probability of a config.json: in [0, 1) when present.
    static func probability(_ key: String, _ json: [String: Any], default value: Double, fail: (String) -> FileError) throws -> Double {
        let p = try number(json, key, default: value, fail: fail)
        guard p >= 0 && p < 1 else { throw fail("'\(key)' must be a probability in [0, 1), got \(p)") }
        return p
    }

    /// Keys under which a GPT-2 or OpenAI-GPT config.json keeps local attention layers (only SwiftGPT reads them).
    static let attentionLayersKey = "swiftgpt_attention_layers", windowKey = "swiftgpt_window_size", strideKey = "swiftgpt_stride",
        summariesKey = "swiftgpt_summaries"

    /// Per-layer patterns from a list of kinds ("global", "local", "strided", "local+strided", "fixed"), the window,
    /// the stride (a fixed layer's block) and a fixed layer's summaries.
    static func attentionPatterns(_ layers: Any, window: Any?, stride: Any? = nil, summaries: Any? = nil,
                                  fail: (String) -> FileError) throws -> [AttentionPattern] {
        guard let kinds = layers as? [String] else { throw fail("the attention layers are not a list of kinds (global, local, …)") }
        let size = JSONNumber.integer(window), step = JSONNumber.integer(stride), count = JSONNumber.integer(summaries)
        if kinds.contains(where: { $0 == "local" || $0 == "local+strided" }), (size ?? 0) <= 0 {
            throw fail("local attention layers need a positive integer window size")
        }
        if kinds.contains(where: { $0.hasSuffix("strided") || $0 == "fixed" }), (step ?? 0) <= 0 {
            throw fail("strided and fixed attention layers need a positive integer stride")
        }
        if kinds.contains("fixed"), (count ?? 0) <= 0 { throw fail("fixed attention layers need a positive integer number of summaries") }
        // The sizes themselves are checked with the rest of the configuration (`GPTConfig.validate`).
        do {
            return try GPTConfig.patterns(cycling: kinds, window: size ?? 1, stride: step, summaries: count, layers: kinds.count)
        } catch { throw fail("\(error)") }
    }

    /// A GPT-Neo config.json: GPT-2's architecture with bias-free q/k/v projections, unscaled attention scores and
    /// `attention_types` alternating global and local (windowed) layers.
    static func readNeoConfig(_ json: [String: Any], fail: (String) -> FileError) throws -> GPTConfig {
        func int(_ key: String) throws -> Int {
            guard let v = try integer(json, key, fail: fail) else { throw fail("missing or non-integer '\(key)'") }
            return v
        }
        func number(_ key: String, default value: Double) throws -> Double { try Self.number(json, key, default: value, fail: fail) }
        let width = try int("hidden_size"), layerCount = try int("num_layers")
        guard (1...GPTConfig.limits.layerCount).contains(layerCount) else {
            throw fail("'num_layers' must be between 1 and \(GPTConfig.limits.layerCount), got \(layerCount)")
        }
        guard width <= GPTConfig.limits.width else { throw fail("'hidden_size' must be between 1 and \(GPTConfig.limits.width), got \(width)") }
        // attention_types: [[["global", "local"], 2]] → global, local, global, local.
        guard let types = json["attention_types"] as? [[Any]] else { throw fail("missing or malformed 'attention_types'") }
        var kinds: [String] = []
        for entry in types {
            guard entry.count == 2, let pattern = entry[0] as? [String], let repeats = JSONNumber.integer(entry[1]), repeats >= 0 else {
                throw fail("malformed 'attention_types' entry (expected [[kinds…], repeats])")
            }
            // Expanded only while it can still match num_layers (a repeat count of 2^62 is refused, not looped over).
            guard repeats == 0 || pattern.count <= (layerCount - kinds.count) / repeats else {
                throw fail("'attention_types' gives more layers than num_layers (\(layerCount))")
            }
            for _ in 0..<repeats { kinds += pattern }
        }
        guard kinds.count == layerCount else { throw fail("'attention_types' gives \(kinds.count) layers, num_layers is \(layerCount)") }
        let activation: GELUApproximation
        switch (json["activation_function"] as? String) ?? "gelu_new" {
        case "gelu_new", "gelu_pytorch_tanh": activation = .tanh
        case "gelu": activation = .none
        case let other: throw fail("unsupported activation '\(other)' (supported: gelu_new, gelu)").withReason(.unsupported)
        }
        var config = GPTConfig(
            vocabularySize: try int("vocab_size"), contextLength: try int("max_position_embeddings"), layerCount: layerCount,
            headCount: try int("num_heads"), embeddingWidth: width,
            mlpWidth: try integer(json, "intermediate_size", fail: fail) ?? 4 * width,
            activation: activation, layerNormEpsilon: Float(try number("layer_norm_epsilon", default: 1e-5)),
            dropout: Float(try ["resid_dropout", "embed_dropout", "attention_dropout"].map { try probability($0, json, default: 0, fail: fail) }.max()!),
            layout: .preNorm, tiedOutputEmbedding: (json["tie_word_embeddings"] as? Bool) ?? true)
        config.attentionPatterns = try attentionPatterns(kinds, window: json["window_size"], fail: fail)
        config.attentionScale = 1
        config.attentionBias = false
        return try checked(config, fail: fail)
    }

    /// The checkpoint format a configuration is saved as: GPT-Neo's for bias-free, unscaled attention; GPT-2's
    /// (pre-LN) or OpenAI-GPT's (post-LN) otherwise, local layers then kept under SwiftGPT's own config keys.
    static func checkpointType(_ c: GPTConfig) throws -> String {
        if let family = try linearFamily(c) { return family }
        if !c.attentionBias || c.attentionScale != nil {
            guard !c.attentionBias, c.attentionScale == 1, c.layout == .preNorm, c.positions == .learned else {
                throw ConfigurationError(.unsupportedFormat, "no Hugging Face format holds this attention (GPT-Neo's needs pre-LN, learned positions, bias-free q/k/v and unscaled scores)")
            }
            let windows = Set((0..<c.layerCount).compactMap { c.attentionWindow(layer: $0) })
            guard windows.count <= 1 else { throw ConfigurationError(.unsupportedFormat, "GPT-Neo checkpoints have one window size for every local layer") }
            guard (0..<c.layerCount).allSatisfy({ c.attentionStride(layer: $0) == nil }) else {
                throw ConfigurationError(.unsupportedFormat, "GPT-Neo checkpoints have no strided or fixed attention")
            }
            return "gpt_neo"
        }
        if let patterns = c.attentionPatterns {
            let (window, stride, summaries) = attentionSizes(c)
            guard try GPTConfig.patterns(cycling: c.attentionKinds, window: window ?? 1, stride: stride, summaries: summaries,
                                         layers: c.layerCount) == patterns else {
                throw ConfigurationError(.unsupportedFormat, "SwiftGPT's config.json keys hold one window, one stride and one summary count for all layers; these layers differ")
            }
        }
        guard c.layout == .preNorm || c.activation == .tanh else {
            throw ConfigurationError(.unsupportedFormat, "OpenAI-GPT checkpoints have no exact-erf GELU; use the tanh approximation")
        }
        return c.layout == .preNorm ? "gpt2" : "openai-gpt"
    }

    /// The config.json key under which a fine-tuned model keeps its `InputFormat` (transformers keeps unknown keys).
    static let inputFormatKey = "swiftgpt_input_format"
    /// The SwiftGPT version that wrote a checkpoint.
    static let versionKey = "swiftgpt_version"

    static func readInputFormat(_ url: URL) throws -> InputFormat? {
        guard let data = FileManager.default.contents(atPath: url.path),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any], let format = json[inputFormatKey] else { return nil }
        // JSONSerialization stops the process on a value that is not a container: check before re-encoding it.
        guard JSONSerialization.isValidJSONObject(format) else {
            throw FileError(url: url, reason: .malformed(line: nil), message: "'\(inputFormatKey)' must be an object describing the input format, got \(format)")
        }
        do { return try JSONDecoder().decode(InputFormat.self, from: JSONSerialization.data(withJSONObject: format)) } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "'\(inputFormatKey)' is not a valid input format (\(error))")
        }
    }

    /// The sequence-classification head that config.json describes for a `score` of `labelCount` rows.
    static func readClassification(_ url: URL, labelCount: Int, vocabularySize: Int) throws -> SequenceClassification {
        func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: nil), message: message) }
        guard let data = FileManager.default.contents(atPath: url.path),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw fail("not a JSON object") }
        let labelNames = json["id2label"] as? [String: String] ?? [:]
        let count = JSONNumber.integer(json["num_labels"]) ?? (labelNames.isEmpty ? labelCount : labelNames.count)
        guard count == labelCount, count > 0 else {
            throw fail("num_labels / id2label give \(count) labels, but score.weight has \(labelCount) rows")
        }
        let labels = (0..<count).map { labelNames[String($0)] ?? "LABEL_\($0)" }
        let problem: SequenceClassification.Problem
        switch json["problem_type"] as? String {
        case nil: problem = count == 1 ? .regression : .singleLabel
        case let name?:
            guard let known = SequenceClassification.Problem(rawValue: name) else {
                throw FileError(url: url, reason: .unsupported, message: "unsupported problem_type '\(name)' (supported: single_label_classification, regression)")
            }
            problem = known
        }
        guard let pad = JSONNumber.integer(json["pad_token_id"]) else {
            throw fail("a sequence-classification model needs 'pad_token_id' (the head reads each row's last non-pad token)")
        }
        guard (0..<vocabularySize).contains(pad) else {
            throw fail("'pad_token_id' \(pad) is not a token id of the model (0..<\(vocabularySize))")
        }
        return SequenceClassification(labels: labels, problem: problem, padTokenID: Int32(pad))
    }

    /// GPT-2's `<|endoftext|>` id, which its checkpoints name as their BOS and EOS tokens.
    static let gpt2EndOfText = 50256

    /// The first window, stride (or fixed block) and summary count among the layers, as SwiftGPT's config keys keep them.
    static func attentionSizes(_ c: GPTConfig) -> (window: Int?, stride: Int?, summaries: Int?) {
        let layers = 0..<c.layerCount
        return (layers.lazy.compactMap { c.attentionWindow(layer: $0) }.first,
                layers.lazy.compactMap { c.attentionStride(layer: $0) }.first,
                layers.lazy.compactMap { c.attentionSummaries(layer: $0) }.first)
    }

    static func hfConfig(_ c: GPTConfig, modelType: String, head: TaskHead?) -> [String: Any] {
        if linearFamilies.contains(modelType) { return linearFamilyConfig(c, family: modelType, head: head) }
        let kinds = c.attentionKinds
        let (window, stride, summaries) = attentionSizes(c)
        if modelType == "gpt_neo" {
            var json: [String: Any] = [
                "model_type": modelType, "architectures": [head == nil || head == .value ? "GPTNeoForCausalLM" : "GPTNeoForSequenceClassification"],
                "vocab_size": c.vocabularySize, "max_position_embeddings": c.contextLength, "hidden_size": c.embeddingWidth,
                "num_layers": c.layerCount, "num_heads": c.headCount, "intermediate_size": c.mlpWidth,
                "attention_types": kinds.map { [[$0], 1] as [Any] }, "attention_layers": kinds, "window_size": window ?? 256,
                "activation_function": c.activation == .tanh ? "gelu_new" : "gelu",
                "layer_norm_epsilon": Double(c.layerNormEpsilon), "resid_dropout": Double(c.dropout),
                "embed_dropout": Double(c.dropout), "attention_dropout": Double(c.dropout), "initializer_range": 0.02,
                "tie_word_embeddings": c.tiedOutputEmbedding, "dtype": "float32",
            ]
            if c.vocabularySize > gpt2EndOfText { json["bos_token_id"] = gpt2EndOfText; json["eos_token_id"] = gpt2EndOfText }
            if case .sequenceClassification(let classification)? = head { addFields(of: classification, to: &json) }
            return json
        }
        var json: [String: Any] = [
            "model_type": modelType, "vocab_size": c.vocabularySize, "n_positions": c.contextLength,
            "n_embd": c.embeddingWidth, "n_layer": c.layerCount, "n_head": c.headCount,
            "layer_norm_epsilon": Double(c.layerNormEpsilon), "resid_pdrop": Double(c.dropout),
            "embd_pdrop": Double(c.dropout), "attn_pdrop": Double(c.dropout), "initializer_range": 0.02,
            "tie_word_embeddings": c.tiedOutputEmbedding, "dtype": "float32",
            "summary_type": "cls_index", "summary_use_proj": true, "summary_proj_to_labels": true,
            "summary_first_dropout": 0.0, "summary_activation": NSNull(),
        ]
        let activation = c.activation == .tanh ? "gelu_new" : "gelu"
        let family = modelType == "gpt2" ? "GPT2" : "OpenAIGPT"
        switch head {
        case nil, .value?: json["architectures"] = [family + "LMHeadModel"]
        case .multipleChoice?:
            json["architectures"] = [family + "DoubleHeadsModel"]
            json["num_labels"] = 1
        case .sequenceClassification(let classification)?:
            json["architectures"] = [family + "ForSequenceClassification"]
            addFields(of: classification, to: &json)
        }
        if modelType == "gpt2" {
            json["activation_function"] = activation
            json["n_inner"] = c.mlpWidth
            // The context again under the name OpenAI's GPT-2 configs carry it; llama.cpp's converter reads this one.
            json["n_ctx"] = c.contextLength
            // GPT-2's end-of-text id, where the vocabulary has it (a vocabulary trained here numbers it otherwise).
            if c.vocabularySize > gpt2EndOfText { json["bos_token_id"] = gpt2EndOfText; json["eos_token_id"] = gpt2EndOfText }
        } else {
            json["afn"] = "gelu"
        }
        if c.positions == .sinusoidal { json["swiftgpt_positions"] = "sinusoidal" }
        if c.attentionPatterns != nil {
            json[attentionLayersKey] = kinds
            if let window { json[windowKey] = window }
            if let stride { json[strideKey] = stride }
            if let summaries { json[summariesKey] = summaries }
        }
        return json
    }

    /// The config.json fields of a sequence-classification head: its labels, problem type and padding token.
    static func addFields(of classification: SequenceClassification, to json: inout [String: Any]) {
        json["num_labels"] = classification.labels.count
        json["problem_type"] = classification.problem.rawValue
        json["pad_token_id"] = Int(classification.padTokenID)
        json["id2label"] = Dictionary(uniqueKeysWithValues: classification.labels.enumerated().map { (String($0.offset), $0.element) })
        json["label2id"] = Dictionary(classification.labels.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
    }

    // MARK: Names and layouts

    /// A checkpoint tensor under SwiftGPT's layout: its shape, and how to write its values into a parameter's
    /// memory (read from the file then, one tensor at a time, so that loading never holds two copies of a model).
    struct StoredTensor {
        /// A reader of some rows of a matrix, as `SafeTensors.rowReader(_:)` gives: `reader(rows, target)`.
        typealias RowReader = @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void

        let shape: [Int]
        let fill: (UnsafeMutablePointer<Float>) throws -> Void
        /// For a tensor the file stores as SwiftGPT does: a reader of some of its rows (an embedding's tokens).
        let rowReader: (() throws -> RowReader)?
        /// For a matrix the file stores transposed (`nn.Linear`'s [out, in]): a reader of some of SwiftGPT's columns
        /// (its outputs), each as a row of `shape[0]` weights, which decoding packs without a transpose.
        let columnReader: (() throws -> RowReader)?

        /// The file's tensor `name` as it is stored.
        init(_ file: CheckpointWeights, _ name: String) {
            shape = file.entries[name]?.shape ?? []
            fill = { try file.read(name, into: $0) }
            rowReader = { try file.rowReader(name) }
            columnReader = nil
        }

        init(shape: [Int], rowReader: (() throws -> RowReader)? = nil, columnReader: (() throws -> RowReader)? = nil,
             fill: @escaping (UnsafeMutablePointer<Float>) throws -> Void) {
            self.shape = shape
            self.fill = fill
            self.rowReader = rowReader
            self.columnReader = columnReader
        }

        /// The `nn.Linear` matrix `name` (`[out, in]`, `theirs` its shape) transposed to SwiftGPT's `[in, out]`.
        static func transposing(_ file: CheckpointWeights, _ name: String, _ theirs: [Int]) -> StoredTensor {
            StoredTensor(shape: [theirs[1], theirs[0]], columnReader: {
                try file.checkShape(name, theirs)
                return try file.rowReader(name)
            }) { try file.checkedTensor(name, shape: theirs).transpose2D(into: $0) }
        }
    }

    /// The tensors of a checkpoint under SwiftGPT's names and layouts (attention buffers left out). GPT-Neo's
    /// separate q/k/v projections become one `c_attn` and its `nn.Linear` matrices ([out, in]) are transposed.
    static func storedTensors(_ file: CheckpointWeights, modelType: String, config: GPTConfig) throws -> [String: StoredTensor] {
        if linearFamilies.contains(modelType) { return try linearFamilyTensors(file, family: modelType, config: config) }
        var result: [String: StoredTensor] = [:]
        guard modelType == "gpt_neo" else {
            for name in file.names where !isBuffer(ourName(name, modelType: modelType)) {
                result[ourName(name, modelType: modelType)] = StoredTensor(file, name)
            }
            return result
        }
        let width = config.embeddingWidth
        var consumed = Set<String>()
        for layer in 0..<config.layerCount {
            let prefix = "transformer.h.\(layer).", attention = prefix + "attn.attention.", b = ParameterNames.Block(layer)
            let parts = ["q_proj", "k_proj", "v_proj"].map { attention + $0 + ".weight" }
            result[b.queryKeyValue.weight] = StoredTensor(shape: [width, 3 * width]) { qkv in
                for (part, name) in parts.enumerated() {
                    let w = try file.checkedTensor(name, shape: [width, width])
                    for i in 0..<width { for o in 0..<width { qkv[i * 3 * width + part * width + o] = w.pointer[o * width + i] } }
                }
            }
            consumed.formUnion(parts)
            for (theirs, ours, shape) in [("attn.attention.out_proj.weight", b.attentionOutput, [width, width]),
                                          ("mlp.c_fc.weight", b.mlpInput, [config.mlpWidth, width]),
                                          ("mlp.c_proj.weight", b.mlpOutput, [width, config.mlpWidth])] {
                result[ours.weight] = .transposing(file, prefix + theirs, shape)
                consumed.insert(prefix + theirs)
            }
            result[b.attentionOutput.bias] = StoredTensor(file, attention + "out_proj.bias")
            consumed.insert(attention + "out_proj.bias")
        }
        for name in file.names where !consumed.contains(name) {
            let ours = ourName(name, modelType: modelType)
            if ours.hasSuffix("attn.attention.bias") || ours.hasSuffix("attn.attention.masked_bias") { continue }
            result[ours] = StoredTensor(file, name)
        }
        return result
    }

    /// The model's tensors under the checkpoint's names and layouts, `tensor(name)` giving the value (or the
    /// gradient) of each SwiftGPT parameter: what `save` writes, and what parity compares gradients by.
    package static func exportedTensors(_ model: GPTModel, _ tensor: (String) -> Tensor) throws -> [(name: String, tensor: Tensor)] {
        let c = model.config
        let modelType = try checkpointType(c)
        if linearFamilies.contains(modelType) { return linearFamilyExport(model, family: modelType, tensor) }
        guard modelType == "gpt_neo" else { return model.parameters.names.map { (hfName($0, modelType: modelType), tensor($0)) } }
        let width = c.embeddingWidth
        var result: [(name: String, tensor: Tensor)] = []
        for name in model.parameters.names {
            let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
            guard parts.count == 3, parts[0] == "h", let layer = Int(parts[1]) else {
                result.append((hfName(name, modelType: modelType), tensor(name)))
                continue
            }
            let prefix = "transformer.h.\(layer).", value = tensor(name), b = ParameterNames.Block(layer)
            switch name {
            case b.queryKeyValue.weight:
                for (part, projection) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                    let w = Tensor(uninitializedShape: [width, width])
                    for i in 0..<width { for o in 0..<width { w.pointer[o * width + i] = value.pointer[i * 3 * width + part * width + o] } }
                    result.append((prefix + "attn.attention.\(projection).weight", w))
                }
            case b.attentionOutput.weight: result.append((prefix + "attn.attention.out_proj.weight", value.transposed2D()))
            case b.attentionOutput.bias: result.append((prefix + "attn.attention.out_proj.bias", value))
            case b.mlpInput.weight, b.mlpOutput.weight: result.append((prefix + parts[2], value.transposed2D()))
            default: result.append((prefix + parts[2], value))
            }
        }
        return result
    }

    /// SwiftGPT's name for a checkpoint tensor name.
    static func ourName(_ name: String, modelType: String) -> String {
        var n = name.hasPrefix("transformer.") ? String(name.dropFirst("transformer.".count)) : name
        if modelType == "openai-gpt" {
            if n == "tokens_embed.weight" { n = ParameterNames.tokenEmbedding }
            if n == "positions_embed.weight" { n = ParameterNames.positionEmbedding }
        }
        return n
    }

    /// The checkpoint name of a SwiftGPT parameter name.
    package static func hfName(_ name: String, modelType: String) -> String {
        if linearFamilies.contains(modelType) { return linearFamilyName(name, family: modelType) }
        if TaskHead.isHeadParameter(name) || name == ParameterNames.outputLayer { return name }
        var n = name
        if modelType == "openai-gpt" {
            if n == ParameterNames.tokenEmbedding { n = "tokens_embed.weight" }
            if n == ParameterNames.positionEmbedding { n = "positions_embed.weight" }
        }
        return "transformer." + n
    }

    /// Attention mask buffers that old GPT-2 checkpoints store; they are not parameters.
    static func isBuffer(_ name: String) -> Bool {
        let parts = name.split(separator: ".")
        return parts.count >= 2 && parts[parts.count - 2] == "attn" && (parts.last == "bias" || parts.last == "masked_bias")
    }
}
