import Foundation

/// A duration as a clock shows it: `M:SS`, or `H:MM:SS` from an hour on (progress lines' time left).
package func durationText(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}
