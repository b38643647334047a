/// A failure caused by the command's input (not its flags), printed as `Error: <message>` without the usage text.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
