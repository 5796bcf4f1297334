/* cloak.h — what the client does to the residual stream before it leaves
 * (cloak: optional Gaussian noise, then the secret rotation Q) and after it
 * comes back (uncloak: Q^T). See DESIGN.md, "What it protects, and what it
 * does not": without noise the cloak keeps norms and inner products, so it
 * only hides the states from parties that do not hold the model; the noise
 * gives a per-token (epsilon, delta) bound that is weak at useful settings.
 *
 * Ownership: a cloak_ctx borrows its rot_ctx (the caller keeps it alive and
 * frees it after cloak_free) and owns its noise generator, whose key
 * cloak_free wipes.
 *
 * Thread-safety: cloak_sensitivity and cloak_sigma_for_dp are pure. A
 * cloak_ctx is one session's: its noise stream advances with each call, so
 * one thread at a time per ctx (several ctxs may share one rot_ctx).
 */
#ifndef INF_CLOAK_H
#define INF_CLOAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rotation.h"
#include "status.h"

/* The L2 sensitivity of one token's embedding: the exact
 *   max over i != j of ||e_i - e_j||_2
 * over the rows of m->tok_embd (any dtype, dequantized to f32, distances
 * accumulated in double). Branch and bound on the rows' distances to their
 * centroid c (distances do not change under translation, and the triangle
 * inequality ||e_i - e_j|| <= ||e_i - c|| + ||e_j - c|| rules out almost
 * every pair), so a 49152 x 576 table takes well under a second; a table
 * whose rows are all equally far from c degenerates to the O(V^2 d) scan
 * (still exact). Memory:
 * one f32 copy of the rows the search actually visits. Fails naming the
 * model when it has no embedding table, fewer than two rows or a
 * non-finite value. */
inf_status cloak_sensitivity(const inf_model *m, double *l2, inf_error *err);

/* The classical Gaussian mechanism (Dwork & Roth, Theorem A.1):
 *   sigma = l2 * sqrt(2 ln(1.25 / delta)) / epsilon.
 * It is a proven (epsilon, delta) guarantee only for epsilon < 1. For
 * epsilon >= 1 the value is still returned, but the classical bound is then
 * only a heuristic (the analytic Gaussian mechanism would be needed for a
 * proof). Refuses epsilon <= 0 or non-finite (naming --dp-epsilon), delta
 * outside (0, 1) (naming --dp-delta) and l2 < 0 or non-finite. */
inf_status cloak_sigma_for_dp(double epsilon, double delta, double l2, double *sigma, inf_error *err);

/* One session's cloak. Fields are private to cloak.c. */
typedef struct {
    rot_ctx *rot;
    double sigma;
    void *rng;          /* EVP_CIPHER_CTX: AES-256-CTR keystream for the noise */
    uint8_t buf[4096];  /* keystream not yet used */
    size_t buf_pos;     /* next unused byte of buf (sizeof buf = empty) */
    bool prerotated;    /* cloak_set_prerotated was called */
} cloak_ctx;

/* Noise key from RAND_bytes (fresh per session). sigma >= 0 and finite;
 * sigma = 0 means no noise. */
inf_status cloak_init(cloak_ctx *c, rot_ctx *rot, double sigma, inf_error *err);
/* Same, with the noise key derived from a caller-given seed (SHA-256 of a
 * domain string and the seed): reproducible noise, for tests only. */
inf_status cloak_init_seeded(cloak_ctx *c, rot_ctx *rot, double sigma, uint64_t seed, inf_error *err);

/* In place, for n rows of length d (x: [n, d] row-major):
 *   x <- Q (x + N(0, sigma^2 I)).
 * d must equal the rotation's dimension. Noise: Box-Muller (in double) on
 * 53-bit uniforms from the AES-256-CTR stream. */
inf_status cloak_states(cloak_ctx *c, float *x, size_t n, int d, inf_error *err);
/* In place: x <- Q^T x. */
inf_status uncloak_states(cloak_ctx *c, float *x, size_t n, int d, inf_error *err);

/* For a client bundle with the rotation folded in (m->rot_folded,
 * common/bundle.h): its rows are already Q e_t and its lm_head reads the
 * rotated state, so from now on cloak_states only adds the noise and
 * uncloak_states leaves x as it is; Q is never built. The law of what is
 * sent is unchanged: Q e + Q n and Q e + n have the same distribution for
 * n ~ N(0, sigma^2 I) (Q is orthogonal), so the (epsilon, delta) bound holds
 * as before. */
void cloak_set_prerotated(cloak_ctx *c);

/* Wipes the noise key and buffered keystream. Safe on a zeroed ctx. Does not
 * free the rot_ctx. */
void cloak_free(cloak_ctx *c);

#endif
