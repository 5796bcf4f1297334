/* backend.h — the one interface between "run the transformer layers" and
 * whatever runs them (the CPU backend here; CUDA later).
 *
 * A backend runs the model's layers on the residual stream: hidden states
 * in, hidden states out, nothing about tokens, embeddings, the final norm
 * or the lm_head (those live with the client). Positions are absolute: a
 * call says "these n rows are positions pos..pos+n-1"; the backend first
 * forgets every cached position >= pos, which makes retries idempotent.
 * Backends are not thread-safe per session; different sessions (different
 * inf_kv) may run concurrently on one model.
 */
#ifndef INF_BACKEND_H
#define INF_BACKEND_H

#include "kv.h"
#include "model.h"
#include "status.h"

typedef struct {
    const char *name;
    /* x: [n, dim] in/out. pos must be <= kv->len. */
    inf_status (*forward)(const inf_model *m, inf_kv *kv, float *x, int n, int pos,
                          inf_error *err);
} inf_backend;

const inf_backend *inf_backend_cpu(void);

/* The CPU reference forward pass (worker/cpu/forward.c). */
inf_status cpu_forward(const inf_model *m, inf_kv *kv, float *x, int n, int pos, inf_error *err);

/* y = x / sqrt(mean(x^2) + eps) * g  (g NULL: no gain, as in folded bundles) */
void inf_rmsnorm(float *y, const float *x, const float *g, int dim, float eps);

#endif
