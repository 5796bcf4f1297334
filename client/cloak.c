/* cloak.c — noise + rotation on the way out, inverse rotation on the way
 * back, and the numbers that size the noise (see cloak.h). */
#define _POSIX_C_SOURCE 200809L
#include "cloak.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tensor.h"

/* ---- sensitivity ------------------------------------------------------------- */

typedef struct {
    double norm;
    int64_t row;
} normrow;

static int by_norm_desc(const void *a, const void *b) {
    const normrow *x = a, *y = b;
    if (x->norm != y->norm) return x->norm > y->norm ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static double dist2(const float *a, const float *b, int64_t d) {
    /* four independent sums keep the FPU busy (no -ffast-math needed) */
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t k = 0;
    for (; k + 4 <= d; k += 4) {
        double t0 = (double)a[k] - (double)b[k], t1 = (double)a[k + 1] - (double)b[k + 1];
        double t2 = (double)a[k + 2] - (double)b[k + 2], t3 = (double)a[k + 3] - (double)b[k + 3];
        s0 += t0 * t0;
        s1 += t1 * t1;
        s2 += t2 * t2;
        s3 += t3 * t3;
    }
    for (; k < d; k++) {
        double t = (double)a[k] - (double)b[k];
        s0 += t * t;
    }
    return (s0 + s1) + (s2 + s3);
}

/* Relative slack on the triangle-inequality bound, far above the rounding
 * of the double-precision norms (~d * 2^-53), so no pair that could be the
 * maximum is ever pruned by rounding. */
#define BOUND_SLACK 1e-9

inf_status cloak_sensitivity(const inf_model *m, double *l2, inf_error *err) {
    *l2 = 0.0;
    const inf_tensor *t = &m->tok_embd;
    if (!t->data) return inf_fail(err, INF_E_ARG, "%s: this model has no embedding table (token_embd)", m->path);
    const int64_t V = inf_tensor_rows(t), d = inf_tensor_cols(t);
    if (V < 2 || d < 1)
        return inf_fail(err, INF_E_SHAPE, "%s: the embedding table has %lld rows of %lld; sensitivity needs two rows",
                        m->path, (long long)V, (long long)d);
    normrow *nr = malloc((size_t)V * sizeof *nr);
    if (!nr) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for %lld embedding norms", m->path, (long long)V);

    /* 1. The centroid c. Distances do not change under translation, and
     * ||e_i - e_j|| <= ||e_i - c|| + ||e_j - c|| is a far tighter bound than
     * with c = 0 when the rows share an offset (SmolLM2: the search stops
     * after about a hundred rows instead of 46000). */
    double *mean = calloc((size_t)d, sizeof *mean);
    int nomem = !mean;
    int64_t bad_row = V; /* the first row holding a NaN or an infinity */
#pragma omp parallel reduction(| : nomem) reduction(min : bad_row)
    {
        float *row = malloc((size_t)d * sizeof *row);
        double *acc = calloc((size_t)d, sizeof *acc);
        if (!row || !acc || !mean) nomem = 1;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < V; i++) {
            if (nomem) continue;
            inf_tensor_row_f32(t, i, row);
            int finite = 1;
            for (int64_t k = 0; k < d; k++) {
                acc[k] += row[k];
                finite &= isfinite(row[k]) != 0;
            }
            if (!finite && i < bad_row) bad_row = i;
        }
        if (row && acc && mean) {
#pragma omp critical
            for (int64_t k = 0; k < d; k++) mean[k] += acc[k];
        }
        free(row);
        free(acc);
    }
    if (nomem) {
        free(mean);
        free(nr);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory computing embedding norms", m->path);
    }
    if (bad_row < V) {
        free(mean);
        free(nr);
        return inf_fail(err, INF_E_FORMAT, "%s: embedding row %lld holds a non-finite value", m->path,
                        (long long)bad_row);
    }
    for (int64_t k = 0; k < d; k++) mean[k] /= (double)V;

    /* 2. Every row's distance n_i to c, in double. */
#pragma omp parallel reduction(| : nomem)
    {
        float *row = malloc((size_t)d * sizeof *row);
        if (!row) nomem = 1;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < V; i++) {
            if (!row) continue;
            inf_tensor_row_f32(t, i, row);
            double s = 0.0;
            for (int64_t k = 0; k < d; k++) s += ((double)row[k] - mean[k]) * ((double)row[k] - mean[k]);
            nr[i].norm = sqrt(s);
            nr[i].row = i;
        }
        free(row);
    }
    free(mean);
    if (nomem) {
        free(nr);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory computing embedding norms", m->path);
    }

    /* 3. Sorted by that norm, largest first. */
    qsort(nr, (size_t)V, sizeof *nr, by_norm_desc);

    /* 4. Branch and bound on n_i = ||e_i - c||. A pair {i, j} is looked at
     * once, when the later of the two in norm order (i) is the candidate;
     * only the j < i with n_i + n_j > best can beat best, and they are a
     * prefix of the order. Once n_i + n_0 <= best no later candidate can
     * either. Rows of that prefix are dequantized once into `cache`
     * (position order). */
    inf_status st = INF_OK;
    double best = 0.0;
    float *cache = NULL, *cand = malloc((size_t)d * sizeof *cand);
    int64_t cached = 0, cap = 0;
    if (!cand) st = inf_fail(err, INF_E_NOMEM, "%s: out of memory", m->path);
    for (int64_t i = 1; st == INF_OK && i < V; i++) {
        const double ni = nr[i].norm;
        const double lim = best * (1.0 - BOUND_SLACK);
        if (ni + nr[0].norm <= lim) break;
        /* J = #positions p < i with n_p + n_i > lim (norms descend). */
        int64_t lo = 0, hi = i;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (nr[mid].norm + ni > lim) lo = mid + 1;
            else hi = mid;
        }
        const int64_t J = lo;
        if (J == 0) continue;
        if (J > cached) {
            if (J > cap) {
                int64_t ncap = cap ? cap : 64;
                while (ncap < J) ncap *= 2;
                if (ncap > V) ncap = V;
                float *nc = realloc(cache, (size_t)ncap * (size_t)d * sizeof *nc);
                if (!nc) {
                    st = inf_fail(err, INF_E_NOMEM, "%s: out of memory caching embedding rows", m->path);
                    break;
                }
                cache = nc;
                cap = ncap;
            }
#pragma omp parallel for schedule(static) if (J - cached > 64)
            for (int64_t p = cached; p < J; p++) inf_tensor_row_f32(t, nr[p].row, cache + (size_t)p * (size_t)d);
            cached = J;
        }
        const float *ri = cand;
        if (i < cached) ri = cache + (size_t)i * (size_t)d;
        else inf_tensor_row_f32(t, nr[i].row, cand);
        double mx = 0.0;
#pragma omp parallel for schedule(static) reduction(max : mx) if (J > 256)
        for (int64_t p = 0; p < J; p++) {
            double s = dist2(ri, cache + (size_t)p * (size_t)d, d);
            if (s > mx) mx = s;
        }
        mx = sqrt(mx);
        if (mx > best) best = mx;
    }
    free(cache);
    free(cand);
    free(nr);
    if (st == INF_OK) *l2 = best;
    return st;
}

/* ---- DP noise scale ------------------------------------------------------------ */

inf_status cloak_sigma_for_dp(double epsilon, double delta, double l2, double *sigma, inf_error *err) {
    *sigma = 0.0;
    if (!isfinite(epsilon) || epsilon <= 0.0)
        return inf_fail(err, INF_E_ARG, "--dp-epsilon must be a number > 0 (got %g)", epsilon);
    if (!isfinite(delta) || delta <= 0.0 || delta >= 1.0)
        return inf_fail(err, INF_E_ARG, "--dp-delta must be strictly between 0 and 1 (got %g)", delta);
    if (!isfinite(l2) || l2 < 0.0)
        return inf_fail(err, INF_E_ARG, "DP sensitivity must be a finite number >= 0 (got %g)", l2);
    *sigma = l2 * sqrt(2.0 * log(1.25 / delta)) / epsilon;
    return INF_OK;
}

/* ---- the session's cloak --------------------------------------------------------- */

static inf_status init_with_key(cloak_ctx *c, rot_ctx *rot, double sigma, const uint8_t key[32],
                                inf_error *err) {
    memset(c, 0, sizeof *c);
    if (!rot || rot->d <= 0) return inf_fail(err, INF_E_ARG, "cloak: the rotation is not initialized");
    if (!isfinite(sigma) || sigma < 0.0)
        return inf_fail(err, INF_E_ARG, "--noise-sigma must be a finite number >= 0 (got %g)", sigma);
    EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
    static const uint8_t iv[16] = {0};
    if (!e || EVP_EncryptInit_ex(e, EVP_aes_256_ctr(), NULL, key, iv) != 1) {
        EVP_CIPHER_CTX_free(e);
        return inf_fail(err, INF_E_UNSUPPORTED, "cloak: cannot set up AES-256-CTR for the noise");
    }
    c->rot = rot;
    c->sigma = sigma;
    c->rng = e;
    c->buf_pos = sizeof c->buf;
    return INF_OK;
}

inf_status cloak_init(cloak_ctx *c, rot_ctx *rot, double sigma, inf_error *err) {
    uint8_t key[32];
    if (RAND_bytes(key, sizeof key) != 1) {
        memset(c, 0, sizeof *c);
        return inf_fail(err, INF_E_IO, "cloak: RAND_bytes failed (no entropy source?)");
    }
    inf_status st = init_with_key(c, rot, sigma, key, err);
    OPENSSL_cleanse(key, sizeof key);
    return st;
}

inf_status cloak_init_seeded(cloak_ctx *c, rot_ctx *rot, double sigma, uint64_t seed, inf_error *err) {
    static const char dom[] = "infemeral cloak test noise v1";
    uint8_t msg[sizeof dom + 8], key[32];
    memcpy(msg, dom, sizeof dom);
    for (int b = 0; b < 8; b++) msg[sizeof dom + (size_t)b] = (uint8_t)(seed >> (8 * b));
    unsigned int len = 0;
    if (EVP_Digest(msg, sizeof msg, key, &len, EVP_sha256(), NULL) != 1 || len != 32) {
        memset(c, 0, sizeof *c);
        return inf_fail(err, INF_E_UNSUPPORTED, "cloak: SHA-256 failed");
    }
    inf_status st = init_with_key(c, rot, sigma, key, err);
    OPENSSL_cleanse(key, sizeof key);
    return st;
}

/* 16 keystream bytes -> two independent N(0, 1) (Box-Muller in double). */
static int gauss_pair(cloak_ctx *c, double z[2]) {
    if (c->buf_pos + 16 > sizeof c->buf) {
        int outl = 0;
        memset(c->buf, 0, sizeof c->buf);
        if (EVP_EncryptUpdate(c->rng, c->buf, &outl, c->buf, (int)sizeof c->buf) != 1 || outl != (int)sizeof c->buf)
            return -1;
        c->buf_pos = 0;
    }
    uint64_t r1 = 0, r2 = 0;
    for (int b = 7; b >= 0; b--) {
        r1 = r1 << 8 | c->buf[c->buf_pos + (size_t)b];
        r2 = r2 << 8 | c->buf[c->buf_pos + 8 + (size_t)b];
    }
    OPENSSL_cleanse(c->buf + c->buf_pos, 16);
    c->buf_pos += 16;
    double u1 = (double)((r1 >> 11) + 1) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(r2 >> 11) * 0x1p-53;       /* [0, 1) */
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    z[0] = rad * cos(th);
    z[1] = rad * sin(th);
    return 0;
}

static inf_status check_states(cloak_ctx *c, size_t n, int d, size_t *count, inf_error *err) {
    if (!c->rot || !c->rng) return inf_fail(err, INF_E_ARG, "cloak: the context is not initialized");
    if (d != c->rot->d)
        return inf_fail(err, INF_E_SHAPE, "cloak: states have dimension %d but the rotation has %d", d, c->rot->d);
    if (!inf_mul_size(n, (size_t)d, count) || !inf_mul_size(*count, sizeof(float), &(size_t){0}))
        return inf_fail(err, INF_E_RANGE, "cloak: %zu rows of %d overflow", n, d);
    return INF_OK;
}

/* x <- R x via a scratch buffer (rot_apply* need distinct input/output). */
static inf_status rotate_in_place(cloak_ctx *c, float *x, size_t n, size_t count, int transpose, inf_error *err) {
    float *tmp = malloc(count * sizeof *tmp);
    if (!tmp) return inf_fail(err, INF_E_NOMEM, "cloak: out of memory for %zu states", n);
    inf_status st = transpose ? rot_apply_t(c->rot, x, n, tmp, err) : rot_apply(c->rot, x, n, tmp, err);
    if (st == INF_OK) memcpy(x, tmp, count * sizeof *tmp);
    OPENSSL_cleanse(tmp, count * sizeof *tmp);
    free(tmp);
    return st;
}

inf_status cloak_states(cloak_ctx *c, float *x, size_t n, int d, inf_error *err) {
    size_t count = 0;
    inf_status st = check_states(c, n, d, &count, err);
    if (st || count == 0) return st;
    if (c->sigma > 0.0) {
        for (size_t k = 0; k < count; k += 2) {
            double z[2];
            if (gauss_pair(c, z) != 0) return inf_fail(err, INF_E_UNSUPPORTED, "cloak: the noise stream failed");
            x[k] = (float)((double)x[k] + c->sigma * z[0]);
            if (k + 1 < count) x[k + 1] = (float)((double)x[k + 1] + c->sigma * z[1]);
        }
    }
    return c->prerotated ? INF_OK : rotate_in_place(c, x, n, count, 0, err);
}

inf_status uncloak_states(cloak_ctx *c, float *x, size_t n, int d, inf_error *err) {
    size_t count = 0;
    inf_status st = check_states(c, n, d, &count, err);
    if (st || count == 0 || c->prerotated) return st;
    return rotate_in_place(c, x, n, count, 1, err);
}

void cloak_set_prerotated(cloak_ctx *c) { c->prerotated = true; }

void cloak_free(cloak_ctx *c) {
    if (!c) return;
    if (c->rng) EVP_CIPHER_CTX_free(c->rng); /* wipes the expanded key */
    OPENSSL_cleanse(c, sizeof *c);
}
