/// The names of a GPT's parameters in its `ParameterSet`: Hugging Face GPT-2's without the `transformer.` prefix.
/// The model, the decoder and the checkpoint reader all name parameters through these.
package enum ParameterNames {
    /// The token embedding, `[vocabulary, width]` (also the output layer when it is tied).
    package static let tokenEmbedding = "wte.weight"
    /// The learned position embedding, `[context, width]`.
    package static let positionEmbedding = "wpe.weight"
    /// The untied output layer, `[vocabulary, width]`.
    package static let outputLayer = "lm_head.weight"
    /// The output layer's bias, `[vocabulary]`, in models that have one (GPT-J).
    package static let outputBias = "lm_head.bias"
    /// The LayerNorm after the last block (pre-LayerNorm layouts).
    package static let finalNorm = LayerName("ln_f")

    /// The output layer: the token embedding when `tied`.
    package static func outputLayer(tied: Bool) -> String { tied ? tokenEmbedding : outputLayer }

    /// The names of one block's layers.
    package struct Block {
        /// `h.N.`, the prefix of every name of block N.
        package let prefix: String

        /// The names of block `layer` (from 0).
        package init(_ layer: Int) { prefix = "h.\(layer)." }

        /// The LayerNorm before attention (pre-LayerNorm), or after the attention's residual sum (post-LayerNorm).
        package var attentionNorm: LayerName { LayerName(prefix + "ln_1") }
        /// The fused query, key and value projection, `[width, 3·width]` (Conv1D layout: `[in, out]`; fewer key and
        /// value columns when the heads share them).
        package var queryKeyValue: LayerName { LayerName(prefix + "attn.c_attn") }
        /// The attention's output projection, `[width, width]`.
        package var attentionOutput: LayerName { LayerName(prefix + "attn.c_proj") }
        /// The LayerNorm before the MLP (pre-LayerNorm), or after its residual sum (post-LayerNorm).
        package var mlpNorm: LayerName { LayerName(prefix + "ln_2") }
        /// The MLP's first layer, `[width, mlp width]`.
        package var mlpInput: LayerName { LayerName(prefix + "mlp.c_fc") }
        /// The MLP's second layer, `[mlp width, width]`.
        package var mlpOutput: LayerName { LayerName(prefix + "mlp.c_proj") }
        /// The four matrices of the block, in order: what decoding streams.
        package var matrices: [LayerName] { [queryKeyValue, attentionOutput, mlpInput, mlpOutput] }
    }
}

/// A layer's name, without the `.weight` / `.bias` of its parameters.
package struct LayerName: Hashable, Sendable {
    /// The name, such as `h.0.attn.c_attn`.
    package let name: String

    /// The layer called `name`.
    package init(_ name: String) { self.name = name }

    /// Its weight's parameter name.
    package var weight: String { name + ".weight" }
    /// Its bias's parameter name.
    package var bias: String { name + ".bias" }
}
