/* bundle.c — config JSON and the loaders of prepared bundles (format in
 * bundle.h). Weights are used in place from the safetensors maps. */
#include "bundle.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

const char *const inf_bundle_linear_names[7] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                "ffn_gate", "ffn_up", "ffn_down"};

inf_tensor *inf_layer_linear(inf_layer *L, int i) {
    inf_tensor *t[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return i >= 0 && i < 7 ? t[i] : NULL;
}

/* ---- config <-> JSON --------------------------------------------------------- */

typedef enum { F_INT, F_FLOAT, F_BOOL } field_kind;
typedef struct {
    const char *name;
    field_kind kind;
    size_t off;
} cfg_field;

#define FI(n) {#n, F_INT, offsetof(inf_model_config, n)}
#define FF(n) {#n, F_FLOAT, offsetof(inf_model_config, n)}
#define FB(n) {#n, F_BOOL, offsetof(inf_model_config, n)}
static const cfg_field FIELDS[] = {
    FI(dim), FI(n_layers), FI(n_heads), FI(n_kv_heads), FI(head_dim), FI(ffn_dim),
    FI(vocab_size), FI(max_seq), FF(rope_theta), FF(rms_eps), FF(rope_factor),
    FF(rope_low_freq), FF(rope_high_freq), FI(rope_orig_ctx), FB(rope_interleaved),
    FB(tied_embeddings), FI(bos_id), FI(eos_id), FI(eot_id), FI(pad_id),
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

char *inf_config_to_json(const inf_model_config *c) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "arch", c->arch);
    cJSON_AddStringToObject(j, "rope_scaling", c->rope_scaling == INF_ROPE_SCALING_LLAMA3 ? "llama3" : "none");
    for (size_t i = 0; i < N_FIELDS; i++) {
        const char *p = (const char *)c + FIELDS[i].off;
        switch (FIELDS[i].kind) {
        case F_INT: cJSON_AddNumberToObject(j, FIELDS[i].name, *(const int *)(const void *)p); break;
        case F_FLOAT: {
            /* floats go through %.9g so they read back bit-exact */
            char buf[32];
            snprintf(buf, sizeof buf, "%.9g", (double)*(const float *)(const void *)p);
            cJSON_AddRawToObject(j, FIELDS[i].name, buf);
            break;
        }
        case F_BOOL: cJSON_AddBoolToObject(j, FIELDS[i].name, *(const bool *)(const void *)p); break;
        }
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

inf_status inf_config_from_json(const char *json, const char *where, inf_model_config *c,
                                inf_error *err) {
    cJSON *j = cJSON_Parse(json);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return inf_fail(err, INF_E_FORMAT, "%s: metadata 'config' is not a JSON object", where);
    }
    memset(c, 0, sizeof *c);
    inf_status st = INF_OK;
    const cJSON *e;
    bool seen[N_FIELDS] = {false};
    cJSON_ArrayForEach(e, j) {
        if (!strcmp(e->string, "arch")) {
            if (!cJSON_IsString(e) || strcmp(e->valuestring, "llama") != 0) {
                st = inf_fail(err, INF_E_UNSUPPORTED, "%s: config field 'arch' must be \"llama\"", where);
                break;
            }
            snprintf(c->arch, sizeof c->arch, "llama");
            continue;
        }
        if (!strcmp(e->string, "rope_scaling")) {
            if (cJSON_IsString(e) && !strcmp(e->valuestring, "none")) c->rope_scaling = INF_ROPE_SCALING_NONE;
            else if (cJSON_IsString(e) && !strcmp(e->valuestring, "llama3")) c->rope_scaling = INF_ROPE_SCALING_LLAMA3;
            else {
                st = inf_fail(err, INF_E_UNSUPPORTED, "%s: config field 'rope_scaling' must be \"none\" or \"llama3\"", where);
                break;
            }
            continue;
        }
        size_t i = 0;
        while (i < N_FIELDS && strcmp(FIELDS[i].name, e->string) != 0) i++;
        if (i == N_FIELDS) {
            st = inf_fail(err, INF_E_UNSUPPORTED, "%s: unknown config field '%s' (written by a newer infemeral?)",
                          where, e->string);
            break;
        }
        char *p = (char *)c + FIELDS[i].off;
        if (FIELDS[i].kind == F_BOOL) {
            if (!cJSON_IsBool(e)) {
                st = inf_fail(err, INF_E_FORMAT, "%s: config field '%s' must be true or false", where, e->string);
                break;
            }
            *(bool *)(void *)p = cJSON_IsTrue(e);
        } else {
            double v = e->valuedouble;
            if (!cJSON_IsNumber(e) || !isfinite(v)) {
                st = inf_fail(err, INF_E_FORMAT, "%s: config field '%s' must be a number", where, e->string);
                break;
            }
            if (FIELDS[i].kind == F_INT) {
                if (v != floor(v) || v < -1 || v > 2147483647.0) {
                    st = inf_fail(err, INF_E_RANGE, "%s: config field '%s' = %g is not a valid integer", where,
                                  e->string, v);
                    break;
                }
                *(int *)(void *)p = (int)v;
            } else {
                *(float *)(void *)p = (float)v;
            }
        }
        seen[i] = true;
    }
    for (size_t i = 0; st == INF_OK && i < N_FIELDS; i++)
        if (!seen[i]) st = inf_fail(err, INF_E_NOTFOUND, "%s: config field '%s' is missing", where, FIELDS[i].name);
    if (st == INF_OK && !c->arch[0]) st = inf_fail(err, INF_E_NOTFOUND, "%s: config field 'arch' is missing", where);
    cJSON_Delete(j);
    return st;
}

/* ---- loaders ------------------------------------------------------------------ */

static void close_st(void *p) { st_close(p); }

/* Opens DIR/file, checks format + version, parses the config and the rotation. */
static inf_status open_bundle(const char *dir, const char *file, const char *format, int max_version,
                              inf_model **out, st_file **sf, inf_error *err) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    *out = NULL;
    inf_status st = st_open(path, sf, err);
    if (st) return st;
    inf_model *m = inf_model_new(path, INF_SRC_BUNDLE);
    if (!m || inf_model_defer(m, close_st, *sf) != 0) {
        if (!m) st_close(*sf);
        inf_model_free(m);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    const char *fmt = st_metadata_get(*sf, "format");
    const char *ver = st_metadata_get(*sf, "format_version");
    const char *cfg = st_metadata_get(*sf, "config");
    const char *rot = st_metadata_get(*sf, "rotation");
    if (!fmt || strcmp(fmt, format) != 0) {
        st = inf_fail(err, INF_E_FORMAT, "%s: metadata 'format' is %s%s%s, expected \"%s\" (is this the right bundle directory?)",
                      path, fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", format);
    } else if (!ver || atoi(ver) < 1) {
        st = inf_fail(err, INF_E_FORMAT, "%s: metadata 'format_version' is missing or invalid", path);
    } else if (atoi(ver) > max_version) {
        st = inf_fail(err, INF_E_UNSUPPORTED, "%s: bundle format_version %s is newer than this infemeral reads (%d)",
                      path, ver, max_version);
    } else if (!cfg) {
        st = inf_fail(err, INF_E_NOTFOUND, "%s: metadata 'config' is missing", path);
    } else if (!rot || !*rot || strlen(rot) >= sizeof m->rotation) {
        st = inf_fail(err, INF_E_FORMAT, "%s: metadata 'rotation' is missing or too long", path);
    } else {
        st = inf_config_from_json(cfg, path, &m->cfg, err);
        snprintf(m->rotation, sizeof m->rotation, "%s", rot);
    }
    if (st) {
        inf_model_free(m);
        return st;
    }
    *out = m;
    return INF_OK;
}

static inf_status bundle_linear(inf_model *m, st_file *sf, const char *base, inf_tensor *t,
                                inf_error *err) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", base);
    if (st_has(sf, name)) {
        const inf_tensor *w;
        inf_status st = st_require(sf, name, &w, err);
        if (st) return st;
        *t = *w;
        return INF_OK;
    }
    const inf_tensor *q, *s, *z;
    inf_status st;
    snprintf(name, sizeof name, "%s.qweight", base);
    if ((st = st_require(sf, name, &q, err))) return st;
    snprintf(name, sizeof name, "%s.scales", base);
    if ((st = st_require(sf, name, &s, err))) return st;
    snprintf(name, sizeof name, "%s.zeros", base);
    if ((st = st_require(sf, name, &z, err))) return st;
    if (q->dtype != INF_DT_U8 || s->dtype != INF_DT_F16 || z->dtype != INF_DT_U8 || q->ndim != 2 ||
        s->ndim != 2 || z->ndim != 2)
        return inf_fail(err, INF_E_FORMAT, "%s: %s.{qweight,scales,zeros} must be 2-D U8, F16, U8", m->path, base);
    int64_t out = q->shape[0], in = q->shape[1] * 2, ng = s->shape[1];
    if (s->shape[0] != out || z->shape[0] != out || z->shape[1] != ng || ng <= 0 || in % ng != 0)
        return inf_fail(err, INF_E_SHAPE, "%s: %s: qweight [%lld, %lld], scales [%lld, %lld] and zeros [%lld, %lld] disagree",
                        m->path, base, (long long)q->shape[0], (long long)q->shape[1], (long long)s->shape[0],
                        (long long)s->shape[1], (long long)z->shape[0], (long long)z->shape[1]);
    const uint8_t *zr = z->data;
    for (int64_t i = 0; i < out * ng; i++)
        if (zr[i] > 15)
            return inf_fail(err, INF_E_RANGE, "%s: %s.zeros[%lld] = %u is not a 4-bit value", m->path, base,
                            (long long)i, zr[i]);
    *t = (inf_tensor){.dtype = INF_DT_Q4G, .ndim = 2, .shape = {out, in}, .data = q->data,
                      .nbytes = q->nbytes, .scales = s->data, .zeros = z->data, .group = (int)(in / ng)};
    return INF_OK;
}

inf_status inf_model_load_server_bundle(const char *dir, inf_model **out, inf_error *err) {
    st_file *sf;
    inf_model *m;
    inf_status st = open_bundle(dir, INF_BUNDLE_SERVER_FILE, INF_BUNDLE_SERVER_FORMAT, INF_BUNDLE_VERSION, &m, &sf, err);
    if (st) return st;
    *out = NULL;
    const char *folded = st_metadata_get(sf, "norms_folded");
    if (!folded || strcmp(folded, "true") != 0) {
        st = inf_fail(err, INF_E_UNSUPPORTED, "%s: metadata 'norms_folded' must be \"true\"", m->path);
        goto fail;
    }
    if (m->cfg.n_layers <= 0 || m->cfg.n_layers > INF_MAX_LAYERS) {
        st = inf_fail(err, INF_E_RANGE, "%s: config field 'n_layers' = %d is out of range", m->path, m->cfg.n_layers);
        goto fail;
    }
    m->layers = inf_model_alloc(m, sizeof(inf_layer) * (size_t)m->cfg.n_layers);
    if (!m->layers) {
        st = inf_fail(err, INF_E_NOMEM, "%s: out of memory", m->path);
        goto fail;
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int i = 0; i < 7; i++) {
            char base[64];
            snprintf(base, sizeof base, "blk.%d.%s", l, inf_bundle_linear_names[i]);
            if ((st = bundle_linear(m, sf, base, inf_layer_linear(&m->layers[l], i), err))) goto fail;
        }
    if ((st = inf_model_finalize(m, err))) goto fail;
    if (st_has(sf, "rope.inv_freq")) {
        const inf_tensor *rf;
        float *inv;
        if ((st = st_require(sf, "rope.inv_freq", &rf, err))) goto fail;
        if ((st = inf_model_gain(m, rf, "rope.inv_freq", m->cfg.head_dim / 2, (const float **)&inv, err)))
            goto fail;
        m->rope_inv_freq = inv;
    }
    *out = m;
    return INF_OK;
fail:
    inf_model_free(m);
    return st;
}

/* output.weight I8 [vocab, dim] + output.scale F32 [vocab], every scale
 * finite and >= 0. */
static inf_status load_int8_head(inf_model *m, st_file *sf, inf_error *err) {
    const inf_tensor *q, *s;
    inf_status st;
    if ((st = st_require(sf, "output.weight", &q, err)) || (st = st_require(sf, "output.scale", &s, err))) return st;
    const int64_t V = m->cfg.vocab_size, d = m->cfg.dim;
    if (q->dtype != INF_DT_I8)
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output.weight' has type %s; an int8 lm_head must be I8", m->path,
                        inf_dtype_name(q->dtype));
    if (s->dtype != INF_DT_F32)
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output.scale' has type %s; it must be F32", m->path,
                        inf_dtype_name(s->dtype));
    int64_t qs[2] = {V, d}, ss[1] = {V};
    if ((st = inf_tensor_expect(q, "output.weight", 2, qs, err)) || (st = inf_tensor_expect(s, "output.scale", 1, ss, err)))
        return st;
    if (q->nbytes != (size_t)(V * d) || s->nbytes != (size_t)V * sizeof(float))
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output.weight' or 'output.scale' has %zu / %zu bytes, expected %lld / %lld",
                        m->path, q->nbytes, s->nbytes, (long long)(V * d), (long long)V * 4);
    float *sc = inf_model_alloc(m, (size_t)V * sizeof *sc);
    if (!sc) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for 'output.scale'", m->path);
    memcpy(sc, s->data, (size_t)V * sizeof *sc); /* aligned, and checked once */
    for (int64_t r = 0; r < V; r++)
        if (!isfinite(sc[r]) || sc[r] < 0.0f)
            return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output.scale' row %lld is %g (must be finite and >= 0)", m->path,
                            (long long)r, (double)sc[r]);
    m->lm_head = *q;
    m->lm_head_scale = sc;
    return INF_OK;
}

/* output_norm.rotated F32 [dim, dim]: G = Q diag(g_final) Q^T of a folded,
 * tied client bundle. Every entry finite. */
static inf_status load_gain_rot(inf_model *m, st_file *sf, inf_error *err) {
    const inf_tensor *t;
    inf_status st = st_require(sf, "output_norm.rotated", &t, err);
    if (st) return st;
    const int64_t d = m->cfg.dim;
    int64_t shape[2] = {d, d};
    if (t->dtype != INF_DT_F32)
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output_norm.rotated' has type %s; it must be F32", m->path,
                        inf_dtype_name(t->dtype));
    if ((st = inf_tensor_expect(t, "output_norm.rotated", 2, shape, err))) return st;
    if (t->nbytes != (size_t)(d * d) * sizeof(float))
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output_norm.rotated' has %zu bytes, expected %lld", m->path,
                        t->nbytes, (long long)(d * d) * 4);
    float *g = inf_model_alloc(m, (size_t)(d * d) * sizeof *g);
    if (!g) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for 'output_norm.rotated'", m->path);
    memcpy(g, t->data, (size_t)(d * d) * sizeof *g); /* aligned for BLAS, and checked once */
    for (int64_t i = 0; i < d * d; i++)
        if (!isfinite(g[i]))
            return inf_fail(err, INF_E_FORMAT, "%s: tensor 'output_norm.rotated' entry (%lld, %lld) is not finite", m->path,
                            (long long)(i / d), (long long)(i % d));
    m->out_gain_rot = g;
    return INF_OK;
}

/* token_freq.order I32 [vocab]: a permutation of the token ids. */
static inf_status load_token_freq(inf_model *m, st_file *sf, inf_error *err) {
    const inf_tensor *t;
    inf_status st = st_require(sf, "token_freq.order", &t, err);
    if (st) return st;
    const int64_t V = m->cfg.vocab_size;
    int64_t shape[1] = {V};
    if (t->dtype != INF_DT_I32)
        return inf_fail(err, INF_E_FORMAT, "%s: tensor 'token_freq.order' has type %s; it must be I32", m->path,
                        inf_dtype_name(t->dtype));
    if ((st = inf_tensor_expect(t, "token_freq.order", 1, shape, err))) return st;
    int32_t *ord = inf_model_alloc(m, (size_t)V * sizeof *ord);
    uint8_t *seen = calloc((size_t)V, 1);
    if (!ord || !seen) {
        free(seen);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory for 'token_freq.order'", m->path);
    }
    memcpy(ord, t->data, (size_t)V * sizeof *ord);
    for (int64_t i = 0; i < V; i++) {
        if (ord[i] < 0 || ord[i] >= V || seen[ord[i]]++) {
            st = inf_fail(err, INF_E_FORMAT, "%s: tensor 'token_freq.order' entry %lld = %d is %s", m->path, (long long)i,
                          (int)ord[i], ord[i] < 0 || ord[i] >= V ? "not a token id" : "listed twice");
            break;
        }
    }
    free(seen);
    if (!st) m->token_freq = ord;
    return st;
}

inf_status inf_model_load_client_bundle(const char *dir, inf_model **out, inf_error *err) {
    st_file *sf;
    inf_model *m;
    inf_status st = open_bundle(dir, INF_BUNDLE_CLIENT_FILE, INF_BUNDLE_CLIENT_FORMAT, INF_BUNDLE_CLIENT_VERSION, &m, &sf, err);
    if (st) return st;
    *out = NULL;
    const inf_tensor *t;
    const char *lmh = st_metadata_get(sf, "lm_head");
    const bool int8 = lmh && !strcmp(lmh, INF_BUNDLE_LM_HEAD_INT8);
    if (lmh && !int8 && strcmp(lmh, "f16") != 0 && strcmp(lmh, "f32") != 0) {
        st = inf_fail(err, INF_E_UNSUPPORTED, "%s: metadata 'lm_head' = \"%.40s\" is not f16, f32 or %s", m->path, lmh,
                      INF_BUNDLE_LM_HEAD_INT8);
        goto fail;
    }
    const char *rf = st_metadata_get(sf, "rotation_folded");
    if (rf && strcmp(rf, "true") != 0 && strcmp(rf, "false") != 0) {
        st = inf_fail(err, INF_E_FORMAT, "%s: metadata 'rotation_folded' = \"%.40s\" is not true or false", m->path, rf);
        goto fail;
    }
    m->rot_folded = rf && !strcmp(rf, "true");
    if (m->rot_folded && !strcmp(m->rotation, "none")) {
        st = inf_fail(err, INF_E_FORMAT, "%s: metadata 'rotation_folded' is true but 'rotation' is \"none\"", m->path);
        goto fail;
    }
    if ((st = st_require(sf, "token_embd.weight", &t, err))) goto fail;
    m->tok_embd = *t;
    if (m->cfg.tied_embeddings && m->rot_folded) {
        if ((st = load_gain_rot(m, sf, err))) goto fail;
        m->lm_head = m->tok_embd;
    } else if (m->cfg.tied_embeddings) {
        if ((st = st_require(sf, "output_norm.weight", &t, err))) goto fail;
        if ((st = inf_model_gain(m, t, "output_norm.weight", m->cfg.dim, &m->out_norm, err))) goto fail;
        m->lm_head = m->tok_embd;
    } else if (!int8) {
        if ((st = st_require(sf, "output.weight", &t, err))) goto fail;
        m->lm_head = *t; /* final gain already folded in */
    }
    if ((st = inf_model_finalize(m, err))) goto fail;
    /* I8 is not a dtype the layer kernels take, so the int8 lm_head is
     * checked here, after the config and the embeddings are. */
    if (int8 && (st = load_int8_head(m, sf, err))) goto fail;
    if (st_has(sf, "token_freq.order") && (st = load_token_freq(m, sf, err))) goto fail;
    *out = m;
    return INF_OK;
fail:
    inf_model_free(m);
    return st;
}
