import GPTUtilities
import TensorCore

/// What differs between the forward passes of training and of decoding: how a layer's matrix is applied, how
/// attention reads keys and values, which rows go on past the last attention, and dropout. The model's structure —
/// embeddings, blocks, LayerNorms, residual sums — is written once, in `GPTModel.forward`, over these operations.
///
/// Training (`TrainingPass`) records every operation on a tape over whole rows of tokens; decoding
/// (`InferenceSession`'s pass) multiplies by weights packed for its kernels and attends through a key/value cache.
protocol ForwardPass {
    /// The position of every row of the residual stream in its sequence (rotary embedding turns by it).
    var positions: [Int] { get }
    /// x · W + b for the Conv1D layer `layer` (its bias when it has one).
    func linear(_ x: Variable, _ layer: LayerName) -> Variable
    /// The attention heads' output, `[rows, width]`, of block `layer` for the query | key | value rows `qkv` (laid out
    /// as `GPTConfig.attentionRows`: fewer key and value heads than query heads when they are shared).
    func attend(_ qkv: Variable, layer: Int) -> Variable
    /// The rows of block `layer`'s residual stream `x` that its attention's output continues: all of them, but for
    /// decoding's last block when only each sequence's last token needs logits.
    func residualRows(_ x: Variable, layer: Int) -> Variable
    /// Dropout on the embeddings and on each sublayer's output: the identity outside training.
    func dropout(_ x: Variable) -> Variable
}

extension GPTModel {
    /// The embeddings through every block and, in the layouts that have one, the final LayerNorm: the one forward
    /// pass of training, evaluation and decoding. Each block's output is kept in the result when `keepingBlockOutputs`.
    func forward(_ embeddings: Variable, tape: Tape, pass: some ForwardPass, keepingBlockOutputs: Bool = true) -> Hidden {
        let input = pass.dropout(embeddings)
        var x = input
        var outputs: [Variable] = []
        for layer in 0..<config.layerCount {
            x = block(x, layer: layer, tape: tape, pass: pass)
            if keepingBlockOutputs { outputs.append(x) }
        }
        let final = config.layout.hasFinalNorm ? norm(x, ParameterNames.finalNorm, tape: tape) : x
        return Hidden(embeddings: input, blockOutputs: outputs, final: final)
    }

    /// Block `layer` over the residual stream `x`, its sublayers placed as `config.layout` says: pre-LN (GPT-2:
    /// x + f(LN(x)) for attention, then the MLP), post-LN (GPT-1: LN(x + f(x)) for each), or parallel (GPT-NeoX,
    /// GPT-J: x + attention(LN(x)) + MLP(LN(x))), attention and MLP each ending in dropout. Rotary embedding turns
    /// the queries and keys before attention.
    private func block(_ x: Variable, layer: Int, tape: Tape, pass: some ForwardPass) -> Variable {
        let b = ParameterNames.Block(layer), rows = config.attentionRows
        func attention(_ v: Variable) -> Variable {
            var qkv = pass.linear(v, b.queryKeyValue)
            if let rotaryTable { qkv = tape.rotary(qkv, positions: pass.positions, layout: rows, table: rotaryTable) }
            return pass.dropout(pass.linear(pass.attend(qkv, layer: layer), b.attentionOutput))
        }
        func mlp(_ v: Variable) -> Variable {
            let h = tape.gelu(pass.linear(v, b.mlpInput), approximation: config.activation)
            return pass.dropout(pass.linear(h, b.mlpOutput))
        }
        switch config.layout {
        case .preNorm:
            let h = tape.add(pass.residualRows(x, layer: layer), attention(norm(x, b.attentionNorm, tape: tape)))
            return tape.add(h, mlp(norm(h, b.mlpNorm, tape: tape)))
        case .postNorm:
            let n = norm(tape.add(pass.residualRows(x, layer: layer), attention(x)), b.attentionNorm, tape: tape)
            return norm(tape.add(n, mlp(n)), b.mlpNorm, tape: tape)
        case .parallel:
            let residual = pass.residualRows(x, layer: layer)
            let a = attention(norm(x, b.attentionNorm, tape: tape))
            return tape.add(tape.add(residual, a), mlp(norm(residual, b.mlpNorm, tape: tape)))
        case .parallelSharedNorm:
            let h = norm(x, b.attentionNorm, tape: tape)
            let a = attention(h)
            return tape.add(tape.add(pass.residualRows(x, layer: layer), a), mlp(pass.residualRows(h, layer: layer)))
        }
    }

    /// The LayerNorm `layer` applied to `x`.
    private func norm(_ x: Variable, _ layer: LayerName, tape: Tape) -> Variable {
        tape.layerNorm(x, weight: parameter(layer.weight), bias: parameter(layer.bias), epsilon: config.layerNormEpsilon)
    }
}

/// The forward pass of training and evaluation: every operation recorded on the tape (when it records), over
/// `batch` right-padded rows of `length` tokens, or over their real tokens only (`real`, their indices in the rows).
final class TrainingPass: ForwardPass {
    private let model: GPTModel
    private let config: GPTConfig
    private let tape: Tape
    /// The dropout probability: the model's in training, 0 in evaluation.
    private let probability: Float
    /// The dropout probability on adapted layers' inputs: the adapter's in training, 0 in evaluation.
    private let adapterProbability: Float
    /// Where dropout masks are drawn from; read back after the pass.
    private(set) var random: SeededRandom
    private let batch: Int, length: Int
    /// Each row's real length when the rows are padded.
    private let lengths: [Int]?
    /// Without padding: the index in the padded rows of every real token.
    private let real: [Int]?
    let positions: [Int]

    init(model: GPTModel, tape: Tape, dropout probability: Float, adapterDropout: Float, random: SeededRandom, batch: Int,
         length: Int, lengths: [Int]?, real: [Int]?) {
        precondition(!model.isDecodingOnly, "a model loaded for decoding only has its matrices in its decoding weights")
        self.model = model
        config = model.config
        self.tape = tape
        self.probability = probability
        adapterProbability = adapterDropout
        self.random = random
        self.batch = batch
        self.length = length
        self.lengths = lengths
        self.real = real
        positions = model.config.rotaryDimensions == nil ? [] : (real ?? Array(0..<(batch * length))).map { $0 % length }
    }

    /// Layer `layer` applied to x: with its adapter in one operation (`Tape.lowRankLinear`: x·W + b + s·dropout(x)·Aᵀ·Bᵀ)
    /// when it has one, over its weight as a parameter or, for a base held packed, as packed.
    func linear(_ x: Variable, _ layer: LayerName) -> Variable {
        let bias = model.parameters.contains(layer.bias) ? model.parameter(layer.bias) : nil
        let packed = model.packedBase?.matrices[layer]
        if let adapter = model.adapter, let (a, b) = adapter.matrices(of: layer) {
            let xa = adapterProbability > 0 ? tape.dropout(x, probability: adapterProbability, random: &random) : x
            if let packed { return tape.lowRankLinear(x, packed: packed, bias: bias, adapterInput: xa, a: a, b: b, scale: adapter.scaling) }
            return tape.lowRankLinear(x, weight: model.parameter(layer.weight), bias: bias, adapterInput: xa, a: a, b: b, scale: adapter.scaling)
        }
        if let packed { return tape.linear(x, packed: packed, bias: bias) }
        return tape.linear(x, weight: model.parameter(layer.weight), bias: bias)
    }

    func attend(_ qkv: Variable, layer: Int) -> Variable {
        // The kernel reads as many key and value heads as query heads: shared ones are repeated for their group.
        let rows = config.attentionRows
        var qkv = rows.keyValueHeads == rows.heads ? qkv : tape.repeatingKeyValueHeads(qkv, layout: rows)
        // Attention needs the rows: the real tokens go back to their places (padding: zeros) and out again.
        if let real { qkv = tape.reshape(tape.scatterRows(qkv, real, rowCount: batch * length), [batch, length, qkv.shape[1]]) }
        var heads = tape.causalSelfAttention(qkv, heads: config.headCount, dropout: probability, random: &random,
                                             keyLengths: lengths, pattern: config.attentionPattern(layer: layer),
                                             scale: config.scoreScale)
        if let real { heads = tape.gatherRows(tape.reshape(heads, [batch * length, heads.shape[2]]), real) }
        return heads
    }

    func residualRows(_ x: Variable, layer: Int) -> Variable { x }

    func dropout(_ x: Variable) -> Variable {
        guard probability > 0 else { return x }
        return tape.dropout(x, probability: probability, random: &random)
    }
}
