/* http.c — libmicrohttpd front door (see http.h for the routes).
 *
 * Every request gets a `req` at its first callback (headers read, body not
 * yet): the route, method and bearer token are checked there, and a body
 * announced bigger than the limit is refused with 413 before a byte of it
 * is read (MHD then closes the connection instead of reading it). The body
 * is collected up to the limit; past it (a chunked body has no length)
 * collection stops, the rest is discarded and the answer is 413. Only the
 * last callback, with the whole body, talks to the jobs table.
 *
 * Why this never crashes on input: the body is scanned by a strict JSON
 * checker with a depth limit and explicit bounds on every read; ids from
 * the path are checked against the id alphabet and length before use; all
 * JSON we emit goes through cJSON (escaping) except the handler's own
 * output, which is copied through verbatim.
 */
#include "http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "handler.h"

struct http_server {
    struct MHD_Daemon *d;
    http_config cfg;
    char *host, *api_key, *ping_path; /* owned copies of the config strings */
    _Atomic(jobs_table *) jobs;
    atomic_int ready;
    MHD_socket quiesced_fd;
    unsigned port;
    pthread_mutex_t mu; /* guards active */
    pthread_cond_t idle_cv;
    unsigned active; /* requests begun and not yet completed */
};

enum route { R_NONE, R_RUN, R_RUNSYNC, R_STATUS, R_CANCEL, R_HEALTH, R_PING };

typedef struct {
    struct timespec t0;
    char method[16];
    char path[96];
    enum route route;
    char id[JOBS_ID_MAX + 1];
    char *body;
    size_t len, cap, discarded;
    int too_big;
    int responded;
    unsigned status;
} req;

/* ---------------------------------------------------------------- replies */

static enum MHD_Result queue(struct MHD_Connection *c, req *r, unsigned status,
                             struct MHD_Response *resp, const char *hname, const char *hval)
{
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (hname)
        MHD_add_response_header(resp, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->responded = 1;
        r->status = status;
    }
    return ret;
}

/* Sends text made by cJSON (freed with cJSON_free). */
static enum MHD_Result send_cjson(struct MHD_Connection *c, req *r, unsigned status, cJSON *obj,
                                  const char *hname, const char *hval)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text)
        return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(strlen(text), text, cJSON_free);
    if (!resp)
        cJSON_free(text);
    return queue(c, r, status, resp, hname, hval);
}

#if defined(__GNUC__)
__attribute__((format(printf, 6, 7)))
#endif
static enum MHD_Result
send_error(struct MHD_Connection *c, req *r, unsigned status, const char *hname, const char *hval,
           const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "error", msg);
    return send_cjson(c, r, status, o, hname, hval);
}

#define ERR(status, ...) send_error(c, r, status, NULL, NULL, __VA_ARGS__)

/* ------------------------------------------------------------ JSON scanner */

/* A strict RFC 8259 checker over [p, end) with a depth limit. It never
 * reads outside the range and never recurses deeper than JS_MAX_DEPTH. */
#define JS_MAX_DEPTH 256

typedef struct {
    const char *p, *end, *start;
    unsigned depth;
} jscan;

static void js_ws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int js_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int js_string(jscan *s)
{
    s->p++; /* the opening quote */
    while (s->p < s->end) {
        unsigned char ch = (unsigned char)*s->p++;
        if (ch == '"')
            return 1;
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            if (s->p >= s->end)
                return 0;
            ch = (unsigned char)*s->p++;
            if (ch == 'u') {
                if (s->end - s->p < 4)
                    return 0;
                for (int i = 0; i < 4; i++)
                    if (!js_hex(s->p[i]))
                        return 0;
                s->p += 4;
            } else if (!(ch == '"' || ch == '\\' || ch == '/' || ch == 'b' || ch == 'f' ||
                         ch == 'n' || ch == 'r' || ch == 't')) {
                return 0;
            }
        }
    }
    return 0;
}

static int js_digits(jscan *s)
{
    const char *b = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > b;
}

static int js_number(jscan *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (!js_digits(s))
        return 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!js_digits(s))
            return 0;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!js_digits(s))
            return 0;
    }
    return 1;
}

static int js_literal(jscan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

static int js_value(jscan *s);

static int js_container(jscan *s, char close, int is_object)
{
    if (++s->depth > JS_MAX_DEPTH)
        return 0;
    s->p++;
    js_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 1;
    }
    for (;;) {
        if (is_object) {
            js_ws(s);
            if (s->p >= s->end || *s->p != '"' || !js_string(s))
                return 0;
            js_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return 0;
            s->p++;
        }
        if (!js_value(s))
            return 0;
        js_ws(s);
        if (s->p >= s->end)
            return 0;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p != close)
            return 0;
        s->p++;
        s->depth--;
        return 1;
    }
}

static int js_value(jscan *s)
{
    js_ws(s);
    if (s->p >= s->end)
        return 0;
    switch (*s->p) {
    case '{': return js_container(s, '}', 1);
    case '[': return js_container(s, ']', 0);
    case '"': return js_string(s);
    case 't': return js_literal(s, "true");
    case 'f': return js_literal(s, "false");
    case 'n': return js_literal(s, "null");
    default: return js_number(s);
    }
}

/* Finds the text of the top-level "input" value of a request body. Returns
 * NULL on success or a sentence naming the problem. */
static const char *find_input(const char *body, size_t len, const char **val, size_t *vlen,
                              char *why, size_t why_cap)
{
    jscan s = {body, body + len, body, 0};
    *val = NULL;
    *vlen = 0;
    js_ws(&s);
    if (s.p >= s.end) {
        snprintf(why, why_cap, "the request body is empty; expected {\"input\": {...}}");
        return why;
    }
    if (*s.p != '{') {
        jscan whole = s;
        if (!js_value(&whole))
            goto malformed;
        snprintf(why, why_cap, "the request body must be a JSON object {\"input\": {...}}");
        return why;
    }
    s.depth = 1;
    s.p++;
    js_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            js_ws(&s);
            const char *key = s.p;
            if (s.p >= s.end || *s.p != '"' || !js_string(&s))
                goto malformed;
            int is_input = (s.p - key == 7 && memcmp(key, "\"input\"", 7) == 0);
            js_ws(&s);
            if (s.p >= s.end || *s.p != ':')
                goto malformed;
            s.p++;
            js_ws(&s);
            const char *v = s.p;
            if (!js_value(&s))
                goto malformed;
            if (is_input) {
                if (*val) {
                    snprintf(why, why_cap, "the request body has \"input\" twice");
                    return why;
                }
                *val = v;
                *vlen = (size_t)(s.p - v);
            }
            js_ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            goto malformed;
        }
    }
    js_ws(&s);
    if (s.p != s.end)
        goto malformed;
    if (!*val) {
        snprintf(why, why_cap, "the request body has no \"input\" field; expected {\"input\": {...}}");
        return why;
    }
    return NULL;
malformed:
    if (s.depth > JS_MAX_DEPTH)
        snprintf(why, why_cap, "the request body nests deeper than %d levels", JS_MAX_DEPTH);
    else
        snprintf(why, why_cap, "the request body is not valid JSON (error at byte %zu of %zu)",
                 (size_t)(s.p - s.start), len);
    return why;
}

/* ------------------------------------------------------------- job replies */

/* "code: message" from the handler's {"error": {"code","message"}} (or a
 * string "error"); a generic sentence when the reply has neither. */
static void error_text(const jobs_result *jr, char *out, size_t cap)
{
    snprintf(out, cap, "the request failed (HTTP %d)", jr->http_status);
    if (!jr->output)
        return;
    cJSON *o = cJSON_ParseWithLength(jr->output, jr->output_len);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (cJSON_IsString(e)) {
        snprintf(out, cap, "%s", e->valuestring);
    } else if (cJSON_IsObject(e)) {
        cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        const char *cs = cJSON_IsString(code) ? code->valuestring : "error";
        if (cJSON_IsString(msg))
            snprintf(out, cap, "%s: %s", cs, msg->valuestring);
        else
            snprintf(out, cap, "%s", cs);
    }
    cJSON_Delete(o);
}

/* {"id","status","output"?,"error"?} for jr. */
static enum MHD_Result send_job(struct MHD_Connection *c, req *r, unsigned status,
                                const jobs_result *jr)
{
    if (jr->state == JOBS_COMPLETED && jr->output) {
        /* Verbatim copy of the handler's JSON (it can be megabytes; no re-parse). */
        static const char fmt[] = "{\"id\":\"%s\",\"status\":\"COMPLETED\",\"output\":";
        char head[sizeof fmt + JOBS_ID_MAX];
        int hn = snprintf(head, sizeof head, fmt, jr->id);
        size_t n = (size_t)hn + jr->output_len + 1;
        char *buf = malloc(n + 1);
        if (!buf)
            return ERR(500, "out of memory for a %zu-byte reply", n);
        memcpy(buf, head, (size_t)hn);
        memcpy(buf + hn, jr->output, jr->output_len);
        buf[n - 1] = '}';
        buf[n] = '\0';
        return queue(c, r, status,
                     MHD_create_response_from_buffer(n, buf, MHD_RESPMEM_MUST_FREE), NULL, NULL);
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return MHD_NO;
    cJSON_AddStringToObject(o, "id", jr->id);
    cJSON_AddStringToObject(o, "status", jobs_state_name(jr->state));
    if (jr->state == JOBS_FAILED || jr->state == JOBS_TIMED_OUT) {
        char msg[1024];
        error_text(jr, msg, sizeof msg);
        cJSON_AddStringToObject(o, "error", msg);
    }
    return send_cjson(c, r, status, o, NULL, NULL);
}

/* ------------------------------------------------------------------ routes */

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JOBS_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

/* Constant time in the length of the expected key: every byte of it is
 * looked at whatever the given token is. */
static int token_ok(const char *given, size_t glen, const char *key)
{
    size_t klen = strlen(key);
    volatile unsigned char diff = (unsigned char)(glen != klen);
    for (size_t i = 0; i < klen; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)key[i]);
    }
    return diff == 0;
}

static int authorized(http_server *s, struct MHD_Connection *c)
{
    if (!s->api_key)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    return token_ok(h, n, s->api_key);
}

static int is_get(const char *m) { return !strcmp(m, "GET") || !strcmp(m, "HEAD"); }

/* First callback: decides the route or answers. Returns MHD_YES to go on. */
static enum MHD_Result begin(http_server *s, struct MHD_Connection *c, req *r, const char *url,
                             const char *method)
{
    if (!strcmp(url, s->ping_path)) {
        if (!is_get(method))
            return send_error(c, r, 405, MHD_HTTP_HEADER_ALLOW, "GET, HEAD",
                              "method %s is not allowed on %s (use GET)", r->method, r->path);
        r->route = R_PING;
        return MHD_YES;
    }
    if (s->cfg.ping_only)
        return ERR(404, "no such route: %s (this port serves only %s)", r->path, s->ping_path);
    if (!authorized(s, c))
        return send_error(c, r, 401, "WWW-Authenticate", "Bearer",
                          "missing or wrong API key (send the header Authorization: Bearer <key>)");

    const char *allow = NULL;
    if (!strcmp(url, "/run")) {
        r->route = R_RUN, allow = "POST";
    } else if (!strcmp(url, "/runsync")) {
        r->route = R_RUNSYNC, allow = "POST";
    } else if (!strcmp(url, "/health")) {
        r->route = R_HEALTH, allow = "GET, HEAD";
    } else if (!strncmp(url, "/status/", 8) || !strncmp(url, "/cancel/", 8)) {
        int status = url[1] == 's';
        r->route = status ? R_STATUS : R_CANCEL, allow = status ? "GET, HEAD" : "POST";
        if (!valid_id(url + 8))
            return ERR(404, "no job with id \"%.40s\" (job ids look like job-<32 hex digits>)",
                       url + 8);
        snprintf(r->id, sizeof r->id, "%s", url + 8);
    } else {
        return ERR(404, "no such route: %s %s (routes: POST /run, POST /runsync, GET /status/{id},"
                        " POST /cancel/{id}, GET /health, GET %s)",
                   r->method, r->path, s->ping_path);
    }
    int get_ok = strstr(allow, "GET") != NULL;
    if (get_ok ? !is_get(method) : strcmp(method, "POST") != 0)
        return send_error(c, r, 405, MHD_HTTP_HEADER_ALLOW, allow,
                          "method %s is not allowed on %s (use %s)", r->method, r->path,
                          get_ok ? "GET" : "POST");

    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && n > s->cfg.max_body)
            return ERR(413, "the request body is %llu bytes; the limit is %zu bytes", n,
                       s->cfg.max_body);
        if (end != cl && n > 0 && (r->body = malloc((size_t)n + 1)) != NULL)
            r->cap = (size_t)n + 1;
    }
    return MHD_YES;
}

/* Appends upload data; past the limit the body is dropped and discarded. */
static enum MHD_Result take_body(http_server *s, struct MHD_Connection *c, req *r,
                                 const char *data, size_t n)
{
    if (r->too_big || n > s->cfg.max_body - r->len) {
        if (!r->too_big) {
            r->too_big = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
        }
        /* Nobody gets to stream forever: after twice the limit, hang up. */
        r->discarded += n;
        return r->discarded > s->cfg.max_body ? MHD_NO : MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 65536;
        while (cap < r->len + n + 1)
            cap = cap > s->cfg.max_body / 2 ? s->cfg.max_body + 1 : cap * 2;
        char *nb = realloc(r->body, cap);
        if (!nb)
            return ERR(500, "out of memory for a %zu-byte request body", r->len + n);
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

static enum MHD_Result loading(struct MHD_Connection *c, req *r)
{
    return send_error(c, r, 503, "Retry-After", "5", "the worker is still loading its model");
}

static enum MHD_Result do_health(struct MHD_Connection *c, req *r, jobs_table *jobs)
{
    jobs_stats st;
    jobs_get_stats(jobs, &st);
    cJSON *o = cJSON_CreateObject(), *j = cJSON_AddObjectToObject(o, "jobs"),
          *w = cJSON_AddObjectToObject(o, "workers");
    if (!j || !w) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    cJSON_AddNumberToObject(j, "completed", (double)st.completed);
    cJSON_AddNumberToObject(j, "failed", (double)st.failed);
    cJSON_AddNumberToObject(j, "inProgress", st.in_progress);
    cJSON_AddNumberToObject(j, "inQueue", st.in_queue);
    cJSON_AddNumberToObject(j, "retried", 0);
    cJSON_AddNumberToObject(w, "idle", st.workers_idle);
    cJSON_AddNumberToObject(w, "running", st.workers_running);
    return send_cjson(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result do_submit(http_server *s, struct MHD_Connection *c, req *r,
                                 jobs_table *jobs)
{
    unsigned wait_ms = s->cfg.runsync_wait_ms;
    if (r->route == R_RUNSYNC) {
        const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
        if (w) {
            size_t n = strlen(w);
            if (n == 0 || n > 9 || strspn(w, "0123456789") != n)
                return ERR(400, "?wait must be a whole number of milliseconds, got \"%.20s\"", w);
            unsigned long v = strtoul(w, NULL, 10);
            wait_ms = v > s->cfg.runsync_max_wait_ms ? s->cfg.runsync_max_wait_ms : (unsigned)v;
        }
    }
    const char *input;
    size_t ilen;
    char why[160];
    if (find_input(r->body ? r->body : "", r->len, &input, &ilen, why, sizeof why))
        return ERR(400, "%s", why);

    char id[JOBS_ID_MAX + 1];
    inf_error err = {{0}};
    inf_status st = jobs_submit(jobs, input, ilen, id, &err);
    free(r->body); /* the table has its own copy */
    r->body = NULL;
    r->len = r->cap = 0;
    if (st == INF_E_BUSY)
        return send_error(c, r, 503, "Retry-After", "1", "%s", err.msg);
    if (st != INF_OK)
        return ERR(500, "%s", err.msg);

    jobs_result jr;
    if (jobs_wait(jobs, id, r->route == R_RUNSYNC ? wait_ms : 0, &jr, &err) != INF_OK)
        return ERR(500, "the job vanished: %s", err.msg); /* only if evicted at once */
    /* A wait longer than the idle timeout is fine: MHD counts idleness
     * from the callback's return (test runsync_longer_than_idle_timeout). */
    unsigned status = 200;
    if (r->route == R_RUNSYNC && (jr.state == JOBS_FAILED || jr.state == JOBS_TIMED_OUT))
        status = jr.http_status >= 400 && jr.http_status <= 599 ? (unsigned)jr.http_status : 500;
    enum MHD_Result ret;
    if (r->route == R_RUN) {
        /* /run always reports IN_QUEUE, as RunPod does, even if a pool
         * thread has already picked the job up. */
        jr.state = JOBS_IN_QUEUE;
    }
    ret = send_job(c, r, status, &jr);
    jobs_result_release(jobs, &jr);
    return ret;
}

static enum MHD_Result dispatch(http_server *s, struct MHD_Connection *c, req *r)
{
    if (r->too_big)
        return ERR(413, "the request body is over the limit of %zu bytes", s->cfg.max_body);
    if (r->route == R_PING) {
        if (atomic_load(&s->ready))
            return send_cjson(c, r, 200, cJSON_Parse("{\"status\":\"healthy\"}"), NULL, NULL);
        return queue(c, r, 204, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT),
                     NULL, NULL);
    }
    jobs_table *jobs = atomic_load(&s->jobs);
    if (!jobs)
        return loading(c, r);
    inf_error err = {{0}};
    switch (r->route) {
    case R_HEALTH:
        return do_health(c, r, jobs);
    case R_RUN:
    case R_RUNSYNC:
        return do_submit(s, c, r, jobs);
    case R_STATUS: {
        jobs_result jr;
        if (jobs_wait(jobs, r->id, 0, &jr, &err) != INF_OK)
            return ERR(404, "%s", err.msg);
        enum MHD_Result ret = send_job(c, r, 200, &jr);
        jobs_result_release(jobs, &jr);
        return ret;
    }
    case R_CANCEL: {
        jobs_state st;
        if (jobs_cancel(jobs, r->id, &st, &err) != INF_OK)
            return ERR(404, "%s", err.msg);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", r->id);
        cJSON_AddStringToObject(o, "status", jobs_state_name(st));
        return send_cjson(c, r, 200, o, NULL, NULL);
    }
    default:
        return ERR(500, "internal error: no route");
    }
}

static void copy_printable(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] > 0x20 && src[i] < 0x7f) ? src[i] : '?';
    dst[i] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    http_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        s->active++;
        pthread_mutex_unlock(&s->mu);
        clock_gettime(CLOCK_MONOTONIC, &r->t0);
        copy_printable(r->method, sizeof r->method, method);
        copy_printable(r->path, sizeof r->path, url);
        return begin(s, c, r, url, method);
    }
    if (r->responded) { /* answered early; whatever still comes is dropped */
        *data_size = 0;
        return MHD_YES;
    }
    if (*data_size) {
        enum MHD_Result ret = take_body(s, c, r, data, *data_size);
        *data_size = 0;
        return ret;
    }
    return dispatch(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    req *r = *con_cls;
    if (!r)
        return;
    if (s->cfg.log) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - r->t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e6;
        fprintf(stderr, "http: %s %s %u %.1f ms%s\n", r->method, r->path, r->status, ms,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    }
    free(r->body);
    free(r);
    *con_cls = NULL;
    pthread_mutex_lock(&s->mu);
    if (--s->active == 0)
        pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------ server */

static char *dup_or_null(const char *s)
{
    if (!s || !*s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void free_server(http_server *s)
{
    if (s->api_key) {
        /* a secret: wipe before freeing */
        volatile char *p = s->api_key;
        while (*p)
            *p++ = 0;
    }
    free(s->api_key);
    free(s->host);
    free(s->ping_path);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

inf_status http_start(const http_config *cfg, http_server **out, inf_error *err)
{
    *out = NULL;
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return inf_fail(err, INF_E_NOMEM, "http: out of memory");
    s->cfg = *cfg;
    s->quiesced_fd = MHD_INVALID_SOCKET;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->host = dup_or_null(cfg->host ? cfg->host : "127.0.0.1");
    s->ping_path = dup_or_null(cfg->ping_path ? cfg->ping_path : "/ping");
    s->api_key = dup_or_null(cfg->api_key);
    if (!s->host || !s->ping_path || (cfg->api_key && *cfg->api_key && !s->api_key)) {
        free_server(s);
        return inf_fail(err, INF_E_NOMEM, "http: out of memory");
    }
    if (s->ping_path[0] != '/') {
        inf_fail(err, INF_E_ARG, "http: health check path \"%.100s\" must start with /", s->ping_path);
        free_server(s);
        return INF_E_ARG;
    }
    if (!s->cfg.max_body)
        s->cfg.max_body = INF_MAX_REQUEST_BYTES;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 128;
    if (!s->cfg.conn_timeout_s)
        s->cfg.conn_timeout_s = 60;
    if (!s->cfg.runsync_max_wait_ms)
        s->cfg.runsync_max_wait_ms = 300000;
    if (!s->cfg.runsync_wait_ms)
        s->cfg.runsync_wait_ms = 90000;
    if (s->cfg.runsync_wait_ms > s->cfg.runsync_max_wait_ms)
        s->cfg.runsync_wait_ms = s->cfg.runsync_max_wait_ms;
    if (cfg->port > 65535) {
        inf_fail(err, INF_E_ARG, "http: port %u is out of range (0..65535)", cfg->port);
        free_server(s);
        return INF_E_ARG;
    }

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(s->host, NULL, &hints, &ai);
    if (gai != 0 || !ai) {
        inf_fail(err, INF_E_ARG, "http: cannot resolve host \"%.100s\": %s", s->host,
                 gai_strerror(gai));
        free_server(s);
        return INF_E_ARG;
    }
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen < sizeof sa ? ai->ai_addrlen : sizeof sa);
    int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)cfg->port);
    else
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)cfg->port);

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0) |
                     (cfg->log ? MHD_USE_ERROR_LOG : 0);
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.conn_timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_END);
    if (!s->d) {
        inf_fail(err, INF_E_IO, "http: cannot listen on %s port %u (in use, or not allowed?)",
                 s->host, cfg->port);
        free_server(s);
        return INF_E_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    *out = s;
    return INF_OK;
}

unsigned http_port(const http_server *s) { return s->port; }

void http_set_jobs(http_server *s, jobs_table *jobs)
{
    atomic_store(&s->jobs, jobs);
    atomic_store(&s->ready, jobs != NULL);
}

void http_set_ready(http_server *s, int ready) { atomic_store(&s->ready, ready != 0); }

void http_quiesce(http_server *s)
{
    if (s && s->d && s->quiesced_fd == MHD_INVALID_SOCKET)
        s->quiesced_fd = MHD_quiesce_daemon(s->d);
}

unsigned http_drain(http_server *s, unsigned timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000u);
    dl.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (s->active > 0 && pthread_cond_timedwait(&s->idle_cv, &s->mu, &dl) == 0) {
    }
    unsigned left = s->active;
    pthread_mutex_unlock(&s->mu);
    return left;
}

void http_stop(http_server *s)
{
    if (!s)
        return;
    if (s->d)
        MHD_stop_daemon(s->d);
    if (s->quiesced_fd != MHD_INVALID_SOCKET)
        close(s->quiesced_fd);
    free_server(s);
}
