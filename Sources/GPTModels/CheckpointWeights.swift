import Foundation
import GPTUtilities
import TensorCore

/// The weights of a Hugging Face checkpoint: one `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names (its `weight_map` gives each tensor's file), read as one set of tensors.
struct CheckpointWeights {
    /// The file that errors about the set as a whole name: `model.safetensors` or the index.
    let url: URL
    /// Every tensor's dtype, shape and place.
    let entries: [String: SafeTensors.Entry]
    private let files: [SafeTensors]
    /// The index in `files` of the file holding each tensor.
    private let fileOf: [String: Int]

    /// The file name of a single-file checkpoint's weights, and of a sharded one's index.
    static let singleFile = "model.safetensors", indexFile = "model.safetensors.index.json"

    /// Opens the weights in `directory`. A folder with only pickled PyTorch weights is refused with the reason.
    init(directory: URL) throws {
        let single = directory.appendingPathComponent(Self.singleFile), index = directory.appendingPathComponent(Self.indexFile)
        let exists = { (url: URL) in FileManager.default.fileExists(atPath: url.path) }
        if exists(single) || !exists(index) {
            if !exists(single), let pickled = ["pytorch_model.bin", "pytorch_model.bin.index.json"].first(where: { exists(directory.appendingPathComponent($0)) }) {
                throw FileError(url: directory.appendingPathComponent(pickled), reason: .unsupported, message: "only pickled PyTorch weights here: a pickle file runs code "
                                + "when it is loaded, so SwiftGPT does not read it; convert it with transformers "
                                + "(from_pretrained, then save_pretrained(folder, safe_serialization=True)) or take the repository's safetensors")
            }
            let file = try SafeTensors(contentsOf: single)
            self.init(url: single, files: [file], fileOf: file.entries.mapValues { _ in 0 })
            return
        }
        func fail(_ message: String) -> FileError { FileError(url: index, reason: .malformed(line: nil), message: message) }
        guard let data = FileManager.default.contents(atPath: index.path),
              let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let map = json["weight_map"] as? [String: Any], !map.isEmpty else { throw fail("no 'weight_map' object of tensor names and files") }
        var shardNames: [String] = [], shardOf: [String: Int] = [:], tensorShard: [String: Int] = [:]
        for (tensor, value) in map.sorted(by: { $0.key < $1.key }) {
            // A shard is a file of this folder: a plain name, never a path out of it.
            guard let name = value as? String, !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
                throw fail("'weight_map' gives tensor '\(tensor)' the file \(value), not a file name of this folder")
            }
            if shardOf[name] == nil { shardOf[name] = shardNames.count; shardNames.append(name) }
            tensorShard[tensor] = shardOf[name]
        }
        let files = try shardNames.map { try SafeTensors(contentsOf: directory.appendingPathComponent($0)) }
        for (k, file) in files.enumerated() {
            if let stray = file.names.first(where: { tensorShard[$0] != k }) {
                throw FileError(url: file.url, reason: .malformed(line: nil), message: "holds tensor '\(stray)', which the index "
                                + (tensorShard[stray].map { "places in \(shardNames[$0])" } ?? "does not list"))
            }
        }
        if let (tensor, k) = tensorShard.first(where: { files[$0.value].entries[$0.key] == nil }) {
            throw fail("'weight_map' places tensor '\(tensor)' in \(shardNames[k]), which does not hold it")
        }
        self.init(url: index, files: files, fileOf: tensorShard)
    }

    private init(url: URL, files: [SafeTensors], fileOf: [String: Int]) {
        self.url = url
        self.files = files
        self.fileOf = fileOf
        entries = fileOf.reduce(into: [:]) { $0[$1.key] = files[$1.value].entries[$1.key] }
    }

    /// Tensor names, sorted.
    var names: [String] { entries.keys.sorted() }

    /// The file holding tensor `name`.
    private func file(_ name: String) throws -> SafeTensors {
        guard let k = fileOf[name] else { throw FileError(url: url, reason: .mismatched, message: "missing tensor '\(name)'") }
        return files[k]
    }

    /// The named tensor as float32.
    func tensor(_ name: String) throws -> Tensor { try file(name).tensor(name) }

    /// The named tensor as float32, which must have `shape`.
    func checkedTensor(_ name: String, shape: [Int]) throws -> Tensor { try file(name).checkedTensor(name, shape: shape) }

    /// Writes the named tensor into `target` as float32 (see `SafeTensors.read(_:into:)`).
    func read(_ name: String, into target: UnsafeMutablePointer<Float>) throws { try file(name).read(name, into: target) }

    /// Lets the pages of every file of the checkpoint that this process still maps go from its memory.
    func releaseMappedPages() { for file in files { file.releaseMappedPages() } }

    /// Throws unless the named tensor exists with `shape` (see `SafeTensors.checkShape(_:_:)`).
    func checkShape(_ name: String, _ shape: [Int]) throws { try file(name).checkShape(name, shape) }

    /// A reader of the named tensor's rows as float32 (see `SafeTensors.rowReader(_:)`).
    func rowReader(_ name: String) throws -> @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void {
        try file(name).rowReader(name)
    }
}
