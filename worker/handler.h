/* handler.h — the worker's one request handler. Every front door (the
 * RunPod queue loop, RunPod's load-balancer mode, the local dev server)
 * calls this and nothing else; nothing about HTTP or RunPod crosses it.
 *
 * A request is the JSON text of a job's "input" (wire format v1, see
 * docs/wire.md). The reply is JSON text: the sealed reply envelope on
 * success, or {"error": {"code": "...", "message": "..."}} on failure,
 * with *http_status set to the status a front door should use (200, 400,
 * 401, 404, 409, 413, 500, 503). The handler never returns NULL (it
 * answers "out of memory" as a JSON error when it must).
 *
 * Thread-safety: inf_handle may be called concurrently from many threads;
 * requests for the same session are serialized inside the handler.
 */
#ifndef INF_HANDLER_H
#define INF_HANDLER_H

#include <stddef.h>

#include "status.h"

typedef struct inf_handler inf_handler;

/* Loads the server bundle in server_bundle_dir (model weights, worker key,
 * KV store settings from the environment) and makes a handler. Slow (the
 * model loads here); front doors report "loading" until it returns. */
inf_status inf_handler_create(const char *server_bundle_dir, inf_handler **out, inf_error *err);
/* Frees the handler (no inf_handle call may be running). NULL is a no-op. */
void inf_handler_destroy(inf_handler *h);

/* Reply JSON (malloc'd; caller frees). */
char *inf_handle(inf_handler *h, const char *input_json, size_t len, int *http_status);

/* Largest accepted input, bytes (front doors refuse bigger bodies early). */
#define INF_MAX_REQUEST_BYTES (24u << 20)

#endif
