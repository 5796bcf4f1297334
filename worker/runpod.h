/* runpod.h — RunPod queue mode: the libcurl job loop that takes jobs from
 * RunPod's job queue, runs each through the request handler, and posts the
 * result back. Nothing else lives here (no HTTP server, no model code).
 *
 * The protocol is RunPod's serverless worker protocol as runpod-python 1.12
 * speaks it (issue 5 quotes it; deploy/README.md sums it up):
 *
 *   take:      GET  {RUNPOD_WEBHOOK_GET_JOB}&job_in_progress=0|1
 *                   ($ID -> worker id; "/job-take-batch/" URLs also get
 *                   &batch_size=<free slots> and answer a JSON list)
 *              200 job {"id","input",...} or a list of them; 204 or 400: no
 *              job; 429: wait 5 s; anything else: log, back off, keep going.
 *              A long poll: up to take_timeout_ms (90 s).
 *   result:    POST {RUNPOD_WEBHOOK_POST_OUTPUT}&isStream=false
 *                   ($RUNPOD_POD_ID -> worker id, $ID -> job id), body
 *                   {"output": <handler reply>} or {"error": "code: message"},
 *                   plus "stopPod": true when this worker must be replaced;
 *                   transport errors and 5xx are retried (post_attempts).
 *   heartbeat: GET  {RUNPOD_WEBHOOK_PING}&job_id=<ids in flight, comma-separated>
 *                   every ping_interval_ms, on its own thread.
 *   Every call carries "Authorization: <RUNPOD_AI_API_KEY>" (raw, no Bearer).
 *
 * Threads: rp_run's caller takes jobs (one long poll at a time, only while
 * fewer than `concurrency` jobs are in flight); `concurrency` job threads run
 * the handler and post results; one heartbeat thread. Each has its own
 * libcurl handle, kept for the worker's life so connections are reused.
 *
 * Shutdown: rp_stop (from any thread, e.g. main's signal thread) stops the
 * taking: a long poll still waiting for its answer is abandoned (one whose
 * answer has started to arrive is read to the end, so a job RunPod has
 * handed out is never dropped). Every job already taken is run and its
 * result posted; heartbeats go on until then; rp_run then returns INF_OK.
 *
 * Fatal errors: a handler reply whose error code is "device" (the GPU or
 * backend failed; later requests cannot succeed on this worker) is posted
 * with "stopPod": true, jobs already taken but not started are failed the
 * same way, and rp_run returns INF_E_IO. With cfg.startup_error set (the
 * model did not load), the worker takes one job, fails it with that message
 * and "stopPod": true, and returns INF_E_IO: the caller sees why instead of
 * a job that waits in the queue until it times out.
 *
 * Ownership: rp_create copies every string of the config. Thread-safety:
 * rp_stop and rp_get_stats may be called from any thread while rp_run runs;
 * the handler function is called from up to `concurrency` threads at once.
 */
#ifndef INF_RUNPOD_H
#define INF_RUNPOD_H

#include <stddef.h>

#include "status.h"

typedef struct {
    const char *get_job;     /* RUNPOD_WEBHOOK_GET_JOB (required) */
    const char *post_output; /* RUNPOD_WEBHOOK_POST_OUTPUT (required) */
    const char *post_stream; /* RUNPOD_WEBHOOK_POST_STREAM (unused: replies are not streamed) */
    const char *ping;        /* RUNPOD_WEBHOOK_PING (NULL: no heartbeat) */
    const char *api_key;     /* RUNPOD_AI_API_KEY (NULL: no Authorization header) */
    const char *pod_id;      /* RUNPOD_POD_ID (NULL: a random id, as the SDK does) */
    unsigned concurrency;    /* jobs in flight at once (default 1) */
    long ping_interval_ms;   /* RUNPOD_PING_INTERVAL (default 10000) */
    long take_timeout_ms;    /* long-poll limit (default 90000) */
    long busy_wait_ms;       /* after a 429 on take (default 5000) */
    long backoff_ms;         /* first back-off after a failed take (default 1000), doubling */
    long backoff_max_ms;     /* ... up to this (default 30000) */
    long post_timeout_ms;    /* one result post (default 60000) */
    int post_attempts;       /* tries per result post (default 4) */
    long post_retry_ms;      /* first pause between them (default 500), doubling */
    const char *startup_error; /* see "Fatal errors" above */
    int quiet;               /* no per-job log lines (errors are always logged) */
} rp_config;

/* The handler call: reply JSON (malloc'd), *http_status 200 on success. */
typedef char *(*rp_handle_fn)(void *ctx, const char *input, size_t len, int *http_status);

typedef struct {
    long takes, taken, no_job, take_errors, busy; /* take calls, jobs taken, 204/400, errors, 429 */
    long done, failed;                           /* results posted: output, error */
    long post_retries, posts_lost;               /* retried posts, posts given up on */
    long pings, ping_errors;
} rp_stats;

typedef struct rp_worker rp_worker;

/* Fills the defaults above. */
void rp_config_defaults(rp_config *c);
/* Defaults, then the RUNPOD_* variables and RUNPOD_CONCURRENCY. The strings
 * point into the environment. Fails naming the variable that is missing or
 * malformed. */
inf_status rp_config_from_env(rp_config *c, inf_error *err);
/* Replaces $RUNPOD_POD_ID with pod_id and $ID with id (both URL-escaped) in
 * a webhook template (malloc'd; NULL when out of memory). */
char *rp_expand(const char *tmpl, const char *pod_id, const char *id);

inf_status rp_create(const rp_config *c, rp_handle_fn fn, void *ctx, rp_worker **out, inf_error *err);
/* Runs until rp_stop (INF_OK) or a fatal error (INF_E_IO, err says which). */
inf_status rp_run(rp_worker *w, inf_error *err);
void rp_stop(rp_worker *w);
void rp_get_stats(rp_worker *w, rp_stats *out);
/* Frees the worker (rp_run must have returned). NULL is a no-op. */
void rp_destroy(rp_worker *w);

#endif
