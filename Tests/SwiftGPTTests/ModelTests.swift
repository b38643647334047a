import Foundation
import SwiftGPT
import TensorCore
import XCTest

/// Model construction, initialisation, end-to-end gradients and the optimizer.
final class ModelTests: XCTestCase {
    func testPresetsAreValidAndSized() throws {
        for (name, config) in GPTConfig.presets { XCTAssertNoThrow(try config.validate(), name) }
        let gpt2 = try GPTConfig.preset("gpt2")
        let count = GPTModel.parameterShapes(gpt2).reduce(0) { $0 + $1.shape.reduce(1, *) }
        XCTAssertEqual(count, 124_439_808)  // GPT-2 small as published by Hugging Face
        XCTAssertEqual(gpt2.parameterCount, count)
        // As Pythia's model cards give them, and GPT-J 6B's and SantaCoder's transformers checkpoints hold.
        XCTAssertEqual(try GPTConfig.preset("pythia-70m").parameterCount, 70_426_624)
        XCTAssertEqual(try GPTConfig.preset("pythia-160m").parameterCount, 162_322_944)
        XCTAssertEqual(try GPTConfig.preset("gpt-j-6b").parameterCount, 6_050_882_784)
        XCTAssertEqual(try GPTConfig.preset("santacoder").parameterCount, 1_124_886_528)
        // GPT-3 175B needs 1.4 TB for its parameters and gradients: refused before anything is allocated.
        assertThrows(ConfigurationError.self, .insufficientMemory, try GPTModel(config: try GPTConfig.preset("gpt3-175b")))
        assertThrows(ConfigurationError.self, .invalidSetting("preset"), try GPTConfig.preset("gpt5"))
        XCTAssertThrowsError(try GPTModel(config: GPTConfig(vocabularySize: 5, contextLength: 4, layerCount: 1, headCount: 3, embeddingWidth: 8)))
    }

    func testGPT2InitialisationScalesResidualProjections() throws {
        let config = GPTConfig(vocabularySize: 50, contextLength: 32, layerCount: 8, headCount: 4, embeddingWidth: 64)
        let model = try GPTModel(config: config, seed: 1)
        func std(_ name: String) -> Float {
            let v = model.parameters[name].value.scalars
            let mean = v.reduce(0, +) / Float(v.count)
            return (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(v.count)).squareRoot()
        }
        XCTAssertEqual(std("h.0.mlp.c_fc.weight"), 0.02, accuracy: 0.001)
        XCTAssertEqual(std("h.0.mlp.c_proj.weight"), 0.02 / 4, accuracy: 0.0005)
        XCTAssertEqual(std("h.3.attn.c_proj.weight"), 0.02 / 4, accuracy: 0.0005)
        XCTAssertEqual(model.parameters["h.0.ln_1.weight"].value.scalars, [Float](repeating: 1, count: 64))
        XCTAssertEqual(model.parameters["h.0.attn.c_attn.bias"].value.scalars, [Float](repeating: 0, count: 192))
        let again = try GPTModel(config: config, seed: 1)
        XCTAssertEqual(again.parameters.values.scalars, model.parameters.values.scalars, "same seed, same weights")
    }

    /// The whole model's loss gradient against finite differences, for both layouts, sinusoidal positions and the
    /// GPT-NeoX, GPT-J and GPTBigCode blocks.
    func testEndToEndGradientsMatchFiniteDifferences() throws {
        for config in [tinyConfig(), tinyConfig(layout: .postNorm), tinyConfig(positions: .sinusoidal, tied: false)] + tinyFamilyConfigs() {
            let model = try GPTModel(config: config, seed: 7)
            var random = SeededRandom(seed: 1)
            for name in model.parameters.names { random.fillNormal(model.parameters[name].value.buffer, mean: 0, std: 0.3) }
            let ids: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
            func loss() -> Double {
                let tape = Tape(recording: false)
                let logits = model.logits(model.hidden(ids: ids, batch: 2, tape: tape).final, tape: tape)
                return Double(model.languageModelLoss(logits, ids: ids, batch: 2, tape: tape).value[flat: 0])
            }
            let tape = Tape()
            let logits = model.logits(model.hidden(ids: ids, batch: 2, tape: tape).final, tape: tape)
            tape.backward(from: model.languageModelLoss(logits, ids: ids, batch: 2, tape: tape))
            let values = model.parameters.values, grads = model.parameters.gradients
            for _ in 0..<60 {
                let i = random.nextInt(below: values.count)
                let saved = values[flat: i], h: Float = 1e-2
                values[flat: i] = saved + h
                let plus = loss()
                values[flat: i] = saved - h
                let minus = loss()
                values[flat: i] = saved
                let numeric = Float((plus - minus) / Double(2 * h))
                XCTAssertEqual(grads[flat: i], numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "\(config.layout) element \(i)")
            }
        }
    }

    /// Running padded rows without their padding gives the padded run's states at the real tokens, and the same
    /// parameter gradients for a loss on those tokens, for both layouts, sinusoidal positions and a local layer.
    func testHiddenWithoutPaddingMatchesPaddedRows() throws {
        for config in [tinyConfig(), tinyConfig(layout: .postNorm), tinyConfig(positions: .sinusoidal, tied: false), tinyNeoConfig()]
            + tinyFamilyConfigs() {
            let model = try GPTModel(config: config, seed: 7)
            let lengths = [5, 2, 7], length = 7, pad: Int32 = 22
            var ids = [Int32](repeating: pad, count: lengths.count * length)
            for (r, n) in lengths.enumerated() { for t in 0..<n { ids[r * length + t] = Int32((r * 5 + t * 3) % 20) } }
            let real = GPTModel.realPositions(lengths: lengths, length: length)
            XCTAssertEqual(real, [0, 1, 2, 3, 4, 7, 8, 14, 15, 16, 17, 18, 19, 20])
            func run(withoutPadding: Bool) -> (states: [Float], gradients: [Float]) {
                model.parameters.zeroGradients()
                let tape = Tape()
                let final = model.hidden(ids: ids, batch: lengths.count, tape: tape, lengths: lengths, withoutPadding: withoutPadding).final
                let states = withoutPadding ? final : tape.gatherRows(tape.reshape(final, [ids.count, config.embeddingWidth]), real)
                let targets = real.map { ids[$0] }.map { ($0 + 1) % 23 }
                tape.backward(from: tape.crossEntropy(model.logits(states, tape: tape), targets: targets))
                return (states.value.scalars, model.parameters.gradients.scalars)
            }
            let padded = run(withoutPadding: false), packed = run(withoutPadding: true)
            XCTAssertEqual(packed.states.count, real.count * config.embeddingWidth)
            for (a, b) in zip(packed.states, padded.states) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(config.layout) states") }
            for (a, b) in zip(packed.gradients, padded.gradients) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(config.layout) gradients") }
        }
    }

    func testAdamWMatchesTheTorchFormulaOverSteps() throws {
        let parameters = ParameterSet([("w", [2, 2]), ("b", [2])])
        parameters.values.assign(Tensor(shape: [6], values: [0.5, -0.25, 1, 2, 0.1, -0.1]))
        let optimizer = AdamW(parameters: parameters, settings: .init(beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1))
        var p = parameters.values.scalars.map(Double.init), m = [Double](repeating: 0, count: 6), v = m
        for step in 1...3 {
            let g = (0..<6).map { Float($0 + step) * 0.1 - 0.3 }
            parameters.gradients.assign(Tensor(shape: [6], values: g))
            optimizer.step(learningRate: 0.01)
            for i in 0..<6 {
                if i < 4 { p[i] *= 1 - 0.01 * 0.1 }  // decay on the matrix only
                m[i] = 0.9 * m[i] + 0.1 * Double(g[i])
                v[i] = 0.95 * v[i] + 0.05 * Double(g[i]) * Double(g[i])
                let mHat = m[i] / (1 - pow(0.9, Double(step))), vHat = v[i] / (1 - pow(0.95, Double(step)))
                p[i] -= 0.01 * mHat / (vHat.squareRoot() + 1e-8)
                XCTAssertEqual(Double(parameters.values[flat: i]), p[i], accuracy: 1e-6, "step \(step) element \(i)")
            }
        }
    }

    func testGradientClippingBoundsTheGlobalNorm() {
        let parameters = ParameterSet([("a", [3]), ("b", [1])])
        parameters.gradients.assign(Tensor(shape: [4], values: [3, 4, 0, 12]))
        let clipped = parameters.gradientClipping(maximum: 1)
        XCTAssertEqual(clipped.norm, 13, accuracy: 1e-5)
        XCTAssertEqual(clipped.scale, 1 / (13 + 1e-6), accuracy: 1e-9)
        XCTAssertEqual(parameters.gradientClipping(maximum: 20).scale, 1, "below the bound nothing changes")
        parameters.gradients.assign(Tensor(shape: [4], values: [3, .nan, 0, 12]))
        XCTAssertEqual(parameters.gradientClipping(maximum: 1).scale, 1, "a non-finite norm is reported, not applied")
    }

    /// AdamW with a gradient scale equals the scalar formula applied to scaled gradients, bit for bit, over an
    /// arena large enough for the streaming-store path, with parameter boundaries off the 16-element grid.
    func testAdamWWithGradientScaleMatchesTheScalarFormulaExactly() {
        let parameters = ParameterSet([("w", [1031, 2053]), ("b", [7]), ("e", [1 << 21, 1])])
        let n = parameters.count, decayed = 1031 * 2053, bias = decayed..<(decayed + 7)
        XCTAssertGreaterThanOrEqual(n, 1 << 22)
        var random = SeededRandom(seed: 3)
        random.fillNormal(UnsafeMutableBufferPointer(start: parameters.values.pointer, count: n), mean: 0, std: 1)
        var p = parameters.values.scalars, m = [Float](repeating: 0, count: n), v = m
        let optimizer = AdamW(parameters: parameters, settings: .init(beta1: 0.9, beta2: 0.95, weightDecay: 0.1))
        let lr: Float = 0.01, scale: Float = 0.37
        for step in 1...2 {
            random.fillNormal(UnsafeMutableBufferPointer(start: parameters.gradients.pointer, count: n), mean: 0, std: 1)
            let g = parameters.gradients.scalars
            optimizer.step(learningRate: lr, gradientScale: scale)
            let stepSize = Float(Double(lr) / (1 - pow(Double(Float(0.9)), Double(step))))
            let root2 = Float((1 - pow(Double(Float(0.95)), Double(step))).squareRoot())
            for i in 0..<n {
                let grad = g[i] * scale
                m[i] += (1 - 0.9) * (grad - m[i])
                v[i] = 0.95 * v[i] + (1 - 0.95) * grad * grad
                p[i] = p[i] * (bias.contains(i) ? 1 : 1 - lr * 0.1) - stepSize * m[i] / (v[i].squareRoot() / root2 + 1e-8)
            }
        }
        XCTAssertTrue(parameters.values.scalars == p, "parameters")
        XCTAssertTrue(optimizer.firstMoment.scalars == m && optimizer.secondMoment.scalars == v, "moments")
        XCTAssertTrue(parameters.gradients.scalars.allSatisfy(\.isFinite), "gradients are left unscaled, not consumed")
    }

    func testDropoutIsSeededAndOffAtInference() throws {
        var config = tinyConfig()
        config.dropout = 0.5
        let model = try GPTModel(config: config, seed: 2)
        let ids: [Int32] = [1, 2, 3, 4]
        func train(seed: UInt64) -> [Float] {
            var random = SeededRandom(seed: seed)
            let tape = Tape()
            return model.hidden(ids: ids, batch: 1, tape: tape, random: &random).final.value.scalars
        }
        XCTAssertEqual(train(seed: 5), train(seed: 5))
        XCTAssertNotEqual(train(seed: 5), train(seed: 6))
        let eval = model.hidden(ids: ids, batch: 1, tape: Tape(recording: false)).final.value.scalars
        XCTAssertNotEqual(eval, train(seed: 5))
    }
}
