/* kv.h — a session's attention key/value cache in host memory.
 *
 * Layout per layer: K and V each [capacity][n_kv_heads*head_dim] f32, rows
 * indexed by absolute position. `len` positions are valid. The cache grows
 * on demand (doubling, up to max_len) so a short chat does not reserve the
 * model's whole context. Not thread-safe: one session, one caller.
 * Encryption at rest and windowing belong to the KV store (a later layer),
 * not here.
 *
 * Identity (for backends that keep a copy of the cache elsewhere, e.g. the
 * CUDA backend's device mirrors, worker/cuda/kvmirror.h): `tag` names the
 * session ("" = untagged) and `version` the state of rows [0, len) as the
 * KV store last committed it (the handler puts the session id and the
 * store's last committed step here after kvs_load). A backend may reuse its
 * own copy of rows [0, pos) only when its copy carries the same tag AND the
 * same version; after a successful forward its copy is labelled
 * `next_version` (the step this request will be committed as). The host
 * rows stay authoritative: a backend always writes the rows it computed
 * back into k/v, so what the store persists never depends on a device.
 * inf_kv_init clears all three (untagged: never reused).
 */
#ifndef INF_KV_H
#define INF_KV_H

#include <stdint.h>

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
    char tag[40];          /* session id, "" = untagged (see above) */
    uint64_t version;      /* the committed state rows [0, len) belong to */
    uint64_t next_version; /* the label of the state after this forward */
} inf_kv;

inf_status inf_kv_init(inf_kv *kv, const inf_model_config *cfg, int max_len, inf_error *err);
void inf_kv_free(inf_kv *kv);
/* Makes room for positions [0, need). Fails (naming the limit) beyond max_len. */
inf_status inf_kv_reserve(inf_kv *kv, int need, inf_error *err);
/* Forgets positions >= pos (pos <= len). */
void inf_kv_truncate(inf_kv *kv, int pos);

#endif
