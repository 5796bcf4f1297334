/* client_int8.c — a copy of a client bundle with the lm_head in int8 (what
 * `prep --lm-head int8` writes) and a token frequency order, for bundles
 * that did not come from prep (bench/mkbundle's random Llama-3.1-8B shapes).
 *
 *   client_int8 --in DIR/client --out DIR2/client [--f16]
 *
 * The frequency order is the token-id order (random weights have no
 * frequencies). --f16 keeps the lm_head as it is and only adds the order.
 * secret.key is copied (mode 0600).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bundle.h"
#include "gemv.h"
#include "model.h"
#include "rotation.h"
#include "safetensors.h"

static const inf_model *M;

static inf_status rows_i8(void *user, void *buf, size_t nbytes, inf_error *err) {
    (void)nbytes;
    int scales = user != NULL;
    const int64_t V = M->cfg.vocab_size, d = M->cfg.dim;
    float *row = malloc(sizeof(float) * (size_t)d);
    int8_t *q = malloc((size_t)d);
    if (!row || !q) {
        free(row), free(q);
        return inf_fail(err, INF_E_NOMEM, "out of memory");
    }
    for (int64_t r = 0; r < V; r++) {
        gemv_row_f32(&M->lm_head, r, row);
        float s = gemv_quantize_row_i8(row, d, scales ? q : (int8_t *)buf + r * d);
        if (scales) ((float *)buf)[r] = s;
    }
    free(row), free(q);
    return INF_OK;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--in") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--f16")) keep = 1;
        else in = NULL, i = argc;
    }
    if (!in || !out) {
        fprintf(stderr, "usage: client_int8 --in DIR/client --out DIR2/client [--f16]\n");
        return 2;
    }
    inf_error err = {{0}};
    inf_model *m;
    if (inf_model_load_client_bundle(in, &m, &err)) {
        fprintf(stderr, "client_int8: %s\n", err.msg);
        return 1;
    }
    M = m;
    const int64_t V = m->cfg.vocab_size, d = m->cfg.dim;
    if (mkdir(out, 0700) != 0) {
        fprintf(stderr, "client_int8: cannot create %s (it must not exist)\n", out);
        return 1;
    }
    int32_t *ord = malloc(sizeof *ord * (size_t)V);
    for (int64_t i = 0; i < V; i++) ord[i] = (int32_t)i;
    char *cfg = inf_config_to_json(&m->cfg), path[4096], ver[8];
    st_writer *w;
    int64_t es[2] = {V, d}, vs = V, ds = d;
    inf_status st = st_writer_new(&w, &err);
    if (!st) st = st_writer_add(w, "token_embd.weight", m->tok_embd.dtype, 2, es, m->tok_embd.data, m->tok_embd.nbytes, &err);
    int64_t gs[2] = {d, d};
    if (!st && m->out_gain_rot) /* folded and tied: G as it is */
        st = st_writer_add(w, "output_norm.rotated", INF_DT_F32, 2, gs, m->out_gain_rot, sizeof(float) * (size_t)(d * d), &err);
    else if (!st && m->cfg.tied_embeddings) {
        float *g = malloc(sizeof(float) * (size_t)d);
        for (int64_t j = 0; j < d; j++) g[j] = m->out_norm ? m->out_norm[j] : 1.0f;
        st = st_writer_add(w, "output_norm.weight", INF_DT_F32, 1, &ds, g, sizeof(float) * (size_t)d, &err);
    }
    if (!st && keep && !m->cfg.tied_embeddings)
        st = st_writer_add(w, "output.weight", m->lm_head.dtype, 2, es, m->lm_head.data, m->lm_head.nbytes, &err);
    if (!st && !keep) st = st_writer_add_lazy(w, "output.weight", INF_DT_I8, 2, es, (size_t)(V * d), rows_i8, NULL, &err);
    if (!st && !keep)
        st = st_writer_add_lazy(w, "output.scale", INF_DT_F32, 1, &vs, sizeof(float) * (size_t)V, rows_i8, (void *)1, &err);
    if (!st) st = st_writer_add(w, "token_freq.order", INF_DT_I32, 1, &vs, ord, sizeof *ord * (size_t)V, &err);
    snprintf(ver, sizeof ver, "%d", m->rot_folded ? 3 : keep ? INF_BUNDLE_VERSION : 2);
    if (!st) st = st_writer_meta(w, "format", INF_BUNDLE_CLIENT_FORMAT, &err);
    if (!st) st = st_writer_meta(w, "format_version", ver, &err);
    if (!st) st = st_writer_meta(w, "config", cfg, &err);
    if (!st) st = st_writer_meta(w, "rotation", m->rotation, &err);
    if (!st) st = st_writer_meta(w, "lm_head", keep ? (m->lm_head.dtype == INF_DT_F32 ? "f32" : "f16") : INF_BUNDLE_LM_HEAD_INT8, &err);
    if (!st) st = st_writer_meta(w, "token_freq", "token ids (client_int8)", &err);
    if (!st) st = st_writer_meta(w, "rotation_folded", m->rot_folded ? "true" : "false", &err);
    snprintf(path, sizeof path, "%s/%s", out, INF_BUNDLE_CLIENT_FILE);
    if (!st) st = st_writer_write(w, path, &err);
    if (!st) {
        rot_seed seed;
        char src[4096];
        snprintf(src, sizeof src, "%s/%s", in, INF_BUNDLE_SEED_FILE);
        snprintf(path, sizeof path, "%s/%s", out, INF_BUNDLE_SEED_FILE);
        st = rot_seed_read(src, &seed, &err);
        if (!st) st = rot_seed_write(path, &seed, &err);
        rot_seed_wipe(&seed);
    }
    if (st) fprintf(stderr, "client_int8: %s\n", err.msg);
    st_writer_free(w);
    free(cfg);
    free(ord);
    inf_model_free(m);
    return st ? 1 : 0;
}
