import Foundation

/// Numbers of a document read by `JSONSerialization`, taken strictly: a field that must be an integer is refused
/// when it is a fraction (`64.0`, `1e30`), a boolean or beyond `Int`'s range, rather than rounded or trapped on.
package enum JSONNumber {
    /// The value as an integer, when it is a JSON integer that fits `Int`.
    package static func integer(_ value: Any?) -> Int? {
        guard let number = value as? NSNumber, !["c", "B", "d", "f"].contains(String(cString: number.objCType)) else { return nil }
        return value as? Int
    }

    /// The value as a finite number (integer or not); nil for a boolean, a string, or anything else.
    package static func finite(_ value: Any?) -> Double? {
        guard let number = value as? NSNumber, !["c", "B"].contains(String(cString: number.objCType)) else { return nil }
        let x = number.doubleValue
        return x.isFinite ? x : nil
    }
}
