/* jobs.h — the worker's in-memory job table and its fixed thread pool.
 *
 * A front door submits the text of a job's input; one of N pool threads
 * runs the job function on it (in production inf_handle); the front door
 * then reads the job's status, waits for it with a timeout (/runsync), or
 * cancels it. Statuses carry RunPod's names.
 *
 * Bounds, so that memory stays bounded under any load:
 *   - at most max_queue jobs wait; jobs_submit refuses more (INF_E_BUSY);
 *   - a finished job is kept for result_ttl_ms, among the newest
 *     max_results finished jobs, and while the finished outputs together
 *     stay under max_result_bytes; then it is forgotten (INF_E_NOTFOUND).
 *
 * Cancel and timeouts: a queued job is cancelled and never runs. A running
 * job cannot be interrupted (the job function has no cancel point), so it
 * is marked CANCELLED (or TIMED_OUT once it has run exec_timeout_ms) at
 * once, waiters are woken, and its output is thrown away when the function
 * returns. The pool thread stays busy until then.
 *
 * Shutdown: jobs_shutdown stops accepting, fails every queued job, lets
 * running jobs finish within a drain time, then joins the threads.
 *
 * Ownership: the table copies the input. A jobs_result holds a reference to
 * its job; result.output stays valid until jobs_result_release.
 * Thread-safety: every function may be called from any thread at any time,
 * except jobs_destroy (once, when no other call is running or will run).
 */
#ifndef INF_JOBS_H
#define INF_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum {
    JOBS_IN_QUEUE = 0,
    JOBS_IN_PROGRESS,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_CANCELLED,
    JOBS_TIMED_OUT,
} jobs_state;

/* RunPod's name of a state ("IN_QUEUE", ...). Never NULL. */
const char *jobs_state_name(jobs_state s);
/* 1 for COMPLETED, FAILED, CANCELLED and TIMED_OUT. */
int jobs_state_final(jobs_state s);

/* The job function: same contract as inf_handle (handler.h). Returns
 * malloc'd JSON text (the table frees it) and sets *http_status; a status
 * of 200..299 means COMPLETED, anything else FAILED. NULL counts as a
 * failure with status 500. Called concurrently from the pool threads. */
typedef char *(*jobs_fn)(void *ctx, const char *input, size_t len, int *http_status);

typedef struct {
    unsigned threads;         /* pool threads; 0 = 1 */
    unsigned max_queue;       /* waiting jobs; 0 = 256 */
    unsigned max_results;     /* finished jobs kept; 0 = 1024 */
    size_t max_result_bytes;  /* finished outputs kept, bytes; 0 = 256 MiB */
    unsigned result_ttl_ms;   /* finished jobs kept this long; 0 = 30 minutes */
    unsigned exec_timeout_ms; /* a running job becomes TIMED_OUT after this; 0 = never */
    unsigned queue_ttl_ms;    /* a job waiting longer becomes TIMED_OUT; 0 = never */
} jobs_config;

typedef struct jobs_table jobs_table;

/* "job-" + 32 lowercase hex digits (128 random bits). */
#define JOBS_ID_MAX 36

/* What a job looks like now. output: the job function's reply for
 * COMPLETED and FAILED, a table-made {"error":{"code","message"}} for
 * TIMED_OUT and for jobs failed by shutdown, NULL otherwise. */
typedef struct {
    char id[JOBS_ID_MAX + 1];
    jobs_state state;
    int http_status;    /* the job function's (or the table's) status; 0 before the end */
    const char *output; /* NUL-terminated; valid until jobs_result_release */
    size_t output_len;
    void *ref_;         /* the job reference; private */
} jobs_result;

typedef struct {
    uint64_t completed;   /* ever */
    uint64_t failed;      /* ever: FAILED and TIMED_OUT */
    uint64_t cancelled;   /* ever */
    unsigned in_queue;    /* now */
    unsigned in_progress; /* now */
    unsigned workers_running; /* pool threads inside the job function now */
    unsigned workers_idle;
} jobs_stats;

/* Starts the pool. cfg may be NULL (all defaults). */
inf_status jobs_create(const jobs_config *cfg, jobs_fn fn, void *ctx, jobs_table **out,
                       inf_error *err);

/* Queues a copy of input[0..len) and writes the new job's id to id_out.
 * INF_E_BUSY when the queue is full or the table is shutting down (the
 * message says which); INF_E_NOMEM; INF_E_IO if no random id could be made. */
inf_status jobs_submit(jobs_table *t, const char *input, size_t len, char id_out[JOBS_ID_MAX + 1],
                       inf_error *err);

/* Waits up to timeout_ms (0 = do not wait) for the job to reach a final
 * state and fills *out with its state then (final or not). INF_E_NOTFOUND
 * for an unknown or forgotten id. On INF_OK, release *out. */
inf_status jobs_wait(jobs_table *t, const char *id, unsigned timeout_ms, jobs_result *out,
                     inf_error *err);
void jobs_result_release(jobs_table *t, jobs_result *r);

/* Cancels a queued or running job; a finished job keeps its state. Writes
 * the job's state after the call. INF_E_NOTFOUND for an unknown id. */
inf_status jobs_cancel(jobs_table *t, const char *id, jobs_state *state_out, inf_error *err);

void jobs_get_stats(jobs_table *t, jobs_stats *out);

/* Stops accepting (jobs_submit answers INF_E_BUSY), fails every queued job
 * (503 "shutting_down"), waits up to drain_ms for running jobs to return,
 * and joins the pool. INF_OK when every thread was joined; INF_E_BUSY when
 * a job function was still running at the deadline: those jobs are marked
 * FAILED (their waiters return) and the threads are left to finish (call
 * jobs_destroy to wait for them, or exit the process). Safe to call twice. */
inf_status jobs_shutdown(jobs_table *t, unsigned drain_ms, inf_error *err);

/* jobs_shutdown with no deadline, then frees everything. NULL is a no-op.
 * Outstanding jobs_results must have been released. */
void jobs_destroy(jobs_table *t);

#endif
