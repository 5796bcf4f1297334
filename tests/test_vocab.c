/* test_vocab.c — the client's lm_head kernels (common/gemv.h), the int8
 * lm_head of prep --lm-head int8, and --vocab-subset (client/vocab.h).
 *
 * If these fail, a user would see: greedy text that changes when
 * --vocab-subset is given (it must never), logits that depend on the CPU's
 * instruction set, or a corrupted int8 bundle loaded without a word. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "embed.h"
#include "gemv.h"
#include "generate.h"
#include "gguf_writer.h"
#include "model.h"
#include "prep.h"
#include "safetensors.h"
#include "sample.h"
#include "testutil.h"
#include "vocab.h"

static uint64_t rng_state = 1;
static double urand(void) { /* splitmix64 -> [0, 1) */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static float grand(void) { return (float)(sqrt(-2.0 * log(1.0 - urand())) * cos(2.0 * M_PI * urand())); }

/* ---- kernels ------------------------------------------------------------------------ */

Test(vocab, gemv_paths_agree) {
    const int R = 97, C = 333; /* odd sizes: every tail loop runs */
    float *w = malloc(sizeof(float) * R * C), *x = malloc(sizeof(float) * C);
    uint16_t *h = malloc(2 * R * C), *b = malloc(2 * R * C);
    int8_t *q = malloc((size_t)R * C);
    float *sc = malloc(sizeof(float) * R);
    for (int i = 0; i < R * C; i++) {
        w[i] = grand();
        h[i] = inf_f32_to_f16(w[i]);
        b[i] = inf_f32_to_bf16(w[i]);
    }
    for (int j = 0; j < C; j++) x[j] = grand();
    for (int r = 0; r < R; r++) sc[r] = gemv_quantize_row_i8(w + r * C, C, q + r * C);
    inf_tensor tf = {.dtype = INF_DT_F32, .ndim = 2, .shape = {R, C}, .data = w};
    inf_tensor th = tf, tb = tf, tq = tf;
    th.dtype = INF_DT_F16, th.data = h;
    tb.dtype = INF_DT_BF16, tb.data = b;
    tq.dtype = INF_DT_I8, tq.data = q;
    const inf_tensor *ts[4] = {&tf, &th, &tb, &tq};
    float *y[3][4];
    int16_t xq[333];
    const gemv_isa top = gemv_isa_active();
    for (int isa = 0; isa <= (int)top; isa++) {
        gemv_isa_force((gemv_isa)isa);
        for (int k = 0; k < 4; k++) {
            y[isa][k] = malloc(sizeof(float) * R);
            gemv_input in;
            gemv_rows(ts[k], k == 3 ? sc : NULL, gemv_input_make(&in, ts[k]->dtype, x, C, xq), NULL, R, y[isa][k]);
        }
    }
    for (int k = 0; k < 4; k++)
        for (int r = 0; r < R; r++) {
            /* reference in double on the values the kernel sees */
            float row[333];
            if (k < 3) gemv_row_f32(ts[k], r, row);
            double ref = 0, mag = 0;
            for (int j = 0; j < C; j++) {
                double wj = k < 3 ? row[j] : (double)q[r * C + j] * sc[r];
                ref += wj * x[j];
                mag += fabs(wj * x[j]);
            }
            for (int isa = 0; isa <= (int)top; isa++) {
                if (k == 3) { /* int8: integer sums, bit-identical on every path; close to the f32 row */
                    cr_assert_eq(y[isa][3][r], y[0][3][r], "int8 row %d differs on %s", r, gemv_isa_name((gemv_isa)isa));
                    cr_assert_lt(fabs(y[isa][3][r] - ref), 2e-3 * mag + 1e-6, "int8 row %d: %g vs %g", r, y[isa][3][r], ref);
                } else {
                    cr_assert_lt(fabs(y[isa][k][r] - ref), 1e-5 * mag + 1e-7, "dtype %d row %d on %s: %g vs %g", k, r,
                                 gemv_isa_name((gemv_isa)isa), y[isa][k][r], ref);
                }
            }
        }
    /* the rotation's two products, f32 and f16 */
    const int d = 75;
    float *A = malloc(sizeof(float) * d * d), *ya = malloc(sizeof(float) * d);
    uint16_t *Ah = malloc(2 * d * d);
    for (int i = 0; i < d * d; i++) {
        A[i] = grand();
        Ah[i] = inf_f32_to_f16(A[i]);
    }
    for (int isa = 0; isa <= (int)top; isa++) {
        gemv_isa_force((gemv_isa)isa);
        for (int f16 = 0; f16 < 2; f16++)
            for (int tr = 0; tr < 2; tr++) {
                gemv_square(f16 ? (void *)Ah : (void *)A, f16 ? INF_DT_F16 : INF_DT_F32, d, x, tr, ya);
                for (int i = 0; i < d; i++) {
                    double ref = 0, mag = 0;
                    for (int j = 0; j < d; j++) {
                        int idx = tr ? j * d + i : i * d + j;
                        double a = f16 ? inf_f16_to_f32(Ah[idx]) : A[idx];
                        ref += a * x[j];
                        mag += fabs(a * x[j]);
                    }
                    cr_assert_lt(fabs(ya[i] - ref), 1e-5 * mag + 1e-7, "square f16=%d t=%d isa %d row %d", f16, tr, isa, i);
                }
            }
        /* embedding rows: exact conversions */
        float row[333];
        gemv_row_f32(&th, 5, row);
        for (int j = 0; j < C; j++) cr_assert_eq(row[j], inf_f16_to_f32(h[5 * C + j]));
        gemv_row_f32(&tb, 6, row);
        for (int j = 0; j < C; j++) cr_assert_eq(row[j], inf_bf16_to_f32(b[6 * C + j]));
    }
    gemv_isa_force(top);
    for (int isa = 0; isa <= (int)top; isa++)
        for (int k = 0; k < 4; k++) free(y[isa][k]);
    free(A), free(Ah), free(ya), free(w), free(x), free(h), free(b), free(q), free(sc);
}

/* ---- the subset: identical greedy output, both paths exercised ------------------------ */

enum { V = 600, D = 48, N_SUB = 64 };

typedef struct {
    float M[D * D];
    float in_dir[D], out_dir[D]; /* a subset row and an outside row, unit length */
} fake_layers;

/* A deterministic stand-in for the layers: x <- tanh(M x) + a position term,
 * pulled toward a subset row at positions 1, 2 (mod 5) (steps the bound
 * can prove) and toward an outside row at positions 0 (mod 5) (steps a
 * token outside the subset wins). */
static inf_status fake_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    (void)err;
    fake_layers *f = ctx;
    for (int i = 0; i < n; i++) {
        float y[D];
        int p = (pos + i) % 5;
        for (int r = 0; r < D; r++) {
            double s = 0;
            for (int c = 0; c < D; c++) s += f->M[r * D + c] * x[i * D + c];
            y[r] = (float)tanh(s) + 0.3f * (float)sin(0.37 * (pos + i) + r);
            if (p == 0) y[r] = 0.3f * y[r] + 3.0f * f->out_dir[r];
            if (p == 1 || p == 2) y[r] = 0.3f * y[r] + 3.0f * f->in_dir[r];
        }
        memcpy(x + i * D, y, sizeof y);
    }
    return INF_OK;
}

/* A client-side model in memory: subset rows of norm ~1, the others ~0.3
 * except every 50th at ~0.6 (the bound's norm). f->in_dir / out_dir get
 * the directions of subset row 0 and of the first 0.6 row. */
static inf_model *fake_model(inf_dtype dt, fake_layers *f) {
    inf_model *m = inf_model_new("fake", INF_SRC_BUNDLE);
    m->cfg.dim = D;
    m->cfg.vocab_size = V;
    m->cfg.rms_eps = 1e-5f;
    float *w = malloc(sizeof(float) * V * D);
    int32_t *ord = inf_model_alloc(m, sizeof(int32_t) * V);
    for (int i = 0; i < V; i++) ord[i] = (i * 7 + 3) % V; /* a permutation: 7 and 600 are coprime */
    for (int i = 0; i < V; i++) {
        int t = ord[i];
        float scale = i < N_SUB ? 1.0f : i % 50 == 0 ? 0.6f : 0.3f;
        double nn = 0;
        for (int j = 0; j < D; j++) {
            w[t * D + j] = scale * grand() / sqrtf((float)D);
            nn += (double)w[t * D + j] * w[t * D + j];
        }
        float *dir = i == 0 ? f->in_dir : i == 100 ? f->out_dir : NULL;
        for (int j = 0; dir && j < D; j++) dir[j] = (float)(w[t * D + j] / sqrt(nn));
    }
    for (int i = 0; i < D * D; i++) f->M[i] = 1.5f * grand() / sqrtf((float)D);
    m->token_freq = ord;
    void *data;
    if (dt == INF_DT_F32) {
        data = inf_model_alloc(m, sizeof(float) * V * D);
        memcpy(data, w, sizeof(float) * V * D);
    } else if (dt == INF_DT_F16) {
        uint16_t *h = inf_model_alloc(m, 2 * V * D);
        for (int i = 0; i < V * D; i++) h[i] = inf_f32_to_f16(w[i]);
        data = h;
    } else {
        int8_t *q = inf_model_alloc(m, V * D);
        float *sc = inf_model_alloc(m, sizeof(float) * V);
        for (int r = 0; r < V; r++) sc[r] = gemv_quantize_row_i8(w + r * D, D, q + r * D);
        m->lm_head_scale = sc;
        data = q;
    }
    free(w);
    m->lm_head = (inf_tensor){.dtype = dt, .ndim = 2, .shape = {V, D}, .data = data};
    float *emb = inf_model_alloc(m, sizeof(float) * V * D);
    for (int i = 0; i < V * D; i++) emb[i] = grand();
    m->tok_embd = (inf_tensor){.dtype = INF_DT_F32, .ndim = 2, .shape = {V, D}, .data = emb};
    return m;
}

typedef struct {
    int32_t ids[400];
    int n;
} collected;

static bool collect(int32_t id, void *user) {
    collected *c = user;
    if (c->n < 400) c->ids[c->n++] = id;
    return true;
}

static void greedy(const inf_model *m, fake_layers *f, inf_vocab_subset *vs, float penalty, int steps, collected *out) {
    inf_error err = {{0}};
    inf_sampler s;
    inf_sampler_params p = inf_sampler_defaults();
    p.temperature = 0;
    p.repeat_penalty = penalty;
    p.repeat_last_n = 16;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_OK, "%s", err.msg);
    s.subset = vs;
    inf_gen g = {m, fake_fn, f, 256};
    int pos = 0;
    int32_t prompt[3] = {5, 77, 300};
    inf_gen_stats gs;
    out->n = 0;
    cr_assert_eq(inf_generate(&g, &pos, prompt, 3, steps, &s, collect, NULL, out, &gs, &err), INF_OK, "%s", err.msg);
    inf_sampler_free(&s);
}

static void subset_identical(inf_dtype dt) {
    rng_state = 7 + (uint64_t)dt;
    fake_layers f;
    inf_model *m = fake_model(dt, &f);
    const float penalties[3] = {1.0f, 1.3f, 0.7f};
    long hits = 0, outside = 0;
    for (int k = 0; k < 3; k++) {
        collected full, sub;
        inf_vocab_subset vs;
        inf_error err = {{0}};
        cr_assert_eq(inf_vocab_subset_init(&vs, m, N_SUB, &err), INF_OK, "%s", err.msg);
        greedy(m, &f, NULL, penalties[k], 300, &full);
        greedy(m, &f, &vs, penalties[k], 300, &sub);
        cr_assert_eq(full.n, 300);
        cr_assert_eq(sub.n, 300);
        for (int i = 0; i < 300; i++)
            cr_assert_eq(sub.ids[i], full.ids[i], "%s, penalty %g: step %d: %d with the subset, %d without",
                         inf_dtype_name(dt), penalties[k], i, sub.ids[i], full.ids[i]);
        cr_assert_eq(vs.steps, 300);
        cr_log_info("%s penalty %g: %ld of 300 proved", inf_dtype_name(dt), penalties[k], vs.hits);
        hits += vs.hits;
        for (int i = 0; i < 300; i++) outside += !vs.in_mask[full.ids[i]];
        inf_vocab_subset_free(&vs);
    }
    /* both paths ran: some steps proved in the subset, some fell back, and
     * some of those were won by a token outside the subset */
    cr_assert_gt(hits, 30, "%s: only %ld of 900 steps were proved", inf_dtype_name(dt), hits);
    cr_assert_lt(hits, 870, "%s: %ld of 900 steps proved: the fallback hardly ran", inf_dtype_name(dt), hits);
    cr_assert_gt(outside, 0, "%s: no step was won by a token outside the subset", inf_dtype_name(dt));
    /* the whole vocabulary as the subset, and a subset of one */
    for (int n = 1; n <= V; n += V - 1) {
        collected full, sub;
        inf_vocab_subset vs;
        inf_error err = {{0}};
        cr_assert_eq(inf_vocab_subset_init(&vs, m, n, &err), INF_OK, "%s", err.msg);
        greedy(m, &f, NULL, 1.1f, 60, &full);
        greedy(m, &f, &vs, 1.1f, 60, &sub);
        cr_assert_arr_eq(sub.ids, full.ids, sizeof(int32_t) * 60, "subset %d changed the output", n);
        inf_vocab_subset_free(&vs);
    }
    inf_model_free(m);
}

Test(vocab, subset_identical_f32) { subset_identical(INF_DT_F32); }
Test(vocab, subset_identical_f16) { subset_identical(INF_DT_F16); }
Test(vocab, subset_identical_int8) { subset_identical(INF_DT_I8); }

Test(vocab, sampling_uses_the_full_vocabulary) {
    rng_state = 3;
    fake_layers f;
    inf_model *m = fake_model(INF_DT_F32, &f);
    inf_vocab_subset vs;
    inf_error err = {{0}};
    cr_assert_eq(inf_vocab_subset_init(&vs, m, N_SUB, &err), INF_OK);
    inf_sampler_params p = inf_sampler_defaults(); /* temperature 0.7 */
    inf_sampler s;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_OK);
    float x[D], a[V], b[V];
    for (int j = 0; j < D; j++) x[j] = grand();
    cr_assert_eq(inf_vocab_logits(m, &vs, &s, x, a, &err), INF_OK);
    cr_assert_eq(inf_logits(m, x, b, &err), INF_OK);
    cr_assert_arr_eq(a, b, sizeof a, "temperature > 0 must see every logit");
    cr_assert_eq(vs.steps, 0);
    inf_sampler_free(&s);
    inf_vocab_subset_free(&vs);
    inf_model_free(m);
}

Test(vocab, bad_subset_sizes_and_missing_table) {
    rng_state = 5;
    fake_layers f;
    inf_model *m = fake_model(INF_DT_F32, &f);
    inf_vocab_subset vs;
    inf_error err = {{0}};
    cr_assert_eq(inf_vocab_subset_init(&vs, m, 0, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "--vocab-subset 0"), "%s", err.msg);
    cr_assert_eq(inf_vocab_subset_init(&vs, m, V + 1, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "--vocab-subset 601") && strstr(err.msg, "600"), "%s", err.msg);
    m->token_freq = NULL;
    cr_assert_eq(inf_vocab_subset_init(&vs, m, 10, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, "token_freq.order"), "%s", err.msg);
    inf_model_free(m);
}

/* ---- prep --lm-head int8 and the frequency table, through real bundles ------------------- */

static const char *tiny(char *dir, size_t cap) {
    static char path[1100];
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    o.tied = false;
    cr_assert_eq(gw_write_tiny_llama_tmp(dir, cap, path, sizeof path, &o), 0);
    return path;
}

Test(vocab, prep_int8_bundle_loads_and_is_close) {
    char dir[512], out8[700], out16[700], corpus[700], c8[800], c16[800];
    const char *mp = tiny(dir, sizeof dir);
    snprintf(out8, sizeof out8, "%s/i8", dir);
    snprintf(out16, sizeof out16, "%s/f16", dir);
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    const char *text = "zzzz zzzz zzzz qqq qqq a";
    cr_assert_eq(tu_write_file(corpus, text, strlen(text)), 0);
    inf_error err = {{0}};
    /* unfolded: two preps have two rotations, and a folded head reads its own
     * rotated state, so only unfolded heads take the same x */
    prep_opts o = {.model = mp, .out = out8, .weights = PREP_F16, .rotate = true, .lm_head = PREP_LMH_INT8,
                   .vocab_freq = corpus, .no_fold = true};
    cr_assert_eq(prep_run(&o, &err), INF_OK, "%s", err.msg);
    o.out = out16;
    o.lm_head = PREP_LMH_AUTO;
    o.vocab_freq = NULL; /* the shipped corpus */
    cr_assert_eq(prep_run(&o, &err), INF_OK, "%s", err.msg);
    snprintf(c8, sizeof c8, "%s/client", out8);
    snprintf(c16, sizeof c16, "%s/client", out16);
    inf_model *a, *b;
    cr_assert_eq(inf_model_load_client_bundle(c8, &a, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_model_load_client_bundle(c16, &b, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(a->lm_head.dtype, INF_DT_I8);
    cr_assert_not_null(a->lm_head_scale);
    cr_assert_eq(b->lm_head.dtype, INF_DT_F16);
    cr_assert_not_null(a->token_freq);
    cr_assert_not_null(b->token_freq);
    /* 'z' (byte token 'z' in the tiny vocabulary) is the most frequent */
    cr_assert_eq(a->token_freq[0], 'z', "most frequent token %d", a->token_freq[0]);
    const int d = a->cfg.dim, Vt = a->cfg.vocab_size;
    float *x = malloc(sizeof(float) * d), *la = malloc(sizeof(float) * Vt), *lb = malloc(sizeof(float) * Vt);
    for (int j = 0; j < d; j++) x[j] = grand();
    cr_assert_eq(inf_logits(a, x, la, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_logits(b, x, lb, &err), INF_OK, "%s", err.msg);
    double md = 0, mx = 0;
    for (int i = 0; i < Vt; i++) {
        md = fmax(md, fabs(la[i] - lb[i]));
        mx = fmax(mx, fabs(lb[i]));
    }
    cr_assert_lt(md, 0.02 * mx, "int8 logits differ from f16 by %g (max %g)", md, mx);
    free(x), free(la), free(lb);
    inf_model_free(a);
    inf_model_free(b);

    /* a damaged int8 bundle: the scales' dtype, then a truncated file */
    char path[900];
    snprintf(path, sizeof path, "%s/client.safetensors", c8);
    size_t len;
    char *bytes = tu_read_file(path, &len);
    cr_assert_not_null(bytes);
    char *hit = memmem(bytes, len, "\"output.scale\":{\"dtype\":\"F32\"", 29);
    if (hit) { /* the writer's key order; if it ever changes, the truncation below still runs */
        memcpy(hit + 25, "I32", 3);
        cr_assert_eq(tu_write_file(path, bytes, len), 0);
        cr_assert_neq(inf_model_load_client_bundle(c8, &a, &err), INF_OK);
        cr_assert(strstr(err.msg, "output.scale"), "%s", err.msg);
        memcpy(hit + 25, "F32", 3);
    }
    cr_assert_eq(tu_write_file(path, bytes, len - 100), 0);
    cr_assert_neq(inf_model_load_client_bundle(c8, &a, &err), INF_OK);
    cr_assert(strstr(err.msg, "client.safetensors"), "%s", err.msg);
    free(bytes);
}

Test(vocab, prep_refuses_bad_options) {
    inf_error err = {{0}};
    prep_lm_head h;
    cr_assert_eq(prep_parse_lm_head("int4", &h, &err), INF_E_ARG);
    cr_assert(strstr(err.msg, "--lm-head 'int4'"), "%s", err.msg);
    char dir[512], out[700], empty[700];
    const char *mp = tiny(dir, sizeof dir);
    snprintf(out, sizeof out, "%s/o1", dir);
    prep_opts o = {.model = mp, .out = out, .weights = PREP_F16, .rotate = false, .vocab_freq = "/nonexistent/corpus.txt"};
    cr_assert_eq(prep_run(&o, &err), INF_E_IO);
    cr_assert(strstr(err.msg, "--vocab-freq /nonexistent/corpus.txt"), "%s", err.msg);
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    cr_assert_eq(tu_write_file(empty, "", 0), 0);
    snprintf(out, sizeof out, "%s/o2", dir);
    o.out = out;
    o.vocab_freq = empty;
    cr_assert_eq(prep_run(&o, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "--vocab-freq") && strstr(err.msg, "empty"), "%s", err.msg);
}
