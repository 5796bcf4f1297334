/* jobs.c — in-memory job table + fixed pthread pool (see jobs.h).
 *
 * One mutex guards everything. Every job sits on exactly one of three
 * lists, through its `link`: the queue (IN_QUEUE, FIFO), the running list
 * (IN_PROGRESS) or the done list (final states, in the order they ended;
 * eviction takes from its head). Lookups walk the three lists; they hold
 * at most max_queue + threads + max_results jobs.
 *
 * A job is freed when its last reference goes: the lists hold one, a pool
 * thread running it holds one, and every jobs_result holds one. That is
 * what makes it safe to cancel or time out a running job (it moves to the
 * done list and may even be evicted while its thread still runs it).
 *
 * Time-based transitions (exec timeout, queue TTL, result TTL) are applied
 * lazily by sweep() on every call into the table; a waiter in jobs_wait
 * wakes up at the job's exec deadline to apply it.
 */
#include "jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

typedef struct jlink {
    struct jlink *prev, *next;
} jlink;

typedef struct job {
    jlink link;           /* first member: a jlink* is a job* */
    char id[JOBS_ID_MAX + 1];
    jobs_state state;
    int http_status;
    char *input;
    size_t input_len;
    char *output;
    size_t output_len;
    uint64_t t_submit, t_start, t_end; /* monotonic ms */
    unsigned refs;
} job;

struct jobs_table {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* pool threads: the queue changed or stopping */
    pthread_cond_t state_cv; /* anyone: some job or thread changed state */
    jlink queue, running, done;
    unsigned n_queue, n_running, n_done;
    size_t done_bytes;
    unsigned busy;  /* threads inside fn */
    unsigned alive; /* threads not yet returned */
    uint64_t completed, failed, cancelled;
    int stopping;
    int joined;
    jobs_fn fn;
    void *ctx;
    jobs_config cfg;
    pthread_t *threads;
    unsigned n_threads;
};

static const char *const state_names[] = {"IN_QUEUE", "IN_PROGRESS", "COMPLETED",
                                          "FAILED", "CANCELLED", "TIMED_OUT"};

const char *jobs_state_name(jobs_state s)
{
    return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : "UNKNOWN";
}

int jobs_state_final(jobs_state s)
{
    return s == JOBS_COMPLETED || s == JOBS_FAILED || s == JOBS_CANCELLED || s == JOBS_TIMED_OUT;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void list_init(jlink *h) { h->prev = h->next = h; }
static int list_empty(const jlink *h) { return h->next == h; }
static void list_remove(jlink *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}
static void list_push_back(jlink *h, jlink *l)
{
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}

static void job_unref_locked(job *j)
{
    if (--j->refs == 0) {
        free(j->input);
        free(j->output);
        free(j);
    }
}

/* A table-made reply in the handler's error shape; messages are fixed text. */
static void set_table_error(job *j, int http_status, const char *code, const char *message)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code,
                     message);
    free(j->output);
    j->output = NULL;
    j->output_len = 0;
    if (n > 0 && (size_t)n < sizeof buf && (j->output = malloc((size_t)n + 1)) != NULL) {
        memcpy(j->output, buf, (size_t)n + 1);
        j->output_len = (size_t)n;
    }
    j->http_status = http_status;
}

static void evict_locked(jobs_table *t, job *j)
{
    list_remove(&j->link);
    t->n_done--;
    t->done_bytes -= j->output_len;
    job_unref_locked(j);
}

/* Moves j (on the queue or the running list) to the done list in state s.
 * The caller has set j->output / http_status as wanted. */
static void finish_locked(jobs_table *t, job *j, jobs_state s)
{
    if (j->state == JOBS_IN_QUEUE)
        t->n_queue--;
    else if (j->state == JOBS_IN_PROGRESS)
        t->n_running--;
    list_remove(&j->link);
    j->state = s;
    j->t_end = now_ms();
    if (s == JOBS_COMPLETED)
        t->completed++;
    else if (s == JOBS_FAILED || s == JOBS_TIMED_OUT)
        t->failed++;
    else if (s == JOBS_CANCELLED)
        t->cancelled++;
    free(j->input); /* never needed again */
    j->input = NULL;
    list_push_back(&t->done, &j->link);
    t->n_done++;
    t->done_bytes += j->output_len;
    /* Keep the newest finished jobs within the count and byte bounds (the
     * one that just ended stays even if it alone is over the byte bound). */
    while (t->n_done > t->cfg.max_results ||
           (t->done_bytes > t->cfg.max_result_bytes && t->done.next != &j->link))
        evict_locked(t, (job *)t->done.next);
    pthread_cond_broadcast(&t->state_cv);
}

static void sweep_locked(jobs_table *t)
{
    uint64_t now = now_ms();
    if (t->cfg.exec_timeout_ms) {
        for (jlink *l = t->running.next, *next; l != &t->running; l = next) {
            next = l->next;
            job *j = (job *)l;
            if (now - j->t_start >= t->cfg.exec_timeout_ms) {
                set_table_error(j, 504, "timed_out", "the job ran longer than the execution timeout");
                finish_locked(t, j, JOBS_TIMED_OUT);
            }
        }
    }
    if (t->cfg.queue_ttl_ms) {
        for (jlink *l = t->queue.next, *next; l != &t->queue; l = next) {
            next = l->next;
            job *j = (job *)l;
            if (now - j->t_submit >= t->cfg.queue_ttl_ms) {
                set_table_error(j, 504, "timed_out", "the job waited in the queue longer than its TTL");
                finish_locked(t, j, JOBS_TIMED_OUT);
            }
        }
    }
    while (!list_empty(&t->done) && now - ((job *)t->done.next)->t_end >= t->cfg.result_ttl_ms)
        evict_locked(t, (job *)t->done.next);
}

static job *find_in(jlink *h, const char *id)
{
    for (jlink *l = h->next; l != h; l = l->next)
        if (strcmp(((job *)l)->id, id) == 0)
            return (job *)l;
    return NULL;
}

static job *find_locked(jobs_table *t, const char *id)
{
    job *j;
    if (!id || strlen(id) > JOBS_ID_MAX)
        return NULL;
    if ((j = find_in(&t->running, id)) || (j = find_in(&t->queue, id)) || (j = find_in(&t->done, id)))
        return j;
    return NULL;
}

static void *pool_main(void *arg)
{
    jobs_table *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stopping && list_empty(&t->queue))
            pthread_cond_wait(&t->work_cv, &t->mu);
        sweep_locked(t); /* applies the queue TTL before we pick */
        if (list_empty(&t->queue)) {
            if (t->stopping)
                break;
            continue;
        }
        job *j = (job *)t->queue.next;
        list_remove(&j->link);
        t->n_queue--;
        j->state = JOBS_IN_PROGRESS;
        j->t_start = now_ms();
        list_push_back(&t->running, &j->link);
        t->n_running++;
        j->refs++;
        t->busy++;
        pthread_cond_broadcast(&t->state_cv);
        pthread_mutex_unlock(&t->mu);

        int status = 500;
        char *out = t->fn(t->ctx, j->input, j->input_len, &status);

        pthread_mutex_lock(&t->mu);
        t->busy--;
        if (j->state == JOBS_IN_PROGRESS) {
            if (out) {
                j->output = out;
                j->output_len = strlen(out);
                j->http_status = status;
            } else {
                set_table_error(j, 500, "internal", "the request handler returned no reply");
            }
            finish_locked(t, j, out && status >= 200 && status < 300 ? JOBS_COMPLETED : JOBS_FAILED);
        } else {
            free(out); /* cancelled, timed out or failed by shutdown meanwhile */
        }
        job_unref_locked(j);
        pthread_cond_broadcast(&t->state_cv);
    }
    t->alive--;
    pthread_cond_broadcast(&t->state_cv);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

inf_status jobs_create(const jobs_config *cfg, jobs_fn fn, void *ctx, jobs_table **out,
                       inf_error *err)
{
    *out = NULL;
    if (!fn)
        return inf_fail(err, INF_E_ARG, "jobs_create: no job function");
    jobs_table *t = calloc(1, sizeof *t);
    if (!t)
        return inf_fail(err, INF_E_NOMEM, "jobs_create: out of memory");
    if (cfg)
        t->cfg = *cfg;
    if (!t->cfg.threads)
        t->cfg.threads = 1;
    if (!t->cfg.max_queue)
        t->cfg.max_queue = 256;
    if (!t->cfg.max_results)
        t->cfg.max_results = 1024;
    if (!t->cfg.max_result_bytes)
        t->cfg.max_result_bytes = (size_t)256 << 20;
    if (!t->cfg.result_ttl_ms)
        t->cfg.result_ttl_ms = 30u * 60u * 1000u;
    t->fn = fn;
    t->ctx = ctx;
    list_init(&t->queue);
    list_init(&t->running);
    list_init(&t->done);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work_cv, &ca);
    pthread_cond_init(&t->state_cv, &ca);
    pthread_condattr_destroy(&ca);

    t->threads = calloc(t->cfg.threads, sizeof *t->threads);
    if (!t->threads) {
        jobs_destroy(t);
        return inf_fail(err, INF_E_NOMEM, "jobs_create: out of memory");
    }
    for (unsigned i = 0; i < t->cfg.threads; i++) {
        pthread_mutex_lock(&t->mu);
        t->alive++;
        pthread_mutex_unlock(&t->mu);
        int rc = pthread_create(&t->threads[i], NULL, pool_main, t);
        if (rc != 0) {
            pthread_mutex_lock(&t->mu);
            t->alive--;
            pthread_mutex_unlock(&t->mu);
            jobs_destroy(t);
            return inf_fail(err, INF_E_NOMEM, "jobs_create: cannot start pool thread %u of %u: %s",
                            i + 1, t->cfg.threads, strerror(rc));
        }
        t->n_threads++;
    }
    *out = t;
    return INF_OK;
}

static int make_id(char id[JOBS_ID_MAX + 1])
{
    unsigned char r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(id, "job-", 4);
    for (size_t i = 0; i < sizeof r; i++) {
        id[4 + 2 * i] = hex[r[i] >> 4];
        id[5 + 2 * i] = hex[r[i] & 15];
    }
    id[JOBS_ID_MAX] = '\0';
    return 1;
}

inf_status jobs_submit(jobs_table *t, const char *input, size_t len, char id_out[JOBS_ID_MAX + 1],
                       inf_error *err)
{
    id_out[0] = '\0';
    job *j = calloc(1, sizeof *j);
    if (!j)
        return inf_fail(err, INF_E_NOMEM, "out of memory for a new job");
    if (len == SIZE_MAX || !(j->input = malloc(len + 1))) {
        free(j);
        return inf_fail(err, INF_E_NOMEM, "out of memory for a job input of %zu bytes", len);
    }
    if (len)
        memcpy(j->input, input, len);
    j->input[len] = '\0';
    j->input_len = len;
    j->refs = 1;
    list_init(&j->link);
    if (!make_id(j->id)) {
        job_unref_locked(j);
        return inf_fail(err, INF_E_IO, "cannot read random bytes for a job id: %s", strerror(errno));
    }

    pthread_mutex_lock(&t->mu);
    sweep_locked(t);
    if (t->stopping || t->n_queue >= t->cfg.max_queue) {
        int stopping = t->stopping;
        unsigned q = t->n_queue;
        pthread_mutex_unlock(&t->mu);
        job_unref_locked(j);
        if (stopping)
            return inf_fail(err, INF_E_BUSY, "the worker is shutting down");
        return inf_fail(err, INF_E_BUSY, "the job queue is full (%u jobs waiting)", q);
    }
    j->state = JOBS_IN_QUEUE;
    j->t_submit = now_ms();
    list_push_back(&t->queue, &j->link);
    t->n_queue++;
    memcpy(id_out, j->id, sizeof j->id);
    pthread_cond_signal(&t->work_cv);
    pthread_cond_broadcast(&t->state_cv);
    pthread_mutex_unlock(&t->mu);
    return INF_OK;
}

static void fill_result(job *j, jobs_result *out)
{
    memcpy(out->id, j->id, sizeof out->id);
    out->state = j->state;
    out->http_status = jobs_state_final(j->state) ? j->http_status : 0;
    out->output = jobs_state_final(j->state) ? j->output : NULL;
    out->output_len = out->output ? j->output_len : 0;
    out->ref_ = j;
    j->refs++;
}

inf_status jobs_wait(jobs_table *t, const char *id, unsigned timeout_ms, jobs_result *out,
                     inf_error *err)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    uint64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        sweep_locked(t);
        job *j = find_locked(t, id);
        if (!j) {
            pthread_mutex_unlock(&t->mu);
            return inf_fail(err, INF_E_NOTFOUND, "no job with id \"%.64s\" (unknown or expired)",
                            id ? id : "");
        }
        uint64_t now = now_ms();
        if (jobs_state_final(j->state) || now >= deadline) {
            fill_result(j, out);
            pthread_mutex_unlock(&t->mu);
            return INF_OK;
        }
        uint64_t wake = deadline;
        if (j->state == JOBS_IN_PROGRESS && t->cfg.exec_timeout_ms &&
            j->t_start + t->cfg.exec_timeout_ms < wake)
            wake = j->t_start + t->cfg.exec_timeout_ms;
        if (j->state == JOBS_IN_QUEUE && t->cfg.queue_ttl_ms &&
            j->t_submit + t->cfg.queue_ttl_ms < wake)
            wake = j->t_submit + t->cfg.queue_ttl_ms;
        struct timespec ts = {.tv_sec = (time_t)(wake / 1000u),
                              .tv_nsec = (long)(wake % 1000u) * 1000000L};
        /* The job may be freed while we sleep; it is looked up again. */
        pthread_cond_timedwait(&t->state_cv, &t->mu, &ts);
    }
}

void jobs_result_release(jobs_table *t, jobs_result *r)
{
    if (!r || !r->ref_)
        return;
    pthread_mutex_lock(&t->mu);
    job_unref_locked(r->ref_);
    pthread_mutex_unlock(&t->mu);
    r->ref_ = NULL;
    r->output = NULL;
}

inf_status jobs_cancel(jobs_table *t, const char *id, jobs_state *state_out, inf_error *err)
{
    pthread_mutex_lock(&t->mu);
    sweep_locked(t);
    job *j = find_locked(t, id);
    if (!j) {
        pthread_mutex_unlock(&t->mu);
        return inf_fail(err, INF_E_NOTFOUND, "no job with id \"%.64s\" (unknown or expired)",
                        id ? id : "");
    }
    if (!jobs_state_final(j->state))
        finish_locked(t, j, JOBS_CANCELLED);
    if (state_out)
        *state_out = j->state;
    pthread_mutex_unlock(&t->mu);
    return INF_OK;
}

void jobs_get_stats(jobs_table *t, jobs_stats *out)
{
    pthread_mutex_lock(&t->mu);
    sweep_locked(t);
    out->completed = t->completed;
    out->failed = t->failed;
    out->cancelled = t->cancelled;
    out->in_queue = t->n_queue;
    out->in_progress = t->n_running;
    out->workers_running = t->busy;
    out->workers_idle = t->alive > t->busy ? t->alive - t->busy : 0;
    pthread_mutex_unlock(&t->mu);
}

inf_status jobs_shutdown(jobs_table *t, unsigned drain_ms, inf_error *err)
{
    pthread_mutex_lock(&t->mu);
    if (t->joined) {
        pthread_mutex_unlock(&t->mu);
        return INF_OK;
    }
    t->stopping = 1;
    while (!list_empty(&t->queue)) {
        job *j = (job *)t->queue.next;
        set_table_error(j, 503, "shutting_down", "the worker shut down before the job started");
        finish_locked(t, j, JOBS_FAILED);
    }
    pthread_cond_broadcast(&t->work_cv);
    uint64_t deadline = now_ms() + drain_ms;
    while (t->alive > 0 && (drain_ms == UINT32_MAX || now_ms() < deadline)) {
        if (drain_ms == UINT32_MAX) {
            pthread_cond_wait(&t->state_cv, &t->mu);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000u),
                                  .tv_nsec = (long)(deadline % 1000u) * 1000000L};
            pthread_cond_timedwait(&t->state_cv, &t->mu, &ts);
        }
    }
    if (t->alive > 0) {
        unsigned busy = t->busy;
        while (!list_empty(&t->running)) {
            job *j = (job *)t->running.next;
            set_table_error(j, 503, "shutting_down", "the worker shut down before the job finished");
            finish_locked(t, j, JOBS_FAILED);
        }
        pthread_mutex_unlock(&t->mu);
        return inf_fail(err, INF_E_BUSY, "%u job(s) still running after %u ms of draining", busy,
                        drain_ms);
    }
    pthread_mutex_unlock(&t->mu);
    for (unsigned i = 0; i < t->n_threads; i++)
        pthread_join(t->threads[i], NULL);
    pthread_mutex_lock(&t->mu);
    t->joined = 1;
    pthread_mutex_unlock(&t->mu);
    return INF_OK;
}

void jobs_destroy(jobs_table *t)
{
    if (!t)
        return;
    jobs_shutdown(t, UINT32_MAX, NULL);
    while (!list_empty(&t->done))
        evict_locked(t, (job *)t->done.next);
    pthread_cond_destroy(&t->work_cv);
    pthread_cond_destroy(&t->state_cv);
    pthread_mutex_destroy(&t->mu);
    free(t->threads);
    free(t);
}
