/* backend.h — the one interface between "run the transformer layers" and
 * whatever runs them: the CPU reference (worker/cpu/forward.c) or the CUDA
 * backend (worker/cuda/).
 *
 * A backend runs the model's layers on the residual stream: hidden states
 * in, hidden states out, nothing about tokens, embeddings, the final norm
 * or the lm_head (those live with the client). Positions are absolute: a
 * call says "these n rows are positions pos..pos+n-1"; the backend first
 * forgets every cached position >= pos, which makes retries idempotent.
 *
 * An inf_backend is bound to ONE loaded model (which must outlive it). The
 * host inf_kv is authoritative for every backend: after a forward, kv->k/v
 * rows [0, pos+n) hold the keys and values (the CUDA backend copies the rows
 * it computed back), so the KV store persists the same thing whichever
 * backend ran. See kv.h for the tag/version fields a device-side copy is
 * keyed by.
 *
 * Choosing a device (inf_backend_open's `device`, or $INFEMERAL_DEVICE when
 * NULL):
 *   "cpu"   the CPU reference;
 *   "cuda"  the CUDA backend; fails (INF_E_UNSUPPORTED: this build has no
 *           CUDA; INF_E_DEVICE: no usable GPU) with a message naming
 *           INFEMERAL_DEVICE;
 *   "auto"  (default, also for "" or unset) CUDA when this build has it and
 *           a GPU is present, else the CPU. When a GPU is present but the
 *           model uses something the CUDA backend does not run (a dtype or
 *           shape it refuses, INF_E_UNSUPPORTED), auto falls back to the CPU
 *           and says why on stderr; any other CUDA failure is returned.
 *   anything else: INF_E_ARG naming the value.
 *
 * Thread-safety: inf_backend_forward may be called from many threads for
 * different sessions (different inf_kv). The CPU backend runs them
 * concurrently; the CUDA backend serializes them on its one stream. One
 * inf_kv must not be used by two calls at once.
 */
#ifndef INF_BACKEND_H
#define INF_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "kv.h"
#include "model.h"
#include "status.h"

typedef struct inf_backend inf_backend;

/* Counters for tests and benchmarks (all zero on the CPU backend). */
typedef struct {
    uint64_t forwards;         /* successful inf_backend_forward calls */
    uint64_t kv_rows_uploaded; /* host -> device KV positions copied (mirror misses) */
    uint64_t mirror_hits;      /* forwards that reused a device mirror as is */
    uint64_t mirror_misses;    /* forwards that (re)built a mirror from the host rows */
    uint64_t graph_captures;   /* decode-step CUDA graph captures */
    uint64_t graph_replays;    /* decode steps run by replaying the graph */
    size_t weight_bytes;       /* device bytes holding the model's weights */
    size_t scratch_bytes;      /* device bytes of activations and workspaces */
    size_t mirror_bytes;       /* device bytes held by KV mirrors now */
    size_t mirror_budget;      /* the most device bytes KV mirrors may hold */
    double last_compute_ms;    /* the last forward's layers on the device, by CUDA events
                                  (without its KV upload/download and state copies) */
} inf_backend_stats;

/* Opens a backend for model m (see "Choosing a device" above). On failure
 * *out is NULL and err says why. The CUDA backend uploads the weights here
 * (with a progress line on stderr). */
inf_status inf_backend_open(const inf_model *m, const char *device, inf_backend **out, inf_error *err);
void inf_backend_close(inf_backend *b);

/* "cpu" or "cuda". */
const char *inf_backend_name(const inf_backend *b);
/* One line for logs, e.g. "cuda: NVIDIA H100 80GB HBM3 (sm_90, 79 GiB), weights 4.2 GiB". */
const char *inf_backend_describe(const inf_backend *b);

/* x: [n, dim] f32 in/out; positions pos..pos+n-1. pos must be <= kv->len.
 * Same semantics as cpu_forward. INF_E_DEVICE means the GPU failed (the
 * worker should be replaced); the kv is then unchanged beyond rows < pos. */
inf_status inf_backend_forward(inf_backend *b, inf_kv *kv, float *x, int n, int pos, inf_error *err);

void inf_backend_get_stats(const inf_backend *b, inf_backend_stats *out);

/* Forgets any device-side copy of session `tag`'s KV (CPU: nothing to do;
 * CUDA: drops its mirror, zeroed like an eviction). The handler calls it
 * when the KV store's commit fails after a successful forward: the copy is
 * then labelled with a step the store may hold with another worker's rows
 * (a commit refused as stale, kvmirror.h), so it must not be reused. */
void inf_backend_forget(inf_backend *b, const char *tag);

/* Whether this build has the CUDA backend, and how many CUDA devices are
 * usable right now (0 with the reason in `why` when none). */
bool inf_backend_has_cuda(void);
int inf_backend_cuda_devices(char *why, size_t cap);

/* The CPU reference forward pass (worker/cpu/forward.c). */
inf_status cpu_forward(const inf_model *m, inf_kv *kv, float *x, int n, int pos, inf_error *err);

/* y = x / sqrt(mean(x^2) + eps) * g  (g NULL: no gain, as in folded bundles) */
void inf_rmsnorm(float *y, const float *x, const float *g, int dim, float eps);

#endif
