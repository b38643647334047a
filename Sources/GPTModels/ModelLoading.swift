import Foundation
import GPTHub
import GPTUtilities
import TensorCore
import Tokenizers

/// Opens a model for inference, with the tokenizer it carries: a SwiftGPT checkpoint, a training output directory
/// (its best/ or last/ model), a Hugging Face model folder, or a Hub name (`ORG/NAME[@REVISION]`), downloaded into
/// Hugging Face's cache unless it is there already.
package enum ModelLoading {
    package static func load(_ path: String, tokenizer tokenizerOverride: String? = nil) throws -> (GPTModel, any Tokenizer) {
        let directory = try modelFolder(path)
        let model = try HuggingFaceCheckpoint.load(from: directory)
        return (model, try tokenizer(of: model, in: directory, override: tokenizerOverride))
    }

    /// `load`, for decoding in `format` only (see `HuggingFaceCheckpoint.loadForDecoding`): the model holds its
    /// weights once, in that format.
    package static func loadForDecoding(_ path: String, tokenizer tokenizerOverride: String? = nil,
                                        format: WeightFormat) throws -> (GPTModel, any Tokenizer, DecodeWeights) {
        let directory = try modelFolder(path)
        let (model, weights) = try HuggingFaceCheckpoint.loadForDecoding(from: directory, format: format)
        return (model, try tokenizer(of: model, in: directory, override: tokenizerOverride), weights)
    }

    /// The model folder `path` names, which must hold a config.json.
    private static func modelFolder(_ path: String) throws -> URL {
        let directory = try resolve(path)
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) else {
            throw FileError(url: directory, reason: .missing, message: "not a model directory (no config.json, best/ or last/)")
        }
        return directory
    }

    /// The tokenizer `override` names, else the one the model's folder carries, else GPT-2's for a vocabulary of its size.
    private static func tokenizer(of model: GPTModel, in directory: URL, override tokenizerOverride: String?) throws -> any Tokenizer {
        let tokenizer: any Tokenizer
        if let tokenizerOverride {
            tokenizer = try TokenizerLoading.load(tokenizerOverride)
        } else if let carried = try? TokenizerLoading.load(directory: directory) {
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

    /// The model directory inside a training output directory (`best`, else `last`), or `directory` itself.
    package static func modelDirectory(_ directory: URL) -> URL {
        let fm = FileManager.default
        if fm.fileExists(atPath: directory.appendingPathComponent("config.json").path) { return directory }
        for name in ["best", "last"] where fm.fileExists(atPath: directory.appendingPathComponent("\(name)/config.json").path) {
            return directory.appendingPathComponent(name)
        }
        return directory
    }
}
