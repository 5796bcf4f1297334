/* fake_runpod.c — see fake_runpod.h. Test code: simple over fast (linear
 * job lists, one mutex). */
#include "fake_runpod.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct fjob {
    char id[96];
    char *input;  /* JSON text */
    int state;    /* 0 queued, 1 out (taken), 2 done, 3 held back (FAKE_RP_STALE) */
    int lost;     /* out, but its result posts are being dropped (FAKE_RP_LOST) */
    int release_at; /* held back: joins the queue once this many results were accepted */
    int late;     /* handed out when a step of its session at least as new already was */
    char *result; /* the accepted result body */
    struct fjob *next;
} fjob;

typedef struct {
    char *s;
    size_t n;
} text;

struct fake_rp {
    fake_rp_config c;
    char ep[64], pod[64], wkey[256], ckey[256], force[32];
    struct MHD_Daemon *d;
    unsigned port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fjob *jobs, *last;
    fake_rp_fault tf[64], pf[64], rf[64], sf[64]; /* takes, posts, /runsync, /status */
    int ntf, npf, nrf, nsf, next_id;
    int out; /* jobs out and not lost: what job_in_progress must reflect */
    fake_rp_counts cnt;
    text viol, pings;
    struct {
        char session[72];
        double step;
    } top[64]; /* per session: the newest step handed out (the late-job oracle) */
    int ntop;
};

typedef struct {
    char *body;
    size_t len;
    int dropped;
} conn;

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    size_t n = strlen(line);
    char *q = realloc(t->s, t->n + n + 2);
    if (!q)
        return;
    memcpy(q + t->n, line, n);
    q[t->n + n] = '\n';
    q[t->n + n + 1] = '\0';
    t->s = q;
    t->n += n + 1;
}

static char *text_copy(const text *t)
{
    return strdup(t->s ? t->s : "");
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned code, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    enum MHD_Result ret = reply(c, code, s ? s : "{}");
    free(s);
    return ret;
}

static fjob *find(fake_rp *f, const char *id)
{
    for (fjob *j = f->jobs; j; j = j->next)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

static void add_locked(fake_rp *f, const char *id, const char *input)
{
    fjob *j = calloc(1, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    j->input = strdup(input);
    f->cnt.jobs++;
    if (f->last)
        f->last->next = j;
    else
        f->jobs = j;
    f->last = j;
    pthread_cond_broadcast(&f->cv);
}

/* Marks j late when its input's "step" is not newer than a step of the same
 * "session" handed out before (the wire header is in clear): what the
 * worker's handler must refuse as a replay. Inputs of other shapes are not
 * tracked. */
static void note_handout(fake_rp *f, fjob *j)
{
    cJSON *in = cJSON_Parse(j->input);
    const cJSON *ses = cJSON_GetObjectItemCaseSensitive(in, "session");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(in, "step");
    if (cJSON_IsString(ses) && cJSON_IsNumber(step)) {
        int k = 0;
        while (k < f->ntop && strcmp(f->top[k].session, ses->valuestring))
            k++;
        if (k == f->ntop && k < 64) {
            snprintf(f->top[k].session, sizeof f->top[k].session, "%s", ses->valuestring);
            f->top[k].step = -1;
            f->ntop++;
        }
        if (k < f->ntop) {
            if (step->valuedouble <= f->top[k].step)
                j->late = 1;
            else
                f->top[k].step = step->valuedouble;
        }
    }
    cJSON_Delete(in);
}

static fjob *first_queued(fake_rp *f)
{
    for (fjob *j = f->jobs; j; j = j->next)
        if (j->state == 0)
            return j;
    return NULL;
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L)
        ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

/* A scripted fault, popped under the lock; 1 when one applies (the next
 * entry, once its `at` results were accepted). */
static int pop_fault(fake_rp *f, fake_rp_fault *list, int *n, fake_rp_fault *out)
{
    if (*n == 0 || list[0].at > f->cnt.results)
        return 0;
    *out = list[0];
    memmove(list, list + 1, (size_t)(*n - 1) * sizeof *list);
    (*n)--;
    return 1;
}

/* Sleeps ms with the lock released (a slow answer must not stall the others). */
static void slow_locked(fake_rp *f, int ms)
{
    pthread_mutex_unlock(&f->mu);
    sleep_ms(ms);
    pthread_mutex_lock(&f->mu);
}

/* Waits until job j reached min_state (1 out, 2 done) or ms ran out. */
static void wait_job_locked(fake_rp *f, fjob *j, int min_state, int ms)
{
    struct timespec until;
    deadline(&until, ms);
    while (j->state < min_state && pthread_cond_timedwait(&f->cv, &f->mu, &until) != ETIMEDOUT) {
    }
}

static enum MHD_Result do_fault(struct MHD_Connection *c, fake_rp_fault fl)
{
    if (fl.delay_ms)
        sleep_ms(fl.delay_ms);
    if (fl.code == 0)
        return MHD_NO; /* drop the connection */
    char body[96];
    snprintf(body, sizeof body, "{\"error\":\"fake fault %d\"}", fl.code);
    return reply(c, (unsigned)fl.code, body);
}

/* ------------------------------------------------------------ worker side */

static enum MHD_Result take(fake_rp *f, struct MHD_Connection *c, int batch)
{
    const char *jip = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "job_in_progress");
    const char *bs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "batch_size");
    int want = 1;
    pthread_mutex_lock(&f->mu);
    f->cnt.takes++;
    if (!jip || (strcmp(jip, "0") && strcmp(jip, "1")))
        text_add(&f->viol, "take: job_in_progress is \"%s\", not 0 or 1", jip ? jip : "(missing)");
    else if (!strcmp(jip, "1"))
        f->cnt.takes_in_progress++;
    else if (f->out > 0)
        text_add(&f->viol, "take: job_in_progress=0 while %d job(s) are out", f->out);
    if (batch) {
        f->cnt.batch_takes++;
        want = bs ? atoi(bs) : 0;
        if (want < 1)
            text_add(&f->viol, "batch take: batch_size is \"%s\"", bs ? bs : "(missing)");
        if (want > f->cnt.max_batch_size)
            f->cnt.max_batch_size = want;
        if (want < 1)
            want = 1;
    } else if (bs) {
        text_add(&f->viol, "take: batch_size on a single-job take");
    }
    fake_rp_fault fl;
    if (pop_fault(f, f->tf, &f->ntf, &fl)) {
        if (fl.kind != FAKE_RP_SLOW) {
            pthread_mutex_unlock(&f->mu);
            return do_fault(c, fl);
        }
        slow_locked(f, fl.delay_ms);
    }
    struct timespec until;
    deadline(&until, f->c.hold_ms);
    while (!first_queued(f) && pthread_cond_timedwait(&f->cv, &f->mu, &until) != ETIMEDOUT) {
    }
    if (!first_queued(f)) {
        pthread_mutex_unlock(&f->mu);
        return reply(c, 204, "");
    }
    cJSON *arr = cJSON_CreateArray(), *one = NULL;
    for (int k = 0; k < want; k++) {
        fjob *j = first_queued(f);
        if (!j)
            break;
        j->state = 1;
        f->out++;
        note_handout(f, j);
        pthread_cond_broadcast(&f->cv); /* a FAKE_RP_EARLY /runsync waits for this */
        if (f->out > f->cnt.max_out)
            f->cnt.max_out = f->out;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", j->id);
        cJSON_AddItemToObject(o, "input", cJSON_Parse(j->input));
        cJSON_AddStringToObject(o, "webhook", "");
        if (batch)
            cJSON_AddItemToArray(arr, o);
        else
            one = o;
    }
    pthread_mutex_unlock(&f->mu);
    if (batch)
        return reply_json(c, 200, arr);
    cJSON_Delete(arr);
    return reply_json(c, 200, one);
}

static enum MHD_Result job_done(fake_rp *f, struct MHD_Connection *c, const char *id, conn *cn)
{
    const char *is = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "isStream");
    pthread_mutex_lock(&f->mu);
    f->cnt.result_posts++;
    if (!is || strcmp(is, "false"))
        text_add(&f->viol, "result for %s: isStream is \"%s\", not false", id, is ? is : "(missing)");
    fjob *j = find(f, id);
    if (j && j->lost && j->state == 1) { /* a retry of a lost post: lost too */
        pthread_mutex_unlock(&f->mu);
        return MHD_NO;
    }
    fake_rp_fault fl;
    if (pop_fault(f, f->pf, &f->npf, &fl)) {
        if (fl.kind == FAKE_RP_LOST && j && j->state == 1) {
            j->lost = 1;
            f->out--; /* gone from RunPod's view until a heartbeat stops naming it */
            pthread_mutex_unlock(&f->mu);
            return MHD_NO;
        }
        if (fl.kind != FAKE_RP_SLOW) {
            pthread_mutex_unlock(&f->mu);
            return do_fault(c, fl);
        }
        slow_locked(f, fl.delay_ms);
    }
    cJSON *b = cJSON_ParseWithLength(cn->body ? cn->body : "", cn->len);
    int shape_ok = cJSON_IsObject(b);
    int has_out = cJSON_HasObjectItem(b, "output"), has_err = cJSON_HasObjectItem(b, "error");
    const cJSON *it;
    cJSON_ArrayForEach(it, b)
    {
        if (strcmp(it->string, "output") && strcmp(it->string, "error") && strcmp(it->string, "stopPod"))
            shape_ok = 0;
    }
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(b, "stopPod");
    if (!shape_ok || has_out == has_err || (sp && !cJSON_IsTrue(sp)) ||
        (has_err && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(b, "error"))))
        text_add(&f->viol, "result for %s has the wrong shape: %.200s", id, cn->body ? cn->body : "");
    cJSON_Delete(b);
    if (!j)
        text_add(&f->viol, "result for unknown job %s", id);
    else if (j->state == 2)
        text_add(&f->viol, "result for %s posted twice", id);
    else if (j->state == 0)
        text_add(&f->viol, "result for %s, which was never taken", id);
    else {
        j->state = 2;
        j->result = strndup(cn->body ? cn->body : "", cn->len);
        f->out--;
        f->cnt.results++;
        for (fjob *h = f->jobs; h; h = h->next) /* FAKE_RP_STALE jobs whose time came */
            if (h->state == 3 && h->release_at <= f->cnt.results)
                h->state = 0;
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
    return reply(c, 200, "{}");
}

/* 1 when the comma-separated list names id. */
static int named(const char *list, const char *id)
{
    size_t n = strlen(id);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k == n && !strncmp(p, id, n))
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static enum MHD_Result ping(fake_rp *f, struct MHD_Connection *c)
{
    const char *ids = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "job_id");
    pthread_mutex_lock(&f->mu);
    f->cnt.pings++;
    if (ids && *ids) {
        f->cnt.pings_with_ids++;
        text_add(&f->pings, "%s", ids);
        char *copy = strdup(ids), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (!find(f, t))
                text_add(&f->viol, "ping names unknown job %s", t);
        free(copy);
    }
    /* a lost job its worker no longer names goes back in the queue */
    for (fjob *j = f->jobs; j; j = j->next) {
        if (!j->lost || j->state != 1 || named(ids, j->id))
            continue;
        j->lost = 0;
        j->state = 0;
        f->cnt.redelivered++;
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
    return reply(c, 200, "{}");
}

/* ------------------------------------------------------------ client side */

static cJSON *status_of(fake_rp *f, fjob *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    if (j->state < 2) {
        cJSON_AddStringToObject(o, "status", j->state == 0 ? "IN_QUEUE" : "IN_PROGRESS");
        return o;
    }
    if (f->force[0]) {
        cJSON_AddStringToObject(o, "status", f->force);
        if (!strcmp(f->force, "FAILED"))
            cJSON_AddStringToObject(o, "error", "fake RunPod: the job failed on the worker");
        return o;
    }
    cJSON *r = cJSON_Parse(j->result);
    cJSON *out = cJSON_DetachItemFromObject(r, "output"), *err = cJSON_DetachItemFromObject(r, "error");
    cJSON_Delete(r);
    cJSON_AddStringToObject(o, "status", err ? "FAILED" : "COMPLETED");
    cJSON_AddNumberToObject(o, "delayTime", 1);
    cJSON_AddNumberToObject(o, "executionTime", 1);
    if (err)
        cJSON_AddItemToObject(o, "error", err);
    if (out)
        cJSON_AddItemToObject(o, "output", out);
    return o;
}

static enum MHD_Result submit(fake_rp *f, struct MHD_Connection *c, conn *cn, int sync)
{
    cJSON *b = cJSON_ParseWithLength(cn->body ? cn->body : "", cn->len);
    cJSON *in = cJSON_GetObjectItemCaseSensitive(b, "input");
    if (!cJSON_IsObject(in)) {
        cJSON_Delete(b);
        pthread_mutex_lock(&f->mu);
        text_add(&f->viol, "%s: the body is not {\"input\": {...}}", sync ? "runsync" : "run");
        pthread_mutex_unlock(&f->mu);
        return reply(c, 400, "{\"error\":\"the body must be {\\\"input\\\": {...}}\"}");
    }
    char *input = cJSON_PrintUnformatted(in);
    cJSON_Delete(b);
    char id[96];
    pthread_mutex_lock(&f->mu);
    fake_rp_fault fl = {0};
    int faulted = sync && pop_fault(f, f->rf, &f->nrf, &fl);
    if (sync)
        f->cnt.runsyncs++;
    if (faulted && fl.kind == FAKE_RP_INSTEAD) { /* the request never got in */
        pthread_mutex_unlock(&f->mu);
        free(input);
        return do_fault(c, fl);
    }
    if (faulted && fl.kind == FAKE_RP_SLOW)
        slow_locked(f, fl.delay_ms);
    snprintf(id, sizeof id, "sync-%d-fake", ++f->next_id);
    add_locked(f, id, input);
    free(input);
    fjob *j = find(f, id);
    if (faulted && fl.kind == FAKE_RP_STALE) {
        j->state = 3;
        j->release_at = f->cnt.results + 1;
        pthread_mutex_unlock(&f->mu);
        return do_fault(c, fl);
    }
    if (faulted && fl.kind == FAKE_RP_AFTER) {
        wait_job_locked(f, j, 2, 30000);
        pthread_mutex_unlock(&f->mu);
        return do_fault(c, fl);
    }
    if (faulted && fl.kind == FAKE_RP_EARLY) {
        wait_job_locked(f, j, 1, 30000);
        pthread_mutex_unlock(&f->mu);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "status", "IN_PROGRESS");
        return reply_json(c, 200, o);
    }
    if (sync)
        wait_job_locked(f, j, 2, f->c.runsync_wait_ms);
    cJSON *o = status_of(f, j);
    pthread_mutex_unlock(&f->mu);
    return reply_json(c, 200, o);
}

static enum MHD_Result status(fake_rp *f, struct MHD_Connection *c, const char *id)
{
    pthread_mutex_lock(&f->mu);
    f->cnt.status_polls++;
    fjob *j = find(f, id);
    if (!j) {
        text_add(&f->viol, "status for %s, a job id the client was never given", id);
        pthread_mutex_unlock(&f->mu);
        return reply(c, 404, "{\"error\":\"job not found\"}");
    }
    fake_rp_fault fl;
    if (pop_fault(f, f->sf, &f->nsf, &fl)) {
        if (fl.kind != FAKE_RP_SLOW) {
            pthread_mutex_unlock(&f->mu);
            return do_fault(c, fl);
        }
        slow_locked(f, fl.delay_ms);
    }
    /* a short wait, like RunPod's: answers sooner when the job ends */
    wait_job_locked(f, j, 2, 50);
    cJSON *o = status_of(f, j);
    pthread_mutex_unlock(&f->mu);
    return reply_json(c, 200, o);
}

/* --------------------------------------------------------------- routing */

/* s without prefix, or NULL when s does not start with it. */
static const char *after(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(s, prefix, n) ? NULL : s + n;
}

static enum MHD_Result route(fake_rp *f, struct MHD_Connection *c, const char *url, const char *method,
                             conn *cn)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "/v2/%s/", f->ep);
    if (!after(url, prefix))
        return reply(c, 404, "{\"error\":\"endpoint not found\"}");
    const char *rest = after(url, prefix);
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    size_t podl = strlen(f->pod);
    int worker_route = !strncmp(rest, "job-take", 8) || !strncmp(rest, "job-done/", 9) ||
                       !strncmp(rest, "ping/", 5);
    if (worker_route) {
        if (!auth || strcmp(auth, f->wkey)) {
            pthread_mutex_lock(&f->mu);
            text_add(&f->viol, "%s %s: Authorization is \"%s\", not the raw key", method, rest,
                     auth ? auth : "(missing)");
            pthread_mutex_unlock(&f->mu);
            return reply(c, 401, "{\"error\":\"unauthorized\"}");
        }
        int get = !strcmp(method, "GET");
        const char *t;
        char p_take[128], p_batch[128], p_ping[128];
        snprintf(p_take, sizeof p_take, "job-take/%s", f->pod);
        snprintf(p_batch, sizeof p_batch, "job-take-batch/%s", f->pod);
        snprintf(p_ping, sizeof p_ping, "ping/%s", f->pod);
        if (get && !strcmp(rest, p_take))
            return take(f, c, 0);
        if (get && !strcmp(rest, p_batch))
            return take(f, c, 1);
        if (get && !strcmp(rest, p_ping))
            return ping(f, c);
        if (!strcmp(method, "POST") && (t = after(rest, "job-done/")) && !strncmp(t, f->pod, podl) &&
            t[podl] == '/')
            return job_done(f, c, t + podl + 1, cn);
        pthread_mutex_lock(&f->mu);
        text_add(&f->viol, "unexpected worker call %s %s", method, rest);
        pthread_mutex_unlock(&f->mu);
        return reply(c, 404, "{\"error\":\"not found\"}");
    }
    if (f->ckey[0]) {
        char want[300];
        snprintf(want, sizeof want, "Bearer %s", f->ckey);
        if (!auth || strcmp(auth, want)) {
            pthread_mutex_lock(&f->mu);
            text_add(&f->viol, "%s %s: Authorization is %s, not \"Bearer <the API key>\"", method, rest,
                     !auth ? "missing" : strncmp(auth, "Bearer ", 7) ? "not Bearer" : "another key");
            pthread_mutex_unlock(&f->mu);
            return reply(c, 401, "{\"error\":\"Unauthorized\"}");
        }
    }
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!strcmp(method, "POST") && (!ctype || strncmp(ctype, "application/json", 16))) {
        pthread_mutex_lock(&f->mu);
        text_add(&f->viol, "POST %s: Content-Type is \"%s\", not application/json", rest,
                 ctype ? ctype : "(missing)");
        pthread_mutex_unlock(&f->mu);
    }
    if (!strcmp(method, "POST") && !strcmp(rest, "runsync"))
        return submit(f, c, cn, 1);
    if (!strcmp(method, "POST") && !strcmp(rest, "run"))
        return submit(f, c, cn, 0);
    if (!strcmp(method, "GET") && !strncmp(rest, "status/", 7))
        return status(f, c, rest + 7);
    return reply(c, 404, "{\"error\":\"not found\"}");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls)
{
    fake_rp *f = cls;
    conn *cn = *con_cls;
    if (!cn) {
        *con_cls = calloc(1, sizeof(conn));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*data_size) {
        char *q = realloc(cn->body, cn->len + *data_size + 1);
        if (!q)
            return MHD_NO;
        memcpy(q + cn->len, data, *data_size);
        cn->body = q;
        cn->len += *data_size;
        cn->body[cn->len] = '\0';
        *data_size = 0;
        return MHD_YES;
    }
    return route(f, c, url, method, cn);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    conn *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
    }
    *con_cls = NULL;
}

/* ------------------------------------------------------------------ API */

fake_rp *fake_rp_start(const fake_rp_config *cin)
{
    fake_rp *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    if (cin)
        f->c = *cin;
    snprintf(f->ep, sizeof f->ep, "%s", f->c.endpoint ? f->c.endpoint : "ep1");
    snprintf(f->pod, sizeof f->pod, "%s", f->c.pod_id ? f->c.pod_id : "pod1");
    snprintf(f->wkey, sizeof f->wkey, "%s", f->c.worker_key ? f->c.worker_key : "wk");
    snprintf(f->ckey, sizeof f->ckey, "%s", f->c.client_key ? f->c.client_key : "");
    snprintf(f->force, sizeof f->force, "%s", f->c.force_status ? f->c.force_status : "");
    if (!f->c.hold_ms)
        f->c.hold_ms = 200;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, f, MHD_OPTION_NOTIFY_COMPLETED, on_done, f,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!f->d) {
        free(f);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    f->port = di ? di->port : 0;
    return f;
}

void fake_rp_stop(fake_rp *f)
{
    if (!f)
        return;
    MHD_stop_daemon(f->d);
    while (f->jobs) {
        fjob *j = f->jobs;
        f->jobs = j->next;
        free(j->input);
        free(j->result);
        free(j);
    }
    free(f->viol.s);
    free(f->pings.s);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

unsigned fake_rp_port(fake_rp *f) { return f->port; }

void fake_rp_templates(fake_rp *f, int batch, char *get_job, char *post_output, char *ping_url,
                       size_t cap)
{
    const char *base = "http://127.0.0.1";
    snprintf(get_job, cap, "%s:%u/v2/%s/%s/$ID?", base, f->port, f->ep,
             batch ? "job-take-batch" : "job-take");
    snprintf(post_output, cap, "%s:%u/v2/%s/job-done/$RUNPOD_POD_ID/$ID?", base, f->port, f->ep);
    snprintf(ping_url, cap, "%s:%u/v2/%s/ping/$RUNPOD_POD_ID?", base, f->port, f->ep);
}

void fake_rp_add_job(fake_rp *f, const char *id, const char *input_json)
{
    pthread_mutex_lock(&f->mu);
    add_locked(f, id, input_json);
    pthread_mutex_unlock(&f->mu);
}

static void add_faults(fake_rp *f, fake_rp_fault *list, int *n, const fake_rp_fault *src, int k)
{
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < k && *n < 64; i++)
        list[(*n)++] = src[i];
    pthread_mutex_unlock(&f->mu);
}

void fake_rp_fault_takes(fake_rp *f, const fake_rp_fault *faults, int n)
{
    add_faults(f, f->tf, &f->ntf, faults, n);
}

void fake_rp_fault_posts(fake_rp *f, const fake_rp_fault *faults, int n)
{
    add_faults(f, f->pf, &f->npf, faults, n);
}

void fake_rp_fault_runsync(fake_rp *f, const fake_rp_fault *faults, int n)
{
    add_faults(f, f->rf, &f->nrf, faults, n);
}

void fake_rp_fault_status(fake_rp *f, const fake_rp_fault *faults, int n)
{
    add_faults(f, f->sf, &f->nsf, faults, n);
}

int fake_rp_faults_left(fake_rp *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->ntf + f->npf + f->nrf + f->nsf;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int fake_rp_wait_results(fake_rp *f, int n, int timeout_ms)
{
    struct timespec until;
    deadline(&until, timeout_ms);
    pthread_mutex_lock(&f->mu);
    while (f->cnt.results < n && pthread_cond_timedwait(&f->cv, &f->mu, &until) != ETIMEDOUT) {
    }
    int ok = f->cnt.results >= n;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

char *fake_rp_result(fake_rp *f, const char *id)
{
    pthread_mutex_lock(&f->mu);
    fjob *j = find(f, id);
    char *s = j && j->result ? strdup(j->result) : NULL;
    pthread_mutex_unlock(&f->mu);
    return s;
}

void fake_rp_get_counts(fake_rp *f, fake_rp_counts *out)
{
    pthread_mutex_lock(&f->mu);
    *out = f->cnt;
    out->unfinished = 0;
    for (fjob *j = f->jobs; j; j = j->next)
        out->unfinished += j->state != 2;
    pthread_mutex_unlock(&f->mu);
}

char *fake_rp_error_results(fake_rp *f)
{
    text t = {0};
    pthread_mutex_lock(&f->mu);
    for (fjob *j = f->jobs; j; j = j->next) {
        cJSON *r = j->result ? cJSON_Parse(j->result) : NULL;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
        if (cJSON_IsString(e))
            text_add(&t, "%s: %.900s", j->id, e->valuestring);
        cJSON_Delete(r);
    }
    pthread_mutex_unlock(&f->mu);
    char *s = text_copy(&t);
    free(t.s);
    return s;
}

char *fake_rp_late_ids(fake_rp *f)
{
    text t = {0};
    pthread_mutex_lock(&f->mu);
    for (fjob *j = f->jobs; j; j = j->next)
        if (j->late)
            text_add(&t, "%s", j->id);
    pthread_mutex_unlock(&f->mu);
    char *s = text_copy(&t);
    free(t.s);
    return s;
}

char *fake_rp_out_ids(fake_rp *f)
{
    text t = {0};
    pthread_mutex_lock(&f->mu);
    for (fjob *j = f->jobs; j; j = j->next)
        if (j->state == 1 && !j->lost)
            text_add(&t, "%s", j->id);
    pthread_mutex_unlock(&f->mu);
    for (size_t i = 0; t.s && i + 1 < t.n; i++) /* "a\nb\n" -> "a,b" */
        if (t.s[i] == '\n')
            t.s[i] = ',';
    if (t.n)
        t.s[t.n - 1] = '\0';
    char *s = text_copy(&t);
    free(t.s);
    return s;
}

char *fake_rp_ping_ids(fake_rp *f)
{
    pthread_mutex_lock(&f->mu);
    char *s = text_copy(&f->pings);
    pthread_mutex_unlock(&f->mu);
    return s;
}

char *fake_rp_violations(fake_rp *f)
{
    pthread_mutex_lock(&f->mu);
    char *s = text_copy(&f->viol);
    pthread_mutex_unlock(&f->mu);
    return s;
}
