import CFileSystem
import Foundation

/// Writes files and folders so that readers see either the old one or the complete new one, never a partial write,
/// and so that what was written survives a crash or power loss once the call returns: the content goes to a
/// temporary file in the same folder, is flushed to the disk (fsync), then renamed over the target, and the folder
/// is flushed too.
package enum AtomicFile {
    /// Streams content through `body` into `url`, atomically. On error the temporary file is removed and any
    /// existing file at `url` is left untouched.
    package static func write(to url: URL, _ body: (FileHandle) throws -> Void) throws {
        let folder = url.deletingLastPathComponent()
        let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        let descriptor = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw FileError(url: url, reason: .writeFailed, message: "cannot create a file in \(folder.path) (\(String(cString: strerror(errno))))")
        }
        do {
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: false)
            do {
                try body(handle)
                try handle.synchronize()
                try handle.close()
            } catch {
                try? handle.close()
                throw error
            }
            guard rename(temporary.path, url.path) == 0 else {
                throw FileError(url: url, reason: .writeFailed, message: "cannot rename the written file into place (\(String(cString: strerror(errno))))")
            }
            try synchronizeFolder(folder)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
    }

    /// Writes `data` to `url` atomically.
    package static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(contentsOf: data) }
    }

    /// Flushes a folder's entries (files created, renamed or removed in it) to the disk.
    package static func synchronizeFolder(_ folder: URL) throws {
        let descriptor = open(folder.path, O_RDONLY)
        guard descriptor >= 0 else { throw FileError(url: folder, reason: .writeFailed, message: "cannot open the folder to flush it (\(String(cString: strerror(errno))))") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw FileError(url: folder, reason: .writeFailed, message: "cannot flush the folder to the disk (\(String(cString: strerror(errno))))") }
    }

    /// Puts the complete folder `staged` (its files already flushed) at `target`, replacing any folder there, so
    /// that at every instant `target` is either the old folder or the new one: the two are exchanged in one step
    /// (Linux's renameat2 with RENAME_EXCHANGE, macOS's renamex_np with RENAME_SWAP), then the old one is removed.
    /// Where the file system cannot exchange, the old folder is first moved to `displaced`, a name that
    /// `recoverFolder` knows, then the new one renamed into place.
    package static func replaceFolder(_ target: URL, with staged: URL, displaced: URL) throws {
        let fm = FileManager.default
        let parent = target.deletingLastPathComponent()
        try synchronizeFolder(staged)
        if !fm.fileExists(atPath: target.path) {
            guard rename(staged.path, target.path) == 0 else {
                throw FileError(url: target, reason: .writeFailed, message: "cannot rename the written folder into place (\(String(cString: strerror(errno))))")
            }
        } else if swiftgpt_exchange_paths(staged.path, target.path) == 0 {
            // `staged` now names the old folder.
            try synchronizeFolder(parent)
            try fm.removeItem(at: staged)
        } else if errno == ENOSYS || errno == EINVAL || errno == ENOTSUP {
            try? fm.removeItem(at: displaced)
            guard rename(target.path, displaced.path) == 0 else {
                throw FileError(url: target, reason: .writeFailed, message: "cannot move the old folder aside (\(String(cString: strerror(errno))))")
            }
            guard rename(staged.path, target.path) == 0 else {
                let reason = String(cString: strerror(errno))
                _ = rename(displaced.path, target.path)
                throw FileError(url: target, reason: .writeFailed, message: "cannot rename the written folder into place (\(reason))")
            }
            try synchronizeFolder(parent)
            try fm.removeItem(at: displaced)
        } else {
            throw FileError(url: target, reason: .writeFailed, message: "cannot exchange the written folder with the old one (\(String(cString: strerror(errno))))")
        }
        try synchronizeFolder(parent)
    }

    /// Repairs what an interrupted `replaceFolder` can leave beside `target`: when `target` is missing and a
    /// displaced old folder exists (a kill between the two renames of the fallback), the old folder is put back;
    /// leftover staged and displaced folders are removed. `staged` and `displaced` tell those names apart.
    /// Returns what was done, in words (empty when nothing was).
    package static func recoverFolder(_ target: URL, isStaged: (String) -> Bool, isDisplaced: (String) -> Bool) throws -> [String] {
        let fm = FileManager.default
        let parent = target.deletingLastPathComponent()
        guard let names = try? fm.contentsOfDirectory(atPath: parent.path) else { return [] }
        var done: [String] = []
        var displaced = names.filter(isDisplaced).map { parent.appendingPathComponent($0) }
        if !fm.fileExists(atPath: target.path), let newest = displaced.max(by: { modificationDate($0) < modificationDate($1) }) {
            guard rename(newest.path, target.path) == 0 else {
                throw FileError(url: newest, reason: .writeFailed, message: "cannot restore this interrupted checkpoint to \(target.path) (\(String(cString: strerror(errno))))")
            }
            done.append("\(target.path) was missing (a save was interrupted): restored the previous one from \(newest.lastPathComponent)")
            displaced.removeAll { $0 == newest }
        }
        for leftover in names.filter(isStaged).map({ parent.appendingPathComponent($0) }) + displaced {
            try fm.removeItem(at: leftover)
            done.append("removed \(leftover.lastPathComponent), left by an interrupted save")
        }
        if !done.isEmpty { try synchronizeFolder(parent) }
        return done
    }

    private static func modificationDate(_ url: URL) -> Date {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date) ?? .distantPast
    }
}
