/* cuda_check.h — every CUDA runtime and cuBLAS status becomes an inf_status
 * plus a message naming the call (the text of the call expression).
 *
 *   if ((st = CU(cudaMalloc(&p, n)))) goto fail;      (needs `inf_error *err` in scope)
 *
 * cudaErrorMemoryAllocation / CUBLAS_STATUS_ALLOC_FAILED -> INF_E_NOMEM (a
 * request too large for the card; the worker is fine); everything else ->
 * INF_E_DEVICE (the GPU, driver or our launch failed: the RunPod loop
 * replaces the worker, see worker/runpod.h).
 */
#ifndef INF_CUDA_CHECK_H
#define INF_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cublas_dl.h"
#include "status.h"

static inline inf_status cu_check(cudaError_t e, const char *call, inf_error *err) {
    if (e == cudaSuccess) return INF_OK;
    inf_status st = e == cudaErrorMemoryAllocation ? INF_E_NOMEM : INF_E_DEVICE;
    return inf_fail(err, st, "cuda: %s failed: %s (%s)", call, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* cuBLAS is loaded with dlopen, never linked (common/cublas_dl.h): its
 * status text comes through the loader, so this header links no cuBLAS
 * symbol. */
static inline inf_status cb_check(cublasStatus_t e, const char *call, inf_error *err) {
    if (e == CUBLAS_STATUS_SUCCESS) return INF_OK;
    inf_status st = e == CUBLAS_STATUS_ALLOC_FAILED ? INF_E_NOMEM : INF_E_DEVICE;
    return inf_fail(err, st, "cublas: %s failed: %s (%d)", call, cublas_dl_status_string(e), (int)e);
}

#define CU(call) cu_check((call), #call, err)
#define CB(call) cb_check((call), #call, err)

#endif
