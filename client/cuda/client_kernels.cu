/* client_kernels.cu — the client's CUDA kernels (launchers and layouts in
 * client_kernels.h; what is bit-identical to the CPU in client_cuda.h).
 *
 * Where the CPU result must be matched bit for bit (the final RMSNorm, the
 * int8 input quantization and the int8 row values) every product and sum
 * uses the explicitly rounded intrinsics (__dmul_rn, __dadd_rn, __fmul_rn,
 * ...): nvcc would otherwise fuse a multiply and an add into one FMA, which
 * rounds once where the CPU (C11, -ffp-contract=off, no FMA in the baseline
 * ISA) rounds twice.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "client_kernels.h"

#define FULL 0xffffffffu
#define XQ_MAX 16383 /* common/gemv.c: |xq| <= 16383 */
#define GEMV_THREADS 256 /* 8 warps, one row each */

/* ---- embedding lookup ------------------------------------------------------ */

static __device__ __forceinline__ float elem_f32(const void *t, int dt, size_t i) {
    if (dt == CK_F16) return __half2float(((const __half *)t)[i]);
    if (dt == CK_BF16) return __bfloat162float(((const __nv_bfloat16 *)t)[i]);
    return ((const float *)t)[i];
}

__global__ void k_embed(const void *tab, int dt, const int32_t *ids, int cols, float *out) {
    const size_t row = (size_t)ids[blockIdx.x] * (size_t)cols;
    float *o = out + (size_t)blockIdx.x * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) o[j] = elem_f32(tab, dt, row + j);
}

extern "C" cudaError_t ck_embed(const void *tab, int dt, const int32_t *ids, int n, int cols, float *out,
                                cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    k_embed<<<n, 256, 0, s>>>(tab, dt, ids, cols, out);
    return cudaGetLastError();
}

/* ---- final RMSNorm (+ int16 input for an int8 head) -------------------------- */

__global__ void k_final_norm(const float *x, const float *r, const float *g, int cols, float eps, float *xn,
                             int16_t *xq, double *sx_out) {
    __shared__ float s_scale;
    __shared__ float s_max[32];
    __shared__ int s_bad[32];
    __shared__ double s_sx;
    /* inf_rmsnorm: ss += (double)x[i] * x[i] in index order, one rounding
     * per product and per sum. One thread: a few microseconds at 4096, and
     * the only way to reproduce the CPU's rounding sequence. */
    if (threadIdx.x == 0) {
        const float *src = r ? r : x;
        double ss = 0.0;
        for (int i = 0; i < cols; i++) {
            double v = (double)src[i];
            ss = __dadd_rn(ss, __dmul_rn(v, v));
        }
        double mean = __dadd_rn(__ddiv_rn(ss, (double)cols), (double)eps);
        s_scale = __double2float_rn(__ddiv_rn(1.0, __dsqrt_rn(mean)));
    }
    __syncthreads();
    const float scale = s_scale;
    float mx = 0.0f;
    int bad = 0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = __fmul_rn(x[i], scale); /* x[i] * scale * g[i], left to right */
        if (g) v = __fmul_rn(v, g[i]);
        xn[i] = v;
        float a = fabsf(v);
        if (!isfinite(a)) bad = 1;
        else if (a > mx) mx = a;
    }
    if (!xq) return;
    /* gemv_input_make: mx = max |xn| over the finite values (exact in any
     * order), any non-finite value makes sx NaN and xq zero */
    for (int o = 16; o; o >>= 1) {
        mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, o));
        bad |= __shfl_xor_sync(FULL, bad, o);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) {
        s_max[warp] = mx;
        s_bad[warp] = bad;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = 0.0f;
        int b = 0;
        for (int w = 0; w < nw; w++) {
            m = fmaxf(m, s_max[w]);
            b |= s_bad[w];
        }
        double sx = b ? (double)NAN : m > 0.0f ? __ddiv_rn((double)m, (double)XQ_MAX) : 0.0;
        s_sx = sx;
        *sx_out = sx;
    }
    __syncthreads();
    const double sx = s_sx;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        long long v = 0;
        if (sx > 0.0) { /* false for NaN, as the CPU's sx > 0.0 ? ... : 0 */
            v = __double2ll_rn(__ddiv_rn((double)xn[i], sx)); /* lrint: nearest, ties to even */
            if (v > XQ_MAX) v = XQ_MAX;
            if (v < -XQ_MAX) v = -XQ_MAX;
        }
        xq[i] = (int16_t)v;
    }
}

extern "C" cudaError_t ck_final_norm(const float *x, const float *r, const float *g, int cols, float eps, float *xn,
                                     int16_t *xq, double *sx, cudaStream_t s) {
    k_final_norm<<<1, 1024, 0, s>>>(x, r, g, cols, eps, xn, xq, sx);
    return cudaGetLastError();
}

/* ---- lm_head GEMV -------------------------------------------------------------- */

/* 16 bytes of a row as f32 values: 4 f32, or 8 f16/bf16. */
template <int DT> struct Vec;
template <> struct Vec<CK_F32> {
    enum { N = 4 };
    static __device__ __forceinline__ void get(uint4 u, float *f) {
        f[0] = __uint_as_float(u.x);
        f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z);
        f[3] = __uint_as_float(u.w);
    }
};
template <> struct Vec<CK_F16> {
    enum { N = 8 };
    static __device__ __forceinline__ void get(uint4 u, float *f) {
        const __half2 *h = (const __half2 *)&u;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float2 t = __half22float2(h[k]);
            f[2 * k] = t.x;
            f[2 * k + 1] = t.y;
        }
    }
};
template <> struct Vec<CK_BF16> {
    enum { N = 8 };
    static __device__ __forceinline__ void get(uint4 u, float *f) {
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float2 t = __bfloat1622float2(h[k]);
            f[2 * k] = t.x;
            f[2 * k + 1] = t.y;
        }
    }
};

/* One warp per row; lanes stride over 16-byte chunks (vec = cols is a
 * multiple of the chunk, so every row starts 16-byte aligned), else over
 * single elements. xn is small and read through the cache by every warp. */
template <int DT>
__global__ void __launch_bounds__(GEMV_THREADS) k_gemv(const void *W, const float *xn, int64_t rows, int cols,
                                                      float *y) {
    const int64_t r = (int64_t)blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int N = Vec<DT>::N;
    const size_t esize = DT == CK_F32 ? 4 : 2;
    const char *row = (const char *)W + (size_t)r * cols * esize;
    float acc = 0.0f;
    if (cols % N == 0) {
        const uint4 *w4 = (const uint4 *)row;
        const int nc = cols / N;
#pragma unroll 4
        for (int c = lane; c < nc; c += 32) {
            float f[N];
            Vec<DT>::get(__ldg(w4 + c), f);
            const float4 *x4 = (const float4 *)(xn + (size_t)c * N);
#pragma unroll
            for (int k = 0; k < N / 4; k++) {
                float4 xv = __ldg(x4 + k);
                acc = fmaf(f[4 * k], xv.x, acc);
                acc = fmaf(f[4 * k + 1], xv.y, acc);
                acc = fmaf(f[4 * k + 2], xv.z, acc);
                acc = fmaf(f[4 * k + 3], xv.w, acc);
            }
        }
    } else {
        for (int c = lane; c < cols; c += 32) acc = fmaf(elem_f32(row, DT, c), __ldg(xn + c), acc);
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(FULL, acc, o);
    if (lane == 0) y[r] = acc;
}

extern "C" cudaError_t ck_gemv(const void *W, int dt, const float *xn, int64_t rows, int cols, float *y,
                               cudaStream_t s) {
    const int rpb = GEMV_THREADS / 32;
    const unsigned blocks = (unsigned)((rows + rpb - 1) / rpb);
    if (dt == CK_F16) k_gemv<CK_F16><<<blocks, GEMV_THREADS, 0, s>>>(W, xn, rows, cols, y);
    else if (dt == CK_BF16) k_gemv<CK_BF16><<<blocks, GEMV_THREADS, 0, s>>>(W, xn, rows, cols, y);
    else k_gemv<CK_F32><<<blocks, GEMV_THREADS, 0, s>>>(W, xn, rows, cols, y);
    return cudaGetLastError();
}

/* int8 rows: exact integer dots. A 16-term chunk fits int32
 * (16 * 127 * 16383 < 2^25); chunks add up in int64, lanes combine in
 * int64, so the sum is exact whatever the order. */
__global__ void __launch_bounds__(GEMV_THREADS) k_gemv_i8(const int8_t *W, const float *scale, const int16_t *xq,
                                                         const double *sxp, int64_t rows, int cols, float *y) {
    const int64_t r = (int64_t)blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const int8_t *row = W + (size_t)r * cols;
    long long acc = 0;
    if (cols % 16 == 0) {
        const int4 *w4 = (const int4 *)row;
        const int nc = cols / 16;
#pragma unroll 4
        for (int c = lane; c < nc; c += 32) {
            int4 u = __ldg(w4 + c);
            const int8_t *q = (const int8_t *)&u;
            const int4 *x4 = (const int4 *)(xq + (size_t)c * 16);
            int4 xa = __ldg(x4), xb = __ldg(x4 + 1);
            const int16_t *xa16 = (const int16_t *)&xa, *xb16 = (const int16_t *)&xb;
            int s = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) s += (int)q[k] * (int)xa16[k];
#pragma unroll
            for (int k = 0; k < 8; k++) s += (int)q[8 + k] * (int)xb16[k];
            acc += s;
        }
    } else {
        for (int c = lane; c < cols; c += 32) acc += (long long)row[c] * (long long)xq[c];
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(FULL, acc, o);
    if (lane == 0) /* gemv_rows: (float)((double)acc * (double)scale[r] * sx) */
        y[r] = __double2float_rn(__dmul_rn(__dmul_rn(__ll2double_rn(acc), (double)scale[r]), *sxp));
}

extern "C" cudaError_t ck_gemv_i8(const int8_t *W, const float *scale, const int16_t *xq, const double *sx,
                                  int64_t rows, int cols, float *y, cudaStream_t s) {
    const int rpb = GEMV_THREADS / 32;
    const unsigned blocks = (unsigned)((rows + rpb - 1) / rpb);
    k_gemv_i8<<<blocks, GEMV_THREADS, 0, s>>>(W, scale, xq, sx, rows, cols, y);
    return cudaGetLastError();
}

/* ---- sampling: repetition penalty and argmax ------------------------------------------ */

__global__ void k_penalty(float *logits, const int32_t *ids, int n, float p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = logits[ids[i]];
    logits[ids[i]] = v > 0 ? __fdiv_rn(v, p) : __fmul_rn(v, p);
}

extern "C" cudaError_t ck_penalty(float *logits, const int32_t *ids, int n, float p, cudaStream_t s) {
    if (n <= 0) return cudaSuccess;
    k_penalty<<<(n + 255) / 256, 256, 0, s>>>(logits, ids, n, p);
    return cudaGetLastError();
}

/* The order of inf_argmax (best = 0; v[i] > v[best] -> best = i) as one
 * 64-bit key, so the maximum is order-free: high word the float's order
 * bits (-0 counted as +0, since -0 > +0 is false), low word 0xFFFFFFFF - i
 * (lower id wins a tie). A NaN never wins, except at id 0, where the CPU
 * loop can never leave it: it gets the largest key. */
static __device__ __forceinline__ unsigned long long argmax_key(float v, int64_t i) {
    if (v != v) return i == 0 ? ~0ull : 0ull;
    if (v == 0.0f) v = 0.0f;
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned)i);
}

__global__ void k_argmax(const float *logits, int64_t n, unsigned long long *key) {
    __shared__ unsigned long long red[32];
    unsigned long long best = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        unsigned long long k = argmax_key(logits[i], i);
        if (k > best) best = k;
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) {
        unsigned long long t = __shfl_xor_sync(FULL, best, o);
        if (t > best) best = t;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (red[w] > best) best = red[w];
        if (red[0] > best) best = red[0];
        atomicMax(key, best);
    }
}

extern "C" cudaError_t ck_argmax(const float *logits, int64_t n, unsigned long long *key, cudaStream_t s) {
    int64_t blocks = (n + 1023) / 1024;
    if (blocks > 264) blocks = 264; /* a couple of waves on an H100; the rest is grid-stride */
    if (blocks < 1) blocks = 1;
    k_argmax<<<(unsigned)blocks, 1024, 0, s>>>(logits, n, key);
    return cudaGetLastError();
}
