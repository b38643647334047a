import GPTUtilities
import TensorCore

/// Low-rank adapters (LoRA: Hu et al. 2021) on a frozen model's Conv1D layers: an adapted layer computes
/// x·W + b + s·dropout(x)·Aᵀ·Bᵀ, with A `[rank, in]` and B `[out, rank]` (on a fused query, key and value
/// projection, one such pair for each of the three: `groups(_:config:)`) trained and W and b left as they are,
/// s = α / rank (α / √rank with rank-stabilized scaling). Besides A and B, an adapter trains whole copies of the
/// model parameters in `savedParameters` (PEFT's `modules_to_save`): a task head, or a token embedding that gained
/// rows. Its files are Hugging Face PEFT's (`LowRankAdapterFiles`).
package final class LowRankAdapter {
    /// Which of a block's layers get adapters, as the command line names them.
    package enum Target: String, CaseIterable, Sendable {
        /// The fused query, key and value projection (`attn.c_attn`).
        case attention = "attn"
        /// The attention's output projection (`attn.c_proj`).
        case projection = "proj"
        /// Both layers of the MLP (`mlp.c_fc`, `mlp.c_proj`).
        case mlp

        /// The layers of block `block` this target adapts.
        func layers(_ block: ParameterNames.Block) -> [LayerName] {
            switch self {
            case .attention: [block.queryKeyValue]
            case .projection: [block.attentionOutput]
            case .mlp: [block.mlpInput, block.mlpOutput]
            }
        }
    }

    /// The model the adapter was made for, as its files name it (a folder or a Hub name), if known.
    package let baseModel: String?
    /// The rank r of every A and B.
    package let rank: Int
    /// The scale's numerator α.
    package let alpha: Float
    /// Whether the scale is α / √r (rank-stabilized LoRA) rather than α / r.
    package let rankStabilized: Bool
    /// Dropout on an adapted layer's input before A, in training.
    package let dropout: Float
    /// The factor s on every adapter's output.
    package let scaling: Float
    /// The adapted layers, in the model's order.
    package let layers: [LayerName]
    /// Model parameters the adapter holds trained copies of, in the model's order.
    package let savedParameters: [String]
    /// Every A and B (`LAYER.lora_A.weight`, `LAYER.lora_B.weight`), then the copies under the model's names: all
    /// that trains.
    package let parameters: ParameterSet
    private let matrices: [LayerName: (a: Variable, b: Variable)]

    /// The parameter names of layer `layer`'s A and B.
    static func names(_ layer: LayerName) -> (a: String, b: String) { (layer.name + ".lora_A.weight", layer.name + ".lora_B.weight") }

    /// The layer whose A or B `name` names (`LAYER.lora_A.weight`, `LAYER.lora_B.weight`), if it names one.
    static func layerOf(matrix name: String) -> LayerName? {
        for suffix in [".lora_A.weight", ".lora_B.weight"] where name.hasSuffix(suffix) { return LayerName(String(name.dropLast(suffix.count))) }
        return nil
    }

    /// The layers `targets` name in a model of `layerCount` blocks, in the model's order.
    package static func layers(_ targets: [Target], layerCount: Int) -> [LayerName] {
        (0..<layerCount).flatMap { index in
            let block = ParameterNames.Block(index)
            return block.matrices.filter { layer in targets.contains { $0.layers(block).contains(layer) } }
        }
    }

    /// An adapter of `rank` on `layers` of `model` (Conv1D weights `[in, out]`) with copies of `savedParameters`
    /// taken from it; A drawn Kaiming-uniform (bounds ±1/√in) from `seed` and B zero, as PEFT initialises them, so
    /// that the adapted model starts equal to `model`.
    /// `baseModel` names `model` in the adapter's files.
    package init(model: GPTModel, baseModel: String?, rank: Int, alpha: Float, rankStabilized: Bool = false, dropout: Float,
                 layers: [LayerName], savedParameters: [String], seed: UInt64) {
        precondition(rank > 0 && !layers.isEmpty, "an adapter has a positive rank and adapts at least one layer")
        self.baseModel = baseModel
        self.rank = rank
        self.alpha = alpha
        self.rankStabilized = rankStabilized
        self.dropout = dropout
        scaling = rankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
        self.layers = layers
        let base = model.parameters
        self.savedParameters = base.names.filter(savedParameters.contains)
        var specs: [(name: String, shape: [Int])] = []
        for layer in layers {
            let shape = base[layer.weight].shape, names = Self.names(layer)
            specs += [(names.a, [Self.groups(layer, config: model.config) * rank, shape[0]]), (names.b, [shape[1], rank])]
        }
        specs += self.savedParameters.map { ($0, base[$0].shape) }
        parameters = ParameterSet(specs)
        var matrices: [LayerName: (a: Variable, b: Variable)] = [:]
        var random = SeededRandom(seed: seed)
        for layer in layers {
            let names = Self.names(layer), a = parameters[names.a], b = parameters[names.b]
            let bound = 1 / Float(a.shape[1]).squareRoot()
            for i in 0..<a.value.count { a.value.pointer[i] = (2 * random.nextFloat() - 1) * bound }
            b.value.fill(0)
            matrices[layer] = (a, b)
        }
        self.matrices = matrices
        for name in self.savedParameters {
            parameters[name].value.pointer.update(from: base[name].value.pointer, count: base[name].value.count)
        }
    }

    /// How many adapters layer `layer` of a model of `config` holds, each on its own equal run of the layer's output
    /// columns (`LowRankProduct`'s groups): three on the fused query, key and value projection of a model whose
    /// checkpoints keep them as three layers (GPT-Neo, GPT-J), as PEFT adapts each of them; else one.
    static func groups(_ layer: LayerName, config: GPTConfig) -> Int {
        guard let type = try? HuggingFaceCheckpoint.checkpointType(config) else { return 1 }
        return LowRankAdapterFiles.modules(layer, modelType: type).count
    }

    /// Layer `layer`'s A and B, when it is adapted.
    package func matrices(of layer: LayerName) -> (a: Variable, b: Variable)? { matrices[layer] }

    /// Layer `layer`'s weight in `weights` plus s·Aᵀ·Bᵀ, as a new tensor; nil when the layer has no adapter.
    func mergedWeight(_ layer: LayerName, base weights: ParameterSet) -> Tensor? {
        guard matrices[layer] != nil else { return nil }
        let w = weights[layer.weight].value, merged = Tensor(uninitializedShape: w.shape)
        merged.pointer.update(from: w.pointer, count: w.count)
        addProduct(layer, to: merged)
        return merged
    }

    /// w (`[in, out]`) += s · Aᵀ · Bᵀ, for adapted layer `layer`.
    private func addProduct(_ layer: LayerName, to w: Tensor) {
        let (a, b) = matrices[layer]!
        LowRankProduct(a: a.value, b: b.value, inputs: w.shape[0], outputs: w.shape[1]).merge(a: a.value, b: b.value, scale: scaling, into: w.pointer)
    }

    /// Adds s·Aᵀ·Bᵀ of every adapted layer to its weight in `weights` (`[in, out]` each), and writes the copies
    /// over the parameters they copy: the model the adapter and `weights` make together, as one set of weights.
    package func merge(into weights: ParameterSet) {
        for layer in layers { addProduct(layer, to: weights[layer.weight].value) }
        for name in savedParameters {
            let copy = parameters[name].value
            weights[name].value.pointer.update(from: copy.pointer, count: copy.count)
        }
        weights.valuesDidChange()
    }
}
