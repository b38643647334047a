import Foundation
import GPTUtilities
import TensorCore

/// The checkpoint families whose matrices are `nn.Linear` (`[out, in]`, transposed on the way in and out) and whose
/// blocks differ from GPT-2's: GPT-NeoX (Pythia: rotary positions, parallel attention and MLP, q/k/v fused per head),
/// GPT-J (rotary positions in pairs of adjacent dimensions, one LayerNorm per block for a parallel attention and MLP,
/// separate bias-free q/k/v, an output bias) and GPTBigCode (SantaCoder, StarCoder: GPT-2 with one key/value head
/// shared by every query head).
extension HuggingFaceCheckpoint {
    /// The `model_type`s read and written here.
    static let linearFamilies: Set<String> = ["gpt_neox", "gptj", "gpt_bigcode"]

    // MARK: Configuration

    /// A GPT-NeoX config.json (Pythia's keys `rotary_pct` / `rotary_emb_base`, or transformers 5's `rope_parameters`).
    static func readNeoXConfig(_ json: [String: Any], fail: (String) -> FileError) throws -> GPTConfig {
        func int(_ key: String) throws -> Int {
            guard let v = try integer(json, key, fail: fail) else { throw fail("missing or non-integer '\(key)'") }
            return v
        }
        let width = try int("hidden_size"), heads = try int("num_attention_heads")
        guard width <= GPTConfig.limits.width else { throw fail("'hidden_size' must be between 1 and \(GPTConfig.limits.width), got \(width)") }
        guard heads > 0, width % heads == 0 else { throw fail("'hidden_size' \(width) is not a multiple of 'num_attention_heads' \(heads)") }
        let rope = json["rope_parameters"] as? [String: Any] ?? json["rope_scaling"] as? [String: Any] ?? [:]
        if let type = rope["rope_type"] ?? rope["type"], type as? String != "default" {
            throw fail("rotary scaling '\(type)' is not supported (supported: default)")
        }
        let fraction = try number(rope, "partial_rotary_factor", default: try number(json, "rotary_pct", default: 0.25, fail: fail), fail: fail)
        let base = try number(rope, "rope_theta", default: try number(json, "rotary_emb_base", default: 10000, fail: fail), fail: fail)
        guard fraction > 0, fraction <= 1 else { throw fail("the rotary fraction must be in (0, 1], got \(fraction)") }
        let bias = (json["attention_bias"] as? Bool) ?? true
        var config = GPTConfig(
            vocabularySize: try int("vocab_size"), contextLength: try int("max_position_embeddings"),
            layerCount: try int("num_hidden_layers"), headCount: heads, embeddingWidth: width,
            mlpWidth: try int("intermediate_size"), activation: try activation(json["hidden_act"], default: "gelu", fail: fail),
            layerNormEpsilon: Float(try number(json, "layer_norm_eps", default: 1e-5, fail: fail)),
            dropout: Float(try ["hidden_dropout", "attention_dropout"].map { try probability($0, json, default: 0, fail: fail) }.max()!),
            positions: .rotary, layout: (json["use_parallel_residual"] as? Bool) ?? true ? .parallel : .preNorm,
            tiedOutputEmbedding: (json["tie_word_embeddings"] as? Bool) ?? false)
        // transformers: int(head_size · partial_rotary_factor).
        config.rotaryDimensions = Int(Double(width / heads) * fraction)
        config.rotaryBase = Float(base)
        config.attentionBias = bias
        config.attentionOutputBias = bias
        return try checked(config, fail: fail)
    }

    /// A GPT-J config.json.
    static func readGPTJConfig(_ json: [String: Any], fail: (String) -> FileError) throws -> GPTConfig {
        func int(_ key: String) throws -> Int {
            guard let v = try integer(json, key, fail: fail) else { throw fail("missing or non-integer '\(key)'") }
            return v
        }
        let width = try int("n_embd")
        guard width <= GPTConfig.limits.width else { throw fail("'n_embd' must be between 1 and \(GPTConfig.limits.width), got \(width)") }
        var config = GPTConfig(
            vocabularySize: try int("vocab_size"), contextLength: try int("n_positions"), layerCount: try int("n_layer"),
            headCount: try int("n_head"), embeddingWidth: width, mlpWidth: try integer(json, "n_inner", fail: fail) ?? 4 * width,
            activation: try activation(json["activation_function"], default: "gelu_new", fail: fail),
            layerNormEpsilon: Float(try number(json, "layer_norm_epsilon", default: 1e-5, fail: fail)),
            dropout: Float(try ["resid_pdrop", "embd_pdrop", "attn_pdrop"].map { try probability($0, json, default: 0, fail: fail) }.max()!),
            positions: .rotary, layout: .parallelSharedNorm, tiedOutputEmbedding: (json["tie_word_embeddings"] as? Bool) ?? false)
        config.rotaryDimensions = try int("rotary_dim")
        config.attentionBias = false
        config.attentionOutputBias = false
        config.outputBias = true
        return try checked(config, fail: fail)
    }

    /// A GELU named as transformers names it.
    static func activation(_ value: Any?, default name: String, fail: (String) -> FileError) throws -> GELUApproximation {
        switch (value as? String) ?? name {
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": return .tanh
        case "gelu": return .none
        case let other: throw fail("unsupported activation '\(other)' (supported: gelu, gelu_new, gelu_pytorch_tanh)")
        }
    }

    /// The family among these that holds `c`, nil when none does (it may still be GPT-2's, OpenAI-GPT's or GPT-Neo's).
    static func linearFamily(_ c: GPTConfig) throws -> String? {
        let sharedHeads = c.keyValueHeadCount.map { $0 != c.headCount } ?? false
        guard c.positions == .rotary || sharedHeads || c.layout == .parallel || c.layout == .parallelSharedNorm
              || !c.attentionOutputBias || c.outputBias else { return nil }
        let plainAttention = c.attentionScale == nil && c.attentionPatterns == nil
        if c.positions == .rotary, plainAttention, !sharedHeads {
            if c.layout == .parallelSharedNorm, !c.attentionBias, !c.attentionOutputBias, c.outputBias, !c.tiedOutputEmbedding,
               c.rotaryBase == 10000 {
                return "gptj"
            }
            if c.layout == .parallel || c.layout == .preNorm, c.attentionBias == c.attentionOutputBias, !c.outputBias {
                return "gpt_neox"
            }
        }
        if c.positions == .learned, plainAttention, c.keyValueHeadCount == 1, c.layout == .preNorm, c.attentionBias,
           c.attentionOutputBias, !c.outputBias {
            return "gpt_bigcode"
        }
        throw ConfigurationError(.unsupportedFormat, "no Hugging Face format holds this model (GPT-NeoX: rotary positions, biases on all or none "
                                 + "of attention's projections, no output bias; GPT-J: rotary positions with base 10000, one LayerNorm "
                                 + "per block, bias-free attention, an untied output layer with a bias; GPTBigCode: GPT-2 with one "
                                 + "key/value head)")
    }

    /// The config.json of `c` in `family`, with `head`'s fields.
    static func linearFamilyConfig(_ c: GPTConfig, family: String, head: TaskHead?) -> [String: Any] {
        let activation = c.activation == .tanh ? (family == "gpt_bigcode" ? "gelu_pytorch_tanh" : "gelu_new") : "gelu"
        var json: [String: Any] = ["model_type": family, "vocab_size": c.vocabularySize, "tie_word_embeddings": c.tiedOutputEmbedding,
                                   "initializer_range": 0.02, "dtype": "float32"]
        let classifying = { if case .sequenceClassification? = head { true } else { false } }()
        switch family {
        case "gpt_neox":
            json["architectures"] = [classifying ? "GPTNeoXForSequenceClassification" : "GPTNeoXForCausalLM"]
            json["hidden_size"] = c.embeddingWidth
            json["num_hidden_layers"] = c.layerCount
            json["num_attention_heads"] = c.headCount
            json["intermediate_size"] = c.mlpWidth
            json["max_position_embeddings"] = c.contextLength
            json["hidden_act"] = activation
            json["layer_norm_eps"] = Double(c.layerNormEpsilon)
            json["use_parallel_residual"] = c.layout == .parallel
            json["attention_bias"] = c.attentionBias
            json["hidden_dropout"] = Double(c.dropout)
            json["attention_dropout"] = Double(c.dropout)
            let fraction = Double(c.rotaryDimensions ?? 0) / Double(c.headWidth)
            json["rotary_pct"] = fraction
            json["rotary_emb_base"] = Double(c.rotaryBase)
            json["rope_parameters"] = ["rope_type": "default", "partial_rotary_factor": fraction, "rope_theta": Double(c.rotaryBase)]
        default:
            json["architectures"] = [family == "gptj" ? (classifying ? "GPTJForSequenceClassification" : "GPTJForCausalLM")
                                                      : (classifying ? "GPTBigCodeForSequenceClassification" : "GPTBigCodeForCausalLM")]
            json["n_embd"] = c.embeddingWidth
            json["n_layer"] = c.layerCount
            json["n_head"] = c.headCount
            json["n_inner"] = c.mlpWidth
            json["n_positions"] = c.contextLength
            json["activation_function"] = activation
            json["layer_norm_epsilon"] = Double(c.layerNormEpsilon)
            for key in ["resid_pdrop", "embd_pdrop", "attn_pdrop"] { json[key] = Double(c.dropout) }
            if family == "gptj" { json["rotary_dim"] = c.rotaryDimensions ?? 0 } else { json["multi_query"] = true }
            if c.vocabularySize > gpt2EndOfText { json["bos_token_id"] = gpt2EndOfText; json["eos_token_id"] = gpt2EndOfText }
        }
        if case .sequenceClassification(let classification)? = head { addFields(of: classification, to: &json) }
        return json
    }

    // MARK: Names and layouts

    /// The checkpoint name of SwiftGPT's parameter `ours` in `family` (for GPT-J's fused q/k/v: its query's).
    static func linearFamilyName(_ ours: String, family: String) -> String {
        if TaskHead.isHeadParameter(ours) || ours == ParameterNames.outputBias { return ours }
        let parts = ours.split(separator: ".", maxSplits: 2).map(String.init)
        switch family {
        case "gpt_neox":
            if parts.count == 3, parts[0] == "h" {
                let renames = [("ln_1.", "input_layernorm."), ("ln_2.", "post_attention_layernorm."),
                               ("attn.c_attn.", "attention.query_key_value."), ("attn.c_proj.", "attention.dense."),
                               ("mlp.c_fc.", "mlp.dense_h_to_4h."), ("mlp.c_proj.", "mlp.dense_4h_to_h.")]
                for (from, to) in renames where parts[2].hasPrefix(from) {
                    return "gpt_neox.layers.\(parts[1])." + to + parts[2].dropFirst(from.count)
                }
            }
            switch ours {
            case ParameterNames.tokenEmbedding: return "gpt_neox.embed_in.weight"
            case ParameterNames.outputLayer: return "embed_out.weight"
            case ParameterNames.finalNorm.weight: return "gpt_neox.final_layer_norm.weight"
            case ParameterNames.finalNorm.bias: return "gpt_neox.final_layer_norm.bias"
            default: return ours
            }
        case "gptj":
            if ours == ParameterNames.outputLayer { return ours }
            if parts.count == 3, parts[0] == "h" {
                let renames = [("attn.c_attn.", "attn.q_proj."), ("attn.c_proj.", "attn.out_proj."), ("mlp.c_fc.", "mlp.fc_in."),
                               ("mlp.c_proj.", "mlp.fc_out.")]
                for (from, to) in renames where parts[2].hasPrefix(from) {
                    return "transformer.h.\(parts[1])." + to + parts[2].dropFirst(from.count)
                }
            }
            return "transformer." + ours
        default:
            return ours == ParameterNames.outputLayer ? ours : "transformer." + ours
        }
    }

    /// Whether a checkpoint tensor is a buffer (attention masks, rotary tables) rather than a parameter.
    static func isLinearFamilyBuffer(_ name: String) -> Bool {
        ["attention.bias", "attention.masked_bias", "rotary_emb.inv_freq", "attn.bias", "attn.masked_bias"].contains { name.hasSuffix("." + $0) }
            || name == "transformer.bias"
    }

    /// Where GPT-J's query or key dimension `n` of a head (SwiftGPT's order, NeoX's pairs j and j + r/2) is in the
    /// checkpoint (GPT-J's pairs 2j and 2j + 1); dimensions past the rotary ones stay.
    static func gptjDimension(_ n: Int, rotary r: Int) -> Int {
        guard n < r else { return n }
        return n < r / 2 ? 2 * n : 2 * (n - r / 2) + 1
    }

    /// The checkpoint tensors of a fused q/k/v parameter whose (query's) checkpoint name is `name`: GPT-NeoX's one
    /// tensor, or GPT-J's q, k and v projections.
    static func queryKeyValueNames(_ name: String, family: String) -> [String] {
        family == "gpt_neox" ? [name] : ["q_proj", "k_proj", "v_proj"].map { name.replacingOccurrences(of: "q_proj", with: $0) }
    }

    /// For SwiftGPT's fused q/k/v output column `column`: the checkpoint's tensor part (0 q, 1 k, 2 v, or 0 for
    /// GPT-NeoX's single tensor) and row in it.
    static func queryKeyValueSource(_ column: Int, family: String, config c: GPTConfig) -> (part: Int, row: Int) {
        let width = c.embeddingWidth, d = c.headWidth
        let part = column / width, head = (column % width) / d, dimension = column % d
        switch family {
        case "gpt_neox": return (0, head * 3 * d + part * d + dimension)
        default: return (part, head * d + (part < 2 ? gptjDimension(dimension, rotary: c.rotaryDimensions ?? 0) : dimension))
        }
    }

    /// The tensors of a GPT-NeoX, GPT-J or GPTBigCode checkpoint under SwiftGPT's names and layouts; a tensor the
    /// model does not have, or one it needs and the file lacks, is an error naming it.
    static func linearFamilyTensors(_ file: CheckpointWeights, family: String, config c: GPTConfig) throws -> [String: StoredTensor] {
        func require(_ name: String) throws {
            guard file.entries[name] != nil else { throw FileError(url: file.url, reason: .mismatched, message: "missing tensor '\(name)'") }
        }
        var result: [String: StoredTensor] = [:], consumed = Set<String>()
        for (ours, shape) in GPTModel.parameterShapes(c) {
            let theirs = linearFamilyName(ours, family: family)
            let isQKV = ours.hasSuffix("attn.c_attn.weight") || ours.hasSuffix("attn.c_attn.bias")
            if isQKV && family != "gpt_bigcode" {
                // GPT-NeoX's per-head groups, or GPT-J's three projections, to SwiftGPT's [q | k | v] columns.
                let names = queryKeyValueNames(theirs, family: family)
                for name in names { try require(name) }
                let columns = shape.last!, inputs = shape.count == 2 ? shape[0] : 1
                let partShape = shape.count == 2 ? [columns / names.count, inputs] : [columns / names.count]
                // Each of SwiftGPT's columns is a row of one of the file's matrices.
                let columnReader: () throws -> StoredTensor.RowReader = {
                    for name in names { try file.checkShape(name, partShape) }
                    let readers = try names.map { try file.rowReader($0) }
                    return { outputs, target in
                        for (index, column) in outputs.enumerated() {
                            let (part, row) = queryKeyValueSource(column, family: family, config: c)
                            readers[part](row..<(row + 1), target + index * inputs)
                        }
                    }
                }
                result[ours] = StoredTensor(shape: shape, columnReader: shape.count == 2 ? columnReader : nil) { tensor in
                    let parts = try names.map { try file.checkedTensor($0, shape: partShape) }
                    for column in 0..<columns {
                        let (part, row) = queryKeyValueSource(column, family: family, config: c)
                        for i in 0..<inputs { tensor[i * columns + column] = parts[part].pointer[row * inputs + i] }
                    }
                }
                consumed.formUnion(names)
            } else if shape.count == 2, ours.hasPrefix("h.") {
                try require(theirs)
                result[ours] = .transposing(file, theirs, [shape[1], shape[0]])
                consumed.insert(theirs)
            } else {
                try require(theirs)
                result[ours] = StoredTensor(file, theirs)
                consumed.insert(theirs)
            }
        }
        for name in file.names.sorted() where !consumed.contains(name) && !isLinearFamilyBuffer(name) {
            if TaskHead.isHeadParameter(name) {
                result[name] = StoredTensor(file, name)
            } else if !(name == "lm_head.weight" && c.tiedOutputEmbedding) {
                throw FileError(url: file.url, reason: .mismatched, message: "unexpected tensor '\(name)' for a \(family) model of this configuration")
            }
        }
        return result
    }

    /// The model's tensors as a GPT-NeoX, GPT-J or GPTBigCode checkpoint names and lays them out, `tensor(name)`
    /// giving the value (or gradient) of each SwiftGPT parameter.
    static func linearFamilyExport(_ model: GPTModel, family: String, _ tensor: (String) -> Tensor) -> [(name: String, tensor: Tensor)] {
        let c = model.config
        var result: [(name: String, tensor: Tensor)] = []
        for name in model.parameters.names {
            let value = tensor(name), theirs = linearFamilyName(name, family: family)
            let isQKV = name.hasSuffix("attn.c_attn.weight") || name.hasSuffix("attn.c_attn.bias")
            if isQKV && family != "gpt_bigcode" {
                let names = queryKeyValueNames(theirs, family: family)
                let columns = value.shape.last!, inputs = value.rank == 2 ? value.shape[0] : 1
                let parts = names.map { _ in
                    Tensor(uninitializedShape: value.rank == 2 ? [columns / names.count, inputs] : [columns / names.count])
                }
                for column in 0..<columns {
                    let (part, row) = queryKeyValueSource(column, family: family, config: c)
                    for i in 0..<inputs { parts[part].pointer[row * inputs + i] = value.pointer[i * columns + column] }
                }
                result += zip(names, parts).map { ($0, $1) }
            } else if value.rank == 2, name.hasPrefix("h.") {
                result.append((theirs, value.transposed2D()))
            } else {
                result.append((theirs, value))
            }
        }
        return result
    }
}
