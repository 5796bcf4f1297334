/* quality.c — what `infemeral prep` costs in output quality.
 *
 *   quality --model PATH --text FILE [--positions N] [--json FILE] [--keep DIR]
 *
 * Prepares the model at f32, f16, bf16 and int4 (rotated) into a temporary
 * directory, teacher-forces the first N+1 tokens of the text through the
 * plain model and through each split path, and prints top-1 agreement with
 * the plain model and the perplexity of the text under each. One more row,
 * "original weights on rotated input", is the seed system's mistake: it
 * rotates the states but runs the unchanged layers on them.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "cloak.h"
#include "generate.h"
#include "kv.h"
#include "model.h"
#include "prep.h"
#include "rotation.h"
#include "teacher.h"
#include "tokenizer.h"

static void die(const char *what, const inf_error *err) {
    fprintf(stderr, "quality: %s: %s\n", what, err->msg);
    exit(1);
}

typedef struct { /* rotate, run the ORIGINAL layers, un-rotate: the seed's mistake */
    const inf_model *m;
    inf_kv *kv;
    rot_ctx *rot;
} mistake_ctx;

static inf_status mistake_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    mistake_ctx *c = ctx;
    size_t bytes = sizeof(float) * (size_t)n * c->m->cfg.dim;
    float *y = malloc(bytes);
    if (!y) return inf_fail(err, INF_E_NOMEM, "out of memory");
    inf_status st = rot_apply(c->rot, x, (size_t)n, y, err);
    if (!st) st = inf_local_layers_fn(&(inf_local_layers){c->m, c->kv}, y, n, pos, err);
    if (!st) st = rot_apply_t(c->rot, y, (size_t)n, x, err);
    free(y);
    return st;
}

int main(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *json = NULL;
    int positions = 256;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--model") && v) model = argv[++i];
        else if (!strcmp(argv[i], "--text") && v) text = argv[++i];
        else if (!strcmp(argv[i], "--positions") && v) positions = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && v) json = argv[++i];
        else {
            fprintf(stderr, "usage: quality --model PATH --text FILE [--positions N] [--json FILE]\n");
            return 2;
        }
    }
    if (!model || !text || positions < 8) {
        fprintf(stderr, "quality: --model and --text are required; --positions >= 8\n");
        return 2;
    }
    inf_error err = {{0}};
    inf_model *m;
    if (inf_model_load(model, &m, &err)) die("model", &err);
    tok_tokenizer *tok;
    if (tok_load_file(model, m->cfg.vocab_size, &tok, NULL, &err)) die("tokenizer", &err);
    FILE *f = fopen(text, "rb");
    if (!f) { fprintf(stderr, "quality: cannot open %s\n", text); return 1; }
    char *buf = malloc(1 << 20);
    size_t len = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[len] = '\0';
    int32_t *ids;
    size_t n_ids;
    if (tok_encode(tok, buf, len, tok_add_bos(tok), false, &ids, &n_ids, &err)) die("encode", &err);
    if ((int)n_ids < positions + 1) {
        fprintf(stderr, "quality: %s has %zu tokens, need %d\n", text, n_ids, positions + 1);
        return 1;
    }
    int n = positions + 1;
    int32_t *ref = malloc(sizeof *ref * n), *top = malloc(sizeof *top * n);
    double *lp_ref = malloc(sizeof *lp_ref * n), *lp = malloc(sizeof *lp * n);

    inf_kv kv;
    if (inf_kv_init(&kv, &m->cfg, n + 8, &err)) die("kv", &err);
    inf_local_layers local = {m, &kv};
    inf_gen g = {m, inf_local_layers_fn, &local, 256};
    if (inf_teacher_force(&g, ids, n, ref, lp_ref, &err)) die("plain model", &err);
    double ppl_ref = inf_perplexity(lp_ref, positions);

    char tmpl[] = "/tmp/inf-quality-XXXXXX";
    char *dir = mkdtemp(tmpl);
    /* every path prep offers that changes numbers; the default (Q folded
     * into the client bundle) first, then what --no-fold changes */
    static const struct {
        prep_weights w;
        bool rotate, no_fold;
        prep_lm_head lm;
        const char *name;
    } cfgs[] = {
        {PREP_F32, true, false, PREP_LMH_AUTO, "prep --weights f32"},
        {PREP_F16, true, false, PREP_LMH_AUTO, "prep --weights f16"},
        {PREP_BF16, true, false, PREP_LMH_AUTO, "prep --weights bf16"},
        {PREP_INT4, true, false, PREP_LMH_AUTO, "prep --weights int4 (g=128/64)"},
        {PREP_INT4, false, false, PREP_LMH_AUTO, "prep --weights int4 --no-rotate"},
        {PREP_F16, true, false, PREP_LMH_INT8, "prep --weights f16 --lm-head int8"},
        {PREP_INT4, true, false, PREP_LMH_INT8, "prep --weights int4 --lm-head int8"},
        {PREP_F32, true, true, PREP_LMH_AUTO, "prep --weights f32 --no-fold"},
        {PREP_F16, true, true, PREP_LMH_AUTO, "prep --weights f16 --no-fold"},
        {PREP_F16, true, true, PREP_LMH_INT8, "prep --weights f16 --lm-head int8 --no-fold"},
    };
    enum { NCFG = sizeof cfgs / sizeof cfgs[0] };
    double agree[NCFG + 1], ppl[NCFG + 1];
    rot_ctx keep_rot;
    bool have_rot = false;
    for (int w = 0; w < NCFG; w++) {
        char out[256], cdir[300], sdir[300], key[400];
        bool rotate = cfgs[w].rotate;
        snprintf(out, sizeof out, "%s/%d", dir, w);
        prep_opts o = {.model = model, .out = out, .weights = cfgs[w].w, .rotate = rotate, .progress = false,
                       .lm_head = cfgs[w].lm, .no_fold = cfgs[w].no_fold};
        if (prep_run(&o, &err)) die("prep", &err);
        snprintf(cdir, sizeof cdir, "%s/client", out);
        snprintf(sdir, sizeof sdir, "%s/server", out);
        snprintf(key, sizeof key, "%s/%s", cdir, INF_BUNDLE_SEED_FILE);
        inf_model *cm, *sm;
        if (inf_model_load_client_bundle(cdir, &cm, &err) || inf_model_load_server_bundle(sdir, &sm, &err))
            die("bundle", &err);
        rot_seed seed;
        rot_ctx rot;
        cloak_ctx ck;
        if (rotate && (rot_seed_read(key, &seed, &err) || rot_ctx_init(&rot, &seed, m->cfg.dim, false, &err) ||
                       cloak_init(&ck, &rot, 0.0, &err)))
            die("rotation", &err);
        if (rotate && cm->rot_folded) cloak_set_prerotated(&ck);
        inf_kv skv;
        if (inf_kv_init(&skv, &sm->cfg, n + 8, &err)) die("kv", &err);
        inf_split_layers sl = {sm, &skv, rotate ? &ck : NULL};
        inf_gen sg = {cm, inf_split_layers_fn, &sl, 256};
        if (inf_teacher_force(&sg, ids, n, top, lp, &err)) die("split", &err);
        agree[w] = inf_agreement(top, ref, positions);
        ppl[w] = inf_perplexity(lp, positions);
        inf_kv_free(&skv);
        if (rotate) {
            cloak_free(&ck);
            if (w == 0 && rot_ctx_init(&keep_rot, &seed, m->cfg.dim, false, &err) == INF_OK) have_rot = true;
            rot_seed_wipe(&seed);
            rot_ctx_free(&rot);
        }
        inf_model_free(cm);
        inf_model_free(sm);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
        if (system(cmd) != 0) fprintf(stderr, "quality: could not remove %s\n", out);
    }
    rmdir(dir);
    /* the seed system's mistake */
    if (!have_rot) die("rotation", &err);
    inf_kv mkv;
    if (inf_kv_init(&mkv, &m->cfg, n + 8, &err)) die("kv", &err);
    mistake_ctx mc = {m, &mkv, &keep_rot};
    inf_gen mg = {m, mistake_fn, &mc, 256};
    if (inf_teacher_force(&mg, ids, n, top, lp, &err)) die("mistake", &err);
    agree[NCFG] = inf_agreement(top, ref, positions);
    ppl[NCFG] = inf_perplexity(lp, positions);

    const char *name = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    printf("%s, %d teacher-forced positions of %s\n", name, positions, text);
    printf("| path | top-1 agreement with the plain model | perplexity |\n|---|---|---|\n");
    printf("| plain model | 100.0%% | %.3f |\n", ppl_ref);
    const char *mistake = "original weights on rotated input";
    for (int r = 0; r <= NCFG; r++) printf("| %s | %.1f%% | %.3f |\n", r < NCFG ? cfgs[r].name : mistake, 100 * agree[r], ppl[r]);
    if (json) {
        FILE *o = fopen(json, "w");
        if (!o) { fprintf(stderr, "quality: cannot write %s\n", json); return 1; }
        fprintf(o, "{\"model\": \"%s\", \"positions\": %d, \"plain_perplexity\": %.4f, \"rows\": [", name, positions, ppl_ref);
        for (int r = 0; r <= NCFG; r++)
            fprintf(o, "%s{\"path\": \"%s\", \"top1_agreement\": %.4f, \"perplexity\": %.4f}", r ? ", " : "",
                    r < NCFG ? cfgs[r].name : mistake, agree[r], ppl[r]);
        fprintf(o, "]}\n");
        fclose(o);
    }
    rot_ctx_free(&keep_rot);
    inf_kv_free(&mkv);
    inf_kv_free(&kv);
    free(ids);
    free(buf);
    free(ref);
    free(top);
    free(lp_ref);
    free(lp);
    tok_free(tok);
    inf_model_free(m);
    return 0;
}
