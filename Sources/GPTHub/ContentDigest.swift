import Crypto
import Foundation

/// A SHA-256 or SHA-1 digest computed over bytes fed in pieces (swift-crypto): what the Hub names a file by, checked
/// against what arrived.
package struct ContentDigest {
    package enum Algorithm: Sendable {
        case sha256, sha1
    }

    private var sha256: SHA256?
    private var sha1: Insecure.SHA1?

    package init(_ algorithm: Algorithm) {
        if algorithm == .sha256 { sha256 = SHA256() } else { sha1 = Insecure.SHA1() }
    }

    /// Adds `bytes` to the digest.
    package mutating func update(_ bytes: UnsafeRawBufferPointer) {
        sha256?.update(bufferPointer: bytes)
        sha1?.update(bufferPointer: bytes)
    }

    package mutating func update(_ data: some DataProtocol) {
        for region in data.regions { region.withUnsafeBytes { update($0) } }
    }

    /// The digest in lowercase hexadecimal.
    package func finish() -> String {
        let bytes: [UInt8] = sha256.map { Array($0.finalize()) } ?? sha1.map { Array($0.finalize()) } ?? []
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// The digest of a whole file, read in 4 MiB pieces, after `prefix`.
    package static func ofFile(_ url: URL, algorithm: Algorithm, prefix: Data = Data()) throws -> String {
        var digest = ContentDigest(algorithm)
        digest.update(prefix)
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        while let piece = try handle.read(upToCount: 4 << 20), !piece.isEmpty { digest.update(piece) }
        return digest.finish()
    }

    /// The id git gives a file's content (a blob's SHA-1: of `blob SIZE\0` and the bytes), which the Hub sends as
    /// the ETag of files not stored with Git LFS.
    package static func gitBlobID(ofFile url: URL) throws -> String {
        let size = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int ?? 0
        return try ofFile(url, algorithm: .sha1, prefix: Data("blob \(size)\0".utf8))
    }
}
