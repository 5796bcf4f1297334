/* cublas_dl.h — cuBLAS loaded at run time with dlopen, not linked.
 *
 * Merely mapping libcublas costs a process ~210 MiB of resident memory at
 * start (measured: an empty program linked to it), which a client or a
 * worker running on the CPU, or on a machine without a GPU, should not pay.
 * So neither binary links it: the CUDA client path (client/cuda/) and the
 * CUDA worker backend (worker/cuda/) call cuBLAS only through this table,
 * loaded the first time a device context opens. Built only when meson found
 * CUDA (common/meson.build); the types come from the toolkit's cublas_v2.h,
 * and cublas_dl.c checks each pointer's type against cuBLAS's own
 * declaration at compile time.
 *
 * Which library: libcublas.so.<the major version of the cublas_api.h this was
 * compiled against> through the ordinary search (LD_LIBRARY_PATH, the
 * binary's rpath, ld.so.cache), then that name in the toolkit's lib64 as
 * meson found it, then libcublas.so.
 *
 * Ownership: the table and the library belong to the process. The library
 * is never unloaded (no dlclose, also after a failed symbol look-up), so a
 * table pointer stays valid until exit. Handles made with create are the
 * caller's to destroy.
 *
 * Thread-safety: cublas_dl_load may be called from any thread, any number
 * of times; the first call loads (pthread_once) and every call returns the
 * same outcome: the same table, or the same error. The table is read-only
 * after that. The functions in it are cuBLAS's, with cuBLAS's own rules
 * (one handle per thread at a time, or the caller's lock).
 */
#ifndef INF_CUBLAS_DL_H
#define INF_CUBLAS_DL_H

#include <cublas_v2.h>

#include "status.h"

/* The _v2 entry points the cublas_v2.h macros name (cublasCreate is
 * cublasCreate_v2, ...), with their exact signatures. */
typedef struct {
    cublasStatus_t (*create)(cublasHandle_t *handle);
    cublasStatus_t (*destroy)(cublasHandle_t handle);
    cublasStatus_t (*set_stream)(cublasHandle_t handle, cudaStream_t stream);
    cublasStatus_t (*set_math_mode)(cublasHandle_t handle, cublasMath_t mode);
    cublasStatus_t (*sgemv)(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float *alpha,
                            const float *A, int lda, const float *x, int incx, const float *beta, float *y,
                            int incy);
    cublasStatus_t (*sgemm)(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                            const float *beta, float *C, int ldc);
    cublasStatus_t (*gemm_ex)(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                              const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                              cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                              cublasGemmAlgo_t algo);
    /* Optional: NULL when the library lacks it (use cublas_dl_status_string). */
    const char *(*get_status_string)(cublasStatus_t status);
} cublas_dl_api;

/* Loads cuBLAS once per process and sets *out to the table. On failure
 * *out = NULL and INF_E_DEVICE, with a message naming the library names
 * tried and dlerror()'s reason (none loads), or the library and the symbol
 * it lacks. */
inf_status cublas_dl_load(const cublas_dl_api **out, inf_error *err);

/* cuBLAS's text for a status (cublasGetStatusString), or "cuBLAS error"
 * when the library lacks it or failed to load. Never NULL. Runs the one-time
 * load if nothing has yet (a cuBLAS status comes from a loaded table, so in
 * practice it has). */
const char *cublas_dl_status_string(cublasStatus_t status);

#endif
