/* If this fails, `infemeral run --model stories260K.bin` either refuses
 * Karpathy's llama2.c checkpoints or loads them with the wrong shapes (so the
 * story comes out as gibberish), and a truncated or foreign file is not
 * reported as such but crashes or loads garbage. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "testutil.h"

#define S260_SIZE_EXPECTED 1056540u /* 28 + 4 * (floats listed in the header comment) */

static const char *stories(char *buf, size_t cap) {
    return tu_asset(buf, cap, "stories260K/stories260K.bin");
}

static char *read_stories(size_t *len) {
    char p[1024];
    char *d = tu_read_file(stories(p, sizeof p), len);
    cr_assert_not_null(d, "cannot read %s (INF_ASSETS)", p);
    return d;
}

typedef struct {
    char dir[512];
    char path[600];
} tmpfile_t;

static void tmp_write(tmpfile_t *t, const char *name, const void *data, size_t len) {
    if (!t->dir[0]) cr_assert_not_null(tu_tmpdir(t->dir, sizeof t->dir));
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
    cr_assert_eq(tu_write_file(t->path, data, len), 0, "cannot write %s", t->path);
}

static void tmp_done(tmpfile_t *t) {
    unlink(t->path);
    rmdir(t->dir);
}

/* Loads path and expects a failure whose message names the path and holds
 * each of the needles. */
static void expect_fail(const char *path, const char *n1, const char *n2) {
    inf_model *m = (inf_model *)0x1;
    inf_error err = {{0}};
    inf_status st = inf_model_load_llama2c(path, &m, &err);
    cr_assert_neq(st, INF_OK, "%s loaded but should have failed", path);
    cr_assert_null(m, "a failed load must leave *out NULL");
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    if (n1) cr_assert(strstr(err.msg, n1) != NULL, "message lacks '%s': %s", n1, err.msg);
    if (n2) cr_assert(strstr(err.msg, n2) != NULL, "message lacks '%s': %s", n2, err.msg);
}

static void put_i32(char *d, int idx, int32_t v) { memcpy(d + 4 * idx, &v, 4); }

Test(llama2c, stories260k_config_and_shapes) {
    char p[1024];
    inf_model *m = NULL;
    inf_error err = {{0}};
    inf_status st = inf_model_load_llama2c(stories(p, sizeof p), &m, &err);
    cr_assert_eq(st, INF_OK, "load failed: %s", err.msg);
    const inf_model_config *c = &m->cfg;
    cr_assert_eq(m->source, INF_SRC_LLAMA2C);
    cr_assert_eq(c->dim, 64);
    cr_assert_eq(c->ffn_dim, 172);
    cr_assert_eq(c->n_layers, 5);
    cr_assert_eq(c->n_heads, 8);
    cr_assert_eq(c->n_kv_heads, 4);
    cr_assert_eq(c->head_dim, 8);
    cr_assert_eq(c->vocab_size, 512);
    cr_assert_eq(c->max_seq, 512);
    cr_assert_float_eq(c->rope_theta, 10000.0f, 0.0f);
    cr_assert_float_eq(c->rms_eps, 1e-5f, 0.0f);
    cr_assert(c->rope_interleaved);
    cr_assert(c->tied_embeddings);
    cr_assert_eq(c->bos_id, 1);
    cr_assert_eq(c->eos_id, 2);
    cr_assert_eq(c->rope_scaling, INF_ROPE_SCALING_NONE);

    /* shapes [out, in], all F32 in place */
    const int64_t emb[2] = {512, 64};
    cr_assert_eq(inf_tensor_expect(&m->tok_embd, "tok_embd", 2, emb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(m->lm_head.data, m->tok_embd.data, "shared classifier must be the embeddings");
    const inf_layer *L = &m->layers[4];
    const int64_t q[2] = {64, 64}, kv[2] = {32, 64}, o[2] = {64, 64}, g[2] = {172, 64},
                  dn[2] = {64, 172};
    cr_assert_eq(inf_tensor_expect(&L->wq, "wq", 2, q, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->wk, "wk", 2, kv, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->wv, "wv", 2, kv, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->wo, "wo", 2, o, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->w_gate, "w1", 2, g, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->w_up, "w3", 2, g, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(inf_tensor_expect(&L->w_down, "w2", 2, dn, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(L->wq.dtype, INF_DT_F32);

    /* Offsets, checked against the file read independently: the
     * embeddings start right after the 28-byte header, the layer arrays
     * are consecutive, and the final gain sits right after the last w3. */
    size_t len;
    char *raw = read_stories(&len);
    cr_assert_eq(len, S260_SIZE_EXPECTED);
    const float *file = (const float *)(const void *)(raw + 28);
    cr_assert_eq(memcmp(m->tok_embd.data, file, 512 * 64 * 4), 0);
    size_t off = 512 * 64;                                  /* rms_att */
    cr_assert_eq(memcmp(m->layers[2].attn_norm, file + off + 2 * 64, 64 * 4), 0);
    off += 5 * 64;                                          /* wq */
    cr_assert_eq(memcmp(m->layers[3].wq.data, file + off + 3 * 64 * 64, 64 * 64 * 4), 0);
    off += 5 * 64 * 64;                                     /* wk */
    cr_assert_eq(memcmp(m->layers[1].wk.data, file + off + 1 * 32 * 64, 32 * 64 * 4), 0);
    off += 5 * 32 * 64;                                     /* wv */
    cr_assert_eq(memcmp(m->layers[4].wv.data, file + off + 4 * 32 * 64, 32 * 64 * 4), 0);
    off += 5 * 32 * 64;                                     /* wo */
    cr_assert_eq(memcmp(m->layers[0].wo.data, file + off, 64 * 64 * 4), 0);
    off += 5 * 64 * 64;                                     /* rms_ffn */
    cr_assert_eq(memcmp(m->layers[4].ffn_norm, file + off + 4 * 64, 64 * 4), 0);
    off += 5 * 64;                                          /* w1 */
    cr_assert_eq(memcmp(m->layers[2].w_gate.data, file + off + 2 * 172 * 64, 172 * 64 * 4), 0);
    off += 5 * 172 * 64;                                    /* w2 */
    cr_assert_eq(memcmp(m->layers[2].w_down.data, file + off + 2 * 64 * 172, 64 * 172 * 4), 0);
    off += 5 * 64 * 172;                                    /* w3 */
    cr_assert_eq(memcmp(m->layers[2].w_up.data, file + off + 2 * 172 * 64, 172 * 64 * 4), 0);
    off += 5 * 172 * 64;                                    /* rms_final */
    cr_assert_eq(memcmp(m->out_norm, file + off, 64 * 4), 0);
    off += 64 + 2 * 512 * 4;                                /* two RoPE tables */
    cr_assert_eq(28 + off * 4, len, "the arrays must cover the file exactly");

    /* RoPE as llama2.c computes it: 1 / 10000^(2i/head_size) */
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(m->rope_inv_freq[i], (float)pow(10000.0, -2.0 * i / 8.0), 1e-7);
    free(raw);
    inf_model_free(m);
}

Test(llama2c, dispatch_by_content) {
    char p[1024];
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load(stories(p, sizeof p), &m, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(m->source, INF_SRC_LLAMA2C);
    cr_assert_eq(m->cfg.n_layers, 5);
    inf_model_free(m);
}

Test(llama2c, truncated_copies_fail_with_sizes) {
    size_t len;
    char *raw = read_stories(&len);
    const size_t cuts[] = {0, 3, 27, 28, 29, 100, 4096, 512 * 64 * 4 + 28, len / 2, len - 4096,
                           len - 4, len - 1};
    tmpfile_t t = {{0}, {0}};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        tmp_write(&t, "trunc.bin", raw, cuts[i]);
        char n1[64], n2[64];
        snprintf(n2, sizeof n2, "%zu", cuts[i]);
        if (cuts[i] < 28) {
            expect_fail(t.path, "truncated", n2);
        } else {
            snprintf(n1, sizeof n1, "implies %zu bytes", len);
            expect_fail(t.path, n1, n2);
        }
    }
    tmp_done(&t);
    free(raw);
}

Test(llama2c, too_long_fails_unless_a_classifier_fits) {
    size_t len;
    char *raw = read_stories(&len);
    size_t cls = 512 * 64 * 4;
    char *big = calloc(1, len + cls);
    memcpy(big, raw, len);
    tmpfile_t t = {{0}, {0}};
    tmp_write(&t, "long.bin", big, len + 4);
    expect_fail(t.path, "longer", "1056544");
    tmp_write(&t, "long.bin", big, len + cls - 4);
    expect_fail(t.path, "longer", NULL);
    /* exactly one (unused) classifier after a shared-classifier file: accepted */
    tmp_write(&t, "long.bin", big, len + cls);
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load_llama2c(t.path, &m, &err), INF_OK, "%s", err.msg);
    cr_assert(m->cfg.tied_embeddings);
    cr_assert_eq(m->lm_head.data, m->tok_embd.data);
    inf_model_free(m);
    tmp_done(&t);
    free(big);
    free(raw);
}

Test(llama2c, negative_vocab_means_separate_classifier) {
    size_t len;
    char *raw = read_stories(&len);
    size_t cls = 512 * 64 * 4;
    char *f = malloc(len + cls);
    memcpy(f, raw, len);
    for (size_t i = 0; i < 512 * 64; i++) {
        float v = (float)i * 0.25f;
        memcpy(f + len + 4 * i, &v, 4);
    }
    put_i32(f, 5, -512);
    tmpfile_t t = {{0}, {0}};
    tmp_write(&t, "sep.bin", f, len + cls);
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load_llama2c(t.path, &m, &err), INF_OK, "%s", err.msg);
    cr_assert_not(m->cfg.tied_embeddings);
    cr_assert_eq(m->cfg.vocab_size, 512);
    cr_assert_neq(m->lm_head.data, m->tok_embd.data);
    const float *w = m->lm_head.data;
    cr_assert_float_eq(w[7 * 64 + 3], (float)(7 * 64 + 3) * 0.25f, 0.0f);
    inf_model_free(m);
    /* without the classifier the same header is truncated */
    tmp_write(&t, "sep.bin", f, len);
    expect_fail(t.path, "truncated", "separate");
    tmp_done(&t);
    free(f);
    free(raw);
}

Test(llama2c, byte_swapped_header_is_named) {
    size_t len;
    char *raw = read_stories(&len);
    for (int i = 0; i < 7; i++) {
        uint8_t *b = (uint8_t *)raw + 4 * i, x;
        x = b[0], b[0] = b[3], b[3] = x;
        x = b[1], b[1] = b[2], b[2] = x;
    }
    tmpfile_t t = {{0}, {0}};
    tmp_write(&t, "swapped.bin", raw, len);
    expect_fail(t.path, "byte-swapped", "big-endian");
    tmp_done(&t);
    free(raw);
}

Test(llama2c, garbage_and_bad_headers_name_the_field) {
    tmpfile_t t = {{0}, {0}};
    char *g = malloc(8192);
    uint64_t s = 12345;
    for (int i = 0; i < 8192; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = (char)(s >> 56);
    }
    tmp_write(&t, "garbage.bin", g, 8192);
    expect_fail(t.path, "not a llama2.c checkpoint", NULL);
    /* via the dispatcher too */
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_neq(inf_model_load(t.path, &m, &err), INF_OK);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, t.path) != NULL, "%s", err.msg);

    size_t len;
    char *raw = read_stories(&len);
    struct {
        int idx;
        int32_t v;
        const char *field, *why;
    } cases[] = {
        {0, 0, "'dim' = 0", "positive"},
        {2, -5, "'n_layers' = -5", "positive"},
        {1, 1 << 30, "'hidden_dim'", "implausibly large"},
        {3, 7, "'n_heads' = 7", "does not divide dim"},
        {4, 3, "'n_kv_heads' = 3", "does not divide n_heads"},
        {4, 16, "'n_kv_heads' = 16", "does not divide n_heads"},
        {6, 0, "'seq_len' = 0", "positive"},
        {5, 0, "'vocab_size' = 0", "positive"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *f = malloc(len);
        memcpy(f, raw, len);
        put_i32(f, cases[i].idx, cases[i].v);
        tmp_write(&t, "bad.bin", f, len);
        expect_fail(t.path, cases[i].field, cases[i].why);
        free(f);
    }
    /* a plausible header whose sizes do not match the file */
    char *f = malloc(len);
    memcpy(f, raw, len);
    put_i32(f, 2, 6); /* one layer more than the file holds */
    tmp_write(&t, "bad.bin", f, len);
    expect_fail(t.path, "truncated", "implies 1238300 bytes");
    free(f);
    tmp_done(&t);
    free(raw);
    free(g);
}

Test(llama2c, missing_file_is_an_io_error) {
    inf_model *m = NULL;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load_llama2c("/nonexistent/x.bin", &m, &err), INF_E_IO);
    cr_assert(strstr(err.msg, "/nonexistent/x.bin") != NULL, "%s", err.msg);
}
