/* test_client_cuda.c — the CUDA client path (client/cuda/client_cuda.h)
 * against the CPU client path (client/embed.c, client/sample.c, the cloak).
 *
 * If this fails, a user with a GPU would see --device cuda (or the default,
 * auto) produce other text than --device cpu for the same prompt and seed,
 * int8 logits that are not the CPU's bit for bit, or a --device cuda on a
 * machine without a GPU that runs on the CPU silently instead of saying so.
 *
 * The GPU cases need a CUDA build and a GPU; without one each says
 * "skipped: no GPU". Tolerances:
 *   - lookup and int8 logits: bit-identical (client_cuda.h says why);
 *   - f32/f16 logits: relative L2 < 1e-5. Both sides compute the same
 *     rmsnorm (bit-identical) and round the same f16 weights to f32 exactly;
 *     only the order of the f32 sums differs. A d-term f32 sum in any order
 *     has a relative error of order sqrt(d) * 2^-24 ~ 1.5e-6 (d = 576) to
 *     4e-6 (d = 4096) in practice, so 1e-5 leaves margin without hiding a
 *     wrong row, a wrong scale or a missing gain (each >= 1e-3);
 *   - rotation (cuBLAS vs the CPU's BLAS): relative L2 < 1e-5 by the same
 *     argument; logits through an un-rotation: < 1e-4 (an int8 head then
 *     sees an input that may round to the next int16 step in a few places).
 * The split-run tests compare greedy token ids over 64 steps (cloak + CPU
 * worker layers + uncloak), which must be identical: a flip needs a
 * near-tie below 1e-5 of the logits' scale, which these prompts do not have.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bundle.h"
#include "client_cuda.h"
#include "cloak.h"
#include "embed.h"
#include "generate.h"
#include "gguf_writer.h"
#include "kv.h"
#include "model.h"
#include "prep.h"
#include "rotation.h"
#include "sample.h"
#include "testutil.h"

/* ASan reserves the low address range CUDA wants; harmless without ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }

static bool have_gpu(void) { return cc_built() && cc_device_count(NULL, 0) > 0; }

static void need_gpu(void) {
    char why[300] = "";
    if (!cc_built() || cc_device_count(why, sizeof why) <= 0) cr_skip_test("skipped: no GPU (%s)", why);
}

/* ---- the device choice (runs everywhere) ---------------------------------------- */

Test(client_cuda, cuda_without_gpu_is_a_clear_error) {
    if (have_gpu()) cr_skip_test("a GPU is present: nothing to refuse");
    bool use = true;
    inf_error err = {{0}};
    inf_status st = cc_choose("cuda", "--device", &use, &err);
    cr_assert(st == INF_E_DEVICE || st == INF_E_UNSUPPORTED, "status %d", st);
    cr_assert_not(use);
    cr_assert(strstr(err.msg, "--device cuda"), "%s", err.msg);
    cr_assert(strstr(err.msg, cc_built() ? "no usable CUDA GPU" : "this build has no CUDA"), "%s", err.msg);
}

Test(client_cuda, auto_without_gpu_is_the_cpu) {
    if (have_gpu()) cr_skip_test("a GPU is present: auto picks it");
    inf_error err = {{0}};
    const char *vals[] = {"auto", "", NULL, "cpu"};
    for (int i = 0; i < 4; i++) {
        bool use = true;
        cr_assert_eq(cc_choose(vals[i], "--device", &use, &err), INF_OK, "%s", err.msg);
        cr_assert_not(use, "%s", vals[i] ? vals[i] : "(null)");
    }
}

Test(client_cuda, cpu_is_always_the_cpu_and_a_bad_value_is_named) {
    bool use = true;
    inf_error err = {{0}};
    cr_assert_eq(cc_choose("cpu", "--device", &use, &err), INF_OK);
    cr_assert_not(use);
    cr_assert_eq(cc_choose("gpu0", "--device", &use, &err), INF_E_ARG);
    cr_assert(strstr(err.msg, "--device 'gpu0'") && strstr(err.msg, "cpu, cuda or auto"), "%s", err.msg);
}

Test(client_cuda, open_without_gpu_fails_naming_why) {
    if (have_gpu()) cr_skip_test("a GPU is present");
    char path[700];
    cr_assert_eq(gw_write_tiny_llama_tmp(NULL, 0, path, sizeof path, NULL), 0);
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load(path, &m, &err), INF_OK, "%s", err.msg);
    inf_cc *c = (inf_cc *)1;
    inf_status st = cc_open(m, NULL, &c, &err);
    cr_assert(st == INF_E_DEVICE || st == INF_E_UNSUPPORTED, "status %d: %s", st, err.msg);
    cr_assert_null(c);
    cr_assert(strstr(err.msg, "--device cuda"), "%s", err.msg);
    inf_model_free(m);
}

/* The command line: --device on run/generate/chat/bench. */
static int run_cli(const char *args, char *out, size_t cap) {
    const char *bin = getenv("INFEMERAL_BIN");
    cr_assert(bin && *bin, "INFEMERAL_BIN is not set (tests/meson.build)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static const char *tiny_gguf(char *dir, size_t cap) {
    static char path[1100];
    cr_assert_eq(gw_write_tiny_llama_tmp(dir, cap, path, sizeof path, NULL), 0);
    return path;
}

Test(client_cuda, cli_device_cuda_without_gpu_fails_clearly) {
    if (have_gpu()) cr_skip_test("a GPU is present: nothing to refuse");
    char dir[512], args[2048], out[8192];
    const char *mp = tiny_gguf(dir, sizeof dir);
    snprintf(args, sizeof args, "run --model %s --prompt hello --max-tokens 2 --temperature 0 --device cuda", mp);
    int rc = run_cli(args, out, sizeof out);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "--device cuda"), "%s", out);
    cr_assert(strstr(out, cc_built() ? "no usable CUDA GPU" : "this build has no CUDA"), "%s", out);
}

Test(client_cuda, cli_device_auto_and_cpu_run_on_the_cpu) {
    if (have_gpu()) cr_skip_test("a GPU is present: auto picks it");
    char dir[512], args[2048], a[8192], b[8192];
    const char *mp = tiny_gguf(dir, sizeof dir);
    snprintf(args, sizeof args, "run --model %s --prompt hello --max-tokens 4 --temperature 0 --quiet --device auto", mp);
    cr_assert_eq(run_cli(args, a, sizeof a), 0, "%s", a);
    snprintf(args, sizeof args, "run --model %s --prompt hello --max-tokens 4 --temperature 0 --quiet --device cpu", mp);
    cr_assert_eq(run_cli(args, b, sizeof b), 0, "%s", b);
    cr_assert_str_eq(a, b);
}

Test(client_cuda, cli_bad_device_is_named) {
    char dir[512], args[2048], out[8192];
    const char *mp = tiny_gguf(dir, sizeof dir);
    const char *cmds[] = {"run --model %s --prompt hi --device tpu", "bench --model %s --device tpu --runs 1"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, cmds[i], mp);
        int rc = run_cli(args, out, sizeof out);
        cr_assert_neq(rc, 0, "%s", out);
        cr_assert(strstr(out, "'tpu'") && strstr(out, "cpu, cuda or auto"), "%s", out);
    }
}

/* ---- on the GPU ----------------------------------------------------------------- */

static uint64_t rng_state = 7;
static double urand(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static float grand(void) { return (float)(sqrt(-2.0 * log(1.0 - urand())) * cos(2.0 * M_PI * urand())); }

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A prepared pair (client + server bundle) and the client's rotation. */
typedef struct {
    char out[800], client[900], server[900];
    inf_model *cm, *sm;
    rot_ctx rot;
} pair;

/* fold: prep's default (Q folded into the client bundle); false = --no-fold */
static void pair_prep(pair *p, const char *model, prep_weights w, prep_lm_head lmh, bool fold) {
    char dir[512];
    memset(p, 0, sizeof *p);
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    snprintf(p->out, sizeof p->out, "%s/prep", dir);
    inf_error err = {{0}};
    prep_opts o = {.model = model, .out = p->out, .weights = w, .rotate = true, .lm_head = lmh, .no_fold = !fold};
    cr_assert_eq(prep_run(&o, &err), INF_OK, "%s", err.msg);
    snprintf(p->client, sizeof p->client, "%s/client", p->out);
    snprintf(p->server, sizeof p->server, "%s/server", p->out);
    cr_assert_eq(inf_model_load_client_bundle(p->client, &p->cm, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_model_load_server_bundle(p->server, &p->sm, &err), INF_OK, "%s", err.msg);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", p->client, INF_BUNDLE_SEED_FILE);
    rot_seed seed;
    cr_assert_eq(rot_seed_read(path, &seed, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_ctx_init(&p->rot, &seed, p->cm->cfg.dim, false, &err), INF_OK, "%s", err.msg);
    rot_seed_wipe(&seed);
}

static void pair_free(pair *p) {
    rot_ctx_free(&p->rot);
    inf_model_free(p->cm);
    inf_model_free(p->sm);
}

static const char *tiny_untied(void) {
    static char path[1100];
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    o.tied = false;
    cr_assert_eq(gw_write_tiny_llama_tmp(NULL, 0, path, sizeof path, &o), 0);
    return path;
}

/* Lookup (+ rotation) and logits (with and without un-rotation) of one bundle. */
static void check_bundle(pair *p, bool int8) {
    inf_error err = {{0}};
    const inf_model *m = p->cm;
    const int d = m->cfg.dim, V = m->cfg.vocab_size;
    inf_cc *c;
    cr_assert_eq(cc_open_rot(m, &p->rot, &c, &err), INF_OK, "%s", err.msg);
    cr_assert(cc_has_rotation(c));
    if (int8) cr_assert_eq(m->lm_head.dtype, INF_DT_I8);

    /* lookup: bit-identical; rotated: close to the CPU's rot_apply */
    int32_t ids[5] = {0, 1, V / 2, V - 1, 3};
    float *a = malloc(sizeof(float) * 5 * d), *b = malloc(sizeof(float) * 5 * d), *r = malloc(sizeof(float) * 5 * d);
    cr_assert_eq(cc_embed(c, ids, 5, false, a, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_embed(m, ids, 5, b, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(a, b, sizeof(float) * 5 * d), 0, "lookup differs from the CPU");
    cr_assert_eq(cc_embed(c, ids, 5, true, a, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_apply(&p->rot, b, 5, r, &err), INF_OK, "%s", err.msg);
    double e = rel_l2(a, r, 5 * (size_t)d);
    cr_assert_lt(e, 1e-5, "embedding + rotation: relative L2 %g", e);
    cr_assert_eq(cc_embed(c, ids + 4, 1, true, a, &err), INF_OK, "%s", err.msg); /* the decode shape (gemv) */
    e = rel_l2(a, r + 4 * (size_t)d, (size_t)d);
    cr_assert_lt(e, 1e-5, "embedding + rotation (one row): relative L2 %g", e);
    int32_t bad = V;
    cr_assert_eq(cc_embed(c, &bad, 1, false, a, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "outside the vocabulary"), "%s", err.msg);

    /* logits of a few states: the same x on both sides */
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V), *x = malloc(sizeof(float) * d),
          *qx = malloc(sizeof(float) * d);
    for (int t = 0; t < 4; t++) {
        for (int j = 0; j < d; j++) x[j] = (t == 3 ? 100.0f : 1.0f) * grand();
        cr_assert_eq(cc_logits(c, x, false, la, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(inf_logits(m, x, lb, &err), INF_OK, "%s", err.msg);
        if (int8 && m->out_gain_rot) {
            /* G h on the device, scaled after: the int16 input may differ by a step */
            e = rel_l2(la, lb, (size_t)V);
            cr_assert_lt(e, 1e-3, "int8 logits of a folded tied bundle: relative L2 %g (state %d)", e, t);
        } else if (int8) {
            cr_assert_eq(memcmp(la, lb, sizeof(float) * V), 0, "int8 logits differ from the CPU (state %d)", t);
        } else {
            e = rel_l2(la, lb, (size_t)V);
            cr_assert_lt(e, 1e-5, "logits: relative L2 %g (state %d)", e, t);
        }
        /* the state as it comes back from the worker: rotated */
        cr_assert_eq(rot_apply(&p->rot, x, 1, qx, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(cc_logits(c, qx, true, la, &err), INF_OK, "%s", err.msg);
        e = rel_l2(la, lb, (size_t)V);
        cr_assert_lt(e, 1e-4, "logits through the un-rotation: relative L2 %g (state %d)", e, t);
    }

    /* greedy with a repetition penalty: the CPU sampler on the CPU's logits */
    inf_sampler_params sp = inf_sampler_defaults();
    sp.temperature = 0;
    sp.repeat_penalty = 1.3f;
    inf_sampler s;
    cr_assert_eq(inf_sampler_init(&s, &sp, V, &err), INF_OK, "%s", err.msg);
    for (int t = 0; t < 8 && !(int8 && m->out_gain_rot); t++) { /* ids: exact paths only */
        for (int j = 0; j < d; j++) x[j] = grand();
        int32_t id_dev = -1;
        cr_assert_eq(cc_next(c, x, false, &s, &id_dev, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(inf_logits(m, x, lb, &err), INF_OK, "%s", err.msg);
        int32_t id_cpu = inf_sample(&s, lb);
        cr_assert_eq(id_dev, id_cpu, "step %d: device %d, CPU %d", t, id_dev, id_cpu);
        inf_sampler_accept(&s, id_cpu);
        inf_sampler_accept(&s, id_cpu);  /* a repeated id is penalized once */
        inf_sampler_accept(&s, (t * 7) % V);
    }
    inf_sampler_free(&s);
    cc_close(c);
    free(a), free(b), free(r), free(la), free(lb), free(x), free(qx);
}

Test(client_cuda, random_bundle_f16_matches_cpu, .timeout = 600) {
    need_gpu();
    pair p;
    pair_prep(&p, tiny_untied(), PREP_F16, PREP_LMH_AUTO, true);
    check_bundle(&p, false);
    pair_free(&p);
}

Test(client_cuda, random_bundle_int8_is_bit_identical, .timeout = 600) {
    need_gpu();
    pair p;
    pair_prep(&p, tiny_untied(), PREP_F16, PREP_LMH_INT8, true);
    check_bundle(&p, true);
    pair_free(&p);
}

Test(client_cuda, argmax_ties_zeros_and_nan_as_the_cpu) {
    need_gpu();
    /* an all-zero state gives all-equal logits (ties: the lowest id); a NaN
     * in the state makes every logit NaN (the CPU loop then stays at 0) */
    pair p;
    pair_prep(&p, tiny_untied(), PREP_F32, PREP_LMH_AUTO, true);
    inf_error err = {{0}};
    inf_cc *c;
    cr_assert_eq(cc_open(p.cm, NULL, &c, &err), INF_OK, "%s", err.msg);
    const int d = p.cm->cfg.dim, V = p.cm->cfg.vocab_size;
    float *x = calloc((size_t)d, sizeof(float)), *l = malloc(sizeof(float) * V);
    inf_sampler_params sp = inf_sampler_defaults();
    sp.temperature = 0;
    inf_sampler s;
    cr_assert_eq(inf_sampler_init(&s, &sp, V, &err), INF_OK, "%s", err.msg);
    int32_t id = -1;
    cr_assert_eq(cc_next(c, x, false, &s, &id, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_logits(p.cm, x, l, &err), INF_OK);
    cr_assert_eq(id, inf_argmax(l, V), "all-zero state: device %d", id);
    x[0] = NAN; /* NaN logits everywhere: the CPU loop stays at id 0 */
    cr_assert_eq(cc_next(c, x, false, &s, &id, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(id, 0);
    inf_sampler_free(&s);
    cc_close(c);
    free(x), free(l);
    pair_free(&p);
}

typedef struct {
    int32_t *ids;
    int n, cap;
} collected;

static bool collect(int32_t id, void *u) {
    collected *a = u;
    if (a->n < a->cap) a->ids[a->n++] = id;
    return true;
}

/* The split path in one process, greedy, 64 steps: the CPU's client ends
 * (inf_split_layers: cloak, server layers, uncloak) against the device's
 * (rotation and un-rotation on the device, the same server layers). */
static void split_tokens(pair *p, bool device, const int32_t *prompt, int n_prompt, int32_t *out, int n_out) {
    inf_error err = {{0}};
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &p->sm->cfg, 256, &err), INF_OK, "%s", err.msg);
    inf_sampler_params sp = inf_sampler_defaults();
    sp.temperature = 0;
    sp.repeat_penalty = 1.1f;
    inf_sampler s;
    cr_assert_eq(inf_sampler_init(&s, &sp, p->cm->cfg.vocab_size, &err), INF_OK, "%s", err.msg);
    cloak_ctx cl;
    cr_assert_eq(cloak_init(&cl, &p->rot, 0.0, &err), INF_OK, "%s", err.msg);
    const bool folded = p->cm->rot_folded;
    if (folded) cloak_set_prerotated(&cl);
    inf_split_layers sl = {p->sm, &kv, &cl};
    inf_local_layers local = {p->sm, &kv};
    inf_gen g = {p->cm, inf_split_layers_fn, &sl, 256};
    inf_cc *c = NULL;
    cc_gen cg;
    inf_gen_device dev;
    if (device) {
        /* a folded bundle's rows are rotated already: no Q on the device */
        cr_assert_eq(cc_open_rot(p->cm, folded ? NULL : &p->rot, &c, &err), INF_OK, "%s", err.msg);
        cg = (cc_gen){c, !folded};
        dev = (inf_gen_device){&cg, cc_gen_embed, cc_gen_next};
        g.layers = inf_local_layers_fn; /* the device cloaks: the layers get its rows as they are */
        g.layers_ctx = &local;
    }
    int pos = 0;
    inf_gen_stats gs;
    collected acc = {out, 0, n_out};
    cr_assert_eq(inf_generate_device(&g, device ? &dev : NULL, NULL, &pos, prompt, n_prompt, n_out, &s, collect,
                                     NULL, &acc, &gs, &err),
                 INF_OK, "%s", err.msg);
    cr_assert_eq(acc.n, n_out);
    cc_close(c);
    cloak_free(&cl);
    inf_sampler_free(&s);
    inf_kv_free(&kv);
}

static void check_split(pair *p) {
    const int N = 64;
    int32_t prompt[12], cpu[64], dev[64];
    for (int i = 0; i < 12; i++) prompt[i] = (int32_t)((i * 37 + 5) % p->cm->cfg.vocab_size);
    split_tokens(p, false, prompt, 12, cpu, N);
    split_tokens(p, true, prompt, 12, dev, N);
    for (int i = 0; i < N; i++) cr_assert_eq(dev[i], cpu[i], "step %d: device %d, CPU %d", i, dev[i], cpu[i]);
}

Test(client_cuda, split_run_greedy_tokens_tiny, .timeout = 600) {
    need_gpu();
    pair p;
    pair_prep(&p, tiny_untied(), PREP_F32, PREP_LMH_AUTO, true);
    check_split(&p);
    pair_free(&p);
}

Test(client_cuda, split_run_greedy_tokens_smollm2_f16, .timeout = 1200) {
    need_gpu();
    const char *mp = tu_smollm2();
    if (!mp) cr_skip_test("skipped: SmolLM2 not available (INF_SMOLLM2)");
    pair p;
    pair_prep(&p, mp, PREP_F16, PREP_LMH_AUTO, true);
    check_bundle(&p, false);
    check_split(&p);
    pair_free(&p);
}

Test(client_cuda, split_run_greedy_tokens_smollm2_int8, .timeout = 1200) {
    need_gpu();
    const char *mp = tu_smollm2();
    if (!mp) cr_skip_test("skipped: SmolLM2 not available (INF_SMOLLM2)");
    pair p;
    pair_prep(&p, mp, PREP_F16, PREP_LMH_INT8, false); /* unfolded: the int8 path is bit-exact */
    check_bundle(&p, true);
    check_split(&p);
    pair_free(&p);
}

/* The folded tied int8 bundle (prep's default for SmolLM2 with --lm-head
 * int8): G h on the device; logits close to the CPU's. */
Test(client_cuda, smollm2_int8_folded_tied_logits_close, .timeout = 1200) {
    need_gpu();
    const char *mp = tu_smollm2();
    if (!mp) cr_skip_test("skipped: SmolLM2 not available (INF_SMOLLM2)");
    pair p;
    pair_prep(&p, mp, PREP_F16, PREP_LMH_INT8, true);
    cr_assert_not_null(p.cm->out_gain_rot);
    check_bundle(&p, true);
    pair_free(&p);
}

/* An unfolded tied f16 bundle: the device's un-rotation, the plain gain. */
Test(client_cuda, smollm2_f16_unfolded_split_tokens, .timeout = 1200) {
    need_gpu();
    const char *mp = tu_smollm2();
    if (!mp) cr_skip_test("skipped: SmolLM2 not available (INF_SMOLLM2)");
    pair p;
    pair_prep(&p, mp, PREP_F16, PREP_LMH_AUTO, false);
    check_split(&p);
    pair_free(&p);
}
