import AsyncHTTPClient
import CFileSystem
import Foundation
import NIOCore
import NIOHTTP1

/// HTTP as the Hub's clients speak it: one client for the process, redirects followed by hand so that the access
/// token goes only to the Hub's own host (a large file redirects to a storage host, which must not receive it),
/// errors told apart by the Hub's `X-Error-Code` header, and file bodies streamed to disk through a digest.
package struct HubTransport: Sendable {
    /// One client for the process: its connections are reused from request to request.
    private static let client: HTTPClient = {
        let configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(60)),
            // A server may gzip a text file although asked for its bytes; the file's size and hash bound and check
            // what is written.
            decompression: .enabled(limit: .none))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    package let settings: HubSettings

    package init(settings: HubSettings) {
        self.settings = settings
    }

    /// A response's status and headers, and the address that gave it (after the redirects followed).
    package struct Answer {
        package let status: HTTPResponseStatus
        package let headers: HTTPHeaders
        package let url: URL
        package var isRedirect: Bool { [301, 302, 303, 307, 308].contains(status.code) }

        /// Where a redirect sends (its `Location`, resolved against `url`), nil when this is no redirect. Only an
        /// http(s) address with a host is followed, and never from https down to plain http.
        package func redirectTarget() throws -> URL? {
            guard isRedirect, let location = headers.first(name: "Location") else { return nil }
            guard let next = URL(string: location, relativeTo: url)?.absoluteURL, let scheme = next.scheme?.lowercased(),
                  scheme == "https" || (scheme == "http" && url.scheme?.lowercased() == "http"), next.host != nil
            else { throw HubError(.invalidResponse, "\(url.absoluteString) redirects to '\(location.prefix(200))', which is not an address to follow") }
            return next
        }
    }

    /// Whether two addresses share scheme, host and port.
    static func sameOrigin(_ a: URL, _ b: URL) -> Bool {
        a.scheme?.lowercased() == b.scheme?.lowercased() && a.host?.lowercased() == b.host?.lowercased()
            && (a.port ?? (a.scheme == "https" ? 443 : 80)) == (b.port ?? (b.scheme == "https" ? 443 : 80))
    }

    /// Sends `method` to `start` and follows redirects (at most ten): every one when `followsOtherHosts`, else only
    /// those on the same host (a renamed repository), returning the first other answer. `send` makes the exchange.
    private func follow(_ method: HTTPMethod, _ start: URL, headers: HTTPHeaders, followsOtherHosts: Bool,
                        send: (HTTPClient.Request) throws -> (HTTPResponseStatus, HTTPHeaders)) throws -> Answer {
        var url = start
        for _ in 0..<10 {
            var requestHeaders = headers
            requestHeaders.replaceOrAdd(name: "User-Agent", value: "swiftgpt/\(HubCache.clientVersion)")
            if let token = settings.token, Self.sameOrigin(url, settings.endpoint) {
                requestHeaders.replaceOrAdd(name: "Authorization", value: "Bearer \(token)")
            }
            let request: HTTPClient.Request
            do { request = try HTTPClient.Request(url: url.absoluteString, method: method, headers: requestHeaders) }
            catch { throw HubError(.invalidResponse, "cannot request \(url.absoluteString): \(error)") }
            let (status, responseHeaders) = try send(request)
            let answer = Answer(status: status, headers: responseHeaders, url: url)
            guard let next = try answer.redirectTarget() else { return answer }
            if !followsOtherHosts && !Self.sameOrigin(next, url) { return answer }
            url = next
        }
        throw HubError(.invalidResponse, "\(start.absoluteString) redirects more than ten times")
    }

    /// Runs `body` up to four times while it fails for a reason that may pass (a server error or rate limit, a
    /// kept-alive connection the server had closed), waiting 0.5, 1 and 2 seconds between tries. A connection that
    /// cannot be made is not tried again: the client has kept trying until the request's deadline.
    static func retrying<T>(_ what: String, _ body: () throws -> T) throws -> T {
        var attempt = 0
        while true {
            do { return try body() } catch let error as HubError where error.reason == .network && attempt < 3 {
                attempt += 1
            } catch let error as HubError {
                throw error
            } catch let error as HTTPClientError where error == .remoteConnectionClosed && attempt < 3 {
                attempt += 1
            } catch {
                throw HubError(.network, "\(what): \(Self.describe(error))")
            }
            Thread.sleep(forTimeInterval: 0.5 * Double(1 << (attempt - 1)))
        }
    }

    /// A transport error in words.
    static func describe(_ error: Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "the connection timed out"
            case .deadlineExceeded: return "no answer within HF_HUB_ETAG_TIMEOUT (\(HubSettings.metadataTimeoutDefault) seconds unless set)"
            case .readTimeout: return "no data arrived for 60 seconds"
            case .remoteConnectionClosed: return "the server closed the connection"
            default: return "\(error)"
            }
        }
        let text = "\(error)"
        if text.contains("Connection refused") { return "the connection was refused (nothing answers at that address)" }
        if text.contains("Name or service not known") || text.contains("NXDOMAIN") { return "the host name is unknown" }
        return text
    }

    /// `HEAD url`: the status and headers, following same-host redirects only (the Hub's own answer to a large file
    /// is a redirect whose headers describe the file).
    package func head(_ url: URL) throws -> Answer {
        try Self.retrying("cannot reach \(url.host ?? url.absoluteString)") {
            var headers = HTTPHeaders()
            headers.add(name: "Accept-Encoding", value: "identity")
            return try follow(.HEAD, url, headers: headers, followsOtherHosts: false) { request in
                let response = try Self.client.execute(request: request, delegate: ResponseAccumulator(request: request, maxBodySize: 1 << 20),
                                                       deadline: .now() + .milliseconds(Int64(settings.metadataTimeout * 1000))).wait()
                return (response.status, response.headers)
            }
        }
    }

    /// `GET url`, its body (at most `limit` bytes) in memory: for the Hub's JSON answers.
    package func get(_ url: URL, limit: Int = 16 << 20) throws -> (Answer, Data) {
        try Self.retrying("cannot reach \(url.host ?? url.absoluteString)") {
            var body = Data()
            let answer = try follow(.GET, url, headers: HTTPHeaders(), followsOtherHosts: true) { request in
                let response: HTTPClient.Response
                do {
                    response = try Self.client.execute(request: request, delegate: ResponseAccumulator(request: request, maxBodySize: limit),
                                                       deadline: .now() + .milliseconds(Int64(settings.metadataTimeout * 1000))).wait()
                }
                catch is ResponseAccumulator.ResponseTooBigError {
                    throw HubError(.invalidResponse, "\(url.absoluteString) answered with more than \(limit >> 20) MiB")
                }
                body = response.body.map { Data($0.readableBytesView) } ?? Data()
                return (response.status, response.headers)
            }
            if answer.status.code >= 500 || answer.status.code == 429 {
                throw HubError(.network, "\(url.host ?? "the Hub") answered \(answer.status.code) \(answer.status.reasonPhrase)")
            }
            return (answer, body)
        }
    }

    /// Downloads `url` into `file`, continuing what `file` already holds with a Range request (a server that ignores
    /// it sends the whole file, which then replaces it). A lost connection is resumed the same way, up to five
    /// times. `expectedSize`, when known, bounds what is accepted; `progress` gets the file's size as it grows.
    /// Returns the SHA-256 of the whole file when `hashing`.
    package func download(_ url: URL, into file: URL, expectedSize: Int?, hashing: Bool, what: String,
                          progress: @escaping @Sendable (Int) -> Void) throws -> String? {
        var losses = 0
        while true {
            let sink = try FileSink(file: file, limit: expectedSize, hashing: hashing, what: what, progress: progress)
            defer { sink.close() }
            if let expectedSize, sink.size == expectedSize, sink.size > 0 { return sink.finish() }
            var headers = HTTPHeaders()
            if sink.size > 0 {
                headers.add(name: "Range", value: "bytes=\(sink.size)-")
                headers.add(name: "Accept-Encoding", value: "identity")
            } else {
                headers.add(name: "Accept-Encoding", value: "gzip")
            }
            let answer: Answer
            do {
                answer = try follow(.GET, url, headers: headers, followsOtherHosts: true) { request in
                    sink.prepare()
                    let head = try Self.client.execute(request: request, delegate: sink).wait()
                    if let failure = sink.failure { throw failure }
                    return (head.status, head.headers)
                }
            } catch let error as HubError where error.reason != .network {
                throw error
            } catch {
                if let failure = sink.failure { throw failure }
                losses += 1
                guard losses <= 5 else {
                    throw HubError(.network, "\(what): the download broke off five times (\(Self.describe(error))); run again to resume it")
                }
                Thread.sleep(forTimeInterval: min(8, Double(1 << (losses - 1))))
                continue
            }
            switch answer.status.code {
            case 200, 206:
                if let expectedSize, sink.size < expectedSize {
                    losses += 1
                    guard losses <= 5 else { throw HubError(.network, "\(what): the download broke off five times; run again to resume it") }
                    continue
                }
                return sink.finish()
            case 416:
                // What the file holds is not a prefix the server recognises: start again.
                try sink.truncate()
                losses += 1
                guard losses <= 5 else { throw HubError(.invalidResponse, "\(what): the server refuses every range of the file") }
            default:
                throw HubTransport.error(for: answer, what: what)
            }
        }
    }

    /// The error a failed answer means, by the Hub's `X-Error-Code` header and the status.
    package static func error(for answer: Answer, what: String, repository: String? = nil, settings: HubSettings? = nil) -> HubError {
        let code = answer.headers.first(name: "X-Error-Code") ?? ""
        let serverMessage = answer.headers.first(name: "X-Error-Message").map { message in
            " (the Hub says: " + String(message.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }.prefix(300).map(Character.init)) + ")"
        } ?? ""
        let name = repository ?? what
        let tokenHint = settings?.token == nil
            ? "if it is private, give a token that can read it: set HF_TOKEN, or run `huggingface-cli login`"
            : "if it is private, the token given (HF_TOKEN or the token file) cannot read it"
        switch (code, answer.status.code) {
        case ("GatedRepo", _):
            return HubError(.gated, "\(name) is gated: accept its conditions on its page on the Hub, then give a token of that account "
                            + "(set HF_TOKEN, or run `huggingface-cli login`)\(serverMessage)")
        case ("RevisionNotFound", _):
            return HubError(.revisionNotFound, "\(what): no such revision (branch, tag or commit)\(serverMessage)")
        case ("EntryNotFound", _):
            return HubError(.fileNotFound, "\(what): no such file at that revision\(serverMessage)")
        case ("RepoNotFound", _), (_, 401):
            // The Hub answers alike for a repository that does not exist and one the request may not see.
            return HubError(.repositoryNotFound, "\(name): repository not found; \(tokenHint)\(serverMessage)")
        case (_, 403):
            return HubError(.unauthorized, "\(what): access refused (403): the token cannot read this repository\(serverMessage)")
        case (_, 404):
            return HubError(.fileNotFound, "\(what): not found (404)\(serverMessage)")
        case (_, 429), (_, 500...):
            return HubError(.network, "\(what): the Hub answered \(answer.status.code) \(answer.status.reasonPhrase); try again later\(serverMessage)")
        default:
            return HubError(.invalidResponse, "\(what): unexpected answer \(answer.status.code) \(answer.status.reasonPhrase)\(serverMessage)")
        }
    }
}

/// A SHA-256 computed on a queue of its own while the bytes are written, so that hashing overlaps the transfer.
private final class BackgroundDigest: @unchecked Sendable {
    private let queue = DispatchQueue(label: "swiftgpt.hub.digest")
    private var digest = ContentDigest(.sha256)
    private let lock = NSLock()
    private var pending = 0

    /// Whether more than 64 MiB wait to be hashed.
    var isBehind: Bool {
        lock.lock()
        defer { lock.unlock() }
        return pending > 64 << 20
    }

    /// Hashes `buffer` after what was added before, then calls `done`.
    func add(_ buffer: ByteBuffer, done: @escaping @Sendable () -> Void) {
        lock.lock()
        pending += buffer.readableBytes
        lock.unlock()
        queue.async {
            buffer.withUnsafeReadableBytes { self.digest.update($0) }
            self.lock.lock()
            self.pending -= buffer.readableBytes
            self.lock.unlock()
            done()
        }
    }

    /// The digest of everything added, once it is all hashed.
    func finish() -> String { queue.sync { digest.finish() } }
}

/// The receiving end of one download: appends the body of a 200 or 206 answer to the file, through the digest, and
/// refuses more bytes than the file is announced to have. Its callbacks run one after another on the client's
/// event loop; the downloading thread reads its state only after the request has finished.
private final class FileSink: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = HTTPResponseHead

    private let descriptor: Int32
    private let file: URL
    private let limit: Int?
    private let hashing: Bool
    private let what: String
    private let progress: @Sendable (Int) -> Void
    private var digest: BackgroundDigest?
    private var writtenBack = 0
    private var accepting = false
    private(set) var size: Int
    private(set) var failure: HubError?
    private var lastHead: HTTPResponseHead?

    init(file: URL, limit: Int?, hashing: Bool, what: String, progress: @escaping @Sendable (Int) -> Void) throws {
        descriptor = open(file.path, O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else {
            throw HubError(.invalidSetting, "cannot write \(file.path): \(String(cString: strerror(errno)))")
        }
        self.file = file
        self.limit = limit
        self.hashing = hashing
        self.what = what
        self.progress = progress
        size = Int(lseek(descriptor, 0, SEEK_END))
        if let limit, size > limit {
            size = 0
            ftruncate(descriptor, 0)
        }
        if hashing {
            // The digest of the whole file: what an earlier attempt wrote, then what arrives.
            let digest = BackgroundDigest()
            if size > 0 {
                let handle = try FileHandle(forReadingFrom: file)
                defer { try? handle.close() }
                var left = size
                while left > 0, let piece = try handle.read(upToCount: min(left, 4 << 20)), !piece.isEmpty {
                    digest.add(ByteBuffer(bytes: piece)) {}
                    left -= piece.count
                }
            }
            self.digest = digest
        }
    }

    /// Called before each request (a redirect makes several).
    func prepare() { accepting = false }

    func truncate() throws {
        guard ftruncate(descriptor, 0) == 0 else { throw HubError(.invalidSetting, "cannot truncate \(file.path)") }
        size = 0
        if hashing { digest = BackgroundDigest() }
    }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        lastHead = head
        switch head.status.code {
        case 200:
            // The whole file: whatever an earlier attempt left is replaced.
            if size > 0 {
                do { try truncate() } catch { return fail(task, error as? HubError ?? HubError(.invalidSetting, "\(error)")) }
            }
            accepting = true
        case 206:
            // The rest of the file, which must start where the file ends: `bytes START-END/TOTAL`.
            let range = head.headers.first(name: "Content-Range") ?? ""
            let start = range.hasPrefix("bytes ") ? Int(range.dropFirst(6).prefix { $0 != "-" }) : nil
            guard start == size else {
                return fail(task, HubError(.invalidResponse, "\(what): the server resumed the download at '\(range)', not at byte \(size)"))
            }
            accepting = true
        default:
            accepting = false
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard accepting else { return task.eventLoop.makeSucceededVoidFuture() }
        let count = buffer.readableBytes
        if let limit, size + count > limit {
            return fail(task, HubError(.integrity, "\(what): the server sent more than the \(limit) bytes the Hub announced"))
        }
        let error: HubError? = buffer.withUnsafeReadableBytes { bytes in
            var written = 0
            while written < bytes.count {
                let n = Foundation.write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno == ENOSPC || errno == EDQUOT
                        ? HubError(.diskFull, "\(what): the disk is full (\(file.deletingLastPathComponent().path)); free space and run again to resume")
                        : HubError(.invalidSetting, "\(what): cannot write \(file.path): \(String(cString: strerror(errno)))")
                }
                written += n
            }
            return nil
        }
        if let error { return fail(task, error) }
        size += count
        progress(size)
        // Start writing the file back to the disk as it arrives, so that the final fsync has little left to do.
        if size - writtenBack >= 32 << 20 {
            swiftgpt_start_writeback(descriptor, Int64(writtenBack), Int64(size - writtenBack))
            writtenBack = size
        }
        guard let digest else { return task.eventLoop.makeSucceededVoidFuture() }
        // Hashing runs beside the transfer; when it falls 64 MiB behind, reading waits for it.
        if digest.isBehind {
            let caughtUp = task.eventLoop.makePromise(of: Void.self)
            digest.add(buffer) { caughtUp.succeed() }
            return caughtUp.futureResult
        }
        digest.add(buffer) {}
        return task.eventLoop.makeSucceededVoidFuture()
    }

    private func fail(_ task: HTTPClient.Task<Response>, _ error: HubError) -> EventLoopFuture<Void> {
        failure = error
        return task.eventLoop.makeFailedFuture(error)
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> HTTPResponseHead {
        guard let head = lastHead else { throw HubError(.invalidResponse, "\(what): no answer") }
        return head
    }

    /// Flushes the file to the disk and returns its SHA-256 (when hashing).
    func finish() -> String? {
        fsync(descriptor)
        return digest?.finish()
    }

    func close() {
        Foundation.close(descriptor)
    }
}
