#if canImport(CDNNL)
import CDNNL
import Foundation

/// Matrix products on oneDNN's matmul primitive (Linux): fp32 and bf16 inputs, fp32 output.
///
/// A primitive is created once per product shape (creation costs milliseconds) and reused. Each calling thread keeps
/// its own primitives, memory objects and stream, and runs oneDNN on one OpenMP thread: products are split across
/// cores by `BLAS.gemm` on the project's worker pool, so that OpenMP's spinning threads never compete with it.
/// A thread keeps at most `ThreadState.capacity` primitives, the least recently used destroyed beyond that: training
/// meets a few dozen shapes, but a server meets a new one with every prompt length, and each holds compiled code.
enum OneDNN {
    /// Everything that fixes a primitive: the product's shape, strides and scaling, and its input type.
    struct Product: Hashable {
        var shape: BLAS.Shape
        var type: BLAS.ElementType
    }

    /// C = alpha · op(A) · op(B) + beta · C on the calling thread; A and B hold elements of `product.type`.
    static func multiply(_ product: Product, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>) {
        let state = ThreadState.current
        let primitive = state.primitive(for: product)
        check(dnnl_memory_set_data_handle(primitive.a, UnsafeMutableRawPointer(mutating: a)), "setting A")
        check(dnnl_memory_set_data_handle(primitive.b, UnsafeMutableRawPointer(mutating: b)), "setting B")
        check(dnnl_memory_set_data_handle(primitive.c, c), "setting C")
        primitive.arguments.withUnsafeBufferPointer { args in
            check(dnnl_primitive_execute(primitive.primitive, state.stream, Int32(args.count), args.baseAddress), "executing a matmul")
        }
    }

    /// Whether this CPU runs bf16 products natively (AVX512-BF16 or AMX): elsewhere oneDNN offers no bf16 matmul
    /// or only its slow reference code (`ref…`).
    static let supportsBFloat16: Bool = {
        let product = Product(shape: .init(transposeA: false, transposeB: false, m: 16, n: 16, k: 16, lda: 16, ldb: 16,
                                           ldc: 16, alpha: 1, beta: 0), type: .bfloat16)
        return ThreadState.current.makePrimitive(for: product).map { !$0.implementation.hasPrefix("ref") } ?? false
    }()

    /// The CPU engine every primitive and stream belongs to.
    static let engine: dnnl_engine_t = {
        var engine: dnnl_engine_t?
        check(dnnl_engine_create(&engine, dnnl_cpu, 0), "creating the CPU engine")
        // oneDNN's own cache of compiled kernels, shared by the threads, bounded like theirs.
        check(dnnl_set_primitive_cache_capacity(Int32(ThreadState.capacity)), "bounding the primitive cache")
        return engine!
    }()

    /// A created primitive with the memory objects its executions rebind.
    final class Primitive {
        let primitive: dnnl_primitive_t
        let a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t
        let arguments: [dnnl_exec_arg_t]
        /// oneDNN's name for the kernel chosen, e.g. `brg:avx512_core_bf16` (`ref…` is the slow reference code).
        let implementation: String
        /// When its thread last used it (the thread's count of products).
        var lastUse = 0

        init(primitive: dnnl_primitive_t, implementation: String, a: dnnl_memory_t, b: dnnl_memory_t, c: dnnl_memory_t) {
            self.primitive = primitive
            self.implementation = implementation
            self.a = a; self.b = b; self.c = c
            arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: a), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: b),
                         dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: c)]
        }

        deinit {
            dnnl_primitive_destroy(primitive)
            for memory in [a, b, c] { dnnl_memory_destroy(memory) }
        }
    }

    /// One thread's stream and primitives.
    final class ThreadState {
        /// The most primitives a thread keeps: a training step uses a few dozen shapes, fp32 and bf16.
        static let capacity = 96
        let stream: dnnl_stream_t
        private var primitives: [Product: Primitive] = [:]
        private var uses = 0

        /// How many primitives the calling thread keeps now.
        static var cachedCount: Int { current.primitives.count }

        private init() {
            omp_set_num_threads(1)
            var stream: dnnl_stream_t?
            check(dnnl_stream_create(&stream, OneDNN.engine, dnnl_stream_default_flags.rawValue), "creating a stream")
            self.stream = stream!
        }

        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            pthread_key_create(&key) { state in if let state { Unmanaged<ThreadState>.fromOpaque(state).release() } }
            return key
        }()

        static var current: ThreadState {
            if let existing = pthread_getspecific(key) { return Unmanaged<ThreadState>.fromOpaque(existing).takeUnretainedValue() }
            let state = ThreadState()
            pthread_setspecific(key, Unmanaged.passRetained(state).toOpaque())
            return state
        }

        func primitive(for product: Product) -> Primitive {
            uses += 1
            if let existing = primitives[product] {
                existing.lastUse = uses
                return existing
            }
            guard let made = makePrimitive(for: product) else {
                fatalError("oneDNN has no matmul for \(product) on this CPU")
            }
            if primitives.count >= Self.capacity {
                // The least recently used quarter goes, so that eviction stays rare.
                let oldest = primitives.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(Self.capacity / 4)
                for (key, _) in oldest { primitives[key] = nil }
            }
            made.lastUse = uses
            primitives[product] = made
            return made
        }

        func makePrimitive(for product: Product) -> Primitive? {
            let p = product.shape, type = product.type == .float32 ? dnnl_f32 : dnnl_bf16
            func descriptor(rows: Int, columns: Int, stride: Int, transposed: Bool, type: dnnl_data_type_t) -> dnnl_memory_desc_t {
                var desc = dnnl_memory_desc_t()
                var dims: dnnl_dims_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                var strides: dnnl_dims_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                dims.0 = Int64(rows); dims.1 = Int64(columns)
                (strides.0, strides.1) = transposed ? (1, Int64(stride)) : (Int64(stride), 1)
                // The C API takes the dims arrays by pointer: pass the whole tuples, not their first elements.
                withUnsafePointer(to: &dims) { dims in
                    withUnsafePointer(to: &strides) { strides in
                        dims.withMemoryRebound(to: Int64.self, capacity: 12) { dims in
                            strides.withMemoryRebound(to: Int64.self, capacity: 12) { strides in
                                check(dnnl_memory_desc_init_by_strides(&desc, 2, dims, type, strides), "describing a matrix")
                            }
                        }
                    }
                }
                return desc
            }
            var a = descriptor(rows: p.m, columns: p.k, stride: p.lda, transposed: p.transposeA, type: type)
            var b = descriptor(rows: p.k, columns: p.n, stride: p.ldb, transposed: p.transposeB, type: type)
            var c = descriptor(rows: p.m, columns: p.n, stride: p.ldc, transposed: false, type: dnnl_f32)
            var desc = dnnl_matmul_desc_t()
            check(dnnl_matmul_desc_init(&desc, &a, &b, nil, &c), "describing a matmul")

            var attributes: dnnl_primitive_attr_t?
            check(dnnl_primitive_attr_create(&attributes), "creating attributes")
            defer { dnnl_primitive_attr_destroy(attributes) }
            if p.alpha != 1 {
                var alpha = p.alpha
                check(dnnl_primitive_attr_set_output_scales(attributes, 1, 0, &alpha), "setting alpha")
            }
            if p.beta != 0 {
                var postOps: dnnl_post_ops_t?
                check(dnnl_post_ops_create(&postOps), "creating post-ops")
                defer { dnnl_post_ops_destroy(postOps) }
                check(dnnl_post_ops_append_sum(postOps, p.beta), "adding beta · C")
                check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "setting post-ops")
            }
            var pd: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&pd, &desc, attributes, OneDNN.engine, nil) == dnnl_success else { return nil }
            defer { dnnl_primitive_desc_destroy(pd) }
            var primitive: dnnl_primitive_t?
            check(dnnl_primitive_create(&primitive, pd), "creating a matmul")
            func memory(_ desc: inout dnnl_memory_desc_t) -> dnnl_memory_t {
                var memory: dnnl_memory_t?
                check(dnnl_memory_create(&memory, &desc, OneDNN.engine, nil), "creating a memory object")
                return memory!
            }
            var name: UnsafePointer<CChar>?
            check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name), "querying the implementation")
            return Primitive(primitive: primitive!, implementation: name.map { String(cString: $0) } ?? "",
                             a: memory(&a), b: memory(&b), c: memory(&c))
        }
    }

    static func check(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
        if status != dnnl_success { fatalError("oneDNN failed \(what()): status \(status.rawValue)") }
    }
}
#endif
