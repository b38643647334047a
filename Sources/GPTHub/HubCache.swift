import Foundation
import GPTUtilities

/// Models in Hugging Face's local cache, named as on the Hub (`EleutherAI/pythia-160m`, `openai-community/gpt2@main`):
/// what `huggingface_hub`, `transformers` or `huggingface-cli download` fetched is used where it lies, in their layout
/// (`models--ORG--NAME/refs/REVISION` holding a commit, `snapshots/COMMIT/` the files).
package enum HubCache {
    /// A repository of the Hub and a revision of it (a branch, a tag or a commit).
    package struct Reference: Equatable, Sendable {
        package let repository: String
        package let revision: String

        /// Reads `ORG/NAME` or `ORG/NAME@REVISION` (revision `main` when none is given); nil when `text` is not such
        /// a name.
        package init?(_ text: String) {
            let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            let pieces = name.split(separator: "/", omittingEmptySubsequences: false)
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
            guard pieces.count == 2, pieces.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix("-")
                                                         && $0.unicodeScalars.allSatisfy(allowed.contains) }) else { return nil }
            let revision = parts.count == 2 ? String(parts[1]) : "main"
            // A revision names a file under refs/: a branch may hold slashes (refs/pr/1), never a way out.
            guard !revision.isEmpty, !revision.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
            else { return nil }
            repository = name
            self.revision = revision
        }

        /// The repository's folder in the cache.
        var folderName: String { "models--" + repository.replacingOccurrences(of: "/", with: "--") }
    }

    /// The cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`, as `huggingface_hub` finds it.
    package static func folder(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let cache = environment["HF_HUB_CACHE"], !cache.isEmpty { return URL(fileURLWithPath: cache) }
        if let home = environment["HF_HOME"], !home.isEmpty { return URL(fileURLWithPath: home).appendingPathComponent("hub") }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty {
            return URL(fileURLWithPath: xdg).appendingPathComponent("huggingface/hub")
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/huggingface/hub")
    }

    /// The cached snapshot of `reference`: the folder of its files at the commit the revision names. An error says
    /// where the model was looked for and how to get it there.
    package static func snapshot(_ reference: Reference, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        try snapshot(reference, folder: folder(environment: environment))
    }

    /// The cached snapshot of `reference` in the cache folder `cache`.
    package static func snapshot(_ reference: Reference, folder cache: URL) throws -> URL {
        let repository = cache.appendingPathComponent(reference.folderName)
        let snapshots = repository.appendingPathComponent("snapshots")
        let fm = FileManager.default
        var commit = reference.revision
        if !(isCommit(commit) && fm.fileExists(atPath: snapshots.appendingPathComponent(commit).path)) {
            let ref = repository.appendingPathComponent("refs").appendingPathComponent(reference.revision)
            guard let data = fm.contents(atPath: ref.path) else {
                throw FileError(url: repository, reason: .missing, message: "\(reference.repository) at revision '\(reference.revision)' is not in the Hugging Face cache "
                                + "(no \(ref.path))")
            }
            commit = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard isCommit(commit) else { throw FileError(url: ref, reason: .malformed(line: nil), message: "does not hold a commit id (40 hexadecimal digits)") }
        }
        let snapshot = snapshots.appendingPathComponent(commit)
        guard fm.fileExists(atPath: snapshot.appendingPathComponent("config.json").path) else {
            throw FileError(url: snapshot, reason: .missing, message: "the cached snapshot of \(reference.repository) has no config.json (an incomplete download?)")
        }
        return snapshot
    }

    /// Whether `text` is a full commit id.
    static func isCommit(_ text: String) -> Bool {
        text.utf8.count == 40 && isHex(text)
    }

    /// Whether `text` is lowercase hexadecimal.
    static func isHex(_ text: String) -> Bool {
        text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// What SwiftGPT calls itself in requests (`User-Agent`).
    static var clientVersion: String { swiftGPTVersion }

    /// Makes `snapshot/file` a link to the blob, relative as `huggingface_hub` makes it (`../../blobs/NAME`, one
    /// `..` more per folder in `file`), replacing whatever was there atomically.
    static func link(snapshot: URL, file: String, blob: String) throws {
        let pointer = snapshot.appendingPathComponent(file)
        let folder = pointer.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let depth = file.split(separator: "/").count + 1
        let target = String(repeating: "../", count: depth) + "blobs/" + blob
        let temporary = folder.appendingPathComponent(".\(pointer.lastPathComponent).link-\(getpid())")
        unlink(temporary.path)
        guard symlink(target, temporary.path) == 0, rename(temporary.path, pointer.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw FileError(url: pointer, reason: .writeFailed, message: "cannot link the snapshot's file to its blob: \(reason)")
        }
        try AtomicFile.synchronizeFolder(folder)
    }

    /// An exclusive lock on a file (`flock`, as Python's `filelock`, which `huggingface_hub` uses, takes it), held
    /// until released.
    final class FileLock {
        private let descriptor: Int32
        init(descriptor: Int32) { self.descriptor = descriptor }
        func release() {
            flock(descriptor, LOCK_UN)
            close(descriptor)
        }
    }

    /// Takes the lock at `url` (created if absent), waiting while another process holds it.
    static func lock(_ url: URL) throws -> FileLock {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let descriptor = open(url.path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw FileError(url: url, reason: .writeFailed, message: "cannot open the lock file: \(String(cString: strerror(errno)))") }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let reason = String(cString: strerror(errno))
                close(descriptor)
                throw FileError(url: url, reason: .writeFailed, message: "cannot lock: \(reason)")
            }
        }
        return FileLock(descriptor: descriptor)
    }
}
