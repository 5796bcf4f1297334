/* privacy.c — what the cloak hides, and from whom (DESIGN.md, "What it
 * protects, and what it does not"). Every number is an attack this file runs.
 *
 *   privacy --model PATH --text FILE [--positions N] [--attack-sigma S] [--json FILE]
 *
 * (a) Noise sweep. The model is prepared once (rotated, f32) into a
 *     temporary directory; the first N+1 tokens of the text go through the
 *     split path with Gaussian noise of each sigma added before the rotation
 *     (fixed noise seed per row). Top-1 agreement with the plain model and
 *     the perplexity of the text. Sigmas: a fixed list, and the classical
 *     Gaussian mechanism's sigma for epsilon in {1,2,4,8,16}, delta 1e-5,
 *     with the exact L2 sensitivity of the embedding table; for the fixed
 *     sigmas the epsilon column inverts that formula.
 *
 * (b) An attacker who holds the PUBLIC embedding table E (no layers) and
 *     sees the cloaked first-layer inputs y_t = Q (e_{x_t} + n_t) of the
 *     first N tokens. Fraction of positions whose token id it recovers:
 *       nearest neighbour  argmin_v ||y_t - e_v||  (with and without Q)
 *       norm matching      argmin_v | ||y_t||^2 - d sigma^2 - ||e_v||^2 |
 *       Gram matching      the inner products <y_s, y_t> (which Q keeps),
 *                          decoded greedily from confident anchors (below).
 *
 * (c) An attacker who holds the public base weights and the SERVER bundle:
 *     every linear that reads the residual is W' = W diag(g) Q^T, so
 *     orthogonal Procrustes on A = W diag(g) (known) against B = W' gives Q
 *     in closed form: R = argmin_{R orthogonal} ||A R - B||_F = U V^T where
 *     U S V^T = svd(A^T B), and Q^ = R^T (double precision throughout).
 *     Reported against the true Q (read from the client seed) for an f32
 *     and an int4 bundle, with layer 0's attn_q alone and with every layer's
 *     attn_q/k/v, ffn_gate/up stacked; then the token recovery it enables:
 *     un-rotate the cloaked inputs with Q^^T and take the nearest row of E.
 *
 * The noise of (b) and (c) is the same as (a)'s: the client's own
 * cloak_states with a fixed seed. The bundles and seeds live in a temporary
 * directory that is removed at the end. The secret Q is handled here on
 * purpose (this tool plays both sides); it is wiped when dropped.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "cloak.h"
#include "embed.h"
#include "generate.h"
#include "kv.h"
#include "model.h"
#include "prep.h"
#include "rotation.h"
#include "teacher.h"
#include "tokenizer.h"

#define DELTA 1e-5

static void die(const char *what, const inf_error *err) {
    fprintf(stderr, "privacy: %s: %s\n", what, err->msg);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "privacy: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Inverse of the classical Gaussian mechanism (cloak_sigma_for_dp). */
static double epsilon_for_sigma(double sigma, double l2) {
    return l2 * sqrt(2.0 * log(1.25 / DELTA)) / sigma;
}

static double accuracy(const int32_t *a, const int32_t *b, int n) {
    return inf_agreement(a, b, n);
}

/* ---- the public embedding table --------------------------------------------- */

typedef struct {
    const float *E; /* [V, d] f32 */
    const double *n2; /* [V] squared row norms */
    int64_t V;
    int d;
    /* rows sorted by (squared norm, id), for norm matching */
    const double *sorted_n2;
    const int32_t *sorted_id;
} table;

typedef struct {
    double n2;
    int32_t id;
} normid;

static int by_n2(const void *a, const void *b) {
    const normid *x = a, *y = b;
    if (x->n2 != y->n2) return x->n2 < y->n2 ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* ---- attacks ---------------------------------------------------------------- */

/* out[t] = argmin_v ||y_t - e_v||^2 = argmin_v (||e_v||^2 - 2 <e_v, y_t>):
 * one GEMM, Y [P, d] x E^T -> [P, V]. */
static void attack_nearest(const table *T, const float *Y, int P, int32_t *out) {
    float *S = xmalloc(sizeof(float) * (size_t)P * (size_t)T->V);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, (int)T->V, T->d, 1.0f, Y, T->d, T->E, T->d, 0.0f, S,
                (int)T->V);
    for (int t = 0; t < P; t++) {
        const float *s = S + (size_t)t * T->V;
        double best = INFINITY;
        int32_t arg = 0;
        for (int64_t v = 0; v < T->V; v++) {
            double dv = T->n2[v] - 2.0 * s[v];
            if (dv < best) best = dv, arg = (int32_t)v;
        }
        out[t] = arg;
    }
    free(S);
}

/* The two rows of the sorted table whose squared norms are closest to
 * target: best and runner-up (their ids and distances). */
static void closest_norms(const table *T, double target, int32_t *id1, double *d1, double *d2) {
    int64_t lo = 0, hi = T->V; /* first index with sorted_n2 >= target */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (T->sorted_n2[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    double b1 = INFINITY, b2 = INFINITY;
    int32_t a1 = 0;
    for (int64_t i = lo - 2; i <= lo + 2; i++) {
        if (i < 0 || i >= T->V) continue;
        double dv = fabs(T->sorted_n2[i] - target);
        if (dv < b1) b2 = b1, b1 = dv, a1 = T->sorted_id[i];
        else if (dv < b2) b2 = dv;
    }
    *id1 = a1;
    *d1 = b1;
    *d2 = b2;
}

/* Norm matching. The rotation keeps ||y||; the noise adds d sigma^2 to
 * ||y||^2 on average, which an attacker who knows sigma subtracts. */
static void attack_norm(const table *T, const float *Y, int P, double sigma, int32_t *out, double *conf) {
    const int d = T->d;
    for (int t = 0; t < P; t++) {
        double y2 = 0;
        for (int k = 0; k < d; k++) y2 += (double)Y[(size_t)t * d + k] * Y[(size_t)t * d + k];
        double target = y2 - d * sigma * sigma, d1, d2;
        closest_norms(T, target, &out[t], &d1, &d2);
        if (conf) {
            /* the gap to the runner-up in units of the target's own spread:
             * noise (var of ||e+n||^2 = 4 sigma^2 ||e||^2 + 2 d sigma^4) and
             * float rounding of ||Q e||^2 */
            double spread = sqrt(4 * sigma * sigma * fmax(target, 0) + 2 * d * pow(sigma, 4)) + 1e-6 * fabs(y2);
            conf[t] = (d2 - d1) / spread;
        }
    }
}

typedef struct {
    double conf;
    int t;
} confpos;

static int by_conf_desc(const void *a, const void *b) {
    const confpos *x = a, *y = b;
    if (x->conf != y->conf) return x->conf > y->conf ? -1 : 1;
    return x->t - y->t;
}

/* Gram matching. The attacker sees only G = Y Y^T, which Q does not change:
 * G_st = <e_{x_s} + n_s, e_{x_t} + n_t>. Given decoded anchors a (positions
 * with a guessed token x^_a), position t is decoded as
 *
 *   argmin_v  sum_{a in A, a != t} (G_ta - <e_v, e_{x^_a}>)^2
 *             + 1/2 (G_tt - d sigma^2 - ||e_v||^2)^2
 *
 * (the 1/2: with noise, the diagonal term's variance is about twice an
 * off-diagonal one's). Start: the 16 positions whose norm match is most
 * clear-cut. Each round decodes EVERY position against the current anchors
 * (so early mistakes can be corrected), then takes the twice as many
 * positions with the clearest decisions (relative gap between the best and
 * the runner-up score) as the next anchors; once every position is an
 * anchor, two more rounds. Each round is two GEMMs:
 *   S = E E_A^T [V, k] and C = G_{:,A} S^T [P, V],
 * score(t, v) = sum_a G_ta^2 - 2 C_tv + sum_a S_va^2 (- the t == a term). */
static void attack_gram(const table *T, const float *Y, int P, double sigma, int32_t *out) {
    const int d = T->d;
    const int64_t V = T->V;
    double *G = xmalloc(sizeof(double) * (size_t)P * P);
    for (int s = 0; s < P; s++)
        for (int t = 0; t <= s; t++) {
            double acc = 0;
            for (int k = 0; k < d; k++) acc += (double)Y[(size_t)s * d + k] * Y[(size_t)t * d + k];
            G[(size_t)s * P + t] = G[(size_t)t * P + s] = acc;
        }
    double *conf = xmalloc(sizeof(double) * P);
    attack_norm(T, Y, P, sigma, out, conf);
    confpos *order = xmalloc(sizeof(confpos) * P);
    for (int t = 0; t < P; t++) order[t] = (confpos){conf[t], t};
    qsort(order, (size_t)P, sizeof *order, by_conf_desc);
    int k = P < 16 ? P : 16;
    int *A = xmalloc(sizeof(int) * P), *slot = xmalloc(sizeof(int) * P);
    for (int i = 0; i < k; i++) A[i] = order[i].t;

    float *EA = xmalloc(sizeof(float) * (size_t)P * d);
    float *S = xmalloc(sizeof(float) * (size_t)V * P);
    float *GA = xmalloc(sizeof(float) * (size_t)P * P);
    float *C = xmalloc(sizeof(float) * (size_t)P * (size_t)V);
    double *s2 = xmalloc(sizeof(double) * (size_t)V);
    int32_t *next = xmalloc(sizeof(int32_t) * P);
    int full_rounds = 0;
    while (full_rounds < 3) {
        for (int t = 0; t < P; t++) slot[t] = -1;
        for (int a = 0; a < k; a++) {
            slot[A[a]] = a;
            memcpy(EA + (size_t)a * d, T->E + (size_t)out[A[a]] * d, sizeof(float) * d);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)V, k, d, 1.0f, T->E, d, EA, d, 0.0f, S, k);
        for (int64_t v = 0; v < V; v++) {
            double acc = 0;
            for (int a = 0; a < k; a++) acc += (double)S[(size_t)v * k + a] * S[(size_t)v * k + a];
            s2[v] = acc;
        }
        for (int t = 0; t < P; t++)
            for (int a = 0; a < k; a++) GA[(size_t)t * k + a] = (float)G[(size_t)t * P + A[a]];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, (int)V, k, 1.0f, GA, k, S, k, 0.0f, C, (int)V);
        for (int t = 0; t < P; t++) {
            double g2 = 0;
            for (int a = 0; a < k; a++) g2 += G[(size_t)t * P + A[a]] * G[(size_t)t * P + A[a]];
            const double gtt = G[(size_t)t * P + t], gd = gtt - d * sigma * sigma;
            const int self = slot[t];
            double b1 = INFINITY, b2 = INFINITY;
            int32_t arg = 0;
            for (int64_t v = 0; v < V; v++) {
                double sc = g2 - 2.0 * C[(size_t)t * V + v] + s2[v];
                if (self >= 0) {
                    double r = gtt - S[(size_t)v * k + self];
                    sc -= r * r;
                }
                double rn = gd - T->n2[v];
                sc += 0.5 * rn * rn;
                if (sc < b1) b2 = b1, b1 = sc, arg = (int32_t)v;
                else if (sc < b2) b2 = sc;
            }
            next[t] = arg;
            order[t] = (confpos){(b2 - b1) / (fabs(b2) + 1e-300), t};
        }
        memcpy(out, next, sizeof(int32_t) * P);
        if (k == P) {
            full_rounds++;
            continue;
        }
        qsort(order, (size_t)P, sizeof *order, by_conf_desc);
        k = 2 * k < P ? 2 * k : P;
        for (int i = 0; i < k; i++) A[i] = order[i].t;
    }
    free(G);
    free(conf);
    free(order);
    free(A);
    free(slot);
    free(EA);
    free(S);
    free(GA);
    free(C);
    free(s2);
    free(next);
}

/* ---- Procrustes --------------------------------------------------------------- */

#define CHUNK 512

/* M += (W diag(g))^T B over all rows of one reading linear, in double.
 * W: the plain model's weight, g its norm gain (NULL: none), B the bundle's. */
static void accumulate(const inf_tensor *W, const float *g, const inf_tensor *B, int d, double *M, double *a,
                       double *b, float *row) {
    const int64_t rows = inf_tensor_rows(W);
    for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
        int n = rows - r0 < CHUNK ? (int)(rows - r0) : CHUNK;
        for (int i = 0; i < n; i++) {
            inf_tensor_row_f32(W, r0 + i, row);
            for (int j = 0; j < d; j++) a[(size_t)i * d + j] = g ? (double)(row[j] * g[j]) : (double)row[j];
            inf_tensor_row_f32(B, r0 + i, row);
            for (int j = 0; j < d; j++) b[(size_t)i * d + j] = row[j];
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0, a, d, b, d, 1.0, M, d);
    }
}

/* Q^ = (U V^T)^T from M = A^T B = U S V^T, as float [d, d] row-major. */
static void procrustes(const double *M, int d, float *qhat) {
    double *Mc = xmalloc(sizeof(double) * (size_t)d * d), *U = xmalloc(sizeof(double) * (size_t)d * d);
    double *VT = xmalloc(sizeof(double) * (size_t)d * d), *R = xmalloc(sizeof(double) * (size_t)d * d);
    double *S = xmalloc(sizeof(double) * d), *sup = xmalloc(sizeof(double) * d);
    memcpy(Mc, M, sizeof(double) * (size_t)d * d);
    lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', d, d, Mc, d, S, U, d, VT, d, sup);
    if (info != 0) {
        fprintf(stderr, "privacy: dgesvd failed (info %d)\n", (int)info);
        exit(1);
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, U, d, VT, d, 0.0, R, d);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) qhat[(size_t)i * d + j] = (float)R[(size_t)j * d + i];
    free(Mc);
    free(U);
    free(VT);
    free(R);
    free(S);
    free(sup);
}

/* ---- bundles ------------------------------------------------------------------- */

typedef struct {
    char out[300];
    inf_model *client, *server;
    rot_seed seed;
} prepared;

static void prepare(const char *model, const char *dir, const char *name, prep_weights w, prepared *p) {
    inf_error err = {{0}};
    char cdir[400], sdir[400], key[500];
    snprintf(p->out, sizeof p->out, "%s/%s", dir, name);
    prep_opts o = {.model = model, .out = p->out, .weights = w, .rotate = true, .progress = false};
    if (prep_run(&o, &err)) die("prep", &err);
    snprintf(cdir, sizeof cdir, "%s/client", p->out);
    snprintf(sdir, sizeof sdir, "%s/server", p->out);
    snprintf(key, sizeof key, "%s/%s", cdir, INF_BUNDLE_SEED_FILE);
    if (inf_model_load_client_bundle(cdir, &p->client, &err) || inf_model_load_server_bundle(sdir, &p->server, &err))
        die("bundle", &err);
    if (rot_seed_read(key, &p->seed, &err)) die("seed", &err);
}

static void unprepare(prepared *p) {
    inf_model_free(p->client);
    inf_model_free(p->server);
    rot_seed_wipe(&p->seed);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->out);
    if (system(cmd) != 0) fprintf(stderr, "privacy: could not remove %s\n", p->out);
}

/* X [P, d] <- Q (e_{ids} + noise) with the client's own cloak (seeded noise); for a folded
 * bundle Q e_{ids} + noise, which has the same law. */
static void cloaked_inputs(const inf_model *client, rot_ctx *rot, const int32_t *ids, int P, double sigma,
                           uint64_t seed, float *X) {
    inf_error err = {{0}};
    cloak_ctx ck;
    if (inf_embed(client, ids, P, X, &err)) die("embed", &err);
    if (cloak_init_seeded(&ck, rot, sigma, seed, &err)) die("cloak", &err);
    if (client->rot_folded) cloak_set_prerotated(&ck); /* the rows are Q e already */
    if (cloak_states(&ck, X, (size_t)P, client->cfg.dim, &err)) die("cloak", &err);
    cloak_free(&ck);
}

static const char *sigma_label(double sigma, double eps, char *buf, size_t n) {
    if (sigma == 0) snprintf(buf, n, "0");
    else if (eps > 0) snprintf(buf, n, "%.4g (ε = %g)", sigma, eps);
    else snprintf(buf, n, "%g", sigma);
    return buf;
}

int main(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *json = NULL;
    int positions = 256;
    double mid_sigma = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--model") && v) model = argv[++i];
        else if (!strcmp(argv[i], "--text") && v) text = argv[++i];
        else if (!strcmp(argv[i], "--positions") && v) positions = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && v) json = argv[++i];
        else if (!strcmp(argv[i], "--attack-sigma") && v) mid_sigma = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: privacy --model PATH --text FILE [--positions N] [--attack-sigma S] [--json FILE]\n");
            return 2;
        }
    }
    if (!model || !text || positions < 16 || positions > 4096 || !(mid_sigma > 0 && mid_sigma < 1e6)) {
        fprintf(stderr, "privacy: --model and --text are required; 16 <= --positions <= 4096; --attack-sigma > 0\n");
        return 2;
    }
    const double t_start = inf_now();
    inf_error err = {{0}};
    inf_model *m;
    if (inf_model_load(model, &m, &err)) die("model", &err);
    const int d = m->cfg.dim;
    tok_tokenizer *tok;
    if (tok_load_file(model, m->cfg.vocab_size, &tok, NULL, &err)) die("tokenizer", &err);
    FILE *f = fopen(text, "rb");
    if (!f) {
        fprintf(stderr, "privacy: cannot open %s\n", text);
        return 1;
    }
    char *buf = xmalloc(1 << 20);
    size_t len = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[len] = '\0';
    int32_t *ids;
    size_t n_ids;
    if (tok_encode(tok, buf, len, tok_add_bos(tok), false, &ids, &n_ids, &err)) die("encode", &err);
    if ((int)n_ids < positions + 1) {
        fprintf(stderr, "privacy: %s has %zu tokens, need %d\n", text, n_ids, positions + 1);
        return 1;
    }
    const int n = positions + 1, P = positions;

    /* the public embedding table, as the attacker holds it */
    const int64_t V = inf_tensor_rows(&m->tok_embd);
    float *E = xmalloc(sizeof(float) * (size_t)V * d);
    double *n2 = xmalloc(sizeof(double) * (size_t)V), *sn2 = xmalloc(sizeof(double) * (size_t)V);
    int32_t *sid = xmalloc(sizeof(int32_t) * (size_t)V);
    normid *ni = xmalloc(sizeof(normid) * (size_t)V);
    double mean_norm = 0;
    for (int64_t v = 0; v < V; v++) {
        inf_tensor_row_f32(&m->tok_embd, v, E + (size_t)v * d);
        double acc = 0;
        for (int k = 0; k < d; k++) acc += (double)E[(size_t)v * d + k] * E[(size_t)v * d + k];
        n2[v] = acc;
        mean_norm += sqrt(acc);
        ni[v] = (normid){acc, (int32_t)v};
    }
    mean_norm /= (double)V;
    const double scale = mean_norm / sqrt((double)d);
    qsort(ni, (size_t)V, sizeof *ni, by_n2);
    for (int64_t v = 0; v < V; v++) sn2[v] = ni[v].n2, sid[v] = ni[v].id;
    free(ni);
    table T = {E, n2, V, d, sn2, sid};
    double l2;
    if (cloak_sensitivity(m, &l2, &err)) die("sensitivity", &err);

    /* the plain model's predictions */
    int32_t *ref = xmalloc(sizeof *ref * n), *top = xmalloc(sizeof *top * n);
    double *lp_ref = xmalloc(sizeof *lp_ref * n), *lp = xmalloc(sizeof *lp * n);
    inf_kv kv;
    if (inf_kv_init(&kv, &m->cfg, n + 8, &err)) die("kv", &err);
    inf_local_layers local = {m, &kv};
    inf_gen g = {m, inf_local_layers_fn, &local, 256};
    if (inf_teacher_force(&g, ids, n, ref, lp_ref, &err)) die("plain model", &err);
    const double ppl_ref = inf_perplexity(lp_ref, positions);
    inf_kv_free(&kv);

    char tmpl[] = "/tmp/inf-privacy-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        fprintf(stderr, "privacy: cannot create a temporary directory\n");
        return 1;
    }
    fprintf(stderr, "privacy: preparing f32 and int4 bundles in %s\n", dir);
    prepared b32, b4;
    prepare(model, dir, "f32", PREP_F32, &b32);
    prepare(model, dir, "int4", PREP_INT4, &b4);
    rot_ctx rot32, rot4;
    if (rot_ctx_init(&rot32, &b32.seed, d, false, &err) || rot_ctx_init(&rot4, &b4.seed, d, false, &err))
        die("rotation", &err);

    /* ---- (a) noise sweep ---- */
    enum { NFIX = 7, NDP = 5, NROW = NFIX + NDP };
    static const double fixed[NFIX] = {0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5};
    static const double dp_eps[NDP] = {1, 2, 4, 8, 16};
    double sig[NROW], eps[NROW], agree[NROW], ppl[NROW];
    int is_dp[NROW];
    for (int r = 0; r < NFIX; r++) {
        sig[r] = fixed[r];
        eps[r] = fixed[r] > 0 ? epsilon_for_sigma(fixed[r], l2) : INFINITY;
        is_dp[r] = 0;
    }
    for (int r = 0; r < NDP; r++) {
        if (cloak_sigma_for_dp(dp_eps[r], DELTA, l2, &sig[NFIX + r], &err)) die("dp", &err);
        eps[NFIX + r] = dp_eps[r];
        is_dp[NFIX + r] = 1;
    }
    int row_order[NROW];
    for (int r = 0; r < NROW; r++) row_order[r] = r;
    for (int i = 1; i < NROW; i++) /* by sigma (insertion sort, 12 rows) */
        for (int j = i; j > 0 && sig[row_order[j]] < sig[row_order[j - 1]]; j--) {
            int tmp = row_order[j];
            row_order[j] = row_order[j - 1];
            row_order[j - 1] = tmp;
        }
    for (int r = 0; r < NROW; r++) {
        fprintf(stderr, "privacy: (a) sigma %.4g\n", sig[r]);
        cloak_ctx ck;
        if (cloak_init_seeded(&ck, &rot32, sig[r], 1000 + (uint64_t)r, &err)) die("cloak", &err);
        if (b32.client->rot_folded) cloak_set_prerotated(&ck);
        inf_kv skv;
        if (inf_kv_init(&skv, &b32.server->cfg, n + 8, &err)) die("kv", &err);
        inf_split_layers sl = {b32.server, &skv, &ck};
        inf_gen sg = {b32.client, inf_split_layers_fn, &sl, 256};
        if (inf_teacher_force(&sg, ids, n, top, lp, &err)) die("split", &err);
        agree[r] = inf_agreement(top, ref, positions);
        ppl[r] = inf_perplexity(lp, positions);
        inf_kv_free(&skv);
        cloak_free(&ck);
    }

    /* the noise levels the attacks face: none, --attack-sigma (0.05), and epsilon 4's */
    enum { NS = 3 };
    double asig[NS] = {0, mid_sigma, 0};
    double aeps[NS] = {0, 0, 4};
    if (cloak_sigma_for_dp(aeps[2], DELTA, l2, &asig[2], &err)) die("dp", &err);

    /* ---- (b) attacker with the embedding table ---- */
    enum { NATT = 4 };
    static const char *att_name[NATT] = {
        "nearest neighbour without the rotation (baseline): argmin_v ‖(e + n) − e_v‖",
        "nearest neighbour on the cloaked y = Q(e + n): argmin_v ‖y − e_v‖",
        "norm matching: argmin_v abs(‖y‖² − dσ² − ‖e_v‖²)",
        "Gram matching: all ⟨y_s, y_t⟩, greedy decoding from anchors",
    };
    double att_acc[NATT][NS];
    float *X = xmalloc(sizeof(float) * (size_t)P * d), *Xu = xmalloc(sizeof(float) * (size_t)P * d);
    int32_t *rec = xmalloc(sizeof(int32_t) * P);
    for (int s = 0; s < NS; s++) {
        fprintf(stderr, "privacy: (b) sigma %.4g\n", asig[s]);
        cloaked_inputs(b32.client, &rot32, ids, P, asig[s], 2000 + (uint64_t)s, X);
        if (rot_apply_t(&rot32, X, (size_t)P, Xu, &err)) die("rotation", &err); /* e + noise */
        attack_nearest(&T, Xu, P, rec);
        att_acc[0][s] = accuracy(rec, ids, P);
        attack_nearest(&T, X, P, rec);
        att_acc[1][s] = accuracy(rec, ids, P);
        attack_norm(&T, X, P, asig[s], rec, NULL);
        att_acc[2][s] = accuracy(rec, ids, P);
        attack_gram(&T, X, P, asig[s], rec);
        att_acc[3][s] = accuracy(rec, ids, P);
    }
    /* why norm matching can miss: tokens of the text whose row has an exact
     * duplicate in E, or whose squared norm has a neighbour within 1e-6 */
    int dup_pos = 0, twin_pos = 0;
    for (int t = 0; t < P; t++) {
        const int32_t x = ids[t];
        int dup = 0, twin = 0;
        for (int64_t v = 0; v < V; v++) {
            if (v == x) continue;
            if (fabs(n2[v] - n2[x]) <= 1e-6 * n2[x]) {
                twin = 1;
                if (!memcmp(E + (size_t)v * d, E + (size_t)x * d, sizeof(float) * d)) dup = 1;
            }
        }
        dup_pos += dup;
        twin_pos += twin;
    }

    /* ---- (c) attacker with the public weights and the server bundle ---- */
    enum { NB = 2, NV = 2 };
    static const char *bname[NB] = {"f32", "int4"};
    char all_layers[96];
    snprintf(all_layers, sizeof all_layers, "all %d layers: attn_q/k/v, ffn_gate/up", m->cfg.n_layers);
    const char *vname[NV] = {"layer 0 attn_q", all_layers};
    prepared *bund[NB] = {&b32, &b4};
    rot_ctx *brot[NB] = {&rot32, &rot4};
    double qerr_f[NB][NV], qerr_max[NB][NV], q_acc[NB][NV][NS];
    int64_t q_rows[NV] = {0, 0};
    double *M = xmalloc(sizeof(double) * (size_t)d * d), *M0 = xmalloc(sizeof(double) * (size_t)d * d);
    double *ca = xmalloc(sizeof(double) * (size_t)CHUNK * d), *cb = xmalloc(sizeof(double) * (size_t)CHUNK * d);
    float *row = xmalloc(sizeof(float) * (size_t)(m->cfg.ffn_dim > d ? m->cfg.ffn_dim : d));
    float *qhat = xmalloc(sizeof(float) * (size_t)d * d), *Z = xmalloc(sizeof(float) * (size_t)P * d);
    static const int reading[5] = {0, 1, 2, 4, 5}; /* wq, wk, wv, w_gate, w_up */
    for (int b = 0; b < NB; b++) {
        fprintf(stderr, "privacy: (c) %s bundle\n", bname[b]);
        const inf_model *sm = bund[b]->server;
        float *Q;
        if (rot_matrix(&bund[b]->seed, d, &Q, &err)) die("rotation", &err);
        memset(M, 0, sizeof(double) * (size_t)d * d);
        int64_t rows = 0;
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int i = 0; i < 5; i++) {
                inf_layer *Lp = &m->layers[l], *Ls = &sm->layers[l];
                const float *gain = reading[i] <= 2 ? Lp->attn_norm : Lp->ffn_norm;
                const inf_tensor *W = inf_layer_linear(Lp, reading[i]), *B = inf_layer_linear(Ls, reading[i]);
                accumulate(W, gain, B, d, M, ca, cb, row);
                rows += inf_tensor_rows(W);
                if (l == 0 && i == 0) {
                    memcpy(M0, M, sizeof(double) * (size_t)d * d);
                    q_rows[0] = rows;
                }
            }
        q_rows[1] = rows;
        for (int v = 0; v < NV; v++) {
            procrustes(v == 0 ? M0 : M, d, qhat);
            double fro = 0, mx = 0;
            for (size_t i = 0; i < (size_t)d * d; i++) {
                double e = fabs((double)qhat[i] - (double)Q[i]);
                fro += e * e;
                if (e > mx) mx = e;
            }
            qerr_f[b][v] = sqrt(fro) / sqrt((double)d);
            qerr_max[b][v] = mx;
            for (int s = 0; s < NS; s++) {
                cloaked_inputs(bund[b]->client, brot[b], ids, P, asig[s], 3000 + (uint64_t)s, X);
                /* z_t = Q^^T y_t, i.e. Z = X Q^ (row-major rows) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, d, d, 1.0f, X, d, qhat, d, 0.0f, Z, d);
                attack_nearest(&T, Z, P, rec);
                q_acc[b][v][s] = accuracy(rec, ids, P);
            }
        }
        rot_matrix_free(Q, d);
    }
    const double elapsed = inf_now() - t_start;

    /* ---- report ---- */
    const char *name = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    const char *tname = strrchr(text, '/') ? strrchr(text, '/') + 1 : text;
    char lab[64];
    printf("%s, first %d tokens of %s. Embedding table %lld x %d: mean row norm %.4f, per-element scale "
           "(mean row norm / √dim) %.4f; L2 sensitivity (largest distance between two rows) %.4f. "
           "σ: standard deviation of the noise added to each element of the embedding before the rotation. "
           "ε: classical Gaussian mechanism, σ = Δ·√(2 ln(1.25/δ)) / ε with δ = 1e-5 (a proof only for ε < 1).\n\n",
           name, positions, tname, (long long)V, d, mean_norm, scale, l2);
    printf("(a) Noise before the rotation: what it costs (rotated f32 bundle, %d teacher-forced positions)\n\n",
           positions);
    printf("| noise σ | ε (δ = 1e-5) | top-1 agreement with the plain model | perplexity |\n|---|---|---|---|\n");
    printf("| plain model | - | 100.0%% | %.3f |\n", ppl_ref);
    for (int i = 0; i < NROW; i++) {
        int r = row_order[i];
        char e[32];
        if (isinf(eps[r])) snprintf(e, sizeof e, "inf");
        else if (is_dp[r]) snprintf(e, sizeof e, "%g", eps[r]);
        else snprintf(e, sizeof e, eps[r] >= 100 ? "%.0f" : "%.3g", eps[r]);
        printf("| %.4g | %s | %.1f%% | %.3f |\n", sig[r], e, 100 * agree[r], ppl[r]);
    }
    printf("\n(b) Attacker with the public embedding table only, seeing the cloaked first-layer inputs of "
           "%d tokens: fraction of token ids recovered\n\n",
           P);
    printf("| attack | noise σ | recovered |\n|---|---|---|\n");
    for (int a = 0; a < NATT; a++)
        for (int s = 0; s < NS; s++)
            printf("| %s | %s | %.1f%% |\n", att_name[a], sigma_label(asig[s], aeps[s], lab, sizeof lab),
                   100 * att_acc[a][s]);
    printf("\n%d of the %d positions carry a token whose embedding row has an exact duplicate in the table; "
           "%d carry one whose squared norm is within 1e-6 (relative) of another token's: norm matching at σ = 0 can "
           "miss those closer than the float rounding of ‖Qe‖² (~1e-7), which depends on the secret (fresh each run).\n",
           dup_pos, P, twin_pos);
    printf("Gram matching starts from the positions whose norm match is clearest; once the noise leaves it no "
           "correct anchor it decodes nothing. Its 0%% is a limit of this decoder, not a bound on what the inner "
           "products reveal.\n");
    printf("\n(c) Attacker with the public base weights and the server bundle: Q by orthogonal Procrustes, "
           "then nearest neighbour on Q̂ᵀy\n\n");
    printf("| server bundle | linears stacked (rows) | ‖Q̂ − Q‖_F / √d | max abs(Q̂ − Q) |");
    for (int s = 0; s < NS; s++) printf(" recovered, σ = %s |", sigma_label(asig[s], aeps[s], lab, sizeof lab));
    printf("\n|---|---|---|---|");
    for (int s = 0; s < NS; s++) printf("---|");
    printf("\n");
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < NV; v++) {
            printf("| %s | %s (%lld) | %.2e | %.2e |", bname[b], vname[v], (long long)q_rows[v], qerr_f[b][v],
                   qerr_max[b][v]);
            for (int s = 0; s < NS; s++) printf(" %.1f%% |", 100 * q_acc[b][v][s]);
            printf("\n");
        }
    printf("\nrun time %.1f s\n", elapsed);

    if (json) {
        FILE *o = fopen(json, "w");
        if (!o) {
            fprintf(stderr, "privacy: cannot write %s\n", json);
            return 1;
        }
        fprintf(o, "{\n  \"model\": \"%s\", \"text\": \"%s\", \"positions\": %d, \"dim\": %d, \"vocab\": %lld,\n",
                name, tname, positions, d, (long long)V);
        fprintf(o, "  \"mean_row_norm\": %.6f, \"per_element_scale\": %.6f, \"l2_sensitivity\": %.6f, "
                   "\"delta\": %g, \"plain_perplexity\": %.4f,\n",
                mean_norm, scale, l2, DELTA, ppl_ref);
        fprintf(o, "  \"noise_sweep\": [\n");
        for (int i = 0; i < NROW; i++) {
            int r = row_order[i];
            fprintf(o, "    {\"sigma\": %.6g, \"epsilon\": ", sig[r]);
            if (isinf(eps[r])) fprintf(o, "null");
            else fprintf(o, "%.6g", eps[r]);
            fprintf(o, ", \"from\": \"%s\", \"top1_agreement\": %.4f, \"perplexity\": %.4f}%s\n",
                    is_dp[r] ? "epsilon" : "sigma", agree[r], ppl[r], i + 1 < NROW ? "," : "");
        }
        fprintf(o, "  ],\n  \"attack_sigmas\": [");
        for (int s = 0; s < NS; s++) fprintf(o, "%s%.6g", s ? ", " : "", asig[s]);
        fprintf(o, "],\n  \"embedding_attacks\": [\n");
        static const char *akey[NATT] = {"nearest_unrotated", "nearest_rotated", "norm", "gram"};
        for (int a = 0; a < NATT; a++) {
            fprintf(o, "    {\"attack\": \"%s\", \"recovered\": [", akey[a]);
            for (int s = 0; s < NS; s++) fprintf(o, "%s%.4f", s ? ", " : "", att_acc[a][s]);
            fprintf(o, "]}%s\n", a + 1 < NATT ? "," : "");
        }
        fprintf(o, "  ],\n  \"positions_with_duplicate_row\": %d, \"positions_with_norm_twin\": %d,\n", dup_pos,
                twin_pos);
        fprintf(o, "  \"procrustes\": [\n");
        for (int b = 0; b < NB; b++)
            for (int v = 0; v < NV; v++) {
                fprintf(o, "    {\"bundle\": \"%s\", \"linears\": \"%s\", \"rows\": %lld, \"q_err_fro_over_sqrt_d\": %.3e, "
                           "\"q_err_max\": %.3e, \"recovered\": [",
                        bname[b], v ? "all" : "blk.0.attn_q", (long long)q_rows[v], qerr_f[b][v], qerr_max[b][v]);
                for (int s = 0; s < NS; s++) fprintf(o, "%s%.4f", s ? ", " : "", q_acc[b][v][s]);
                fprintf(o, "]}%s\n", b * NV + v + 1 < NB * NV ? "," : "");
            }
        fprintf(o, "  ],\n  \"run_seconds\": %.1f\n}\n", elapsed);
        fclose(o);
    }

    rot_ctx_free(&rot32);
    rot_ctx_free(&rot4);
    unprepare(&b32);
    unprepare(&b4);
    rmdir(dir);
    free(M);
    free(M0);
    free(ca);
    free(cb);
    free(row);
    free(qhat);
    free(Z);
    free(X);
    free(Xu);
    free(rec);
    free(E);
    free(n2);
    free(sn2);
    free(sid);
    free(ref);
    free(top);
    free(lp_ref);
    free(lp);
    free(ids);
    free(buf);
    tok_free(tok);
    inf_model_free(m);
    return 0;
}
