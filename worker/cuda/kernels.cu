/* kernels.cu — the CUDA kernels of the forward pass (contract and layouts in
 * kernels.h). Arithmetic mirrors worker/cpu/forward.c: f32 activations and
 * accumulation, RoPE angles in double, silu(x) = x / (1 + exp(-x)); only
 * the order of additions differs (and, in the prefill GEMMs, the 16-bit
 * operands: see cuda_backend.c for the accuracy argument).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"

#define FULL 0xffffffffu

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

/* Sum of squares of x[0..K) over the whole block (blockDim.x a multiple of
 * 32, at most 1024), in double like the CPU's inf_rmsnorm; every thread gets
 * 1 / sqrt(mean + eps). Contains __syncthreads: call from all threads. */
static __device__ float block_rms_scale(const float *x, int K, float eps) {
    __shared__ double red[32];
    double ss = 0.0;
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
        double v = x[j];
        ss += v * v;
    }
    ss = warp_sum_d(ss);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    double t = 0.0;
    const int nw = blockDim.x >> 5;
    for (int w = 0; w < nw; w++) t += red[w];
    __syncthreads(); /* red may be reused by a later call */
    return (float)(1.0 / sqrt(t / K + (double)eps));
}

/* ---- GEMM-input stores ------------------------------------------------------ */

template <typename T> struct Act;
template <> struct Act<float> {
    static __device__ __forceinline__ void put(float *o, size_t plane, size_t i, float v, int ns) {
        (void)plane;
        (void)ns;
        o[i] = v;
    }
};
template <> struct Act<__half> {
    static __device__ __forceinline__ void put(__half *o, size_t plane, size_t i, float v, int ns) {
        __half hi = __float2half_rn(v);
        o[i] = hi;
        if (ns > 1) o[plane + i] = __float2half_rn(v - __half2float(hi));
    }
};
template <> struct Act<__nv_bfloat16> {
    static __device__ __forceinline__ void put(__nv_bfloat16 *o, size_t plane, size_t i, float v, int ns) {
        __nv_bfloat16 hi = __float2bfloat16_rn(v);
        o[i] = hi;
        if (ns > 1) o[plane + i] = __float2bfloat16_rn(v - __bfloat162float(hi));
    }
};

/* ---- decode GEMV ------------------------------------------------------------ */

#define GEMV_WARPS 4
#define GEMV_ROWS 4 /* rows per warp: the x chunk in registers serves all four */

template <int WK> struct WTr;
template <> struct WTr<KW_F32> { enum { EPC = 4 }; };  /* elements per 16-byte chunk */
template <> struct WTr<KW_F16> { enum { EPC = 8 }; };
template <> struct WTr<KW_BF16> { enum { EPC = 8 }; };
template <> struct WTr<KW_Q4> { enum { EPC = 32 }; };

/* Dot of one 16-byte weight chunk with EPC activations. For Q4 the result is
 * sum (q - zero) * x; zf = 2^23 + zero. */
template <int WK> static __device__ __forceinline__ float dot16(const uint4 &w, const float *xv, float zf);

template <> __device__ __forceinline__ float dot16<KW_F32>(const uint4 &w, const float *xv, float zf) {
    (void)zf;
    float a = __uint_as_float(w.x) * xv[0];
    a = fmaf(__uint_as_float(w.y), xv[1], a);
    a = fmaf(__uint_as_float(w.z), xv[2], a);
    return fmaf(__uint_as_float(w.w), xv[3], a);
}

template <> __device__ __forceinline__ float dot16<KW_F16>(const uint4 &w, const float *xv, float zf) {
    (void)zf;
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        __half2 h = *reinterpret_cast<const __half2 *>(&u[k]);
        float2 f = __half22float2(h);
        a = fmaf(f.x, xv[2 * k], a);
        b = fmaf(f.y, xv[2 * k + 1], b);
    }
    return a + b;
}

template <> __device__ __forceinline__ float dot16<KW_BF16>(const uint4 &w, const float *xv, float zf) {
    (void)zf;
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        /* bf16 -> f32 is a shift: low half is element 2k, high half 2k+1 */
        a = fmaf(__uint_as_float(u[k] << 16), xv[2 * k], a);
        b = fmaf(__uint_as_float(u[k] & 0xffff0000u), xv[2 * k + 1], b);
    }
    return a + b;
}

/* 32 nibbles: byte i of the chunk holds elements 2i (low) and 2i+1 (high).
 * A nibble q becomes the float 2^23 + q by placing it in the low mantissa
 * byte of 0x4B000000 (one PRMT); subtracting 2^23 + zero is exact and gives
 * q - zero as a float. No int->float conversion instruction is needed. */
template <> __device__ __forceinline__ float dot16<KW_Q4>(const uint4 &w, const float *xv, float zf) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t lo = u[j] & 0x0F0F0F0Fu, hi = (u[j] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float ql = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7650u + k)) - zf;
            const float qh = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7650u + k)) - zf;
            a = fmaf(ql, xv[8 * j + 2 * k], a);
            b = fmaf(qh, xv[8 * j + 2 * k + 1], b);
        }
    }
    return a + b;
}

template <int WK>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
k_gemv(const uint8_t *__restrict__ W, const uint32_t *__restrict__ sz, int group, const float *__restrict__ x,
       const float *__restrict__ gain, int norm, float eps, int N, int K, float *__restrict__ y, int epi) {
    constexpr int EPC = WTr<WK>::EPC;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float scale = 1.f;
    if (norm) scale = block_rms_scale(x, K, eps); /* before any early exit: it synchronizes */
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (row0 >= N) return;
    const size_t rowbytes = WK == KW_Q4 ? (size_t)K / 2 : (size_t)K * (WK == KW_F32 ? 4 : 2);
    const int C = K / EPC; /* 16-byte chunks per row */
    const int G = WK == KW_Q4 ? K / group : 1;
    const uint8_t *wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) /* rows past N read row N-1 (valid memory); never stored */
        wr[r] = W + (size_t)min(row0 + r, N - 1) * rowbytes;
    float acc[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) acc[r] = 0.f;

    /* Two chunks per iteration for the 16-bit and f32 kinds (more loads in
     * flight); Q4 already holds 4 x 16 bytes plus 32 activations per lane. */
#pragma unroll(WK == KW_Q4 ? 1 : 2)
    for (int c = lane; c < C; c += 32) {
        uint4 wv[GEMV_ROWS]; /* all weight loads first: four 16-byte loads in flight per lane */
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) wv[r] = __ldg(reinterpret_cast<const uint4 *>(wr[r]) + c);
        uint32_t szv[GEMV_ROWS];
        if (WK == KW_Q4) {
            const int g = (c * EPC) / group; /* a 32-element chunk never straddles groups (group % 32 == 0) */
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) szv[r] = __ldg(sz + (size_t)min(row0 + r, N - 1) * G + g);
        }
        float xv[EPC];
        const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)c * EPC);
#pragma unroll
        for (int k = 0; k < EPC / 4; k++) {
            float4 t = __ldg(xp + k);
            xv[4 * k] = t.x;
            xv[4 * k + 1] = t.y;
            xv[4 * k + 2] = t.z;
            xv[4 * k + 3] = t.w;
        }
        if (gain) {
            const float4 *gp = reinterpret_cast<const float4 *>(gain + (size_t)c * EPC);
#pragma unroll
            for (int k = 0; k < EPC / 4; k++) {
                float4 t = __ldg(gp + k);
                xv[4 * k] *= t.x;
                xv[4 * k + 1] *= t.y;
                xv[4 * k + 2] *= t.z;
                xv[4 * k + 3] *= t.w;
            }
        }
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            if (WK == KW_Q4) {
                const float s = __half2float(__ushort_as_half((unsigned short)(szv[r] & 0xffffu)));
                const float zf = 8388608.f + (float)(szv[r] >> 16);
                acc[r] = fmaf(s, dot16<WK>(wv[r], xv, zf), acc[r]);
            } else {
                acc[r] += dot16<WK>(wv[r], xv, 0.f);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) acc[r] = warp_sum(acc[r]) * scale;
    if (lane != 0) return;
    if (epi == KE_SWIGLU) {
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r += 2) {
            const int row = row0 + r;
            if (row + 1 < N) {
                const float g = acc[r], u = acc[r + 1];
                y[row / 2] = g / (1.0f + expf(-g)) * u;
            }
        }
    } else {
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            const int row = row0 + r;
            if (row < N) {
                if (epi == KE_ADD) y[row] += acc[r];
                else y[row] = acc[r];
            }
        }
    }
}

extern "C" cudaError_t kl_gemv(int wkind, const void *w, const uint32_t *sz, int group, const float *x,
                               const float *gain, int norm, float eps, int N, int K, float *y, int epi,
                               cudaStream_t s) {
    const int rows_per_block = GEMV_WARPS * GEMV_ROWS;
    dim3 grid((unsigned)((N + rows_per_block - 1) / rows_per_block)), block(GEMV_WARPS * 32);
    const uint8_t *W = (const uint8_t *)w;
    switch (wkind) {
    case KW_F32: k_gemv<KW_F32><<<grid, block, 0, s>>>(W, sz, group, x, gain, norm, eps, N, K, y, epi); break;
    case KW_F16: k_gemv<KW_F16><<<grid, block, 0, s>>>(W, sz, group, x, gain, norm, eps, N, K, y, epi); break;
    case KW_BF16: k_gemv<KW_BF16><<<grid, block, 0, s>>>(W, sz, group, x, gain, norm, eps, N, K, y, epi); break;
    case KW_Q4: k_gemv<KW_Q4><<<grid, block, 0, s>>>(W, sz, group, x, gain, norm, eps, N, K, y, epi); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- prefill element-wise kernels ------------------------------------------- */

template <typename T>
__global__ void k_rmsnorm_in(const float *__restrict__ x, const float *__restrict__ gain, float eps, int n, int D,
                             int nsplit, T *__restrict__ out) {
    const int i = blockIdx.x;
    const float *xr = x + (size_t)i * D;
    const float scale = block_rms_scale(xr, D, eps);
    const size_t plane = (size_t)n * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float v = xr[j] * scale; /* CPU: x * scale * g, in that order */
        if (gain) v *= gain[j];
        Act<T>::put(out, plane, (size_t)i * D + j, v, nsplit);
    }
}

extern "C" cudaError_t kl_rmsnorm_in(const float *x, const float *gain, float eps, int n, int D, int akind,
                                     int nsplit, void *out, cudaStream_t s) {
    switch (akind) {
    case KA_F32: k_rmsnorm_in<float><<<n, 256, 0, s>>>(x, gain, eps, n, D, nsplit, (float *)out); break;
    case KA_F16: k_rmsnorm_in<__half><<<n, 256, 0, s>>>(x, gain, eps, n, D, nsplit, (__half *)out); break;
    case KA_BF16:
        k_rmsnorm_in<__nv_bfloat16><<<n, 256, 0, s>>>(x, gain, eps, n, D, nsplit, (__nv_bfloat16 *)out);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

__global__ void k_add_rows(float *__restrict__ x, const float *__restrict__ y, int n, int N, int nsplit) {
    const size_t total = (size_t)n * N, plane = total;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        float v = y[e];
        if (nsplit > 1) v += y[plane + e];
        x[e] += v;
    }
}

static unsigned ew_blocks(size_t total) {
    size_t b = (total + 255) / 256;
    return (unsigned)(b < 65535 ? (b ? b : 1) : 65535);
}

extern "C" cudaError_t kl_add_rows(float *x, const float *y, int n, int N, int nsplit, cudaStream_t s) {
    k_add_rows<<<ew_blocks((size_t)n * N), 256, 0, s>>>(x, y, n, N, nsplit);
    return cudaGetLastError();
}

template <typename T>
__global__ void k_swiglu_in(const float *__restrict__ y, int n, int F, int nsplit_in, int nsplit_out,
                            T *__restrict__ out) {
    const size_t total = (size_t)n * F, plane_in = (size_t)n * 2 * F;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t i = e / F, r = e % F;
        const size_t gi = i * 2 * F + 2 * r;
        float g = y[gi], u = y[gi + 1];
        if (nsplit_in > 1) {
            g += y[plane_in + gi];
            u += y[plane_in + gi + 1];
        }
        Act<T>::put(out, total, e, g / (1.0f + expf(-g)) * u, nsplit_out);
    }
}

extern "C" cudaError_t kl_swiglu_in(const float *y, int n, int F, int nsplit_in, int akind, int nsplit_out,
                                    void *out, cudaStream_t s) {
    const unsigned nb = ew_blocks((size_t)n * F);
    switch (akind) {
    case KA_F32: k_swiglu_in<float><<<nb, 256, 0, s>>>(y, n, F, nsplit_in, nsplit_out, (float *)out); break;
    case KA_F16: k_swiglu_in<__half><<<nb, 256, 0, s>>>(y, n, F, nsplit_in, nsplit_out, (__half *)out); break;
    case KA_BF16:
        k_swiglu_in<__nv_bfloat16><<<nb, 256, 0, s>>>(y, n, F, nsplit_in, nsplit_out, (__nv_bfloat16 *)out);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- RoPE + KV write ---------------------------------------------------------- */

#define ROPE_MAX_HALF 128 /* head_dim <= 256 */

__global__ void k_rope_kv(const float *__restrict__ y, int n, int nsplit, const int *__restrict__ d_pos, int pos_add,
                          const float *__restrict__ inv_freq, int interleaved, int nh, int nkv, int hd,
                          float *const *__restrict__ kvtab, int layer, float *__restrict__ q) {
    __shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
    const int i = blockIdx.x, half = hd / 2;
    const int p = *d_pos + pos_add + i;
    const int qd = nh * hd, kvd = nkv * hd, N = qd + 2 * kvd;
    for (int k = threadIdx.x; k < half; k += blockDim.x) {
        double a = (double)p * inv_freq[k], sv, cv; /* as the CPU: angle and sincos in double */
        sincos(a, &sv, &cv);
        cs[k] = (float)cv;
        sn[k] = (float)sv;
    }
    __syncthreads();
    const float *r0 = y + (size_t)i * N, *r1 = y + ((size_t)n + i) * N;
    float *kc = kvtab[2 * layer] + (size_t)p * kvd, *vc = kvtab[2 * layer + 1] + (size_t)p * kvd;
    for (int idx = threadIdx.x; idx < (nh + nkv) * half; idx += blockDim.x) {
        const int hh = idx / half, k = idx % half;
        const int i0 = interleaved ? 2 * k : k, i1 = interleaved ? 2 * k + 1 : k + half;
        const int base = hh < nh ? hh * hd : qd + (hh - nh) * hd;
        float x0 = r0[base + i0], x1 = r0[base + i1];
        if (nsplit > 1) {
            x0 += r1[base + i0];
            x1 += r1[base + i1];
        }
        const float c = cs[k], s = sn[k];
        const float o0 = x0 * c - x1 * s, o1 = x0 * s + x1 * c;
        if (hh < nh) {
            q[(size_t)i * qd + base + i0] = o0;
            q[(size_t)i * qd + base + i1] = o1;
        } else {
            kc[base - qd + i0] = o0;
            kc[base - qd + i1] = o1;
        }
    }
    for (int j = threadIdx.x; j < kvd; j += blockDim.x) {
        float v = r0[qd + kvd + j];
        if (nsplit > 1) v += r1[qd + kvd + j];
        vc[j] = v;
    }
}

extern "C" cudaError_t kl_rope_kv(const float *y, int n, int nsplit, const int *d_pos, int pos_add,
                                  const float *inv_freq, int interleaved, int nh, int nkv, int hd,
                                  float *const *kvtab, int layer, float *q, cudaStream_t s) {
    if (hd / 2 > ROPE_MAX_HALF) return cudaErrorInvalidValue;
    k_rope_kv<<<n, 128, 0, s>>>(y, n, nsplit, d_pos, pos_add, inv_freq, interleaved, nh, nkv, hd, kvtab, layer, q);
    return cudaGetLastError();
}

/* ---- decode attention: split-K ("flash-decoding") ------------------------------ */

#define AD_WARPS 4

/* Block (kv head kh, split sp) covers positions [t0, t1) for the `group`
 * query heads that share kh, so each K/V row is read once for all of them.
 * Each warp walks every AD_WARPS-th position with its own running max, sum
 * and output (online softmax); the warps merge in shared memory and the
 * block writes one partial (unnormalized o, max m, sum l) per head. E =
 * head_dim / 32 rounded up: elements per lane. */
template <int E>
__global__ void __launch_bounds__(AD_WARPS * 32)
k_attn_decode_split(const float *__restrict__ q, float *const *__restrict__ kvtab, int layer,
                    const int *__restrict__ d_pos, int nh, int nkv, int hd, float scale, int nsplit,
                    float *__restrict__ part_o, float *__restrict__ part_ml) {
    __shared__ float sm_o[AD_WARPS][KL_MAX_GQA][E * 32];
    __shared__ float sm_m[AD_WARPS][KL_MAX_GQA], sm_l[AD_WARPS][KL_MAX_GQA];
    const int kh = blockIdx.x, sp = blockIdx.y, group = nh / nkv, kvd = nkv * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int T = *d_pos + 1;
    const int chunk = (T + nsplit - 1) / nsplit;
    const int t0 = sp * chunk, t1 = min(T, t0 + chunk);
    const float *kc = kvtab[2 * layer] + kh * hd, *vc = kvtab[2 * layer + 1] + kh * hd;

    float qr[KL_MAX_GQA][E], o[KL_MAX_GQA][E], m[KL_MAX_GQA], l[KL_MAX_GQA];
#pragma unroll
    for (int g = 0; g < KL_MAX_GQA; g++) {
        m[g] = -INFINITY;
        l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int d = lane + 32 * e;
            qr[g][e] = (g < group && d < hd) ? q[(size_t)(kh * group + g) * hd + d] : 0.f;
            o[g][e] = 0.f;
        }
    }
    for (int t = t0 + warp; t < t1; t += AD_WARPS) {
        float kr[E], vr[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int d = lane + 32 * e;
            kr[e] = d < hd ? kc[(size_t)t * kvd + d] : 0.f;
            vr[e] = d < hd ? vc[(size_t)t * kvd + d] : 0.f;
        }
#pragma unroll
        for (int g = 0; g < KL_MAX_GQA; g++) {
            if (g >= group) break; /* uniform across the block */
            float dsum = 0.f;
#pragma unroll
            for (int e = 0; e < E; e++) dsum = fmaf(qr[g][e], kr[e], dsum);
            const float s = warp_sum(dsum) * scale;
            const float mn = fmaxf(m[g], s);
            const float corr = expf(m[g] - mn), p = expf(s - mn); /* m = -inf at first: corr 0 */
            l[g] = l[g] * corr + p;
#pragma unroll
            for (int e = 0; e < E; e++) o[g][e] = fmaf(p, vr[e], o[g][e] * corr);
            m[g] = mn;
        }
    }
#pragma unroll
    for (int g = 0; g < KL_MAX_GQA; g++) {
#pragma unroll
        for (int e = 0; e < E; e++) sm_o[warp][g][lane + 32 * e] = o[g][e];
        if (lane == 0) {
            sm_m[warp][g] = m[g];
            sm_l[warp][g] = l[g];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < group * hd; idx += blockDim.x) {
        const int g = idx / hd, d = idx % hd, h = kh * group + g;
        float M = -INFINITY;
        for (int w = 0; w < AD_WARPS; w++) M = fmaxf(M, sm_m[w][g]);
        float L = 0.f, O = 0.f;
        if (M != -INFINITY) { /* an empty split (t0 >= T) stays 0 with m = -inf */
            for (int w = 0; w < AD_WARPS; w++) {
                const float f = expf(sm_m[w][g] - M);
                L += sm_l[w][g] * f;
                O += sm_o[w][g][d] * f;
            }
        }
        part_o[((size_t)h * nsplit + sp) * hd + d] = O;
        if (d == 0) {
            part_ml[((size_t)h * nsplit + sp) * 2] = M;
            part_ml[((size_t)h * nsplit + sp) * 2 + 1] = L;
        }
    }
}

__global__ void k_attn_decode_combine(const float *__restrict__ part_o, const float *__restrict__ part_ml, int hd,
                                      int nsplit, float *__restrict__ out) {
    const int h = blockIdx.x;
    const float *ml = part_ml + (size_t)h * nsplit * 2;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, ml[2 * s]);
    float L = 0.f;
    for (int s = 0; s < nsplit; s++)
        if (ml[2 * s] != -INFINITY) L += ml[2 * s + 1] * expf(ml[2 * s] - M);
    const float inv = 1.f / L; /* position 0 is always visible: L > 0 */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float O = 0.f;
        for (int s = 0; s < nsplit; s++)
            if (ml[2 * s] != -INFINITY) O += part_o[((size_t)h * nsplit + s) * hd + d] * expf(ml[2 * s] - M);
        out[(size_t)h * hd + d] = O * inv;
    }
}

extern "C" cudaError_t kl_attn_decode(const float *q, float *const *kvtab, int layer, const int *d_pos, int nh,
                                      int nkv, int hd, int nsplit, float *part_o, float *part_ml, float *out,
                                      cudaStream_t s) {
    if (nh % nkv || nh / nkv > KL_MAX_GQA || nsplit < 1 || nsplit > KL_MAX_SPLITS) return cudaErrorInvalidValue;
    const float scale = 1.0f / sqrtf((float)hd);
    dim3 grid((unsigned)nkv, (unsigned)nsplit), block(AD_WARPS * 32);
    const int E = (hd + 31) / 32;
    if (E == 1) k_attn_decode_split<1><<<grid, block, 0, s>>>(q, kvtab, layer, d_pos, nh, nkv, hd, scale, nsplit, part_o, part_ml);
    else if (E == 2) k_attn_decode_split<2><<<grid, block, 0, s>>>(q, kvtab, layer, d_pos, nh, nkv, hd, scale, nsplit, part_o, part_ml);
    else if (E <= 4) k_attn_decode_split<4><<<grid, block, 0, s>>>(q, kvtab, layer, d_pos, nh, nkv, hd, scale, nsplit, part_o, part_ml);
    else if (E <= 8) k_attn_decode_split<8><<<grid, block, 0, s>>>(q, kvtab, layer, d_pos, nh, nkv, hd, scale, nsplit, part_o, part_ml);
    else return cudaErrorInvalidValue;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    k_attn_decode_combine<<<nh, 128, 0, s>>>(part_o, part_ml, hd, nsplit, out);
    return cudaGetLastError();
}

/* ---- prefill attention: tiled, online softmax ------------------------------------ */

#define AP_BQ 64 /* query rows per block */
#define AP_BK 32 /* keys per tile */
#define AP_QP (AP_BQ + 4) /* padded pitches (keep 16-byte alignment for the vector reads) */
#define AP_KP (AP_BK + 4)

template <int HD> static size_t ap_smem(void) {
    return sizeof(float) * ((size_t)HD * AP_QP + (size_t)HD * AP_KP + (size_t)AP_BK * HD + (size_t)AP_BK * AP_QP);
}

/* Block (query tile, head h), 256 threads as 16 x 16: thread (ty, tx) owns
 * query rows ty*4..ty*4+3; for the scores it computes key columns tx*2,
 * tx*2+1 of the tile, for the output the head dims tx + 16k. Q (transposed),
 * K (transposed), V and P (transposed) live in shared memory; each K/V tile
 * is read once per block for 64 queries. Rows are causal: query i (position
 * P0 + i) sees keys 0..P0+i. */
template <int HD, typename TO>
__global__ void __launch_bounds__(256)
k_attn_prefill(const float *__restrict__ q, float *const *__restrict__ kvtab, int layer, const int *__restrict__ d_pos,
               int pos_add, int n, int nh, int nkv, float scale, int nsplit, TO *__restrict__ out) {
    extern __shared__ float4 ap_sm4[];
    float *Qt = reinterpret_cast<float *>(ap_sm4); /* [HD][AP_QP] */
    float *Kt = Qt + HD * AP_QP;                    /* [HD][AP_KP] */
    float *Vs = Kt + HD * AP_KP;                    /* [AP_BK][HD] */
    float *Pt = Vs + AP_BK * HD;                    /* [AP_BK][AP_QP] */
    constexpr int DC = HD / 16;
    const int h = blockIdx.y, i0 = blockIdx.x * AP_BQ;
    const int group = nh / nkv, kh = h / group, qd = nh * HD, kvd = nkv * HD;
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
    const int P0 = *d_pos + pos_add;
    const float *kc = kvtab[2 * layer] + kh * HD, *vc = kvtab[2 * layer + 1] + kh * HD;

    for (int idx = tid; idx < AP_BQ * HD; idx += 256) {
        const int r = idx / HD, d = idx % HD, i = i0 + r;
        Qt[d * AP_QP + r] = i < n ? q[(size_t)i * qd + h * HD + d] : 0.f;
    }
    float o[4][DC], m[4], l[4];
    int pi[4];
#pragma unroll
    for (int a = 0; a < 4; a++) {
        m[a] = -INFINITY;
        l[a] = 0.f;
        pi[a] = P0 + min(i0 + ty * 4 + a, n - 1); /* rows past n act as the last row; never stored */
#pragma unroll
        for (int k = 0; k < DC; k++) o[a][k] = 0.f;
    }
    const int t_end = P0 + min(n, i0 + AP_BQ); /* keys [0, t_end) */
    for (int t0 = 0; t0 < t_end; t0 += AP_BK) {
        __syncthreads(); /* the previous tile's reads (and the Q stores) are done */
        for (int idx = tid; idx < AP_BK * HD; idx += 256) {
            const int c = idx / HD, d = idx % HD, t = t0 + c;
            float kv = 0.f, vv = 0.f;
            if (t < t_end) {
                kv = kc[(size_t)t * kvd + d];
                vv = vc[(size_t)t * kvd + d];
            }
            Kt[d * AP_KP + c] = kv;
            Vs[c * HD + d] = vv;
        }
        __syncthreads();
        float s[4][2];
#pragma unroll
        for (int a = 0; a < 4; a++) s[a][0] = s[a][1] = 0.f;
#pragma unroll 8
        for (int d = 0; d < HD; d++) {
            const float4 qa = *reinterpret_cast<const float4 *>(&Qt[d * AP_QP + ty * 4]);
            const float2 kb = *reinterpret_cast<const float2 *>(&Kt[d * AP_KP + tx * 2]);
            s[0][0] = fmaf(qa.x, kb.x, s[0][0]);
            s[0][1] = fmaf(qa.x, kb.y, s[0][1]);
            s[1][0] = fmaf(qa.y, kb.x, s[1][0]);
            s[1][1] = fmaf(qa.y, kb.y, s[1][1]);
            s[2][0] = fmaf(qa.z, kb.x, s[2][0]);
            s[2][1] = fmaf(qa.z, kb.y, s[2][1]);
            s[3][0] = fmaf(qa.w, kb.x, s[3][0]);
            s[3][1] = fmaf(qa.w, kb.y, s[3][1]);
        }
#pragma unroll
        for (int a = 0; a < 4; a++) {
            float mx = -INFINITY;
#pragma unroll
            for (int b = 0; b < 2; b++) {
                const int t = t0 + tx * 2 + b;
                const float v = t <= pi[a] ? s[a][b] * scale : -INFINITY;
                s[a][b] = v;
                mx = fmaxf(mx, v);
            }
#pragma unroll
            for (int off = 8; off; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, off)); /* the 16 tx lanes */
            /* key 0 is in the first tile and visible to every row, so mn is finite */
            const float mn = fmaxf(m[a], mx);
            const float corr = expf(m[a] - mn);
            float ps = 0.f;
#pragma unroll
            for (int b = 0; b < 2; b++) {
                const float p = expf(s[a][b] - mn);
                s[a][b] = p;
                ps += p;
            }
#pragma unroll
            for (int off = 8; off; off >>= 1) ps += __shfl_xor_sync(FULL, ps, off);
            l[a] = l[a] * corr + ps;
            m[a] = mn;
#pragma unroll
            for (int k = 0; k < DC; k++) o[a][k] *= corr;
#pragma unroll
            for (int b = 0; b < 2; b++) Pt[(tx * 2 + b) * AP_QP + ty * 4 + a] = s[a][b];
        }
        __syncthreads();
#pragma unroll 4
        for (int c = 0; c < AP_BK; c++) {
            const float4 p = *reinterpret_cast<const float4 *>(&Pt[c * AP_QP + ty * 4]);
#pragma unroll
            for (int k = 0; k < DC; k++) {
                const float v = Vs[c * HD + tx + 16 * k];
                o[0][k] = fmaf(p.x, v, o[0][k]);
                o[1][k] = fmaf(p.y, v, o[1][k]);
                o[2][k] = fmaf(p.z, v, o[2][k]);
                o[3][k] = fmaf(p.w, v, o[3][k]);
            }
        }
    }
    const size_t plane = (size_t)n * qd;
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const int i = i0 + ty * 4 + a;
        if (i >= n) continue;
        const float inv = 1.f / l[a];
#pragma unroll
        for (int k = 0; k < DC; k++)
            Act<TO>::put(out, plane, (size_t)i * qd + h * HD + tx + 16 * k, o[a][k] * inv, nsplit);
    }
}

template <int HD, typename TO> static cudaError_t ap_attr(void) {
    return cudaFuncSetAttribute(k_attn_prefill<HD, TO>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)ap_smem<HD>());
}

template <int HD> static cudaError_t ap_attr_all(void) {
    cudaError_t e = ap_attr<HD, float>();
    if (e == cudaSuccess) e = ap_attr<HD, __half>();
    if (e == cudaSuccess) e = ap_attr<HD, __nv_bfloat16>();
    return e;
}

extern "C" cudaError_t kl_init(int hd) {
    switch (hd) { /* only the model's head size: a GPU with less shared memory may still run it */
    case 16: return ap_attr_all<16>();
    case 32: return ap_attr_all<32>();
    case 64: return ap_attr_all<64>();
    case 128: return ap_attr_all<128>();
    case 256: return ap_attr_all<256>();
    default: return cudaErrorInvalidValue;
    }
}

template <int HD>
static void ap_launch(const float *q, float *const *kvtab, int layer, const int *d_pos, int pos_add, int n, int nh,
                      int nkv, int akind, int nsplit, void *out, cudaStream_t s) {
    dim3 grid((unsigned)((n + AP_BQ - 1) / AP_BQ), (unsigned)nh), block(256);
    const size_t sm = ap_smem<HD>();
    const float scale = 1.0f / sqrtf((float)HD);
    if (akind == KA_F32)
        k_attn_prefill<HD, float><<<grid, block, sm, s>>>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, scale, nsplit,
                                                          (float *)out);
    else if (akind == KA_F16)
        k_attn_prefill<HD, __half><<<grid, block, sm, s>>>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, scale, nsplit,
                                                           (__half *)out);
    else
        k_attn_prefill<HD, __nv_bfloat16><<<grid, block, sm, s>>>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, scale,
                                                                  nsplit, (__nv_bfloat16 *)out);
}

extern "C" cudaError_t kl_attn_prefill(const float *q, float *const *kvtab, int layer, const int *d_pos, int pos_add,
                                       int n, int nh, int nkv, int hd, int akind, int nsplit, void *out,
                                       cudaStream_t s) {
    if (nh % nkv || akind < KA_F32 || akind > KA_BF16) return cudaErrorInvalidValue;
    switch (hd) {
    case 16: ap_launch<16>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, akind, nsplit, out, s); break;
    case 32: ap_launch<32>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, akind, nsplit, out, s); break;
    case 64: ap_launch<64>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, akind, nsplit, out, s); break;
    case 128: ap_launch<128>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, akind, nsplit, out, s); break;
    case 256: ap_launch<256>(q, kvtab, layer, d_pos, pos_add, n, nh, nkv, akind, nsplit, out, s); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* ---- INT4 -> f16 for the prefill GEMMs -------------------------------------------- */

__global__ void k_dequant_q4(const uint4 *__restrict__ w, const uint32_t *__restrict__ sz, int group, int N, int K,
                             uint4 *__restrict__ out) {
    const size_t C = (size_t)K / 32, total = (size_t)N * C, G = (size_t)K / group;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t row = e / C, c = e % C;
        const uint4 v = __ldg(w + e);
        const uint32_t p = __ldg(sz + row * G + (c * 32) / group);
        const float s = __half2float(__ushort_as_half((unsigned short)(p & 0xffffu)));
        const float z = (float)(p >> 16);
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
        uint32_t h[16];
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint32_t byte = (u[j] >> (8 * k)) & 0xffu;
                /* as the CPU: (q - zero) * scale in f32, then rounded to f16 */
                const __half a = __float2half_rn(((float)(byte & 15u) - z) * s);
                const __half b = __float2half_rn(((float)(byte >> 4) - z) * s);
                h[4 * j + k] = (uint32_t)__half_as_ushort(a) | ((uint32_t)__half_as_ushort(b) << 16);
            }
        }
        uint4 *o = out + e * 4;
        o[0] = make_uint4(h[0], h[1], h[2], h[3]);
        o[1] = make_uint4(h[4], h[5], h[6], h[7]);
        o[2] = make_uint4(h[8], h[9], h[10], h[11]);
        o[3] = make_uint4(h[12], h[13], h[14], h[15]);
    }
}

extern "C" cudaError_t kl_dequant_q4(const void *w, const uint32_t *sz, int group, int N, int K, void *out,
                                     cudaStream_t s) {
    if (K % 32 || group % 32 || K % group) return cudaErrorInvalidValue;
    const size_t total = (size_t)N * (K / 32);
    size_t nb = (total + 255) / 256;
    if (nb > 65535u * 4) nb = 65535u * 4;
    k_dequant_q4<<<(unsigned)nb, 256, 0, s>>>((const uint4 *)w, sz, group, N, K, (uint4 *)out);
    return cudaGetLastError();
}
