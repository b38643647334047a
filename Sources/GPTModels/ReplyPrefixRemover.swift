/// What a chat template writes before a reply's content (its `replyPrefix`, the space after "Assistant:" in the
/// default form) belongs to the template, not to the reply: it is taken off generated replies, whole or as they
/// stream.
package struct ReplyPrefixRemover: Sendable {
    private let prefix: String
    /// The start of a streamed reply held back while it could still be the prefix; nil once past it.
    private var held: String? = ""

    package init(prefix: String) { self.prefix = prefix }

    /// `reply` without `prefix` when it opens with it.
    package static func removing(_ prefix: String, from reply: String) -> String {
        reply.hasPrefix(prefix) ? String(reply.dropFirst(prefix.count)) : reply
    }

    /// The next piece of a streamed reply as it is to be shown: nil while the text so far could still be (the start
    /// of) the prefix, then that text without the prefix, then each piece as it comes.
    package mutating func next(_ piece: String) -> String? {
        guard let start = held else { return piece }
        let text = start + piece
        if text.count < prefix.count && prefix.hasPrefix(text) {
            held = text
            return nil
        }
        held = nil
        return Self.removing(prefix, from: text)
    }
}
