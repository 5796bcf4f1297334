/* transport.h — the client's side of the wire: one session with a remote
 * worker (the dev server, RunPod load-balancer mode, or RunPod's /runsync).
 *
 * A session holds a fresh 128-bit session id, an ephemeral X25519 key pair
 * (its public half travels with every request, so any worker of a fleet can
 * serve it), the per-session KV key the worker encrypts the cache with, and
 * the step counter. Every attempt is sealed under a new step, so a retry
 * never reuses a nonce; retries are safe because a request names its `pos`
 * and the worker truncates the session's cache there first.
 *
 * One libcurl easy handle per session: the connection is kept alive and
 * reused. Not thread-safe: one session, one thread. Secrets are wiped on
 * close.
 */
#ifndef INF_TRANSPORT_H
#define INF_TRANSPORT_H

#include "crypto.h"
#include "profile.h"
#include "status.h"
#include "wire.h"

typedef struct {
    const char *endpoint;   /* base URL: POST {endpoint}/runsync, GET {endpoint}/status/{id} */
    const char *runpod_id;  /* or a RunPod endpoint id ($RUNPOD_ENDPOINT_BASE_URL overrides the API base) */
    const char *api_key;    /* bearer token (INFEMERAL_API_KEY / RUNPOD_API_KEY), may be NULL */
    keys_public worker_pub; /* pinned worker key */
    wire_dtype dtype;       /* states on the wire (default f16) */
    long timeout_ms;        /* one HTTP exchange (default 120000) */
    int retries;            /* extra attempts after a network error or a 5xx/429 (default 3) */
    int max_tokens_per_request; /* 0: derived from the payload limit */
} inf_remote_opts;

typedef struct {
    /* summed over the session's requests, as the profile's phases of the same
     * names (client/profile.h): serialize (f32 -> wire dtype, JSON, base64),
     * seal (zstd + AES-GCM), network (HTTP, polling, retry back-off), open
     * (parse, decrypt, wire dtype -> f32) */
    double serialize_s, seal_s, network_s, open_s;
    long requests, retries;
    size_t bytes_sent, bytes_received;
} inf_remote_stats;

typedef struct inf_remote inf_remote;

void inf_remote_opts_init(inf_remote_opts *o);
inf_status inf_remote_open(const inf_remote_opts *o, int dim, inf_remote **out, inf_error *err);
void inf_remote_close(inf_remote *r);
/* The layers callback for inf_cloaked_layers (client/generate.h): sends
 * x [n, dim] (already cloaked) for positions pos.., replaces it with the
 * worker's output. Splits n into requests that fit the payload limit. */
inf_status inf_remote_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);
const inf_remote_stats *inf_remote_get_stats(const inf_remote *r);
/* Records serialize/seal/network/open into prof's open step from now on
 * (NULL: off). The profile is borrowed: it must outlive its use here. */
void inf_remote_set_profile(inf_remote *r, inf_profile *prof);

#endif
