/* fake_runpod.h — a fake RunPod API for tests, served over real loopback
 * HTTP (libmicrohttpd, one thread per connection) in the test process.
 *
 * Worker side (what a queue-mode worker calls), for endpoint E and pod P:
 *   GET  /v2/E/job-take/P?&job_in_progress=0|1               (long poll)
 *   GET  /v2/E/job-take-batch/P?&job_in_progress=..&batch_size=N
 *   POST /v2/E/job-done/P/{job}?&isStream=false              {"output"} | {"error"}
 *   GET  /v2/E/ping/P?&job_id=a,b
 * It enforces the protocol (the raw Authorization header, the parameters,
 * the result shape, one accepted result per job, job_in_progress=1 while a
 * job is out) and records every breach as a "violation" line for the test
 * to assert on. Faults can be scripted on both sides (see "Faults" below).
 *
 * Client side (what `infemeral generate --runpod E` calls with
 * RUNPOD_ENDPOINT_BASE_URL=http://127.0.0.1:PORT/v2):
 *   POST /v2/E/runsync, POST /v2/E/run, GET /v2/E/status/{id}
 * with "Authorization: Bearer K". A job submitted there goes into the same
 * queue the worker takes from; /runsync waits up to runsync_wait_ms and
 * answers the job's status like RunPod (IN_QUEUE, IN_PROGRESS, COMPLETED
 * with "output", FAILED with "error", TIMED_OUT). Breaches on this side (a
 * missing or non-Bearer key, a body that is not {"input": {...}} as JSON, a
 * /status poll for a job id it never handed out) are violations too.
 *
 * Faults: each list (takes, result posts, /runsync, /status) is a script
 * played in order, one entry per call, an entry firing on the first call
 * once `at` results were accepted (so faults land in the middle of a
 * generation, not before it starts). What an entry does is its `kind`:
 *   FAKE_RP_INSTEAD  answer `code` after delay_ms instead of the real thing
 *                    (code 0: close the connection without a reply)
 *   FAKE_RP_SLOW     the real answer, delay_ms late
 *   FAKE_RP_EARLY    /runsync: queue the job and, once a worker took it,
 *                    answer {"status": "IN_PROGRESS"} (the client must poll)
 *   FAKE_RP_AFTER    /runsync: queue the job, wait until its result was
 *                    accepted, then answer `code` (0: drop): the worker
 *                    committed the step and the client never hears of it
 *   FAKE_RP_STALE    /runsync: queue the job held back and drop the
 *                    connection; the job joins the queue once the next
 *                    result is accepted, so it runs after the client's retry
 *                    (a late duplicate, as on a slow second worker)
 *   FAKE_RP_LOST     result post: drop it and every retry of it; once a
 *                    heartbeat no longer names the job, put it back in the
 *                    queue (RunPod hands out again a job whose result it
 *                    never got): the worker runs the same request twice
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef FAKE_RUNPOD_H
#define FAKE_RUNPOD_H

#include <stddef.h>

typedef struct fake_rp fake_rp;

typedef struct {
    const char *endpoint;   /* E (default "ep1") */
    const char *pod_id;     /* P (default "pod1") */
    const char *worker_key; /* the raw Authorization value workers must send (default "wk") */
    const char *client_key; /* the Bearer key clients must send (NULL: none checked) */
    int hold_ms;            /* long poll: how long an empty take waits before 204 (default 200) */
    int runsync_wait_ms;    /* how long /runsync waits for the result (default 0: answer at once) */
    const char *force_status; /* "TIMED_OUT" or "FAILED": /status answers this once the job ran */
} fake_rp_config;

enum { FAKE_RP_INSTEAD, FAKE_RP_SLOW, FAKE_RP_EARLY, FAKE_RP_AFTER, FAKE_RP_STALE, FAKE_RP_LOST };

/* A scripted fault (see "Faults" above); {code, delay_ms} alone is an
 * INSTEAD fault on the next call. */
typedef struct {
    int code;
    int delay_ms;
    int at;   /* fires on the first call once this many results were accepted */
    int kind; /* FAKE_RP_* */
} fake_rp_fault;

fake_rp *fake_rp_start(const fake_rp_config *c);
void fake_rp_stop(fake_rp *f);
unsigned fake_rp_port(fake_rp *f);
/* The webhook templates a RunPod host would put in the worker's env. */
void fake_rp_templates(fake_rp *f, int batch, char *get_job, char *post_output, char *ping,
                       size_t cap);

/* Queues a job for the worker (input: JSON text). */
void fake_rp_add_job(fake_rp *f, const char *id, const char *input_json);
/* The next takes / result posts answer these instead of the real thing. */
void fake_rp_fault_takes(fake_rp *f, const fake_rp_fault *faults, int n);
void fake_rp_fault_posts(fake_rp *f, const fake_rp_fault *faults, int n);
void fake_rp_fault_runsync(fake_rp *f, const fake_rp_fault *faults, int n);
void fake_rp_fault_status(fake_rp *f, const fake_rp_fault *faults, int n);
/* Scripted faults that have not fired yet, summed over the four lists. */
int fake_rp_faults_left(fake_rp *f);

/* Waits until n results were accepted; 1 when they were within timeout_ms. */
int fake_rp_wait_results(fake_rp *f, int n, int timeout_ms);
/* The accepted result body for job id (malloc'd copy), NULL when none. */
char *fake_rp_result(fake_rp *f, const char *id);
/* Counters. */
typedef struct {
    int takes, takes_in_progress, batch_takes, results, result_posts, pings, pings_with_ids;
    int max_out;        /* most jobs out (taken, no result yet) at once */
    int max_batch_size; /* largest batch_size asked for */
    int jobs;           /* jobs queued (by fake_rp_add_job, /run or /runsync) */
    int runsyncs, status_polls; /* client calls */
    int redelivered;    /* FAKE_RP_LOST jobs put back in the queue */
    int unfinished;     /* jobs with no accepted result (queued, out, held back or lost) */
} fake_rp_counts;
void fake_rp_get_counts(fake_rp *f, fake_rp_counts *out);
/* Every job_id list the heartbeats carried, newline-separated (malloc'd). */
char *fake_rp_ping_ids(fake_rp *f);
/* "id: error" for every accepted {"error"} result, newline-separated (malloc'd). */
char *fake_rp_error_results(fake_rp *f);
/* The ids of the "late" jobs, newline-separated (malloc'd): those handed out
 * when a job of the same session (the input's "session") with a step (its
 * "step") at least as new had been handed out before: a redelivered job, a
 * request the client's HTTP library sent twice, a stale duplicate. What the
 * worker must refuse as a replay, and only that. */
char *fake_rp_late_ids(fake_rp *f);
/* The ids of the jobs out now (taken, no result yet), comma-separated (malloc'd). */
char *fake_rp_out_ids(fake_rp *f);
/* Protocol breaches, newline-separated (malloc'd; "" when none). */
char *fake_rp_violations(fake_rp *f);

#endif
