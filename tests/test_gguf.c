/* If this fails, a user's GGUF model (e.g. SmolLM2 Q4_1) is refused or read
 * with the wrong config or shapes, its quantized weights dequantize to wrong
 * numbers (so the model produces gibberish), or a damaged/foreign .gguf file
 * crashes the program instead of giving an error that names the file and
 * the key, tensor or value at fault. */
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

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct {
    char dir[512];
    char path[600];
} tmpf;

static const char *tmp_path(tmpf *t, const char *name) {
    if (!t->dir[0]) cr_assert_not_null(tu_tmpdir(t->dir, sizeof t->dir));
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
    return t->path;
}

static void tmp_done(tmpf *t) {
    unlink(t->path);
    rmdir(t->dir);
}

static const char *write_bytes(tmpf *t, const void *p, size_t n) {
    tmp_path(t, "t.gguf");
    cr_assert_eq(tu_write_file(t->path, p, n), 0);
    return t->path;
}

static const char *write_gw(tmpf *t, gw *w) {
    tmp_path(t, "t.gguf");
    cr_assert_eq(gw_write(w, t->path), 0);
    return t->path;
}

static gw *tiny(const gw_tiny_opts *o) {
    gw_tiny_opts d;
    if (!o) {
        gw_tiny_defaults(&d);
        o = &d;
    }
    gw *w = gw_new();
    cr_assert_not_null(w);
    cr_assert_eq(gw_add_tiny_llama(w, o), 0);
    return w;
}

static void check_msg(const inf_error *err, const char *path, const char *n1, const char *n2) {
    cr_assert(strstr(err->msg, path) != NULL, "message does not name the file: %s", err->msg);
    if (n1) cr_assert(strstr(err->msg, n1) != NULL, "message lacks '%s': %s", n1, err->msg);
    if (n2) cr_assert(strstr(err->msg, n2) != NULL, "message lacks '%s': %s", n2, err->msg);
}

/* gguf_open must fail and name the file and the needles. */
static void expect_open_fail(const char *path, const char *n1, const char *n2) {
    gguf_file *f = (gguf_file *)0x1;
    inf_error err = {{0}};
    inf_status st = gguf_open(path, &f, &err);
    cr_assert_neq(st, INF_OK, "gguf_open accepted a bad file");
    cr_assert_null(f);
    check_msg(&err, path, n1, n2);
}

/* inf_model_load must fail and name the file and the needles. */
static void expect_load_fail(const char *path, const char *n1, const char *n2) {
    inf_model *m = (inf_model *)0x1;
    inf_error err = {{0}};
    inf_status st = inf_model_load(path, &m, &err);
    cr_assert_neq(st, INF_OK, "inf_model_load accepted a bad file");
    cr_assert_null(m);
    check_msg(&err, path, n1, n2);
}

static uint64_t rng_state = 1;
static float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 23) - 1.0);
}

/* ---- the real SmolLM2 GGUF ---------------------------------------------------------------- */

Test(gguf, smollm2_reader) {
    const char *p = tu_smollm2();
    if (!p) cr_skip_test("SmolLM2 GGUF not available: configure -Dsmollm2_path=... (INF_SMOLLM2)");
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(gguf_version(f), 3u);
    cr_assert_eq(gguf_n_tensors(f), 272u);
    int64_t v;
    cr_assert_eq(gguf_get_int(f, "llama.block_count", &v, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(v, 30);
    gguf_str s;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &s, &err), INF_OK);
    cr_assert(s.len == 5 && memcmp(s.ptr, "llama", 5) == 0);
    bool b = true;
    cr_assert_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b, &err), INF_OK);
    cr_assert_not(b);
    const gguf_str *toks;
    uint64_t n;
    cr_assert_eq(gguf_get_str_arr(f, "tokenizer.ggml.tokens", &toks, &n, &err), INF_OK);
    cr_assert_eq(n, 49152u);
    cr_assert(toks[1].len == 12 && memcmp(toks[1].ptr, "<|im_start|>", 12) == 0);
    const inf_tensor *t;
    cr_assert_eq(gguf_require_tensor(f, "token_embd.weight", &t, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(t->dtype, INF_DT_Q8_0);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 49152);
    cr_assert_eq(t->shape[1], 576);
    cr_assert_eq(t->nbytes, (size_t)49152 * 576 / 32 * 34);
    cr_assert_eq(gguf_require_tensor(f, "blk.0.ffn_down.weight", &t, &err), INF_OK);
    cr_assert_eq(t->dtype, INF_DT_Q4_1);
    cr_assert_eq(t->shape[0], 576);
    cr_assert_eq(t->shape[1], 1536);
    /* wrong key type is reported with the key's name */
    cr_assert_neq(gguf_get_str(f, "llama.block_count", &s, &err), INF_OK);
    check_msg(&err, p, "llama.block_count", "string");
    cr_assert_eq(gguf_get_int(f, "no.such.key", &v, &err), INF_E_NOTFOUND);
    check_msg(&err, p, "no.such.key", NULL);
    gguf_close(f);
}

Test(gguf, smollm2_model) {
    const char *p = tu_smollm2();
    if (!p) cr_skip_test("SmolLM2 GGUF not available: configure -Dsmollm2_path=... (INF_SMOLLM2)");
    inf_model *m;
    inf_error err = {{0}};
    cr_assert_eq(inf_model_load(p, &m, &err), INF_OK, "%s", err.msg);
    const inf_model_config *c = &m->cfg;
    cr_assert_eq(m->source, INF_SRC_GGUF);
    cr_assert_eq(c->dim, 576);
    cr_assert_eq(c->n_layers, 30);
    cr_assert_eq(c->n_heads, 9);
    cr_assert_eq(c->n_kv_heads, 3);
    cr_assert_eq(c->head_dim, 64);
    cr_assert_eq(c->ffn_dim, 1536);
    cr_assert_eq(c->vocab_size, 49152);
    cr_assert_float_eq(c->rope_theta, 100000.0f, 0.0f);
    cr_assert_float_eq(c->rms_eps, 1e-5f, 1e-12);
    cr_assert(c->tied_embeddings);
    cr_assert_eq(m->lm_head.data, m->tok_embd.data);
    cr_assert(c->rope_interleaved);
    cr_assert_eq(c->bos_id, 1);
    cr_assert_eq(c->eos_id, 2);
    cr_assert_eq(c->max_seq, 8192);
    cr_assert_eq(m->layers[29].wk.shape[0], 192);
    cr_assert_eq(m->layers[29].wk.shape[1], 576);
    inf_model_free(m);
}

/* ---- the tiny model and the writer ------------------------------------------------------ */

Test(gguf, tiny_model_loads_for_every_weight_type) {
    const int types[] = {GW_F32, GW_F16, GW_BF16, GW_Q8_0, GW_Q4_0, GW_Q4_1};
    const inf_dtype want[] = {INF_DT_F32, INF_DT_F16, INF_DT_BF16, INF_DT_Q8_0, INF_DT_Q4_0, INF_DT_Q4_1};
    tmpf t = {{0}, {0}};
    for (size_t i = 0; i < 6; i++) {
        gw_tiny_opts o;
        gw_tiny_defaults(&o);
        o.wtype = types[i];
        o.tied = (i % 2) == 0;
        cr_assert_eq(gw_write_tiny_llama(tmp_path(&t, "tiny.gguf"), &o), 0);
        inf_model *m;
        inf_error err = {{0}};
        cr_assert_eq(inf_model_load(t.path, &m, &err), INF_OK, "type %d: %s", types[i], err.msg);
        cr_assert_eq(m->cfg.dim, 64);
        cr_assert_eq(m->cfg.n_layers, 2);
        cr_assert_eq(m->cfg.n_heads, 4);
        cr_assert_eq(m->cfg.n_kv_heads, 2);
        cr_assert_eq(m->cfg.head_dim, 16);
        cr_assert_eq(m->cfg.ffn_dim, 128);
        cr_assert_eq(m->cfg.vocab_size, 259);
        cr_assert_eq(m->cfg.max_seq, 128);
        cr_assert_eq(m->cfg.bos_id, 257);
        cr_assert_eq(m->cfg.eos_id, 256);
        cr_assert_eq(m->cfg.eot_id, 258);
        cr_assert_eq(m->cfg.tied_embeddings, o.tied);
        cr_assert_eq(m->layers[1].w_down.dtype, want[i]);
        cr_assert_eq(m->layers[1].w_down.shape[0], 64);
        cr_assert_eq(m->layers[1].w_down.shape[1], 128);
        cr_assert_eq(m->tok_embd.dtype, want[i]);
        inf_model_free(m);
    }
    tmp_done(&t);
}

Test(gguf, tiny_model_is_deterministic) {
    gw *a = tiny(NULL), *b = tiny(NULL);
    uint8_t *pa, *pb;
    size_t na, nb;
    cr_assert_eq(gw_bytes(a, &pa, &na), 0);
    cr_assert_eq(gw_bytes(b, &pb, &nb), 0);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(pa, pb, na), 0);
    free(pa);
    free(pb);
    gw_free(a);
    gw_free(b);
}

Test(gguf, kv_types_and_row_major_shapes_round_trip) {
    gw *w = gw_new();
    const char *strs[] = {"alpha", "", "gamma \xce\xb3"};
    const int32_t ints[] = {-1, 0, 2147483647};
    const float fl[] = {0.5f, -2.25f};
    gw_kv_u32(w, "k.u32", 4000000000u);
    gw_kv_i32(w, "k.i32", -7);
    gw_kv_f32(w, "k.f32", 1.5f);
    gw_kv_bool(w, "k.bool", true);
    gw_kv_str(w, "k.str", "hello");
    gw_kv_arr_str(w, "k.astr", strs, 3);
    gw_kv_arr_i32(w, "k.ai32", ints, 3);
    gw_kv_arr_f32(w, "k.af32", fl, 2);
    float data[3 * 64];
    for (int i = 0; i < 3 * 64; i++) data[i] = (float)i;
    int64_t shape[2] = {3, 64};
    cr_assert_eq(gw_tensor(w, "mat", GW_F32, 2, shape, data), 0);
    int64_t shape3[3] = {2, 3, 32};
    cr_assert_eq(gw_tensor(w, "cube", GW_F16, 3, shape3, data), 0);
    tmpf t = {{0}, {0}};
    const char *p = write_gw(&t, w);
    gw_free(w);

    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    int64_t v;
    double d;
    bool b;
    gguf_str s;
    cr_assert_eq(gguf_get_int(f, "k.u32", &v, &err), INF_OK);
    cr_assert_eq(v, 4000000000LL);
    cr_assert_eq(gguf_get_int(f, "k.i32", &v, &err), INF_OK);
    cr_assert_eq(v, -7);
    cr_assert_eq(gguf_get_float(f, "k.f32", &d, &err), INF_OK);
    cr_assert_eq(d, 1.5);
    cr_assert_eq(gguf_get_bool(f, "k.bool", &b, &err), INF_OK);
    cr_assert(b);
    cr_assert_eq(gguf_get_str(f, "k.str", &s, &err), INF_OK);
    cr_assert(s.len == 5 && memcmp(s.ptr, "hello", 5) == 0);
    const gguf_str *ss;
    uint64_t n;
    cr_assert_eq(gguf_get_str_arr(f, "k.astr", &ss, &n, &err), INF_OK);
    cr_assert_eq(n, 3u);
    cr_assert_eq(ss[1].len, 0u);
    cr_assert(ss[2].len == 8 && memcmp(ss[2].ptr, strs[2], 8) == 0);
    gguf_type et;
    const void *arr;
    cr_assert_eq(gguf_get_arr(f, "k.ai32", &et, &n, &arr, &err), INF_OK);
    cr_assert_eq(et, GGUF_TYPE_INT32);
    cr_assert_eq(n, 3u);
    int32_t i2;
    memcpy(&i2, (const char *)arr + 8, 4);
    cr_assert_eq(i2, 2147483647);
    cr_assert_eq(gguf_get_arr(f, "k.af32", &et, &n, &arr, &err), INF_OK);
    cr_assert_eq(et, GGUF_TYPE_FLOAT32);
    float f1;
    memcpy(&f1, (const char *)arr + 4, 4);
    cr_assert_eq(f1, -2.25f);
    cr_assert_eq(gguf_get_bool(f, "k.i32", &b, &err), INF_E_FORMAT);
    check_msg(&err, p, "k.i32", NULL);

    const inf_tensor *mt = gguf_find_tensor(f, "mat");
    cr_assert_not_null(mt);
    cr_assert_eq(mt->ndim, 2);
    cr_assert_eq(mt->shape[0], 3);
    cr_assert_eq(mt->shape[1], 64);
    cr_assert_eq((uintptr_t)mt->data % 32, 0u, "tensor data must be 32-aligned");
    float row[64];
    inf_tensor_row_f32(mt, 2, row);
    cr_assert_eq(row[5], 133.0f);
    const inf_tensor *ct = gguf_find_tensor(f, "cube");
    cr_assert_not_null(ct);
    cr_assert_eq(ct->ndim, 3);
    cr_assert(ct->shape[0] == 2 && ct->shape[1] == 3 && ct->shape[2] == 32);
    cr_assert_eq(inf_tensor_rows(ct), 6);
    inf_tensor_row_f32(ct, 4, row);
    cr_assert_eq(row[31], 159.0f);
    gguf_close(f);
    tmp_done(&t);
}

/* ---- quantization kernels ---------------------------------------------------------------------- */

/* GGML's dequantization, written out from the block layout in tensor.h. */
static void ref_dequant(int type, const uint8_t *p, int64_t cols, float *out) {
    for (int64_t b = 0; b < cols / 32; b++) {
        if (type == GW_Q8_0) {
            uint16_t h;
            memcpy(&h, p, 2);
            float d = inf_f16_to_f32(h);
            for (int j = 0; j < 32; j++) out[b * 32 + j] = d * (float)(int8_t)p[2 + j];
            p += 34;
        } else if (type == GW_Q4_0) {
            uint16_t h;
            memcpy(&h, p, 2);
            float d = inf_f16_to_f32(h);
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = d * (float)((p[2 + j] & 0x0f) - 8);
                out[b * 32 + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
            p += 18;
        } else {
            uint16_t hd, hm;
            memcpy(&hd, p, 2);
            memcpy(&hm, p + 2, 2);
            float d = inf_f16_to_f32(hd), m = inf_f16_to_f32(hm);
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = (float)(p[4 + j] & 0x0f) * d + m;
                out[b * 32 + j + 16] = (float)(p[4 + j] >> 4) * d + m;
            }
            p += 20;
        }
    }
}

static void check_quant_type(int type, inf_dtype dt, size_t block_bytes) {
    enum { ROWS = 6, COLS = 256 };
    static float x[ROWS * COLS];
    rng_state = 7 + (uint64_t)type;
    for (int i = 0; i < ROWS * COLS; i++) x[i] = frand() * (1.0f + (float)(i % 7));
    for (int j = 0; j < 32; j++) x[j] = 0.0f;              /* an all-zero block */
    for (int j = 32; j < 64; j++) x[j] = 0.75f;            /* a constant block */
    for (int j = 64; j < 96; j++) x[j] = (float)(j - 80) * 1000.0f; /* large values */
    for (int j = 96; j < 128; j++) x[j] = (float)(j - 96) * 1e-6f;  /* tiny values */
    gw *w = gw_new();
    int64_t shape[2] = {ROWS, COLS};
    cr_assert_eq(gw_tensor(w, "q", type, 2, shape, x), 0);
    tmpf t = {{0}, {0}};
    const char *p = write_gw(&t, w);
    gw_free(w);
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    const inf_tensor *q;
    cr_assert_eq(gguf_require_tensor(f, "q", &q, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(q->dtype, dt);
    cr_assert_eq(q->nbytes, (size_t)ROWS * COLS / 32 * block_bytes);
    float xs[COLS], got[COLS], ref[COLS];
    for (int j = 0; j < COLS; j++) xs[j] = frand();
    for (int r = 0; r < ROWS; r++) {
        const uint8_t *rowp = (const uint8_t *)q->data + (size_t)r * COLS / 32 * block_bytes;
        ref_dequant(type, rowp, COLS, ref);
        inf_tensor_row_f32(q, r, got);
        for (int j = 0; j < COLS; j++) {
            cr_assert(got[j] == ref[j], "%s row %d col %d: kernel %.9g, GGML formula %.9g",
                      inf_dtype_name(dt), r, j, got[j], ref[j]);
            /* the quantizer itself: error within half a step (+ f16 rounding of d and m) */
            const float *xb = x + r * COLS + j / 32 * 32;
            float lo = xb[0], hi = xb[0];
            for (int k = 1; k < 32; k++) lo = fminf(lo, xb[k]), hi = fmaxf(hi, xb[k]);
            float amax = fmaxf(fabsf(lo), fabsf(hi));
            float step = type == GW_Q8_0 ? amax / 127.0f : type == GW_Q4_0 ? amax / 8.0f : (hi - lo) / 15.0f;
            /* d and m are f16: relative rounding 2^-11, absolute 2^-25 once subnormal */
            float tol = (type == GW_Q4_0 ? 1.0f : 0.5f) * step * 1.01f + amax * 2e-3f +
                        (type == GW_Q8_0 ? 128.0f : 17.0f) * 0x1p-25f;
            cr_assert(fabsf(ref[j] - x[r * COLS + j]) <= tol,
                      "%s quantizer: x %.9g dequantizes to %.9g (tolerance %g)", inf_dtype_name(dt),
                      x[r * COLS + j], ref[j], tol);
        }
        double dref = 0.0, mag = 0.0;
        for (int j = 0; j < COLS; j++) {
            dref += (double)ref[j] * (double)xs[j];
            mag += fabs((double)ref[j] * (double)xs[j]);
        }
        float dot = inf_tensor_row_dot(q, r, xs);
        cr_assert(fabs((double)dot - dref) <= 1e-5 * fmax(mag, 1e-30),
                  "%s row %d: dot %.9g, double reference %.9g", inf_dtype_name(dt), r, dot, dref);
    }
    gguf_close(f);
    tmp_done(&t);
}

Test(gguf, q8_0_kernel_matches_ggml) { check_quant_type(GW_Q8_0, INF_DT_Q8_0, 34); }
Test(gguf, q4_0_kernel_matches_ggml) { check_quant_type(GW_Q4_0, INF_DT_Q4_0, 18); }
Test(gguf, q4_1_kernel_matches_ggml) { check_quant_type(GW_Q4_1, INF_DT_Q4_1, 20); }

Test(gguf, quantizer_byte_layout) {
    /* x_j = (j - 16) / 4: absmax element -4 at j = 0 */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.25f;
    uint8_t q[34];
    gw_quantize_q4_0(x, 32, q);
    uint16_t h;
    memcpy(&h, q, 2);
    cr_assert_eq(h, 0x3800, "Q4_0 d = -4 / -8 = 0.5 (f16 0x3800), got 0x%04x", h);
    /* q_j = trunc(x_j / 0.5 + 8.5) = (j + 1) / 2, capped at 15: element j in
     * the low nibble, element j + 16 in the high nibble */
    for (int j = 0; j < 16; j++) {
        int lo = (j + 1) / 2, hi = (j + 17) / 2 > 15 ? 15 : (j + 17) / 2;
        cr_assert_eq(q[2 + j], (uint8_t)(lo | (hi << 4)), "Q4_0 qs[%d] = 0x%02x, want 0x%02x", j,
                     q[2 + j], lo | (hi << 4));
    }
    gw_quantize_q4_1(x, 32, q);
    memcpy(&h, q, 2);
    uint16_t hm;
    memcpy(&hm, q + 2, 2);
    cr_assert_eq(hm, 0xc400, "Q4_1 m = min = -4 (f16 0xc400), got 0x%04x", hm);
    cr_assert_eq(h, inf_f32_to_f16(7.75f / 15.0f));
    cr_assert_eq(q[4] & 15, 0);
    cr_assert_eq(q[4 + 15] >> 4, 15);
    gw_quantize_q8_0(x, 32, q);
    memcpy(&h, q, 2);
    cr_assert_eq(h, inf_f32_to_f16(4.0f / 127.0f));
    cr_assert_eq((int8_t)q[2], -127);
    cr_assert_eq((int8_t)q[2 + 16], 0);
    cr_assert_eq((int8_t)q[2 + 20], (int8_t)roundf(1.0f * 127.0f / 4.0f));
}

Test(gguf, float_kernels_dot) {
    enum { COLS = 200 };
    float w[2 * COLS], x[COLS];
    rng_state = 99;
    for (int i = 0; i < 2 * COLS; i++) w[i] = frand();
    for (int i = 0; i < COLS; i++) x[i] = frand();
    const int types[] = {GW_F32, GW_F16, GW_BF16};
    const inf_dtype dts[] = {INF_DT_F32, INF_DT_F16, INF_DT_BF16};
    for (int k = 0; k < 3; k++) {
        gw *g = gw_new();
        int64_t shape[2] = {2, COLS};
        cr_assert_eq(gw_tensor(g, "w", types[k], 2, shape, w), 0);
        tmpf t = {{0}, {0}};
        const char *p = write_gw(&t, g);
        gw_free(g);
        gguf_file *f;
        inf_error err = {{0}};
        cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
        const inf_tensor *q = gguf_find_tensor(f, "w");
        cr_assert_not_null(q);
        cr_assert_eq(q->dtype, dts[k]);
        float row[COLS];
        inf_tensor_row_f32(q, 1, row);
        double ref = 0, mag = 0;
        for (int j = 0; j < COLS; j++) {
            float want = k == 0 ? w[COLS + j]
                         : k == 1 ? inf_f16_to_f32(inf_f32_to_f16(w[COLS + j]))
                                  : inf_bf16_to_f32(inf_f32_to_bf16(w[COLS + j]));
            cr_assert_eq(row[j], want, "%s col %d", inf_dtype_name(dts[k]), j);
            ref += (double)row[j] * x[j];
            mag += fabs((double)row[j] * x[j]);
        }
        float dot = inf_tensor_row_dot(q, 1, x);
        cr_assert(fabs(dot - ref) <= 1e-5 * mag, "%s dot %.9g vs %.9g", inf_dtype_name(dts[k]), dot, ref);
        gguf_close(f);
        tmp_done(&t);
    }
}

/* ---- half precision conversions ----------------------------------------------------------- */

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(gguf, f16_exact_bit_patterns) {
    const struct {
        uint32_t f32;
        uint16_t f16;
        const char *what;
    } cases[] = {
        {0x3f800000u, 0x3c00, "1.0"},
        {0xc0000000u, 0xc000, "-2.0"},
        {0x00000000u, 0x0000, "+0"},
        {0x80000000u, 0x8000, "-0"},
        {0x477fe000u, 0x7bff, "65504 (largest half)"},
        {0x477fefffu, 0x7bff, "just below 65520 rounds down"},
        {0x477ff000u, 0x7c00, "65520 rounds to inf (overflow)"},
        {0x4f000000u, 0x7c00, "2^31 overflows to inf"},
        {0xc7800000u, 0xfc00, "-65536 overflows to -inf"},
        {0x7f800000u, 0x7c00, "+inf"},
        {0xff800000u, 0xfc00, "-inf"},
        {0x38800000u, 0x0400, "2^-14 smallest normal"},
        {0x387fc000u, 0x03ff, "largest subnormal 1023*2^-24"},
        {0x33800000u, 0x0001, "2^-24 smallest subnormal"},
        {0x33000000u, 0x0000, "2^-25 ties to even (0)"},
        {0x33000001u, 0x0001, "just above 2^-25 rounds up"},
        {0x33c00000u, 0x0002, "1.5*2^-24 ties to even (2)"},
        {0x34200000u, 0x0002, "2.5*2^-24 ties to even (2)"},
        {0xb3800000u, 0x8001, "-2^-24"},
        {0x3f801000u, 0x3c00, "1+2^-11 ties to even (down)"},
        {0x3f803000u, 0x3c02, "1+3*2^-11 ties to even (up)"},
        {0x3f801001u, 0x3c01, "just above a tie rounds up"},
        {0x3f807000u, 0x3c04, "1+7*2^-11 ties to even (up)"},
        {0x387ff000u, 0x0400, "subnormal rounding carries into the smallest normal"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = inf_f32_to_f16(bits_f(cases[i].f32));
        cr_assert_eq(h, cases[i].f16, "%s: f32 0x%08x -> f16 0x%04x, want 0x%04x", cases[i].what,
                     cases[i].f32, h, cases[i].f16);
    }
    uint16_t hn = inf_f32_to_f16(NAN);
    cr_assert((hn & 0x7c00) == 0x7c00 && (hn & 0x03ff) != 0, "NaN -> 0x%04x must stay NaN", hn);
    cr_assert(isnan(inf_f16_to_f32(0x7e00)));
    cr_assert(isnan(inf_f16_to_f32(0xfc01)));
    cr_assert_eq(f_bits(inf_f16_to_f32(0x0001)), 0x33800000u);
    cr_assert_eq(f_bits(inf_f16_to_f32(0x03ff)), 0x387fc000u);
    cr_assert_eq(f_bits(inf_f16_to_f32(0x8000)), 0x80000000u);
    cr_assert_eq(f_bits(inf_f16_to_f32(0x7bff)), 0x477fe000u);
    cr_assert_eq(f_bits(inf_f16_to_f32(0xfc00)), 0xff800000u);
}

Test(gguf, f16_and_bf16_round_trip_every_pattern) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = inf_f16_to_f32((uint16_t)h);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            cr_assert(isnan(f), "f16 0x%04x must be NaN", h);
            cr_assert(isnan(inf_f16_to_f32(inf_f32_to_f16(f))));
        } else {
            cr_assert_eq(inf_f32_to_f16(f), h, "f16 0x%04x -> %g -> 0x%04x", h, f, inf_f32_to_f16(f));
        }
        float b = inf_bf16_to_f32((uint16_t)h);
        cr_assert_eq(f_bits(b), h << 16);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            cr_assert(isnan(inf_bf16_to_f32(inf_f32_to_bf16(b))));
        else
            cr_assert_eq(inf_f32_to_bf16(b), h, "bf16 0x%04x does not round-trip", h);
    }
}

Test(gguf, bf16_rounds_to_nearest_even) {
    const struct {
        uint32_t f32;
        uint16_t bf;
        const char *what;
    } cases[] = {
        {0x3f800000u, 0x3f80, "1.0"},
        {0x3f808000u, 0x3f80, "tie, even below"},
        {0x3f818000u, 0x3f82, "tie, even above"},
        {0x3f808001u, 0x3f81, "above a tie"},
        {0x3f807fffu, 0x3f80, "below a tie"},
        {0x7f7fffffu, 0x7f80, "FLT_MAX overflows to inf"},
        {0x7f800000u, 0x7f80, "+inf"},
        {0xff800000u, 0xff80, "-inf"},
        {0x00018000u, 0x0002, "subnormal tie to even"},
        {0x00010000u, 0x0001, "subnormal exact"},
        {0x80000000u, 0x8000, "-0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t b = inf_f32_to_bf16(bits_f(cases[i].f32));
        cr_assert_eq(b, cases[i].bf, "%s: 0x%08x -> 0x%04x, want 0x%04x", cases[i].what, cases[i].f32,
                     b, cases[i].bf);
    }
    uint16_t bn = inf_f32_to_bf16(bits_f(0x7f800001u)); /* NaN with only a low payload bit */
    cr_assert((bn & 0x7f80) == 0x7f80 && (bn & 0x7f) != 0, "NaN must stay NaN, got 0x%04x", bn);
}

/* ---- bad input ------------------------------------------------------------------------------ */

Test(gguf, empty_file) {
    tmpf t = {{0}, {0}};
    const char *p = write_bytes(&t, "", 0);
    expect_open_fail(p, "magic", NULL);
    expect_load_fail(p, NULL, NULL);
    tmp_done(&t);
}

Test(gguf, bad_magic) {
    tmpf t = {{0}, {0}};
    uint8_t b[64] = "GGUX";
    const char *p = write_bytes(&t, b, sizeof b);
    expect_open_fail(p, "bad magic", NULL);
    tmp_done(&t);
}

static uint8_t *tiny_bytes(size_t *n) {
    gw *w = tiny(NULL);
    uint8_t *p;
    cr_assert_eq(gw_bytes(w, &p, n), 0);
    gw_free(w);
    return p;
}

Test(gguf, big_endian_and_versions) {
    size_t n;
    uint8_t *b = tiny_bytes(&n);
    tmpf t = {{0}, {0}};
    const uint8_t be3[4] = {0, 0, 0, 3};
    memcpy(b + 4, be3, 4);
    const char *p = write_bytes(&t, b, n);
    expect_open_fail(p, "big-endian", "0x03000000");
    expect_load_fail(p, "big-endian", NULL);
    uint32_t v = 1;
    memcpy(b + 4, &v, 4);
    expect_open_fail(write_bytes(&t, b, n), "version 1", NULL);
    v = 4;
    memcpy(b + 4, &v, 4);
    expect_open_fail(write_bytes(&t, b, n), "version 4", NULL);
    expect_load_fail(t.path, "version 4", NULL);
    v = 3;
    memcpy(b + 4, &v, 4);
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(write_bytes(&t, b, n), &f, &err), INF_OK, "control: %s", err.msg);
    gguf_close(f);
    free(b);
    tmp_done(&t);
}

Test(gguf, truncated_at_every_offset) {
    size_t n;
    uint8_t *b = tiny_bytes(&n);
    tmpf t = {{0}, {0}};
    /* find where the data section starts: the first tensor's bytes */
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(write_bytes(&t, b, n), &f, &err), INF_OK, "%s", err.msg);
    const inf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    cr_assert_not_null(te);
    /* token_embd is the first tensor written (offset 0): where its bytes
     * are found is where the data section starts */
    size_t data_start = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(b + i, te->data, 64) == 0) {
            data_start = i;
            break;
        }
    gguf_close(f);
    cr_assert(data_start > 0 && data_start % 32 == 0, "data section at %zu", data_start);
    size_t count = 0;
    for (size_t cut = 0; cut < n; cut += cut < data_start + 64 ? 1 : 331) {
        const char *p = write_bytes(&t, b, cut);
        gguf_file *g = (gguf_file *)0x1;
        inf_error e = {{0}};
        inf_status st = gguf_open(p, &g, &e);
        cr_assert_neq(st, INF_OK, "a file truncated to %zu of %zu bytes was accepted", cut, n);
        cr_assert_null(g);
        cr_assert(strstr(e.msg, p) != NULL, "cut %zu: message does not name the file: %s", cut, e.msg);
        cr_assert(cut < 4 || strstr(e.msg, "truncated") || strstr(e.msg, "magic") ||
                      strstr(e.msg, "implausible") || strstr(e.msg, "does not fit"),
                  "cut %zu: message does not say what is wrong: %s", cut, e.msg);
        count++;
    }
    cr_assert_gt(count, data_start);
    /* the whole loader too, at a few points */
    const size_t cuts[] = {0, 3, 8, 23, data_start / 2, data_start, data_start + 100, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        expect_load_fail(write_bytes(&t, b, cuts[i]), NULL, NULL);
    free(b);
    tmp_done(&t);
}

static size_t find_bytes(const uint8_t *b, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(b + i, s, k) == 0) return i;
    cr_assert_fail("'%s' not found in the file", s);
    return 0;
}

Test(gguf, string_length_past_the_end) {
    size_t n;
    uint8_t *b = tiny_bytes(&n);
    tmpf t = {{0}, {0}};
    /* the value of general.name: key bytes, u32 type 8, u64 length */
    size_t at = find_bytes(b, n, "general.name") + strlen("general.name") + 4;
    uint64_t len = n; /* longer than what is left */
    memcpy(b + at, &len, 8);
    expect_open_fail(write_bytes(&t, b, n), "truncated", "key 'general.name'");
    len = (uint64_t)1 << 62; /* absurd */
    memcpy(b + at, &len, 8);
    expect_open_fail(write_bytes(&t, b, n), "implausible length", "4611686018427387904");
    free(b);
    /* a key's own length */
    b = tiny_bytes(&n);
    at = find_bytes(b, n, "llama.block_count") - 8;
    len = n;
    memcpy(b + at, &len, 8);
    expect_open_fail(write_bytes(&t, b, n), "truncated", "key name");
    free(b);
    /* a tensor name's length */
    b = tiny_bytes(&n);
    at = find_bytes(b, n, "blk.1.ffn_up.weight") - 8;
    memcpy(b + at, &len, 8);
    expect_open_fail(write_bytes(&t, b, n), "truncated", "tensor name");
    free(b);
    tmp_done(&t);
}

Test(gguf, absurd_counts) {
    size_t n;
    uint8_t *b = tiny_bytes(&n);
    tmpf t = {{0}, {0}};
    uint64_t c = (uint64_t)1 << 40;
    memcpy(b + 8, &c, 8);
    expect_open_fail(write_bytes(&t, b, n), "implausible counts", "1099511627776 tensors");
    c = UINT64_MAX;
    memcpy(b + 8, &c, 8);
    expect_open_fail(write_bytes(&t, b, n), "implausible counts", NULL);
    free(b);
    b = tiny_bytes(&n);
    c = UINT64_MAX / 2;
    memcpy(b + 16, &c, 8);
    expect_open_fail(write_bytes(&t, b, n), "implausible counts", "keys");
    free(b);
    tmp_done(&t);
}

Test(gguf, tensor_extending_past_the_end) {
    gw *w = tiny(NULL);
    cr_assert_eq(gw_force_offset(w, gw_n_tensors(w) - 1, (uint64_t)1 << 20), 0);
    tmpf t = {{0}, {0}};
    const char *p = write_gw(&t, w);
    expect_open_fail(p, "blk.1.ffn_down.weight", "past the end");
    expect_load_fail(p, "blk.1.ffn_down.weight", NULL);
    /* an offset so large that offset + size overflows */
    cr_assert_eq(gw_force_offset(w, 3, UINT64_MAX - 31), 0);
    expect_open_fail(write_gw(&t, w), "blk.0.attn_q.weight", NULL);
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, unaligned_tensor_offset) {
    gw *w = tiny(NULL);
    cr_assert_eq(gw_force_offset(w, 2, 16), 0); /* blk.0.attn_norm.weight (tied: no output) */
    tmpf t = {{0}, {0}};
    const char *p = write_gw(&t, w);
    expect_open_fail(p, "blk.0.attn_norm.weight", "not 32-aligned");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, unknown_ggml_type) {
    gw *w = tiny(NULL);
    uint8_t junk[64] = {0};
    int64_t shape[1] = {16};
    cr_assert_eq(gw_tensor_raw(w, "mystery.weight", 99, 1, shape, junk, sizeof junk), 0);
    tmpf t = {{0}, {0}};
    expect_open_fail(write_gw(&t, w), "mystery.weight", "unknown GGML type id 99");
    gw_free(w);
    w = tiny(NULL);
    cr_assert_eq(gw_tensor_raw(w, "removed.weight", 4, 1, shape, junk, sizeof junk), 0); /* old Q4_2 */
    expect_open_fail(write_gw(&t, w), "removed.weight", "type id 4");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, duplicated_tensor_name) {
    gw *w = tiny(NULL);
    float z[64] = {0};
    int64_t shape[1] = {64};
    cr_assert_eq(gw_tensor(w, "blk.0.ffn_norm.weight", GW_F32, 1, shape, z), 0);
    tmpf t = {{0}, {0}};
    expect_open_fail(write_gw(&t, w), "blk.0.ffn_norm.weight", "twice");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, unsupported_architecture) {
    gw *w = tiny(NULL);
    cr_assert_eq(gw_drop_kv(w, "general.architecture"), 0);
    cr_assert_eq(gw_kv_str(w, "general.architecture", "qwen2"), 0);
    tmpf t = {{0}, {0}};
    expect_load_fail(write_gw(&t, w), "general.architecture", "qwen2");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, unsupported_weight_type_q2_k) {
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    o.ffn_dim = 256; /* one Q2_K block per ffn_down row */
    gw *w = tiny(&o);
    cr_assert_eq(gw_drop_tensor(w, "blk.0.ffn_down.weight"), 0);
    static uint8_t q2k[64 * 84];
    int64_t shape[2] = {64, 256};
    cr_assert_eq(gw_tensor_raw(w, "blk.0.ffn_down.weight", 10 /* Q2_K */, 2, shape, q2k, sizeof q2k), 0);
    tmpf t = {{0}, {0}};
    const char *p = write_gw(&t, w);
    /* listed by the reader (its extent is valid) ... */
    gguf_file *f;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(p, &f, &err), INF_OK, "%s", err.msg);
    cr_assert(gguf_has_tensor(f, "blk.0.ffn_down.weight"));
    cr_assert_null(gguf_find_tensor(f, "blk.0.ffn_down.weight"));
    gguf_close(f);
    /* ... but refused as a weight, by name and type */
    expect_load_fail(p, "blk.0.ffn_down.weight", "Q2_K");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, shape_disagreeing_with_metadata) {
    gw *w = tiny(NULL);
    cr_assert_eq(gw_drop_tensor(w, "blk.1.attn_q.weight"), 0);
    float z[32 * 64] = {0};
    int64_t shape[2] = {32, 64};
    cr_assert_eq(gw_tensor(w, "blk.1.attn_q.weight", GW_F32, 2, shape, z), 0);
    tmpf t = {{0}, {0}};
    expect_load_fail(write_gw(&t, w), "layer 1 wq", "[32, 64]");
    gw_free(w);
    /* and the embedding rows against llama.vocab_size */
    w = tiny(NULL);
    cr_assert_eq(gw_drop_kv(w, "llama.vocab_size"), 0);
    cr_assert_eq(gw_kv_u32(w, "llama.vocab_size", 300), 0);
    expect_load_fail(write_gw(&t, w), "llama.vocab_size = 300", "259");
    gw_free(w);
    tmp_done(&t);
}

Test(gguf, missing_required_key_or_tensor) {
    const char *keys[] = {"llama.embedding_length", "llama.block_count", "llama.attention.head_count",
                          "llama.feed_forward_length", "llama.attention.layer_norm_rms_epsilon",
                          "general.architecture"};
    tmpf t = {{0}, {0}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        gw *w = tiny(NULL);
        cr_assert_eq(gw_drop_kv(w, keys[i]), 0);
        expect_load_fail(write_gw(&t, w), keys[i], "not found");
        gw_free(w);
    }
    const char *tensors[] = {"token_embd.weight", "output_norm.weight", "blk.1.ffn_gate.weight",
                             "blk.0.attn_norm.weight"};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) {
        gw *w = tiny(NULL);
        cr_assert_eq(gw_drop_tensor(w, tensors[i]), 0);
        expect_load_fail(write_gw(&t, w), tensors[i], "not found");
        gw_free(w);
    }
    tmp_done(&t);
}

Test(gguf, wrong_key_type) {
    gw *w = tiny(NULL);
    cr_assert_eq(gw_drop_kv(w, "llama.block_count"), 0);
    cr_assert_eq(gw_kv_str(w, "llama.block_count", "thirty"), 0);
    tmpf t = {{0}, {0}};
    expect_load_fail(write_gw(&t, w), "llama.block_count", "string");
    gw_free(w);
    tmp_done(&t);
}

/* The half-precision dot kernels (the F16C path where the CPU has it, the
 * lookup-table path otherwise) against a double reference, with lengths
 * that exercise the vector tails and a deliberately unaligned row. */
Test(gguf, f16_and_bf16_dots_match_double_reference) {
    static uint8_t buf[2 * 1031 + 1];
    float x[1031];
    for (int len = 1; len <= 1031; len += 97) {
        uint16_t *h = (uint16_t *)(void *)(buf + 1); /* odd address on purpose; read via memcpy */
        for (int dt = 0; dt < 2; dt++) {
            double ref = 0;
            for (int j = 0; j < len; j++) {
                float w = sinf(0.31f * j) * (j % 7 == 0 ? 40.0f : 0.5f);
                uint16_t hv = dt == 0 ? inf_f32_to_f16(w) : inf_f32_to_bf16(w);
                memcpy((uint8_t *)h + 2 * j, &hv, 2);
                x[j] = cosf(0.17f * j);
                ref += (double)(dt == 0 ? inf_f16_to_f32(hv) : inf_bf16_to_f32(hv)) * x[j];
            }
            inf_tensor t = {.dtype = dt == 0 ? INF_DT_F16 : INF_DT_BF16, .ndim = 2, .shape = {1, len},
                            .data = h, .nbytes = 2 * (size_t)len};
            double got = inf_tensor_row_dot(&t, 0, x);
            double scale = 0;
            for (int j = 0; j < len; j++) scale += fabs(x[j]) * 40.0;
            cr_assert_leq(fabs(got - ref), 1e-6 * scale + 1e-6, "%s len %d: %.9g vs %.9g",
                          dt == 0 ? "f16" : "bf16", len, got, ref);
        }
    }
}
