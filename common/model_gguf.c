/* model_gguf.c — a GGUF file (llama.cpp's format) as an inf_model. The
 * weights stay in the file's map; q/k rows are already permuted by
 * llama.cpp's converter for interleaved RoPE pairs. */
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "model.h"

static void close_gguf(void *p) { gguf_close(p); }

static inf_status get_int_key(const gguf_file *g, const char *arch, const char *suffix, int *out,
                              int dflt, bool required, inf_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_has(g, key)) {
        if (required) return inf_fail(err, INF_E_NOTFOUND, "%s: required key '%s' not found", gguf_path(g), key);
        *out = dflt;
        return INF_OK;
    }
    int64_t v;
    inf_status st = gguf_get_int(g, key, &v, err);
    if (st) return st;
    if (v < 0 || v > INT32_MAX)
        return inf_fail(err, INF_E_RANGE, "%s: key '%s' = %lld is out of range", gguf_path(g), key, (long long)v);
    *out = (int)v;
    return INF_OK;
}

static inf_status get_float_key(const gguf_file *g, const char *arch, const char *suffix, float *out,
                                float dflt, bool required, inf_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!gguf_has(g, key)) {
        if (required) return inf_fail(err, INF_E_NOTFOUND, "%s: required key '%s' not found", gguf_path(g), key);
        *out = dflt;
        return INF_OK;
    }
    double v;
    inf_status st = gguf_get_float(g, key, &v, err);
    if (st) return st;
    *out = (float)v;
    return INF_OK;
}

static inf_status get_token_id(const gguf_file *g, const char *key, int *out, inf_error *err) {
    if (!gguf_has(g, key)) return INF_OK;
    int64_t v;
    inf_status st = gguf_get_int(g, key, &v, err);
    if (st) return st;
    *out = (v >= 0 && v <= INT32_MAX) ? (int)v : -2; /* -2 fails finalize's range check */
    return INF_OK;
}

static inf_status load(inf_model *m, const gguf_file *g, inf_error *err) {
    const char *path = gguf_path(g);
    inf_model_config *c = &m->cfg;
    gguf_str archs;
    inf_status st = gguf_get_str(g, "general.architecture", &archs, err);
    if (st) return st;
    if (!(archs.len == 5 && memcmp(archs.ptr, "llama", 5) == 0))
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: general.architecture = '%.*s' is not supported (supported: llama)", path,
                        (int)(archs.len > 64 ? 64 : archs.len), archs.ptr);
    const char *a = "llama";
    if ((st = get_int_key(g, a, "embedding_length", &c->dim, 0, true, err))) return st;
    if ((st = get_int_key(g, a, "block_count", &c->n_layers, 0, true, err))) return st;
    if ((st = get_int_key(g, a, "attention.head_count", &c->n_heads, 0, true, err))) return st;
    if ((st = get_int_key(g, a, "attention.head_count_kv", &c->n_kv_heads, c->n_heads, false, err))) return st;
    if ((st = get_int_key(g, a, "feed_forward_length", &c->ffn_dim, 0, true, err))) return st;
    if ((st = get_int_key(g, a, "context_length", &c->max_seq, 2048, false, err))) return st;
    int hd_default = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if ((st = get_int_key(g, a, "attention.key_length", &c->head_dim, hd_default, false, err))) return st;
    int vlen = c->head_dim, rope_dims = c->head_dim;
    if ((st = get_int_key(g, a, "attention.value_length", &vlen, c->head_dim, false, err))) return st;
    if (vlen != c->head_dim)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: llama.attention.value_length = %d differs from key_length %d",
                        path, vlen, c->head_dim);
    if ((st = get_int_key(g, a, "rope.dimension_count", &rope_dims, c->head_dim, false, err))) return st;
    if (rope_dims != c->head_dim)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: llama.rope.dimension_count = %d (partial RoPE) is not supported; head_dim is %d",
                        path, rope_dims, c->head_dim);
    if ((st = get_float_key(g, a, "rope.freq_base", &c->rope_theta, 10000.0f, false, err))) return st;
    if ((st = get_float_key(g, a, "attention.layer_norm_rms_epsilon", &c->rms_eps, 0, true, err))) return st;
    if (gguf_has(g, "llama.rope.scaling.type")) {
        gguf_str t;
        if ((st = gguf_get_str(g, "llama.rope.scaling.type", &t, err))) return st;
        if (!(t.len == 4 && memcmp(t.ptr, "none", 4) == 0))
            return inf_fail(err, INF_E_UNSUPPORTED, "%s: llama.rope.scaling.type = '%.*s' is not supported",
                            path, (int)(t.len > 32 ? 32 : t.len), t.ptr);
    }
    c->rope_interleaved = true;

    const inf_tensor *t;
    if ((st = gguf_require_tensor(g, "token_embd.weight", &t, err))) return st;
    m->tok_embd = *t;
    c->vocab_size = (int)(t->ndim == 2 ? t->shape[0] : 0);
    int vs = c->vocab_size;
    if ((st = get_int_key(g, a, "vocab_size", &vs, c->vocab_size, false, err))) return st;
    if (vs != c->vocab_size)
        return inf_fail(err, INF_E_SHAPE, "%s: llama.vocab_size = %d but token_embd.weight has %d rows",
                        path, vs, c->vocab_size);

    if ((st = get_token_id(g, "tokenizer.ggml.bos_token_id", &c->bos_id, err))) return st;
    if ((st = get_token_id(g, "tokenizer.ggml.eos_token_id", &c->eos_id, err))) return st;
    if ((st = get_token_id(g, "tokenizer.ggml.eot_token_id", &c->eot_id, err))) return st;
    if ((st = get_token_id(g, "tokenizer.ggml.padding_token_id", &c->pad_id, err))) return st;

    if ((st = gguf_require_tensor(g, "output_norm.weight", &t, err))) return st;
    if ((st = inf_model_gain(m, t, "output_norm.weight", c->dim, &m->out_norm, err)))
        return inf_wrap(err, st, "%s", path);
    if (gguf_has_tensor(g, "output.weight")) {
        if ((st = gguf_require_tensor(g, "output.weight", &t, err))) return st;
        m->lm_head = *t;
        c->tied_embeddings = false;
    } else {
        m->lm_head = m->tok_embd;
        c->tied_embeddings = true;
    }

    if (gguf_has_tensor(g, "rope_freqs.weight")) {
        if ((st = gguf_require_tensor(g, "rope_freqs.weight", &t, err))) return st;
        int half = c->head_dim / 2;
        if ((st = inf_model_gain(m, t, "rope_freqs.weight", half, &m->rope_freq_factors, err)))
            return inf_wrap(err, st, "%s", path);
        for (int i = 0; i < half; i++)
            if (!(m->rope_freq_factors[i] > 0))
                return inf_fail(err, INF_E_RANGE, "%s: rope_freqs.weight[%d] = %g must be positive", path,
                                i, m->rope_freq_factors[i]);
    }

    if (c->n_layers <= 0 || c->n_layers > INF_MAX_LAYERS)
        return inf_fail(err, INF_E_RANGE, "%s: llama.block_count = %d is out of range", path, c->n_layers);
    m->layers = inf_model_alloc(m, sizeof(inf_layer) * (size_t)c->n_layers);
    if (!m->layers) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    for (int l = 0; l < c->n_layers; l++) {
        inf_layer *L = &m->layers[l];
        char nm[96];
        static const char *biases[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias"};
        for (size_t b = 0; b < 4; b++) {
            snprintf(nm, sizeof nm, "blk.%d.%s", l, biases[b]);
            if (gguf_has_tensor(g, nm))
                return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s': linear biases are not supported", path, nm);
        }
#define GET(field, name)                                                         \
    snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, name);                        \
    if ((st = gguf_require_tensor(g, nm, &t, err))) return st;                   \
    L->field = *t;
        GET(wq, "attn_q")
        GET(wk, "attn_k")
        GET(wv, "attn_v")
        GET(wo, "attn_output")
        GET(w_gate, "ffn_gate")
        GET(w_up, "ffn_up")
        GET(w_down, "ffn_down")
#undef GET
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        if ((st = gguf_require_tensor(g, nm, &t, err))) return st;
        if ((st = inf_model_gain(m, t, nm, c->dim, &L->attn_norm, err))) return inf_wrap(err, st, "%s", path);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        if ((st = gguf_require_tensor(g, nm, &t, err))) return st;
        if ((st = inf_model_gain(m, t, nm, c->dim, &L->ffn_norm, err))) return inf_wrap(err, st, "%s", path);
    }
    return inf_model_finalize(m, err);
}

inf_status inf_model_load_gguf(const char *path, inf_model **out, inf_error *err) {
    *out = NULL;
    gguf_file *g;
    inf_status st = gguf_open(path, &g, err);
    if (st) return st;
    inf_model *m = inf_model_new(path, INF_SRC_GGUF);
    if (!m) {
        gguf_close(g);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    if (inf_model_defer(m, close_gguf, g) != 0) {
        inf_model_free(m);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    st = load(m, g, err);
    if (st) {
        inf_model_free(m);
        return st;
    }
    *out = m;
    return INF_OK;
}
