/* test_mkbundle.c — the random bundles benchmarks time are real bundles:
 * they load with the bundle loaders, run through the CPU forward pass and
 * the lm_head to finite, non-degenerate logits, and the same --seed gives
 * the same weights. (Run by meson with INF_MKBUNDLE = the tool's path.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "embed.h"
#include "kv.h"
#include "model.h"
#include "safetensors.h"

static void mk(const char *out, const char *weights, const char *seed) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' --preset tiny --weights %s --seed %s --out '%s' 2>/dev/null",
             getenv("INF_MKBUNDLE"), weights, seed, out);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
}

static void check_runs(const char *dir) {
    char s[2048], c[2048];
    snprintf(s, sizeof s, "%s/server", dir);
    snprintf(c, sizeof c, "%s/client", dir);
    inf_model *sm, *cm;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load_server_bundle(s, &sm, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_model_load_client_bundle(c, &cm, &err), INF_OK, "%s", err.msg);
    cr_assert_str_eq(sm->rotation, cm->rotation, "client and server fingerprints differ");
    int32_t ids[5] = {1, 17, 300, 42, 511};
    int dim = sm->cfg.dim, V = cm->cfg.vocab_size;
    float *x = malloc(sizeof(float) * 5 * (size_t)dim), *lg = malloc(sizeof(float) * (size_t)V);
    inf_kv kv;
    cr_assert_eq(inf_embed(cm, ids, 5, x, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_kv_init(&kv, &sm->cfg, 64, &err), INF_OK);
    cr_assert_eq(cpu_forward(sm, &kv, x, 5, 0, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_logits(cm, x + 4 * (size_t)dim, lg, &err), INF_OK, "%s", err.msg);
    double sum = 0, sq = 0;
    for (int i = 0; i < V; i++) {
        cr_assert(isfinite(lg[i]), "logit %d is not finite", i);
        sum += lg[i];
        sq += (double)lg[i] * lg[i];
    }
    double sd = sqrt(sq / V - (sum / V) * (sum / V));
    cr_assert(sd > 0.05 && sd < 100.0, "logits' spread %g is degenerate", sd);
    inf_kv_free(&kv);
    free(x);
    free(lg);
    inf_model_free(sm);
    inf_model_free(cm);
}

static const inf_tensor *t0(st_file *f) { return st_find(f, "blk.0.attn_q.weight"); }

Test(mkbundle, f16_and_int4_bundles_load_and_run) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/mkb-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    char a[512], b[512], q[512];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(q, sizeof q, "%s/q", dir);
    mk(a, "f16", "7");
    mk(b, "f16", "7");
    mk(q, "int4", "7");
    check_runs(a);
    check_runs(q);
    /* same seed, same weights (the rotation seed itself is always fresh) */
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/server/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/server/model.safetensors", b);
    st_file *fa, *fb;
    inf_error err;
    cr_assert_eq(st_open(pa, &fa, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_open(pb, &fb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(t0(fa)->nbytes, t0(fb)->nbytes);
    cr_assert(memcmp(t0(fa)->data, t0(fb)->data, t0(fa)->nbytes) == 0, "same --seed gave different weights");
    st_close(fa);
    st_close(fb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(mkbundle, unknown_preset_is_refused) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --preset llama9 --out /tmp/never 2>&1 | grep -q \"unknown --preset 'llama9'\"",
             getenv("INF_MKBUNDLE"));
    cr_assert_eq(system(cmd), 0, "no clear message for an unknown preset");
}
