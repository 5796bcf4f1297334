#include "kv.h"

#include <stdlib.h>
#include <string.h>

inf_status inf_kv_init(inf_kv *kv, const inf_model_config *cfg, int max_len, inf_error *err) {
    memset(kv, 0, sizeof *kv);
    if (max_len <= 0) return inf_fail(err, INF_E_ARG, "KV cache: context length %d must be positive", max_len);
    kv->n_layers = cfg->n_layers;
    kv->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    kv->max_len = max_len;
    kv->k = calloc((size_t)cfg->n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)cfg->n_layers, sizeof *kv->v);
    if (!kv->k || !kv->v) {
        inf_kv_free(kv);
        return inf_fail(err, INF_E_NOMEM, "KV cache: out of memory");
    }
    return INF_OK;
}

void inf_kv_free(inf_kv *kv) {
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k) free(kv->k[l]);
        if (kv->v) free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}

inf_status inf_kv_reserve(inf_kv *kv, int need, inf_error *err) {
    if (need <= kv->capacity) return INF_OK;
    if (need > kv->max_len)
        return inf_fail(err, INF_E_RANGE, "context full: %d positions needed, the limit is %d", need,
                        kv->max_len);
    int cap = kv->capacity ? kv->capacity : 64;
    while (cap < need) cap = cap > kv->max_len / 2 ? kv->max_len : cap * 2;
    if (cap > kv->max_len) cap = kv->max_len;
    size_t bytes = sizeof(float) * (size_t)cap * (size_t)kv->kv_dim;
    for (int l = 0; l < kv->n_layers; l++) {
        float *nk = realloc(kv->k[l], bytes);
        if (!nk) return inf_fail(err, INF_E_NOMEM, "KV cache: out of memory for %d positions", cap);
        kv->k[l] = nk;
        float *nv = realloc(kv->v[l], bytes);
        if (!nv) return inf_fail(err, INF_E_NOMEM, "KV cache: out of memory for %d positions", cap);
        kv->v[l] = nv;
    }
    kv->capacity = cap;
    return INF_OK;
}

void inf_kv_truncate(inf_kv *kv, int pos) {
    if (pos >= 0 && pos < kv->len) kv->len = pos;
}
