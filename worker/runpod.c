/* runpod.c — RunPod queue mode; see runpod.h for the protocol and the
 * threading. The loop is the only thing here: jobs go to the handler
 * function and come back as JSON text, untouched except for the
 * {"output": ...} / {"error": ...} wrapping RunPod wants.
 */
#include "runpod.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_PREFIX "infemeral-worker: runpod: "
#define JOB_BYTES_MAX (32u << 20) /* per job taken; RunPod's own limit is 20 MB */

/* ------------------------------------------------------------------ types */

typedef struct job {
    char *id;
    char *input; /* JSON text of the job's "input" */
    struct job *next;
} job;

typedef struct {
    char *p;
    size_t n, cap, max;
    int too_big;
} buf;

struct rp_worker {
    rp_config c;
    char *strs[8]; /* the copied config strings */
    char pod_id[64];
    char auth[1024];
    rp_handle_fn fn;
    void *ctx;

    pthread_mutex_t mu;
    pthread_cond_t cv;    /* queue, in-flight count, stop: every waiter */
    pthread_cond_t hb_cv; /* the heartbeat's sleep (CLOCK_MONOTONIC) */
    atomic_int stop;      /* no more taking */
    int taker_done;       /* job threads drain the queue, then exit */
    int hb_stop;
    int fatal;
    char fatal_msg[512];
    job *head, *tail;     /* taken, not started */
    char **ids;           /* in flight: taken, result not yet posted */
    size_t n_ids, cap_ids;
    rp_stats st;
};

/* ---------------------------------------------------------------- helpers */

static void say(const rp_worker *w, int always, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(const rp_worker *w, int always, const char *fmt, ...)
{
    if (w->c.quiet && !always)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, LOG_PREFIX "%s\n", line);
}

static void sleep_ms(long ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Sleeps up to ms, waking early when the worker stops taking. */
static void nap(rp_worker *w, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop) &&
           pthread_cond_timedwait(&w->hb_cv, &w->mu, &until) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&w->mu);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    buf *b = user;
    size_t k = size * nmemb;
    if (b->n + k + 1 > b->max) {
        b->too_big = 1;
        return 0;
    }
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        if (cap > b->max)
            cap = b->max;
        char *q = realloc(b->p, cap);
        if (!q)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, k);
    b->n += k;
    b->p[b->n] = '\0';
    return k;
}

static void buf_reset(buf *b, size_t max)
{
    b->n = 0;
    b->too_big = 0;
    b->max = max;
    if (b->p)
        b->p[0] = '\0';
}

/* Appends src to *dst (realloc'd); 0 on out of memory. */
static int append(char **dst, size_t *len, const char *src)
{
    size_t k = strlen(src);
    char *q = realloc(*dst, *len + k + 1);
    if (!q)
        return 0;
    memcpy(q + *len, src, k + 1);
    *dst = q;
    *len += k;
    return 1;
}

char *rp_expand(const char *tmpl, const char *pod_id, const char *id)
{
    char *pod = curl_easy_escape(NULL, pod_id ? pod_id : "", 0);
    char *jid = curl_easy_escape(NULL, id ? id : "", 0);
    char *out = NULL;
    size_t len = 0;
    int ok = pod && jid && append(&out, &len, "");
    for (const char *p = tmpl; ok && *p;) {
        if (!strncmp(p, "$RUNPOD_POD_ID", 14)) {
            ok = append(&out, &len, pod);
            p += 14;
        } else if (!strncmp(p, "$ID", 3)) {
            ok = append(&out, &len, id ? jid : pod);
            p += 3;
        } else {
            char one[2] = {*p++, 0};
            ok = append(&out, &len, one);
        }
    }
    curl_free(pod);
    curl_free(jid);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

/* The common options of every handle. */
static CURL *new_handle(rp_worker *w, struct curl_slist **hdr, int post)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    *hdr = NULL;
    if (w->auth[0])
        *hdr = curl_slist_append(*hdr, w->auth);
    if (post) {
        /* what runpod-python sends with its result posts: the body is JSON text */
        *hdr = curl_slist_append(*hdr, "Content-Type: application/x-www-form-urlencoded");
        *hdr = curl_slist_append(*hdr, "charset: utf-8");
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "infemeral-worker (RunPod queue mode)");
    return c;
}

/* ------------------------------------------------------------ in-flight */

static int ids_add_locked(rp_worker *w, const char *id)
{
    if (w->n_ids == w->cap_ids) {
        size_t cap = w->cap_ids ? w->cap_ids * 2 : 8;
        char **q = realloc(w->ids, cap * sizeof *q);
        if (!q)
            return 0;
        w->ids = q;
        w->cap_ids = cap;
    }
    if (!(w->ids[w->n_ids] = strdup(id)))
        return 0;
    w->n_ids++;
    return 1;
}

static void ids_remove(rp_worker *w, const char *id)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_ids; i++)
        if (!strcmp(w->ids[i], id)) {
            free(w->ids[i]);
            w->ids[i] = w->ids[--w->n_ids];
            break;
        }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* "&job_id=a,b,c" for the jobs in flight, "" when none (malloc'd). */
static char *ids_param(rp_worker *w)
{
    char *s = NULL;
    size_t len = 0;
    int ok = append(&s, &len, "");
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; ok && i < w->n_ids; i++) {
        char *e = curl_easy_escape(NULL, w->ids[i], 0);
        ok = e && append(&s, &len, i ? "," : "&job_id=") && append(&s, &len, e);
        curl_free(e);
    }
    pthread_mutex_unlock(&w->mu);
    if (!ok) {
        free(s);
        return NULL;
    }
    return s;
}

/* -------------------------------------------------------------- results */

/* The body RunPod wants for a handler reply (malloc'd). *fatal is set when
 * the reply says the worker itself is broken. */
static char *result_body(const char *reply, int http_status, int *fatal)
{
    *fatal = 0;
    if (http_status == 200 && reply) {
        size_t n = strlen(reply);
        char *s = malloc(n + 12);
        if (!s)
            return NULL;
        memcpy(s, "{\"output\":", 10);
        memcpy(s + 10, reply, n);
        memcpy(s + 10 + n, "}", 2);
        return s;
    }
    /* {"error": {"code", "message"}} -> {"error": "code: message"} */
    cJSON *r = reply ? cJSON_Parse(reply) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    char text[2048];
    if (cJSON_IsString(code) && cJSON_IsString(msg))
        snprintf(text, sizeof text, "%s: %s", code->valuestring, msg->valuestring);
    else if (cJSON_IsString(e))
        snprintf(text, sizeof text, "%s", e->valuestring);
    else
        snprintf(text, sizeof text, "internal: the handler answered HTTP %d without an error object",
                 http_status);
    *fatal = cJSON_IsString(code) && !strcmp(code->valuestring, "device");
    cJSON_Delete(r);
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (o && cJSON_AddStringToObject(o, "error", text) &&
        (!*fatal || cJSON_AddTrueToObject(o, "stopPod")))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static char *error_body(const char *msg, int stop_pod)
{
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (o && cJSON_AddStringToObject(o, "error", msg) &&
        (!stop_pod || cJSON_AddTrueToObject(o, "stopPod")))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* POST body to POST_OUTPUT for job id; transport errors and 5xx (and 429)
 * are retried. Returns 1 when RunPod took it. */
static int post_result(rp_worker *w, CURL *c, buf *b, const char *id, const char *body)
{
    char *base = rp_expand(w->c.post_output, w->pod_id, id);
    char *url = NULL;
    size_t len = 0;
    if (!base || !append(&url, &len, base) || !append(&url, &len, "&isStream=false")) {
        free(base);
        free(url);
        say(w, 1, "job %s: out of memory building the result URL", id);
        return 0;
    }
    free(base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, w->c.post_timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    int ok = 0;
    long pause = w->c.post_retry_ms;
    for (int attempt = 1;; attempt++) {
        buf_reset(b, 1u << 20);
        CURLcode rc = curl_easy_perform(c);
        long code = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        if (rc == CURLE_OK && code >= 200 && code < 300) {
            ok = 1;
            break;
        }
        int retry = rc != CURLE_OK || code >= 500 || code == 429;
        if (rc != CURLE_OK)
            say(w, 1, "job %s: posting the result failed (try %d of %d): %s", id, attempt,
                w->c.post_attempts, curl_easy_strerror(rc));
        else
            say(w, 1, "job %s: posting the result got HTTP %ld (try %d of %d)%s", id, code,
                attempt, w->c.post_attempts, retry ? "" : "; not retried");
        if (!retry || attempt >= w->c.post_attempts)
            break;
        pthread_mutex_lock(&w->mu);
        w->st.post_retries++;
        pthread_mutex_unlock(&w->mu);
        sleep_ms(pause);
        pause *= 2;
    }
    free(url);
    pthread_mutex_lock(&w->mu);
    if (!ok)
        w->st.posts_lost++;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

/* ---------------------------------------------------------- job threads */

static void set_fatal(rp_worker *w, const char *msg)
{
    pthread_mutex_lock(&w->mu);
    if (!w->fatal) {
        w->fatal = 1;
        snprintf(w->fatal_msg, sizeof w->fatal_msg, "%s", msg);
    }
    atomic_store(&w->stop, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_cond_broadcast(&w->hb_cv);
    pthread_mutex_unlock(&w->mu);
}

static void *job_thread(void *arg)
{
    rp_worker *w = arg;
    struct curl_slist *hdr;
    CURL *c = new_handle(w, &hdr, 1);
    buf b = {0};
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->taker_done)
            pthread_cond_wait(&w->cv, &w->mu);
        job *j = w->head;
        if (!j) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        int fatal = w->fatal;
        char fmsg[600];
        snprintf(fmsg, sizeof fmsg, "internal: worker stopped after a fatal error: %s", w->fatal_msg);
        pthread_mutex_unlock(&w->mu);

        char *body = NULL;
        int is_error = 1, now_fatal = 0;
        if (w->c.startup_error) {
            char m[1200];
            snprintf(m, sizeof m, "internal: the worker could not start: %s", w->c.startup_error);
            body = error_body(m, 1);
            now_fatal = 1;
        } else if (fatal) {
            body = error_body(fmsg, 1);
        } else {
            say(w, 0, "job %s: started", j->id);
            int http_status = 500;
            char *reply = w->fn(w->ctx, j->input, strlen(j->input), &http_status);
            body = result_body(reply, http_status, &now_fatal);
            is_error = http_status != 200;
            if (now_fatal)
                say(w, 1, "job %s: fatal handler error (asking RunPod for a new worker): %.300s", j->id,
                    reply ? reply : "(none)");
            free(reply);
        }
        if (!body)
            body = error_body("nomem: out of memory building the result", 0);
        int posted = c && body && post_result(w, c, &b, j->id, body);
        if (posted)
            say(w, 0, "job %s: %s", j->id, is_error ? "failed (error posted)" : "done");
        pthread_mutex_lock(&w->mu);
        if (posted) {
            if (is_error)
                w->st.failed++;
            else
                w->st.done++;
        }
        pthread_mutex_unlock(&w->mu);
        if (now_fatal)
            set_fatal(w, w->c.startup_error ? w->c.startup_error : "the backend reported a device error");
        free(body);
        ids_remove(w, j->id);
        free(j->id);
        if (j->input)
            OPENSSL_cleanse(j->input, strlen(j->input));
        free(j->input);
        free(j);
    }
    free(b.p);
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return NULL;
}

/* ------------------------------------------------------------- heartbeat */

static void *heartbeat_thread(void *arg)
{
    rp_worker *w = arg;
    struct curl_slist *hdr;
    CURL *c = new_handle(w, &hdr, 0);
    buf b = {0};
    char *base = rp_expand(w->c.ping, w->pod_id, NULL);
    long timeout = w->c.ping_interval_ms < 5000 ? 5000 : w->c.ping_interval_ms;
    if (c && base) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    }
    for (;;) {
        char *ids = c && base ? ids_param(w) : NULL;
        char *url = NULL;
        size_t len = 0;
        if (ids && append(&url, &len, base) && append(&url, &len, ids)) {
            buf_reset(&b, 1u << 16);
            curl_easy_setopt(c, CURLOPT_URL, url);
            CURLcode rc = curl_easy_perform(c);
            long code = 0;
            if (rc == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
            int bad = rc != CURLE_OK || code < 200 || code >= 300;
            pthread_mutex_lock(&w->mu);
            w->st.pings++;
            long nerr = bad ? ++w->st.ping_errors : w->st.ping_errors;
            pthread_mutex_unlock(&w->mu);
            if (bad && (nerr <= 3 || nerr % 100 == 0)) /* a dead ping URL must not flood the log */
                say(w, 1, "heartbeat failed (%ld so far): %s", nerr,
                    rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP error status");
        }
        free(url);
        free(ids);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += w->c.ping_interval_ms / 1000;
        until.tv_nsec += (w->c.ping_interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_mutex_lock(&w->mu);
        int timed_out = 0;
        while (!w->hb_stop && !timed_out)
            timed_out = pthread_cond_timedwait(&w->hb_cv, &w->mu, &until) == ETIMEDOUT;
        int done = w->hb_stop;
        pthread_mutex_unlock(&w->mu);
        if (done)
            break;
    }
    free(base);
    free(b.p);
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return NULL;
}

/* ----------------------------------------------------------------- take */

typedef struct {
    rp_worker *w;
    int got_header;
} take_ctx;

static size_t on_take_header(char *p, size_t size, size_t n, void *ud)
{
    ((take_ctx *)ud)->got_header = 1;
    return size * n;
}

/* Abandons a long poll on rp_stop, but only while no answer has started
 * to arrive: a job RunPod has begun to hand out is read to the end. */
static int on_take_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    take_ctx *t = ud;
    return atomic_load(&t->w->stop) && !t->got_header;
}

/* Queues one job object; 0 when it is not a job. */
static int queue_job(rp_worker *w, const cJSON *o)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(o, "input");
    if (!cJSON_IsString(id) || !id->valuestring[0] || !in || cJSON_IsNull(in)) {
        say(w, 1, "take: a job without %s; skipped", cJSON_IsString(id) ? "\"input\"" : "an \"id\"");
        return 0;
    }
    job *j = calloc(1, sizeof *j);
    if (j) {
        j->id = strdup(id->valuestring);
        j->input = cJSON_PrintUnformatted(in);
    }
    pthread_mutex_lock(&w->mu);
    int ok = j && j->id && j->input && ids_add_locked(w, j->id);
    if (ok) {
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        w->st.taken++;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (!ok) {
        say(w, 1, "take: out of memory for job %s; it will time out on RunPod's side",
            cJSON_IsString(id) ? id->valuestring : "?");
        if (j) {
            free(j->id);
            free(j->input);
            free(j);
        }
        return 0;
    }
    say(w, 0, "job %s: taken", id->valuestring);
    return 1;
}

/* The take loop, on rp_run's thread. */
static void take_loop(rp_worker *w)
{
    struct curl_slist *hdr;
    CURL *c = new_handle(w, &hdr, 0);
    buf b = {0};
    take_ctx tc = {w, 0};
    char *base = rp_expand(w->c.get_job, w->pod_id, NULL);
    int batch = strstr(w->c.get_job, "job-take-batch") != NULL;
    long backoff = w->c.backoff_ms;
    if (!c || !base) {
        set_fatal(w, "out of memory starting the take loop");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, w->c.take_timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_take_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &tc);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_take_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &tc);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    while (!atomic_load(&w->stop)) {
        /* wait for a free slot */
        pthread_mutex_lock(&w->mu);
        while (!atomic_load(&w->stop) && w->n_ids >= w->c.concurrency)
            pthread_cond_wait(&w->cv, &w->mu);
        size_t free_slots = w->c.concurrency - (w->n_ids < w->c.concurrency ? w->n_ids : w->c.concurrency);
        int in_progress = w->n_ids > 0;
        pthread_mutex_unlock(&w->mu);
        if (atomic_load(&w->stop))
            break;
        /* runpod-python 1.12: "&job_in_progress=0|1", and for batch takes the free slots */
        char url[4096];
        int n = snprintf(url, sizeof url, "%s&job_in_progress=%d", base, in_progress);
        if (batch && n > 0 && (size_t)n < sizeof url)
            snprintf(url + n, sizeof url - (size_t)n, "&batch_size=%zu", free_slots);
        curl_easy_setopt(c, CURLOPT_URL, url);
        buf_reset(&b, free_slots * JOB_BYTES_MAX + (1u << 20));
        tc.got_header = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CURLcode rc = curl_easy_perform(c);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long took_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        long code = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        pthread_mutex_lock(&w->mu);
        w->st.takes++;
        pthread_mutex_unlock(&w->mu);
        if (rc == CURLE_ABORTED_BY_CALLBACK)
            break; /* rp_stop during the long poll */
        if (rc == CURLE_OPERATION_TIMEDOUT && !tc.got_header) {
            pthread_mutex_lock(&w->mu);
            w->st.no_job++;
            pthread_mutex_unlock(&w->mu);
            continue; /* the long poll ran out: ask again */
        }
        if (rc == CURLE_OK && (code == 204 || code == 400)) {
            /* no job (400 is what RunPod answers with FlashBoot on) */
            pthread_mutex_lock(&w->mu);
            w->st.no_job++;
            pthread_mutex_unlock(&w->mu);
            backoff = w->c.backoff_ms;
            if (took_ms < 100)
                nap(w, 100 - took_ms); /* an answer that did not wait must not become a busy loop */
            continue;
        }
        if (rc == CURLE_OK && code == 429) {
            pthread_mutex_lock(&w->mu);
            w->st.busy++;
            pthread_mutex_unlock(&w->mu);
            say(w, 1, "take: HTTP 429 (too many requests); waiting %ld ms", w->c.busy_wait_ms);
            nap(w, w->c.busy_wait_ms);
            continue;
        }
        int handled = 0;
        if (rc == CURLE_OK && code == 200) {
            cJSON *r = cJSON_ParseWithLength(b.p ? b.p : "", b.n);
            if (cJSON_IsArray(r)) {
                const cJSON *it;
                cJSON_ArrayForEach(it, r) queue_job(w, it);
                handled = 1;
            } else if (cJSON_IsObject(r)) {
                queue_job(w, r);
                handled = 1;
            }
            cJSON_Delete(r);
            if (!handled)
                say(w, 1, "take: HTTP 200 with a body that is neither a job nor a list of jobs (%zu bytes)",
                    b.n);
        }
        if (handled) {
            backoff = w->c.backoff_ms;
            continue;
        }
        pthread_mutex_lock(&w->mu);
        w->st.take_errors++;
        pthread_mutex_unlock(&w->mu);
        if (rc != CURLE_OK)
            say(w, 1, "take failed: %s%s; retrying in %ld ms", curl_easy_strerror(rc),
                b.too_big ? " (answer too large)" : "", backoff);
        else if (code != 200)
            say(w, 1, "take failed: HTTP %ld; retrying in %ld ms", code, backoff);
        nap(w, backoff);
        backoff = backoff * 2 > w->c.backoff_max_ms ? w->c.backoff_max_ms : backoff * 2;
    }
out:
    free(base);
    free(b.p);
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
}

/* ------------------------------------------------------------- lifecycle */

void rp_config_defaults(rp_config *c)
{
    memset(c, 0, sizeof *c);
    c->concurrency = 1;
    c->ping_interval_ms = 10000;
    c->take_timeout_ms = 90000;
    c->busy_wait_ms = 5000;
    c->backoff_ms = 1000;
    c->backoff_max_ms = 30000;
    c->post_timeout_ms = 60000;
    c->post_attempts = 4;
    c->post_retry_ms = 500;
}

static int env_long(const char *name, long lo, long hi, long *out, inf_error *err)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        inf_fail(err, INF_E_ARG, "%s=\"%s\" is not a number from %ld to %ld", name, s, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

inf_status rp_config_from_env(rp_config *c, inf_error *err)
{
    rp_config_defaults(c);
    c->get_job = getenv("RUNPOD_WEBHOOK_GET_JOB");
    c->post_output = getenv("RUNPOD_WEBHOOK_POST_OUTPUT");
    c->post_stream = getenv("RUNPOD_WEBHOOK_POST_STREAM");
    c->ping = getenv("RUNPOD_WEBHOOK_PING");
    c->api_key = getenv("RUNPOD_AI_API_KEY");
    c->pod_id = getenv("RUNPOD_POD_ID");
    if (!c->get_job || !*c->get_job)
        return inf_fail(err, INF_E_ARG, "RUNPOD_WEBHOOK_GET_JOB is not set");
    if (!c->post_output || !*c->post_output)
        return inf_fail(err, INF_E_ARG, "RUNPOD_WEBHOOK_POST_OUTPUT is not set (RUNPOD_WEBHOOK_GET_JOB is)");
    if (c->ping && !*c->ping)
        c->ping = NULL;
    long conc = 1;
    if (!env_long("RUNPOD_PING_INTERVAL", 100, 3600000, &c->ping_interval_ms, err) ||
        !env_long("RUNPOD_CONCURRENCY", 1, 256, &conc, err))
        return INF_E_ARG;
    c->concurrency = (unsigned)conc;
    return INF_OK;
}

inf_status rp_create(const rp_config *cfg, rp_handle_fn fn, void *ctx, rp_worker **out, inf_error *err)
{
    *out = NULL;
    if (!cfg->get_job || !cfg->post_output)
        return inf_fail(err, INF_E_ARG, "RunPod queue mode needs the GET_JOB and POST_OUTPUT URLs");
    if (!fn && !cfg->startup_error)
        return inf_fail(err, INF_E_ARG, "RunPod queue mode needs a handler");
    if (cfg->concurrency < 1 || cfg->concurrency > 256)
        return inf_fail(err, INF_E_ARG, "concurrency %u is outside 1..256", cfg->concurrency);
    rp_worker *w = calloc(1, sizeof *w);
    if (!w)
        return inf_fail(err, INF_E_NOMEM, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->hb_cv, &ca);
    pthread_condattr_destroy(&ca);
    w->c = *cfg;
    w->fn = fn;
    w->ctx = ctx;
    const char **fields[] = {&w->c.get_job, &w->c.post_output, &w->c.post_stream, &w->c.ping,
                             &w->c.api_key, &w->c.pod_id, &w->c.startup_error};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        if (!*fields[i])
            continue;
        if (!(w->strs[i] = strdup(*fields[i]))) {
            rp_destroy(w);
            return inf_fail(err, INF_E_NOMEM, "out of memory");
        }
        *fields[i] = w->strs[i];
    }
    if (w->c.pod_id && *w->c.pod_id) {
        snprintf(w->pod_id, sizeof w->pod_id, "%s", w->c.pod_id);
    } else {
        /* the SDK makes up a random worker id when RUNPOD_POD_ID is unset */
        unsigned char r[8];
        if (RAND_bytes(r, sizeof r) != 1)
            memset(r, 0, sizeof r);
        for (int i = 0; i < 8; i++)
            snprintf(w->pod_id + 2 * i, 3, "%02x", r[i]);
    }
    if (w->c.api_key && *w->c.api_key) {
        if (strlen(w->c.api_key) > sizeof w->auth - 32 || strpbrk(w->c.api_key, "\r\n")) {
            rp_destroy(w);
            return inf_fail(err, INF_E_ARG, "RUNPOD_AI_API_KEY is too long or holds a line break");
        }
        snprintf(w->auth, sizeof w->auth, "Authorization: %s", w->c.api_key);
    }
    if (w->c.ping_interval_ms < 100)
        w->c.ping_interval_ms = 100;
    *out = w;
    return INF_OK;
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void rp_stop(rp_worker *w)
{
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_cond_broadcast(&w->hb_cv);
    pthread_mutex_unlock(&w->mu);
}

void rp_get_stats(rp_worker *w, rp_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    pthread_mutex_unlock(&w->mu);
}

inf_status rp_run(rp_worker *w, inf_error *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);

    unsigned n = w->c.startup_error ? 1 : w->c.concurrency;
    pthread_t *tids = calloc(n, sizeof *tids);
    pthread_t hb;
    int hb_started = 0;
    unsigned started = 0;
    if (!tids)
        return inf_fail(err, INF_E_NOMEM, "out of memory");
    if (w->c.startup_error)
        w->c.concurrency = 1;
    for (; started < n; started++)
        if (pthread_create(&tids[started], NULL, job_thread, w) != 0)
            break;
    if (started < n)
        set_fatal(w, "cannot start the job threads");
    if (w->c.ping && pthread_create(&hb, NULL, heartbeat_thread, w) == 0)
        hb_started = 1;
    else if (w->c.ping)
        say(w, 1, "cannot start the heartbeat thread; going on without heartbeats");
    say(w, 0, "worker %s taking jobs (%u at a time%s)", w->pod_id, w->c.concurrency,
        w->c.ping ? "" : ", no heartbeat URL");

    if (started == n)
        take_loop(w);

    pthread_mutex_lock(&w->mu);
    w->taker_done = 1;
    size_t left = w->n_ids;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (left && !w->fatal)
        say(w, 1, "stopping: finishing %zu job(s) in hand", left);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    free(tids);
    pthread_mutex_lock(&w->mu);
    w->hb_stop = 1;
    pthread_cond_broadcast(&w->hb_cv);
    pthread_mutex_unlock(&w->mu);
    if (hb_started)
        pthread_join(hb, NULL);
    if (w->fatal)
        return inf_fail(err, INF_E_IO, "%s", w->fatal_msg);
    say(w, 0, "stopped");
    return INF_OK;
}

void rp_destroy(rp_worker *w)
{
    if (!w)
        return;
    if (w->auth[0] || w->c.api_key) {
        OPENSSL_cleanse(w->auth, sizeof w->auth);
    }
    for (size_t i = 0; i < sizeof w->strs / sizeof *w->strs; i++) {
        if (w->strs[i])
            OPENSSL_cleanse(w->strs[i], strlen(w->strs[i]));
        free(w->strs[i]);
    }
    while (w->head) {
        job *j = w->head;
        w->head = j->next;
        free(j->id);
        free(j->input);
        free(j);
    }
    for (size_t i = 0; i < w->n_ids; i++)
        free(w->ids[i]);
    free(w->ids);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->hb_cv);
    free(w);
}
