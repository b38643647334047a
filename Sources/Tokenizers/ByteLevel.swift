/// GPT-2's reversible mapping between bytes and printable Unicode characters, used only in vocabulary files:
/// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, in byte order.
package enum ByteLevel {
    /// The character standing for each byte.
    package static let characterForByte: [Character] = {
        var printable = Array(UInt8(ascii: "!")...UInt8(ascii: "~"))
        printable += Array(0xA1...0xAC) + Array(0xAE...0xFF)
        let printableSet = Set(printable)
        var result = [Character](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if printableSet.contains(UInt8(byte)) {
                result[byte] = Character(Unicode.Scalar(UInt8(byte)))
            } else {
                result[byte] = Character(Unicode.Scalar(next)!)
                next += 1
            }
        }
        return result
    }()

    /// The inverse mapping, from a character's scalar value to its byte.
    package static let byteForScalar: [UInt32: UInt8] = {
        var result: [UInt32: UInt8] = [:]
        for (byte, character) in characterForByte.enumerated() {
            result[character.unicodeScalars.first!.value] = UInt8(byte)
        }
        return result
    }()

    /// The vocabulary-file spelling of `bytes`.
    package static func encode(_ bytes: some Sequence<UInt8>) -> String {
        String(bytes.map { characterForByte[Int($0)] })
    }

    /// The bytes a vocabulary-file string stands for, or nil when it holds a character outside the mapping.
    package static func decode(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            guard let byte = byteForScalar[scalar.value] else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}
