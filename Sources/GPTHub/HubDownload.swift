import Foundation
import GPTUtilities
import NIOHTTP1

/// Fetches a model repository's files from the Hub into Hugging Face's cache, as `huggingface_hub.snapshot_download`
/// does, so that either finds what the other fetched: the revision's commit and file list from the model-info API,
/// each file's blob name (its SHA-256 for Git LFS files, its git blob id otherwise) and size from a `HEAD` on
/// `/{repository}/resolve/{commit}/{file}`, the content into `blobs/`, checked against that name before it is
/// renamed into place, and `snapshots/{commit}/{file}` a link to it. What is already cached is not fetched again.
package struct HubDownload {
    package let settings: HubSettings
    private let transport: HubTransport

    package init(settings: HubSettings) {
        self.settings = settings
        transport = HubTransport(settings: settings)
    }

    /// The files a model needs besides its weights, when the repository has them.
    static let companionFiles = [
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
        "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
        // What SwiftGPT's own checkpoints carry: a character tokenizer, a chat template.
        "char_tokenizer.json", "chat_template.json",
    ]

    /// The snapshot folder of `reference`, with the files a model needs: downloaded when the cache lacks them (all
    /// from one commit), taken from the cache alone when offline or, with a warning, when the Hub cannot be reached.
    /// `checkConfig` sees `config.json` before any weight is downloaded, and refuses a model that cannot be loaded.
    package func modelSnapshot(_ reference: HubCache.Reference, checkConfig: (URL) throws -> Void) throws -> URL {
        if settings.isOffline {
            do { return try HubCache.snapshot(reference, folder: settings.cacheFolder) } catch let error as FileError {
                throw HubError(.notCached, "\(reference.repository)@\(reference.revision) is not in the Hugging Face cache and HF_HUB_OFFLINE is set "
                               + "(\(error.message)); unset HF_HUB_OFFLINE to download it")
            }
        }
        let info: (commit: String, files: Set<String>)
        do {
            info = try modelInfo(reference)
        } catch let error as HubError where error.reason == .network {
            guard let cached = try? HubCache.snapshot(reference, folder: settings.cacheFolder) else { throw error }
            FileHandle.standardError.write(Data("warning: \(error.message); using the cached snapshot \(cached.path)\n".utf8))
            return cached
        }
        let repository = settings.cacheFolder.appendingPathComponent(reference.folderName)
        let snapshot = repository.appendingPathComponent("snapshots").appendingPathComponent(info.commit)
        var wanted = try weightFiles(reference, info.files)
        // config.json first: a model that cannot be loaded is refused before its weights are downloaded.
        try fetch(reference, commit: info.commit, files: ["config.json"])
        try checkConfig(snapshot.appendingPathComponent("config.json"))
        if wanted == ["model.safetensors.index.json"] {
            try fetch(reference, commit: info.commit, files: wanted)
            wanted += try shardNames(snapshot.appendingPathComponent("model.safetensors.index.json"), reference: reference, available: info.files)
        }
        try fetch(reference, commit: info.commit, files: Self.companionFiles.filter(info.files.contains) + wanted)
        if reference.revision != info.commit {
            let ref = repository.appendingPathComponent("refs").appendingPathComponent(reference.revision)
            try FileManager.default.createDirectory(at: ref.deletingLastPathComponent(), withIntermediateDirectories: true)
            if (try? String(contentsOf: ref, encoding: .utf8)) != info.commit { try AtomicFile.write(Data(info.commit.utf8), to: ref) }
        }
        return snapshot
    }

    /// The commit `reference`'s revision names, and the files the repository holds at it (the model-info API).
    func modelInfo(_ reference: HubCache.Reference) throws -> (commit: String, files: Set<String>) {
        let url = URL(string: settings.endpoint.absoluteString + "/api/models/" + reference.repository + "/revision/" + Self.escaped(reference.revision))!
        let (answer, body) = try transport.get(url)
        guard answer.status.code == 200 else {
            throw HubTransport.error(for: answer, what: "\(reference.repository)@\(reference.revision)", repository: reference.repository, settings: settings)
        }
        return try Self.parseModelInfo(body, what: "the Hub's description of \(reference.repository)@\(reference.revision)")
    }

    /// The commit (`sha`) and file names (`siblings[].rfilename`) of a model-info answer; `what` names it in errors.
    package static func parseModelInfo(_ body: Data, what: String) throws -> (commit: String, files: Set<String>) {
        guard let json = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw HubError(.invalidResponse, "\(what) is not a JSON object")
        }
        guard let commit = json["sha"] as? String, HubCache.isCommit(commit) else {
            throw HubError(.invalidResponse, "\(what) has no commit id (field 'sha')")
        }
        guard let siblings = json["siblings"] as? [[String: Any]] else {
            throw HubError(.invalidResponse, "\(what) has no file list (field 'siblings')")
        }
        var files = Set<String>()
        for sibling in siblings {
            guard let name = sibling["rfilename"] as? String else { throw HubError(.invalidResponse, "\(what): a 'siblings' entry has no 'rfilename'") }
            files.insert(name)
        }
        return (commit, files)
    }

    /// The weight files to fetch: `model.safetensors`, else the shard index (whose shards follow). A repository
    /// with only pickled weights is refused: unpickling runs whatever code the file carries.
    func weightFiles(_ reference: HubCache.Reference, _ files: Set<String>) throws -> [String] {
        guard files.contains("config.json") else {
            throw HubError(.unsupported, "\(reference.repository) has no config.json at the root: not a transformers model repository")
        }
        if files.contains("model.safetensors") { return ["model.safetensors"] }
        if files.contains("model.safetensors.index.json") { return ["model.safetensors.index.json"] }
        let pickles = files.filter { !$0.contains("/") && [".bin", ".pt", ".pth", ".ckpt", ".pkl"].contains(where: $0.hasSuffix) }.sorted()
        if !pickles.isEmpty {
            throw HubError(.unsupported, "\(reference.repository) has its weights only as PyTorch pickles (\(pickles.prefix(3).joined(separator: ", "))), "
                           + "which SwiftGPT does not load: unpickling a file runs the code it carries. Use a revision or copy of the model "
                           + "with model.safetensors (transformers writes one with model.save_pretrained(folder, safe_serialization=True))")
        }
        throw HubError(.unsupported, "\(reference.repository) has no model.safetensors or model.safetensors.index.json")
    }

    /// The shard files a safetensors index names (its `weight_map`'s values), each a plain relative path that the
    /// repository holds.
    func shardNames(_ index: URL, reference: HubCache.Reference, available: Set<String>) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: index.path) else {
            throw HubError(.invalidResponse, "\(reference.repository): cannot read \(index.path)")
        }
        return try Self.shardNames(index: data, repository: reference.repository, available: available)
    }

    /// The shard files named by the bytes of a safetensors index.
    package static func shardNames(index data: Data, repository: String, available: Set<String>) throws -> [String] {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = json["weight_map"] as? [String: Any]
        else { throw HubError(.invalidResponse, "\(repository): model.safetensors.index.json has no 'weight_map' object") }
        var shards = Set<String>()
        for (tensor, value) in map {
            guard let shard = value as? String, Self.isPlainPath(shard), available.contains(shard) else {
                throw HubError(.invalidResponse, "\(repository): model.safetensors.index.json maps '\(tensor.prefix(100))' to "
                               + "'\(String(describing: value).prefix(100))', which is not a file of the repository")
            }
            shards.insert(shard)
        }
        return shards.sorted()
    }

    /// Whether `path` is a relative path inside the repository: no empty, `.` or `..` component, no backslash.
    static func isPlainPath(_ path: String) -> Bool {
        !path.isEmpty && !path.contains("\\") && !path.contains("\0")
            && path.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    /// A path segment percent-encoded with nothing left as is but unreserved characters.
    static func escaped(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")) ?? text
    }

    /// A file's address at a commit: `/{repository}/resolve/{commit}/{file}`.
    func resolveURL(_ repository: String, commit: String, file: String) -> URL {
        let path = file.split(separator: "/").map { Self.escaped(String($0)) }.joined(separator: "/")
        return URL(string: settings.endpoint.absoluteString + "/" + repository + "/resolve/" + commit + "/" + path)!
    }

    /// What a `HEAD` tells of a file: its blob name (`X-Linked-Etag`, else `ETag`), its size (`X-Linked-Size`, else
    /// `Content-Length` unless the answer is a redirect) and where its content is (a redirect's target, else the
    /// address asked).
    struct FileMetadata {
        let blob: String
        let size: Int?
        let location: URL
    }

    func metadata(_ reference: HubCache.Reference, commit: String, file: String) throws -> FileMetadata {
        let url = resolveURL(reference.repository, commit: commit, file: file)
        let what = "\(reference.repository): \(file)"
        let answer = try transport.head(url)
        guard (200...299).contains(answer.status.code) || answer.isRedirect else {
            throw HubTransport.error(for: answer, what: what, repository: reference.repository, settings: settings)
        }
        if let announced = answer.headers.first(name: "X-Repo-Commit"), announced != commit {
            throw HubError(.invalidResponse, "\(what): the Hub answered for commit \(announced.prefix(40)), not \(commit)")
        }
        guard let tag = answer.headers.first(name: "X-Linked-Etag") ?? answer.headers.first(name: "ETag") else {
            throw HubError(.invalidResponse, "\(what): the answer has no ETag, which names the file's content")
        }
        let blob = try Self.blobName(etag: tag, what: what)
        let sizeText = answer.headers.first(name: "X-Linked-Size") ?? (answer.isRedirect ? nil : answer.headers.first(name: "Content-Length"))
        let size = try sizeText.map { try Self.byteCount($0, what: what) }
        // A large file's content is where the Hub's redirect sends; a small one's is at the address asked.
        let location = try answer.redirectTarget() ?? url
        return FileMetadata(blob: blob, size: size, location: location)
    }

    /// The blob name an ETag gives: quotes and a weak `W/` stripped; refused unless it is a plain content id, since
    /// it becomes a file name in the cache (nothing that could leave `blobs/`).
    package static func blobName(etag: String, what: String) throws -> String {
        var blob = etag.trimmingCharacters(in: .whitespaces)
        if blob.hasPrefix("W/") { blob.removeFirst(2) }
        blob = blob.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        guard !blob.isEmpty, blob.utf8.count <= 128, !blob.hasPrefix("."),
              blob.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) })
        else { throw HubError(.invalidResponse, "\(what): the ETag '\(etag.prefix(100))' is not a content id") }
        return blob
    }

    /// A size header's value: decimal digits only, within Int.
    package static func byteCount(_ text: String, what: String) throws -> Int {
        guard !text.isEmpty, text.utf8.count <= 19, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(text) else {
            throw HubError(.invalidResponse, "\(what): the size '\(text.prefix(40))' is not a byte count")
        }
        return value
    }

    /// Makes `files` of the commit present in its snapshot, downloading the blobs the cache lacks (after checking
    /// that the disk has room for them), each under a lock that `huggingface_hub` also takes.
    func fetch(_ reference: HubCache.Reference, commit: String, files: [String]) throws {
        let repository = settings.cacheFolder.appendingPathComponent(reference.folderName)
        let snapshot = repository.appendingPathComponent("snapshots").appendingPathComponent(commit)
        let blobs = repository.appendingPathComponent("blobs")
        let fm = FileManager.default
        let missing = files.filter { !fm.fileExists(atPath: snapshot.appendingPathComponent($0).path) }
        guard !missing.isEmpty else { return }
        try fm.createDirectory(at: blobs, withIntermediateDirectories: true)
        var plans: [(file: String, metadata: FileMetadata)] = []
        for file in missing { plans.append((file, try metadata(reference, commit: commit, file: file))) }
        let toDownload = plans.filter { !fm.fileExists(atPath: blobs.appendingPathComponent($0.metadata.blob).path) }
        let needed = toDownload.reduce(0) { total, plan in
            let partial = (try? fm.attributesOfItem(atPath: blobs.appendingPathComponent(plan.metadata.blob + ".incomplete").path))?[.size] as? Int
            return total + max(0, (plan.metadata.size ?? 0) - (partial ?? 0))
        }
        if let free = try? fm.attributesOfFileSystem(forPath: blobs.path)[.systemFreeSize] as? Int, needed > free {
            throw HubError(.diskFull, "\(reference.repository): the download needs \(TransferProgress.bytes(needed)) and \(blobs.path) has "
                           + "\(TransferProgress.bytes(free)) free")
        }
        let progress = TransferProgress(label: "downloading \(reference.repository)", total: needed, isVisible: settings.showsProgress)
        var done = 0
        for plan in plans {
            let blob = blobs.appendingPathComponent(plan.metadata.blob)
            if !fm.fileExists(atPath: blob.path) {
                let base = done
                try download(plan, into: blob, reference: reference, repository: repository) { base + $0 } report: { progress.update($0) }
                done += plan.metadata.size ?? 0
            }
            try HubCache.link(snapshot: snapshot, file: plan.file, blob: plan.metadata.blob)
        }
        progress.finish()
    }

    /// Downloads one blob into `blob`: through `blob.incomplete` (continued if an earlier run left one), checked
    /// against its size and name, flushed to the disk, then renamed into place.
    private func download(_ plan: (file: String, metadata: FileMetadata), into blob: URL, reference: HubCache.Reference, repository: URL,
                          offset: @escaping @Sendable (Int) -> Int, report: @escaping @Sendable (Int) -> Void) throws {
        let what = "\(reference.repository): \(plan.file)"
        let lock = try HubCache.lock(settings.cacheFolder.appendingPathComponent(".locks").appendingPathComponent(reference.folderName)
            .appendingPathComponent(plan.metadata.blob + ".lock"))
        defer { lock.release() }
        let fm = FileManager.default
        if fm.fileExists(atPath: blob.path) { return }  // another process fetched it meanwhile
        let incomplete = blob.appendingPathExtension("incomplete")
        let name = plan.metadata.blob
        let isSHA256 = name.count == 64 && HubCache.isHex(name)
        let isGitBlob = name.count == 40 && HubCache.isHex(name)
        let sha256 = try transport.download(plan.metadata.location, into: incomplete, expectedSize: plan.metadata.size, hashing: isSHA256, what: what) {
            report(offset($0))
        }
        let size = (try? fm.attributesOfItem(atPath: incomplete.path)[.size] as? Int) ?? 0
        func reject(_ message: String) -> HubError {
            try? fm.removeItem(at: incomplete)
            return HubError(.integrity, "\(what): \(message); the download was deleted, run again to fetch it anew")
        }
        if let expected = plan.metadata.size, size != expected {
            throw reject("\(size) bytes arrived where the Hub announced \(expected)")
        }
        if isSHA256, let sha256, sha256 != name {
            throw reject("its SHA-256 is \(sha256), not \(name) as the Hub announced")
        }
        if isGitBlob {
            let id = try ContentDigest.gitBlobID(ofFile: incomplete)
            if id != name { throw reject("its git blob id is \(id), not \(name) as the Hub announced") }
        }
        guard rename(incomplete.path, blob.path) == 0 else {
            throw HubError(.invalidSetting, "\(what): cannot rename \(incomplete.path) into place: \(String(cString: strerror(errno)))")
        }
        try AtomicFile.synchronizeFolder(blob.deletingLastPathComponent())
    }
}
