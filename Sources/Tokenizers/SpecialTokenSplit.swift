/// Text cut at the occurrences of special tokens, shared by encoding (which allows some special tokens) and BPE
/// training (which must never merge across them).
enum SpecialTokenSplit {
    /// The ordinary runs of `bytes`, each with the index in `specials` of the special token that ends it (nil for
    /// the last run). At each position the longest matching special token wins, so one that is a prefix of another
    /// does not shadow it; empty specials never match.
    static func segments(_ bytes: [UInt8], specials: [[UInt8]]) -> [(run: ArraySlice<UInt8>, special: Int?)] {
        let byLength = specials.indices.filter { !specials[$0].isEmpty }.sorted { specials[$0].count > specials[$1].count }
        guard !byLength.isEmpty else { return [(bytes[...], nil)] }
        var segments: [(ArraySlice<UInt8>, Int?)] = [], start = 0, i = 0
        while i < bytes.count {
            if let match = byLength.first(where: { bytes[i...].starts(with: specials[$0]) }) {
                segments.append((bytes[start..<i], match))
                i += specials[match].count
                start = i
            } else {
                i += 1
            }
        }
        segments.append((bytes[start...], nil))
        return segments
    }
}
