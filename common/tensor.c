/* tensor.c — dtype facts, half-precision conversion and per-row kernels.
 *
 * The dot kernels are the decode hot path (one token = one dot per weight
 * row). They accumulate in 8 independent f32 lanes written with GCC vector
 * extensions so the compiler emits SIMD without -ffast-math, and they are
 * compiled twice (AVX2+FMA and baseline x86-64) with the variant picked at
 * load time, so one binary runs on any x86-64 and is fast on modern ones.
 */
#include "tensor.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && \
    !defined(INF_NO_CLONES)
#define INF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define INF_CLONES
#endif

typedef float v8f __attribute__((vector_size(32)));

/* ---- half precision ------------------------------------------------------ */

float inf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            man &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t inf_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to 0 */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m*2^(e-150), half subnormal unit 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (absx >> 23) - 127 + 15;
    uint32_t m = absx & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exp: ok */
    return (uint16_t)(sign | h);
}

float inf_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t inf_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

/* ---- dtype facts --------------------------------------------------------- */

const char *inf_dtype_name(inf_dtype dt) {
    static const char *names[INF_DT__COUNT] = {
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4G", "I32", "I8", "U8",
        "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
    return (unsigned)dt < INF_DT__COUNT ? names[dt] : "?";
}

int inf_dtype_block(inf_dtype dt) {
    switch (dt) {
    case INF_DT_Q8_0:
    case INF_DT_Q4_0:
    case INF_DT_Q4_1:
    case INF_DT_Q5_0:
    case INF_DT_Q5_1: return 32;
    case INF_DT_Q4_K:
    case INF_DT_Q5_K:
    case INF_DT_Q6_K: return 256;
    case INF_DT_Q4G: return 2;
    default: return 1;
    }
}

size_t inf_dtype_block_bytes(inf_dtype dt) {
    switch (dt) {
    case INF_DT_F32: return 4;
    case INF_DT_F16:
    case INF_DT_BF16: return 2;
    case INF_DT_Q8_0: return 34;
    case INF_DT_Q4_0: return 18;
    case INF_DT_Q4_1: return 20;
    case INF_DT_Q5_0: return 22;
    case INF_DT_Q5_1: return 24;
    case INF_DT_Q4_K: return 144;
    case INF_DT_Q5_K: return 176;
    case INF_DT_Q6_K: return 210;
    case INF_DT_Q4G: return 1;
    case INF_DT_I32: return 4;
    case INF_DT_I8:
    case INF_DT_U8: return 1;
    default: return 0;
    }
}

bool inf_dtype_is_weight(inf_dtype dt) {
    switch (dt) {
    case INF_DT_F32:
    case INF_DT_F16:
    case INF_DT_BF16:
    case INF_DT_Q8_0:
    case INF_DT_Q4_0:
    case INF_DT_Q4_1:
    case INF_DT_Q5_0:
    case INF_DT_Q5_1:
    case INF_DT_Q4_K:
    case INF_DT_Q5_K:
    case INF_DT_Q6_K:
    case INF_DT_Q4G: return true;
    default: return false;
    }
}

int64_t inf_tensor_cols(const inf_tensor *t) {
    return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

int64_t inf_tensor_rows(const inf_tensor *t) {
    int64_t r = 1;
    for (int i = 0; i + 1 < t->ndim; i++) r *= t->shape[i];
    return r;
}

int64_t inf_tensor_numel(const inf_tensor *t) {
    return inf_tensor_rows(t) * inf_tensor_cols(t);
}

inf_status inf_tensor_data_bytes(inf_dtype dt, int ndim, const int64_t *shape,
                                 size_t *out, const char *name, inf_error *err) {
    if ((unsigned)dt >= INF_DT__COUNT)
        return inf_fail(err, INF_E_UNSUPPORTED, "tensor '%s': unknown dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > INF_MAX_DIMS)
        return inf_fail(err, INF_E_UNSUPPORTED, "tensor '%s': %d dimensions (at most %d supported)",
                        name, ndim, INF_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return inf_fail(err, INF_E_FORMAT, "tensor '%s': negative dimension %lld", name,
                            (long long)shape[i]);
        if (!inf_mul_size(n, (size_t)shape[i], &n))
            return inf_fail(err, INF_E_RANGE, "tensor '%s': element count overflows", name);
    }
    int64_t cols = ndim > 0 ? shape[ndim - 1] : 1;
    int blk = inf_dtype_block(dt);
    if (cols % blk != 0)
        return inf_fail(err, INF_E_SHAPE,
                        "tensor '%s': last dimension %lld is not a multiple of the %s block size %d",
                        name, (long long)cols, inf_dtype_name(dt), blk);
    if (!inf_mul_size(n / (size_t)blk, inf_dtype_block_bytes(dt), out))
        return inf_fail(err, INF_E_RANGE, "tensor '%s': byte size overflows", name);
    return INF_OK;
}

inf_status inf_tensor_expect(const inf_tensor *t, const char *name, int ndim,
                             const int64_t *expected, inf_error *err) {
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == expected[i];
    if (ok) return INF_OK;
    char got[96] = "", want[96] = "";
    size_t g = 0, w = 0;
    for (int i = 0; i < t->ndim && g < sizeof got; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    for (int i = 0; i < ndim && w < sizeof want; i++)
        w += (size_t)snprintf(want + w, sizeof want - w, i ? ", %lld" : "%lld", (long long)expected[i]);
    return inf_fail(err, INF_E_SHAPE, "tensor '%s' has shape [%s], the model config implies [%s]",
                    name, got, want);
}

/* ---- f16 lookup (decode hot path for f16 weights) ------------------------- */

static float f16_table[65536];
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void) {
    for (uint32_t i = 0; i < 65536; i++) f16_table[i] = inf_f16_to_f32((uint16_t)i);
}

static inline const float *f16_lut(void) {
    pthread_once(&f16_table_once, f16_table_init);
    return f16_table;
}

static inline float rd_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return f16_lut()[h];
}

/* ---- byte-vector helpers (shared by dequantization and dots) ---------------- */

static inline v8f v8_load(const float *x) {
    v8f v;
    memcpy(&v, x, sizeof v);
    return v;
}

static inline float v8_sum(v8f v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline void v8_store(float *y, v8f v) { memcpy(y, &v, sizeof v); }

typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));
typedef int8_t v8i8 __attribute__((vector_size(8)));
typedef int32_t v8i32 __attribute__((vector_size(32)));

/* Byte vectors widen through int32: GCC turns that into vpmovzxbd/vpmovsxbd +
 * vcvtdq2ps, whereas a direct u8->float conversion is scalarized. */
#define U8_TO_F(v) __builtin_convertvector(__builtin_convertvector((v), v8i32), v8f)

/* Integer byte lanes go to float through int32 (see U8_TO_F). */
#define I32(v) __builtin_convertvector((v), v8i32)
#define I2F(v) __builtin_convertvector((v), v8f)

static const v8i32 BIT_OF_LANE = {1, 2, 4, 8, 16, 32, 64, 128};

/* Lane i = 16 when bit i of `bits` is set, else 0 (bits above 7 ignored):
 * the fifth bit of eight consecutive Q5_0/Q5_1 weights. */
static inline v8i32 bit4_lanes(uint32_t bits) {
    v8i32 b = {0};
    b += (int32_t)(bits & 255);
    return ((b & BIT_OF_LANE) != 0) & 16;
}

/* The 32 5-bit values of a Q5_0/Q5_1 block as four 8-float vectors. */
static inline void q5_block(const uint8_t *qhp, const uint8_t *qs, v8f q[4]) {
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    v8u8 a, b;
    memcpy(&a, qs, 8);
    memcpy(&b, qs + 8, 8);
    q[0] = I2F(I32(a & 15) | bit4_lanes(qh));
    q[1] = I2F(I32(b & 15) | bit4_lanes(qh >> 8));
    q[2] = I2F(I32(a >> 4) | bit4_lanes(qh >> 16));
    q[3] = I2F(I32(b >> 4) | bit4_lanes(qh >> 24));
}

/* The 8 six-bit scales and mins of a Q4_K/Q5_K super-block (layout in
 * tensor.h). */
static inline void k_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* ---- row dequantization ---------------------------------------------------- */

/* Each weight is computed with the same f32 operations in the same order as
 * ggml's dequantize_row_* (e.g. Q4_K: (d*sc)*q - dmin*mn), so the results
 * are bit-identical; the build's ISO C mode keeps GCC from fusing them. */

INF_CLONES static void row_q5(const uint8_t *p, int64_t nb, bool has_min, float *out) {
    const size_t bytes = has_min ? 24 : 22;
    for (int64_t b = 0; b < nb; b++, p += bytes, out += 32) {
        v8f q[4];
        q5_block(p + (has_min ? 4 : 2), p + (has_min ? 8 : 6), q);
        float d = rd_f16(p);
        if (has_min) {
            float m = rd_f16(p + 2);
            for (int k = 0; k < 4; k++) v8_store(out + 8 * k, d * q[k] + m);
        } else {
            for (int k = 0; k < 4; k++) v8_store(out + 8 * k, d * (q[k] - 16.0f));
        }
    }
}

/* Plain loops: GCC vectorizes this one well by itself. */
static void row_q4_k(const uint8_t *p, int64_t nb, float *out) {
    for (int64_t b = 0; b < nb; b++, p += 144) {
        float d = rd_f16(p), dmin = rd_f16(p + 2);
        uint8_t sc[8], mn[8];
        k_scales(p + 4, sc, mn);
        const uint8_t *qs = p + 16;
        for (int r = 0; r < 4; r++, qs += 32, out += 64) {
            float d1 = d * (float)sc[2 * r], m1 = dmin * (float)mn[2 * r];
            float d2 = d * (float)sc[2 * r + 1], m2 = dmin * (float)mn[2 * r + 1];
            for (int i = 0; i < 32; i++) {
                out[i] = d1 * (float)(qs[i] & 15) - m1;
                out[i + 32] = d2 * (float)(qs[i] >> 4) - m2;
            }
        }
    }
}

INF_CLONES static void row_q5_k(const uint8_t *p, int64_t nb, float *out) {
    for (int64_t b = 0; b < nb; b++, p += 176) {
        float d = rd_f16(p), dmin = rd_f16(p + 2);
        uint8_t sc[8], mn[8];
        k_scales(p + 4, sc, mn);
        v8i32 qh[4]; /* bit j of qh[i] is bit 4 of element i of sub-block j */
        for (int k = 0; k < 4; k++) {
            v8u8 t;
            memcpy(&t, p + 16 + 8 * k, 8);
            qh[k] = I32(t);
        }
        const uint8_t *qs = p + 48;
        for (int r = 0; r < 4; r++, qs += 32, out += 64) {
            float d1 = d * (float)sc[2 * r], m1 = dmin * (float)mn[2 * r];
            float d2 = d * (float)sc[2 * r + 1], m2 = dmin * (float)mn[2 * r + 1];
            for (int k = 0; k < 4; k++) {
                v8u8 a;
                memcpy(&a, qs + 8 * k, 8);
                v8i32 lo = I32(a & 15) | (((qh[k] >> (2 * r)) & 1) << 4);
                v8i32 hi = I32(a >> 4) | (((qh[k] >> (2 * r + 1)) & 1) << 4);
                v8_store(out + 8 * k, d1 * I2F(lo) - m1);
                v8_store(out + 32 + 8 * k, d2 * I2F(hi) - m2);
            }
        }
    }
}

INF_CLONES static void row_q6_k(const uint8_t *p, int64_t nb, float *out) {
    for (int64_t b = 0; b < nb; b++, p += 210) {
        float d = rd_f16(p + 208);
        for (int h = 0; h < 2; h++, out += 128) {
            const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(p + 192 + 8 * h);
            for (int i = 0; i < 32; i += 8) {
                int s = i / 16;
                v8u8 ta, tb, th;
                memcpy(&ta, ql + i, 8);
                memcpy(&tb, ql + 32 + i, 8);
                memcpy(&th, qh + i, 8);
                v8i32 A = I32(ta), B = I32(tb), H = I32(th);
                v8_store(out + i, (d * (float)sc[s]) * I2F(((A & 15) | ((H & 3) << 4)) - 32));
                v8_store(out + 32 + i, (d * (float)sc[s + 2]) * I2F(((B & 15) | (((H >> 2) & 3) << 4)) - 32));
                v8_store(out + 64 + i, (d * (float)sc[s + 4]) * I2F(((A >> 4) | (((H >> 4) & 3) << 4)) - 32));
                v8_store(out + 96 + i, (d * (float)sc[s + 6]) * I2F(((B >> 4) | (((H >> 6) & 3) << 4)) - 32));
            }
        }
    }
}

void inf_tensor_row_f32(const inf_tensor *t, int64_t row, float *out) {
    int64_t cols = inf_tensor_cols(t);
    size_t row_bytes = (size_t)(cols / inf_dtype_block(t->dtype)) * inf_dtype_block_bytes(t->dtype);
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * row_bytes;
    switch (t->dtype) {
    case INF_DT_F32: memcpy(out, p, (size_t)cols * 4); break;
    case INF_DT_F16: {
        const float *lut = f16_lut();
        for (int64_t j = 0; j < cols; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            out[j] = lut[h];
        }
        break;
    }
    case INF_DT_BF16:
        for (int64_t j = 0; j < cols; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            out[j] = inf_bf16_to_f32(h);
        }
        break;
    case INF_DT_Q8_0:
        for (int64_t b = 0; b < cols / 32; b++, p += 34) {
            float d = rd_f16(p);
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < 32; j++) out[b * 32 + j] = d * (float)q[j];
        }
        break;
    case INF_DT_Q4_0:
        for (int64_t b = 0; b < cols / 32; b++, p += 18) {
            float d = rd_f16(p);
            const uint8_t *qs = p + 2;
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = d * (float)((int)(qs[j] & 15) - 8);
                out[b * 32 + j + 16] = d * (float)((int)(qs[j] >> 4) - 8);
            }
        }
        break;
    case INF_DT_Q4_1:
        for (int64_t b = 0; b < cols / 32; b++, p += 20) {
            float d = rd_f16(p), m = rd_f16(p + 2);
            const uint8_t *qs = p + 4;
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = d * (float)(qs[j] & 15) + m;
                out[b * 32 + j + 16] = d * (float)(qs[j] >> 4) + m;
            }
        }
        break;
    case INF_DT_Q5_0: row_q5(p, cols / 32, false, out); break;
    case INF_DT_Q5_1: row_q5(p, cols / 32, true, out); break;
    case INF_DT_Q4_K: row_q4_k(p, cols / 256, out); break;
    case INF_DT_Q5_K: row_q5_k(p, cols / 256, out); break;
    case INF_DT_Q6_K: row_q6_k(p, cols / 256, out); break;
    case INF_DT_Q4G: {
        int g = t->group;
        int64_t ng = cols / g;
        const uint16_t *sc = t->scales + row * ng;
        const uint8_t *zr = t->zeros + row * ng;
        const float *lut = f16_lut();
        for (int64_t k = 0; k < ng; k++) {
            float s = lut[sc[k]], z = (float)zr[k];
            for (int j = 0; j < g; j += 2) {
                uint8_t byte = p[(k * g + j) / 2];
                out[k * g + j] = ((float)(byte & 15) - z) * s;
                out[k * g + j + 1] = ((float)(byte >> 4) - z) * s;
            }
        }
        break;
    }
    default: memset(out, 0, (size_t)cols * sizeof *out); break;
    }
}

/* ---- row dot products -------------------------------------------------------- */

INF_CLONES static float dot_f32(const float *w, const float *x, int64_t n) {
    v8f acc0 = {0}, acc1 = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        acc0 += v8_load(w + j) * v8_load(x + j);
        acc1 += v8_load(w + j + 8) * v8_load(x + j + 8);
    }
    float s = v8_sum(acc0 + acc1);
    for (; j < n; j++) {
        float wj;
        memcpy(&wj, w + j, sizeof wj); /* files may place f32 data unaligned */
        s += wj * x[j];
    }
    return s;
}

INF_CLONES static float dot_f16(const uint8_t *p, const float *x, int64_t n) {
    const float *lut = f16_lut();
    v8f acc = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint16_t h[8];
        memcpy(h, p + 2 * j, 16);
        v8f w = {lut[h[0]], lut[h[1]], lut[h[2]], lut[h[3]],
                 lut[h[4]], lut[h[5]], lut[h[6]], lut[h[7]]};
        acc += w * v8_load(x + j);
    }
    float s = v8_sum(acc);
    for (; j < n; j++) {
        uint16_t h;
        memcpy(&h, p + 2 * j, 2);
        s += lut[h] * x[j];
    }
    return s;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(INF_NO_CLONES)
/* With F16C the hardware converts 8 halves per instruction (vcvtph2ps);
 * without it the lookup table above is the fast path, so this variant is
 * picked at run time rather than cloned. Both are exact conversions. */
typedef _Float16 v8h __attribute__((vector_size(16)));

__attribute__((target("arch=x86-64-v3"))) static float dot_f16_f16c(const uint8_t *p, const float *x, int64_t n) {
    v8f acc0 = {0}, acc1 = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        v8h h0, h1;
        memcpy(&h0, p + 2 * j, 16);
        memcpy(&h1, p + 2 * j + 16, 16);
        acc0 += __builtin_convertvector(h0, v8f) * v8_load(x + j);
        acc1 += __builtin_convertvector(h1, v8f) * v8_load(x + j + 8);
    }
    float s = v8_sum(acc0 + acc1);
    for (; j < n; j++) {
        uint16_t h;
        memcpy(&h, p + 2 * j, 2);
        s += inf_f16_to_f32(h) * x[j];
    }
    return s;
}

static int has_f16c(void) {
    static int v = -1; /* benign race: every thread computes the same value */
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return v;
}
#define DOT_F16(p, x, n) (has_f16c() ? dot_f16_f16c(p, x, n) : dot_f16(p, x, n))
#else
#define DOT_F16(p, x, n) dot_f16(p, x, n)
#endif

INF_CLONES static float dot_bf16(const uint8_t *p, const float *x, int64_t n) {
    v8f acc = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        uint16_t h[8];
        memcpy(h, p + 2 * j, 16);
        float w[8];
        for (int k = 0; k < 8; k++) w[k] = inf_bf16_to_f32(h[k]);
        acc += v8_load(w) * v8_load(x + j);
    }
    float s = v8_sum(acc);
    for (; j < n; j++) {
        uint16_t h;
        memcpy(&h, p + 2 * j, 2);
        s += inf_bf16_to_f32(h) * x[j];
    }
    return s;
}

/* 16 packed bytes -> the 8-float vectors of their low and high nibbles
 * (elements 0-7, 8-15, 16-23, 24-31 of a GGML 4-bit block) */
static inline void nibbles(const uint8_t *qs, v8f *lo0, v8f *lo1, v8f *hi0, v8f *hi1) {
    v8u8 a, b;
    memcpy(&a, qs, 8);
    memcpy(&b, qs + 8, 8);
    *lo0 = U8_TO_F(a & 15);
    *lo1 = U8_TO_F(b & 15);
    *hi0 = U8_TO_F(a >> 4);
    *hi1 = U8_TO_F(b >> 4);
}

/* The block kernels keep vector accumulators across blocks, scaled per
 * block by broadcasting d (and m), and reduce horizontally once per row. */

INF_CLONES static float dot_q8_0(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0};
    for (int64_t b = 0; b < nb; b++, p += 34, x += 32) {
        uint16_t h;
        memcpy(&h, p, 2);
        v8i8 q0, q1, q2, q3;
        memcpy(&q0, p + 2, 8);
        memcpy(&q1, p + 10, 8);
        memcpy(&q2, p + 18, 8);
        memcpy(&q3, p + 26, 8);
        v8f blk = U8_TO_F(q0) * v8_load(x) + U8_TO_F(q1) * v8_load(x + 8) +
                  U8_TO_F(q2) * v8_load(x + 16) + U8_TO_F(q3) * v8_load(x + 24);
        acc += lut[h] * blk;
    }
    return v8_sum(acc);
}

INF_CLONES static float dot_q4_0(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0};
    for (int64_t b = 0; b < nb; b++, p += 18, x += 32) {
        uint16_t h;
        memcpy(&h, p, 2);
        v8f lo0, lo1, hi0, hi1;
        nibbles(p + 2, &lo0, &lo1, &hi0, &hi1);
        v8f blk = (lo0 - 8.0f) * v8_load(x) + (lo1 - 8.0f) * v8_load(x + 8) +
                  (hi0 - 8.0f) * v8_load(x + 16) + (hi1 - 8.0f) * v8_load(x + 24);
        acc += lut[h] * blk;
    }
    return v8_sum(acc);
}

INF_CLONES static float dot_q4_1(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0}, accm = {0};
    for (int64_t b = 0; b < nb; b++, p += 20, x += 32) {
        uint16_t hd, hm;
        memcpy(&hd, p, 2);
        memcpy(&hm, p + 2, 2);
        v8f lo0, lo1, hi0, hi1;
        nibbles(p + 4, &lo0, &lo1, &hi0, &hi1);
        v8f x0 = v8_load(x), x1 = v8_load(x + 8), x2 = v8_load(x + 16), x3 = v8_load(x + 24);
        acc += lut[hd] * (lo0 * x0 + lo1 * x1 + hi0 * x2 + hi1 * x3);
        accm += lut[hm] * ((x0 + x1) + (x2 + x3));
    }
    return v8_sum(acc) + v8_sum(accm);
}

INF_CLONES static float dot_q5_0(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0};
    for (int64_t b = 0; b < nb; b++, p += 22, x += 32) {
        uint16_t h;
        memcpy(&h, p, 2);
        v8f q[4];
        q5_block(p + 2, p + 6, q);
        v8f blk = (q[0] - 16.0f) * v8_load(x) + (q[1] - 16.0f) * v8_load(x + 8) +
                  (q[2] - 16.0f) * v8_load(x + 16) + (q[3] - 16.0f) * v8_load(x + 24);
        acc += lut[h] * blk;
    }
    return v8_sum(acc);
}

INF_CLONES static float dot_q5_1(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0}, accm = {0};
    for (int64_t b = 0; b < nb; b++, p += 24, x += 32) {
        uint16_t hd, hm;
        memcpy(&hd, p, 2);
        memcpy(&hm, p + 2, 2);
        v8f q[4];
        q5_block(p + 4, p + 8, q);
        v8f x0 = v8_load(x), x1 = v8_load(x + 8), x2 = v8_load(x + 16), x3 = v8_load(x + 24);
        acc += lut[hd] * (q[0] * x0 + q[1] * x1 + q[2] * x2 + q[3] * x3);
        accm += lut[hm] * ((x0 + x1) + (x2 + x3));
    }
    return v8_sum(acc) + v8_sum(accm);
}

/* Q4_K and Q5_K: per sub-block, sum q*x and sum x in vectors, then scale by
 * d*sc and dmin*mn; the min term is subtracted once at the end. */
INF_CLONES static float dot_q4_k(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0}, accm = {0};
    for (int64_t b = 0; b < nb; b++, p += 144, x += 256) {
        uint16_t hd, hm;
        memcpy(&hd, p, 2);
        memcpy(&hm, p + 2, 2);
        float d = lut[hd], dmin = lut[hm];
        uint8_t sc[8], mn[8];
        k_scales(p + 4, sc, mn);
        const uint8_t *qs = p + 16;
        for (int r = 0; r < 4; r++, qs += 32) {
            const float *xl = x + 64 * r, *xh = xl + 32;
            v8f slo = {0}, shi = {0}, xlo = {0}, xhi = {0};
            for (int k = 0; k < 4; k++) {
                v8u8 a;
                memcpy(&a, qs + 8 * k, 8);
                v8f x0 = v8_load(xl + 8 * k), x1 = v8_load(xh + 8 * k);
                slo += U8_TO_F(a & 15) * x0;
                shi += U8_TO_F(a >> 4) * x1;
                xlo += x0;
                xhi += x1;
            }
            acc += (d * (float)sc[2 * r]) * slo + (d * (float)sc[2 * r + 1]) * shi;
            accm += (dmin * (float)mn[2 * r]) * xlo + (dmin * (float)mn[2 * r + 1]) * xhi;
        }
    }
    return v8_sum(acc) - v8_sum(accm);
}

INF_CLONES static float dot_q5_k(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0}, accm = {0};
    for (int64_t b = 0; b < nb; b++, p += 176, x += 256) {
        uint16_t hd, hm;
        memcpy(&hd, p, 2);
        memcpy(&hm, p + 2, 2);
        float d = lut[hd], dmin = lut[hm];
        uint8_t sc[8], mn[8];
        k_scales(p + 4, sc, mn);
        v8i32 qh[4]; /* the 32 qh bytes, widened once per super-block */
        for (int k = 0; k < 4; k++) {
            v8u8 t;
            memcpy(&t, p + 16 + 8 * k, 8);
            qh[k] = I32(t);
        }
        const uint8_t *qs = p + 48;
        for (int r = 0; r < 4; r++, qs += 32) {
            const float *xl = x + 64 * r, *xh = xl + 32;
            v8f slo = {0}, shi = {0}, xlo = {0}, xhi = {0};
            for (int k = 0; k < 4; k++) {
                v8u8 a;
                memcpy(&a, qs + 8 * k, 8);
                v8i32 lo = I32(a & 15) | (((qh[k] >> (2 * r)) & 1) << 4);
                v8i32 hi = I32(a >> 4) | (((qh[k] >> (2 * r + 1)) & 1) << 4);
                v8f x0 = v8_load(xl + 8 * k), x1 = v8_load(xh + 8 * k);
                slo += I2F(lo) * x0;
                shi += I2F(hi) * x1;
                xlo += x0;
                xhi += x1;
            }
            acc += (d * (float)sc[2 * r]) * slo + (d * (float)sc[2 * r + 1]) * shi;
            accm += (dmin * (float)mn[2 * r]) * xlo + (dmin * (float)mn[2 * r + 1]) * xhi;
        }
    }
    return v8_sum(acc) - v8_sum(accm);
}

/* Q6_K: per half super-block, 16 weights share a scale; each 8-lane step
 * decodes the four weight streams (i, 32+i, 64+i, 96+i) that one run of ql
 * and qh bytes feeds. */
INF_CLONES static float dot_q6_k(const uint8_t *p, const float *x, int64_t nb) {
    const float *lut = f16_lut();
    v8f acc = {0};
    for (int64_t b = 0; b < nb; b++, p += 210, x += 256) {
        uint16_t hd;
        memcpy(&hd, p + 208, 2);
        float d = lut[hd];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(p + 192 + 8 * h);
            const float *xs = x + 128 * h;
            for (int u = 0; u < 2; u++) {
                v8f s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0};
                for (int c = 0; c < 2; c++) {
                    int i = 16 * u + 8 * c;
                    v8u8 ta, tb, th;
                    memcpy(&ta, ql + i, 8);
                    memcpy(&tb, ql + 32 + i, 8);
                    memcpy(&th, qh + i, 8);
                    v8i32 A = I32(ta), B = I32(tb), H = I32(th);
                    s1 += I2F(((A & 15) | ((H & 3) << 4)) - 32) * v8_load(xs + i);
                    s2 += I2F(((B & 15) | (((H >> 2) & 3) << 4)) - 32) * v8_load(xs + 32 + i);
                    s3 += I2F(((A >> 4) | (((H >> 4) & 3) << 4)) - 32) * v8_load(xs + 64 + i);
                    s4 += I2F(((B >> 4) | (((H >> 6) & 3) << 4)) - 32) * v8_load(xs + 96 + i);
                }
                acc += (d * (float)sc[u]) * s1 + (d * (float)sc[u + 2]) * s2 +
                       (d * (float)sc[u + 4]) * s3 + (d * (float)sc[u + 6]) * s4;
            }
        }
    }
    return v8_sum(acc);
}

INF_CLONES static float dot_q4g(const inf_tensor *t, int64_t row, const float *x) {
    int64_t cols = inf_tensor_cols(t);
    int g = t->group;
    int64_t ng = cols / g;
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * (size_t)(cols / 2);
    const uint16_t *sc = t->scales + row * ng;
    const uint8_t *zr = t->zeros + row * ng;
    const float *lut = f16_lut();
    float s = 0.0f;
    for (int64_t k = 0; k < ng; k++) {
        v8f acc = {0}, xs = {0};
        const uint8_t *q = p + k * g / 2;
        const float *xg = x + k * g;
        for (int j = 0; j < g; j += 8) {
            const uint8_t *b = q + j / 2;
            v8f w = {b[0] & 15, b[0] >> 4, b[1] & 15, b[1] >> 4,
                     b[2] & 15, b[2] >> 4, b[3] & 15, b[3] >> 4};
            v8f xv = v8_load(xg + j);
            acc += w * xv;
            xs += xv;
        }
        float sk = lut[sc[k]];
        s += sk * (v8_sum(acc) - (float)zr[k] * v8_sum(xs));
    }
    return s;
}

float inf_tensor_row_dot(const inf_tensor *t, int64_t row, const float *x) {
    int64_t cols = inf_tensor_cols(t);
    size_t row_bytes = (size_t)(cols / inf_dtype_block(t->dtype)) * inf_dtype_block_bytes(t->dtype);
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * row_bytes;
    switch (t->dtype) {
    case INF_DT_F32: return dot_f32((const float *)(const void *)p, x, cols);
    case INF_DT_F16: return DOT_F16(p, x, cols);
    case INF_DT_BF16: return dot_bf16(p, x, cols);
    case INF_DT_Q8_0: return dot_q8_0(p, x, cols / 32);
    case INF_DT_Q4_0: return dot_q4_0(p, x, cols / 32);
    case INF_DT_Q4_1: return dot_q4_1(p, x, cols / 32);
    case INF_DT_Q5_0: return dot_q5_0(p, x, cols / 32);
    case INF_DT_Q5_1: return dot_q5_1(p, x, cols / 32);
    case INF_DT_Q4_K: return dot_q4_k(p, x, cols / 256);
    case INF_DT_Q5_K: return dot_q5_k(p, x, cols / 256);
    case INF_DT_Q6_K: return dot_q6_k(p, x, cols / 256);
    case INF_DT_Q4G: return dot_q4g(t, row, x);
    default: return NAN;
    }
}
