/* prep.c — see prep.h. */
#define _POSIX_C_SOURCE 200809L
#include "prep.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "gemv.h"
#include "gguf.h"
#include "model.h"
#include "rotation.h"
#include "safetensors.h"
#include "tokenizer.h"

inf_status prep_parse_weights(const char *s, prep_weights *out, inf_error *err) {
    static const char *names[] = {"f32", "f16", "bf16", "int4"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            *out = (prep_weights)i;
            return INF_OK;
        }
    return inf_fail(err, INF_E_ARG, "--weights '%s': expected f32, f16, bf16 or int4", s);
}

inf_status prep_parse_lm_head(const char *s, prep_lm_head *out, inf_error *err) {
    if (!strcmp(s, "f16")) *out = PREP_LMH_F16;
    else if (!strcmp(s, "f32")) *out = PREP_LMH_F32;
    else if (!strcmp(s, "int8")) *out = PREP_LMH_INT8;
    else return inf_fail(err, INF_E_ARG, "--lm-head '%s': expected f16, f32 or int8", s);
    return INF_OK;
}

static const int64_t *order_count; /* qsort has no context argument; prep is single-threaded here */
static int by_count(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (order_count[x] != order_count[y]) return order_count[x] > order_count[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

inf_status prep_token_order(const struct tok_tokenizer *tok, const char *text, size_t len, int vocab, const char *what,
                            int32_t *order, size_t *n_tokens, inf_error *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    inf_status st = tok_encode(tok, text, len, false, false, &ids, &n, err);
    if (st) return st;
    int64_t *cnt = calloc((size_t)vocab, sizeof *cnt);
    if (!cnt) {
        free(ids);
        return inf_fail(err, INF_E_NOMEM, "prep: out of memory counting tokens");
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < vocab) {
            cnt[ids[i]]++;
            used++;
        }
    free(ids);
    if (used == 0) {
        free(cnt);
        return inf_fail(err, INF_E_FORMAT, "--vocab-freq %s: the text has no tokens to count", what);
    }
    for (int i = 0; i < vocab; i++) order[i] = i;
    order_count = cnt;
    qsort(order, (size_t)vocab, sizeof *order, by_count);
    order_count = NULL;
    free(cnt);
    *n_tokens = used;
    return INF_OK;
}

int prep_int4_group(int64_t in) {
    for (int g = 128; g >= 32; g /= 2)
        if (in % g == 0) return g;
    return 0;
}

/* Quantizes one group on the grid given by (mn, mx); returns the squared
 * error and fills q (one value per byte), the f16 scale and the zero. */
static double quantize_group(const float *x, int g, float mn, float mx, uint8_t *q, uint16_t *sh_out,
                             uint8_t *z_out) {
    /* the grid must contain 0 and span [mn, mx] */
    mn = fminf(mn, 0.0f);
    mx = fmaxf(mx, 0.0f);
    float s = (mx - mn) / 15.0f;
    if (!(s > 0.0f)) s = 1.0f;
    uint16_t sh = inf_f32_to_f16(s);
    s = inf_f16_to_f32(sh); /* quantize against the scale that will be stored */
    if (!(s > 0.0f) || !isfinite(s)) { /* f16 underflow/overflow: fall back */
        sh = inf_f32_to_f16(1.0f);
        s = 1.0f;
    }
    float zf = roundf(-mn / s);
    int z = zf < 0 ? 0 : zf > 15 ? 15 : (int)zf;
    double e2 = 0;
    for (int j = 0; j < g; j++) {
        float v = roundf(x[j] / s) + (float)z;
        int qi = v < 0 ? 0 : v > 15 ? 15 : (int)v;
        q[j] = (uint8_t)qi;
        double e = (double)((float)(qi - z) * s) - x[j];
        e2 += e * e;
    }
    *sh_out = sh;
    *z_out = (uint8_t)z;
    return e2;
}

void prep_quantize_row_int4(const float *w, int64_t in, int g, uint8_t *q, uint16_t *scales,
                            uint8_t *zeros) {
    memset(q, 0, (size_t)(in / 2));
    uint8_t best_q[128], try_q[128];
    for (int64_t k = 0; k < in / g; k++) {
        const float *x = w + k * g;
        float mn = x[0], mx = x[0];
        for (int j = 1; j < g; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        /* round-to-nearest on the full range, then shrink the range (clip the
         * extremes) while that lowers the group's squared error */
        uint16_t bs;
        uint8_t bz;
        double best = quantize_group(x, g, mn, mx, best_q, &bs, &bz);
        for (int step = 1; step <= 10; step++) {
            float a = 1.0f - 0.03f * (float)step;
            uint16_t ts;
            uint8_t tz;
            double e = quantize_group(x, g, mn * a, mx * a, try_q, &ts, &tz);
            if (e < best) {
                best = e;
                bs = ts;
                bz = tz;
                memcpy(best_q, try_q, (size_t)g);
            }
        }
        scales[k] = bs;
        zeros[k] = bz;
        for (int j = 0; j < g; j++) {
            int64_t e = k * g + j;
            q[e / 2] |= (uint8_t)(e % 2 ? best_q[j] << 4 : best_q[j]);
        }
    }
}

/* ---- the work ------------------------------------------------------------------- */

typedef struct {
    uint8_t *q;
    uint16_t *s;
    uint8_t *z;
    int parts_left; /* qweight, scales, zeros still to be written */
} int4_cache;

/* Both tensors of an int8 lm_head come from one quantization; the first of
 * the two to be written makes both (the writer's order is its own). */
typedef struct {
    int8_t *q;
    float *s;
    int parts_left;
} int8_cache;

typedef struct {
    const prep_opts *o;
    inf_model *m;
    float *Q; /* d x d rotation, or NULL */
    int d;
    int4_cache *cache; /* [n_layers * 7] */
    int8_cache head8;  /* the client's int8 lm_head */
    int done, total;   /* progress */
    const char *what;
} prep_ctx;

typedef struct {
    prep_ctx *P;
    int layer, which, part; /* part: 0 weight, 1 qweight, 2 scales, 3 zeros */
} job;

static void progress(prep_ctx *P, const char *what) {
    P->done++;
    if (!P->o->progress) return;
    int pct = P->total ? 100 * P->done / P->total : 100;
    if (isatty(STDERR_FILENO)) {
        char bar[41];
        int k = 40 * pct / 100;
        for (int i = 0; i < 40; i++) bar[i] = i < k ? '#' : '.';
        bar[40] = '\0';
        fprintf(stderr, "\rprep: [%s] %3d%% %-28s", bar, pct, what);
        if (P->done == P->total) fputc('\n', stderr);
    } else if (P->done == P->total || (P->done * 10 / P->total) != ((P->done - 1) * 10 / P->total)) {
        fprintf(stderr, "prep: %3d%% (%d/%d tensors)\n", pct, P->done, P->total);
    }
}

/* Dequantized [rows, cols] f32 copy of a weight. */
static float *to_f32(const inf_tensor *t) {
    int64_t rows = inf_tensor_rows(t), cols = inf_tensor_cols(t);
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    if (!w) return NULL;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) inf_tensor_row_f32(t, r, w + r * cols);
    return w;
}

/* out[n, d] = a[n, d] Q^T: every row r becomes Q r. How everything that
 * reads the residual stream is rotated: the server's readers, and the
 * client's embedding rows, lm_head and gain when Q is folded into them. */
static void times_qt(const prep_ctx *P, const float *a, int64_t n, float *out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, P->d, P->d, 1.0f, a, P->d, P->Q, P->d, 0.0f, out, P->d);
}

/* The folded, rotated f32 weight of one linear. */
static inf_status transformed(prep_ctx *P, int layer, int which, float **out, int64_t *rows,
                              int64_t *cols, inf_error *err) {
    inf_layer *L = &P->m->layers[layer];
    const inf_tensor *t = inf_layer_linear(L, which);
    *rows = inf_tensor_rows(t);
    *cols = inf_tensor_cols(t);
    float *w = to_f32(t);
    if (!w) return inf_fail(err, INF_E_NOMEM, "prep: out of memory for blk.%d.%s", layer, inf_bundle_linear_names[which]);
    const int d = P->d;
    bool reads = which != 3 && which != 6; /* attn_output and ffn_down write the residual */
    if (reads) {
        const float *g = which <= 2 ? L->attn_norm : L->ffn_norm;
        if (g)
            for (int64_t r = 0; r < *rows; r++)
                for (int j = 0; j < d; j++) w[r * d + j] *= g[j];
    }
    if (P->Q) {
        float *c = malloc(sizeof(float) * (size_t)(*rows * *cols));
        if (!c) {
            free(w);
            return inf_fail(err, INF_E_NOMEM, "prep: out of memory for blk.%d.%s", layer, inf_bundle_linear_names[which]);
        }
        if (reads) /* W Qᵀ: [out, d] x [d, d]ᵀ */
            times_qt(P, w, *rows, c);
        else /* Q W: [d, d] x [d, in] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, (int)*cols, d, 1.0f, P->Q, d, w,
                        (int)*cols, 0.0f, c, (int)*cols);
        free(w);
        w = c;
    }
    *out = w;
    return INF_OK;
}

static void convert(const float *w, size_t n, prep_weights wt, void *buf) {
    if (wt == PREP_F32) {
        memcpy(buf, w, n * sizeof(float));
    } else {
        uint16_t *h = buf;
        for (size_t i = 0; i < n; i++) h[i] = wt == PREP_F16 ? inf_f32_to_f16(w[i]) : inf_f32_to_bf16(w[i]);
    }
}

static inf_status produce_linear(void *user, void *buf, size_t nbytes, inf_error *err) {
    job *J = user;
    prep_ctx *P = J->P;
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s", J->layer, inf_bundle_linear_names[J->which]);
    if (J->part == 0) {
        float *w;
        int64_t rows, cols;
        inf_status st = transformed(P, J->layer, J->which, &w, &rows, &cols, err);
        if (st) return st;
        convert(w, (size_t)(rows * cols), P->o->weights, buf);
        free(w);
        progress(P, name);
        return INF_OK;
    }
    int4_cache *C = &P->cache[J->layer * 7 + J->which];
    if (!C->q) { /* first of the three parts: quantize the whole matrix */
        float *w;
        int64_t rows, cols;
        inf_status st = transformed(P, J->layer, J->which, &w, &rows, &cols, err);
        if (st) return st;
        int g = prep_int4_group(cols);
        C->q = malloc((size_t)(rows * cols / 2));
        C->s = malloc(sizeof(uint16_t) * (size_t)(rows * (cols / g)));
        C->z = malloc((size_t)(rows * (cols / g)));
        if (!C->q || !C->s || !C->z) {
            free(w);
            return inf_fail(err, INF_E_NOMEM, "prep: out of memory quantizing %s", name);
        }
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            prep_quantize_row_int4(w + r * cols, cols, g, C->q + r * (cols / 2), C->s + r * (cols / g),
                                   C->z + r * (cols / g));
        free(w);
        C->parts_left = 3;
        progress(P, name);
    }
    memcpy(buf, J->part == 1 ? (void *)C->q : J->part == 2 ? (void *)C->s : (void *)C->z, nbytes);
    if (--C->parts_left == 0) {
        free(C->q);
        free(C->s);
        free(C->z);
        C->q = NULL;
        C->s = NULL;
        C->z = NULL;
    }
    return INF_OK;
}

typedef struct {
    prep_ctx *P;
    const inf_tensor *t;
    const float *gain; /* fold this per-column gain in (lm_head) */
    inf_dtype dtype;   /* F32, F16; I8 = the int8 rows; I32 = the int8 rows' scales (F32 data) */
    const char *name;
    bool rotate;       /* rows <- Q row (the folded client bundle) */
} client_job;

enum { CLIENT_BLOCK = 256 }; /* rows rotated per sgemm */

/* Rows [r0, r0 + n) of the job's tensor as f32, gain folded in, and with
 * J->rotate multiplied by Q (rows x Q^T); tmp: [n, cols] scratch. */
static void client_rows(const client_job *J, int64_t r0, int64_t n, float *out, float *tmp) {
    const int64_t cols = inf_tensor_cols(J->t);
    float *dst = J->rotate ? tmp : out;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *row = dst + i * cols;
        inf_tensor_row_f32(J->t, r0 + i, row);
        if (J->gain)
            for (int64_t j = 0; j < cols; j++) row[j] *= J->gain[j];
    }
    if (J->rotate) times_qt(J->P, tmp, n, out); /* cols == d: client tensors are [vocab, dim] */
}

static inf_status produce_client(void *user, void *buf, size_t nbytes, inf_error *err) {
    client_job *J = user;
    prep_ctx *P = J->P;
    const int64_t rows = inf_tensor_rows(J->t), cols = inf_tensor_cols(J->t);
    const bool int8 = J->dtype == INF_DT_I8 || J->dtype == INF_DT_I32;
    int8_cache *C = &P->head8;
    (void)nbytes;
    if (int8 && C->q) goto copy; /* the other half made it */
    float *blk = malloc(sizeof(float) * (size_t)(CLIENT_BLOCK * cols));
    float *tmp = J->rotate ? malloc(sizeof(float) * (size_t)(CLIENT_BLOCK * cols)) : NULL;
    if (int8) {
        C->q = malloc((size_t)(rows * cols));
        C->s = malloc(sizeof(float) * (size_t)rows);
    }
    if (!blk || (J->rotate && !tmp) || (int8 && (!C->q || !C->s))) {
        free(blk);
        free(tmp);
        return inf_fail(err, INF_E_NOMEM, "prep: out of memory writing '%s'", J->name);
    }
    for (int64_t r0 = 0; r0 < rows; r0 += CLIENT_BLOCK) {
        int64_t n = rows - r0 < CLIENT_BLOCK ? rows - r0 : CLIENT_BLOCK;
        client_rows(J, r0, n, blk, tmp);
        if (J->dtype == INF_DT_F32) {
            memcpy((float *)buf + r0 * cols, blk, sizeof(float) * (size_t)(n * cols));
        } else if (int8) {
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < n; i++) C->s[r0 + i] = gemv_quantize_row_i8(blk + i * cols, cols, C->q + (r0 + i) * cols);
        } else {
            uint16_t *h = (uint16_t *)buf + r0 * cols;
            for (int64_t k = 0; k < n * cols; k++) h[k] = inf_f32_to_f16(blk[k]);
        }
    }
    free(blk);
    free(tmp);
    if (int8) C->parts_left = 2;
copy:
    if (int8) {
        if (J->dtype == INF_DT_I8) memcpy(buf, C->q, (size_t)(rows * cols));
        else memcpy(buf, C->s, sizeof(float) * (size_t)rows);
        if (--C->parts_left == 0) {
            free(C->q);
            free(C->s);
            C->q = NULL;
            C->s = NULL;
        }
    }
    progress(P, J->name);
    return INF_OK;
}

/* G = Q diag(g) Q^T (g NULL: all ones), [d, d] row-major, model-owned. */
static float *gain_rotated(prep_ctx *P, const float *g) {
    const int d = P->d;
    float *a = malloc(sizeof(float) * (size_t)d * d), *G = inf_model_alloc(P->m, sizeof(float) * (size_t)d * d);
    if (!a || !G) {
        free(a);
        return NULL;
    }
    for (int i = 0; i < d; i++)
        for (int k = 0; k < d; k++) a[(size_t)i * d + k] = P->Q[(size_t)i * d + k] * (g ? g[k] : 1.0f);
    times_qt(P, a, d, G);
    free(a);
    for (int i = 0; i < d; i++) /* exactly symmetric, as the math says */
        for (int j = i + 1; j < d; j++) {
            float v = 0.5f * (G[(size_t)i * d + j] + G[(size_t)j * d + i]);
            G[(size_t)i * d + j] = G[(size_t)j * d + i] = v;
        }
    return G;
}

/* Tied when lm_head is the embedding table: the same view, or equal values. */
static bool is_tied(const inf_model *m) {
    if (m->cfg.tied_embeddings || m->lm_head.data == m->tok_embd.data) return true;
    if (m->lm_head.dtype != m->tok_embd.dtype) {
        /* compare values row by row */
        int64_t rows = inf_tensor_rows(&m->tok_embd), cols = inf_tensor_cols(&m->tok_embd);
        float *a = malloc(sizeof(float) * (size_t)cols), *b = malloc(sizeof(float) * (size_t)cols);
        bool same = a && b;
        for (int64_t r = 0; same && r < rows; r++) {
            inf_tensor_row_f32(&m->tok_embd, r, a);
            inf_tensor_row_f32(&m->lm_head, r, b);
            same = memcmp(a, b, sizeof(float) * (size_t)cols) == 0;
        }
        free(a);
        free(b);
        return same;
    }
    return m->lm_head.nbytes == m->tok_embd.nbytes &&
           memcmp(m->lm_head.data, m->tok_embd.data, m->lm_head.nbytes) == 0;
}

static inf_status mkdir_p(const char *path, mode_t mode, inf_error *err) {
    if (mkdir(path, mode) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return INF_OK;
        return inf_fail(err, INF_E_IO, "%s: exists and is not a directory", path);
    }
    return inf_fail(err, INF_E_IO, "%s: cannot create directory: %s", path, strerror(errno));
}

static inf_status copy_file(const char *from, const char *to, inf_error *err) {
    FILE *a = fopen(from, "rb");
    if (!a) return inf_fail(err, INF_E_IO, "%s: cannot open: %s", from, strerror(errno));
    char tmp[2100];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    FILE *b = fopen(tmp, "wb");
    if (!b) {
        fclose(a);
        return inf_fail(err, INF_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    ok = ok && !ferror(a) && fflush(b) == 0 && fsync(fileno(b)) == 0;
    fclose(a);
    if (fclose(b) != 0) ok = false;
    if (!ok || rename(tmp, to) != 0) {
        unlink(tmp);
        return inf_fail(err, INF_E_IO, "%s: cannot write", to);
    }
    return INF_OK;
}

/* The source's tokenizer, carried into the client bundle. */
static inf_status write_tokenizer(const prep_opts *o, const inf_model *m, const char *cdir, inf_error *err) {
    const char *src = o->tokenizer;
    char path[2048], guess[2048];
    if (!src) {
        if (m->source == INF_SRC_GGUF) src = o->model;
        else if (m->source == INF_SRC_SAFETENSORS || m->source == INF_SRC_AWQ) {
            tok_hf_path(o->model, guess, sizeof guess);
            src = guess;
        } else {
            return inf_fail(err, INF_E_NOTFOUND, "%s: this checkpoint carries no tokenizer; pass --tokenizer PATH", o->model);
        }
    }
    tok_file_kind kind;
    inf_status st = tok_file_kind_of(src, &kind, err);
    if (st) return st;
    if (kind == TOK_FILE_GGUF) { /* only its tokenizer.* keys, not the weights */
        gguf_file *g;
        if ((st = gguf_open(src, &g, err))) return st;
        snprintf(path, sizeof path, "%s/tokenizer.gguf", cdir);
        st = gguf_write_kv_subset(g, "tokenizer.", path, err);
        gguf_close(g);
        return st;
    }
    static const char *names[] = {[TOK_FILE_HF_JSON] = "tokenizer.json", [TOK_FILE_TIKTOKEN] = "tokenizer.model",
                                  [TOK_FILE_LLAMA2C] = "tokenizer.bin"};
    snprintf(path, sizeof path, "%s/%s", cdir, names[kind]);
    return copy_file(src, path, err);
}

#ifndef INF_DEFAULT_CORPUS
#define INF_DEFAULT_CORPUS "bench/text/english.txt"
#endif

/* The tokenizer prep carries into the bundle (see write_tokenizer), loaded. */
static inf_status load_src_tokenizer(const prep_opts *o, const inf_model *m, tok_tokenizer **tok, inf_error *err) {
    char guess[2048];
    const char *src = o->tokenizer;
    if (!src && m->source == INF_SRC_GGUF) src = o->model;
    if (!src && (m->source == INF_SRC_SAFETENSORS || m->source == INF_SRC_AWQ)) {
        tok_hf_path(o->model, guess, sizeof guess);
        src = guess;
    }
    if (!src) return inf_fail(err, INF_E_NOTFOUND, "%s: this checkpoint carries no tokenizer; pass --tokenizer PATH", o->model);
    return tok_load_file(src, m->cfg.vocab_size, tok, NULL, err);
}

/* token_freq.order for --vocab-subset: the corpus (--vocab-freq, else the
 * shipped one) tokenized with the model's tokenizer; without a corpus the
 * token-id order (BPE ids roughly follow merge order, i.e. frequency). */
static inf_status token_freq(const prep_opts *o, inf_model *m, st_writer *cw, int32_t **order, char *desc,
                             size_t cap, inf_error *err) {
    const int V = m->cfg.vocab_size;
    const char *path = o->vocab_freq ? o->vocab_freq : INF_DEFAULT_CORPUS;
    int32_t *ord = malloc(sizeof *ord * (size_t)V);
    if (!ord) return inf_fail(err, INF_E_NOMEM, "prep: out of memory");
    *order = ord;
    inf_status st = INF_OK;
    FILE *f = fopen(path, "rb");
    if (!f && o->vocab_freq) return inf_fail(err, INF_E_IO, "--vocab-freq %s: cannot open: %s", path, strerror(errno));
    if (!f) {
        for (int i = 0; i < V; i++) ord[i] = i;
        snprintf(desc, cap, "token ids (the default corpus %s is not here)", path);
    } else {
        char *text = NULL;
        size_t len = 0, got;
        char buf[1 << 16];
        while (st == INF_OK && (got = fread(buf, 1, sizeof buf, f)) > 0) {
            char *t = realloc(text, len + got + 1);
            if (!t) st = inf_fail(err, INF_E_NOMEM, "--vocab-freq %s: out of memory", path);
            else {
                text = t;
                memcpy(text + len, buf, got);
                len += got;
            }
        }
        if (!st && ferror(f)) st = inf_fail(err, INF_E_IO, "--vocab-freq %s: read error", path);
        fclose(f);
        tok_tokenizer *tok = NULL;
        size_t n = 0;
        if (!st && len == 0) st = inf_fail(err, INF_E_FORMAT, "--vocab-freq %s: the file is empty", path);
        if (!st) st = load_src_tokenizer(o, m, &tok, err);
        if (!st) st = prep_token_order(tok, text, len, V, path, ord, &n, err);
        tok_free(tok);
        free(text);
        if (st) return st;
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        snprintf(desc, cap, "%s, %zu tokens", base, n);
    }
    int64_t shape = V;
    return st_writer_add(cw, "token_freq.order", INF_DT_I32, 1, &shape, ord, sizeof *ord * (size_t)V, err);
}

inf_status prep_run(const prep_opts *o, inf_error *err) {
    inf_model *m = NULL;
    inf_status st = inf_model_load(o->model, &m, err);
    if (st) return st;
    prep_ctx P = {.o = o, .m = m, .d = m->cfg.dim};
    st_writer *sw = NULL, *cw = NULL;
    job *jobs = NULL;
    client_job cj[3];
    int32_t *freq = NULL;
    char freq_desc[256] = "";
    char *cfg_json = NULL;
    rot_seed seed;
    char fp[72] = "none";
    char sdir[2048], cdir[2048], path[2100];
    snprintf(sdir, sizeof sdir, "%s/server", o->out);
    snprintf(cdir, sizeof cdir, "%s/client", o->out);

    if (!m->layers || !m->tok_embd.data || !m->lm_head.data) {
        st = inf_fail(err, INF_E_ARG, "%s: prep needs a full checkpoint (this one has no layers or no embeddings)", o->model);
        goto done;
    }
    if (o->weights == PREP_INT4) {
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int i = 0; i < 7; i++) {
                int64_t in = inf_tensor_cols(inf_layer_linear(&m->layers[l], i));
                if (!prep_int4_group(in)) {
                    st = inf_fail(err, INF_E_UNSUPPORTED, "--weights int4: blk.%d.%s has %lld inputs, not a multiple of 32",
                                  l, inf_bundle_linear_names[i], (long long)in);
                    goto done;
                }
            }
    }
    /* Never overwrite a prepared model: its seed is the only key to its
     * server bundle. Checked before anything is written. */
    snprintf(path, sizeof path, "%s/%s", cdir, INF_BUNDLE_SEED_FILE);
    if (access(path, F_OK) == 0) {
        st = inf_fail(err, INF_E_ARG, "%s already holds a prepared model (%s exists); remove it or choose another --out",
                      o->out, path);
        goto done;
    }
    if ((st = mkdir_p(o->out, 0755, err)) || (st = mkdir_p(sdir, 0755, err)) || (st = mkdir_p(cdir, 0700, err)))
        goto done;
    if (o->rotate) {
        if ((st = rot_seed_generate(&seed, err))) goto done;
        if ((st = rot_matrix(&seed, P.d, &P.Q, err))) goto done;
        if ((st = rot_fingerprint(&seed, P.d, fp, err))) goto done;
    }
    m->cfg.tied_embeddings = is_tied(m);
    if (!(cfg_json = inf_config_to_json(&m->cfg))) {
        st = inf_fail(err, INF_E_NOMEM, "prep: out of memory");
        goto done;
    }
    static const char *wnames[] = {"f32", "f16", "bf16", "int4"};

    /* server bundle */
    int nl = m->cfg.n_layers;
    P.cache = calloc((size_t)nl * 7, sizeof *P.cache);
    jobs = calloc((size_t)nl * 7 * 3, sizeof *jobs);
    if (!P.cache || !jobs || (st = st_writer_new(&sw, err))) {
        if (!st) st = inf_fail(err, INF_E_NOMEM, "prep: out of memory");
        goto done;
    }
    /* server linears + client tensors */
    P.total = nl * 7 + 1 + (o->lm_head == PREP_LMH_INT8 ? 2 : m->cfg.tied_embeddings ? 0 : 1);
    int nj = 0;
    for (int l = 0; l < nl && !st; l++)
        for (int i = 0; i < 7 && !st; i++) {
            const inf_tensor *t = inf_layer_linear(&m->layers[l], i);
            int64_t rows = inf_tensor_rows(t), cols = inf_tensor_cols(t);
            char name[96];
            if (o->weights != PREP_INT4) {
                inf_dtype dt = o->weights == PREP_F32 ? INF_DT_F32 : o->weights == PREP_F16 ? INF_DT_F16 : INF_DT_BF16;
                size_t es = dt == INF_DT_F32 ? 4 : 2;
                int64_t shape[2] = {rows, cols};
                jobs[nj] = (job){&P, l, i, 0};
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, inf_bundle_linear_names[i]);
                st = st_writer_add_lazy(sw, name, dt, 2, shape, (size_t)(rows * cols) * es, produce_linear, &jobs[nj++], err);
            } else {
                int g = prep_int4_group(cols);
                static const char *parts[] = {"", "qweight", "scales", "zeros"};
                for (int p = 1; p <= 3 && !st; p++) {
                    int64_t shape[2] = {rows, p == 1 ? cols / 2 : cols / g};
                    inf_dtype dt = p == 2 ? INF_DT_F16 : INF_DT_U8;
                    size_t nb = (size_t)(shape[0] * shape[1]) * (p == 2 ? 2 : 1);
                    jobs[nj] = (job){&P, l, i, p};
                    snprintf(name, sizeof name, "blk.%d.%s.%s", l, inf_bundle_linear_names[i], parts[p]);
                    st = st_writer_add_lazy(sw, name, dt, 2, shape, nb, produce_linear, &jobs[nj++], err);
                }
            }
        }
    int64_t half = m->cfg.head_dim / 2;
    if (!st) st = st_writer_add(sw, "rope.inv_freq", INF_DT_F32, 1, &half, m->rope_inv_freq, sizeof(float) * (size_t)half, err);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", INF_BUNDLE_VERSION);
    if (!st) st = st_writer_meta(sw, "format", INF_BUNDLE_SERVER_FORMAT, err);
    if (!st) st = st_writer_meta(sw, "format_version", ver, err);
    if (!st) st = st_writer_meta(sw, "config", cfg_json, err);
    if (!st) st = st_writer_meta(sw, "rotation", fp, err);
    if (!st) st = st_writer_meta(sw, "weights", wnames[o->weights], err);
    if (!st) st = st_writer_meta(sw, "norms_folded", "true", err);
    snprintf(path, sizeof path, "%s/%s", sdir, INF_BUNDLE_SERVER_FILE);
    if (!st) st = st_writer_write(sw, path, err);
    if (st) goto done;

    /* client bundle: embeddings, lm_head (or the final gain when tied), the
     * token frequency order, tokenizer, seed */
    if ((st = st_writer_new(&cw, err))) goto done;
    inf_dtype cdt = o->weights == PREP_F32 ? INF_DT_F32 : INF_DT_F16;
    size_t ces = cdt == INF_DT_F32 ? 4 : 2;
    int64_t eshape[2] = {m->cfg.vocab_size, m->cfg.dim};
    size_t ebytes = (size_t)(eshape[0] * eshape[1]) * ces;
    const bool int8 = o->lm_head == PREP_LMH_INT8;
    inf_dtype hdt = o->lm_head == PREP_LMH_F16 ? INF_DT_F16 : o->lm_head == PREP_LMH_F32 ? INF_DT_F32 : cdt;
    size_t hbytes = (size_t)(eshape[0] * eshape[1]) * (hdt == INF_DT_F32 ? 4 : 2);
    const bool fold = P.Q && !o->no_fold;
    cj[0] = (client_job){&P, &m->tok_embd, NULL, cdt, "token_embd.weight", fold};
    st = st_writer_add_lazy(cw, "token_embd.weight", cdt, 2, eshape, ebytes, produce_client, &cj[0], err);
    int64_t dshape = m->cfg.dim;
    if (!st && m->cfg.tied_embeddings && fold) {
        int64_t gshape[2] = {m->cfg.dim, m->cfg.dim};
        float *G = gain_rotated(&P, m->out_norm);
        if (!G) st = inf_fail(err, INF_E_NOMEM, "prep: out of memory for 'output_norm.rotated'");
        else st = st_writer_add(cw, "output_norm.rotated", INF_DT_F32, 2, gshape, G, sizeof(float) * (size_t)P.d * P.d, err);
    } else if (!st && m->cfg.tied_embeddings) {
        if (m->out_norm)
            st = st_writer_add(cw, "output_norm.weight", INF_DT_F32, 1, &dshape, m->out_norm, sizeof(float) * (size_t)m->cfg.dim, err);
        else {
            float *one = inf_model_alloc(m, sizeof(float) * (size_t)m->cfg.dim);
            if (!one) st = inf_fail(err, INF_E_NOMEM, "prep: out of memory");
            for (int j = 0; !st && j < m->cfg.dim; j++) one[j] = 1.0f;
            if (!st) st = st_writer_add(cw, "output_norm.weight", INF_DT_F32, 1, &dshape, one, sizeof(float) * (size_t)m->cfg.dim, err);
        }
    } else if (!st && !int8) {
        cj[1] = (client_job){&P, &m->lm_head, m->out_norm, hdt, "output.weight", fold};
        st = st_writer_add_lazy(cw, "output.weight", hdt, 2, eshape, hbytes, produce_client, &cj[1], err);
    }
    if (!st && int8) {
        /* tied: the lookup table stays as it is and the int8 copy (of the
         * unscaled rows; the gain still goes on the hidden state) is the
         * lm_head. untied: the folded lm_head, in int8 only. */
        const inf_tensor *src = m->cfg.tied_embeddings ? &m->tok_embd : &m->lm_head;
        const float *gain = m->cfg.tied_embeddings ? NULL : m->out_norm;
        int64_t vshape = m->cfg.vocab_size;
        cj[1] = (client_job){&P, src, gain, INF_DT_I8, "output.weight", fold};
        cj[2] = (client_job){&P, src, gain, INF_DT_I32, "output.scale", fold};
        st = st_writer_add_lazy(cw, "output.weight", INF_DT_I8, 2, eshape, (size_t)(eshape[0] * eshape[1]), produce_client,
                                &cj[1], err);
        if (!st)
            st = st_writer_add_lazy(cw, "output.scale", INF_DT_F32, 1, &vshape, sizeof(float) * (size_t)vshape,
                                    produce_client, &cj[2], err);
    }
    if (!st) st = token_freq(o, m, cw, &freq, freq_desc, sizeof freq_desc, err);
    char cver[16];
    snprintf(cver, sizeof cver, "%d", fold ? 3 : int8 ? 2 : INF_BUNDLE_VERSION);
    if (!st) st = st_writer_meta(cw, "format", INF_BUNDLE_CLIENT_FORMAT, err);
    if (!st) st = st_writer_meta(cw, "format_version", cver, err);
    if (!st) st = st_writer_meta(cw, "config", cfg_json, err);
    if (!st) st = st_writer_meta(cw, "rotation", fp, err);
    if (!st) st = st_writer_meta(cw, "lm_head", int8 ? INF_BUNDLE_LM_HEAD_INT8 : hdt == INF_DT_F32 ? "f32" : "f16", err);
    if (!st) st = st_writer_meta(cw, "token_freq", freq_desc, err);
    if (!st) st = st_writer_meta(cw, "rotation_folded", fold ? "true" : "false", err);
    snprintf(path, sizeof path, "%s/%s", cdir, INF_BUNDLE_CLIENT_FILE);
    if (!st) st = st_writer_write(cw, path, err);
    if (!st) st = write_tokenizer(o, m, cdir, err);
    if (!st && o->rotate) {
        snprintf(path, sizeof path, "%s/%s", cdir, INF_BUNDLE_SEED_FILE);
        st = rot_seed_write(path, &seed, err);
    }
    if (!st && o->progress) {
        fprintf(stderr, "prep: wrote %s (weights %s, %s) and %s (tied embeddings: %s)\n", sdir, wnames[o->weights],
                o->rotate ? "rotated" : "not rotated", cdir, m->cfg.tied_embeddings ? "yes, one copy" : "no");
        const double mib = 1.0 / (1 << 20), vd = (double)eshape[0] * (double)eshape[1];
        if (int8 && m->cfg.tied_embeddings)
            fprintf(stderr, "prep: lm_head int8 + row scales: %.1f MiB MORE than tied alone (the %s lookup table, %.1f MiB, stays)\n",
                    (vd + 4.0 * eshape[0]) * mib, inf_dtype_name(cdt), (double)ebytes * mib);
        else if (int8)
            fprintf(stderr, "prep: lm_head int8 + row scales: %.1f MiB (%s would be %.1f MiB)\n", (vd + 4.0 * eshape[0]) * mib,
                    inf_dtype_name(hdt), (double)hbytes * mib);
        fprintf(stderr, "prep: token frequency order from %s\n", freq_desc);
        if (fold)
            fprintf(stderr, "prep: rotation folded into the client's embeddings and lm_head%s (--no-fold keeps them plain)\n",
                    m->cfg.tied_embeddings ? " and its final gain" : "");
    }
done:
    rot_seed_wipe(&seed);
    if (P.Q) rot_matrix_free(P.Q, P.d);
    if (P.cache)
        for (int i = 0; i < m->cfg.n_layers * 7; i++) {
            free(P.cache[i].q);
            free(P.cache[i].s);
            free(P.cache[i].z);
        }
    free(P.cache);
    free(P.head8.q);
    free(P.head8.s);
    free(jobs);
    free(freq);
    free(cfg_json);
    st_writer_free(sw);
    st_writer_free(cw);
    inf_model_free(m);
    return st;
}
