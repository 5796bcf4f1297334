/* loopback.h — `infemeral bench --client-only`: the network replaced by a
 * worker in this process, so the client's own cost is measured alone.
 *
 * Every call does what a real exchange does on both ends, minus HTTP:
 *   client: f32 -> wire dtype, seal (zstd? + AES-256-GCM under a fresh
 *           X25519 session), the request JSON           (serialize, seal)
 *   worker: parse, derive the session keys, open, the layers (a server
 *           bundle on the CPU backend, or none: the states go back as they
 *           came), seal the reply, reply JSON           (recorded as "network")
 *   client: parse and open the reply, wire dtype -> f32 (open)
 * The profile phases are the ones the HTTP transport records, so the
 * client's phases compare one to one with a remote run; "network" here is
 * the in-process worker's time.
 *
 * Ownership: a loopback owns its keys and wipes them on close. One thread.
 */
#ifndef INF_LOOPBACK_H
#define INF_LOOPBACK_H

#include <stdint.h>

#include "crypto.h"
#include "generate.h"
#include "profile.h"
#include "status.h"
#include "wire.h"

typedef struct {
    int dim;
    wire_dtype dtype;
    inf_layers_fn inner; /* the worker's layers, or NULL: echo */
    void *inner_ctx;
    inf_profile *prof;   /* NULL: off */
    keys_pair worker, eph;
    seal_keys ck;        /* client's view of the session keys */
    uint8_t sid[SEAL_SID_BYTES];
    char sid_hex[SEAL_SID_HEX + 1];
    uint8_t kv_key[WIRE_KV_KEY_BYTES];
    uint64_t step;
} inf_loopback;

/* A fresh worker key, session and KV key. */
inf_status inf_loopback_open(inf_loopback *lb, int dim, wire_dtype dtype, inf_layers_fn inner, void *inner_ctx,
                             inf_profile *prof, inf_error *err);
/* The layers callback (for inf_cloaked_layers, like inf_remote_layers_fn). */
inf_status inf_loopback_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);
void inf_loopback_close(inf_loopback *lb);

#endif
