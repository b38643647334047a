import Foundation
import GPTUtilities
import TensorCore

/// A decoder-only transformer: token and position embeddings, a stack of blocks of masked multi-head
/// self-attention and a GELU MLP, LayerNorm placed per `GPTConfig.Layout`, and an output layer over the vocabulary.
///
/// Parameter names follow Hugging Face GPT-2 without the `transformer.` prefix (`wte.weight`, `h.0.attn.c_attn.weight`,
/// `ln_f.weight`, …); weights are stored `[in, out]` as HF's Conv1D.
public final class GPTModel {
    /// The model's shape.
    public private(set) var config: GPTConfig
    /// Every parameter of the model (frozen, holding no gradients, under an adapter).
    package private(set) var parameters: ParameterSet
    /// The low-rank adapter trained or applied over the frozen `parameters`, if any.
    package private(set) var adapter: LowRankAdapter?
    /// The task head beside the language-model head, if any; its parameters are in `parameters`.
    package let taskHead: TaskHead?
    /// How task inputs are laid out as token sequences, for a fine-tuned model (saved with it).
    package var inputFormat: InputFormat?
    /// The fixed position table when positions are sinusoidal.
    let sinusoidalPositions: Variable?
    /// Rotary embedding's cosines and sines for every position of the context, when positions are rotary.
    let rotaryTable: RotaryTable?
    /// Whether the matrices decoding streams, the output layer and the token embedding were read straight into
    /// decoding weights and never into `parameters` (see `HuggingFaceCheckpoint.loadForDecoding`): such a model runs
    /// only in an `InferenceSession` given those weights, and cannot be trained, saved or packed again.
    package internal(set) var isDecodingOnly = false

    /// A model with every parameter allocated, initialised as GPT-2: weights N(0, 0.02), residual output
    /// projections N(0, 0.02 / √(2·layers)), biases 0, LayerNorm gains 1. A task head's parameters (initialised the
    /// same way) share the arena, so one optimizer steps all.
    package convenience init(config: GPTConfig, seed: UInt64 = 0, taskHead: TaskHead?) throws {
        try self.init(config: config, seed: seed, taskHead: taskHead, initializeWeights: true)
    }

    /// A language model with every parameter allocated and initialised as GPT-2 from `seed`: weights N(0, 0.02),
    /// residual output projections N(0, 0.02 / √(2·layers)), biases 0, LayerNorm gains 1. Save it with
    /// ``HuggingFaceCheckpoint/save(_:to:as:)``.
    public convenience init(config: GPTConfig, seed: UInt64 = 0) throws {
        try self.init(config: config, seed: seed, taskHead: nil, initializeWeights: true)
    }

    /// A model whose weights are left unset when `initializeWeights` is false: for loading a checkpoint, which sets
    /// every one (drawing them first would only cost time).
    init(config: GPTConfig, seed: UInt64, taskHead: TaskHead?, initializeWeights: Bool) throws {
        try config.validate()
        try config.checkFitsInMemory()
        self.config = config
        self.taskHead = taskHead
        let specs = GPTModel.parameterShapes(config) + (taskHead?.parameterShapes(width: config.embeddingWidth) ?? [])
        parameters = ParameterSet(specs)
        sinusoidalPositions = config.positions == .sinusoidal
            ? Variable(GPTModel.sinusoidalTable(length: config.contextLength, width: config.embeddingWidth)) : nil
        rotaryTable = config.rotaryDimensions.map { RotaryTable(dimensions: $0, base: config.rotaryBase, length: config.contextLength) }
        guard initializeWeights else { return }
        var random = SeededRandom(seed: seed)
        let residualStd = 0.02 / Float(2 * config.layerCount).squareRoot()
        let blocks = (0..<config.layerCount).map(ParameterNames.Block.init)
        let gains = Set(blocks.flatMap { [$0.attentionNorm.weight, $0.mlpNorm.weight] } + [ParameterNames.finalNorm.weight])
        let residualOutputs = Set(blocks.flatMap { [$0.attentionOutput.weight, $0.mlpOutput.weight] })
        for (name, shape) in specs {
            let p = parameters[name].value
            if gains.contains(name) {
                p.fill(1)
            } else if shape.count >= 2 {
                let std = residualOutputs.contains(name) ? residualStd : 0.02
                random.fillNormal(p.buffer, mean: 0, std: std)
            } else {
                p.fill(0)
            }
        }
    }

    /// A copy of this model whose vocabulary has `vocabularySize` rows (the new rows of the token embedding, and of
    /// an untied output layer, initialised N(0, 0.02) from `seed`) and which carries `taskHead`, freshly initialised
    /// as in `init` unless this model already has the same head, which is then kept.
    package func adapted(vocabularySize: Int, taskHead: TaskHead?, seed: UInt64) throws -> GPTModel {
        precondition(vocabularySize >= config.vocabularySize, "a vocabulary can only grow")
        var newConfig = config
        newConfig.vocabularySize = vocabularySize
        let model = try GPTModel(config: newConfig, seed: seed, taskHead: taskHead)
        let keepHead = taskHead == self.taskHead
        for name in parameters.names where model.parameters.contains(name) && (keepHead || !TaskHead.isHeadParameter(name)) {
            let source = parameters[name].value, target = model.parameters[name].value
            // Token rows come first in both tables, so the old rows are a prefix of the new table.
            target.pointer.update(from: source.pointer, count: source.count)
        }
        model.inputFormat = inputFormat
        model.addedTokenRows = addedTokenRows + vocabularySize - config.vocabularySize
        return model
    }

    /// Rows of the token embedding that `adapted(vocabularySize:taskHead:seed:)` added to the model it was loaded as
    /// (new tokens, untrained): an adapter trains the embedding whole when there are any.
    package private(set) var addedTokenRows = 0

    /// The parameters a low-rank adapter on this model trains whole: the task head's, and the token embedding (with
    /// an untied output layer) when tokens were added.
    package var parametersTrainedWhole: [String] {
        var names = taskHead?.parameterShapes(width: config.embeddingWidth).map(\.name) ?? []
        if addedTokenRows > 0 { names += [ParameterNames.tokenEmbedding] + (config.tiedOutputEmbedding ? [] : [ParameterNames.outputLayer]) }
        return names
    }

    /// What training this model optimises: its adapter's parameters when it has one, else all of its own.
    package var trainableParameters: ParameterSet { adapter?.parameters ?? parameters }

    /// The parameter called `name` as the forward pass reads it: the adapter's copy when it holds one.
    package func parameter(_ name: String) -> Variable {
        if let adapter, adapter.parameters.contains(name) { return adapter.parameters[name] }
        return parameters[name]
    }

    /// Freezes the model's parameters (from now on they take no gradients) and adds `adapter`, made for this model.
    package func attach(_ adapter: LowRankAdapter) {
        precondition(self.adapter == nil && !isDecodingOnly, "a model takes one adapter, over parameters of its own")
        parameters = parameters.frozen()
        self.adapter = adapter
    }

    /// The frozen base's matrices, output layer and token embedding packed in a 16-, 8- or 4-bit format while an adapter
    /// trains over them (`holdFrozenBase(in:)`), their fp32 values released; nil when the base is held in fp32.
    package private(set) var packedBase: DecodeWeights?

    /// Holds the frozen base under the adapter in `format` (QLoRA's idea at this project's precisions): the decoding
    /// matrices, output layer and token embedding are packed as decoding packs them (`WeightFormat`) and their fp32
    /// values released, so that the base takes half (bf16) or a quarter (int8) of its memory. The forward pass and
    /// its backward then read them widened to fp32, and decoding applies the adapter over them. Refused when the
    /// adapter trains the token embedding or the output layer (a run that added tokens).
    package func holdFrozenBase(in format: WeightFormat) throws {
        guard let adapter, format != .float32 else { return }
        precondition(packedBase == nil, "the frozen base is held packed already")
        let tables = [ParameterNames.tokenEmbedding, ParameterNames.outputLayer(tied: config.tiedOutputEmbedding)]
        if let trained = tables.first(where: adapter.savedParameters.contains) {
            throw ConfigurationError(.invalidSetting("loraBasePrecision"), "the run trains \(trained) whole (it added \(addedTokenRows) tokens), so its base cannot be held in \(format.rawValue): use fp32")
        }
        let packed = DecodeWeights(frozenBaseOf: self, format: format)
        packedBase = packed
        parameters.releaseValues(of: GPTModel.decodingMatrices(layers: config.layerCount).map(\.weight) + Array(Set(tables)))
    }

    /// The weights decoding reads for this model as it is now: the frozen base it holds packed (`holdFrozenBase(in:)`,
    /// in that base's format), decoded with its adapter beside, else its matrices packed in `format` (see
    /// `DecodeWeights.init(model:format:)`).
    package func decodingWeights(format: WeightFormat = .float32) -> DecodeWeights {
        packedBase ?? DecodeWeights(model: self, format: format)
    }

    /// Adds the adapter into the parameters it adapts and removes it: the same model as one set of weights, all
    /// trainable again.
    package func mergeAdapter() {
        precondition(packedBase == nil, "a base held packed has no fp32 weights to merge into")
        guard let adapter else { return }
        adapter.merge(into: parameters)
        parameters = parameters.thawed()
        self.adapter = nil
    }

    /// Changes the dropout probability (the only setting that may differ between training runs of one model).
    package func setDropout(_ probability: Float) { config.dropout = probability }

    /// Names and shapes of the model's parameters, in arena order.
    package static func parameterShapes(_ c: GPTConfig) -> [(name: String, shape: [Int])] {
        let width = c.embeddingWidth
        var specs: [(name: String, shape: [Int])] = [(ParameterNames.tokenEmbedding, [c.vocabularySize, width])]
        if c.positions == .learned { specs.append((ParameterNames.positionEmbedding, [c.contextLength, width])) }
        let qkvWidth = c.attentionRows.rowWidth
        for i in 0..<c.layerCount {
            let b = ParameterNames.Block(i)
            specs += [(b.attentionNorm.weight, [width]), (b.attentionNorm.bias, [width]), (b.queryKeyValue.weight, [width, qkvWidth])]
            if c.attentionBias { specs.append((b.queryKeyValue.bias, [qkvWidth])) }
            specs.append((b.attentionOutput.weight, [width, width]))
            if c.attentionOutputBias { specs.append((b.attentionOutput.bias, [width])) }
            if c.layout.hasMLPNorm { specs += [(b.mlpNorm.weight, [width]), (b.mlpNorm.bias, [width])] }
            specs += [
                (b.mlpInput.weight, [width, c.mlpWidth]), (b.mlpInput.bias, [c.mlpWidth]),
                (b.mlpOutput.weight, [c.mlpWidth, width]), (b.mlpOutput.bias, [width]),
            ]
        }
        if c.layout.hasFinalNorm { specs += [(ParameterNames.finalNorm.weight, [width]), (ParameterNames.finalNorm.bias, [width])] }
        if !c.tiedOutputEmbedding { specs.append((ParameterNames.outputLayer, [c.vocabularySize, width])) }
        if c.outputBias { specs.append((ParameterNames.outputBias, [c.vocabularySize])) }
        return specs
    }

    /// sin/cos position table: row p, columns 2i and 2i+1 hold sin and cos of p / 10000^(2i/width).
    package static func sinusoidalTable(length: Int, width: Int) -> Tensor {
        let t = Tensor(uninitializedShape: [length, width])
        for p in 0..<length {
            for i in stride(from: 0, to: width, by: 2) {
                let angle = Double(p) / pow(10000, Double(i) / Double(width))
                t.pointer[p * width + i] = Float(sin(angle))
                t.pointer[p * width + i + 1] = Float(cos(angle))
            }
        }
        return t
    }

    /// The result of running the transformer stack.
    package struct Hidden {
        /// Input of the first block: token plus position embeddings, `[batch, length, width]` (without padding:
        /// `[tokens, width]`, the real tokens row after row).
        package let embeddings: Variable
        /// Raw output of each block, shaped as `embeddings`.
        package let blockOutputs: [Variable]
        /// The final hidden state the output layer reads (after the final LayerNorm in the pre-LN layout), shaped
        /// as `embeddings`.
        package let final: Variable
    }

    /// Runs the embeddings and every block over `batch` rows of token ids of equal length (row-major), without
    /// dropout (evaluation, inference, parity). `lengths`, for right-padded rows, gives each row's real length:
    /// padding positions then attend to their row's real tokens only (real positions never see padding). With
    /// `withoutPadding` (and `lengths`), padding positions are not computed at all: every layer but attention runs
    /// on the real tokens only, and the states come back as `[tokens, width]`.
    package func hidden(ids: [Int32], batch: Int, tape: Tape, lengths: [Int]? = nil, withoutPadding: Bool = false) -> Hidden {
        var unused = SeededRandom(seed: 0)
        return hidden(ids: ids, batch: batch, tape: tape, dropout: false, random: &unused, lengths: lengths, withoutPadding: withoutPadding)
    }

    /// Runs the embeddings and every block with dropout (as configured) drawn from `random`: training.
    package func hidden(ids: [Int32], batch: Int, tape: Tape, random: inout SeededRandom, lengths: [Int]? = nil,
                       withoutPadding: Bool = false) -> Hidden {
        hidden(ids: ids, batch: batch, tape: tape, dropout: true, random: &random, lengths: lengths, withoutPadding: withoutPadding)
    }

    private func hidden(ids: [Int32], batch: Int, tape: Tape, dropout applyDropout: Bool, random: inout SeededRandom,
                        lengths: [Int]?, withoutPadding: Bool) -> Hidden {
        let c = config
        let length = ids.count / batch
        precondition(length <= c.contextLength, "sequence of \(length) tokens exceeds the context of \(c.contextLength)")
        precondition(!withoutPadding || lengths != nil, "running without padding needs the rows' lengths")
        // Without padding: the index in the padded rows of every real token.
        let real: [Int]? = withoutPadding ? lengths.map { GPTModel.realPositions(lengths: $0, length: length) } : nil
        if tape.precision == .bfloat16 && packedBase == nil { parameters.prepareBFloat16() }
        let positions = positionTable
        var rowIDs = real.map { $0.map { ids[$0] } } ?? ids, tokens = parameter(ParameterNames.tokenEmbedding)
        if let table = packedBase?.tokenEmbedding {
            // The embedding held packed: the rows of these tokens, widened, are the (constant) table they index.
            let rows = Tensor(uninitializedShape: [rowIDs.count, c.embeddingWidth])
            for (r, id) in rowIDs.enumerated() { table.column(Int(id), into: rows.pointer + r * c.embeddingWidth) }
            (tokens, rowIDs) = (Variable(rows), (0..<Int32(rowIDs.count)).map { $0 })
        }
        let embeddings = real.map { real in
            tape.embed(ids: rowIDs, at: real.map { $0 % length }, tokens: tokens, positions: positions)
        } ?? tape.embed(ids: rowIDs, batch: batch, tokens: tokens, positions: positions)
        let pass = TrainingPass(model: self, tape: tape, dropout: applyDropout ? c.dropout : 0,
                                adapterDropout: applyDropout ? adapter?.dropout ?? 0 : 0, random: random,
                                batch: batch, length: length, lengths: lengths, real: real)
        defer { random = pass.random }
        return forward(embeddings, tape: tape, pass: pass)
    }

    /// Index, in right-padded rows of `length` positions, of every real token (row after row).
    package static func realPositions(lengths: [Int], length: Int) -> [Int] {
        var positions: [Int] = []
        positions.reserveCapacity(lengths.reduce(0, +))
        for (row, count) in lengths.enumerated() { positions += (row * length)..<(row * length + count) }
        return positions
    }

    /// The table of position embeddings added to the token embeddings: learned or sinusoidal, nil with rotary
    /// positions.
    var positionTable: Variable? {
        switch config.positions {
        case .learned: parameter(ParameterNames.positionEmbedding)
        case .sinusoidal: sinusoidalPositions
        case .rotary: nil
        }
    }

    /// Logits over the vocabulary for each row of `hidden` (`[..., width]` → `[..., vocabulary]`).
    package func logits(_ hidden: Variable, tape: Tape) -> Variable {
        let bias = config.outputBias ? parameter(ParameterNames.outputBias) : nil
        if let head = packedBase?.head { return tape.linear(hidden, packed: head, bias: bias) }
        if tape.precision == .bfloat16 { parameters.prepareBFloat16() }
        return tape.linear(hidden, weight: parameter(ParameterNames.outputLayer(tied: config.tiedOutputEmbedding)), bias: bias,
                           transposedWeight: true)
    }

    /// Mean next-token cross-entropy: the logits at position t are scored against the id at t + 1 of the same row.
    package func languageModelLoss(_ logits: Variable, ids: [Int32], batch: Int, tape: Tape) -> Variable {
        tape.crossEntropy(logits, targets: GPTModel.nextTokenTargets(ids, batch: batch))
    }

    /// Mean cross-entropy of the predictions for `inputs` (`batch` rows) against `targets`, in inference mode (no
    /// dropout, nothing recorded): what evaluations score.
    package func evaluationLoss(inputs: [Int32], targets: [Int32], batch: Int, precision: ProductPrecision = .float32) -> Float {
        let tape = Tape(recording: false, precision: precision)
        return tape.crossEntropy(logits(hidden(ids: inputs, batch: batch, tape: tape).final, tape: tape), targets: targets).value[flat: 0]
    }

    /// Each id's successor in its row, and -1 (ignored) at the end of each row.
    package static func nextTokenTargets(_ ids: [Int32], batch: Int) -> [Int32] {
        let length = ids.count / batch
        var targets = [Int32](repeating: -1, count: ids.count)
        for b in 0..<batch { for t in 0..<(length - 1) { targets[b * length + t] = ids[b * length + t + 1] } }
        return targets
    }
}
