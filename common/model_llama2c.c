/* model_llama2c.c — a llama2.c legacy checkpoint (Karpathy's run.c format)
 * as an inf_model.
 *
 * Layout (all little-endian):
 *   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *     vocab_size > 0: the classifier is the token embedding (tied);
 *     vocab_size < 0: a separate classifier follows at the end.
 *   f32 token_embedding [vocab, dim]
 *       rms_att   [layers, dim]
 *       wq        [layers, dim, n_heads*hs]      (each [out, in])
 *       wk        [layers, n_kv_heads*hs, dim]
 *       wv        [layers, n_kv_heads*hs, dim]
 *       wo        [layers, dim, n_heads*hs]
 *       rms_ffn   [layers, dim]
 *       w1 (gate) [layers, hidden, dim]
 *       w2 (down) [layers, dim, hidden]
 *       w3 (up)   [layers, hidden, dim]
 *       rms_final [dim]
 *       freq_cis_real, freq_cis_imag [seq_len * hs/2] each (legacy, skipped)
 *       wcls      [vocab, dim]                   (only when vocab_size < 0)
 *   with hs = dim / n_heads.
 *
 * The header is validated before anything else is read, and the file size
 * must be exactly what the header implies (computed with overflow checks), so
 * every weight view lies inside the map. The weights are used in place from
 * the read-only map; only the norm gains are copied (to check they are
 * finite). RoPE in llama2.c rotates adjacent pairs: rope_interleaved = true.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapfile.h"
#include "model.h"

#define L2C_HEADER_BYTES 28
#define L2C_MAX_HIDDEN (1 << 20)

typedef struct {
    int32_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
} l2c_header;

static void close_map(void *p) {
    inf_map_close(p);
    free(p);
}

static uint32_t bswap32(uint32_t v) {
    return (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
}

static void read_header(const uint8_t *p, bool swap, l2c_header *h) {
    int32_t v[7];
    for (int i = 0; i < 7; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, 4);
        if (swap) u = bswap32(u);
        memcpy(&v[i], &u, 4);
    }
    h->dim = v[0];
    h->hidden = v[1];
    h->n_layers = v[2];
    h->n_heads = v[3];
    h->n_kv_heads = v[4];
    h->vocab = v[5];
    h->seq_len = v[6];
}

/* NULL when the header is plausible, else the name of the first bad field
 * and a description of the rule in *why. */
static const char *header_problem(const l2c_header *h, const char **why, int32_t *val) {
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    int64_t vocab = h->vocab < 0 ? -(int64_t)h->vocab : h->vocab;
    const int32_t f[7] = {h->dim, h->hidden, h->n_layers, h->n_heads, h->n_kv_heads, h->vocab, h->seq_len};
    const int64_t hi[7] = {INF_MAX_DIM, L2C_MAX_HIDDEN, INF_MAX_LAYERS, 4096, 4096, INF_MAX_VOCAB,
                           INF_MAX_CTX};
    for (int i = 0; i < 7; i++) {
        int64_t v = i == 5 ? vocab : f[i];
        *val = f[i];
        if (v <= 0) {
            *why = "must be positive";
            return names[i];
        }
        if (v > hi[i]) {
            *why = "is implausibly large";
            return names[i];
        }
    }
    *val = h->n_heads;
    if (h->n_heads > h->dim || h->dim % h->n_heads != 0) {
        *why = "does not divide dim";
        return names[3];
    }
    *val = h->n_kv_heads;
    if (h->n_kv_heads > h->n_heads || h->n_heads % h->n_kv_heads != 0) {
        *why = "does not divide n_heads";
        return names[4];
    }
    *val = h->dim / h->n_heads;
    if ((h->dim / h->n_heads) % 2 != 0) {
        *why = "(head size dim/n_heads) is odd; RoPE needs pairs";
        return "head_size";
    }
    return NULL;
}

/* Element counts of each array, in file order. */
typedef struct {
    size_t embd, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq, cls;
} l2c_sizes;

static bool mul3(size_t a, size_t b, size_t c, size_t *out) {
    size_t t;
    return inf_mul_size(a, b, &t) && inf_mul_size(t, c, out);
}

/* Total bytes of the file for this header, with or without a classifier. */
static bool compute_sizes(const l2c_header *h, l2c_sizes *s, size_t *bytes_no_cls) {
    size_t L = (size_t)h->n_layers, d = (size_t)h->dim, hd = (size_t)h->hidden;
    size_t V = (size_t)(h->vocab < 0 ? -(int64_t)h->vocab : h->vocab);
    size_t hs = d / (size_t)h->n_heads, qd = hs * (size_t)h->n_heads, kvd = hs * (size_t)h->n_kv_heads;
    bool ok = inf_mul_size(V, d, &s->embd) && inf_mul_size(L, d, &s->rms_att) &&
              mul3(L, qd, d, &s->wq) && mul3(L, kvd, d, &s->wk) && mul3(L, kvd, d, &s->wv) &&
              mul3(L, d, qd, &s->wo) && inf_mul_size(L, d, &s->rms_ffn) && mul3(L, hd, d, &s->w1) &&
              mul3(L, d, hd, &s->w2) && mul3(L, hd, d, &s->w3) &&
              inf_mul_size((size_t)h->seq_len, hs / 2, &s->freq);
    if (!ok) return false;
    s->rms_final = d;
    s->cls = s->embd;
    size_t parts[] = {s->embd, s->rms_att, s->wq, s->wk, s->wv, s->wo, s->rms_ffn,
                      s->w1, s->w2, s->w3, s->rms_final, s->freq, s->freq};
    size_t n = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (!inf_add_size(n, parts[i], &n)) return false;
    return inf_mul_size(n, 4, bytes_no_cls) &&
           inf_add_size(*bytes_no_cls, L2C_HEADER_BYTES, bytes_no_cls);
}

static inf_tensor f32_view(const float *p, int64_t rows, int64_t cols) {
    inf_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = INF_DT_F32;
    t.ndim = 2;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.data = p;
    t.nbytes = (size_t)rows * (size_t)cols * 4;
    return t;
}

static inf_status load(inf_model *m, const inf_mapfile *map, inf_error *err) {
    const char *path = map->path;
    if (map->size < L2C_HEADER_BYTES)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: truncated llama2.c checkpoint: %zu bytes, the header alone needs %d",
                        path, map->size, L2C_HEADER_BYTES);
    l2c_header h;
    read_header(map->data, false, &h);
    const char *why = NULL;
    int32_t val = 0;
    const char *bad = header_problem(&h, &why, &val);
    if (bad) {
        l2c_header sw;
        const char *why2;
        int32_t val2;
        read_header(map->data, true, &sw);
        if (header_problem(&sw, &why2, &val2) == NULL)
            return inf_fail(err, INF_E_UNSUPPORTED,
                            "%s: llama2.c header is byte-swapped (big-endian: dim reads %d, swapped %d); "
                            "only little-endian checkpoints are supported",
                            path, h.dim, sw.dim);
        return inf_fail(err, INF_E_FORMAT,
                        "%s: not a llama2.c checkpoint: header field '%s' = %d %s "
                        "(header: dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d)",
                        path, bad, val, why, h.dim, h.hidden, h.n_layers, h.n_heads, h.n_kv_heads,
                        h.vocab, h.seq_len);
    }

    l2c_sizes s;
    size_t expect;
    if (!compute_sizes(&h, &s, &expect))
        return inf_fail(err, INF_E_RANGE, "%s: llama2.c header sizes overflow (dim %d, layers %d, vocab %d)",
                        path, h.dim, h.n_layers, h.vocab);
    bool shared = h.vocab > 0;
    size_t cls_bytes = s.cls * 4, with_cls;
    if (!inf_add_size(expect, cls_bytes, &with_cls))
        return inf_fail(err, INF_E_RANGE, "%s: llama2.c checkpoint size overflows", path);
    if (!shared) expect = with_cls;
    if (map->size < expect)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: truncated llama2.c checkpoint: the header implies %zu bytes (%s classifier), the file has %zu",
                        path, expect, shared ? "shared" : "separate", map->size);
    /* A file with vocab > 0 followed by exactly one unused classifier is
     * accepted (the header says the embeddings are shared, and they are used). */
    if (map->size != expect && !(shared && map->size == with_cls))
        return inf_fail(err, INF_E_FORMAT,
                        "%s: llama2.c checkpoint is %zu bytes, longer than the %zu bytes its header implies (%s classifier)",
                        path, map->size, expect, shared ? "shared" : "separate");

    inf_model_config *c = &m->cfg;
    c->dim = h.dim;
    c->ffn_dim = h.hidden;
    c->n_layers = h.n_layers;
    c->n_heads = h.n_heads;
    c->n_kv_heads = h.n_kv_heads;
    c->head_dim = h.dim / h.n_heads;
    c->vocab_size = shared ? h.vocab : -h.vocab;
    c->max_seq = h.seq_len;
    c->rope_theta = 10000.0f;
    c->rms_eps = 1e-5f;
    c->rope_scaling = INF_ROPE_SCALING_NONE;
    c->rope_interleaved = true;
    c->tied_embeddings = shared;
    c->bos_id = c->vocab_size > 1 ? 1 : -1;
    c->eos_id = c->vocab_size > 2 ? 2 : -1;

    /* The map is page-aligned and the header is 28 bytes: every array
     * starts on a 4-byte boundary, so float pointers are aligned. */
    const float *p = (const float *)(const void *)(map->data + L2C_HEADER_BYTES);
    int64_t d = c->dim, hd = c->ffn_dim, V = c->vocab_size;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    const float *embd = p;
    p += s.embd;
    const float *rms_att = p;
    p += s.rms_att;
    const float *wq = p;
    p += s.wq;
    const float *wk = p;
    p += s.wk;
    const float *wv = p;
    p += s.wv;
    const float *wo = p;
    p += s.wo;
    const float *rms_ffn = p;
    p += s.rms_ffn;
    const float *w1 = p;
    p += s.w1;
    const float *w2 = p;
    p += s.w2;
    const float *w3 = p;
    p += s.w3;
    const float *rms_final = p;
    p += s.rms_final;
    p += 2 * s.freq; /* freq_cis_real, freq_cis_imag: recomputed from theta instead */
    const float *wcls = shared ? embd : p;

    m->tok_embd = f32_view(embd, V, d);
    m->lm_head = f32_view(wcls, V, d);

    inf_status st;
    inf_tensor g = f32_view(rms_final, 1, d);
    g.ndim = 1;
    g.shape[0] = d;
    if ((st = inf_model_gain(m, &g, "rms_final_weight", c->dim, &m->out_norm, err)))
        return inf_wrap(err, st, "%s", path);

    m->layers = inf_model_alloc(m, sizeof(inf_layer) * (size_t)c->n_layers);
    if (!m->layers) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    for (int64_t l = 0; l < c->n_layers; l++) {
        inf_layer *L = &m->layers[l];
        char nm[64];
        L->wq = f32_view(wq + l * qd * d, qd, d);
        L->wk = f32_view(wk + l * kvd * d, kvd, d);
        L->wv = f32_view(wv + l * kvd * d, kvd, d);
        L->wo = f32_view(wo + l * d * qd, d, qd);
        L->w_gate = f32_view(w1 + l * hd * d, hd, d);
        L->w_down = f32_view(w2 + l * d * hd, d, hd);
        L->w_up = f32_view(w3 + l * hd * d, hd, d);
        g = f32_view(rms_att + l * d, 1, d);
        g.ndim = 1;
        g.shape[0] = d;
        snprintf(nm, sizeof nm, "rms_att_weight[%d]", (int)l);
        if ((st = inf_model_gain(m, &g, nm, c->dim, &L->attn_norm, err)))
            return inf_wrap(err, st, "%s", path);
        g.data = rms_ffn + l * d;
        snprintf(nm, sizeof nm, "rms_ffn_weight[%d]", (int)l);
        if ((st = inf_model_gain(m, &g, nm, c->dim, &L->ffn_norm, err)))
            return inf_wrap(err, st, "%s", path);
    }
    return inf_model_finalize(m, err);
}

inf_status inf_model_load_llama2c(const char *path, inf_model **out, inf_error *err) {
    *out = NULL;
    inf_mapfile *map = calloc(1, sizeof *map);
    if (!map) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    inf_status st = inf_map_open(map, path, err);
    if (st) {
        free(map);
        return st;
    }
    inf_model *m = inf_model_new(path, INF_SRC_LLAMA2C);
    if (!m) {
        close_map(map);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    if (inf_model_defer(m, close_map, map) != 0) {
        inf_model_free(m);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    st = load(m, map, err);
    if (st) {
        inf_model_free(m);
        return st;
    }
    *out = m;
    return INF_OK;
}
