/* rotation.h — the secret orthogonal matrix Q of the cloak (DESIGN.md,
 * "Why the original produced gibberish, and the fix").
 *
 * One 256-bit secret seed per prepared model determines Q, a d x d
 * Haar-random orthogonal matrix, deterministically:
 *
 *   key  = HKDF-SHA256(ikm = seed, salt = none,
 *                      info = "infemeral rotation v1" || be32(d))       32 bytes
 *   bits = AES-256-CTR keystream under key, 128-bit big-endian counter
 *          starting at 0. AES block number j*ceil(d/2) + p holds pair p of
 *          column j of A: its two little-endian 64-bit halves r1, r2 give
 *          u1 = ((r1 >> 11) + 1) / 2^53 in (0, 1], u2 = (r2 >> 11) / 2^53,
 *          and Box-Muller (in double) gives A[2p][j] = sqrt(-2 ln u1) cos(2 pi u2)
 *          and A[2p+1][j] = ... sin(2 pi u2) (dropped when d is odd).
 *   A = Q R    Householder QR in double (LAPACKE_dgeqrf + LAPACKE_dorgqr)
 *   Q <- Q diag(sign(R_jj))   (without this the law of Q is not Haar: with
 *                              LAPACK's reflectors Q[0][0] is never positive)
 *   stored row-major as float.
 *
 * Q is a function of (seed, d) alone: the Gaussian matrix A is bit-exact
 * everywhere, and Q is bit-identical from run to run with the same libm,
 * OpenBLAS build and OpenBLAS thread count. A different thread count or BLAS
 * may round a handful of entries the other way (measured: 6 of 16.8M
 * entries at d = 4096 between 1 and 2 OpenBLAS threads, max difference
 * 2e-9), far below what the f16/bf16 wire format and the quantized server
 * weights carry, so a client and a server prepared on different machines
 * still agree. The fingerprint (below) depends on the seed and d only,
 * never on those last bits.
 *
 * Secrets: the seed and Q (which is as good as the seed) are wiped with
 * OPENSSL_cleanse when dropped and never logged. Nothing here prints.
 *
 * Ownership: rot_matrix returns a malloc'd array the caller frees (wiping it
 * first if it matters: rot_matrix_free). A rot_ctx owns its copy of the seed
 * and its Q; rot_ctx_free wipes both.
 *
 * Thread-safety: rot_seed_* and rot_matrix/rot_fingerprint have no shared
 * state. One rot_ctx may be used by many threads at once (rot_apply,
 * rot_apply_t, rot_ctx_q); the first use computes Q under a mutex.
 * rot_ctx_init/rot_ctx_free must not race with anything on that ctx.
 */
#ifndef INF_ROTATION_H
#define INF_ROTATION_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define ROT_SEED_BYTES 32
#define ROT_MIN_DIM 2
#define ROT_MAX_DIM 65536
/* Hex SHA-256 + NUL. */
#define ROT_FINGERPRINT_LEN 65

typedef struct {
    uint8_t b[ROT_SEED_BYTES];
} rot_seed;

/* 32 fresh bytes from OpenSSL's RAND_bytes. */
inf_status rot_seed_generate(rot_seed *seed, inf_error *err);

/* Writes the seed as 64 lowercase hex characters and a newline to PATH.
 * The file is created with O_CREAT|O_EXCL and mode 0600 (then fchmod 0600,
 * whatever the umask), so it is never readable by others, even briefly.
 * An existing PATH is refused (a seed is never silently replaced: bundles
 * prepared with the old one would stop matching). Data and directory are
 * fsync'ed; on a write error the partial file is removed. A crash during
 * the write can leave a short file, which rot_seed_read refuses. */
inf_status rot_seed_write(const char *path, const rot_seed *seed, inf_error *err);

/* Reads a seed file strictly: exactly 64 hex characters (either case),
 * optionally followed by one "\n", nothing else. Refuses a file that is not
 * a regular file or that grants any permission to group or others (the
 * message says so and says to run chmod 600). Errors name the file; they
 * never contain the file's bytes. */
inf_status rot_seed_read(const char *path, rot_seed *seed, inf_error *err);

/* OPENSSL_cleanse on the seed. */
void rot_seed_wipe(rot_seed *seed);

/* Q (see the top of this file) as a malloc'd float[d*d], row-major:
 * Q[i*d + j]. Refuses d < 2 or d > 65536. Needs about 12 d^2 bytes while it
 * runs (the double-precision factorization). d = 4096 takes a few seconds on
 * two cores. */
inf_status rot_matrix(const rot_seed *seed, int d, float **q, inf_error *err);
/* Wipes and frees what rot_matrix returned (NULL is fine). */
void rot_matrix_free(float *q, int d);

/* A public identifier of the rotation, safe to publish and to store in both
 * bundles: lowercase hex of
 *   SHA-256("infemeral rotation fingerprint v1" || 0x00 || be32(d) || seed).
 * SHA-256 is one-way and the seed has 256 bits of entropy, so it reveals
 * nothing usable about the seed; the domain string keeps it unrelated to the
 * HKDF key that generates Q. Refuses d out of range like rot_matrix. */
inf_status rot_fingerprint(const rot_seed *seed, int d, char out[ROT_FINGERPRINT_LEN], inf_error *err);

/* A lazily materialized, cached Q. Fields are private to rotation.c. */
typedef struct {
    rot_seed seed;
    int d;
    bool f16;           /* keep Q as f16 (half the memory; ||QQ^T - I||_max < 1e-3) */
    pthread_mutex_t mu;
    bool ready;         /* Q computed (guarded by mu) */
    float *q32;         /* [d*d] when !f16 */
    uint16_t *q16;      /* [d*d] when f16 */
} rot_ctx;

/* Copies the seed (the caller may wipe its own) and checks d; computes
 * nothing yet. */
inf_status rot_ctx_init(rot_ctx *ctx, const rot_seed *seed, int d, bool f16, inf_error *err);
/* Computes Q now if it is not yet (optional: the first apply does it). */
inf_status rot_ctx_ready(rot_ctx *ctx, inf_error *err);
/* y[i] = Q x[i] for each of n rows of length d (x, y: [n, d] row-major).
 * x and y must not overlap. */
inf_status rot_apply(rot_ctx *ctx, const float *x, size_t n, float *y, inf_error *err);
/* y[i] = Q^T x[i] (the inverse). x and y must not overlap. */
inf_status rot_apply_t(rot_ctx *ctx, const float *x, size_t n, float *y, inf_error *err);
/* Wipes the seed and Q and releases them. Safe on a zeroed or freed ctx. */
void rot_ctx_free(rot_ctx *ctx);

#endif
