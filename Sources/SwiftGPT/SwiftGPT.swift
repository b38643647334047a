/// SwiftGPT as one import: the utilities (`GPTUtilities`), the tensor core, the tokenizers, the models (`GPTModels`), training (`GPTTraining`),
/// evaluation (`GPTEvaluation`) and the HTTP server (`GPTServer`). Each is also a module of its own; dependencies run
/// one way, in that order.
@_exported import GPTEvaluation
@_exported import GPTServer
@_exported import GPTUtilities
@_exported import GPTModels
@_exported import GPTTraining
@_exported import TensorCore
@_exported import Tokenizers
