/* kv.h — a session's attention key/value cache in host memory.
 *
 * Layout per layer: K and V each [capacity][n_kv_heads*head_dim] f32, rows
 * indexed by absolute position. `len` positions are valid. The cache grows
 * on demand (doubling, up to max_len) so a short chat does not reserve the
 * model's whole context. Not thread-safe: one session, one caller.
 * Encryption at rest and windowing belong to the KV store (a later layer),
 * not here.
 */
#ifndef INF_KV_H
#define INF_KV_H

#include "model.h"
#include "status.h"

typedef struct {
    int n_layers;
    int kv_dim;   /* n_kv_heads * head_dim */
    int max_len;  /* hard limit: the model's context or the user's cap */
    int capacity; /* positions allocated per layer */
    int len;      /* valid positions */
    float **k;    /* [n_layers] -> [capacity][kv_dim] */
    float **v;
} inf_kv;

inf_status inf_kv_init(inf_kv *kv, const inf_model_config *cfg, int max_len, inf_error *err);
void inf_kv_free(inf_kv *kv);
/* Makes room for positions [0, need). Fails (naming the limit) beyond max_len. */
inf_status inf_kv_reserve(inf_kv *kv, int need, inf_error *err);
/* Forgets positions >= pos (pos <= len). */
void inf_kv_truncate(inf_kv *kv, int pos);

#endif
