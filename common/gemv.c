/* gemv.c — see gemv.h. Three versions of every inner loop (portable C,
 * AVX2+FMA+F16C, AVX-512F/BW/VL), compiled with per-function target
 * attributes so one binary runs everywhere; the choice is made once, from
 * CPUID, and can be lowered with INFEMERAL_ISA. */
#define _POSIX_C_SOURCE 200809L
#include "gemv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define GEMV_X86 1
#include <immintrin.h>
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#else
#define GEMV_X86 0
#endif

/* int8 dots: |q| <= 127, |xq| <= 16383, so one int32 lane (two products per
 * madd) grows by at most 2 * 127 * 16383 < 2^22 per step; flushing every
 * 8192 columns keeps each lane far below 2^31 on every path. */
#define I8_CHUNK 8192
#define XQ_MAX 16383

/* ---- instruction set choice ------------------------------------------------------- */

static int isa_cpu = -1;    /* what the CPU supports */
static int isa_forced = -1; /* gemv_isa_force / INFEMERAL_ISA */

static int cpu_isa(void) {
    if (isa_cpu >= 0) return isa_cpu; /* benign race: every thread computes the same value */
    int v = GEMV_SCALAR;
#if GEMV_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        v = GEMV_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            v = GEMV_AVX512;
    }
#endif
    isa_cpu = v;
    return v;
}

gemv_isa gemv_isa_active(void) {
    int c = cpu_isa();
    if (isa_forced < 0) {
        int f = c;
        const char *e = getenv("INFEMERAL_ISA");
        if (e && !strcmp(e, "scalar")) f = GEMV_SCALAR;
        else if (e && !strcmp(e, "avx2")) f = GEMV_AVX2;
        else if (e && !strcmp(e, "avx512")) f = GEMV_AVX512;
        isa_forced = f;
    }
    return (gemv_isa)(isa_forced < c ? isa_forced : c);
}

void gemv_isa_force(gemv_isa isa) { isa_forced = (int)isa; }

const char *gemv_isa_name(gemv_isa isa) {
    switch (isa) {
    case GEMV_AVX512: return "avx512";
    case GEMV_AVX2: return "avx2";
    default: return "scalar";
    }
}

int gemv_supports(inf_dtype dt) {
    return dt == INF_DT_F32 || dt == INF_DT_F16 || dt == INF_DT_BF16 || dt == INF_DT_I8;
}

/* ---- portable C -------------------------------------------------------------------- */

static float ld_f32(const void *p, int64_t j) {
    float v;
    memcpy(&v, (const char *)p + 4 * j, 4);
    return v;
}

static uint16_t ld_u16(const void *p, int64_t j) {
    uint16_t v;
    memcpy(&v, (const char *)p + 2 * j, 2);
    return v;
}

static float dot_f32_c(const void *w, const float *x, int64_t n) {
    float a[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) a[k] += ld_f32(w, j + k) * x[j + k];
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += ld_f32(w, j) * x[j];
    return s;
}

static float dot_f16_c(const void *w, const float *x, int64_t n) {
    float a[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) a[k] += inf_f16_to_f32(ld_u16(w, j + k)) * x[j + k];
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += inf_f16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

static float dot_bf16_c(const void *w, const float *x, int64_t n) {
    float a[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) a[k] += inf_bf16_to_f32(ld_u16(w, j + k)) * x[j + k];
    float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; j < n; j++) s += inf_bf16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

static int64_t dot_i8_c(const int8_t *q, const int16_t *xq, int64_t n) {
    int64_t s = 0;
    for (int64_t j = 0; j < n; j++) s += (int32_t)q[j] * (int32_t)xq[j];
    return s;
}

static void axpy_f32_c(float a, const void *row, float *y, int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] += a * ld_f32(row, j);
}

static void axpy_f16_c(float a, const void *row, float *y, int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] += a * inf_f16_to_f32(ld_u16(row, j));
}

/* ---- AVX2 + FMA + F16C --------------------------------------------------------------- */

#if GEMV_X86
T_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

T_AVX2 static float dot_f32_avx2(const void *wv, const float *x, int64_t n) {
    const float *w = wv;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < n; j++) s += ld_f32(w, j) * x[j];
    return s;
}

T_AVX2 static float dot_f16_avx2(const void *wv, const float *x, int64_t n) {
    const uint16_t *w = wv;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + j))), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + j + 8))),
                             _mm256_loadu_ps(x + j + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < n; j++) s += inf_f16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

T_AVX2 static inline __m256 bf16x8_avx2(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

T_AVX2 static float dot_bf16_avx2(const void *wv, const float *x, int64_t n) {
    const uint16_t *w = wv;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_fmadd_ps(bf16x8_avx2(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(bf16x8_avx2(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; j < n; j++) s += inf_bf16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

T_AVX2 static int64_t hsum_epi32_avx2(__m256i v) {
    int32_t t[8];
    _mm256_storeu_si256((__m256i *)t, v);
    int64_t s = 0;
    for (int k = 0; k < 8; k++) s += t[k];
    return s;
}

T_AVX2 static int64_t dot_i8_avx2(const int8_t *q, const int16_t *xq, int64_t n) {
    int64_t s = 0, j = 0;
    while (j + 32 <= n) {
        int64_t end = j + I8_CHUNK < n ? j + I8_CHUNK : n;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        for (; j + 32 <= end; j += 32) {
            __m256i q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + j)));
            __m256i q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + j + 16)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(q0, _mm256_loadu_si256((const __m256i *)(xq + j))));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(q1, _mm256_loadu_si256((const __m256i *)(xq + j + 16))));
        }
        s += hsum_epi32_avx2(a0) + hsum_epi32_avx2(a1);
    }
    for (; j < n; j++) s += (int32_t)q[j] * (int32_t)xq[j];
    return s;
}

T_AVX2 static void axpy_f32_avx2(float a, const void *rowv, float *y, int64_t n) {
    const float *row = rowv;
    __m256 av = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(row + j), _mm256_loadu_ps(y + j)));
    for (; j < n; j++) y[j] += a * ld_f32(row, j);
}

T_AVX2 static void axpy_f16_avx2(float a, const void *rowv, float *y, int64_t n) {
    const uint16_t *row = rowv;
    __m256 av = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(av, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j))),
                                                _mm256_loadu_ps(y + j)));
    for (; j < n; j++) y[j] += a * inf_f16_to_f32(ld_u16(row, j));
}

/* ---- AVX-512 ------------------------------------------------------------------------- */

T_AVX512 static float dot_f32_avx512(const void *wv, const float *x, int64_t n) {
    const float *w = wv;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + j + 16), _mm512_loadu_ps(x + j + 16), a1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; j < n; j++) s += ld_f32(w, j) * x[j];
    return s;
}

T_AVX512 static float dot_f16_avx512(const void *wv, const float *x, int64_t n) {
    const uint16_t *w = wv;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) { /* four chains: enough FMAs in flight to keep up with memory */
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j))), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j + 16))),
                             _mm512_loadu_ps(x + j + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j + 32))),
                             _mm512_loadu_ps(x + j + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j + 48))),
                             _mm512_loadu_ps(x + j + 48), a3);
    }
    for (; j + 16 <= n; j += 16)
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j))), _mm512_loadu_ps(x + j), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; j < n; j++) s += inf_f16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

T_AVX512 static inline __m512 bf16x16_avx512(const uint16_t *p) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

T_AVX512 static float dot_bf16_avx512(const void *wv, const float *x, int64_t n) {
    const uint16_t *w = wv;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        a0 = _mm512_fmadd_ps(bf16x16_avx512(w + j), _mm512_loadu_ps(x + j), a0);
        a1 = _mm512_fmadd_ps(bf16x16_avx512(w + j + 16), _mm512_loadu_ps(x + j + 16), a1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; j < n; j++) s += inf_bf16_to_f32(ld_u16(w, j)) * x[j];
    return s;
}

T_AVX512 static int64_t dot_i8_avx512(const int8_t *q, const int16_t *xq, int64_t n) {
    int64_t s = 0, j = 0;
    while (j + 128 <= n) {
        int64_t end = j + I8_CHUNK < n ? j + I8_CHUNK : n;
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        __m512i a2 = _mm512_setzero_si512(), a3 = _mm512_setzero_si512();
        for (; j + 128 <= end; j += 128) {
            __m512i q0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + j)));
            __m512i q1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + j + 32)));
            __m512i q2 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + j + 64)));
            __m512i q3 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + j + 96)));
            a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(q0, _mm512_loadu_si512((const void *)(xq + j))));
            a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(q1, _mm512_loadu_si512((const void *)(xq + j + 32))));
            a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(q2, _mm512_loadu_si512((const void *)(xq + j + 64))));
            a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(q3, _mm512_loadu_si512((const void *)(xq + j + 96))));
        }
        s += (int64_t)_mm512_reduce_add_epi32(a0) + (int64_t)_mm512_reduce_add_epi32(a1) +
             (int64_t)_mm512_reduce_add_epi32(a2) + (int64_t)_mm512_reduce_add_epi32(a3);
    }
    for (; j < n; j++) s += (int32_t)q[j] * (int32_t)xq[j];
    return s;
}

T_AVX512 static void axpy_f32_avx512(float a, const void *rowv, float *y, int64_t n) {
    const float *row = rowv;
    __m512 av = _mm512_set1_ps(a);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(av, _mm512_loadu_ps(row + j), _mm512_loadu_ps(y + j)));
    for (; j < n; j++) y[j] += a * ld_f32(row, j);
}

T_AVX512 static void axpy_f16_avx512(float a, const void *rowv, float *y, int64_t n) {
    const uint16_t *row = rowv;
    __m512 av = _mm512_set1_ps(a);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(av, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + j))),
                                                _mm512_loadu_ps(y + j)));
    for (; j < n; j++) y[j] += a * inf_f16_to_f32(ld_u16(row, j));
}

T_AVX2 static void cvt_avx2(const uint16_t *h, int bf, float *out, int64_t n) {
    int64_t j = 0;
    if (bf)
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, bf16x8_avx2(h + j));
    else
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j))));
    for (; j < n; j++) out[j] = bf ? inf_bf16_to_f32(ld_u16(h, j)) : inf_f16_to_f32(ld_u16(h, j));
}

T_AVX512 static void cvt_avx512(const uint16_t *h, int bf, float *out, int64_t n) {
    int64_t j = 0;
    if (bf)
        for (; j + 16 <= n; j += 16) _mm512_storeu_ps(out + j, bf16x16_avx512(h + j));
    else
        for (; j + 16 <= n; j += 16)
            _mm512_storeu_ps(out + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + j))));
    for (; j < n; j++) out[j] = bf ? inf_bf16_to_f32(ld_u16(h, j)) : inf_f16_to_f32(ld_u16(h, j));
}
#endif

/* ---- dispatch ------------------------------------------------------------------------ */

typedef float (*dot_fn)(const void *w, const float *x, int64_t n);
typedef int64_t (*dot_i8_fn)(const int8_t *q, const int16_t *xq, int64_t n);
typedef void (*axpy_fn)(float a, const void *row, float *y, int64_t n);

static dot_fn pick_dot(inf_dtype dt, gemv_isa isa) {
#if GEMV_X86
    if (isa == GEMV_AVX512)
        return dt == INF_DT_F32 ? dot_f32_avx512 : dt == INF_DT_F16 ? dot_f16_avx512 : dot_bf16_avx512;
    if (isa == GEMV_AVX2) return dt == INF_DT_F32 ? dot_f32_avx2 : dt == INF_DT_F16 ? dot_f16_avx2 : dot_bf16_avx2;
#else
    (void)isa;
#endif
    return dt == INF_DT_F32 ? dot_f32_c : dt == INF_DT_F16 ? dot_f16_c : dot_bf16_c;
}

static dot_i8_fn pick_dot_i8(gemv_isa isa) {
#if GEMV_X86
    if (isa == GEMV_AVX512) return dot_i8_avx512;
    if (isa == GEMV_AVX2) return dot_i8_avx2;
#else
    (void)isa;
#endif
    return dot_i8_c;
}

static axpy_fn pick_axpy(inf_dtype dt, gemv_isa isa) {
#if GEMV_X86
    if (isa == GEMV_AVX512) return dt == INF_DT_F32 ? axpy_f32_avx512 : axpy_f16_avx512;
    if (isa == GEMV_AVX2) return dt == INF_DT_F32 ? axpy_f32_avx2 : axpy_f16_avx2;
#else
    (void)isa;
#endif
    return dt == INF_DT_F32 ? axpy_f32_c : axpy_f16_c;
}

/* ---- the public kernels ---------------------------------------------------------------- */

const gemv_input *gemv_input_make(gemv_input *in, inf_dtype dt, const float *x, int64_t cols, int16_t *xq) {
    *in = (gemv_input){.x = x};
    if (dt != INF_DT_I8) return in;
    float mx = 0.0f;
    int finite = 1;
    for (int64_t j = 0; j < cols; j++) {
        float a = fabsf(x[j]);
        if (!isfinite(a)) finite = 0;
        else if (a > mx) mx = a;
    }
    in->xq = xq;
    if (!finite) { /* the logits of a non-finite state are NaN, as with the float kernels */
        memset(xq, 0, (size_t)cols * sizeof *xq);
        in->sx = NAN;
        in->xq_norm = NAN;
        return in;
    }
    double sx = mx > 0.0f ? (double)mx / XQ_MAX : 0.0;
    int64_t ss = 0;
    for (int64_t j = 0; j < cols; j++) {
        long v = sx > 0.0 ? lrint((double)x[j] / sx) : 0;
        if (v > XQ_MAX) v = XQ_MAX;
        if (v < -XQ_MAX) v = -XQ_MAX;
        xq[j] = (int16_t)v;
        ss += (int64_t)v * v;
    }
    in->sx = sx;
    in->xq_norm = sx * sqrt((double)ss);
    return in;
}

void gemv_rows(const inf_tensor *W, const float *scale, const gemv_input *in, const int32_t *rows, int64_t n,
               float *y) {
    const int64_t cols = inf_tensor_cols(W);
    const gemv_isa isa = gemv_isa_active();
    const char *base = W->data;
    if (W->dtype == INF_DT_I8) {
        const dot_i8_fn dot = pick_dot_i8(isa);
        const int16_t *xq = in->xq;
        const double sx = in->sx;
#pragma omp parallel for schedule(static) if (n * cols >= INF_PAR_MIN_WORK)
        for (int64_t i = 0; i < n; i++) {
            int64_t r = rows ? rows[i] : i;
            int64_t acc = dot((const int8_t *)(base + (size_t)r * (size_t)cols), xq, cols);
            y[r] = (float)((double)acc * (double)scale[r] * sx);
        }
        return;
    }
    const dot_fn dot = pick_dot(W->dtype, isa);
    const size_t rb = (size_t)cols * (W->dtype == INF_DT_F32 ? 4 : 2);
    const float *x = in->x;
#pragma omp parallel for schedule(static) if (n * cols >= INF_PAR_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows ? rows[i] : i;
        y[r] = dot(base + (size_t)r * rb, x, cols);
    }
}

void gemv_row_norms(const inf_tensor *W, const float *scale, float *norms) {
    const int64_t R = inf_tensor_rows(W), cols = inf_tensor_cols(W);
    if (W->dtype == INF_DT_I8) {
        const int8_t *q = W->data;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            int64_t s = 0;
            const int8_t *qr = q + (size_t)r * (size_t)cols;
            for (int64_t j = 0; j < cols; j++) s += (int32_t)qr[j] * qr[j];
            norms[r] = (float)((double)scale[r] * sqrt((double)s));
        }
        return;
    }
#pragma omp parallel
    {
        float *row = malloc(sizeof(float) * (size_t)cols);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            double s = 0.0;
            if (row) {
                gemv_row_f32(W, r, row);
                for (int64_t j = 0; j < cols; j++) s += (double)row[j] * row[j];
                norms[r] = (float)sqrt(s);
            } else {
                norms[r] = INFINITY; /* no scratch: a bound that proves nothing, never a wrong one */
            }
        }
        free(row);
    }
}

void gemv_square(const void *A, inf_dtype dt, int d, const float *x, int transpose, float *y) {
    const gemv_isa isa = gemv_isa_active();
    const size_t es = dt == INF_DT_F32 ? 4 : 2;
    const char *a = A;
    if (!transpose) {
        const dot_fn dot = pick_dot(dt, isa);
#pragma omp parallel for schedule(static) if ((int64_t)d * d >= INF_PAR_MIN_WORK)
        for (int r = 0; r < d; r++) y[r] = dot(a + (size_t)r * (size_t)d * es, x, d);
        return;
    }
    /* y = A^T x = sum_r x[r] A[r,:]: threads own column blocks of y (which
     * stay in L1) and stream their slice of every row. */
    const axpy_fn axpy = pick_axpy(dt, isa);
    const int B = 512;
#pragma omp parallel for schedule(static) if ((int64_t)d * d >= INF_PAR_MIN_WORK)
    for (int c0 = 0; c0 < d; c0 += B) {
        int w = c0 + B < d ? B : d - c0;
        memset(y + c0, 0, sizeof(float) * (size_t)w);
        for (int r = 0; r < d; r++) axpy(x[r], a + ((size_t)r * (size_t)d + (size_t)c0) * es, y + c0, w);
    }
}

void gemv_row_f32(const inf_tensor *t, int64_t row, float *out) {
    const int64_t cols = inf_tensor_cols(t);
    const char *p = (const char *)t->data;
    const gemv_isa isa = gemv_isa_active();
    if (t->dtype == INF_DT_F32) {
        memcpy(out, p + (size_t)row * (size_t)cols * 4, sizeof(float) * (size_t)cols);
        return;
    }
    if (t->dtype != INF_DT_F16 && t->dtype != INF_DT_BF16) {
        inf_tensor_row_f32(t, row, out);
        return;
    }
    const uint16_t *h = (const uint16_t *)(const void *)(p + (size_t)row * (size_t)cols * 2);
    const int bf = t->dtype == INF_DT_BF16;
#if GEMV_X86
    if (isa == GEMV_AVX512) {
        cvt_avx512(h, bf, out, cols);
        return;
    }
    if (isa == GEMV_AVX2) {
        cvt_avx2(h, bf, out, cols);
        return;
    }
#else
    (void)isa;
#endif
    for (int64_t j = 0; j < cols; j++) out[j] = bf ? inf_bf16_to_f32(ld_u16(h, j)) : inf_f16_to_f32(ld_u16(h, j));
}

float gemv_quantize_row_i8(const float *w, int64_t cols, int8_t *q) {
    float mx = 0.0f;
    for (int64_t j = 0; j < cols; j++)
        if (fabsf(w[j]) > mx) mx = fabsf(w[j]);
    if (!(mx > 0.0f)) {
        memset(q, 0, (size_t)cols);
        return 0.0f;
    }
    float s = mx / 127.0f;
    for (int64_t j = 0; j < cols; j++) {
        long v = lrintf(w[j] / s);
        q[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    return s;
}
