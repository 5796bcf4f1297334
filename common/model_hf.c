/* model_hf.c — a Hugging Face checkpoint as an inf_model: config.json plus
 * one or many *.safetensors, with F32/F16/BF16 weights used in place from the
 * maps, or AutoAWQ "GEMM" INT4 projections repacked once into INF_DT_Q4G.
 *
 * HF stores q/k rows for rotate_half RoPE (pairs i, i + head_dim/2), so
 * rope_interleaved is false here.
 *
 * AutoAWQ GEMM layout (per projection with in = K, out = N, group g):
 *   qweight int32 [K, N/8]   nibble i of word (k, c) = q of column 8c + AWQ_ORDER[i]
 *   qzeros  int32 [K/g, N/8] same packing, zeros stored raw
 *   scales  f16   [K/g, N]
 *   w[k][n] = (q - z) * s, and y = x W with W [K, N].
 * Q4G wants the transpose, [N, K] rows with two k per byte (even k in the
 * low nibble), scales/zeros [N][K/g]: still 4 bits a weight.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "mapfile.h"
#include "model.h"
#include "safetensors.h"

#define HF_MAX_CONFIG ((size_t)16 * 1024 * 1024)

static const int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};

typedef struct {
    bool awq;
    int group;
} hf_quant;

/* ---- config.json ------------------------------------------------------------------ */

static const char *json_kind(const cJSON *j) {
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsNull(j)) return "null";
    return "something else";
}

static inf_status wrong_type(const char *path, const char *field, const char *want, const cJSON *j,
                             inf_error *err) {
    if (cJSON_IsString(j))
        return inf_fail(err, INF_E_FORMAT, "%s: field '%s' must be %s, got the string \"%.64s\"", path, field,
                        want, j->valuestring);
    return inf_fail(err, INF_E_FORMAT, "%s: field '%s' must be %s, got %s", path, field, want, json_kind(j));
}

/* Item of `obj` or NULL when absent or JSON null. */
static const cJSON *item(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(j) ? NULL : j;
}

static inf_status j_int(const cJSON *obj, const char *path, const char *field, const char *shown,
                        int *out, int dflt, bool required, inf_error *err) {
    const cJSON *j = item(obj, field);
    if (!j) {
        if (required) return inf_fail(err, INF_E_NOTFOUND, "%s: required field '%s' is missing", path, shown);
        *out = dflt;
        return INF_OK;
    }
    if (!cJSON_IsNumber(j)) return wrong_type(path, shown, "an integer", j, err);
    double v = j->valuedouble;
    if (v != floor(v)) return inf_fail(err, INF_E_FORMAT, "%s: field '%s' = %g is not an integer", path, shown, v);
    if (!(v >= 0 && v <= INT_MAX))
        return inf_fail(err, INF_E_RANGE, "%s: field '%s' = %g is out of range", path, shown, v);
    *out = (int)v;
    return INF_OK;
}

static inf_status j_float(const cJSON *obj, const char *path, const char *field, const char *shown,
                          float *out, float dflt, bool required, inf_error *err) {
    const cJSON *j = item(obj, field);
    if (!j) {
        if (required) return inf_fail(err, INF_E_NOTFOUND, "%s: required field '%s' is missing", path, shown);
        *out = dflt;
        return INF_OK;
    }
    if (!cJSON_IsNumber(j)) return wrong_type(path, shown, "a number", j, err);
    if (!isfinite(j->valuedouble))
        return inf_fail(err, INF_E_RANGE, "%s: field '%s' is not finite", path, shown);
    *out = (float)j->valuedouble;
    return INF_OK;
}

static inf_status j_bool(const cJSON *obj, const char *path, const char *field, bool *out, bool dflt,
                         inf_error *err) {
    const cJSON *j = item(obj, field);
    if (!j) {
        *out = dflt;
        return INF_OK;
    }
    if (!cJSON_IsBool(j)) return wrong_type(path, field, "true or false", j, err);
    *out = cJSON_IsTrue(j);
    return INF_OK;
}

/* *out = NULL when absent/null. */
static inf_status j_str(const cJSON *obj, const char *path, const char *field, const char *shown,
                        const char **out, bool required, inf_error *err) {
    const cJSON *j = item(obj, field);
    *out = NULL;
    if (!j) {
        if (required) return inf_fail(err, INF_E_NOTFOUND, "%s: required field '%s' is missing", path, shown);
        return INF_OK;
    }
    if (!cJSON_IsString(j)) return wrong_type(path, shown, "a string", j, err);
    *out = j->valuestring;
    return INF_OK;
}

/* bos_token_id / eos_token_id / pad_token_id: an integer, null, or (eos)
 * a list whose first entry is the end of text and whose last, when there
 * are two or more, is the end of turn. */
static inf_status j_token(const cJSON *obj, const char *path, const char *field, bool list_ok,
                          int *id, int *second, inf_error *err) {
    const cJSON *j = item(obj, field);
    if (!j) return INF_OK;
    if (cJSON_IsArray(j) && list_ok) {
        int n = cJSON_GetArraySize(j), i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble > INT_MAX)
                return inf_fail(err, INF_E_FORMAT, "%s: field '%s' entry %d is not a token id", path, field, i);
            if (i == 0) *id = (int)e->valuedouble;
            else if (i == n - 1) *second = (int)e->valuedouble;
            i++;
        }
        return INF_OK;
    }
    return j_int(obj, path, field, field, id, -1, false, err);
}

static inf_status parse_rope_scaling(const cJSON *root, const char *path, inf_model_config *c,
                                     inf_error *err) {
    const cJSON *rs = item(root, "rope_scaling");
    if (!rs) return INF_OK;
    if (!cJSON_IsObject(rs)) return wrong_type(path, "rope_scaling", "an object or null", rs, err);
    const char *type;
    inf_status st = j_str(rs, path, "rope_type", "rope_scaling.rope_type", &type, false, err);
    if (st) return st;
    if (!type && (st = j_str(rs, path, "type", "rope_scaling.type", &type, false, err))) return st;
    if (!type) return inf_fail(err, INF_E_NOTFOUND, "%s: field 'rope_scaling' has no 'rope_type'", path);
    if (strcmp(type, "default") == 0) return INF_OK;
    if (strcmp(type, "llama3") != 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'rope_scaling.rope_type' = '%.64s' is not supported (supported: llama3)", path,
                        type);
    c->rope_scaling = INF_ROPE_SCALING_LLAMA3;
    if ((st = j_float(rs, path, "factor", "rope_scaling.factor", &c->rope_factor, 0, true, err))) return st;
    if ((st = j_float(rs, path, "low_freq_factor", "rope_scaling.low_freq_factor", &c->rope_low_freq, 0, true,
                      err)))
        return st;
    if ((st = j_float(rs, path, "high_freq_factor", "rope_scaling.high_freq_factor", &c->rope_high_freq, 0,
                      true, err)))
        return st;
    return j_int(rs, path, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings",
                 &c->rope_orig_ctx, 0, true, err);
}

static inf_status parse_quant(const cJSON *root, const char *path, const inf_model_config *c, hf_quant *q,
                              inf_error *err) {
    const cJSON *qc = item(root, "quantization_config");
    if (!qc) return INF_OK;
    if (!cJSON_IsObject(qc)) return wrong_type(path, "quantization_config", "an object", qc, err);
    const char *method, *version;
    inf_status st = j_str(qc, path, "quant_method", "quantization_config.quant_method", &method, true, err);
    if (st) return st;
    if (strcmp(method, "awq") != 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'quantization_config.quant_method' = '%.64s' is not supported (supported: awq)",
                        path, method);
    int bits;
    if ((st = j_int(qc, path, "bits", "quantization_config.bits", &bits, 0, true, err))) return st;
    if (bits != 4)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'quantization_config.bits' = %d is not supported (only 4-bit AWQ)", path, bits);
    if ((st = j_int(qc, path, "group_size", "quantization_config.group_size", &q->group, 0, true, err))) return st;
    if (q->group <= 0 || q->group % 8 != 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'quantization_config.group_size' = %d is not supported (need a positive multiple of 8)",
                        path, q->group);
    const int ins[3] = {c->dim, c->ffn_dim, c->n_heads * c->head_dim};
    static const char *in_names[3] = {"hidden_size", "intermediate_size", "num_attention_heads*head_dim"};
    for (int i = 0; i < 3; i++)
        if (ins[i] % q->group != 0)
            return inf_fail(err, INF_E_UNSUPPORTED,
                            "%s: field 'quantization_config.group_size' = %d does not divide the input size %s = %d",
                            path, q->group, in_names[i], ins[i]);
    bool zp = true;
    if ((st = j_bool(qc, path, "zero_point", &zp, true, err))) return st;
    if (!zp)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'quantization_config.zero_point' = false is not supported (need true)", path);
    if ((st = j_str(qc, path, "version", "quantization_config.version", &version, false, err))) return st;
    if (version && strcasecmp(version, "gemm") != 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'quantization_config.version' = '%.64s' is not supported (supported: gemm)",
                        path, version);
    q->awq = true;
    return INF_OK;
}

static inf_status parse_config(const cJSON *root, const char *path, inf_model_config *c, hf_quant *q,
                               inf_error *err) {
    if (!cJSON_IsObject(root)) return inf_fail(err, INF_E_FORMAT, "%s: not a JSON object", path);
    const char *s;
    inf_status st;
    if ((st = j_str(root, path, "model_type", "model_type", &s, true, err))) return st;
    bool mistral = strcmp(s, "mistral") == 0;
    if (strcmp(s, "llama") != 0 && !mistral)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: field 'model_type' = '%.64s' is not supported (supported: llama, mistral)", path, s);
    if ((st = j_str(root, path, "hidden_act", "hidden_act", &s, false, err))) return st;
    if (s && strcmp(s, "silu") != 0)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: field 'hidden_act' = '%.64s' is not supported (need silu)",
                        path, s);
    static const char *biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        bool b = false;
        if ((st = j_bool(root, path, biases[i], &b, false, err))) return st;
        if (b)
            return inf_fail(err, INF_E_UNSUPPORTED, "%s: field '%s' = true is not supported (no linear biases)",
                            path, biases[i]);
    }

#define INT(field, dst, dflt, req) \
    if ((st = j_int(root, path, field, field, &c->dst, dflt, req, err))) return st;
    INT("hidden_size", dim, 0, true)
    INT("num_hidden_layers", n_layers, 0, true)
    INT("num_attention_heads", n_heads, 0, true)
    INT("num_key_value_heads", n_kv_heads, c->n_heads, false)
    INT("head_dim", head_dim, c->n_heads > 0 ? c->dim / c->n_heads : 0, false)
    INT("intermediate_size", ffn_dim, 0, true)
    INT("vocab_size", vocab_size, 0, true)
    INT("max_position_embeddings", max_seq, 2048, false)
#undef INT
    /* The same limits inf_model_finalize applies, named as config.json names them. */
    const struct { const char *field; int v, lo, hi; } lim[] = {
        {"hidden_size", c->dim, 1, INF_MAX_DIM},
        {"num_hidden_layers", c->n_layers, 1, INF_MAX_LAYERS},
        {"num_attention_heads", c->n_heads, 1, 4096},
        {"num_key_value_heads", c->n_kv_heads, 1, c->n_heads},
        {"head_dim", c->head_dim, 2, 4096},
        {"intermediate_size", c->ffn_dim, 1, 1 << 20},
        {"vocab_size", c->vocab_size, 1, INF_MAX_VOCAB},
        {"max_position_embeddings", c->max_seq, 1, INF_MAX_CTX},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++)
        if (lim[i].v < lim[i].lo || lim[i].v > lim[i].hi)
            return inf_fail(err, INF_E_RANGE, "%s: field '%s' = %d is out of range [%d, %d]", path,
                            lim[i].field, lim[i].v, lim[i].lo, lim[i].hi);
    if ((st = j_float(root, path, "rope_theta", "rope_theta", &c->rope_theta, 10000.0f, false, err))) return st;
    if ((st = j_float(root, path, "rms_norm_eps", "rms_norm_eps", &c->rms_eps, 1e-6f, false, err))) return st;
    if ((st = parse_rope_scaling(root, path, c, err))) return st;
    if ((st = j_bool(root, path, "tie_word_embeddings", &c->tied_embeddings, false, err))) return st;

    if (mistral) {
        /* A sliding window no shorter than the context never slides. HF's
         * MistralConfig defaults it to 4096 when the field is absent. */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        int w = 4096;
        if (sw && !cJSON_IsNull(sw) &&
            (st = j_int(root, path, "sliding_window", "sliding_window", &w, 0, true, err)))
            return st;
        if (!cJSON_IsNull(sw) && w < c->max_seq)
            return inf_fail(err, INF_E_UNSUPPORTED,
                            "%s: field 'sliding_window' = %d%s is not supported (need null, or at least max_position_embeddings = %d: sliding-window attention is not implemented)",
                            path, w, sw ? "" : " (the default when absent)", c->max_seq);
    }

    int eot = -1;
    if ((st = j_token(root, path, "bos_token_id", false, &c->bos_id, NULL, err))) return st;
    if ((st = j_token(root, path, "eos_token_id", true, &c->eos_id, &eot, err))) return st;
    if ((st = j_token(root, path, "pad_token_id", false, &c->pad_id, NULL, err))) return st;
    c->eot_id = eot;
    c->rope_interleaved = false;
    snprintf(c->arch, sizeof c->arch, "llama");
    return parse_quant(root, path, c, q, err);
}

/* ---- tensors ----------------------------------------------------------------------- */

typedef struct {
    inf_model *m;
    const st_set *set;
    hf_quant q;
} hf_ctx;

/* The tensor `name` with the given dtype class and shape; messages name the
 * file that holds it. */
static inf_status get_tensor(const hf_ctx *x, const char *name, int ndim, const int64_t *shape,
                             bool float_only, const inf_tensor **out, inf_error *err) {
    inf_status st = st_set_require(x->set, name, out, err);
    if (st) return st;
    const char *file = st_path(st_set_which(x->set, name));
    inf_dtype dt = (*out)->dtype;
    if (float_only && dt != INF_DT_F32 && dt != INF_DT_F16 && dt != INF_DT_BF16)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                        file, name, inf_dtype_name(dt));
    if ((st = inf_tensor_expect(*out, name, ndim, shape, err))) return inf_wrap(err, st, "%s", file);
    return INF_OK;
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* prefix.{qweight,qzeros,scales} -> Q4G [n_out, n_in] owned by the model. */
static inf_status awq_repack(const hf_ctx *x, const char *prefix, int64_t N, int64_t K, inf_tensor *dst,
                             inf_error *err) {
    char nq[160], nz[160], ns[160];
    snprintf(nq, sizeof nq, "%s.qweight", prefix);
    snprintf(nz, sizeof nz, "%s.qzeros", prefix);
    snprintf(ns, sizeof ns, "%s.scales", prefix);
    const int g = x->q.group;
    if (N % 8 != 0 || K % g != 0)
        return inf_fail(err, INF_E_SHAPE, "%s: tensor '%s': [%lld, %lld] cannot be AWQ-packed with group %d",
                        x->m->path, nq, (long long)K, (long long)N, g);
    const int64_t C = N / 8, G = K / g;
    const inf_tensor *qw, *qz, *sc;
    inf_status st;
    if ((st = get_tensor(x, nq, 2, (int64_t[]){K, C}, false, &qw, err))) return st;
    if ((st = get_tensor(x, nz, 2, (int64_t[]){G, C}, false, &qz, err))) return st;
    if ((st = get_tensor(x, ns, 2, (int64_t[]){G, N}, false, &sc, err))) return st;
    const struct { const inf_tensor *t; const char *name; inf_dtype want; } ck[3] = {
        {qw, nq, INF_DT_I32}, {qz, nz, INF_DT_I32}, {sc, ns, INF_DT_F16}};
    for (int i = 0; i < 3; i++)
        if (ck[i].t->dtype != ck[i].want)
            return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s, AWQ needs %s",
                            st_path(st_set_which(x->set, ck[i].name)), ck[i].name,
                            inf_dtype_name(ck[i].t->dtype), inf_dtype_name(ck[i].want));

    uint8_t *data = inf_model_alloc(x->m, (size_t)(N * K / 2));
    uint16_t *scales = inf_model_alloc(x->m, sizeof(uint16_t) * (size_t)(N * G));
    uint8_t *zeros = inf_model_alloc(x->m, (size_t)(N * G));
    if (!data || !scales || !zeros)
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory repacking '%s'", x->m->path, nq);
    const uint8_t *qwb = qw->data, *qzb = qz->data, *scb = sc->data;
    const int64_t half = K / 2;

    /* One thread per block of 8 output rows: its writes are its own rows. */
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; c++) {
        uint8_t *rows[8];
        for (int i = 0; i < 8; i++) rows[i] = data + (8 * c + AWQ_ORDER[i]) * half;
        for (int64_t k = 0; k < K; k += 2) {
            uint32_t v0 = rd32(qwb + 4 * (k * C + c)), v1 = rd32(qwb + 4 * ((k + 1) * C + c));
            for (int i = 0; i < 8; i++)
                rows[i][k / 2] = (uint8_t)(((v0 >> (4 * i)) & 15u) | (((v1 >> (4 * i)) & 15u) << 4));
        }
        for (int64_t gi = 0; gi < G; gi++) {
            uint32_t z = rd32(qzb + 4 * (gi * C + c));
            for (int i = 0; i < 8; i++) zeros[(8 * c + AWQ_ORDER[i]) * G + gi] = (uint8_t)((z >> (4 * i)) & 15u);
            for (int j = 0; j < 8; j++) scales[(8 * c + j) * G + gi] = rd16(scb + 2 * (gi * N + 8 * c + j));
        }
    }
    for (int64_t i = 0; i < N * G; i++)
        if ((scales[i] & 0x7c00u) == 0x7c00u)
            return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': scale for output %lld, group %lld is not finite",
                            st_path(st_set_which(x->set, ns)), ns, (long long)(i / G), (long long)(i % G));

    memset(dst, 0, sizeof *dst);
    dst->dtype = INF_DT_Q4G;
    dst->ndim = 2;
    dst->shape[0] = N;
    dst->shape[1] = K;
    dst->data = data;
    dst->nbytes = (size_t)(N * K / 2);
    dst->scales = scales;
    dst->zeros = zeros;
    dst->group = g;
    return INF_OK;
}

/* model.layers.L.MOD.weight (float) or, in an AWQ checkpoint, its packed triplet. */
static inf_status get_proj(const hf_ctx *x, int l, const char *mod, int64_t n_out, int64_t n_in,
                           inf_tensor *dst, inf_error *err) {
    char prefix[128], name[160];
    snprintf(prefix, sizeof prefix, "model.layers.%d.%s", l, mod);
    snprintf(name, sizeof name, "%s.bias", prefix);
    if (st_set_has(x->set, name))
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s': linear biases are not supported",
                        st_path(st_set_which(x->set, name)), name);
    snprintf(name, sizeof name, "%s.weight", prefix);
    const inf_tensor *t;
    if (x->q.awq && !st_set_has(x->set, name)) return awq_repack(x, prefix, n_out, n_in, dst, err);
    inf_status st = get_tensor(x, name, 2, (int64_t[]){n_out, n_in}, true, &t, err);
    if (st) return st;
    *dst = *t;
    return INF_OK;
}

static inf_status get_gain(const hf_ctx *x, const char *name, const float **out, inf_error *err) {
    const inf_tensor *t;
    inf_status st = get_tensor(x, name, 1, (int64_t[]){x->m->cfg.dim}, true, &t, err);
    if (st) return st;
    if ((st = inf_model_gain(x->m, t, name, x->m->cfg.dim, out, err)))
        return inf_wrap(err, st, "%s", st_path(st_set_which(x->set, name)));
    return INF_OK;
}

static inf_status load_tensors(hf_ctx *x, inf_error *err) {
    inf_model *m = x->m;
    const inf_model_config *c = &m->cfg;
    const int64_t d = c->dim, qd = (int64_t)c->n_heads * c->head_dim,
                  kvd = (int64_t)c->n_kv_heads * c->head_dim, f = c->ffn_dim;
    const inf_tensor *t;
    inf_status st;
    if ((st = get_tensor(x, "model.embed_tokens.weight", 2, (int64_t[]){c->vocab_size, d}, true, &t, err)))
        return st;
    m->tok_embd = *t;
    if (c->tied_embeddings) {
        m->lm_head = m->tok_embd;
    } else {
        if ((st = get_tensor(x, "lm_head.weight", 2, (int64_t[]){c->vocab_size, d}, true, &t, err))) return st;
        m->lm_head = *t;
    }
    if ((st = get_gain(x, "model.norm.weight", &m->out_norm, err))) return st;

    m->layers = inf_model_alloc(m, sizeof(inf_layer) * (size_t)c->n_layers);
    if (!m->layers) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", m->path);
    for (int l = 0; l < c->n_layers; l++) {
        inf_layer *L = &m->layers[l];
        char nm[128];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        if ((st = get_gain(x, nm, &L->attn_norm, err))) return st;
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        if ((st = get_gain(x, nm, &L->ffn_norm, err))) return st;
        if ((st = get_proj(x, l, "self_attn.q_proj", qd, d, &L->wq, err))) return st;
        if ((st = get_proj(x, l, "self_attn.k_proj", kvd, d, &L->wk, err))) return st;
        if ((st = get_proj(x, l, "self_attn.v_proj", kvd, d, &L->wv, err))) return st;
        if ((st = get_proj(x, l, "self_attn.o_proj", d, qd, &L->wo, err))) return st;
        if ((st = get_proj(x, l, "mlp.gate_proj", f, d, &L->w_gate, err))) return st;
        if ((st = get_proj(x, l, "mlp.up_proj", f, d, &L->w_up, err))) return st;
        if ((st = get_proj(x, l, "mlp.down_proj", d, f, &L->w_down, err))) return st;
    }
    return INF_OK;
}

/* Loads config.json into m->cfg (and the quantization settings). */
static inf_status load_config(inf_model *m, const char *cfg_path, hf_quant *q, inf_error *err) {
    char *text = NULL;
    size_t len = 0;
    inf_status st = inf_read_file(cfg_path, HF_MAX_CONFIG, &text, &len, err);
    if (st) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        free(text);
        return inf_fail(err, INF_E_FORMAT, "%s: not valid JSON (error near byte %zu)", cfg_path, at);
    }
    free(text);
    st = parse_config(root, cfg_path, &m->cfg, q, err);
    cJSON_Delete(root);
    return st;
}

static void close_set(void *p) { st_set_close(p); }

inf_status inf_model_load_hf(const char *path, inf_model **out, inf_error *err) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return inf_fail(err, INF_E_IO, "%s: %s", path, strerror(errno));
    bool is_dir = S_ISDIR(sb.st_mode);
    char dir[1024], cfg_path[1100];
    snprintf(dir, sizeof dir, "%s", path);
    if (!is_dir) {
        char *slash = strrchr(dir, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == dir) dir[1] = '\0';
        else *slash = '\0';
    }
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);

    hf_quant q = {0};
    inf_model *m = inf_model_new(path, INF_SRC_SAFETENSORS);
    if (!m) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    inf_status st = load_config(m, cfg_path, &q, err);
    st_set *set = NULL;
    if (!st) st = is_dir ? st_set_open_dir(dir, &set, err) : st_set_open_file(path, &set, err);
    if (!st && inf_model_defer(m, close_set, set) != 0)
        st = inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    if (!st) {
        if (q.awq) m->source = INF_SRC_AWQ;
        hf_ctx x = {m, set, q};
        st = load_tensors(&x, err);
    }
    if (!st) st = inf_model_finalize(m, err);
    if (st) {
        inf_model_free(m);
        return st;
    }
    *out = m;
    return INF_OK;
}
