import Foundation
import GPTUtilities

extension HubCache {
    /// A model repository in the cache: its branches and tags (refs), the commits it has files of, and the bytes
    /// its blobs take.
    package struct Entry {
        package let repository: String
        package let folder: URL
        package let refs: [(name: String, commit: String)]
        package let snapshots: [String]
        package let size: Int
    }

    /// The model repositories in the cache folder `cache`, by name.
    package static func entries(in cache: URL) -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: cache.path)) ?? []
        return names.filter { $0.hasPrefix("models--") }.sorted().map { entry(cache.appendingPathComponent($0)) }
    }

    /// The repository whose cache folder is `folder` (`models--ORG--NAME`).
    static func entry(_ folder: URL) -> Entry {
        let fm = FileManager.default
        let repository = String(folder.lastPathComponent.dropFirst("models--".count)).replacingOccurrences(of: "--", with: "/")
        let refsFolder = folder.appendingPathComponent("refs")
        var refs: [(String, String)] = []
        if let walker = fm.enumerator(at: refsFolder, includingPropertiesForKeys: [.isRegularFileKey]) {
            for case let file as URL in walker where (try? file.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                let ref = String(file.path.dropFirst(refsFolder.path.count + 1))
                let commit = ((try? String(contentsOf: file, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                refs.append((ref, commit))
            }
        }
        let snapshots = ((try? fm.contentsOfDirectory(atPath: folder.appendingPathComponent("snapshots").path)) ?? []).filter(isCommit).sorted()
        let blobs = folder.appendingPathComponent("blobs")
        let size = ((try? fm.contentsOfDirectory(atPath: blobs.path)) ?? []).reduce(0) { total, blob in
            total + ((try? fm.attributesOfItem(atPath: blobs.appendingPathComponent(blob).path)[.size] as? Int) ?? 0)
        }
        return Entry(repository: repository, folder: folder, refs: refs.sorted { $0.0 < $1.0 }, snapshots: snapshots, size: size)
    }

    /// Removes `repository` from the cache, or only its snapshot of `revision` (a ref or a commit) and the blobs
    /// no other snapshot links to (the repository goes when no snapshot is left). Returns the bytes freed.
    package static func remove(_ repository: String, revision: String?, in cache: URL) throws -> Int {
        guard let reference = Reference(repository + (revision.map { "@" + $0 } ?? "")) else {
            throw FileError(url: cache, reason: .malformed(line: nil), message: "'\(repository)' is not a model name (ORG/NAME[@REVISION])")
        }
        let fm = FileManager.default
        let folder = cache.appendingPathComponent(reference.folderName)
        guard fm.fileExists(atPath: folder.path) else {
            throw FileError(url: folder, reason: .missing, message: "\(repository) is not in the cache")
        }
        let entry = entry(folder)
        guard let revision else {
            try fm.removeItem(at: entry.folder)
            try AtomicFile.synchronizeFolder(cache)
            return entry.size
        }
        let commit = isCommit(revision) ? revision : entry.refs.first { $0.name == revision }?.commit
        guard let commit, entry.snapshots.contains(commit) else {
            throw FileError(url: entry.folder, reason: .missing, message: "\(repository) has no cached snapshot of revision '\(revision)'")
        }
        let snapshots = entry.folder.appendingPathComponent("snapshots")
        try fm.removeItem(at: snapshots.appendingPathComponent(commit))
        for ref in entry.refs where ref.commit == commit {
            try fm.removeItem(at: entry.folder.appendingPathComponent("refs").appendingPathComponent(ref.name))
        }
        let remaining = entry.snapshots.filter { $0 != commit }
        if remaining.isEmpty {
            try fm.removeItem(at: entry.folder)
            try AtomicFile.synchronizeFolder(cache)
            return entry.size
        }
        // The blobs the other snapshots still link to stay.
        var linked = Set<String>()
        for snapshot in remaining {
            let folder = snapshots.appendingPathComponent(snapshot)
            for case let file as URL in fm.enumerator(at: folder, includingPropertiesForKeys: nil, options: []) ?? FileManager.DirectoryEnumerator() {
                if let target = try? fm.destinationOfSymbolicLink(atPath: file.path) { linked.insert(URL(fileURLWithPath: target).lastPathComponent) }
            }
        }
        let blobs = entry.folder.appendingPathComponent("blobs")
        var freed = 0
        for blob in (try? fm.contentsOfDirectory(atPath: blobs.path)) ?? [] where !linked.contains(blob) {
            let url = blobs.appendingPathComponent(blob)
            freed += (try? fm.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            try fm.removeItem(at: url)
        }
        try AtomicFile.synchronizeFolder(blobs)
        return freed
    }
}
