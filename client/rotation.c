/* rotation.c — the secret Haar-random rotation: seed files, Q from the seed,
 * its public fingerprint and a cached Q that multiplies (see rotation.h for
 * the exact construction). */
#define _POSIX_C_SOURCE 200809L
#include "rotation.h"

#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <lapacke.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "tensor.h"

static const char ROT_INFO[] = "infemeral rotation v1";
static const char ROT_FP_DOMAIN[] = "infemeral rotation fingerprint v1";

static inf_status check_dim(int d, inf_error *err) {
    if (d < ROT_MIN_DIM || d > ROT_MAX_DIM)
        return inf_fail(err, INF_E_RANGE, "rotation: dimension %d is outside [%d, %d]", d, ROT_MIN_DIM,
                        ROT_MAX_DIM);
    return INF_OK;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- seeds ------------------------------------------------------------------ */

inf_status rot_seed_generate(rot_seed *seed, inf_error *err) {
    if (RAND_bytes(seed->b, ROT_SEED_BYTES) != 1)
        return inf_fail(err, INF_E_IO, "rotation seed: RAND_bytes failed (no entropy source?)");
    return INF_OK;
}

void rot_seed_wipe(rot_seed *seed) {
    if (seed) OPENSSL_cleanse(seed->b, sizeof seed->b);
}

inf_status rot_seed_write(const char *path, const rot_seed *seed, inf_error *err) {
    static const char hexd[] = "0123456789abcdef";
    char text[2 * ROT_SEED_BYTES + 1];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return inf_fail(err, INF_E_IO,
                            "%s: already exists; a rotation seed is never overwritten (bundles prepared "
                            "with it would stop matching) — remove it first or choose another path",
                            path);
        return inf_fail(err, INF_E_IO, "%s: cannot create the seed file: %s", path, strerror(errno));
    }
    /* The umask can only remove bits from 0600, but make it exactly 0600. */
    if (fchmod(fd, 0600) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return inf_fail(err, INF_E_IO, "%s: cannot set mode 0600: %s", path, strerror(e));
    }
    for (int i = 0; i < ROT_SEED_BYTES; i++) {
        text[2 * i] = hexd[seed->b[i] >> 4];
        text[2 * i + 1] = hexd[seed->b[i] & 15];
    }
    text[2 * ROT_SEED_BYTES] = '\n';
    int bad = inf_write_all(fd, text, sizeof text) != 0 || fsync(fd) != 0;
    int e = errno;
    OPENSSL_cleanse(text, sizeof text);
    if (close(fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(path);
        return inf_fail(err, INF_E_IO, "%s: cannot write the seed file: %s", path, strerror(e));
    }
    (void)inf_fsync_parent(path);
    return INF_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

inf_status rot_seed_read(const char *path, rot_seed *seed, inf_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return inf_fail(err, INF_E_IO, "%s: cannot open the rotation seed file: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return inf_fail(err, INF_E_IO, "%s: cannot stat the rotation seed file: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return inf_fail(err, INF_E_FORMAT, "%s: the rotation seed is not a regular file", path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return inf_fail(err, INF_E_ARG,
                        "%s: the rotation seed file is accessible by group or others (mode %04o); it is "
                        "a secret — run `chmod 600 %s` and try again",
                        path, (unsigned)(sb.st_mode & 07777), path);
    }
    /* One byte more than the longest valid file tells "too long" apart. */
    char buf[2 * ROT_SEED_BYTES + 2];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t r = read(fd, buf + got, sizeof buf - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, sizeof buf);
            return inf_fail(err, INF_E_IO, "%s: cannot read the rotation seed file: %s", path, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    inf_status st = INF_OK;
    int ok = got == 2 * ROT_SEED_BYTES || (got == 2 * ROT_SEED_BYTES + 1 && buf[2 * ROT_SEED_BYTES] == '\n');
    for (int i = 0; ok && i < ROT_SEED_BYTES; i++) {
        int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);
        if (hi < 0 || lo < 0) ok = 0;
        else seed->b[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!ok) {
        rot_seed_wipe(seed);
        st = inf_fail(err, INF_E_FORMAT,
                      "%s: not a rotation seed file (expected exactly 64 hex characters and an optional "
                      "newline, found %zu%s bytes)",
                      path, got, got == sizeof buf ? " or more" : "");
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return st;
}

/* ---- Q from the seed --------------------------------------------------------- */

static inf_status derive_key(const rot_seed *seed, int d, uint8_t key[32], inf_error *err) {
    uint8_t info[sizeof ROT_INFO - 1 + 4];
    memcpy(info, ROT_INFO, sizeof ROT_INFO - 1);
    put_be32(info + sizeof ROT_INFO - 1, (uint32_t)d);
    inf_status st = INF_OK;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!kctx) {
        st = inf_fail(err, INF_E_UNSUPPORTED, "rotation: OpenSSL has no HKDF");
    } else {
        OSSL_PARAM params[4];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)seed->b, ROT_SEED_BYTES);
        params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof info);
        params[3] = OSSL_PARAM_construct_end();
        if (EVP_KDF_derive(kctx, key, 32, params) != 1)
            st = inf_fail(err, INF_E_UNSUPPORTED, "rotation: HKDF-SHA256 failed");
    }
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return st;
}

static uint64_t get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Fills columns [j0, j1) of the column-major d x d matrix A with standard
 * normals from the keystream (see rotation.h). Each column starts at its own
 * counter, so the result does not depend on how columns are split among
 * threads. buf: ceil(d/2)*16 bytes. Returns 0 on success. */
static int gauss_columns(const uint8_t key[32], int d, int j0, int j1, double *A, uint8_t *buf) {
    const size_t pairs = ((size_t)d + 1) / 2;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return -1;
    int rc = 0;
    memset(buf, 0, pairs * 16);
    for (int j = j0; j < j1 && rc == 0; j++) {
        uint8_t iv[16] = {0};
        uint64_t ctr = (uint64_t)j * pairs;
        for (int b = 0; b < 8; b++) iv[15 - b] = (uint8_t)(ctr >> (8 * b));
        int outl = 0;
        /* The buffer holds zeros on entry (reset below), so the output is
         * the keystream itself. */
        if (EVP_EncryptInit_ex(c, EVP_aes_256_ctr(), NULL, key, iv) != 1 ||
            EVP_EncryptUpdate(c, buf, &outl, buf, (int)(pairs * 16)) != 1 || (size_t)outl != pairs * 16) {
            rc = -1;
            break;
        }
        double *col = A + (size_t)j * (size_t)d;
        for (size_t p = 0; p < pairs; p++) {
            uint64_t r1 = get_le64(buf + 16 * p), r2 = get_le64(buf + 16 * p + 8);
            double u1 = (double)((r1 >> 11) + 1) * 0x1p-53; /* (0, 1] */
            double u2 = (double)(r2 >> 11) * 0x1p-53;       /* [0, 1) */
            double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
            col[2 * p] = rad * cos(th);
            if (2 * p + 1 < (size_t)d) col[2 * p + 1] = rad * sin(th);
        }
        OPENSSL_cleanse(buf, pairs * 16); /* back to zeros for the next column */
    }
    EVP_CIPHER_CTX_free(c);
    return rc;
}

inf_status rot_matrix(const rot_seed *seed, int d, float **q, inf_error *err) {
    *q = NULL;
    inf_status st = check_dim(d, err);
    if (st) return st;
    const size_t n = (size_t)d;
    size_t nn, abytes, qbytes;
    if (!inf_mul_size(n, n, &nn) || !inf_mul_size(nn, sizeof(double), &abytes) ||
        !inf_mul_size(nn, sizeof(float), &qbytes))
        return inf_fail(err, INF_E_RANGE, "rotation: %d x %d does not fit in memory", d, d);
    uint8_t key[32];
    st = derive_key(seed, d, key, err);
    if (st) return st;

    double *A = malloc(abytes);
    double *tau = malloc(n * sizeof(double));
    float *out = malloc(qbytes);
    signed char *sgn = malloc(n);
    if (!A || !tau || !out || !sgn) {
        st = inf_fail(err, INF_E_NOMEM, "rotation: out of memory for a %d x %d matrix", d, d);
        goto done;
    }

    /* A: iid N(0, 1), column-major. */
    int bad = 0;
#pragma omp parallel reduction(| : bad)
    {
        uint8_t *buf = malloc(((n + 1) / 2) * 16);
        /* every thread reaches the worksharing loop, buffer or not */
#pragma omp for schedule(static)
        for (int j = 0; j < d; j += 16) {
            int j1 = j + 16 < d ? j + 16 : d;
            if (!buf || gauss_columns(key, d, j, j1, A, buf) != 0) bad = 1;
        }
        if (buf) {
            OPENSSL_cleanse(buf, ((n + 1) / 2) * 16);
            free(buf);
        }
    }
    if (bad) {
        st = inf_fail(err, INF_E_NOMEM, "rotation: generating the AES-256-CTR stream failed");
        goto done;
    }

    /* A = QR; keep sign(R_jj); A <- Q. */
    lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, d, d, A, d, tau);
    if (info != 0) {
        st = inf_fail(err, info < 0 ? INF_E_ARG : INF_E_NOMEM, "rotation: LAPACKE_dgeqrf failed (info %d)",
                      (int)info);
        goto done;
    }
    for (size_t j = 0; j < n; j++) sgn[j] = A[j * n + j] < 0 ? -1 : 1;
    info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, d, d, d, A, d, tau);
    if (info != 0) {
        st = inf_fail(err, info < 0 ? INF_E_ARG : INF_E_NOMEM, "rotation: LAPACKE_dorgqr failed (info %d)",
                      (int)info);
        goto done;
    }

    /* out[i][j] = Q[i][j] * sign(R_jj): column-major double -> row-major
     * float, in tiles so both sides stay in cache. */
    const int T = 64;
#pragma omp parallel for schedule(static)
    for (int i0 = 0; i0 < d; i0 += T) {
        int i1 = i0 + T < d ? i0 + T : d;
        for (int j0 = 0; j0 < d; j0 += T) {
            int j1 = j0 + T < d ? j0 + T : d;
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++)
                    out[(size_t)i * n + (size_t)j] = (float)(A[(size_t)j * n + (size_t)i] * sgn[j]);
        }
    }
    *q = out;
    out = NULL;

done:
    OPENSSL_cleanse(key, sizeof key);
    if (A) OPENSSL_cleanse(A, abytes);
    if (tau) OPENSSL_cleanse(tau, n * sizeof(double));
    if (sgn) OPENSSL_cleanse(sgn, n);
    free(A);
    free(tau);
    free(sgn);
    free(out);
    return st;
}

void rot_matrix_free(float *q, int d) {
    if (!q) return;
    if (d > 0) OPENSSL_cleanse(q, (size_t)d * (size_t)d * sizeof(float));
    free(q);
}

inf_status rot_fingerprint(const rot_seed *seed, int d, char out[ROT_FINGERPRINT_LEN], inf_error *err) {
    out[0] = '\0';
    inf_status st = check_dim(d, err);
    if (st) return st;
    uint8_t msg[sizeof ROT_FP_DOMAIN + 4 + ROT_SEED_BYTES]; /* domain, NUL, be32(d), seed */
    memcpy(msg, ROT_FP_DOMAIN, sizeof ROT_FP_DOMAIN);       /* includes the NUL separator */
    put_be32(msg + sizeof ROT_FP_DOMAIN, (uint32_t)d);
    memcpy(msg + sizeof ROT_FP_DOMAIN + 4, seed->b, ROT_SEED_BYTES);
    uint8_t md[32];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(msg, sizeof msg, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
    OPENSSL_cleanse(msg, sizeof msg);
    if (!ok) return inf_fail(err, INF_E_UNSUPPORTED, "rotation: SHA-256 failed");
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hexd[md[i] >> 4];
        out[2 * i + 1] = hexd[md[i] & 15];
    }
    out[64] = '\0';
    return INF_OK;
}

/* ---- the cached Q ------------------------------------------------------------- */

inf_status rot_ctx_init(rot_ctx *ctx, const rot_seed *seed, int d, bool f16, inf_error *err) {
    memset(ctx, 0, sizeof *ctx);
    inf_status st = check_dim(d, err);
    if (st) return st;
    if (pthread_mutex_init(&ctx->mu, NULL) != 0)
        return inf_fail(err, INF_E_NOMEM, "rotation: cannot create a mutex");
    ctx->seed = *seed;
    ctx->d = d;
    ctx->f16 = f16;
    return INF_OK;
}

inf_status rot_ctx_ready(rot_ctx *ctx, inf_error *err) {
    if (ctx->d <= 0) return inf_fail(err, INF_E_ARG, "rotation: the context was not initialized");
    inf_status st = INF_OK;
    pthread_mutex_lock(&ctx->mu);
    if (!ctx->ready) {
        float *q = NULL;
        st = rot_matrix(&ctx->seed, ctx->d, &q, err);
        if (st == INF_OK && ctx->f16) {
            size_t nn = (size_t)ctx->d * (size_t)ctx->d;
            uint16_t *h = malloc(nn * sizeof *h);
            if (!h) {
                st = inf_fail(err, INF_E_NOMEM, "rotation: out of memory for the f16 copy of Q");
            } else {
#pragma omp parallel for schedule(static)
                for (size_t i = 0; i < nn; i++) h[i] = inf_f32_to_f16(q[i]);
                ctx->q16 = h;
            }
            rot_matrix_free(q, ctx->d);
            q = NULL;
        }
        if (st == INF_OK) {
            ctx->q32 = q;
            ctx->ready = true;
        }
    }
    pthread_mutex_unlock(&ctx->mu);
    return st;
}

static inf_status apply_args(rot_ctx *ctx, const float *x, size_t n, float *y, inf_error *err) {
    if (n > (size_t)INT_MAX) return inf_fail(err, INF_E_RANGE, "rotation: %zu rows is too many at once", n);
    if (n > 0 && x == y) return inf_fail(err, INF_E_ARG, "rotation: input and output must not overlap");
    return rot_ctx_ready(ctx, err);
}

/* Eight partial sums in lanes the compiler can vectorize. */
static float dot(const float *a, const float *b, int d) {
    float acc[8] = {0};
    int c = 0;
    for (; c + 8 <= d; c += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[c + k] * b[c + k];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < d; c++) s += a[c] * b[c];
    return s;
}

/* y[i][r] = sum_c Q[r][c] x[i][c], Q in f16. Threads split the rows r of Q;
 * each converts its row a 256-wide segment at a time (a stack buffer, so
 * nothing can fail) and dots it with all n inputs. */
static void apply_f16(const uint16_t *q, int d, const float *x, size_t n, float *y) {
    const int B = 256;
#pragma omp parallel
    {
        float seg[256];
#pragma omp for schedule(static)
        for (int r = 0; r < d; r++) {
            const uint16_t *qr = q + (size_t)r * (size_t)d;
            for (size_t i = 0; i < n; i++) y[i * (size_t)d + (size_t)r] = 0.0f;
            for (int c0 = 0; c0 < d; c0 += B) {
                int w = c0 + B < d ? B : d - c0;
                for (int k = 0; k < w; k++) seg[k] = inf_f16_to_f32(qr[c0 + k]);
                for (size_t i = 0; i < n; i++)
                    y[i * (size_t)d + (size_t)r] += dot(seg, x + i * (size_t)d + (size_t)c0, w);
            }
        }
        OPENSSL_cleanse(seg, sizeof seg);
    }
}

/* y[i][c] = sum_r Q[r][c] x[i][r], Q in f16. Threads split the columns c,
 * so each owns its slice of every output row. */
static void apply_t_f16(const uint16_t *q, int d, const float *x, size_t n, float *y) {
    const int B = 256;
    for (size_t i = 0; i < n; i++) memset(y + i * (size_t)d, 0, (size_t)d * sizeof *y);
#pragma omp parallel
    {
        float seg[256];
#pragma omp for schedule(static)
        for (int c0 = 0; c0 < d; c0 += B) {
            int w = c0 + B < d ? B : d - c0;
            for (int r = 0; r < d; r++) {
                const uint16_t *qr = q + (size_t)r * (size_t)d + (size_t)c0;
                for (int k = 0; k < w; k++) seg[k] = inf_f16_to_f32(qr[k]);
                for (size_t i = 0; i < n; i++) {
                    const float xr = x[i * (size_t)d + (size_t)r];
                    float *yi = y + i * (size_t)d + (size_t)c0;
                    for (int k = 0; k < w; k++) yi[k] += xr * seg[k];
                }
            }
        }
        OPENSSL_cleanse(seg, sizeof seg);
    }
}

inf_status rot_apply(rot_ctx *ctx, const float *x, size_t n, float *y, inf_error *err) {
    inf_status st = apply_args(ctx, x, n, y, err);
    if (st || n == 0) return st;
    const int d = ctx->d;
    if (ctx->q16) {
        apply_f16(ctx->q16, d, x, n, y);
    } else if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, d, d, 1.0f, ctx->q32, d, x, 1, 0.0f, y, 1);
    } else {
        /* Y[n,d] = X[n,d] · Q^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, d, d, 1.0f, x, d, ctx->q32, d, 0.0f, y,
                    d);
    }
    return INF_OK;
}

inf_status rot_apply_t(rot_ctx *ctx, const float *x, size_t n, float *y, inf_error *err) {
    inf_status st = apply_args(ctx, x, n, y, err);
    if (st || n == 0) return st;
    const int d = ctx->d;
    if (ctx->q16) {
        apply_t_f16(ctx->q16, d, x, n, y);
    } else if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasTrans, d, d, 1.0f, ctx->q32, d, x, 1, 0.0f, y, 1);
    } else {
        /* Y[n,d] = X[n,d] · Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, d, d, 1.0f, x, d, ctx->q32, d, 0.0f, y,
                    d);
    }
    return INF_OK;
}

void rot_ctx_free(rot_ctx *ctx) {
    if (!ctx || ctx->d <= 0) return;
    size_t nn = (size_t)ctx->d * (size_t)ctx->d;
    if (ctx->q32) rot_matrix_free(ctx->q32, ctx->d);
    if (ctx->q16) {
        OPENSSL_cleanse(ctx->q16, nn * sizeof *ctx->q16);
        free(ctx->q16);
    }
    pthread_mutex_destroy(&ctx->mu);
    OPENSSL_cleanse(ctx, sizeof *ctx);
}
