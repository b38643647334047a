import Foundation
import GPTUtilities
import TensorCore

/// The shape and layout of a GPT model. One value describes GPT-1, GPT-2 and experiment sizes.
public struct GPTConfig: Codable, Equatable, Sendable {
    /// Where LayerNorm sits in a block.
    public enum Layout: String, Codable, Sendable {
        /// GPT-1: x = LN(x + sublayer(x)) after each sublayer, no final LayerNorm.
        case postNorm = "post-ln"
        /// GPT-2: x = x + sublayer(LN(x)), and a final LayerNorm after the last block.
        case preNorm = "pre-ln"
        /// GPT-NeoX: x = x + attention(LN₁(x)) + MLP(LN₂(x)), both sublayers reading the block's input; a final
        /// LayerNorm.
        case parallel
        /// GPT-J: x = x + attention(LN(x)) + MLP(LN(x)), one LayerNorm for both; a final LayerNorm.
        case parallelSharedNorm = "parallel-shared-ln"

        /// Whether a LayerNorm follows the last block.
        package var hasFinalNorm: Bool { self != .postNorm }
        /// Whether each block has a LayerNorm of its own for the MLP.
        package var hasMLPNorm: Bool { self != .parallelSharedNorm }
    }

    /// How positions enter the model.
    public enum Positions: String, Codable, Sendable {
        /// A trained table of position embeddings.
        case learned
        /// The fixed sinusoidal table of "Attention Is All You Need".
        case sinusoidal
        /// No table: rotary embedding turns each attention head's queries and keys by angles proportional to the
        /// position (GPT-NeoX, GPT-J); `rotaryDimensions` and `rotaryBase` set it.
        case rotary
    }

    /// Number of token ids the embedding and the output layer cover.
    public var vocabularySize: Int
    /// The most positions a sequence may have (the position table's length).
    public var contextLength: Int
    /// Number of transformer blocks.
    public var layerCount: Int
    /// Attention heads per block; `embeddingWidth` must be a multiple of it.
    public var headCount: Int
    /// Width of the residual stream (GPT-2 124M: 768).
    public var embeddingWidth: Int
    /// Width of the MLP's hidden layer (4 × embeddingWidth in GPT-1/2).
    public var mlpWidth: Int
    /// The MLP's GELU: exact or the tanh approximation (GPT-2's).
    public var activation: GELUApproximation
    /// The ε LayerNorm adds to the variance.
    public var layerNormEpsilon: Float
    /// Dropout on the embeddings and on each residual branch during training.
    public var dropout: Float
    /// Learned or sinusoidal position embeddings.
    public var positions: Positions
    /// Where LayerNorm sits in each block.
    public var layout: Layout
    /// Whether the output layer reuses the token embedding (as GPT-1 and GPT-2 do).
    public var tiedOutputEmbedding: Bool
    /// Each layer's attention pattern; nil: every layer dense.
    public var attentionPatterns: [AttentionPattern]? = nil
    /// The factor of the attention scores q·k; nil: 1/√(head width) (GPT-2). GPT-Neo uses 1.
    public var attentionScale: Float? = nil
    /// Whether the query, key and value projections have a bias (GPT-2: yes; GPT-Neo, GPT-J: no).
    public var attentionBias = true
    /// Whether the attention's output projection has a bias (GPT-J: no).
    public var attentionOutputBias = true
    /// Whether the output layer has a bias (GPT-J: yes).
    public var outputBias = false
    /// Heads of keys and values, which the query heads share in equal groups: 1 for multi-query attention
    /// (GPTBigCode); nil: one per query head.
    public var keyValueHeadCount: Int? = nil
    /// With rotary positions: how many leading dimensions of each head turn (even, at most the head width).
    public var rotaryDimensions: Int? = nil
    /// With rotary positions: the base θ of the angles p·θ^(−2j/r).
    public var rotaryBase: Float = 10000

    /// A configuration of the given sizes; the others default as GPT-2's (MLP 4 × width, tanh GELU, ε 1e-5, no
    /// dropout, learned positions, pre-LayerNorm, tied output layer, dense attention).
    public init(
        vocabularySize: Int, contextLength: Int, layerCount: Int, headCount: Int, embeddingWidth: Int,
        mlpWidth: Int? = nil, activation: GELUApproximation = .tanh, layerNormEpsilon: Float = 1e-5,
        dropout: Float = 0, positions: Positions = .learned, layout: Layout = .preNorm, tiedOutputEmbedding: Bool = true
    ) {
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
        self.layerCount = layerCount
        self.headCount = headCount
        self.embeddingWidth = embeddingWidth
        self.mlpWidth = mlpWidth ?? 4 * embeddingWidth
        self.activation = activation
        self.layerNormEpsilon = layerNormEpsilon
        self.dropout = dropout
        self.positions = positions
        self.layout = layout
        self.tiedOutputEmbedding = tiedOutputEmbedding
    }

    /// Width of one attention head.
    package var headWidth: Int { embeddingWidth / headCount }

    /// How the query, key and value projection lays out its output: the queries of every head, then the keys and
    /// the values of the key/value heads.
    package var attentionRows: AttentionRowLayout {
        AttentionRowLayout(heads: headCount, keyValueHeads: keyValueHeadCount ?? headCount, headWidth: headWidth)
    }

    /// The attention pattern of layer `layer`.
    package func attentionPattern(layer: Int) -> AttentionPattern { attentionPatterns?[layer] ?? .dense }

    /// The window of layer `layer`'s attention, nil for a dense or fixed layer.
    package func attentionWindow(layer: Int) -> Int? {
        switch attentionPattern(layer: layer) {
        case .dense, .fixed: nil
        case .local(let window), .strided(let window, _): window
        }
    }

    /// The stride of layer `layer`'s strided keys or the block of its fixed pattern, nil when it has neither.
    package func attentionStride(layer: Int) -> Int? {
        switch attentionPattern(layer: layer) {
        case .dense, .local: nil
        case .strided(_, let stride): stride
        case .fixed(let block, _): block
        }
    }

    /// The summaries per block of layer `layer`'s fixed pattern, nil when it is not fixed.
    package func attentionSummaries(layer: Int) -> Int? {
        if case .fixed(_, let summaries) = attentionPattern(layer: layer) { summaries } else { nil }
    }

    /// The attention kinds `patterns(cycling:)` reads.
    package static let attentionKindNames = ["global", "local", "strided", "local+strided", "fixed"]

    /// Summaries per block of a fixed layer when none are given (Sparse Transformer's smallest choice, c = 8).
    package static let defaultSummaries = 8

    /// Per-layer patterns from kinds cycled over `layers` layers, as GPT-Neo's `attention_types` expand:
    /// "global" (or "dense"), "local" (with `window`), "strided" (every `stride`-th position, itself included),
    /// "local+strided" (both) and "fixed" (blocks of `stride`, default the window, with `summaries` summaries each).
    package static func patterns(cycling kinds: [String], window: Int, stride: Int? = nil, summaries: Int? = nil,
                                layers: Int) throws -> [AttentionPattern] {
        guard !kinds.isEmpty else { throw ConfigurationError(.invalidSetting("attention"), "no attention kinds given") }
        let cycle = try kinds.map { kind -> AttentionPattern in
            switch kind {
            case "global", "dense": return .dense
            case "local": return .local(window: window)
            case "strided": return .strided(window: 1, stride: stride ?? window)
            case "local+strided": return .strided(window: window, stride: stride ?? window)
            case "fixed":
                let block = stride ?? window
                return .fixed(block: block, summaries: summaries ?? min(defaultSummaries, block))
            default:
                throw ConfigurationError(.invalidSetting("attention"), "unknown attention kind '\(kind)' (known: \(attentionKindNames.joined(separator: ", ")))")
            }
        }
        return (0..<layers).map { cycle[$0 % cycle.count] }
    }

    /// The kind names of the layers, as `patterns(cycling:)` reads them.
    package var attentionKinds: [String] {
        (0..<layerCount).map { layer in
            switch attentionPattern(layer: layer) {
            case .dense: "global"
            case .local: "local"
            case .strided(let window, _): window == 1 ? "strided" : "local+strided"
            case .fixed: "fixed"
            }
        }
    }

    /// The factor the attention scores are multiplied by.
    package var scoreScale: Float { attentionScale ?? 1 / Float(headWidth).squareRoot() }

    /// The largest sizes a configuration may have: beyond any model a machine holds, and small enough that every
    /// size computed from them (a parameter count, a tensor's bytes) fits an `Int`. Token ids are 32-bit.
    package static let limits = (vocabularySize: Int(Int32.max), contextLength: 1 << 24, layerCount: 1 << 12,
                                width: 1 << 17, mlpWidth: 1 << 19)

    /// Throws a `ConfigurationError` describing the first inconsistency, if any.
    public func validate() throws {
        func check(_ ok: Bool, _ setting: String, _ message: String) throws { if !ok { throw ConfigurationError(.invalidSetting(setting), message) } }
        let limits = Self.limits
        try check((1...limits.vocabularySize).contains(vocabularySize), "vocabularySize", "vocabulary size must be between 1 and \(limits.vocabularySize), got \(vocabularySize)")
        try check((1...limits.contextLength).contains(contextLength), "contextLength", "context length must be between 1 and \(limits.contextLength), got \(contextLength)")
        try check((1...limits.layerCount).contains(layerCount), "layerCount", "layer count must be between 1 and \(limits.layerCount), got \(layerCount)")
        try check(headCount > 0, "headCount", "head count must be positive, got \(headCount)")
        try check((1...limits.width).contains(embeddingWidth) && embeddingWidth % headCount == 0,
                  "embeddingWidth", "embedding width \(embeddingWidth) must be a multiple of the head count \(headCount) between 1 and \(limits.width)")
        try check((1...limits.mlpWidth).contains(mlpWidth), "mlpWidth", "MLP width must be between 1 and \(limits.mlpWidth), got \(mlpWidth)")
        try check(dropout >= 0 && dropout < 1, "dropout", "dropout must be in [0, 1), got \(dropout)")
        try check(layerNormEpsilon > 0 && layerNormEpsilon <= 1, "layerNormEpsilon", "LayerNorm epsilon must be in (0, 1], got \(layerNormEpsilon)")
        try check(positions != .sinusoidal || embeddingWidth % 2 == 0, "positions", "sinusoidal positions need an even embedding width")
        if let keyValueHeadCount {
            try check(keyValueHeadCount > 0 && headCount % keyValueHeadCount == 0,
                      "keyValueHeadCount", "the \(headCount) attention heads must share the \(keyValueHeadCount) key/value heads in equal groups")
        }
        if positions == .rotary {
            guard let rotaryDimensions else { throw ConfigurationError(.invalidSetting("rotaryDimensions"), "rotary positions need the number of rotary dimensions") }
            try check(rotaryDimensions > 0 && rotaryDimensions % 2 == 0 && rotaryDimensions <= headWidth,
                      "rotaryDimensions", "the rotary dimensions must be even and between 2 and the head width \(headWidth), got \(rotaryDimensions)")
            try check(rotaryBase.isFinite && rotaryBase > 1, "rotaryBase", "the rotary base must be a number above 1, got \(rotaryBase)")
        } else {
            try check(rotaryDimensions == nil, "rotaryDimensions", "rotary dimensions are given, but the positions are \(positions.rawValue)")
        }
        if let patterns = attentionPatterns {
            try check(patterns.count == layerCount, "attentionPatterns", "\(patterns.count) attention patterns for \(layerCount) layers")
            for pattern in patterns {
                try check(pattern.isValid, "attentionPatterns", "attention pattern \(pattern): windows, strides and blocks must be positive, "
                          + "and a fixed block's summaries between 1 and the block")
                let sizes: [Int]
                switch pattern {
                case .dense: sizes = []
                case .local(let window): sizes = [window]
                case .strided(let window, let stride): sizes = [window, stride]
                case .fixed(let block, let summaries): sizes = [block, summaries]
                }
                try check(sizes.allSatisfy { $0 <= limits.contextLength }, "attentionPatterns", "attention pattern \(pattern): sizes must be at most \(limits.contextLength)")
            }
        }
        try check(attentionScale.map { $0.isFinite && $0 > 0 } ?? true, "attentionScale", "the attention scale must be a positive number")
    }

    /// Throws a `ConfigurationError` when a model of this (valid) configuration needs more memory for its parameters
    /// and their gradients (8 bytes a parameter, as `GPTModel` allocates them) than this machine has.
    package func checkFitsInMemory() throws {
        // Within `limits` the count cannot overflow.
        let bytes = 8 * parameterCount
        let memory = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        guard bytes <= memory else {
            throw ConfigurationError(.insufficientMemory, "this model has \(parameterCount) parameters and needs \(String(format: "%.1f", Double(bytes) / 1e9)) GB "
                                     + "for them and their gradients; this machine has \(String(format: "%.1f", Double(memory) / 1e9)) GB")
        }
    }

    /// The number of parameters of the language model (no task head), as `GPTModel` allocates them.
    public var parameterCount: Int {
        GPTModel.parameterShapes(self).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// GPT-3's published sizes (Brown et al. 2020, table 2.1): context 2048, GPT-2's vocabulary and conventions,
    /// dense and locally banded layers alternating (window 256, GPT-Neo's choice; the paper gives no width). The
    /// table's XL row (width 2048, 24 heads of 128) is inconsistent; gpt3-xl takes 16 heads of 128 (GPT-Neo 1.3B's).
    static func gpt3(layers: Int, width: Int, heads: Int) -> GPTConfig {
        var config = GPTConfig(vocabularySize: 50257, contextLength: 2048, layerCount: layers, headCount: heads,
                               embeddingWidth: width)
        config.attentionPatterns = (0..<layers).map { $0 % 2 == 0 ? .dense : .local(window: 256) }
        return config
    }

    /// Pythia's published sizes (Biderman et al. 2023): GPT-NeoX blocks (rotary positions on a quarter of each head,
    /// parallel attention and MLP, exact GELU), an untied output layer, context 2048, GPT-NeoX's vocabulary padded to
    /// 50,304.
    static func pythia(layers: Int, width: Int, heads: Int) -> GPTConfig {
        var config = GPTConfig(vocabularySize: 50304, contextLength: 2048, layerCount: layers, headCount: heads, embeddingWidth: width,
                               activation: .none, positions: .rotary, layout: .parallel, tiedOutputEmbedding: false)
        config.rotaryDimensions = width / heads / 4
        return config
    }

    /// Presets by name: the published GPT-1, GPT-2, GPT-3, Pythia, GPT-J and SantaCoder sizes and small experiment
    /// sizes.
    public static let presets: [String: GPTConfig] = [
        "pythia-70m": pythia(layers: 6, width: 512, heads: 8),
        "pythia-160m": pythia(layers: 12, width: 768, heads: 12),
        "pythia-410m": pythia(layers: 24, width: 1024, heads: 16),
        "pythia-1b": pythia(layers: 16, width: 2048, heads: 8),
        "pythia-1.4b": pythia(layers: 24, width: 2048, heads: 16),
        "gpt-j-6b": {
            var config = GPTConfig(vocabularySize: 50400, contextLength: 2048, layerCount: 28, headCount: 16, embeddingWidth: 4096,
                                   positions: .rotary, layout: .parallelSharedNorm, tiedOutputEmbedding: false)
            config.rotaryDimensions = 64
            config.attentionBias = false
            config.attentionOutputBias = false
            config.outputBias = true
            return config
        }(),
        "santacoder": {
            var config = GPTConfig(vocabularySize: 49280, contextLength: 2048, layerCount: 24, headCount: 16, embeddingWidth: 2048)
            config.keyValueHeadCount = 1
            return config
        }(),
        "gpt3-small": gpt3(layers: 12, width: 768, heads: 12),
        "gpt3-medium": gpt3(layers: 24, width: 1024, heads: 16),
        "gpt3-large": gpt3(layers: 24, width: 1536, heads: 16),
        "gpt3-xl": gpt3(layers: 24, width: 2048, heads: 16),
        "gpt3-2.7b": gpt3(layers: 32, width: 2560, heads: 32),
        "gpt3-6.7b": gpt3(layers: 32, width: 4096, heads: 32),
        "gpt3-175b": gpt3(layers: 96, width: 12288, heads: 96),
        "gpt1": GPTConfig(vocabularySize: 40478, contextLength: 512, layerCount: 12, headCount: 12, embeddingWidth: 768,
                          dropout: 0.1, layout: .postNorm),
        "gpt2": GPTConfig(vocabularySize: 50257, contextLength: 1024, layerCount: 12, headCount: 12, embeddingWidth: 768,
                          dropout: 0.1),
        "gpt2-medium": GPTConfig(vocabularySize: 50257, contextLength: 1024, layerCount: 24, headCount: 16,
                                 embeddingWidth: 1024, dropout: 0.1),
        "gpt2-large": GPTConfig(vocabularySize: 50257, contextLength: 1024, layerCount: 36, headCount: 20,
                                embeddingWidth: 1280, dropout: 0.1),
        "gpt2-xl": GPTConfig(vocabularySize: 50257, contextLength: 1024, layerCount: 48, headCount: 25,
                             embeddingWidth: 1600, dropout: 0.1),
        "baby": GPTConfig(vocabularySize: 65, contextLength: 64, layerCount: 4, headCount: 4, embeddingWidth: 128),
        "shakespeare-char": GPTConfig(vocabularySize: 65, contextLength: 256, layerCount: 6, headCount: 6,
                                      embeddingWidth: 384, dropout: 0.2),
    ]

    /// The preset called `name`, or a `ConfigurationError` listing the known names.
    public static func preset(_ name: String) throws -> GPTConfig {
        guard let config = presets[name] else {
            throw ConfigurationError(.invalidSetting("preset"), "unknown preset '\(name)'; known: \(presets.keys.sorted().joined(separator: ", "))")
        }
        return config
    }
}

/// A configuration that cannot be built, loaded or trained.
public typealias ConfigurationError = DomainError<ConfigurationProblem>

/// The kinds of problem a configuration can have (`ConfigurationError`'s reasons).
public enum ConfigurationProblem: Equatable, Sendable {
    /// A setting's value is outside its range, unknown, or at odds with another setting; the value is the setting's
    /// name (a property of `GPTConfig`, `TrainingConfiguration` or an objective's settings).
    case invalidSetting(String)
    /// The model a run starts from cannot be used for it (a task head where a language model is needed, a vocabulary
    /// or context too small for the data or the task).
    case unsuitableModel
    /// The data holds too little for the run (fewer tokens than one window).
    case insufficientData
    /// No checkpoint format holds a model of this configuration.
    case unsupportedFormat
    /// The model needs more memory than the machine has.
    case insufficientMemory
    /// The processes of a data-parallel run were given different settings or files.
    case ranksDisagree
}
