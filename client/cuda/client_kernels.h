/* client_kernels.h — launchers of the client's CUDA kernels (client_kernels.cu),
 * callable from C. Each enqueues on `s` and returns cudaGetLastError() of
 * its launch (a launch configuration error); execution errors surface at
 * the next synchronizing call. Layouts: row-major, rows of `cols` elements,
 * device pointers from cudaMalloc (256-byte aligned).
 * The arithmetic contract (what is bit-identical to the CPU) is in
 * client_cuda.h.
 */
#ifndef INF_CLIENT_KERNELS_H
#define INF_CLIENT_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of tables and heads (values of ck_dtype). */
enum { CK_F32 = 0, CK_F16 = 1, CK_BF16 = 2, CK_I8 = 3 };

/* out[i, :] = f32(tab[ids[i], :]) for i < n. ids are already checked. */
cudaError_t ck_embed(const void *tab, int dt, const int32_t *ids, int n, int cols, float *out, cudaStream_t s);

/* One block: xn = x * (float)(1 / sqrt(ss / cols + eps)) * g (g NULL: no
 * gain), ss = sum of r[i]^2 (r NULL: x; a folded tied head passes x = G h and
 * r = h) summed in double in index order (as inf_rmsnorm). With xq != NULL
 * also the int16 copy and its scale *sx exactly as gemv_input_make. */
cudaError_t ck_final_norm(const float *x, const float *r, const float *g, int cols, float eps, float *xn, int16_t *xq,
                          double *sx, cudaStream_t s);

/* y[r] = W[r, :] . xn for r < rows, f32 accumulation (F32/F16/BF16). */
cudaError_t ck_gemv(const void *W, int dt, const float *xn, int64_t rows, int cols, float *y, cudaStream_t s);
/* y[r] = (float)((double)sum_j q[r,j] xq[j] * scale[r] * *sx), the sum exact. */
cudaError_t ck_gemv_i8(const int8_t *W, const float *scale, const int16_t *xq, const double *sx, int64_t rows,
                       int cols, float *y, cudaStream_t s);

/* logits[ids[i]] penalized for i < n (ids distinct): v > 0 ? v / p : v * p. */
cudaError_t ck_penalty(float *logits, const int32_t *ids, int n, float p, cudaStream_t s);

/* *key = max over i of an order key of (logits[i], -i); *key must be 0 on
 * entry. The winner's id is 0xFFFFFFFF - (uint32_t)*key (the low word). */
cudaError_t ck_argmax(const float *logits, int64_t n, unsigned long long *key, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
