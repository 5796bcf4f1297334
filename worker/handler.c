/* handler.c — the worker's one request handler (contract in handler.h).
 *
 * One request: parse the envelope -> derive the session keys from the
 * client's ephemeral key and ours -> open the payload (kv key + cloaked
 * states) -> under the session's lock: load the session KV, refuse a replayed
 * step, forward from `pos` (the forward truncates the cache to pos first) ->
 * commit the KV -> seal the reply. The session key and the derived keys are
 * wiped before returning; the worker keeps nothing of a session in memory
 * but what the KV store's bounded cache holds (encrypted-at-rest on disk).
 *
 * Errors change nothing: the KV store is only written after the forward
 * pass succeeded, and a commit is atomic (kvstore.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "handler.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "crypto.h"
#include "kv.h"
#include "kvstore.h"
#include "model.h"
#include "wire.h"

#define LOCK_STRIPES 64

#define GC_INTERVAL_S 60

struct inf_handler {
    inf_model *model;
    inf_backend *backend; /* CPU or CUDA (INFEMERAL_DEVICE), bound to model */
    keys_pair key;
    kvs_store *store;
    pthread_mutex_t locks[LOCK_STRIPES]; /* requests of one session run one at a time */
    pthread_mutex_t gc_lock;             /* one TTL sweep at a time */
    time_t last_gc;
    long gc_interval;                    /* seconds: min(60, the TTL) */
};

/* Expired sessions are swept at most once a minute (or once per TTL when
 * that is shorter), by whichever request
 * comes along (a worker may have no idle time of its own, and RunPod
 * workers come and go). The sweep skips sessions being committed. */
static void maybe_gc(inf_handler *h) {
    time_t now = time(NULL);
    if (now - h->last_gc < h->gc_interval || pthread_mutex_trylock(&h->gc_lock) != 0) return;
    if (now - h->last_gc >= h->gc_interval) {
        h->last_gc = now;
        int removed = 0;
        inf_error err;
        if (kvs_gc(h->store, now, &removed, &err) != INF_OK)
            fprintf(stderr, "infemeral-worker: KV clean-up: %s\n", err.msg);
        else if (removed > 0)
            fprintf(stderr, "infemeral-worker: KV clean-up removed %d expired session(s)\n", removed);
    }
    pthread_mutex_unlock(&h->gc_lock);
}

static unsigned stripe(const char *session) {
    unsigned h = 2166136261u;
    for (const char *p = session; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return h % LOCK_STRIPES;
}

inf_status inf_handler_create(const char *bundle, inf_handler **out, inf_error *err) {
    *out = NULL;
    inf_handler *h = calloc(1, sizeof *h);
    if (!h) return inf_fail(err, INF_E_NOMEM, "handler: out of memory");
    for (int i = 0; i < LOCK_STRIPES; i++) pthread_mutex_init(&h->locks[i], NULL);
    pthread_mutex_init(&h->gc_lock, NULL);
    inf_status st = keys_worker_from_env(&h->key, err);
    if (!st) st = inf_model_load_server_bundle(bundle, &h->model, err);
    if (!st) st = inf_backend_open(h->model, NULL, &h->backend, err);
    if (!st) fprintf(stderr, "infemeral-worker: backend %s\n", inf_backend_describe(h->backend));
    if (!st) {
        const char *dir = getenv("INFEMERAL_KV_DIR");
        if (!dir || !*dir) dir = "infemeral-kv";
        kvs_options o;
        kvs_options_init(&o);
        const char *ttl = getenv("INFEMERAL_KV_TTL");
        if (ttl && atol(ttl) > 0) o.ttl_seconds = atol(ttl);
        h->gc_interval = o.ttl_seconds < GC_INTERVAL_S ? o.ttl_seconds : GC_INTERVAL_S;
        st = kvs_open(&h->store, dir, &o, err);
    }
    if (st) {
        inf_handler_destroy(h);
        return st;
    }
    *out = h;
    return INF_OK;
}

void inf_handler_destroy(inf_handler *h) {
    if (!h) return;
    kvs_close(h->store);
    inf_backend_close(h->backend);
    inf_model_free(h->model);
    keys_wipe(&h->key);
    for (int i = 0; i < LOCK_STRIPES; i++) pthread_mutex_destroy(&h->locks[i]);
    pthread_mutex_destroy(&h->gc_lock);
    free(h);
}

static int http_for(inf_status st) {
    switch (st) {
    case INF_E_AUTH: return 401;
    case INF_E_NOTFOUND: return 404;
    case INF_E_RANGE: return 413;
    case INF_E_NOMEM:
    case INF_E_DEVICE:
    case INF_E_IO: return 500;
    case INF_E_BUSY: return 503;
    case INF_E_STALE: return 409;
    default: return 400;
    }
}

static char *fail_json(int *http_status, int code, const char *kind, const char *msg) {
    *http_status = code;
    char *j = wire_error_json(kind, msg);
    if (!j) j = strdup("{\"error\":{\"code\":\"nomem\",\"message\":\"out of memory\"}}");
    return j;
}

char *inf_handle(inf_handler *h, const char *json, size_t len, int *http_status) {
    inf_error err = {{0}};
    wire_msg req = {0}, rep = {0};
    seal_keys keys;
    uint8_t kv_key[WIRE_KV_KEY_BYTES], sid[SEAL_SID_BYTES];
    void *states = NULL;
    size_t bytes = 0;
    float *x = NULL;
    char *out = NULL;
    inf_kv kv = {0};
    bool have_kv = false, locked = false;
    unsigned lk = 0;
    const inf_model_config *cfg = &h->model->cfg;
    memset(&keys, 0, sizeof keys);
    memset(kv_key, 0, sizeof kv_key);

    inf_status st = wire_request_parse(json, len, INF_MAX_REQUEST_BYTES, &req, &err);
    if (!st && req.d != cfg->dim)
        st = inf_fail(&err, INF_E_SHAPE, "field 'shape': hidden size %d, this worker's model has %d",
                      (int)req.d, cfg->dim);
    if (!st && req.pos + req.n > cfg->max_seq)
        st = inf_fail(&err, INF_E_RANGE, "field 'pos': positions %lld..%lld exceed the model's context %d",
                      (long long)req.pos, (long long)(req.pos + req.n - 1), cfg->max_seq);
    if (!st) st = seal_sid_parse(req.session, sid, &err);
    if (!st) st = seal_derive_worker(&h->key, &req.epk, sid, &keys, &err);
    if (!st) st = wire_open_request(&keys, &req, kv_key, &states, &bytes, &err);
    if (st) {
        out = fail_json(http_status, http_for(st), wire_status_code(st), err.msg);
        goto done;
    }

    lk = stripe(req.session);
    pthread_mutex_lock(&h->locks[lk]);
    locked = true;
    uint64_t last_step = 0;
    st = kvs_checkout(h->store, req.session, kv_key, cfg, cfg->max_seq, &kv, &last_step, &err);
    if (st == INF_E_NOTFOUND && req.pos == 0) { /* a new session */
        st = inf_kv_init(&kv, cfg, cfg->max_seq, &err);
        have_kv = st == INF_OK;
    } else if (st == INF_OK) {
        have_kv = true;
        if (req.step <= last_step) {
            out = fail_json(http_status, 409, "replay",
                            "step is not newer than the session's last committed step (a replayed request?)");
            goto done;
        }
        if (req.pos > kv.len) {
            snprintf(err.msg, sizeof err.msg, "field 'pos' = %lld is past the session's %d cached positions",
                     (long long)req.pos, kv.len);
            out = fail_json(http_status, 409, "pos", err.msg);
            goto done;
        }
    }
    if (st) {
        if (st == INF_E_NOTFOUND)
            snprintf(err.msg, sizeof err.msg, "unknown session %s (it may have expired); start again from pos 0",
                     req.session);
        out = fail_json(http_status, http_for(st), wire_status_code(st), err.msg);
        goto done;
    }

    size_t count = (size_t)req.n * (size_t)req.d;
    x = malloc(sizeof(float) * count);
    if (!x) {
        out = fail_json(http_status, 500, "nomem", "out of memory for the hidden states");
        goto done;
    }
    wire_states_to_f32(states, count, req.dtype, x);
    /* Identity of the state kv holds, for a backend's device copy (kv.h):
     * the committed step it came from and the step it will be committed as. */
    snprintf(kv.tag, sizeof kv.tag, "%s", req.session);
    kv.version = last_step;
    kv.next_version = req.step;
    if ((st = inf_backend_forward(h->backend, &kv, x, req.n, (int)req.pos, &err))) {
        out = fail_json(http_status, http_for(st), wire_status_code(st), err.msg);
        goto done;
    }
    if ((st = kvs_commit(h->store, req.session, kv_key, &kv, (int)req.pos, req.step, &err))) {
        /* the device copy is labelled req.step, which the store may now hold
         * with another worker's rows (INF_E_STALE): drop it (kvmirror.h) */
        inf_backend_forget(h->backend, kv.tag);
        out = fail_json(http_status, http_for(st), wire_status_code(st), err.msg);
        goto done;
    }
    kvs_release(h->store, req.session, &kv); /* under the lock: the next step finds it lendable */
    have_kv = false;
    pthread_mutex_unlock(&h->locks[lk]);
    locked = false;

    wire_states_from_f32(x, count, req.dtype, states); /* same dtype and size as the request's */
    rep.n = req.n;
    rep.d = req.d;
    rep.dtype = req.dtype;
    if ((st = wire_seal_reply(&keys, &req, &rep, states, &err))) {
        out = fail_json(http_status, http_for(st), wire_status_code(st), err.msg);
        goto done;
    }
    out = wire_reply_to_json(&rep, NULL, &err);
    if (!out) out = fail_json(http_status, 500, "nomem", err.msg[0] ? err.msg : "out of memory");
    else *http_status = 200;
    maybe_gc(h);
done:
    if (have_kv) kvs_release(h->store, req.session, &kv); /* back to the cache, or wiped */
    if (locked) pthread_mutex_unlock(&h->locks[lk]);
    OPENSSL_cleanse(&keys, sizeof keys);
    OPENSSL_cleanse(kv_key, sizeof kv_key);
    if (states) {
        OPENSSL_cleanse(states, bytes);
        free(states);
    }
    if (x) {
        OPENSSL_cleanse(x, sizeof(float) * (size_t)req.n * (size_t)req.d);
        free(x);
    }
    wire_msg_free(&req);
    wire_msg_free(&rep);
    return out;
}
