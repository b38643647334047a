import Foundation
import GPTUtilities
import TensorCore

/// Incremental inference with a key/value cache for several sequences at once: each call feeds new tokens of some
/// sequences and returns the logits after the last new token of each. Earlier tokens are never recomputed.
///
/// Each layer's cache keeps only what its attention pattern can still read (`CachedAttention.Cache`): a local layer
/// (window w) the last 2w positions, a fixed layer (block l) the last 2l and every block's summaries, so that their
/// caches stay bounded whatever the length. Feeds longer than w (or l) tokens a sequence then go through in chunks
/// of that size, so that no position a query still sees is overwritten before it is read.
package final class InferenceSession {
    package let model: GPTModel
    /// Number of sequence slots.
    package let capacity: Int
    /// Tokens held in each slot's cache.
    package private(set) var lengths: [Int]
    private let keys: [Tensor]
    private let values: [Tensor]
    /// Each layer's cache, in `keys` and `values`.
    private let caches: [CachedAttention.Cache]
    /// The most tokens of one sequence a single pass may take (the smallest local window or fixed block, or the context).
    private let chunk: Int
    let weights: DecodeWeights

    /// A session with room for `sequences` sequences. `weights` (the model's matrices repacked for decoding) may be
    /// shared by many sessions; they are made from the model's current values when not given. The keys and values
    /// are kept in `cachePrecision`.
    package init(model: GPTModel, sequences: Int, weights: DecodeWeights? = nil,
                 cachePrecision: CachedAttention.Cache.Precision = .float32) {
        self.model = model
        self.weights = weights ?? model.decodingWeights()
        capacity = sequences
        lengths = [Int](repeating: 0, count: sequences)
        adapters = [Int?](repeating: nil, count: sequences)
        let c = model.config
        let patterns = (0..<c.layerCount).map { c.attentionPattern(layer: $0) }
        chunk = patterns.map { CachedAttention.Cache.longestFeed(pattern: $0, contextLength: c.contextLength) }.min()!
        let slots = patterns.map { CachedAttention.Cache.capacity(pattern: $0, contextLength: c.contextLength) }
        // Only the key/value heads are kept: a head's worth per layer under multi-query attention.
        let kvHeads = c.attentionRows.keyValueHeads
        // Mappings of their own, which take memory page by page as sequences grow (and give it back when `release`d),
        // of as many floats as the values take bytes of them.
        let floats = slots.map { (sequences * kvHeads * $0 * c.headWidth * cachePrecision.bytes + 3) / 4 }
        let keys = floats.map { Tensor(zeroedShape: [$0]) }
        let values = floats.map { Tensor(zeroedShape: [$0]) }
        self.keys = keys
        self.values = values
        caches = patterns.indices.map { layer in
            CachedAttention.Cache(keys: keys[layer].pointer, values: values[layer].pointer, precision: cachePrecision, heads: kvHeads,
                                  queryHeads: c.headCount, headWidth: c.headWidth, pattern: patterns[layer], contextLength: c.contextLength)
        }
    }

    /// Empties a slot so it can hold a new sequence, decoded with the weights' adapter `adapter` (an index into
    /// `DecodeWeights.adapters`), or with none.
    package func reset(sequence: Int, adapter: Int? = nil) {
        precondition(adapter.map { weights.adapters.indices.contains($0) } ?? true, "no adapter \(adapter!)")
        lengths[sequence] = 0
        adapters[sequence] = adapter
    }

    /// The indices of the adapters sequences may be decoded with.
    package var adapterIndices: Range<Int> { weights.adapters.indices }

    /// Each slot's adapter, as `reset` set it.
    private var adapters: [Int?]

    /// Empties slot `sequence` and hands the memory of its keys and values back to the system. The cache takes
    /// memory page by page as a sequence reaches new positions (4 KiB holds a head's keys, or values, of 4096 / (4 d)
    /// positions), so that the memory of a slot follows the length of the sequence it holds, and a server's follows
    /// the sequences it is decoding rather than its slots at full context.
    package func release(sequence: Int) {
        for cache in caches { cache.release(sequence: sequence) }
        reset(sequence: sequence)
    }

    /// Makes slot `target` hold the same tokens as slot `source` (its cache is copied), so that several
    /// continuations of one prefix are computed from a single pass over the prefix.
    package func copy(sequence source: Int, to target: Int) {
        for cache in caches { cache.copy(sequence: source, to: target, length: lengths[source]) }
        lengths[target] = lengths[source]
        adapters[target] = adapters[source]
    }

    /// The most positions of a sequence whose keys and values `prefixStates` can copy out and `restorePrefix` put
    /// back: the context, or the shortest ring of a local layer; 0 when a layer keeps block summaries.
    package var reusablePositions: Int { caches.map(\.positionsInOrder).min() ?? 0 }

    /// Drops the positions of slot `sequence` from `length` on (at most `reusablePositions`), as if it had been fed only
    /// its first `length` tokens: the tokens a draft proposed and the model did not accept (speculative decoding).
    package func truncate(sequence: Int, to length: Int) {
        precondition(length <= min(lengths[sequence], reusablePositions), "slot \(sequence) holds no \(length) positions to keep")
        lengths[sequence] = length
    }

    /// Floats of keys and values one position holds over all layers.
    package var statesPerPosition: Int { caches.reduce(0) { $0 + 2 * $1.heads * $1.headWidth } }

    /// The keys and values of the first `count` positions of slot `sequence` (at most `reusablePositions`, at most
    /// what it holds), every layer's in turn, `count × statesPerPosition` floats.
    package func prefixStates(of sequence: Int, count: Int) -> [Float] {
        precondition(count <= min(lengths[sequence], reusablePositions), "slot \(sequence) cannot give back \(count) positions")
        return [Float](unsafeUninitializedCapacity: count * statesPerPosition) { buffer, initialized in
            transferPrefix(buffer.baseAddress!, positions: count, sequence: sequence, count: count, restoring: false)
            initialized = count * statesPerPosition
        }
    }

    /// Empties slot `sequence` for a sequence decoded with `adapter` that begins with the first `count` of the
    /// positions whose keys and values `states` holds (as `prefixStates` gave them, computed with the same adapter).
    package func restorePrefix(_ states: [Float], count: Int, into sequence: Int, adapter: Int?) {
        let positions = states.count / statesPerPosition
        precondition(count <= min(positions, reusablePositions) && states.count == positions * statesPerPosition, "no \(count) positions to restore")
        reset(sequence: sequence, adapter: adapter)
        states.withUnsafeBufferPointer {
            // Restoring only reads the states.
            transferPrefix(UnsafeMutablePointer(mutating: $0.baseAddress!), positions: positions, sequence: sequence, count: count, restoring: true)
        }
        lengths[sequence] = count
    }

    /// Copies positions 0..<count of slot `sequence` to or from `states`, which holds `positions` of each layer.
    private func transferPrefix(_ states: UnsafeMutablePointer<Float>, positions: Int, sequence: Int, count: Int, restoring: Bool) {
        var at = states
        for cache in caches {
            let floats = cache.heads * positions * cache.headWidth
            cache.transfer(sequence: sequence, count: count, keys: at, values: at + floats, positions: positions, restoring: restoring)
            at += 2 * floats
        }
    }

    /// Feeds `tokens` to each listed slot (one entry per distinct slot, each with at least one token) and returns
    /// the logits [entries, vocabulary] after each entry's last token, or with `everyToken` the logits
    /// [tokens, vocabulary] after every token fed, in the order of the entries.
    package func feed(_ entries: [(sequence: Int, tokens: [Int32])], everyToken: Bool = false) throws -> Tensor {
        guard entries.contains(where: { $0.tokens.count > chunk }) else { return try pass(entries, everyToken: everyToken) }
        // Chunks of at most `chunk` tokens a sequence, pass after pass; the logits are put back in entry order.
        let vocabulary = model.config.vocabularySize
        let outputRows = everyToken ? entries.reduce(0) { $0 + $1.tokens.count } : entries.count
        let logits = Tensor(uninitializedShape: [outputRows, vocabulary])
        var firstRow: [Int] = [], row = 0
        for entry in entries { firstRow.append(row); row += everyToken ? entry.tokens.count : 1 }
        var start = 0
        while true {
            let active = entries.indices.filter { entries[$0].tokens.count > start }
            guard !active.isEmpty else { break }
            let part = active.map { (sequence: entries[$0].sequence, tokens: Array(entries[$0].tokens[start..<min(start + chunk, entries[$0].tokens.count)])) }
            let result = try pass(part, everyToken: everyToken)
            var resultRow = 0
            for (index, piece) in zip(active, part) {
                let isLast = start + chunk >= entries[index].tokens.count
                if everyToken {
                    (logits.pointer + (firstRow[index] + start) * vocabulary)
                        .update(from: result.pointer + resultRow * vocabulary, count: piece.tokens.count * vocabulary)
                    resultRow += piece.tokens.count
                } else {
                    if isLast { (logits.pointer + firstRow[index] * vocabulary).update(from: result.pointer + resultRow * vocabulary, count: vocabulary) }
                    resultRow += 1
                }
            }
            start += chunk
        }
        return logits
    }

    /// The final hidden states (after the last layer normalisation) [tokens, width] after each of `tokens`, fed to
    /// slot `sequence` after emptying it: what an embedding of the text pools.
    package func finalHiddenStates(of tokens: [Int32], sequence: Int) throws -> Tensor {
        reset(sequence: sequence)
        let width = model.config.embeddingWidth
        let states = Tensor(uninitializedShape: [tokens.count, width])
        var start = 0
        while start < tokens.count {
            let piece = Array(tokens[start..<min(start + chunk, tokens.count)])
            let part = try finalStates([(sequence, piece)], everyToken: true)
            (states.pointer + start * width).update(from: part.pointer, count: piece.count * width)
            start += chunk
        }
        return states
    }

    /// One pass of the model over the entries' tokens: the logits of `feed`.
    private func pass(_ entries: [(sequence: Int, tokens: [Int32])], everyToken: Bool) throws -> Tensor {
        let c = model.config
        let final = try finalStates(entries, everyToken: everyToken)
        let bias = c.outputBias ? model.parameter(ParameterNames.outputBias).value : nil
        let outputRows = final.count / c.embeddingWidth
        let logits = Tensor(uninitializedShape: [outputRows, c.vocabularySize])
        MatrixVector.multiply(final.pointer, rows: outputRows, weights.head, bias: bias.map { UnsafePointer($0.pointer) },
                              into: logits.pointer, exactInput: weights.exactInput)
        return logits
    }

    /// One pass of the model's blocks over the entries' tokens, which join the cache: the final hidden states after
    /// every token with `everyToken`, else after each entry's last.
    private func finalStates(_ entries: [(sequence: Int, tokens: [Int32])], everyToken: Bool) throws -> Tensor {
        let c = model.config, width = c.embeddingWidth
        var rowSequence: [Int] = [], rowPosition: [Int] = [], ids: [Int32] = []
        for entry in entries {
            guard !entry.tokens.isEmpty else { throw GenerationError(.emptyInput, "an entry with no tokens") }
            guard lengths[entry.sequence] + entry.tokens.count <= c.contextLength else {
                throw GenerationError(.exceedsContext, "sequence of \(lengths[entry.sequence] + entry.tokens.count) tokens exceeds the context of \(c.contextLength)")
            }
            for (t, id) in entry.tokens.enumerated() {
                guard id >= 0, Int(id) < c.vocabularySize else { throw GenerationError(.idOutsideVocabulary, "token id \(id) is outside the vocabulary") }
                rowSequence.append(entry.sequence)
                rowPosition.append(lengths[entry.sequence] + t)
                ids.append(id)
            }
        }
        let tape = Tape(recording: false)
        // The token embedding is packed with the decoding weights: each row's token is gathered from there.
        let tokens = Tensor(uninitializedShape: [ids.count, width])
        for (r, id) in ids.enumerated() { weights.tokenEmbedding.column(Int(id), into: tokens.pointer + r * width) }
        let embeddings = tape.embed(ids: ids.indices.map { Int32($0) }, at: rowPosition, tokens: Variable(tokens),
                                    positions: model.positionTable)
        // Unless every row's logits are asked for, only each entry's last row needs them; the last block then
        // computes the keys and values of every row (for the cache) but the rest only for those rows.
        var lastRows: [Int] = [], row = -1
        for entry in entries { row += entry.tokens.count; lastRows.append(row) }
        let pass = DecodingPass(model: model, weights: weights, caches: caches, sequences: rowSequence, positions: rowPosition,
                                keptRows: everyToken || lastRows.count == ids.count ? nil : lastRows,
                                adapters: weights.adapters.isEmpty ? [] : rowSequence.map { adapters[$0] })
        let final = model.forward(embeddings, tape: tape, pass: pass, keepingBlockOutputs: false).final
        for entry in entries { lengths[entry.sequence] += entry.tokens.count }
        return final.value
    }
}

/// The forward pass of decoding: matrices through the decoding kernels (`MatrixVector`: streamed for a few rows,
/// widened into the BLAS for more), attention through the key/value cache, which every row's key and value join.
private struct DecodingPass: ForwardPass {
    let model: GPTModel
    let weights: DecodeWeights
    let caches: [CachedAttention.Cache]
    /// Each row's sequence slot and position.
    let sequences: [Int]
    let positions: [Int]
    /// The rows that go on past the last block's attention (each sequence's last), or nil for all.
    let keptRows: [Int]?
    /// Each row's adapter (an index into `weights.adapters`), when the weights have adapters.
    let adapters: [Int?]

    private var width: Int { model.config.embeddingWidth }
    private var lastLayer: Int { model.config.layerCount - 1 }

    func linear(_ x: Variable, _ layer: LayerName) -> Variable {
        let w = weights.matrices[layer]!
        let b = model.parameters.contains(layer.bias) ? model.parameter(layer.bias).value : nil
        let rows = x.value.count / w.k
        let y = Tensor(uninitializedShape: [rows, w.n])
        MatrixVector.multiply(x.value.pointer, rows: rows, w, bias: b.map { UnsafePointer($0.pointer) }, into: y.pointer,
                              exactInput: weights.exactInput)
        if let adapter = weights.trainedAdapter, let (a, b) = adapter.matrices(of: layer) {
            let product = LowRankProduct(a: a.value, b: b.value, inputs: w.k, outputs: w.n)
            product.up(product.down(x.value, a: a.value), b: b.value, scale: adapter.scaling, into: y.pointer, accumulate: true)
        }
        if !adapters.isEmpty { addAdapters(x.value, into: y, layer: layer) }
        return Variable(y)
    }

    /// y += s · x · Aᵀ · Bᵀ for the rows of each adapter, in fp32 (`rows` of x are this pass's rows, or the kept
    /// ones past the last block's attention).
    private func addAdapters(_ x: Tensor, into y: Tensor, layer: LayerName) {
        let inputs = x.shape.last!, outputs = y.shape.last!, rows = x.count / inputs
        let rowAdapters = rows == adapters.count ? adapters : keptRows!.map { adapters[$0] }
        for (index, adapter) in weights.adapters.enumerated() {
            guard let (a, b) = adapter.matrices(of: layer) else { continue }
            let mine = rowAdapters.indices.filter { rowAdapters[$0] == index }
            guard !mine.isEmpty else { continue }
            let product = LowRankProduct(a: a.value, b: b.value, inputs: inputs, outputs: outputs)
            let up = Tensor(uninitializedShape: [mine.count, outputs])
            product.up(product.down(Self.rows(mine, of: x, width: inputs), a: a.value), b: b.value,
                       scale: adapter.scaling, into: up.pointer, accumulate: false)
            for (i, r) in mine.enumerated() { (y.pointer + r * outputs).axpy(1, up.pointer + i * outputs, outputs) }
        }
    }

    func attend(_ qkv: Variable, layer: Int) -> Variable {
        let cache = caches[layer], c = model.config
        // Rows of queries (width floats), then the keys and the values of the key/value heads.
        let rowWidth = c.attentionRows.rowWidth, keyValueWidth = c.attentionRows.keyValueHeads * c.headWidth
        for r in sequences.indices {
            let row = qkv.value.pointer + r * rowWidth
            cache.store(key: row + width, value: row + width + keyValueWidth, sequence: sequences[r], position: positions[r])
        }
        var queries = qkv.value, querySequences = sequences, queryPositions = positions
        if layer == lastLayer, let keptRows {
            queries = Self.rows(keptRows, of: queries, width: rowWidth)
            querySequences = keptRows.map { sequences[$0] }
            queryPositions = keptRows.map { positions[$0] }
        }
        let heads = Tensor(uninitializedShape: [querySequences.count, width])
        CachedAttention.attend(queries: queries.pointer, queryStride: rowWidth, cache: cache, sequences: querySequences,
                               positions: queryPositions, scale: c.scoreScale, into: heads.pointer)
        return Variable(heads)
    }

    func residualRows(_ x: Variable, layer: Int) -> Variable {
        guard layer == lastLayer, let keptRows else { return x }
        return Variable(Self.rows(keptRows, of: x.value, width: width))
    }

    func dropout(_ x: Variable) -> Variable { x }

    /// The listed rows of a [rows, width] tensor.
    private static func rows(_ indices: [Int], of tensor: Tensor, width: Int) -> Tensor {
        let result = Tensor(uninitializedShape: [indices.count, width])
        for (i, r) in indices.enumerated() { (result.pointer + i * width).update(from: tensor.pointer + r * width, count: width) }
        return result
    }
}

/// The model's Conv1D matrices, output layer and token embedding repacked for the decoding kernel
/// (`MatrixVector.PackedMatrix`), in a weight format. They copy the weights: make new ones after the model is trained
/// further.
package final class DecodeWeights: @unchecked Sendable {
    let matrices: [LayerName: MatrixVector.PackedMatrix]
    /// The output layer (the token embedding when tied), transposed.
    let head: MatrixVector.PackedMatrix
    /// The token embedding, transposed: each token's row is a column (the output layer itself when tied).
    let tokenEmbedding: MatrixVector.PackedMatrix
    package let format: WeightFormat
    /// Low-rank adapters a sequence may be decoded with (`InferenceSession.reset(sequence:adapter:)`), each over
    /// these weights: several fine-tunings served by one copy of the base.
    package let adapters: [LowRankAdapter]
    /// The adapter trained over these weights when they hold a model's frozen base (`GPTModel.holdFrozenBase`): every
    /// sequence is decoded with it.
    let trainedAdapter: LowRankAdapter?
    /// Whether 4-bit products take their input as it is rather than rounded to 8 bits (`MatrixVector.multiply`): for
    /// the frozen base of a training run, so that its samples and rollouts compute what its training forward does.
    var exactInput: Bool { trainedAdapter != nil }
    /// Bytes of the packed matrices: what one decoding step reads.
    package var bytes: Int { (matrices.values.map(\.bytes) + [head.bytes]).reduce(0, +) }

    /// Packs the model's matrices in `format`. For a 16-, 8- or 4-bit format the model's own matrices (and its token
    /// embedding) are first rounded in place to the values the format holds, so that a model given these weights
    /// computes what decoding computes.
    package convenience init(model: GPTModel, format: WeightFormat = .float32) {
        precondition(!model.isDecodingOnly && model.packedBase == nil, "a model loaded for decoding only has its decoding weights already")
        precondition(model.adapter == nil || format == .float32, "a model with an adapter decodes in fp32 (merge it first)")
        if format != .float32 { model.roundDecodingWeights(to: format) }
        self.init(packing: model, format: format, merged: true)
    }

    /// The frozen base of `model` (its parameters, without its adapter) packed in `format`, decoded with the adapter
    /// applied beside it: what `GPTModel.holdFrozenBase(in:)` holds in place of the fp32 matrices.
    convenience init(frozenBaseOf model: GPTModel, format: WeightFormat) {
        self.init(packing: model, format: format, merged: false)
    }

    /// `model`'s matrices packed, the adapter merged into them when `merged`, else carried beside them.
    private init(packing model: GPTModel, format: WeightFormat, merged: Bool) {
        self.format = format
        let c = model.config
        var matrices: [LayerName: MatrixVector.PackedMatrix] = [:]
        for layer in GPTModel.decodingMatrices(layers: c.layerCount) {
            let w = (merged ? model.adapter?.mergedWeight(layer, base: model.parameters) : nil) ?? model.parameters[layer.weight].value
            matrices[layer] = MatrixVector.PackedMatrix(w.pointer, k: w.shape[0], n: w.shape[1], format: format)
        }
        self.matrices = matrices
        func packed(_ name: String) -> MatrixVector.PackedMatrix {
            let table = merged ? model.parameter(name) : model.parameters[name]
            return MatrixVector.PackedMatrix(transposing: table.value.pointer, n: c.vocabularySize, k: c.embeddingWidth, format: format)
        }
        head = packed(ParameterNames.outputLayer(tied: c.tiedOutputEmbedding))
        tokenEmbedding = c.tiedOutputEmbedding ? head : packed(ParameterNames.tokenEmbedding)
        adapters = []
        trainedAdapter = merged ? nil : model.adapter
    }

    /// Weights already packed in `format`: every layer's matrices (`GPTModel.decodingMatrices`), the output layer,
    /// and the token embedding (the output layer when tied).
    init(matrices: [LayerName: MatrixVector.PackedMatrix], head: MatrixVector.PackedMatrix,
         tokenEmbedding: MatrixVector.PackedMatrix, format: WeightFormat, adapters: [LowRankAdapter] = []) {
        self.matrices = matrices
        self.head = head
        self.tokenEmbedding = tokenEmbedding
        self.format = format
        self.adapters = adapters
        trainedAdapter = nil
    }

    /// The same weights (shared, not copied) with `adapters` that sequences may be decoded with.
    package func serving(_ adapters: [LowRankAdapter]) -> DecodeWeights {
        DecodeWeights(matrices: matrices, head: head, tokenEmbedding: tokenEmbedding, format: format, adapters: adapters)
    }
}

extension GPTModel {
    /// The Conv1D layers whose matrices decoding streams.
    static func decodingMatrices(layers: Int) -> [LayerName] {
        (0..<layers).flatMap { ParameterNames.Block($0).matrices }
    }

    /// Rounds the weights decoding packs — every layer's four Conv1D matrices, the output layer and the token
    /// embedding — to the values `format` holds (per output channel, and per token, for int8; per 32 inputs of each for
    /// int4), in place. A model so rounded computes, in fp32, what 16-, 8- or 4-bit decoding computes: `gpt loss
    /// --precision` measures it this way.
    package func roundDecodingWeights(to format: WeightFormat) {
        guard format != .float32 else { return }
        for layer in Self.decodingMatrices(layers: config.layerCount) {
            let w = parameters[layer.weight].value
            format.round(w.pointer, inputs: w.shape[0], outputs: w.shape[1], oneRowPerOutput: false)
        }
        let tables = config.tiedOutputEmbedding ? [ParameterNames.tokenEmbedding] : [ParameterNames.outputLayer, ParameterNames.tokenEmbedding]
        for name in tables {
            format.round(parameters[name].value.pointer, inputs: config.embeddingWidth, outputs: config.vocabularySize, oneRowPerOutput: true)
        }
        parameters.valuesDidChange()
    }
}

/// A generation, scoring or embedding request that cannot be served, or that the generation engine refused or ended.
public typealias GenerationError = DomainError<GenerationProblem>

/// The kinds of problem a generation, scoring or embedding request can meet (`GenerationError`'s reasons).
public enum GenerationProblem: Equatable, Sendable {
    /// An option or argument is outside its range (sampling options, batch sizes, a chat template's patterns).
    case invalidArgument
    /// A prompt, context or text is empty.
    case emptyInput
    /// A prompt, or a context with its continuation, is longer than the model's context.
    case exceedsContext
    /// A token id outside the model's vocabulary.
    case idOutsideVocabulary
    /// More sequences at once than the decoder has room for.
    case overCapacity
    /// The generation engine's queue of waiting requests is full; retry later.
    case queueFull
    /// The request did not finish within the engine's time limit.
    case timedOut
    /// The generation engine is stopping and takes no more work.
    case stopping
    /// A decoding step failed; every running request gets this.
    case failed
}
