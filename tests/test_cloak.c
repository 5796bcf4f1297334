/* test_cloak.c — noise + rotation of the residual stream, and the numbers
 * that size the noise.
 *
 * If this fails, a user would see garbled output even with noise off
 * (uncloak not undoing cloak), a --dp-epsilon/--dp-delta run whose noise is
 * not what the privacy claim says (wrong sensitivity from the embedding
 * table, wrong sigma formula, noise of the wrong size), or a nonsense
 * --dp-epsilon/--dp-delta accepted silently.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloak.h"
#include "model.h"
#include "testutil.h"

/* Deterministic standard normals (not the code under test's generator). */
static uint64_t rs = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return ((rs >> 11) + 0.5) * 0x1p-53;
}
static double gauss(void) { return sqrt(-2.0 * log(unif())) * cos(2.0 * M_PI * unif()); }

/* A model holding only an embedding table [V, d] (f32 or f16). */
static inf_model *embd_model(const float *rows, int V, int d, int f16) {
    inf_model *m = inf_model_new("tiny-embd", INF_SRC_GGUF);
    cr_assert_not_null(m);
    m->cfg.dim = d;
    m->cfg.vocab_size = V;
    size_t n = (size_t)V * d;
    void *data;
    if (f16) {
        uint16_t *h = malloc(n * 2);
        cr_assert_not_null(h);
        for (size_t i = 0; i < n; i++) h[i] = inf_f32_to_f16(rows[i]);
        data = h;
    } else {
        float *f = malloc(n * 4);
        cr_assert_not_null(f);
        memcpy(f, rows, n * 4);
        data = f;
    }
    inf_model_defer(m, free, data);
    m->tok_embd.dtype = f16 ? INF_DT_F16 : INF_DT_F32;
    m->tok_embd.ndim = 2;
    m->tok_embd.shape[0] = V;
    m->tok_embd.shape[1] = d;
    m->tok_embd.data = data;
    m->tok_embd.nbytes = n * (f16 ? 2 : 4);
    return m;
}

static double brute_force(const inf_model *m) {
    const int V = m->cfg.vocab_size, d = m->cfg.dim;
    float *e = malloc(sizeof(float) * (size_t)V * d);
    for (int i = 0; i < V; i++) inf_tensor_row_f32(&m->tok_embd, i, e + (size_t)i * d);
    double best = 0.0;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++) {
            if (i == j) continue;
            double s = 0.0;
            for (int k = 0; k < d; k++) {
                double t = (double)e[(size_t)i * d + k] - e[(size_t)j * d + k];
                s += t * t;
            }
            if (sqrt(s) > best) best = sqrt(s);
        }
    free(e);
    return best;
}

Test(cloak, sensitivity_equals_brute_force_with_planted_pair) {
    const int V = 300, d = 16;
    float *rows = malloc(sizeof(float) * V * d);
    for (int i = 0; i < V * d; i++) rows[i] = (float)gauss();
    /* The two largest norms point the same way (close to each other); the
     * far pair is a large row and an anti-aligned, smaller one. */
    for (int k = 0; k < d; k++) {
        float u = (k % 3 == 0) ? 1.0f : 0.25f;
        rows[41 * d + k] = 9.5f * u;
        rows[40 * d + k] = 9.0f * u;
        rows[250 * d + k] = -7.0f * u;
    }
    for (int f16 = 0; f16 < 2; f16++) {
        inf_model *m = embd_model(rows, V, d, f16);
        double l2 = -1.0, want = brute_force(m);
        inf_error err;
        cr_assert_eq(cloak_sensitivity(m, &l2, &err), INF_OK, "%s", err.msg);
        cr_expect(fabs(l2 - want) <= 1e-12 * want, "%s table: sensitivity %.17g, brute force %.17g",
                  f16 ? "f16" : "f32", l2, want);
        /* the planted pair: (9.5 + 7) * ||u|| */
        double un = 0.0;
        for (int k = 0; k < d; k++) un += ((k % 3 == 0) ? 1.0 : 0.0625);
        cr_expect(fabs(want - 16.5 * sqrt(un)) < 1e-2 * want, "planted pair is not the farthest (%g)", want);
        inf_model_free(m);
    }
    free(rows);
}

/* Every row the same norm: nothing can be pruned; still exact. */
Test(cloak, sensitivity_exact_on_a_sphere) {
    const int V = 200, d = 8;
    float *rows = malloc(sizeof(float) * V * d);
    for (int i = 0; i < V; i++) {
        double s = 0.0;
        for (int k = 0; k < d; k++) {
            rows[i * d + k] = (float)gauss();
            s += (double)rows[i * d + k] * rows[i * d + k];
        }
        for (int k = 0; k < d; k++) rows[i * d + k] = (float)(rows[i * d + k] / sqrt(s));
    }
    inf_model *m = embd_model(rows, V, d, 0);
    double l2 = 0.0, want = brute_force(m);
    inf_error err;
    cr_assert_eq(cloak_sensitivity(m, &l2, &err), INF_OK, "%s", err.msg);
    cr_expect(fabs(l2 - want) <= 1e-12 * want, "sensitivity %.17g, brute force %.17g", l2, want);
    inf_model_free(m);
    free(rows);
}

Test(cloak, sensitivity_refuses_missing_tiny_or_nonfinite_tables) {
    float rows[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    inf_error err;
    double l2;
    inf_model *m = embd_model(rows, 3, 4, 0);
    m->tok_embd.data = NULL;
    cr_expect_eq(cloak_sensitivity(m, &l2, &err), INF_E_ARG);
    cr_expect(strstr(err.msg, "tiny-embd") != NULL, "%s", err.msg);
    inf_model_free(m);

    m = embd_model(rows, 1, 4, 0);
    cr_expect_eq(cloak_sensitivity(m, &l2, &err), INF_E_SHAPE);
    inf_model_free(m);

    rows[9] = NAN;
    m = embd_model(rows, 3, 4, 0);
    cr_expect_eq(cloak_sensitivity(m, &l2, &err), INF_E_FORMAT);
    cr_expect(strstr(err.msg, "row 2") != NULL, "%s", err.msg);
    inf_model_free(m);
}

Test(cloak, sensitivity_of_smollm2) {
    const char *p = tu_smollm2();
    if (!p) cr_skip_test("skipped: SmolLM2 GGUF not present (run deploy/deps.sh; INF_SMOLLM2 unset)");
    inf_model *m = NULL;
    inf_error err;
    cr_assert_eq(inf_model_load(p, &m, &err), INF_OK, "%s", err.msg);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double l2 = 0.0;
    cr_assert_eq(cloak_sensitivity(m, &l2, &err), INF_OK, "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    cr_log_info("SmolLM2 embedding sensitivity %.6f in %.3f s", l2, secs);
    /* It is at least the distance of a few arbitrary pairs and at most twice the largest norm. */
    const int d = m->cfg.dim;
    float *a = malloc(sizeof(float) * d), *b = malloc(sizeof(float) * d);
    double maxn = 0.0;
    for (int i = 0; i < m->cfg.vocab_size; i++) {
        inf_tensor_row_f32(&m->tok_embd, i, a);
        double s = 0.0;
        for (int k = 0; k < d; k++) s += (double)a[k] * a[k];
        maxn = fmax(maxn, sqrt(s));
    }
    for (int i = 0; i < 50; i++) {
        inf_tensor_row_f32(&m->tok_embd, i * 977, a);
        inf_tensor_row_f32(&m->tok_embd, i * 613 + 5, b);
        double s = 0.0;
        for (int k = 0; k < d; k++) s += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
        cr_expect_geq(l2, sqrt(s));
    }
    cr_expect_leq(l2, 2.0 * maxn);
    free(a);
    free(b);
    inf_model_free(m);
}

Test(cloak, sigma_formula) {
    double sigma = 0.0;
    inf_error err;
    cr_assert_eq(cloak_sigma_for_dp(0.5, 1e-5, 2.0, &sigma, &err), INF_OK, "%s", err.msg);
    /* 2 * sqrt(2 ln(125000)) / 0.5 */
    cr_expect(fabs(sigma - 19.379221050421556) < 1e-9, "sigma %.15g", sigma);
    cr_assert_eq(cloak_sigma_for_dp(2.0, 1e-5, 2.0, &sigma, &err), INF_OK, "%s", err.msg);
    cr_expect(fabs(sigma - 19.379221050421556 / 4.0) < 1e-9, "sigma %.15g", sigma);
    cr_assert_eq(cloak_sigma_for_dp(0.5, 1e-5, 0.0, &sigma, &err), INF_OK, "%s", err.msg);
    cr_expect_eq(sigma, 0.0);
}

Test(cloak, bad_epsilon_and_delta_refused_by_name) {
    double sigma = 0.0;
    inf_error err;
    const double eps[] = {0.0, -1.0, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(cloak_sigma_for_dp(eps[i], 1e-5, 1.0, &sigma, &err), INF_E_ARG, "epsilon %g accepted", eps[i]);
        cr_expect(strstr(err.msg, "--dp-epsilon") != NULL, "%s", err.msg);
    }
    const double del[] = {0.0, 1.0, 1.5, -1e-5, NAN};
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(cloak_sigma_for_dp(1.0, del[i], 1.0, &sigma, &err), INF_E_ARG, "delta %g accepted", del[i]);
        cr_expect(strstr(err.msg, "--dp-delta") != NULL, "%s", err.msg);
    }
    cr_expect_eq(cloak_sigma_for_dp(1.0, 1e-5, -1.0, &sigma, &err), INF_E_ARG);
}

static void random_rows(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)gauss();
}

Test(cloak, no_noise_round_trip_keeps_norms_and_inner_products) {
    const int d = 96;
    const size_t n = 12;
    rot_seed s;
    inf_error err;
    cr_assert_eq(rot_seed_generate(&s, &err), INF_OK, "%s", err.msg);
    rot_ctx r;
    cr_assert_eq(rot_ctx_init(&r, &s, d, false, &err), INF_OK, "%s", err.msg);
    cloak_ctx c;
    cr_assert_eq(cloak_init(&c, &r, 0.0, &err), INF_OK, "%s", err.msg);
    float x[12 * 96], y[12 * 96];
    random_rows(x, n * d);
    memcpy(y, x, sizeof x);
    cr_assert_eq(cloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    double moved = 0.0, worst = 0.0;
    for (size_t i = 0; i < n * d; i++) moved = fmax(moved, fabs(y[i] - x[i]));
    cr_expect_gt(moved, 0.5, "cloaked states equal the plain ones");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double a = 0.0, b = 0.0;
            for (int k = 0; k < d; k++) {
                a += (double)x[i * d + k] * x[j * d + k];
                b += (double)y[i * d + k] * y[j * d + k];
            }
            worst = fmax(worst, fabs(a - b) / d);
        }
    cr_expect_lt(worst, 1e-5, "inner products / norms changed by %g", worst);
    cr_assert_eq(uncloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    double back = 0.0;
    for (size_t i = 0; i < n * d; i++) back = fmax(back, fabs(y[i] - x[i]));
    cr_expect_lt(back, 1e-5, "uncloak(cloak(x)) differs from x by %g", back);
    /* wrong width */
    cr_expect_eq(cloak_states(&c, y, 1, d - 1, &err), INF_E_SHAPE);
    cr_expect(strstr(err.msg, "95") != NULL, "%s", err.msg);
    cloak_free(&c);
    rot_ctx_free(&r);
    rot_seed_wipe(&s);
}

Test(cloak, noise_has_the_requested_sigma) {
    const int d = 64;
    const size_t n = 2000;
    const double sigma = 0.5;
    rot_seed s;
    inf_error err;
    cr_assert_eq(rot_seed_generate(&s, &err), INF_OK, "%s", err.msg);
    rot_ctx r;
    cr_assert_eq(rot_ctx_init(&r, &s, d, false, &err), INF_OK, "%s", err.msg);
    float *x = malloc(sizeof(float) * n * d), *y = malloc(sizeof(float) * n * d), *z = malloc(sizeof(float) * n * d);
    random_rows(x, n * d);
    cloak_ctx c;
    cr_assert_eq(cloak_init_seeded(&c, &r, sigma, 1234, &err), INF_OK, "%s", err.msg);
    memcpy(y, x, sizeof(float) * n * d);
    cr_assert_eq(cloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(uncloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    cloak_free(&c);
    double m = 0.0, v = 0.0, m4 = 0.0;
    const double N = (double)n * d;
    for (size_t i = 0; i < n * d; i++) m += y[i] - x[i];
    m /= N;
    for (size_t i = 0; i < n * d; i++) {
        double e = y[i] - x[i] - m;
        v += e * e;
        m4 += e * e * e * e;
    }
    v /= N - 1;
    m4 /= N;
    /* 128000 draws: sd of the mean 0.0014, of the std about 0.001. */
    cr_expect(fabs(m) < 0.01, "noise mean %g", m);
    cr_expect(fabs(sqrt(v) - sigma) < 0.01 * sigma, "noise std %g, want %g", sqrt(v), sigma);
    cr_expect(fabs(m4 / (v * v) - 3.0) < 0.1, "noise kurtosis %g, Gaussian 3", m4 / (v * v));

    /* Seeded noise is reproducible; per-session noise is fresh. */
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(cloak_init_seeded(&c, &r, sigma, 1234, &err), INF_OK, "%s", err.msg);
        memcpy(z, x, sizeof(float) * n * d);
        cr_assert_eq(cloak_states(&c, z, 1, d, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(uncloak_states(&c, z, 1, d, &err), INF_OK, "%s", err.msg);
        cloak_free(&c);
        double diff = 0.0;
        for (int i = 0; i < d; i++) diff = fmax(diff, fabs(z[i] - y[i]));
        cr_expect_lt(diff, 1e-5, "same test seed, different noise (%g)", diff);
    }
    float a[64], b[64];
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(cloak_init(&c, &r, sigma, &err), INF_OK, "%s", err.msg);
        float *t = k ? b : a;
        memcpy(t, x, sizeof a);
        cr_assert_eq(cloak_states(&c, t, 1, d, &err), INF_OK, "%s", err.msg);
        cloak_free(&c);
    }
    cr_expect_neq(memcmp(a, b, sizeof a), 0, "two sessions drew the same noise");
    cr_expect_eq(cloak_init(&c, &r, -1.0, &err), INF_E_ARG);
    free(x);
    free(y);
    free(z);
    rot_ctx_free(&r);
    rot_seed_wipe(&s);
}

/* A folded bundle's cloak (cloak_set_prerotated): cloak_states adds only
 * the noise — the seeded noise stream of an ordinary cloak, unrotated —
 * and uncloak_states leaves the states alone; Q is never built. */
Test(cloak, prerotated_cloak_adds_only_the_noise) {
    const int d = 64;
    const size_t n = 50;
    const double sigma = 0.25;
    rot_seed s;
    inf_error err;
    cr_assert_eq(rot_seed_generate(&s, &err), INF_OK, "%s", err.msg);
    rot_ctx r;
    cr_assert_eq(rot_ctx_init(&r, &s, d, false, &err), INF_OK, "%s", err.msg);
    float *x = malloc(sizeof(float) * n * d), *y = malloc(sizeof(float) * n * d), *z = malloc(sizeof(float) * n * d);
    random_rows(x, n * d);
    cloak_ctx c;
    /* no noise: both directions are the identity, bit for bit */
    cr_assert_eq(cloak_init(&c, &r, 0.0, &err), INF_OK, "%s", err.msg);
    cloak_set_prerotated(&c);
    memcpy(y, x, sizeof(float) * n * d);
    cr_assert_eq(cloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(x, y, sizeof(float) * n * d), 0, "a prerotated cloak without noise changed the states");
    cr_assert_eq(uncloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(x, y, sizeof(float) * n * d), 0, "a prerotated uncloak changed the states");
    cloak_free(&c);
    /* noise: y - x is the noise an ordinary cloak adds before rotating,
     * i.e. Q^T (ordinary cloak of x) - x with the same seed */
    cr_assert_eq(cloak_init_seeded(&c, &r, sigma, 77, &err), INF_OK, "%s", err.msg);
    cloak_set_prerotated(&c);
    memcpy(y, x, sizeof(float) * n * d);
    cr_assert_eq(cloak_states(&c, y, n, d, &err), INF_OK, "%s", err.msg);
    cloak_free(&c);
    cr_assert_eq(cloak_init_seeded(&c, &r, sigma, 77, &err), INF_OK, "%s", err.msg);
    memcpy(z, x, sizeof(float) * n * d);
    cr_assert_eq(cloak_states(&c, z, n, d, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(uncloak_states(&c, z, n, d, &err), INF_OK, "%s", err.msg);
    cloak_free(&c);
    double md = 0.0, noise = 0.0;
    for (size_t i = 0; i < n * d; i++) {
        md = fmax(md, fabs((double)y[i] - z[i]));
        noise += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    }
    cr_expect_lt(md, 1e-5, "prerotated noise differs from the ordinary cloak's by %g", md);
    cr_expect_gt(sqrt(noise / (double)(n * d)), 0.5 * sigma, "no noise was added");
    free(x);
    free(y);
    free(z);
    rot_ctx_free(&r);
    rot_seed_wipe(&s);
}
