/* kernels.h — the CUDA kernels of the forward pass, as C launchers
 * (worker/cuda/kernels.cu). Every launcher enqueues on stream s and returns
 * cudaGetLastError() after the launch, so the caller can name the launcher
 * in its error message. Nothing here allocates or synchronizes.
 *
 * Layouts (row-major, f32 unless said otherwise):
 *  - weights: [N, K] ("out, in"), kinds KW_*:
 *      KW_F32 / KW_F16 / KW_BF16: plain;
 *      KW_Q4: data u8 [N][K/2] (element 2i in the low nibble, as the
 *             bundle stores it) and sz u32 [N][K/group] = f16 scale bits |
 *             zero << 16, so one 4-byte load gives a group's scale and
 *             zero; w = (q - zero) * scale.
 *    Fused matrices: QKV = [Wq; Wk; Wv] (N = qd + 2 kvd); gate/up
 *    interleaved by row (row 2r = gate r, row 2r+1 = up r, N = 2 ffn) so a
 *    warp that computes rows 2r and 2r+1 can apply SwiGLU itself.
 *  - GEMM inputs ("act", kinds KA_*): [nsplit * n, K] of float / half /
 *    bfloat16. With nsplit 2 the 16-bit kinds carry x = hi + lo: rows
 *    [0, n) hold hi = round(x), rows [n, 2n) lo = round(x - hi); one GEMM
 *    over 2n rows gives both products, and the consumer adds them.
 *  - GEMM outputs y: [nsplit * n, N] f32; consumers sum the nsplit halves.
 *  - KV: kvtab[2l] / kvtab[2l+1] point at layer l's K / V rows
 *    [position][n_kv_heads * head_dim] f32 (device memory; the table itself
 *    is in device memory so a captured graph serves any session).
 *  - Positions: kernels read the base position from *d_pos (device) and add
 *    pos_add + row, so one captured decode graph serves every step.
 */
#ifndef INF_CUDA_KERNELS_H
#define INF_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { KW_F32 = 0, KW_F16 = 1, KW_BF16 = 2, KW_Q4 = 3 };
enum { KA_F32 = 0, KA_F16 = 1, KA_BF16 = 2 };
enum { KE_STORE = 0, KE_ADD = 1, KE_SWIGLU = 2 };

/* Most query heads per KV head the attention kernels take. */
#define KL_MAX_GQA 8
/* Most splits of the decode attention. */
#define KL_MAX_SPLITS 64

/* Before the first launch for a model of head size hd: raises the dynamic
 * shared-memory limit of its prefill attention kernels (74 KiB at hd 128,
 * 148 KiB at 256). */
cudaError_t kl_init(int hd);

/* Decode matrix-vector product, one token: y (N) = W (N x K) . xin (K),
 * f32 activations and accumulation, 16-byte weight loads, INT4 dequantized
 * in registers. norm != 0: xin is first RMS-normalized (eps) and multiplied
 * by gain (NULL: none), as rmsnorm(x) * g. epi: KE_STORE y = v, KE_ADD
 * y += v (residual), KE_SWIGLU y[r] = silu(v[2r]) * v[2r+1] (N even). */
cudaError_t kl_gemv(int wkind, const void *w, const uint32_t *sz, int group, const float *x,
                    const float *gain, int norm, float eps, int N, int K, float *y, int epi,
                    cudaStream_t s);

/* out (act, nsplit) = rmsnorm(x[n, D]) * gain (gain NULL: none). */
cudaError_t kl_rmsnorm_in(const float *x, const float *gain, float eps, int n, int D, int akind,
                          int nsplit, void *out, cudaStream_t s);

/* x[n, N] += sum of the nsplit halves of y. */
cudaError_t kl_add_rows(float *x, const float *y, int n, int N, int nsplit, cudaStream_t s);

/* out (act, nsplit_out) [n, F] = silu(g) * u with g, u the interleaved rows
 * of y [nsplit_in * n, 2F] summed over halves. */
cudaError_t kl_swiglu_in(const float *y, int n, int F, int nsplit_in, int akind, int nsplit_out,
                         void *out, cudaStream_t s);

/* From y = [nsplit * n, qd + 2 kvd] (q | k | v, halves summed): q rows
 * rotated into q [n, qd]; k rotated and v written to the cache rows of
 * positions *d_pos + pos_add + i. RoPE in double like the CPU reference. */
cudaError_t kl_rope_kv(const float *y, int n, int nsplit, const int *d_pos, int pos_add,
                       const float *inv_freq, int interleaved, int nh, int nkv, int hd,
                       float *const *kvtab, int layer, float *q, cudaStream_t s);

/* One query token at position *d_pos (context *d_pos + 1): split-K
 * ("flash-decoding") attention, GQA-aware, then the combine. out: [nh*hd]. */
cudaError_t kl_attn_decode(const float *q, float *const *kvtab, int layer, const int *d_pos, int nh,
                           int nkv, int hd, int nsplit, float *part_o, float *part_ml, float *out,
                           cudaStream_t s);

/* n query rows (positions *d_pos + pos_add + i), causal, tiled with online
 * softmax; out (act, nsplit) [n, nh*hd]. hd in {16, 32, 64, 128, 256}. */
cudaError_t kl_attn_prefill(const float *q, float *const *kvtab, int layer, const int *d_pos, int pos_add,
                            int n, int nh, int nkv, int hd, int akind, int nsplit, void *out,
                            cudaStream_t s);

/* out f16 [N, K] = dequantized KW_Q4 weights (for the prefill GEMMs). */
cudaError_t kl_dequant_q4(const void *w, const uint32_t *sz, int group, int N, int K, void *out,
                          cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
