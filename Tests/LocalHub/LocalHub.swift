import Foundation
import GPTHub
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// A server on 127.0.0.1 that answers as the Hugging Face Hub does, for the download tests and the download
/// benchmark: the model-info API (`/api/models/{repo}/revision/{revision}`), `HEAD` and `GET` on
/// `/{repo}/resolve/{revision}/{file}` with `X-Repo-Commit`, `ETag` and, for large files, a redirect to a storage
/// host (`localhost` instead of `127.0.0.1`, so that a token sent there is seen) carrying `X-Linked-Etag` and
/// `X-Linked-Size`; Range requests; gzip for text files when asked; the Hub's `X-Error-Code` errors; private, gated
/// and renamed repositories; and faults on request: a connection dropped partway, a corrupted byte.
package final class LocalHub: @unchecked Sendable {
    /// A repository: its files at one commit, which `main`, the commit and `tags` name.
    package struct Repository: Sendable {
        package var files: [String: Data]
        package var tags: [String] = []
        package var isPrivate = false
        package var isGated = false

        package init(files: [String: Data]) { self.files = files }

        /// A commit id made from the files' names and blob names (stable for the same files), set when added.
        package fileprivate(set) var commit = ""
    }

    /// The token that opens private and gated repositories.
    package static let token = "hf_localhubtoken"

    private let lock = NSLock()
    private var repositories: [String: Repository] = [:]
    /// Each file's blob name (its SHA-256 when large, else its git blob id), by repository and file.
    private var blobNames: [String: [String: String]] = [:]
    /// The large files' contents by SHA-256: what storage serves.
    private var storedBlobs: [String: Data] = [:]
    private var renamed: [String: String] = [:]
    private var dropAfter: [String: Int] = [:]
    private var corrupted: Set<String> = []
    private var log: [String] = []
    private var leaks = 0
    /// Files larger than this are stored "with Git LFS": named by their SHA-256 and redirected to storage.
    package let largeFileBytes: Int
    private var task: Task<Void, Error>?
    package private(set) var port = 0

    package init(largeFileBytes: Int = 4096) {
        self.largeFileBytes = largeFileBytes
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Adds (or replaces) a repository.
    package func add(_ name: String, _ repository: Repository) {
        var names: [String: String] = [:], blobs: [String: Data] = [:]
        for (file, content) in repository.files {
            var digest = ContentDigest(content.count > largeFileBytes ? .sha256 : .sha1)
            if content.count <= largeFileBytes { digest.update(Data("blob \(content.count)\0".utf8)) }
            digest.update(content)
            names[file] = digest.finish()
            if content.count > largeFileBytes { blobs[names[file]!] = content }
        }
        var repository = repository
        var digest = ContentDigest(.sha1)
        for file in names.keys.sorted() { digest.update(Data((file + "\0" + names[file]! + "\0").utf8)) }
        repository.commit = digest.finish()
        locked {
            repositories[name] = repository
            blobNames[name] = names
            storedBlobs.merge(blobs) { new, _ in new }
        }
    }
    /// Makes `old` answer with a redirect to `new`, as the Hub does for a renamed repository.
    package func rename(_ old: String, to new: String) { locked { renamed[old] = new } }
    /// The next download of `blob` from storage stops after `bytes` bytes, the connection closed.
    package func dropConnection(of blob: String, after bytes: Int) { locked { dropAfter[blob] = bytes } }
    /// Downloads of `blob` from storage arrive with one byte changed.
    package func corrupt(_ blob: String) { locked { _ = corrupted.insert(blob) } }
    /// The requests served, as `METHOD path` (and the Range header's value when there is one), oldest first.
    package var requests: [String] { locked { log } }
    /// How many requests to the storage host carried an Authorization header.
    package var tokenLeaks: Int { locked { leaks } }
    /// The Hub's address.
    package var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Starts serving on a free port of 127.0.0.1; returns once it listens.
    package func start() throws {
        let listening = DispatchSemaphore(value: 0)
        let box = PortBox()
        var logger = Logger(label: "LocalHub")
        logger.logLevel = .critical  // a test's server stopping is no error
        let app = Application(router: router(), configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "LocalHub"),
                              onServerRunning: { channel in box.port = channel.localAddress?.port ?? 0; listening.signal() }, logger: logger)
        task = Task { try await app.runService() }
        guard listening.wait(timeout: .now() + 30) == .success else { throw CocoaError(.featureUnsupported) }
        port = box.port
    }

    /// Stops the server.
    package func stop() { task?.cancel() }

    private final class PortBox: @unchecked Sendable { var port = 0 }

    private func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/api/models/:org/:name/revision/:revision") { request, context in
            let name = "\(context.parameters.get("org") ?? "")/\(context.parameters.get("name") ?? "")"
            let revision = (context.parameters.get("revision") ?? "").removingPercentEncoding ?? ""
            return self.modelInfo(name, revision: revision, request: request)
        }
        router.get("/api/models/:org/:name/tree/:revision") { request, context in
            let name = "\(context.parameters.get("org") ?? "")/\(context.parameters.get("name") ?? "")"
            let revision = (context.parameters.get("revision") ?? "").removingPercentEncoding ?? ""
            return self.tree(name, revision: revision, request: request)
        }
        for method in [HTTPRequest.Method.head, .get] {
            router.on("/:org/:name/resolve/:revision/**", method: method) { request, context in
                let name = "\(context.parameters.get("org") ?? "")/\(context.parameters.get("name") ?? "")"
                let revision = (context.parameters.get("revision") ?? "").removingPercentEncoding ?? ""
                let file = context.parameters.getCatchAll().joined(separator: "/").removingPercentEncoding ?? ""
                return self.resolve(name, revision: revision, file: file, request: request)
            }
            router.on("/storage/:blob", method: method) { request, context in
                self.storage(context.parameters.get("blob") ?? "", request: request)
            }
        }
        return router
    }

    private func record(_ request: Request) {
        let range = request.headers[.range].map { " \($0)" } ?? ""
        locked { log.append("\(request.method.rawValue) \(request.uri.path)\(range)") }
    }

    private static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String, commit: String? = nil) -> Response {
        var headers: HTTPFields = [HTTPField.Name("X-Error-Code")!: code, HTTPField.Name("X-Error-Message")!: message]
        if let commit { headers[HTTPField.Name("X-Repo-Commit")!] = commit }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: message)))
    }

    /// The repository, or the error the Hub gives: renamed (a same-host redirect), missing or private without the
    /// token (both 401 RepoNotFound), gated without the token (401 GatedRepo), no such revision (404
    /// RevisionNotFound).
    private func repository(_ name: String, revision: String, request: Request, redirectPath: (String) -> String) -> Found {
        let (repository, newName) = locked { (repositories[name], renamed[name]) }
        if let newName {
            return .failure(Response(status: .temporaryRedirect, headers: [.location: redirectPath(newName)]))
        }
        let authorized = request.headers[.authorization] == "Bearer \(Self.token)"
        guard let repository, !repository.isPrivate || authorized else {
            return .failure(Self.error(.unauthorized, "RepoNotFound", "Repository not found"))
        }
        if repository.isGated && !authorized {
            return .failure(Self.error(.unauthorized, "GatedRepo", "Access to model \(name) is restricted"))
        }
        guard revision == "main" || revision == repository.commit || repository.tags.contains(revision) else {
            return .failure(Self.error(.notFound, "RevisionNotFound", "Invalid rev id: \(revision)"))
        }
        return .success(repository)
    }

    private enum Found {
        case success(Repository)
        case failure(Response)
    }

    private func modelInfo(_ name: String, revision: String, request: Request) -> Response {
        record(request)
        let repository: Repository
        switch self.repository(name, revision: revision, request: request, redirectPath: { "/api/models/\($0)/revision/\(revision)" }) {
        case .success(let found): repository = found
        case .failure(let response): return response
        }
        let commit = repository.commit
        let siblings = repository.files.keys.sorted().map { ["rfilename": $0] }
        let body = try! JSONSerialization.data(withJSONObject: ["id": name, "modelId": name, "sha": commit, "siblings": siblings,
                                                                "private": repository.isPrivate, "gated": repository.isGated])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The tree API (`huggingface_hub`'s `snapshot_download` lists files with it): every file, its size and blob id,
    /// and the SHA-256 of those stored with Git LFS.
    private func tree(_ name: String, revision: String, request: Request) -> Response {
        record(request)
        let repository: Repository
        switch self.repository(name, revision: revision, request: request, redirectPath: { "/api/models/\($0)/tree/\(revision)" }) {
        case .success(let found): repository = found
        case .failure(let response): return response
        }
        let names = locked { blobNames[name] ?? [:] }
        let entries: [[String: Any]] = repository.files.keys.sorted().map { file in
            let size = repository.files[file]!.count
            var entry: [String: Any] = ["type": "file", "path": file, "size": size, "oid": names[file] ?? ""]
            if size > largeFileBytes { entry["lfs"] = ["oid": names[file] ?? "", "size": size, "pointerSize": 134] }
            return entry
        }
        let body = try! JSONSerialization.data(withJSONObject: entries)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    private func resolve(_ name: String, revision: String, file: String, request: Request) -> Response {
        record(request)
        let repository: Repository
        switch self.repository(name, revision: revision, request: request, redirectPath: { "/\($0)/resolve/\(revision)/\(file)" }) {
        case .success(let found): repository = found
        case .failure(let response): return response
        }
        let commit = repository.commit
        guard let content = repository.files[file], let blob = locked({ blobNames[name]?[file] }) else {
            return Self.error(.notFound, "EntryNotFound", "\(file) does not exist on \"\(revision)\"", commit: commit)
        }
        if content.count > largeFileBytes {
            // Stored with Git LFS: named by its SHA-256, served by the storage host. The redirect's own body and
            // ETag are not the file's.
            let note = "Found. Redirecting to storage"
            return Response(status: .found, headers: [
                .location: "http://localhost:\(port)/storage/\(blob)",
                HTTPField.Name("X-Repo-Commit")!: commit,
                HTTPField.Name("X-Linked-Etag")!: "\"\(blob)\"",
                HTTPField.Name("X-Linked-Size")!: "\(content.count)",
                .eTag: "\"redirect-\(blob.prefix(8))\"",
                .contentLength: "\(note.utf8.count)",
            ], body: request.method == .head ? .init() : .init(byteBuffer: ByteBuffer(string: note)))
        }
        var headers: HTTPFields = [HTTPField.Name("X-Repo-Commit")!: commit, .eTag: "W/\"\(blob)\""]
        let wantsGzip = request.method == .get && (request.headers[.acceptEncoding] ?? "").contains("gzip")
            && (file.hasSuffix(".json") || file.hasSuffix(".txt"))
        if wantsGzip {
            // As the Hub's front end does for text: gzip, no Content-Length.
            locked { log[log.count - 1] += " (gzip)" }
            headers[.contentEncoding] = "gzip"
            let gzipped = Self.gzip(content)
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                try await writer.write(ByteBuffer(bytes: gzipped))
                try await writer.finish(nil)
            })
        }
        headers[.contentLength] = "\(content.count)"
        return Response(status: .ok, headers: headers, body: request.method == .head ? .init() : .init(byteBuffer: ByteBuffer(bytes: content)))
    }

    private func storage(_ blob: String, request: Request) -> Response {
        record(request)
        let (stored, drop, isCorrupted) = locked { () -> (Data?, Int?, Bool) in
            if request.headers[.authorization] != nil { leaks += 1 }
            let drop = request.method == .get ? dropAfter.removeValue(forKey: blob) : nil
            return (storedBlobs[blob], drop, corrupted.contains(blob))
        }
        guard var content = stored else { return Response(status: .notFound) }
        if isCorrupted { content[content.count / 2] ^= 0x01 }
        var start = 0
        var status = HTTPResponse.Status.ok
        var headers: HTTPFields = [.acceptRanges: "bytes", .eTag: "\"\(blob)\""]
        if let range = request.headers[.range], range.hasPrefix("bytes="), let from = Int(range.dropFirst(6).prefix { $0 != "-" }) {
            guard from < content.count else {
                return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(content.count)"])
            }
            start = from
            status = .partialContent
            headers[.contentRange] = "bytes \(from)-\(content.count - 1)/\(content.count)"
        }
        let body = content.subdata(in: start..<content.count)
        headers[.contentLength] = "\(body.count)"
        if request.method == .head { return Response(status: status, headers: headers) }
        if let drop {
            // Part of the body, then the connection closes: the client sees a short transfer.
            return Response(status: status, headers: headers, body: ResponseBody(contentLength: body.count) { writer in
                try await writer.write(ByteBuffer(bytes: body.prefix(min(drop, body.count))))
                throw CancellationError()
            })
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// `data` as a gzip member of stored (uncompressed) deflate blocks: valid gzip that any decoder reads.
    static func gzip(_ data: Data) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255]
        let bytes = [UInt8](data)
        var offset = 0
        repeat {
            let count = min(65535, bytes.count - offset)
            let isLast: UInt8 = offset + count == bytes.count ? 1 : 0
            out += [isLast, UInt8(count & 0xFF), UInt8(count >> 8), UInt8(~count & 0xFF), UInt8((~count >> 8) & 0xFF)]
            out += bytes[offset..<offset + count]
            offset += count
        } while offset < bytes.count
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc = ~crc
        let size = UInt32(truncatingIfNeeded: bytes.count)
        for value in [crc, size] { out += [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)] }
        return out
    }
}
