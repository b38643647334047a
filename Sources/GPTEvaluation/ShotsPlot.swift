import Foundation

/// A chart of a metric against the number of demonstrations, one line per task, as a self-contained SVG.
package enum ShotsPlot {
    package static func svg(_ results: [EvaluationResult], metric: String, title: String) -> String {
        let chosen = results.filter { $0.metric == metric && $0.value.isFinite }
        let tasks = chosen.reduce(into: [String]()) { if !$0.contains($1.task) { $0.append($1.task) } }
        let shots = Array(Set(chosen.map(\.shots))).sorted()
        let width = 640.0, height = 400.0, left = 60.0, right = 140.0, top = 40.0, bottom = 50.0
        let high = max(1, chosen.map(\.value).max() ?? 1)
        func x(_ shot: Int) -> Double {
            let index = Double(shots.firstIndex(of: shot) ?? 0)
            return left + (width - left - right) * (shots.count > 1 ? index / Double(shots.count - 1) : 0.5)
        }
        func y(_ value: Double) -> Double { top + (height - top - bottom) * (1 - value / high) }
        func escaped(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\((width - right + left) / 2)" y="22" text-anchor="middle" font-size="14">\(escaped(title))</text>
        <line x1="\(left)" y1="\(height - bottom)" x2="\(width - right)" y2="\(height - bottom)" stroke="black"/>
        <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(height - bottom)" stroke="black"/>
        <text x="\((width - right + left) / 2)" y="\(height - 10)" text-anchor="middle">shots</text>
        <text x="16" y="\((height - bottom + top) / 2)" text-anchor="middle" transform="rotate(-90 16 \((height - bottom + top) / 2))">\(escaped(metric))</text>

        """
        for k in 0...4 {
            let value = high * Double(k) / 4
            svg += String(format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", left - 6, y(value) + 4, value)
            svg += String(format: "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y(value), width - right, y(value))
        }
        for shot in shots {
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x(shot), height - bottom + 18, shot)
        }
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        for (index, task) in tasks.enumerated() {
            let color = colors[index % colors.count]
            let points = chosen.filter { $0.task == task }.sorted { $0.shots < $1.shots }
            let coordinates = points.map { String(format: "%.1f,%.1f", x($0.shots), y($0.value)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(coordinates)\"/>\n"
            for point in points {
                svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" ", x(point.shots), y(point.value)) + "fill=\"\(color)\"/>\n"
                if let error = point.standardError {
                    svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" ",
                                  x(point.shots), y(min(high, point.value + error)), x(point.shots), y(max(0, point.value - error)))
                        + "stroke=\"\(color)\"/>\n"
                }
            }
            svg += "<text x=\"\(width - right + 12)\" y=\"\(top + 16 * Double(index) + 4)\" fill=\"\(color)\">\(escaped(task))</text>\n"
        }
        return svg + "</svg>\n"
    }
}
