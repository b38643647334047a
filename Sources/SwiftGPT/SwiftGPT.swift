/// SwiftGPT as one import: the tensor core, the tokenizers, the models (`GPTModels`), training (`GPTTraining`) and
/// evaluation (`GPTEvaluation`). Each is also a module of its own; dependencies run one way, in that order.
@_exported import GPTEvaluation
@_exported import GPTModels
@_exported import GPTTraining
@_exported import TensorCore
@_exported import Tokenizers
