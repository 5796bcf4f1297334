/* test_forward.c — the CPU forward pass against an independent reference.
 *
 * If this fails, `infemeral run` produces different text from llama.cpp on
 * the same model (or prefill and decode disagree, so chats drift): every
 * later component (cloaking, the worker, CUDA) is checked against this path.
 *
 * The reference fixtures come from tests/fixtures/make_reference.py
 * (llama.cpp via llama-cpp-python; see tests/fixtures/README.md).
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "embed.h"
#include "gguf_writer.h"
#include "kv.h"
#include "model.h"
#include "sample.h"
#include "testutil.h"

/* Runs ids through the layers at pos and returns the last position's logits. */
static void logits_for(const inf_model *m, inf_kv *kv, const int32_t *ids, int n, int pos,
                       float *logits) {
    inf_error err = {{0}};
    float *x = malloc(sizeof(float) * (size_t)n * m->cfg.dim);
    cr_assert_not_null(x);
    cr_assert_eq(inf_embed(m, ids, n, x, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(cpu_forward(m, kv, x, n, pos, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_logits(m, x + (size_t)(n - 1) * m->cfg.dim, logits, &err), INF_OK, "%s", err.msg);
    free(x);
}

static float *read_f32(const char *path, size_t n) {
    size_t len = 0;
    char *b = tu_read_file(path, &len);
    cr_assert_not_null(b, "cannot read fixture %s", path);
    cr_assert_eq(len, n * sizeof(float), "%s: %zu bytes, expected %zu", path, len, n * sizeof(float));
    return (float *)(void *)b;
}

static cJSON *load_reference(void) {
    char path[1024];
    char *txt = tu_read_file(tu_source(path, sizeof path, "tests/fixtures/smollm2_reference.json"), NULL);
    cr_assert_not_null(txt, "missing %s", path);
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    cr_assert_not_null(j, "fixture smollm2_reference.json is not valid JSON");
    return j;
}

static int json_ids(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        cr_assert(n < cap);
        out[n++] = (int32_t)e->valueint;
    }
    return n;
}

/* Compares our first-step logits and 32-token greedy continuation with one
 * reference variant. exact_greedy: all 32 tokens must match. */
static void check_variant(const char *variant, double max_abs_tol, int min_greedy_match) {
    const char *model_path = tu_smollm2();
    if (!model_path) cr_skip_test("skipped: SmolLM2 GGUF not present (run deploy/deps.sh; INF_SMOLLM2 unset)");
    inf_error err = {{0}};
    inf_model *m;
    cr_assert_eq(inf_model_load(model_path, &m, &err), INF_OK, "%s", err.msg);
    const int V = m->cfg.vocab_size;
    cJSON *ref = load_reference();
    const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts");
    const cJSON *runs = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "variants"), variant), "runs");
    cr_assert(cJSON_IsArray(prompts) && cJSON_IsArray(runs), "fixture lacks prompts/runs for %s", variant);
    cr_assert_geq(cJSON_GetArraySize(runs), 3, "need at least 3 reference prompts");
    float *logits = malloc(sizeof(float) * V);
    const cJSON *run;
    cJSON_ArrayForEach(run, runs) {
        int pi = cJSON_GetObjectItem(run, "prompt_index")->valueint;
        const cJSON *pr = cJSON_GetArrayItem(prompts, pi);
        int32_t ids[256], want[64], got[64];
        int n = json_ids(cJSON_GetObjectItem(pr, "ids"), ids, 256);
        int nw = json_ids(cJSON_GetObjectItem(run, "greedy_ids"), want, 64);
        char path[1024], rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/%s", cJSON_GetObjectItem(run, "first_logits_file")->valuestring);
        float *rl = read_f32(tu_source(path, sizeof path, rel), (size_t)V);

        inf_kv kv;
        cr_assert_eq(inf_kv_init(&kv, &m->cfg, 512, &err), INF_OK);
        logits_for(m, &kv, ids, n, 0, logits);
        double max_abs = 0, max_ref = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)logits[i] - rl[i]);
            if (d > max_abs) max_abs = d;
            if (fabs(rl[i]) > max_ref) max_ref = fabs(rl[i]);
        }
        cr_log_info("%s prompt %d: first-step logits max abs diff %.3g, relative to max |logit| %.3g",
                    variant, pi, max_abs, max_abs / max_ref);
        cr_expect_leq(max_abs, max_abs_tol, "%s prompt %d: logits differ by %g (tolerance %g)", variant,
                      pi, max_abs, max_abs_tol);
        cr_expect_eq(inf_argmax(logits, V), inf_argmax(rl, V), "%s prompt %d: first token differs", variant, pi);

        /* greedy continuation */
        int pos = n;
        for (int t = 0; t < nw; t++) {
            got[t] = inf_argmax(logits, V);
            if (t + 1 < nw) logits_for(m, &kv, &got[t], 1, pos++, logits);
        }
        int match = 0;
        while (match < nw && got[match] == want[match]) match++;
        cr_log_info("%s prompt %d: greedy continuation matches for %d of %d tokens", variant, pi, match, nw);
        cr_expect_geq(match, min_greedy_match < nw ? min_greedy_match : nw,
                      "%s prompt %d: greedy continuation diverges at token %d (got %d, want %d)", variant,
                      pi, match, match < nw ? got[match] : -1, match < nw ? want[match] : -1);
        inf_kv_free(&kv);
        free(rl);
    }
    free(logits);
    cJSON_Delete(ref);
    inf_model_free(m);
}

/* The f32 variant is llama.cpp on an F32 copy of the same GGUF made with
 * llama.cpp's own quantize tool: the same weights, exact f32 arithmetic. */
Test(forward, smollm2_matches_llama_cpp_f32_exactly, .timeout = 600) {
    check_variant("f32", 1e-4, 32);
}

/* The shipped Q4_1 file run by llama.cpp, which rounds activations to 8 bits
 * inside its Q4_1 matmuls and keeps an f16 KV cache: close, not identical
 * (measured: max |diff| 0.56-0.63 on logits of magnitude ~20-35, the first
 * token always agrees, the 32-token continuations agree for 3 to 32 tokens
 * before a near-tie flips). */
Test(forward, smollm2_close_to_llama_cpp_q4_1, .timeout = 600) {
    check_variant("q4_1", 1.0, 1);
}

/* ---- self-consistency on a tiny random model ------------------------------ */

static inf_model *tiny(int wtype, const char *dir) {
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    o.wtype = wtype;
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-%d.gguf", dir, wtype);
    cr_assert_eq(gw_write_tiny_llama(path, &o), 0);
    inf_error err = {{0}};
    inf_model *m;
    cr_assert_eq(inf_model_load(path, &m, &err), INF_OK, "%s", err.msg);
    return m;
}

static void prefill_equals_decode(int wtype) {
    char dir[512];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    inf_model *m = tiny(wtype, dir);
    const int V = m->cfg.vocab_size, n = 12;
    int32_t ids[12] = {72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100};
    inf_error err;
    inf_kv a, b;
    cr_assert_eq(inf_kv_init(&a, &m->cfg, 64, &err), INF_OK);
    cr_assert_eq(inf_kv_init(&b, &m->cfg, 64, &err), INF_OK);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    logits_for(m, &a, ids, n, 0, la); /* one prefill of 12 tokens */
    for (int i = 0; i < n; i++) logits_for(m, &b, &ids[i], 1, i, lb); /* 12 decode steps */
    double md = 0;
    for (int i = 0; i < V; i++) md = fmax(md, fabs((double)la[i] - lb[i]));
    cr_assert_lt(md, 1e-4, "prefill and step-by-step decode disagree by %g", md);
    cr_assert_eq(a.len, n);
    cr_assert_eq(b.len, n);

    /* rewriting from position 5 (what a retry or an edit does) gives the
     * same logits as computing the new sequence from scratch */
    int32_t alt[12];
    memcpy(alt, ids, sizeof ids);
    alt[5] = 33;
    alt[6] = 33;
    logits_for(m, &a, alt + 5, n - 5, 5, la);
    inf_kv c;
    cr_assert_eq(inf_kv_init(&c, &m->cfg, 64, &err), INF_OK);
    logits_for(m, &c, alt, n, 0, lb);
    md = 0;
    for (int i = 0; i < V; i++) md = fmax(md, fabs((double)la[i] - lb[i]));
    cr_assert_lt(md, 1e-4, "truncate-and-rewrite differs from a fresh run by %g", md);
    free(la);
    free(lb);
    inf_kv_free(&a);
    inf_kv_free(&b);
    inf_kv_free(&c);
    inf_model_free(m);
}

Test(forward, prefill_equals_decode_f32) { prefill_equals_decode(GW_F32); }
Test(forward, prefill_equals_decode_q4_1) { prefill_equals_decode(GW_Q4_1); }
Test(forward, prefill_equals_decode_q8_0) { prefill_equals_decode(GW_Q8_0); }

Test(forward, quantized_model_tracks_f32_model) {
    /* The same random weights at f32 and Q8_0 give close logits: the
     * quantized kernels compute the function the f32 kernels do. */
    char dir[512];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    inf_model *mf = tiny(GW_F32, dir), *mq = tiny(GW_Q8_0, dir);
    const int V = mf->cfg.vocab_size;
    int32_t ids[5] = {10, 20, 30, 40, 50};
    inf_error err;
    inf_kv a, b;
    cr_assert_eq(inf_kv_init(&a, &mf->cfg, 64, &err), INF_OK);
    cr_assert_eq(inf_kv_init(&b, &mq->cfg, 64, &err), INF_OK);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    logits_for(mf, &a, ids, 5, 0, la);
    logits_for(mq, &b, ids, 5, 0, lb);
    double md = 0, mx = 0;
    for (int i = 0; i < V; i++) {
        md = fmax(md, fabs((double)la[i] - lb[i]));
        mx = fmax(mx, fabs((double)la[i]));
    }
    cr_assert_lt(md, 0.05 * mx + 1e-3, "Q8_0 logits differ from f32 by %g (max |logit| %g)", md, mx);
    cr_assert_gt(md, 0.0, "Q8_0 and f32 gave bit-identical logits: quantization did not happen");
    free(la);
    free(lb);
    inf_kv_free(&a);
    inf_kv_free(&b);
    inf_model_free(mf);
    inf_model_free(mq);
}

Test(forward, context_limit_is_an_error_not_a_crash) {
    char dir[512];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    inf_model *m = tiny(GW_F32, dir);
    inf_error err = {{0}};
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &m->cfg, 4, &err), INF_OK);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    float *x = malloc(sizeof(float) * 5 * m->cfg.dim);
    cr_assert_eq(inf_embed(m, ids, 5, x, &err), INF_OK);
    cr_assert_eq(cpu_forward(m, &kv, x, 5, 0, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "context full") != NULL, "message was: %s", err.msg);
    cr_assert_eq(kv.len, 0, "a failed call must not change the cache");
    cr_assert_eq(cpu_forward(m, &kv, x, 1, 3, &err), INF_E_ARG, "pos past the cache must be refused");
    int32_t bad = m->cfg.vocab_size;
    cr_assert_eq(inf_embed(m, &bad, 1, x, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "outside the vocabulary") != NULL, "message was: %s", err.msg);
    free(x);
    inf_kv_free(&kv);
    inf_model_free(m);
}
