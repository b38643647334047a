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
        let directory = try resolve(path)
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) else {
            throw FileError(url: directory, message: "not a model directory (no config.json, best/ or last/)")
        }
        let model = try HuggingFaceCheckpoint.load(from: directory)
        let tokenizer: any Tokenizer
        if let tokenizerOverride {
            tokenizer = try TokenizerLoading.load(tokenizerOverride)
        } else if let carried = try? TokenizerLoading.load(directory: directory) {
            tokenizer = carried
        } else if model.config.vocabularySize == 50257 {
            tokenizer = try TokenizerLoading.gpt2()
        } else {
            throw FileError(url: directory, message: "has no tokenizer files and its vocabulary (\(model.config.vocabularySize)) is not GPT-2's; pass a tokenizer")
        }
        guard tokenizer.vocabularySize <= model.config.vocabularySize else {
            throw FileError(url: directory, message: "the tokenizer has \(tokenizer.vocabularySize) tokens, more than the model's vocabulary of \(model.config.vocabularySize)")
        }
        return (model, tokenizer)
    }

    /// The model folder `path` names: a folder (see `modelDirectory`), else, for a Hub name that is no folder here,
    /// its snapshot in Hugging Face's cache, downloaded first when the cache lacks it (see `HubDownload`; offline
    /// with `HF_HUB_OFFLINE`).
    package static func resolve(_ path: String, showsProgress: Bool = true) throws -> URL {
        if !FileManager.default.fileExists(atPath: path), let reference = HubCache.Reference(path) {
            return try HubDownload(settings: HubSettings(showsProgress: showsProgress)).modelSnapshot(reference) { config in
                _ = try HuggingFaceCheckpoint.readConfig(config)
            }
        }
        return modelDirectory(URL(fileURLWithPath: path))
    }

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
