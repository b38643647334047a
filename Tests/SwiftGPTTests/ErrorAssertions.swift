import Foundation
import GPTEvaluation
import GPTUtilities
import SwiftGPT
import XCTest

/// The library's errors, each of which carries the kind of problem as a `reason`, which the tests match.
protocol ReasonedError: Error {
    associatedtype Reason: Equatable
    var reason: Reason { get }
}

extension FileError: ReasonedError {}
extension DomainError: ReasonedError {}

/// Asserts that `expression` throws an `E` of `reason`, and returns it for further checks.
@discardableResult
func assertThrows<E: ReasonedError, T>(_ errorType: E.Type, _ reason: E.Reason, _ expression: @autoclosure () throws -> T,
                                       file: StaticString = #filePath, line: UInt = #line) -> E? {
    do {
        _ = try expression()
        XCTFail("no error thrown; expected \(E.self) \(reason)", file: file, line: line)
    } catch let error as E {
        XCTAssertEqual(error.reason, reason, "\(error)", file: file, line: line)
        return error
    } catch {
        XCTFail("\(type(of: error)) '\(error)' thrown; expected \(E.self) \(reason)", file: file, line: line)
    }
    return nil
}

/// Asserts that `expression` throws a `FileError` of `reason` about the file named `name`.
@discardableResult
func assertFileError<T>(_ reason: FileError.Reason, _ name: String, _ expression: @autoclosure () throws -> T,
                        file: StaticString = #filePath, line: UInt = #line) -> FileError? {
    let error = assertThrows(FileError.self, reason, try expression(), file: file, line: line)
    if let error { XCTAssertEqual(error.url.lastPathComponent, name, "\(error)", file: file, line: line) }
    return error
}
