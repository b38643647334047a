import Foundation
import GPTModels
import Hummingbird

/// An error answered the way OpenAI's API answers it: a status code and
/// `{"error": {"message", "type", "param", "code"}}`.
package struct APIError: Error, CustomStringConvertible, HTTPResponseError {
    package let status: HTTPResponse.Status
    package let message: String
    package let type: String
    package let param: String?
    package let code: String?
    /// Seconds a client should wait before retrying (429).
    package var retryAfter: Int?

    package init(status: HTTPResponse.Status, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    package var description: String { message }

    static func invalidRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    static func modelNotFound(_ name: String) -> APIError {
        APIError(status: .notFound, message: "The model '\(name)' does not exist", type: "invalid_request_error",
                 param: "model", code: "model_not_found")
    }

    static let unauthorized = APIError(status: .unauthorized, message: "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'",
                                       type: "invalid_request_error", code: "invalid_api_key")

    static func notFound(_ path: String) -> APIError {
        APIError(status: .notFound, message: "no route for \(path)", type: "invalid_request_error", code: "not_found")
    }

    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(status: .contentTooLarge, message: "the request body is larger than \(limit) bytes", type: "invalid_request_error",
                 code: "request_too_large")
    }

    static func unsupportedMediaType(_ type: String) -> APIError {
        APIError(status: .unsupportedMediaType,
                 message: "the request body must be JSON, sent with 'Content-Type: application/json' (this one is '\(type)'; with curl: -H 'Content-Type: application/json')",
                 type: "invalid_request_error", code: "unsupported_media_type")
    }

    static func shuttingDown() -> APIError {
        APIError(status: .serviceUnavailable, message: "the server is shutting down", type: "server_error", code: "shutting_down")
    }

    /// The answer to a request that generation refused or ended.
    init(_ error: GenerationError) {
        switch error.reason {
        case .queueFull:
            self = APIError(status: .tooManyRequests, message: "the server is busy: \(error.message)", type: "rate_limit_error", code: "queue_full")
            retryAfter = 1
        case .timedOut: self = APIError(status: .requestTimeout, message: error.message, type: "timeout_error", code: "timeout")
        case .stopping: self = .shuttingDown()
        case .failed: self = .internalError(error.message)
        case .invalidArgument, .emptyInput, .exceedsContext, .idOutsideVocabulary, .overCapacity: self = .invalidRequest(error.message)
        }
    }

    static func internalError(_ message: String) -> APIError {
        APIError(status: .internalServerError, message: message, type: "server_error")
    }

    /// The error object (`{"error": {…}}`).
    var body: JSONValue {
        ["error": ["message": .string(message), "type": .string(type), "param": JSONValue(param), "code": JSONValue(code)]]
    }

    package func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.serialized)))
    }
}
