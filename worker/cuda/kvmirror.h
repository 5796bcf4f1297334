/* kvmirror.h — device copies ("mirrors") of recently used sessions' KV
 * caches, so a decode step does not re-upload the whole context.
 *
 * THE INVARIANT. The host inf_kv (what the encrypted KV store persists) is
 * authoritative. A mirror labelled (tag, version) holds, in rows [0, len),
 * exactly the host rows of session `tag` in the committed state `version`
 * (kv.h: the handler sets kv->tag = session id, kv->version = the store's
 * last committed step, kv->next_version = this request's step). Hence:
 *  - kvm_acquire reuses a mirror only when tag AND version match the
 *    caller's kv and the mirror holds at least `pos` rows; it then keeps
 *    rows [0, pos) and forgets the rest (a retry at an earlier pos costs
 *    nothing). Otherwise it uploads host rows [0, pos) (a miss: first
 *    request on this worker, another worker committed meanwhile, a failed
 *    commit, an untagged kv).
 *  - the caller computes rows [pos, pos + n) on the device and copies them
 *    back into the host kv BEFORE kvm_release labels the mirror
 *    (tag, kv->next_version) with len pos + n. If the forward fails the
 *    mirror is released unlabelled and never reused.
 *  - If the store's commit then fails, the store still says `version` while
 *    the mirror says next_version: the next request (version) misses and
 *    re-uploads. A step identifies one state: the handler refuses a step
 *    that is not newer than the committed one, so two different states
 *    never carry the same (session, step). One exception: a commit refused
 *    as stale (INF_E_STALE) because ANOTHER worker committed exactly
 *    next_version leaves the store at next_version with that worker's rows
 *    while our mirror carries the same label with ours. So the handler
 *    calls inf_backend_forget (kvm_forget) after any failed commit, which
 *    drops the session's mirrors (zeroed, as on eviction).
 * Untagged kvs (tag "") use an anonymous mirror that is always rebuilt.
 *
 * Memory: one device allocation per mirror, [n_layers][2 (K, V)][capacity]
 * [kv_dim] f32 (f32 like the host and the store: a mirror must round-trip
 * bit for bit). Capacity grows by doubling (like inf_kv_reserve) up to the
 * kv's max_len. The cache holds at most `budget` bytes and max_mirrors
 * mirrors; least recently used idle mirrors are evicted (zeroed, then
 * freed: no session's keys linger in device memory).
 *
 * Thread-safety: none; the CUDA backend calls it under its mutex, with no
 * work of an earlier forward still pending on the stream (eviction zeroes
 * memory with a synchronous cudaMemset).
 */
#ifndef INF_CUDA_KVMIRROR_H
#define INF_CUDA_KVMIRROR_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"
#include "status.h"

typedef struct kvm_cache kvm_cache;
typedef struct kvm_mirror kvm_mirror;

inf_status kvm_create(int n_layers, int kv_dim, size_t budget, int max_mirrors, kvm_cache **out, inf_error *err);
/* Zeroes and frees every mirror (synchronizes the device). */
void kvm_destroy(kvm_cache *c);

/* A mirror for kv with rows [0, pos) valid and room for `need` rows, on
 * stream s (uploads are enqueued there). *uploaded = rows copied from the
 * host (0 on a hit). On failure nothing is held. */
inf_status kvm_acquire(kvm_cache *c, const inf_kv *kv, int pos, int need, cudaStream_t s, kvm_mirror **out,
                       int *uploaded, inf_error *err);
/* ok: label the mirror (kv->tag, version) with `len` valid rows; !ok: drop
 * its label (its contents are unknown). */
void kvm_release(kvm_cache *c, kvm_mirror *m, bool ok, uint64_t version, int len);
/* Drops (zeroes and frees) every idle mirror labelled or tagged `tag`
 * (NULL or "": nothing): after a failed commit its label may name a state
 * the store holds with other rows (see THE INVARIANT). */
void kvm_forget(kvm_cache *c, const char *tag);

/* Device address of layer l's K (or V) rows [capacity][kv_dim]. */
float *kvm_rows(const kvm_mirror *m, int layer, int is_v);
int kvm_capacity(const kvm_mirror *m);
size_t kvm_bytes(const kvm_cache *c);
size_t kvm_budget(const kvm_cache *c);

#endif
