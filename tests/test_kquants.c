/* If this fails, a GGUF model quantized with llama.cpp's common presets
 * (Q4_K_M = Q4_K + Q6_K, Q5_K_M = Q5_K + Q6_K) or with the older Q5_0/Q5_1
 * is refused, or loads but dequantizes to numbers other than llama.cpp's, so
 * the model answers with gibberish or subtly worse text than llama.cpp does.
 *
 * The reference is independent of Infemeral: tests/fixtures/kquants_*.bin,
 * made by tests/fixtures/make_kquants.py with llama.cpp's quantizers and
 * gguf-py's numpy dequantizer (see tests/fixtures/README.md). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "testutil.h"

/* ---- the fixture ------------------------------------------------------------------- */

typedef struct {
    uint32_t ggml_type, rows, cols, nbytes;
    uint8_t *q;     /* nbytes of GGML blocks */
    float *deq;     /* [rows][cols], gguf-py's dequantization */
    float *x;       /* [cols] */
    double *dot;    /* [rows], float64 dot of deq rows with x */
} fixture;

static void fixture_load(fixture *fx, const char *file) {
    char rel[128], path[1024];
    snprintf(rel, sizeof rel, "tests/fixtures/%s", file);
    size_t len;
    char *buf = tu_read_file(tu_source(path, sizeof path, rel), &len);
    cr_assert_not_null(buf, "cannot read %s (run from the build dir with INF_SOURCE_ROOT set)", path);
    cr_assert(len >= 24 && memcmp(buf, "INFKQ1\0\0", 8) == 0, "%s: not a kquants fixture", path);
    uint32_t hdr[4];
    memcpy(hdr, buf + 8, sizeof hdr);
    fx->ggml_type = hdr[0];
    fx->rows = hdr[1];
    fx->cols = hdr[2];
    fx->nbytes = hdr[3];
    size_t n = (size_t)fx->rows * fx->cols;
    cr_assert_eq(len, 24 + (size_t)fx->nbytes + 4 * n + 4 * (size_t)fx->cols + 8 * (size_t)fx->rows,
                 "%s: size does not match its header", path);
    fx->q = malloc(fx->nbytes);
    fx->deq = malloc(4 * n);
    fx->x = malloc(4 * (size_t)fx->cols);
    fx->dot = malloc(8 * (size_t)fx->rows);
    cr_assert(fx->q && fx->deq && fx->x && fx->dot);
    const char *p = buf + 24;
    memcpy(fx->q, p, fx->nbytes);
    p += fx->nbytes;
    memcpy(fx->deq, p, 4 * n);
    p += 4 * n;
    memcpy(fx->x, p, 4 * (size_t)fx->cols);
    p += 4 * (size_t)fx->cols;
    memcpy(fx->dot, p, 8 * (size_t)fx->rows);
    free(buf);
}

static void fixture_free(fixture *fx) {
    free(fx->q);
    free(fx->deq);
    free(fx->x);
    free(fx->dot);
}

typedef struct {
    const char *file;
    uint32_t ggml_type;
    inf_dtype dt;
    const char *name;
    int block;
    size_t block_bytes;
} ktype;

static const ktype KTYPES[] = {
    {"kquants_q5_0.bin", 6, INF_DT_Q5_0, "Q5_0", 32, 22},
    {"kquants_q5_1.bin", 7, INF_DT_Q5_1, "Q5_1", 32, 24},
    {"kquants_q4_k.bin", 12, INF_DT_Q4_K, "Q4_K", 256, 144},
    {"kquants_q5_k.bin", 13, INF_DT_Q5_K, "Q5_K", 256, 176},
    {"kquants_q6_k.bin", 14, INF_DT_Q6_K, "Q6_K", 256, 210},
};
#define N_KTYPES (sizeof KTYPES / sizeof KTYPES[0])

/* Row r of the fixture's gguf-py values must equal our dequantization bit
 * for bit, and the dot product must match the float64 reference. */
static void check_rows(const ktype *k, const fixture *fx, const inf_tensor *t, const char *how) {
    float *got = malloc(sizeof(float) * fx->cols);
    cr_assert_not_null(got);
    for (uint32_t r = 0; r < fx->rows; r++) {
        inf_tensor_row_f32(t, r, got);
        const float *want = fx->deq + (size_t)r * fx->cols;
        for (uint32_t j = 0; j < fx->cols; j++) {
            uint32_t a, b;
            memcpy(&a, &got[j], 4);
            memcpy(&b, &want[j], 4);
            cr_assert_eq(a, b, "%s (%s) row %u col %u: ours %.9g (0x%08x), gguf-py %.9g (0x%08x)",
                         k->name, how, r, j, got[j], a, want[j], b);
        }
        /* f32 accumulation of cols products: its error is a few ulps of
         * sum|w*x|; relative to the result that is 1e-5 unless the row
         * cancels almost completely (the bound says so when it does). */
        double mag = 0.0;
        for (uint32_t j = 0; j < fx->cols; j++) mag += fabs((double)want[j] * (double)fx->x[j]);
        double ref = fx->dot[r];
        float dot = inf_tensor_row_dot(t, r, fx->x);
        double tol = 1e-5 * fmax(fabs(ref), mag / 64.0);
        cr_assert(fabs((double)dot - ref) <= tol,
                  "%s (%s) row %u: dot %.9g, float64 reference %.12g (|diff| %.3g, tolerance %.3g)",
                  k->name, how, r, dot, ref, fabs((double)dot - ref), tol);
    }
    free(got);
}

static inf_tensor view_of(const ktype *k, const fixture *fx, const void *data) {
    inf_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = k->dt;
    t.ndim = 2;
    t.shape[0] = fx->rows;
    t.shape[1] = fx->cols;
    t.data = data;
    t.nbytes = fx->nbytes;
    return t;
}

static void check_kernels(const ktype *k) {
    fixture fx;
    fixture_load(&fx, k->file);
    cr_assert_eq(fx.ggml_type, k->ggml_type, "%s: fixture holds GGML type %u", k->file, fx.ggml_type);
    cr_assert_eq(fx.cols % (uint32_t)k->block, 0);
    cr_assert_eq(fx.nbytes, fx.rows * (fx.cols / (uint32_t)k->block) * k->block_bytes);

    inf_tensor t = view_of(k, &fx, fx.q);
    check_rows(k, &fx, &t, "aligned");

    /* A GGUF places rows at any byte offset: the kernels must not assume
     * alignment (UBSan builds would flag it). */
    uint8_t *shifted = malloc(fx.nbytes + 1);
    cr_assert_not_null(shifted);
    memcpy(shifted + 1, fx.q, fx.nbytes);
    t = view_of(k, &fx, shifted + 1);
    check_rows(k, &fx, &t, "unaligned");
    free(shifted);
    fixture_free(&fx);
}

Test(kquants, q5_0_matches_gguf_py) { check_kernels(&KTYPES[0]); }
Test(kquants, q5_1_matches_gguf_py) { check_kernels(&KTYPES[1]); }
Test(kquants, q4_k_matches_gguf_py) { check_kernels(&KTYPES[2]); }
Test(kquants, q5_k_matches_gguf_py) { check_kernels(&KTYPES[3]); }
Test(kquants, q6_k_matches_gguf_py) { check_kernels(&KTYPES[4]); }

/* ---- dtype facts ------------------------------------------------------------------- */

Test(kquants, dtype_facts) {
    for (size_t i = 0; i < N_KTYPES; i++) {
        const ktype *k = &KTYPES[i];
        cr_assert_str_eq(inf_dtype_name(k->dt), k->name);
        cr_assert_eq(inf_dtype_block(k->dt), k->block, "%s", k->name);
        cr_assert_eq(inf_dtype_block_bytes(k->dt), k->block_bytes, "%s", k->name);
        cr_assert(inf_dtype_is_weight(k->dt), "%s", k->name);
    }
    /* the older values did not move (bundles and tests store them) */
    cr_assert_eq((int)INF_DT_U8, 9);
    cr_assert_eq((int)INF_DT_Q5_0, 10);
    cr_assert_eq((int)INF_DT__COUNT, 15);
}

Test(kquants, data_bytes_refuses_partial_super_block) {
    for (size_t i = 0; i < N_KTYPES; i++) {
        const ktype *k = &KTYPES[i];
        int64_t ok[2] = {3, 512}, bad[2] = {3, k->block == 256 ? 384 : 48};
        size_t n = 0;
        inf_error err = {{0}};
        cr_assert_eq(inf_tensor_data_bytes(k->dt, 2, ok, &n, "w", &err), INF_OK, "%s", err.msg);
        cr_assert_eq(n, 3 * 512 / (size_t)k->block * k->block_bytes);
        cr_assert_neq(inf_tensor_data_bytes(k->dt, 2, bad, &n, "blk.3.ffn_up.weight", &err), INF_OK);
        cr_assert(strstr(err.msg, "blk.3.ffn_up.weight") && strstr(err.msg, k->name),
                  "message: %s", err.msg);
    }
}

/* ---- through a GGUF file ----------------------------------------------------------- */

typedef struct {
    char dir[512];
    char path[600];
} tmpf;

static const char *tmp_write(tmpf *t, const gw *w) {
    cr_assert_not_null(tu_tmpdir(t->dir, sizeof t->dir));
    snprintf(t->path, sizeof t->path, "%s/k.gguf", t->dir);
    cr_assert_eq(gw_write(w, t->path), 0);
    return t->path;
}

static void tmp_done(tmpf *t) {
    unlink(t->path);
    rmdir(t->dir);
}

/* All five types in one file: each opens with its dtype, shape and bytes,
 * and dequantizes from the mapped file like from memory. */
Test(kquants, gguf_tensors_open_with_dtype_and_shape) {
    fixture fx[N_KTYPES];
    gw *w = gw_new();
    cr_assert_not_null(w);
    for (size_t i = 0; i < N_KTYPES; i++) {
        fixture_load(&fx[i], KTYPES[i].file);
        int64_t shape[2] = {fx[i].rows, fx[i].cols};
        cr_assert_eq(gw_tensor_raw(w, KTYPES[i].name, KTYPES[i].ggml_type, 2, shape, fx[i].q,
                                   fx[i].nbytes), 0);
    }
    tmpf tf;
    const char *p = tmp_write(&tf, w);
    gw_free(w);
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    for (size_t i = 0; i < N_KTYPES; i++) {
        const inf_tensor *t;
        cr_assert_eq(gguf_require_tensor(f, KTYPES[i].name, &t, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(t->dtype, KTYPES[i].dt, "%s: dtype %s", KTYPES[i].name, inf_dtype_name(t->dtype));
        cr_assert_eq(t->ndim, 2);
        cr_assert_eq(t->shape[0], (int64_t)fx[i].rows);
        cr_assert_eq(t->shape[1], (int64_t)fx[i].cols);
        cr_assert_eq(t->nbytes, (size_t)fx[i].nbytes);
        cr_assert(memcmp(t->data, fx[i].q, fx[i].nbytes) == 0, "%s: bytes differ", KTYPES[i].name);
        check_rows(&KTYPES[i], &fx[i], t, "from GGUF");
        fixture_free(&fx[i]);
    }
    gguf_close(f);
    tmp_done(&tf);
}

/* A row length that is not a whole number of blocks is refused when the
 * file is opened, naming the tensor, the type and the block size. */
Test(kquants, gguf_partial_block_refused) {
    for (size_t i = 0; i < N_KTYPES; i++) {
        const ktype *k = &KTYPES[i];
        int64_t cols = k->block == 256 ? 384 : 48;
        int64_t shape[2] = {2, cols};
        static uint8_t zeros[4 * 210];
        gw *w = gw_new();
        cr_assert_not_null(w);
        cr_assert_eq(gw_tensor_raw(w, "blk.0.attn_v.weight", k->ggml_type, 2, shape, zeros,
                                   2 * 2 * k->block_bytes), 0);
        tmpf tf;
        const char *p = tmp_write(&tf, w);
        gw_free(w);
        gguf_file *f = (gguf_file *)0x1;
        inf_error err = {{0}};
        cr_assert_neq(gguf_open(p, &f, &err), INF_OK, "%s with %lld columns was accepted", k->name,
                      (long long)cols);
        cr_assert_null(f);
        char blk[16];
        snprintf(blk, sizeof blk, "%d", k->block);
        cr_assert(strstr(err.msg, "blk.0.attn_v.weight") && strstr(err.msg, k->name) &&
                      strstr(err.msg, blk) && strstr(err.msg, p),
                  "message: %s", err.msg);
        tmp_done(&tf);
    }
}

/* Types still without kernels are refused by name, and the message lists
 * what is supported. */
Test(kquants, gguf_other_k_types_still_refused) {
    static uint8_t q2k[2 * 84];
    int64_t shape[2] = {2, 256};
    gw *w = gw_new();
    cr_assert_not_null(w);
    cr_assert_eq(gw_tensor_raw(w, "blk.0.ffn_down.weight", 10 /* Q2_K */, 2, shape, q2k, sizeof q2k), 0);
    tmpf tf;
    const char *p = tmp_write(&tf, w);
    gw_free(w);
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    const inf_tensor *t = (const inf_tensor *)0x1;
    cr_assert_neq(gguf_require_tensor(f, "blk.0.ffn_down.weight", &t, &err), INF_OK);
    cr_assert_null(t);
    cr_assert(strstr(err.msg, "blk.0.ffn_down.weight") && strstr(err.msg, "Q2_K") &&
                  strstr(err.msg, "Q4_K") && strstr(err.msg, "Q6_K"),
              "message: %s", err.msg);
    gguf_close(f);
    tmp_done(&tf);
}

/* The preset's mix in a model: a tiny Llama whose FFN-down weights are Q4_K
 * (layer 0) and Q6_K (layer 1) loads, and those weights keep their type. */
Test(kquants, tiny_model_with_k_weights_loads) {
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    o.ffn_dim = 256; /* one super-block per ffn_down row */
    gw *w = gw_new();
    cr_assert_not_null(w);
    cr_assert_eq(gw_add_tiny_llama(w, &o), 0);
    int64_t shape[2] = {o.dim, 256};
    static uint8_t q4k[64 * 144], q6k[64 * 210];
    cr_assert_eq(o.dim, 64);
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof q4k; i++) q4k[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    for (size_t i = 0; i < sizeof q6k; i++) q6k[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    const uint16_t d = 0x1400; /* f16 2^-10: keeps every weight finite and small */
    for (int r = 0; r < 64; r++) {
        memcpy(q4k + r * 144, &d, 2);
        memcpy(q4k + r * 144 + 2, &d, 2);
        memcpy(q6k + r * 210 + 208, &d, 2);
    }
    cr_assert_eq(gw_drop_tensor(w, "blk.0.ffn_down.weight"), 0);
    cr_assert_eq(gw_drop_tensor(w, "blk.1.ffn_down.weight"), 0);
    cr_assert_eq(gw_tensor_raw(w, "blk.0.ffn_down.weight", 12, 2, shape, q4k, sizeof q4k), 0);
    cr_assert_eq(gw_tensor_raw(w, "blk.1.ffn_down.weight", 14, 2, shape, q6k, sizeof q6k), 0);
    tmpf tf;
    const char *p = tmp_write(&tf, w);
    gw_free(w);
    inf_model *m;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load(p, &m, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(m->layers[0].w_down.dtype, INF_DT_Q4_K);
    cr_assert_eq(m->layers[1].w_down.dtype, INF_DT_Q6_K);
    float row[256];
    inf_tensor_row_f32(&m->layers[1].w_down, 63, row);
    for (int j = 0; j < 256; j++) cr_assert(isfinite(row[j]) && fabsf(row[j]) <= 127.0f * 32.0f / 1024.0f);
    inf_model_free(m);
    tmp_done(&tf);
}
