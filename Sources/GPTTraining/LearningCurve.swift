import Foundation

/// Charts of a training run against the step, as self-contained SVG: one or more panels stacked under a title, each
/// with its own y-axis (quantities of different units never share one), its title, and its legend above the plot
/// area (never over the data). A series without points is left out, and so is a panel without any.
package enum LearningCurve {
    /// One line of a panel.
    package struct Series {
        package var label: String
        package var points: [(step: Int, value: Double)]
        /// Draw a dot at each point (for figures measured now and then, such as evaluations).
        package var dots: Bool

        package init(_ label: String, _ points: [(step: Int, value: Double)], dots: Bool = false) {
            self.label = label
            self.points = points.filter { $0.value.isFinite }
            self.dots = dots
        }
    }

    /// One chart: a title saying what its y-axis measures, and its lines.
    package struct Panel {
        package var title: String
        package var series: [Series]

        package init(_ title: String, _ series: [Series]) {
            self.title = title
            self.series = series.filter { !$0.points.isEmpty }
        }
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    package static func svg(title: String, panels: [Panel]) -> String {
        let panels = panels.filter { !$0.series.isEmpty }
        let width = 720.0, left = 70.0, right = 20.0, header = 40.0, panelHeight = 240.0
        let plotTop = 44.0, plotBottom = 34.0  // within a panel: its title and legend above, step labels below
        let height = header + panelHeight * Double(max(panels.count, 1)) + 24
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="24" text-anchor="middle" font-size="15">\(escaped(title))</text>

        """
        let stepTicks = niceTicks(0, Double(max(1, panels.flatMap { $0.series.flatMap { $0.points.map(\.step) } }.max() ?? 1)))
        let maxStep = stepTicks.last!
        func x(_ step: Int) -> Double { left + (width - left - right) * Double(step) / maxStep }
        for (index, panel) in panels.enumerated() {
            let originY = header + panelHeight * Double(index)
            let top = originY + plotTop, bottom = originY + panelHeight - plotBottom
            let values = panel.series.flatMap { $0.points.map(\.value) }
            let ticks = niceTicks(values.min()!, values.max()!)
            let (lo, hi) = (ticks.first!, ticks.last!)
            func y(_ value: Double) -> Double { bottom - (bottom - top) * (value - lo) / (hi - lo) }
            svg += "<text x=\"\(left)\" y=\"\(originY + 16)\" font-size=\"13\" font-weight=\"bold\">\(escaped(panel.title))</text>\n"
            // The legend, on a line of its own between the panel's title and its plot area.
            var legendX = left
            for (k, series) in panel.series.enumerated() {
                let color = colors[k % colors.count]
                svg += "<line x1=\"\(legendX)\" y1=\"\(originY + 30)\" x2=\"\(legendX + 18)\" y2=\"\(originY + 30)\" stroke=\"\(color)\" stroke-width=\"2\"/>"
                svg += "<text x=\"\(legendX + 24)\" y=\"\(originY + 34)\">\(escaped(series.label))</text>\n"
                legendX += 24 + 6.5 * Double(series.label.count) + 20
            }
            svg += "<line x1=\"\(left)\" y1=\"\(bottom)\" x2=\"\(width - right)\" y2=\"\(bottom)\" stroke=\"black\"/>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(bottom)\" stroke=\"black\"/>\n"
            for value in ticks {
                svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>", left, y(value), width - right, y(value))
                svg += String(format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">", left - 6, y(value) + 4) + label(value, step: ticks[1] - ticks[0]) + "</text>\n"
            }
            for step in stepTicks.map({ Int($0) }) {
                svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x(step), bottom + 16, step)
            }
            for (k, series) in panel.series.enumerated() {
                let color = colors[k % colors.count]
                let coordinates = series.points.map { String(format: "%.1f,%.1f", x($0.step), y($0.value)) }.joined(separator: " ")
                svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(coordinates)\"/>\n"
                if series.dots || series.points.count == 1 {
                    for point in series.points {
                        svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"", x(point.step), y(point.value)) + color + "\"/>\n"
                    }
                }
            }
        }
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 8)\" text-anchor=\"middle\">step</text>\n</svg>\n"
        return svg
    }

    /// Round tick values (1, 2 or 5 times a power of ten apart, four to eight of them) from at or below `lo` to at
    /// or above `hi`.
    static func niceTicks(_ lo: Double, _ hi: Double) -> [Double] {
        var (lo, hi) = (lo, hi)
        if hi - lo < 1e-9 * max(1, abs(hi)) { (lo, hi) = (lo - max(abs(lo) * 0.1, 1e-3), hi + max(abs(hi) * 0.1, 1e-3)) }
        let rough = (hi - lo) / 4, power = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= rough }!
        let first = floor(lo / step), last = ceil(hi / step)
        return (0...Int(last - first)).map { (first + Double($0)) * step }
    }

    /// A tick label with as many decimals as the ticks' spacing needs.
    static func label(_ value: Double, step: Double) -> String {
        let decimals = max(0, min(8, -Int(floor(log10(step) + 1e-9))))
        return String(format: "%.\(decimals)f", abs(value) < step * 1e-6 ? 0 : value)
    }

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// The points of `key` in metrics records that have it (and, when given, `requiring` too).
    package static func series(_ records: [[String: Any]], _ key: String, requiring: String? = nil) -> [(step: Int, value: Double)] {
        records.compactMap { record in
            guard let value = record[key] as? Double, let step = record["step"] as? Int else { return nil }
            if let requiring, record[requiring] == nil { return nil }
            return (step, value)
        }
    }
}
