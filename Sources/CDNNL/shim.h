// oneDNN (Debian's libdnnl-dev), the matrix-product engine on Linux, and the one OpenMP call it needs: oneDNN
// runs its kernels on OpenMP, and SwiftGPT keeps every thread that calls it to one OpenMP thread (the products are
// split across cores by SwiftGPT's own worker pool).
#include <oneapi/dnnl/dnnl.h>

extern void omp_set_num_threads(int threads);
