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
        let repository = folder(environment: environment).appendingPathComponent(reference.folderName)
        let snapshots = repository.appendingPathComponent("snapshots")
        let fm = FileManager.default
        var commit = reference.revision
        if !(isCommit(commit) && fm.fileExists(atPath: snapshots.appendingPathComponent(commit).path)) {
            let ref = repository.appendingPathComponent("refs").appendingPathComponent(reference.revision)
            guard let data = fm.contents(atPath: ref.path) else {
                throw FileError(url: repository, message: "\(reference.repository) at revision '\(reference.revision)' is not in the Hugging Face cache "
                                + "(no \(ref.path)); SwiftGPT runs models that huggingface_hub or transformers downloaded there, "
                                + "e.g. `huggingface-cli download \(reference.repository)`, or give a model folder")
            }
            commit = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard isCommit(commit) else { throw FileError(url: ref, message: "does not hold a commit id (40 hexadecimal digits)") }
        }
        let snapshot = snapshots.appendingPathComponent(commit)
        guard fm.fileExists(atPath: snapshot.appendingPathComponent("config.json").path) else {
            throw FileError(url: snapshot, message: "the cached snapshot of \(reference.repository) has no config.json (an incomplete download?)")
        }
        return snapshot
    }

    /// Whether `text` is a full commit id.
    static func isCommit(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}
