import Foundation
import GPTHub
import GPTUtilities
import TensorCore
import Tokenizers

/// Opens a model for inference, with the tokenizer it carries: a SwiftGPT checkpoint, a training output directory
/// (its best/ or last/ model), a Hugging Face model folder, a GGUF file of a GPT-2 (see `GGUFImport`), or a Hub name
/// (`ORG/NAME[@REVISION]`), downloaded into Hugging Face's cache unless it is there already.
package enum ModelLoading {
    /// The model `path` names with its tokenizer. A folder that holds a low-rank adapter (adapter_config.json) opens
    /// as the base model its adapter_config.json names with the adapter applied; `adapter` names one more to apply.
    /// Adapters are merged into the weights unless `keepingAdapter`, which leaves the last one attached, trainable,
    /// over frozen weights (a resumed run).
    package static func load(_ path: String, tokenizer tokenizerOverride: String? = nil, adapter: String? = nil,
                             keepingAdapter: Bool = false) throws -> (GPTModel, any Tokenizer) {
        try load(path, tokenizer: tokenizerOverride, adapter: adapter, keepingAdapter: keepingAdapter, depth: 0)
    }

    private static func load(_ path: String, tokenizer tokenizerOverride: String?, adapter: String?, keepingAdapter: Bool,
                             depth: Int) throws -> (GPTModel, any Tokenizer) {
        let isGGUF = GGUFImport.isGGUF(path)
        let directory = isGGUF ? URL(fileURLWithPath: path) : try modelFolder(path)
        var model: GPTModel, folders = [directory], carried: (any Tokenizer)?
        if isGGUF {
            let loaded = try GGUFImport.load(from: directory)
            (model, carried) = (loaded.model, loaded.tokenizer)
        } else if LowRankAdapterFiles.isAdapter(directory) {
            guard depth < 8 else { throw FileError(url: directory, reason: .unsupported, message: "adapters on adapters more than 8 deep (does an adapter name itself as its base?)") }
            guard let base = try LowRankAdapterFiles.baseModel(of: directory) else {
                throw FileError(url: directory.appendingPathComponent(LowRankAdapterFiles.configFile), reason: .missing,
                                message: "names no base model ('base_model_name_or_path'); open the base model with this folder as its adapter")
            }
            let (baseModel, _) = try load(base, tokenizer: nil, adapter: nil, keepingAdapter: false, depth: depth + 1)
            model = try LowRankAdapterFiles.load(from: directory, base: baseModel)
            folders.append(try modelFolder(base))
        } else {
            model = try HuggingFaceCheckpoint.load(from: directory)
        }
        if let adapter {
            model.mergeAdapter()
            let folder = try resolve(adapter)
            guard LowRankAdapterFiles.isAdapter(folder) else {
                throw FileError(url: folder, reason: .missing, message: "not an adapter folder (no adapter_config.json)")
            }
            model = try LowRankAdapterFiles.load(from: folder, base: model)
            folders.insert(folder, at: 0)
        }
        if !keepingAdapter { model.mergeAdapter() }
        return (model, try tokenizer(of: model, in: folders, carried: carried, override: tokenizerOverride))
    }

    /// `load`, for decoding in `format` only (see `HuggingFaceCheckpoint.loadForDecoding`): the model holds its
    /// weights once, in that format. A model with adapters is read whole, merged, then packed (it holds its fp32
    /// weights beside the decoding ones).
    package static func loadForDecoding(_ path: String, tokenizer tokenizerOverride: String? = nil, adapter: String? = nil,
                                        format: WeightFormat) throws -> (GPTModel, any Tokenizer, DecodeWeights) {
        let isGGUF = GGUFImport.isGGUF(path)
        let directory = isGGUF ? URL(fileURLWithPath: path) : try modelFolder(path)
        if adapter != nil || LowRankAdapterFiles.isAdapter(directory) {
            let (model, tokenizer) = try load(path, tokenizer: tokenizerOverride, adapter: adapter)
            return (model, tokenizer, DecodeWeights(model: model, format: format))
        }
        if isGGUF {
            let (model, weights, carried) = try GGUFImport.load(from: directory, packingIn: format)
            return (model, try tokenizer(of: model, in: [directory], carried: carried, override: tokenizerOverride), weights!)
        }
        let (model, weights) = try HuggingFaceCheckpoint.loadForDecoding(from: directory, format: format)
        return (model, try tokenizer(of: model, in: [directory], carried: nil, override: tokenizerOverride), weights)
    }

    /// The model folder `path` names, which must hold a config.json or an adapter_config.json.
    private static func modelFolder(_ path: String) throws -> URL {
        let directory = try resolve(path)
        guard isModelFolder(directory) else {
            throw FileError(url: directory, reason: .missing, message: "not a model directory (no config.json or adapter_config.json, best/ or last/)")
        }
        return directory
    }

    /// Whether `directory` holds a model or an adapter.
    private static func isModelFolder(_ directory: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) || LowRankAdapterFiles.isAdapter(directory)
    }

    /// The tokenizer `override` names, else the one the first of the model's `folders` that carries one carries (an
    /// adapter's, then its base's), else the one its file `carried` (a GGUF file's), else GPT-2's for a vocabulary of
    /// its size.
    private static func tokenizer(of model: GPTModel, in folders: [URL], carried fileTokenizer: (any Tokenizer)?,
                                  override tokenizerOverride: String?) throws -> any Tokenizer {
        let tokenizer: any Tokenizer, directory = folders[0]
        if let tokenizerOverride {
            tokenizer = try TokenizerLoading.load(tokenizerOverride)
        } else if let carried = folders.lazy.compactMap({ try? TokenizerLoading.load(directory: $0) }).first ?? fileTokenizer {
            tokenizer = carried
        } else if model.config.vocabularySize == 50257 {
            tokenizer = try TokenizerLoading.gpt2()
        } else {
            throw FileError(url: directory, reason: .missing, message: "has no tokenizer files and its vocabulary (\(model.config.vocabularySize)) is not GPT-2's; pass a tokenizer")
        }
        guard tokenizer.vocabularySize <= model.config.vocabularySize else {
            throw FileError(url: directory, reason: .mismatched, message: "the tokenizer has \(tokenizer.vocabularySize) tokens, more than the model's vocabulary of \(model.config.vocabularySize)")
        }
        return tokenizer
    }

    /// The model folder `path` names: a folder (see `modelDirectory`), else, for a Hub name that is no folder here,
    /// its snapshot in Hugging Face's cache, downloaded first when the cache lacks it (see `HubDownload`; offline
    /// with `HF_HUB_OFFLINE`).
    ///
    /// A name resolves once a process (a command opens its model's folder more than once: weights, tokenizer,
    /// chat template), so that every part comes from the same snapshot and the Hub is asked once.
    package static func resolve(_ path: String, showsProgress: Bool = true) throws -> URL {
        if !FileManager.default.fileExists(atPath: path), let reference = HubCache.Reference(path) {
            let settings = try HubSettings(showsProgress: showsProgress)
            let key = [settings.endpoint.absoluteString, settings.cacheFolder.path, path].joined(separator: "\n")
            if let known = resolvedLock.withLock({ resolved[key] }),
               FileManager.default.fileExists(atPath: known.appendingPathComponent("config.json").path) { return known }
            let snapshot = try HubDownload(settings: settings).modelSnapshot(reference) { config in
                _ = try HuggingFaceCheckpoint.readConfig(config)
            }
            resolvedLock.withLock { resolved[key] = snapshot }
            return snapshot
        }
        return modelDirectory(URL(fileURLWithPath: path))
    }

    private static let resolvedLock = NSLock()
    nonisolated(unsafe) private static var resolved: [String: URL] = [:]

    /// The model (or adapter) directory inside a training output directory (`best`, else `last`), or `directory` itself.
    package static func modelDirectory(_ directory: URL) -> URL {
        if isModelFolder(directory) { return directory }
        for name in ["best", "last"] where isModelFolder(directory.appendingPathComponent(name)) {
            return directory.appendingPathComponent(name)
        }
        return directory
    }
}
