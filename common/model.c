/* model.c — loader dispatch, ownership and the one validation every
 * format-specific loader ends with. */
#define _POSIX_C_SOURCE 200809L
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct inf_model_cleanup {
    void (*fn)(void *);
    void *arg;
    inf_model_cleanup *next;
};

inf_model *inf_model_new(const char *path, inf_model_source src) {
    inf_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    snprintf(m->path, sizeof m->path, "%s", path);
    m->source = src;
    m->cfg.bos_id = m->cfg.eos_id = m->cfg.eot_id = m->cfg.pad_id = -1;
    snprintf(m->cfg.arch, sizeof m->cfg.arch, "llama");
    return m;
}

int inf_model_defer(inf_model *m, void (*fn)(void *), void *arg) {
    inf_model_cleanup *c = malloc(sizeof *c);
    if (!c) {
        fn(arg);
        return -1;
    }
    c->fn = fn;
    c->arg = arg;
    c->next = m->cleanup;
    m->cleanup = c;
    return 0;
}

void *inf_model_alloc(inf_model *m, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) return NULL;
    if (inf_model_defer(m, free, p) != 0) return NULL;
    return p;
}

void inf_model_free(inf_model *m) {
    if (!m) return;
    inf_model_cleanup *c = m->cleanup;
    while (c) {
        inf_model_cleanup *next = c->next;
        c->fn(c->arg);
        free(c);
        c = next;
    }
    free(m);
}

inf_status inf_model_gain(inf_model *m, const inf_tensor *t, const char *name, int dim,
                          const float **out, inf_error *err) {
    int64_t shape[1] = {dim};
    inf_status st = inf_tensor_expect(t, name, 1, shape, err);
    if (st) return st;
    if (t->dtype != INF_DT_F32 && t->dtype != INF_DT_F16 && t->dtype != INF_DT_BF16)
        return inf_fail(err, INF_E_UNSUPPORTED, "tensor '%s': norm gain of type %s (need F32/F16/BF16)",
                        name, inf_dtype_name(t->dtype));
    float *g = inf_model_alloc(m, sizeof(float) * (size_t)dim);
    if (!g) return inf_fail(err, INF_E_NOMEM, "out of memory for '%s'", name);
    inf_tensor_row_f32(t, 0, g);
    for (int i = 0; i < dim; i++)
        if (!isfinite(g[i]))
            return inf_fail(err, INF_E_FORMAT, "tensor '%s': element %d is not finite", name, i);
    *out = g;
    return INF_OK;
}

static inf_status check_weight(const inf_tensor *t, const char *name, int64_t rows, int64_t cols,
                               inf_error *err) {
    if (!t->data) return inf_fail(err, INF_E_NOTFOUND, "tensor '%s' is missing", name);
    if (!inf_dtype_is_weight(t->dtype))
        return inf_fail(err, INF_E_UNSUPPORTED, "tensor '%s' has type %s, which cannot be used as a weight",
                        name, inf_dtype_name(t->dtype));
    int64_t shape[2] = {rows, cols};
    inf_status st = inf_tensor_expect(t, name, 2, shape, err);
    if (st) return st;
    if (t->dtype == INF_DT_Q4G) {
        if (t->group <= 0 || t->group % 8 != 0 || cols % t->group != 0 || !t->scales || !t->zeros)
            return inf_fail(err, INF_E_SHAPE, "tensor '%s': group size %d does not divide %lld", name,
                            t->group, (long long)cols);
    } else if (cols % inf_dtype_block(t->dtype) != 0) {
        return inf_fail(err, INF_E_SHAPE, "tensor '%s': %lld columns is not a multiple of the %s block",
                        name, (long long)cols, inf_dtype_name(t->dtype));
    }
    return INF_OK;
}

void inf_rope_inv_freq(const inf_model_config *c, const float *freq_factors, float *inv) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_scaling == INF_ROPE_SCALING_LLAMA3) {
            /* Llama 3.1: long wavelengths are slowed by `factor`, short ones
             * kept, and the band between is interpolated smoothly. */
            double wavelen = 2.0 * M_PI / f;
            double low_wl = c->rope_orig_ctx / c->rope_low_freq;
            double high_wl = c->rope_orig_ctx / c->rope_high_freq;
            if (wavelen > low_wl) {
                f = f / c->rope_factor;
            } else if (wavelen >= high_wl) {
                double smooth = (c->rope_orig_ctx / wavelen - c->rope_low_freq) /
                                (c->rope_high_freq - c->rope_low_freq);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        if (freq_factors) f /= freq_factors[i];
        inv[i] = (float)f;
    }
}

#define CHECK_RANGE(field, lo, hi)                                                               \
    do {                                                                                         \
        if (!(c->field >= (lo) && c->field <= (hi)))                                             \
            return inf_fail(err, INF_E_RANGE, "%s: model field '%s' = %g is out of range [%g, %g]", \
                            m->path, #field, (double)c->field, (double)(lo), (double)(hi));       \
    } while (0)

inf_status inf_model_finalize(inf_model *m, inf_error *err) {
    inf_model_config *c = &m->cfg;
    CHECK_RANGE(dim, 1, INF_MAX_DIM);
    CHECK_RANGE(n_layers, 1, INF_MAX_LAYERS);
    CHECK_RANGE(n_heads, 1, 4096);
    CHECK_RANGE(n_kv_heads, 1, c->n_heads);
    CHECK_RANGE(head_dim, 2, 4096);
    CHECK_RANGE(ffn_dim, 1, 1 << 20);
    CHECK_RANGE(vocab_size, 1, INF_MAX_VOCAB);
    CHECK_RANGE(max_seq, 1, INF_MAX_CTX);
    CHECK_RANGE(rms_eps, 1e-12, 1e-1);
    CHECK_RANGE(rope_theta, 1.0, 1e12);
    if (c->n_heads % c->n_kv_heads != 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: model field 'n_heads' = %d is not a multiple of 'n_kv_heads' = %d",
                        m->path, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: model field 'head_dim' = %d is odd", m->path,
                        c->head_dim);
    for (int id_i = 0; id_i < 4; id_i++) {
        int id = id_i == 0 ? c->bos_id : id_i == 1 ? c->eos_id : id_i == 2 ? c->eot_id : c->pad_id;
        static const char *names[] = {"bos_id", "eos_id", "eot_id", "pad_id"};
        if (id < -1 || id >= c->vocab_size)
            return inf_fail(err, INF_E_RANGE, "%s: model field '%s' = %d is outside the vocabulary (%d)",
                            m->path, names[id_i], id, c->vocab_size);
    }

    int64_t d = c->dim, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    inf_status st;
    if (m->tok_embd.data && (st = check_weight(&m->tok_embd, "token_embd", c->vocab_size, d, err)))
        return inf_wrap(err, st, "%s", m->path);
    if (m->lm_head.data && (st = check_weight(&m->lm_head, "lm_head", c->vocab_size, d, err)))
        return inf_wrap(err, st, "%s", m->path);
    /* a client bundle has no layers (they live on the worker) */
    for (int l = 0; m->layers && l < c->n_layers; l++) {
        const inf_layer *L = &m->layers[l];
        char nm[64];
#define CW(field, r, cc)                                                     \
    snprintf(nm, sizeof nm, "layer %d %s", l, #field);                       \
    if ((st = check_weight(&L->field, nm, r, cc, err))) return inf_wrap(err, st, "%s", m->path);
        CW(wq, qd, d)
        CW(wk, kvd, d)
        CW(wv, kvd, d)
        CW(wo, d, qd)
        CW(w_gate, c->ffn_dim, d)
        CW(w_up, c->ffn_dim, d)
        CW(w_down, d, c->ffn_dim)
#undef CW
    }

    /* RoPE inverse frequencies, with llama3 scaling folded in once here. */
    int half = c->head_dim / 2;
    float *inv = inf_model_alloc(m, sizeof(float) * (size_t)half);
    if (!inv) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", m->path);
    if (c->rope_scaling == INF_ROPE_SCALING_LLAMA3) {
        CHECK_RANGE(rope_factor, 1.0, 1024.0);
        CHECK_RANGE(rope_low_freq, 1e-6, 1e6);
        CHECK_RANGE(rope_high_freq, 1e-6, 1e6);
        CHECK_RANGE(rope_orig_ctx, 1, INF_MAX_CTX);
        if (!(c->rope_high_freq > c->rope_low_freq))
            return inf_fail(err, INF_E_RANGE,
                            "%s: rope_scaling high_freq_factor (%g) must exceed low_freq_factor (%g)",
                            m->path, c->rope_high_freq, c->rope_low_freq);
    }
    inf_rope_inv_freq(c, m->rope_freq_factors, inv);
    m->rope_inv_freq = inv;
    return INF_OK;
}

inf_status inf_model_load(const char *path, inf_model **out, inf_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return inf_fail(err, INF_E_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return inf_model_load_hf(path, out, err);
    FILE *f = fopen(path, "rb");
    if (!f) return inf_fail(err, INF_E_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char head[9] = {0};
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) return inf_model_load_gguf(path, out, err);
    if (n >= 4 && memcmp(head, "FUGG", 4) == 0)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: big-endian GGUF is not supported", path);
    /* safetensors: u64 header length, then '{' */
    if (n == 9 && head[8] == '{') return inf_model_load_hf(path, out, err);
    if (n < sizeof head)
        return inf_fail(err, INF_E_FORMAT, "%s: file too short (%zu bytes) to be a model", path, n);
    return inf_model_load_llama2c(path, out, err);
}
