import Foundation

/// A loss-against-step chart as a self-contained SVG: training loss (as logged) and validation loss (at evals), or
/// any two series so named.
public enum LearningCurve {
    public static func svg(train: [(step: Int, loss: Float)], validation: [(step: Int, loss: Float)], title: String,
                           trainLabel: String = "train loss", validationLabel: String = "val loss") -> String {
        let all = train + validation
        guard let maxStep = all.map(\.step).max(), let lo = all.map(\.loss).min(), let hi = all.map(\.loss).max() else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"400\"></svg>\n"
        }
        let width = 640.0, height = 400.0, left = 60.0, right = 20.0, top = 40.0, bottom = 50.0
        let span = max(Double(hi - lo), 1e-6)
        func x(_ step: Int) -> Double { left + (width - left - right) * Double(step) / Double(max(maxStep, 1)) }
        func y(_ loss: Float) -> Double { top + (height - top - bottom) * (1 - (Double(loss) - Double(lo)) / span) }
        func polyline(_ points: [(step: Int, loss: Float)], _ color: String) -> String {
            let coordinates = points.map { String(format: "%.1f,%.1f", x($0.step), y($0.loss)) }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(coordinates)\"/>"
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="22" text-anchor="middle" font-size="14">\(title.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;"))</text>
        <line x1="\(left)" y1="\(height - bottom)" x2="\(width - right)" y2="\(height - bottom)" stroke="black"/>
        <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(height - bottom)" stroke="black"/>

        """
        for k in 0...4 {
            let loss = lo + (hi - lo) * Float(k) / 4
            svg += String(format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", left - 6, y(loss) + 4, loss)
            let step = maxStep * k / 4
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x(step), height - bottom + 18, step)
        }
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">step</text>\n"
        svg += polyline(train, "#1f77b4") + "\n" + polyline(validation, "#d62728") + "\n"
        for point in validation {
            svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", x(point.step), y(point.loss))
        }
        svg += "<text x=\"\(width - right - 110)\" y=\"\(top + 4)\" fill=\"#1f77b4\">\(trainLabel)</text>\n"
        svg += "<text x=\"\(width - right - 110)\" y=\"\(top + 20)\" fill=\"#d62728\">\(validationLabel)</text>\n</svg>\n"
        return svg
    }
}
