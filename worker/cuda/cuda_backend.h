/* cuda_backend.h — the CUDA backend as plain C (no CUDA header needed), for
 * worker/backend.c. Only builds with INF_HAVE_CUDA link these functions;
 * everything above backend.h goes through inf_backend_* instead.
 *
 * Contract (backend.h has the semantics of forward):
 *  - cuda_open uploads the model's layer weights to GPU 0 once, through two
 *    pinned staging buffers so reading the mapped file overlaps the copies,
 *    printing a progress line on stderr. The model must outlive the backend.
 *  - cuda_forward runs n rows; calls are serialized by an internal mutex
 *    (one stream, one set of scratch buffers, one decode graph).
 *  - Errors: INF_E_DEVICE for a failed CUDA/cuBLAS call (the message names
 *    the call), INF_E_NOMEM when device memory runs out, INF_E_UNSUPPORTED
 *    (from cuda_open only) for a model this backend does not run.
 */
#ifndef INF_CUDA_BACKEND_H
#define INF_CUDA_BACKEND_H

#include <stddef.h>

#include "backend.h"
#include "kv.h"
#include "model.h"
#include "status.h"

typedef struct cuda_backend cuda_backend;

/* Number of usable CUDA devices; 0 with the reason in why (may be NULL). */
int cuda_device_count(char *why, size_t cap);

/* Checks that the CUDA backend can run m (dtypes, shapes); INF_E_UNSUPPORTED
 * naming the tensor or field when not. Needs no GPU. */
inf_status cuda_check_model(const inf_model *m, inf_error *err);

inf_status cuda_open(const inf_model *m, cuda_backend **out, inf_error *err);
void cuda_close(cuda_backend *b);
const char *cuda_describe(const cuda_backend *b);
inf_status cuda_forward(cuda_backend *b, inf_kv *kv, float *x, int n, int pos, inf_error *err);
void cuda_get_stats(const cuda_backend *b, inf_backend_stats *out);
/* Drops session `tag`'s device KV mirror (zeroed), see inf_backend_forget. */
void cuda_forget(cuda_backend *b, const char *tag);

#endif
