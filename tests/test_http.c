/* test_http.c — the worker's HTTP front door (worker/http.c, worker/jobs.c)
 * and the worker binary (worker/main.c), over real loopback HTTP with
 * libcurl. tests/fake_handler.c stands in for the real request handler.
 *
 * If these fail, a user would see `infemeral chat --endpoint` hang, get
 * someone else's reply, lose a reply on /runsync, be let in without the API
 * key, or crash the dev server with a bad request.
 */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handler.h"
#include "http.h"
#include "jobs.h"

int fake_handler_calls(void);

/* ---------------------------------------------------------------- fixture */

static jobs_table *g_jobs;
static http_server *g_srv;
static inf_handler *g_h;
static char g_base[64];

static char *fake_fn(void *ctx, const char *in, size_t len, int *st)
{
    return inf_handle(ctx, in, len, st);
}

/* Returns the input text itself: shows what exactly the handler received. */
static char *raw_fn(void *ctx, const char *in, size_t len, int *st)
{
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, in, len);
    s[len] = '\0';
    *st = 200;
    return s;
}

static void start_fn(const jobs_config *jc, const http_config *hc_in, jobs_fn fn, int attach)
{
    inf_error err = {{0}};
    http_config hc = {0};
    if (hc_in)
        hc = *hc_in;
    hc.host = "127.0.0.1";
    hc.port = 0;
    cr_assert_eq(inf_handler_create(NULL, &g_h, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(jobs_create(jc, fn, g_h, &g_jobs, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(http_start(&hc, &g_srv, &err), INF_OK, "%s", err.msg);
    if (attach)
        http_set_jobs(g_srv, g_jobs);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%u", http_port(g_srv));
}

static void start(const jobs_config *jc, const http_config *hc)
{
    start_fn(jc, hc, fake_fn, 1);
}

static void stop(void)
{
    if (g_jobs)
        jobs_shutdown(g_jobs, 10000, NULL);
    if (g_srv)
        http_drain(g_srv, 5000);
    http_stop(g_srv);
    jobs_destroy(g_jobs);
    inf_handler_destroy(g_h);
    g_srv = NULL;
    g_jobs = NULL;
    g_h = NULL;
}

static void init_suite(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

TestSuite(http, .init = init_suite, .fini = stop, .timeout = 60);

/* ------------------------------------------------------------ HTTP client */

typedef struct {
    CURLcode rc;
    long code;
    char *body;
    size_t len;
    char allow[128];
    char retry_after[32];
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = sz * n;
    char *nb = realloc(r->body, r->len + k + 1);
    if (!nb)
        return 0;
    memcpy(nb + r->len, p, k);
    r->body = nb;
    r->len += k;
    r->body[r->len] = '\0';
    return k;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl;
    size_t vn = n - nl;
    while (vn && (*v == ' '))
        v++, vn--;
    while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n'))
        vn--;
    snprintf(out, cap, "%.*s", (int)vn, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    header_value(p, sz * n, "Allow:", r->allow, sizeof r->allow);
    header_value(p, sz * n, "Retry-After:", r->retry_after, sizeof r->retry_after);
    return sz * n;
}

/* One request on a fresh connection (or on `reuse` when given). */
static resp req_on(CURL *reuse, const char *base, const char *method, const char *path,
                   const char *body, size_t body_len, const char *auth)
{
    resp r = {0};
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *c = reuse ? reuse : curl_easy_init();
    struct curl_slist *hdr = NULL;
    if (auth)
        hdr = curl_slist_append(hdr, auth);
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
    curl_slist_free_all(hdr);
    if (!reuse)
        curl_easy_cleanup(c);
    else
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    return r;
}

static resp req_auth(const char *method, const char *path, const char *body, const char *auth)
{
    return req_on(NULL, g_base, method, path, body, body ? strlen(body) : 0, auth);
}

static resp req(const char *method, const char *path, const char *body)
{
    return req_auth(method, path, body, NULL);
}

static void resp_free(resp *r) { free(r->body); r->body = NULL; }

/* The reply as JSON; fails the test when it is not JSON. */
static cJSON *json_of(const resp *r)
{
    cr_assert_eq(r->rc, CURLE_OK, "curl: %s", curl_easy_strerror(r->rc));
    cJSON *o = r->body ? cJSON_Parse(r->body) : NULL;
    cr_assert_not_null(o, "reply is not JSON (HTTP %ld): %s", r->code, r->body ? r->body : "(none)");
    return o;
}

static const char *jstr(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(cJSON *o, const char *path1, const char *path2)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, path1);
    if (path2)
        v = cJSON_GetObjectItemCaseSensitive(v, path2);
    cr_assert(cJSON_IsNumber(v), "no number %s.%s", path1, path2 ? path2 : "");
    return v->valuedouble;
}

/* An error reply: the status, and a JSON {"error": "..."} containing `has`. */
static void expect_error(resp *r, long status, const char *has)
{
    cr_assert_eq(r->code, status, "HTTP %ld, wanted %ld: %s", r->code, status,
                 r->body ? r->body : "");
    cJSON *o = json_of(r);
    const char *e = jstr(o, "error");
    cr_assert_not_null(e, "no \"error\" string in %s", r->body);
    if (has)
        cr_assert(strstr(e, has), "error \"%s\" does not mention \"%s\"", e, has);
    cJSON_Delete(o);
    resp_free(r);
}

static void msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Submits with /run and returns the id (caller frees). */
static char *submit(const char *input_json)
{
    char body[4096];
    snprintf(body, sizeof body, "{\"input\": %s}", input_json);
    resp r = req("POST", "/run", body);
    cr_assert_eq(r.code, 200, "/run answered %ld: %s", r.code, r.body);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "IN_QUEUE");
    char *id = strdup(jstr(o, "id"));
    cJSON_Delete(o);
    resp_free(&r);
    return id;
}

/* GET /status/{id} until its status is `want` (or timeout); returns the reply JSON. */
static cJSON *wait_status(const char *id, const char *want, long timeout_ms)
{
    char path[128];
    snprintf(path, sizeof path, "/status/%s", id);
    for (long waited = 0;; waited += 20) {
        resp r = req("GET", path, NULL);
        cr_assert_eq(r.code, 200, "status answered %ld: %s", r.code, r.body);
        cJSON *o = json_of(&r);
        resp_free(&r);
        if (!strcmp(jstr(o, "status"), want))
            return o;
        cr_assert(waited < timeout_ms, "job %s still %s after %ld ms (wanted %s)", id,
                  jstr(o, "status"), timeout_ms, want);
        cJSON_Delete(o);
        msleep(20);
    }
}

/* ------------------------------------------------------------------ tests */

Test(http, ping_is_204_while_loading_then_200_ready)
{
    /* A user (or RunPod's load balancer) would route traffic to a worker
     * whose model is not loaded yet. */
    start_fn(NULL, NULL, fake_fn, 0);
    resp r = req("GET", "/ping", NULL);
    cr_assert_eq(r.code, 204, "ping while loading: %ld", r.code);
    resp_free(&r);
    r = req("POST", "/run", "{\"input\":{}}");
    expect_error(&r, 503, "loading");
    http_set_jobs(g_srv, g_jobs);
    r = req("GET", "/ping", NULL);
    cr_assert_eq(r.code, 200);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "healthy");
    cJSON_Delete(o);
    resp_free(&r);
}

Test(http, run_then_status_completed)
{
    /* A user's async job would never report its output. */
    start(NULL, NULL);
    char *id = submit("{\"echo\": \"hello\"}");
    cr_assert_eq(strncmp(id, "job-", 4), 0, "id %s", id);
    cr_assert_eq(strlen(id), 36u, "id %s is not job-<32 hex>", id);
    cJSON *o = wait_status(id, "COMPLETED", 5000);
    cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
    cr_assert_str_eq(jstr(out, "echo"), "hello");
    cr_assert_str_eq(jstr(o, "id"), id);
    cJSON_Delete(o);
    free(id);
}

Test(http, runsync_completed_and_input_passed_verbatim)
{
    /* The handler would get a re-encoded or truncated envelope (numbers,
     * escapes or key order changed), breaking the sealed payload. */
    start_fn(NULL, NULL, raw_fn, 1);
    const char *in = "{\"a\": 1.50, \"b\":\"\\u00e9\\\"}\" , \"c\":[12345678901234567890, {}]}";
    char body[512];
    snprintf(body, sizeof body, " {\"webhook\": null, \"input\" : %s\n, \"policy\": {}} ", in);
    resp r = req("POST", "/runsync", body);
    cr_assert_eq(r.code, 200, "%ld %s", r.code, r.body);
    char want[512];
    snprintf(want, sizeof want, "\"status\":\"COMPLETED\",\"output\":%s}", in);
    cr_assert(strstr(r.body, want), "output not verbatim: %s", r.body);
    cJSON_Delete(json_of(&r));
    resp_free(&r);
}

Test(http, runsync_timeout_returns_in_progress_then_status_completed)
{
    /* A user's client would treat a slow step as finished (or failed)
     * instead of polling /status for it. */
    start(NULL, NULL);
    resp r = req("POST", "/runsync?wait=150", "{\"input\": {\"echo\": 7, \"sleep_ms\": 700}}");
    cr_assert_eq(r.code, 200);
    cJSON *o = json_of(&r);
    const char *st = jstr(o, "status");
    cr_assert(!strcmp(st, "IN_PROGRESS") || !strcmp(st, "IN_QUEUE"), "status %s", st);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(o, "output"));
    char *id = strdup(jstr(o, "id"));
    cJSON_Delete(o);
    resp_free(&r);
    o = wait_status(id, "COMPLETED", 5000);
    cr_assert_eq(jnum(o, "output", "echo"), 7);
    cJSON_Delete(o);
    free(id);
}

Test(http, runsync_failure_uses_handler_status_and_error_text)
{
    /* A user would see "COMPLETED" with an error inside, or a bare 500,
     * instead of the handler's reason (e.g. a wrong key or shape). */
    start(NULL, NULL);
    resp r = req("POST", "/runsync", "{\"input\": {\"fail\": \"bad_shape\", \"status\": 422}}");
    cr_assert_eq(r.code, 422, "%ld %s", r.code, r.body);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "FAILED");
    cr_assert_str_eq(jstr(o, "error"), "bad_shape: fake failure");
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(o, "output"));
    cJSON_Delete(o);
    resp_free(&r);

    char *id = submit("{\"fail\": \"auth\", \"status\": 401}");
    o = wait_status(id, "FAILED", 5000);
    cr_assert_str_eq(jstr(o, "error"), "auth: fake failure");
    cJSON_Delete(o);
    free(id);
}

Test(http, cancel_queued_job_never_runs)
{
    /* A cancelled request would still run on the GPU and burn a worker. */
    jobs_config jc = {.threads = 1};
    start(&jc, NULL);
    char *a = submit("{\"echo\": \"a\", \"sleep_ms\": 400}");
    char *b = submit("{\"echo\": \"b\"}");
    char path[128];
    snprintf(path, sizeof path, "/cancel/%s", b);
    resp r = req("POST", path, NULL);
    cr_assert_eq(r.code, 200);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "CANCELLED");
    cr_assert_str_eq(jstr(o, "id"), b);
    cJSON_Delete(o);
    resp_free(&r);
    cJSON_Delete(wait_status(a, "COMPLETED", 5000));
    msleep(100);
    o = wait_status(b, "CANCELLED", 10);
    cJSON_Delete(o);
    cr_assert_eq(fake_handler_calls(), 1, "the cancelled job ran");
    /* Cancelling a finished job leaves it as it was. */
    snprintf(path, sizeof path, "/cancel/%s", a);
    r = req("POST", path, NULL);
    o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "COMPLETED");
    cJSON_Delete(o);
    resp_free(&r);
    free(a);
    free(b);
}

Test(http, cancel_running_job_discards_its_result)
{
    /* A cancelled job would later flip to COMPLETED and deliver output. */
    start(NULL, NULL);
    char *a = submit("{\"echo\": \"a\", \"sleep_ms\": 400}");
    cJSON_Delete(wait_status(a, "IN_PROGRESS", 2000));
    char path[128];
    snprintf(path, sizeof path, "/cancel/%s", a);
    resp r = req("POST", path, NULL);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "CANCELLED");
    cJSON_Delete(o);
    resp_free(&r);
    msleep(700);
    o = wait_status(a, "CANCELLED", 10);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(o, "output"));
    cJSON_Delete(o);
    free(a);
}

Test(http, unknown_job_ids_are_404)
{
    /* A typo'd or expired job id would crash the server or hang the client. */
    start(NULL, NULL);
    resp r = req("GET", "/status/job-00000000000000000000000000000000", NULL);
    expect_error(&r, 404, "no job");
    r = req("POST", "/cancel/job-00000000000000000000000000000000", NULL);
    expect_error(&r, 404, "no job");
    r = req("GET", "/status/", NULL);
    expect_error(&r, 404, NULL);
    r = req("GET", "/status/job-%00x", NULL);
    expect_error(&r, 404, NULL);
    char longid[300] = "/status/";
    memset(longid + 8, 'a', 250);
    r = req("GET", longid, NULL);
    expect_error(&r, 404, NULL);
}

Test(http, health_counts_jobs_and_workers)
{
    /* RunPod-style monitoring would show wrong queue depth and worker use. */
    jobs_config jc = {.threads = 2};
    start(&jc, NULL);
    resp r = req("POST", "/runsync", "{\"input\": {\"echo\": 1}}");
    resp_free(&r);
    r = req("POST", "/runsync", "{\"input\": {\"echo\": 2}}");
    resp_free(&r);
    r = req("POST", "/runsync", "{\"input\": {\"fail\": \"x\"}}");
    resp_free(&r);
    char *slow = submit("{\"sleep_ms\": 500}");
    cJSON_Delete(wait_status(slow, "IN_PROGRESS", 2000));
    r = req("GET", "/health", NULL);
    cr_assert_eq(r.code, 200);
    cJSON *o = json_of(&r);
    cr_assert_eq(jnum(o, "jobs", "completed"), 2);
    cr_assert_eq(jnum(o, "jobs", "failed"), 1);
    cr_assert_eq(jnum(o, "jobs", "inProgress"), 1);
    cr_assert_eq(jnum(o, "jobs", "inQueue"), 0);
    cr_assert_eq(jnum(o, "jobs", "retried"), 0);
    cr_assert_eq(jnum(o, "workers", "running"), 1);
    cr_assert_eq(jnum(o, "workers", "idle"), 1);
    cJSON_Delete(o);
    resp_free(&r);
    free(slow);
}

Test(http, bearer_token_required_and_checked)
{
    /* Anyone on the network could use (and pay for) the user's worker. */
    http_config hc = {.api_key = "s3cret-key"};
    start(NULL, &hc);
    const char *bad[] = {NULL, "Authorization: Bearer wrong", "Authorization: Bearer s3cret-ke",
                         "Authorization: Bearer s3cret-key2", "Authorization: Basic s3cret-key",
                         "Authorization: s3cret-key", "Authorization: Bearer "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp r = req_auth("POST", "/runsync", "{\"input\": {\"echo\": 1}}", bad[i]);
        expect_error(&r, 401, "API key");
        r = req_auth("GET", "/health", NULL, bad[i]);
        expect_error(&r, 401, NULL);
    }
    resp r = req_auth("GET", "/nowhere", NULL, NULL);
    expect_error(&r, 401, NULL);
    cr_assert_eq(fake_handler_calls(), 0);

    r = req_auth("POST", "/runsync", "{\"input\": {\"echo\": 1}}", "Authorization: Bearer s3cret-key");
    cr_assert_eq(r.code, 200, "%ld %s", r.code, r.body);
    resp_free(&r);
    r = req_auth("GET", "/health", NULL, "authorization: bearer s3cret-key");
    cr_assert_eq(r.code, 200);
    resp_free(&r);
    r = req("GET", "/ping", NULL); /* the load balancer has no key */
    cr_assert_eq(r.code, 200);
    resp_free(&r);
}

Test(http, oversized_body_is_413_before_the_handler_runs)
{
    /* A huge request would be read into memory and handed to the model. */
    http_config hc = {.max_body = 1024};
    start(NULL, &hc);
    size_t n = 4096;
    char *body = malloc(n + 1);
    cr_assert_not_null(body);
    memset(body, ' ', n);
    memcpy(body, "{\"input\": {\"echo\": 1}}", 22);
    body[n] = '\0';
    resp r = req_on(NULL, g_base, "POST", "/runsync", body, n, NULL);
    expect_error(&r, 413, "limit");
    r = req_on(NULL, g_base, "POST", "/run", body, 1025, NULL);
    expect_error(&r, 413, "1024");
    r = req_on(NULL, g_base, "POST", "/run", body, 1024, NULL); /* exactly at the limit */
    cr_assert_eq(r.code, 200, "%ld %s", r.code, r.body);
    resp_free(&r);
    free(body);
    msleep(100);
    cr_assert_eq(fake_handler_calls(), 1, "only the in-limit job may reach the handler");
}

Test(http, default_limit_refuses_a_body_over_inf_max_request_bytes)
{
    /* A client that sends 25 MB would tie the worker up reading it. */
    start(NULL, NULL);
    size_t n = (size_t)INF_MAX_REQUEST_BYTES + 1;
    char *body = malloc(n);
    cr_assert_not_null(body);
    memset(body, ' ', n);
    memcpy(body, "{\"input\": {}}", 13);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    resp r = req_on(NULL, g_base, "POST", "/runsync", body, n, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    expect_error(&r, 413, "limit");
    free(body);
    cr_assert_eq(fake_handler_calls(), 0);
}

typedef struct {
    size_t left;
} chunk_src;

static size_t read_chunks(char *buf, size_t sz, size_t n, void *ud)
{
    chunk_src *s = ud;
    size_t k = sz * n < s->left ? sz * n : s->left;
    if (k > 100)
        k = 100;
    memset(buf, ' ', k);
    s->left -= k;
    return k;
}

Test(http, streamed_chunked_body_over_limit_is_refused)
{
    /* A chunked upload (no Content-Length) could grow without bound. */
    http_config hc = {.max_body = 1024};
    start(NULL, &hc);
    for (int big = 0; big < 2; big++) {
        CURL *c = curl_easy_init();
        resp r = {0};
        chunk_src src = {big ? 100000 : 1500};
        char url[128];
        snprintf(url, sizeof url, "%s/run", g_base);
        struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, read_chunks);
        curl_easy_setopt(c, CURLOPT_READDATA, &src);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
        r.rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        if (!big) {
            expect_error(&r, 413, "limit");
        } else {
            /* Far past the limit the server may hang up instead of answering. */
            cr_assert(r.rc != CURLE_OK || r.code == 413, "rc %d code %ld", r.rc, r.code);
            resp_free(&r);
        }
    }
    cr_assert_eq(fake_handler_calls(), 0);
    resp r = req("GET", "/ping", NULL);
    cr_assert_eq(r.code, 200, "server did not survive");
    resp_free(&r);
}

Test(http, malformed_or_missing_input_is_400_naming_the_problem)
{
    /* A client bug would crash the worker or reach the model as garbage. */
    start(NULL, NULL);
    static const struct {
        const char *body, *has;
    } cases[] = {
        {"", "empty"},
        {"   ", "empty"},
        {"{", "not valid JSON"},
        {"{\"input\":", "not valid JSON"},
        {"not json", "not valid JSON"},
        {"[1, 2]", "object"},
        {"\"str\"", "object"},
        {"{\"input\": {}} x", "not valid JSON"},
        {"{\"inp\": {}}", "\"input\""},
        {"{}", "\"input\""},
        {"{\"input\": {}, \"input\": {}}", "twice"},
        {"{\"input\": tru}", "not valid JSON"},
        {"{\"input\": {\"a\": \"\x01\"}}", "not valid JSON"},
        {"{\"input\": {\"a\": \"\\x\"}}", "not valid JSON"},
        {"{\"input\": {\"a\": \"\\u12\"}}", "not valid JSON"},
        {"{\"input\": [1,]}", "not valid JSON"},
        {"{\"input\": 01}", "not valid JSON"},
        {"{\"input\": 1.}", "not valid JSON"},
        {"{\"input\": -}", "not valid JSON"},
        {"{\"input\": {} ,}", "not valid JSON"},
        {"{'input': {}}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp r = req("POST", i % 2 ? "/run" : "/runsync", cases[i].body);
        cr_assert_eq(r.code, 400, "case %zu (%s): HTTP %ld", i, cases[i].body, r.code);
        expect_error(&r, 400, cases[i].has);
    }
    /* Deep nesting is refused, not recursed into. */
    size_t depth = 100000;
    char *deep = malloc(depth + 32);
    cr_assert_not_null(deep);
    strcpy(deep, "{\"input\": ");
    memset(deep + 10, '[', depth);
    deep[10 + depth] = '\0';
    resp r = req("POST", "/run", deep);
    expect_error(&r, 400, "deeper");
    free(deep);
    /* Embedded NUL bytes. */
    static const char nul[] = "{\"input\": {\"a\": \"x\0y\"}}";
    r = req_on(NULL, g_base, "POST", "/run", nul, sizeof nul - 1, NULL);
    expect_error(&r, 400, "not valid JSON");
    cr_assert_eq(fake_handler_calls(), 0);
}

Test(http, unknown_route_404_wrong_method_405)
{
    /* A client calling a wrong URL would get HTML, a hang, or a 200. */
    start(NULL, NULL);
    resp r = req("GET", "/nope", NULL);
    expect_error(&r, 404, "no such route");
    r = req("POST", "/v2/run", "{}");
    expect_error(&r, 404, NULL);
    r = req("GET", "/run", NULL);
    cr_assert_str_eq(r.allow, "POST");
    expect_error(&r, 405, "POST");
    r = req("PUT", "/runsync", "{}");
    expect_error(&r, 405, NULL);
    r = req("POST", "/health", "{}");
    cr_assert_str_eq(r.allow, "GET, HEAD");
    expect_error(&r, 405, "GET");
    r = req("DELETE", "/status/job-1", NULL);
    expect_error(&r, 405, NULL);
    r = req("GET", "/cancel/job-1", NULL);
    expect_error(&r, 405, NULL);
    r = req("POST", "/ping", "{}");
    expect_error(&r, 405, NULL);
    r = req("HEAD", "/health", NULL);
    cr_assert_eq(r.code, 200);
    resp_free(&r);
}

typedef struct {
    int n;
    char base[64];
    long code;
    int ok;
    char id[64];
    char why[256];
} client_arg;

static void *client_thread(void *p)
{
    client_arg *a = p;
    char body[256], want[64];
    snprintf(want, sizeof want, "client-%d-%ld", a->n, (long)random());
    snprintf(body, sizeof body, "{\"input\": {\"echo\": \"%s\", \"sleep_ms\": %d}}", want,
             20 + (a->n * 7) % 50);
    resp r = req_on(NULL, a->base, "POST", "/runsync", body, strlen(body), NULL);
    a->code = r.code;
    cJSON *o = r.body ? cJSON_Parse(r.body) : NULL;
    cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
    const char *echo = jstr(out, "echo"), *id = jstr(o, "id"), *st = jstr(o, "status");
    a->ok = r.code == 200 && st && !strcmp(st, "COMPLETED") && echo && !strcmp(echo, want);
    snprintf(a->id, sizeof a->id, "%s", id ? id : "");
    snprintf(a->why, sizeof a->why, "%.200s", r.body ? r.body : curl_easy_strerror(r.rc));
    cJSON_Delete(o);
    resp_free(&r);
    return NULL;
}

Test(http, thirty_two_concurrent_runsync_each_get_their_own_echo)
{
    /* Two users talking to one worker would receive each other's replies. */
    jobs_config jc = {.threads = 4};
    start(&jc, NULL);
    enum { N = 32 };
    pthread_t t[N];
    client_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (client_arg){.n = i};
        snprintf(a[i].base, sizeof a[i].base, "%s", g_base);
        cr_assert_eq(pthread_create(&t[i], NULL, client_thread, &a[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert(a[i].ok, "client %d: HTTP %ld %s", i, a[i].code, a[i].why);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(a[i].id, a[j].id, "two jobs share id %s", a[i].id);
    }
    cr_assert_eq(fake_handler_calls(), N);
}

Test(http, full_queue_is_503_with_retry_after)
{
    /* Under overload the worker would queue without bound and run out of memory. */
    jobs_config jc = {.threads = 1, .max_queue = 2};
    start(&jc, NULL);
    char *a = submit("{\"sleep_ms\": 600}");
    cJSON_Delete(wait_status(a, "IN_PROGRESS", 2000));
    char *b = submit("{\"echo\": \"b\"}");
    char *c = submit("{\"echo\": \"c\"}");
    resp r = req("POST", "/run", "{\"input\": {\"echo\": \"d\"}}");
    cr_assert_str_eq(r.retry_after, "1");
    expect_error(&r, 503, "queue is full");
    r = req("POST", "/runsync", "{\"input\": {\"echo\": \"d\"}}");
    expect_error(&r, 503, "queue is full");
    cJSON_Delete(wait_status(c, "COMPLETED", 5000));
    r = req("POST", "/runsync", "{\"input\": {\"echo\": \"e\"}}");
    cr_assert_eq(r.code, 200, "a drained queue accepts again: %ld", r.code);
    resp_free(&r);
    free(a);
    free(b);
    free(c);
}

static void *runsync_thread(void *p)
{
    client_arg *a = p;
    const char *body = "{\"input\": {\"echo\": \"inflight\", \"sleep_ms\": 500}}";
    resp r = req_on(NULL, a->base, "POST", "/runsync", body, strlen(body), NULL);
    a->code = r.code;
    a->ok = r.body && strstr(r.body, "\"status\":\"COMPLETED\"") && strstr(r.body, "inflight");
    snprintf(a->why, sizeof a->why, "%.200s", r.body ? r.body : curl_easy_strerror(r.rc));
    resp_free(&r);
    return NULL;
}

Test(http, graceful_shutdown_finishes_running_jobs_and_fails_queued_ones)
{
    /* Stopping the worker (SIGTERM) would lose a user's in-flight reply or
     * leave queued clients waiting forever. */
    jobs_config jc = {.threads = 1};
    start(&jc, NULL);
    client_arg a = {0};
    snprintf(a.base, sizeof a.base, "%s", g_base);
    pthread_t t;
    pthread_create(&t, NULL, runsync_thread, &a);
    msleep(150);
    char *queued = submit("{\"echo\": \"q\"}");
    http_quiesce(g_srv);
    inf_error err = {{0}};
    cr_assert_eq(jobs_shutdown(g_jobs, 5000, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(http_drain(g_srv, 5000), 0, "a reply was still being written");
    pthread_join(t, NULL);
    cr_assert(a.ok, "in-flight /runsync lost: HTTP %ld %s", a.code, a.why);
    jobs_result jr;
    cr_assert_eq(jobs_wait(g_jobs, queued, 0, &jr, &err), INF_OK);
    cr_assert_eq(jr.state, JOBS_FAILED);
    cr_assert_eq(jr.http_status, 503);
    jobs_result_release(g_jobs, &jr);
    /* No new request is served (the kernel may still queue the connection
     * until http_stop closes the socket, so give it one second). */
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/ping", g_base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    resp r = {0};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    r.rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    cr_assert_neq(r.rc, CURLE_OK, "a quiesced server answered a new connection");
    resp_free(&r);
    char id[JOBS_ID_MAX + 1];
    cr_assert_eq(jobs_submit(g_jobs, "{}", 2, id, &err), INF_E_BUSY);
    cr_assert(strstr(err.msg, "shutting down"), "%s", err.msg);
    free(queued);
}

Test(http, execution_timeout_reports_timed_out)
{
    /* A stuck forward pass would hold a /runsync client for the full wait. */
    jobs_config jc = {.exec_timeout_ms = 200};
    start(&jc, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    resp r = req("POST", "/runsync?wait=5000", "{\"input\": {\"sleep_ms\": 1200}}");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert(s < 1.0, "waited %.2f s for a job that timed out at 0.2 s", s);
    cr_assert_eq(r.code, 504, "%ld %s", r.code, r.body);
    cJSON *o = json_of(&r);
    cr_assert_str_eq(jstr(o, "status"), "TIMED_OUT");
    cr_assert(strstr(jstr(o, "error"), "timed_out"));
    cJSON_Delete(o);
    resp_free(&r);
}

Test(http, wait_parameter_is_checked)
{
    /* A bad ?wait would be read as "wait forever" or crash the parser. */
    start(NULL, NULL);
    const char *bad[] = {"/runsync?wait=abc", "/runsync?wait=-1", "/runsync?wait=",
                         "/runsync?wait=99999999999999999999"};
    for (size_t i = 0; i < 4; i++) {
        resp r = req("POST", bad[i], "{\"input\": {}}");
        expect_error(&r, 400, "wait");
    }
    resp r = req("POST", "/runsync?wait=0", "{\"input\": {\"sleep_ms\": 300}}");
    cr_assert_eq(r.code, 200);
    cJSON *o = json_of(&r);
    cr_assert_str_neq(jstr(o, "status"), "COMPLETED");
    cJSON_Delete(o);
    resp_free(&r);
}

Test(http, keep_alive_reuses_one_connection)
{
    /* Every token step would pay a new TCP handshake. */
    start(NULL, NULL);
    CURL *c = curl_easy_init();
    for (int i = 0; i < 3; i++) {
        resp r = req_on(c, g_base, "POST", "/runsync", "{\"input\": {\"echo\": 1}}", 22, NULL);
        cr_assert_eq(r.code, 200);
        long nc = -1;
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nc);
        cr_assert_eq(nc, i == 0 ? 1 : 0, "request %d opened %ld connections", i, nc);
        resp_free(&r);
    }
    curl_easy_cleanup(c);
}

Test(http, runsync_longer_than_idle_timeout_still_answers)
{
    /* A long step would have its connection cut by the idle timeout. */
    http_config hc = {.conn_timeout_s = 1};
    start(NULL, &hc);
    resp r = req("POST", "/runsync", "{\"input\": {\"echo\": \"slow\", \"sleep_ms\": 2300}}");
    cr_assert_eq(r.rc, CURLE_OK, "%s", curl_easy_strerror(r.rc));
    cr_assert_eq(r.code, 200);
    cr_assert(strstr(r.body, "slow"));
    resp_free(&r);
}

Test(http, large_input_and_output_pass_through)
{
    /* A long prompt chunk or a big reply would be truncated or refused. */
    start(NULL, NULL);
    size_t n = 3u << 20;
    char *body = malloc(n + 64);
    cr_assert_not_null(body);
    int k = sprintf(body, "{\"input\": {\"big\": 5000000, \"echo\": \"");
    memset(body + k, 'x', n);
    strcpy(body + k + n, "\"}}");
    resp r = req("POST", "/runsync", body);
    cr_assert_eq(r.code, 200, "%ld", r.code);
    cJSON *o = json_of(&r);
    cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
    cr_assert_eq(strlen(jstr(out, "echo")), n);
    cr_assert_eq(strlen(jstr(out, "pad")), 5000000u);
    cJSON_Delete(o);
    resp_free(&r);
    free(body);
}

Test(http, finished_results_are_forgotten_by_count_and_age)
{
    /* A long-running worker would keep every reply and run out of memory. */
    jobs_config jc = {.max_results = 2, .result_ttl_ms = 600};
    start(&jc, NULL);
    char *ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = submit("{\"echo\": 1}");
        cJSON_Delete(wait_status(ids[i], "COMPLETED", 5000));
    }
    char path[128];
    snprintf(path, sizeof path, "/status/%s", ids[0]);
    resp r = req("GET", path, NULL);
    expect_error(&r, 404, "expired");
    snprintf(path, sizeof path, "/status/%s", ids[2]);
    r = req("GET", path, NULL);
    cr_assert_eq(r.code, 200);
    resp_free(&r);
    msleep(800);
    r = req("GET", path, NULL);
    expect_error(&r, 404, NULL);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
}

Test(http, random_and_mutated_bodies_never_crash)
{
    /* One odd request would take down the worker for everybody. */
    start(NULL, NULL);
    srandom(12345);
    const char *valid = "{\"input\": {\"echo\": [1, 2.5e3, \"s\\n\", true, null, {\"k\": false}]}}";
    size_t vlen = strlen(valid);
    char buf[256];
    int ok200 = 0;
    for (int i = 0; i < 300; i++) {
        size_t n;
        if (i % 3 == 0) { /* random bytes */
            n = (size_t)(random() % 200);
            for (size_t j = 0; j < n; j++)
                buf[j] = (char)(random() & 0xff);
        } else if (i % 3 == 1) { /* a truncated valid body */
            n = (size_t)(random() % (long)vlen);
            memcpy(buf, valid, n);
        } else { /* a valid body with flipped bytes */
            n = vlen;
            memcpy(buf, valid, n);
            for (int f = 0; f < 3; f++)
                buf[random() % (long)n] = (char)(random() & 0xff);
        }
        resp r = req_on(NULL, g_base, "POST", i % 2 ? "/run" : "/runsync", buf, n, NULL);
        cr_assert_eq(r.rc, CURLE_OK, "case %d: %s", i, curl_easy_strerror(r.rc));
        cr_assert(r.code == 200 || r.code == 400, "case %d: HTTP %ld", i, r.code);
        cJSON *o = json_of(&r);
        if (r.code == 400)
            cr_assert_not_null(jstr(o, "error"));
        else
            ok200++;
        cJSON_Delete(o);
        resp_free(&r);
    }
    cr_assert(ok200 < 300);
    resp r = req("GET", "/ping", NULL);
    cr_assert_eq(r.code, 200);
    resp_free(&r);
}

/* ------------------------------------------------------------ the binary */

typedef struct {
    pid_t pid;
    int fd;
    pthread_t reader;
    pthread_mutex_t mu;
    char log[65536];
    size_t len;
} proc;

static void *drain(void *p)
{
    proc *w = p;
    char b[1024];
    ssize_t n;
    while ((n = read(w->fd, b, sizeof b)) > 0) {
        pthread_mutex_lock(&w->mu);
        size_t k = (size_t)n < sizeof w->log - 1 - w->len ? (size_t)n : sizeof w->log - 1 - w->len;
        memcpy(w->log + w->len, b, k);
        w->len += k;
        w->log[w->len] = '\0';
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

static int log_has(proc *w, const char *s)
{
    pthread_mutex_lock(&w->mu);
    int has = strstr(w->log, s) != NULL;
    pthread_mutex_unlock(&w->mu);
    return has;
}

/* Starts the fake-handler worker binary with argv and extra "K=V" env. */
static void spawn(proc *w, char *const argv[], char *const env[])
{
    const char *exe = getenv("INF_FAKE_WORKER");
    cr_assert_not_null(exe, "INF_FAKE_WORKER is not set (run through meson test)");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->pid = fork();
    cr_assert(w->pid >= 0);
    if (w->pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        for (size_t i = 0; env && env[i]; i++)
            putenv(env[i]);
        execv(exe, argv);
        _exit(127);
    }
    close(fds[1]);
    w->fd = fds[0];
    pthread_create(&w->reader, NULL, drain, w);
}

/* Waits for the child to exit; returns its exit status (or 128+signal). */
static int reap(proc *w, int timeout_ms)
{
    int st = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(w->pid, &st, WNOHANG);
        if (r == w->pid)
            break;
        if (waited > timeout_ms) {
            kill(w->pid, SIGKILL);
            waitpid(w->pid, &st, 0);
            cr_assert_fail("the worker did not exit within %d ms; log:\n%s", timeout_ms, w->log);
        }
        msleep(10);
    }
    pthread_join(w->reader, NULL);
    close(w->fd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static unsigned wait_port(proc *w)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&w->mu);
        const char *p = strstr(w->log, "listening on http://127.0.0.1:");
        unsigned port = p ? (unsigned)atoi(p + strlen("listening on http://127.0.0.1:")) : 0;
        pthread_mutex_unlock(&w->mu);
        if (port)
            return port;
        msleep(10);
    }
    cr_assert_fail("the worker never said where it listens; log:\n%s", w->log);
    return 0;
}

static unsigned free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static long get_code(const char *base, const char *path, const char *auth)
{
    resp r = req_on(NULL, base, "GET", path, NULL, 0, auth);
    resp_free(&r);
    return r.rc == CURLE_OK ? r.code : -1;
}

Test(http, worker_binary_serve_loads_then_drains_on_sigterm)
{
    /* `infemeral-worker serve` would report ready before the model loads,
     * or drop a user's reply (or exit non-zero) when stopped with Ctrl-C. */
    proc w;
    char *argv[] = {"infemeral-worker", "serve", "--bundle", "/nonexistent-ok-for-fake",
                    "--port", "0", "--threads", "2", NULL};
    char *env[] = {"FAKE_HANDLER_LOAD_MS=800", NULL};
    spawn(&w, argv, env);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", wait_port(&w));
    cr_assert_eq(get_code(base, "/ping", NULL), 204, "ping while the model loads");
    cr_assert_eq(get_code(base, "/health", NULL), 503);
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++, msleep(20))
        ready = get_code(base, "/ping", NULL) == 200;
    cr_assert(ready, "never became ready; log:\n%s", w.log);

    client_arg a = {0};
    snprintf(a.base, sizeof a.base, "%s", base);
    pthread_t t;
    pthread_create(&t, NULL, runsync_thread, &a);
    msleep(200);
    kill(w.pid, SIGTERM);
    pthread_join(t, NULL);
    cr_assert(a.ok, "in-flight /runsync lost on SIGTERM: HTTP %ld %s", a.code, a.why);
    int rc = reap(&w, 10000);
    cr_assert_eq(rc, 0, "exit status %d; log:\n%s", rc, w.log);
    cr_assert(log_has(&w, "http: POST /runsync 200 "), "no request log line; log:\n%s", w.log);
    cr_assert(!log_has(&w, "inflight"), "a request body reached the log:\n%s", w.log);
    cr_assert(log_has(&w, "SIGTERM received"));
}

Test(http, worker_binary_lb_mode_uses_port_env_and_health_port)
{
    /* On RunPod the load balancer would never see the worker as healthy,
     * or the health port would expose the API without the key. */
    unsigned p = free_port(), ph = free_port();
    char e_port[32], e_ph[32];
    snprintf(e_port, sizeof e_port, "PORT=%u", p);
    snprintf(e_ph, sizeof e_ph, "PORT_HEALTH=%u", ph);
    char *env[] = {e_port, e_ph, "HEALTH_CHECK_PATH=/healthz", "INFEMERAL_API_KEY=k1",
                   "INFEMERAL_BUNDLE=/b", NULL};
    char *argv[] = {"infemeral-worker", "lb", "--quiet", NULL};
    proc w;
    spawn(&w, argv, env);
    char base[64], hbase[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", p);
    snprintf(hbase, sizeof hbase, "http://127.0.0.1:%u", ph);
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++, msleep(20))
        ready = get_code(hbase, "/healthz", NULL) == 200;
    cr_assert(ready, "health port never answered 200; log:\n%s", w.log);
    cr_assert_eq(get_code(base, "/healthz", NULL), 200);
    cr_assert_eq(get_code(hbase, "/health", "Authorization: Bearer k1"), 404);
    cr_assert_eq(get_code(base, "/health", NULL), 401);
    cr_assert_eq(get_code(base, "/health", "Authorization: Bearer k1"), 200);
    kill(w.pid, SIGINT);
    cr_assert_eq(reap(&w, 10000), 0, "log:\n%s", w.log);
    cr_assert(!log_has(&w, "http: GET"), "--quiet still logged requests");
}

Test(http, worker_binary_refuses_bad_command_lines)
{
    /* A typo would start a worker on the wrong port or with no model. */
    char *no_bundle[] = {"infemeral-worker", "serve", NULL};
    char *bad_mode[] = {"infemeral-worker", "serv", "--bundle", "x", NULL};
    char *bad_port[] = {"infemeral-worker", "serve", "--bundle", "x", "--port", "70000", NULL};
    char *bad_thr[] = {"infemeral-worker", "serve", "--bundle", "x", "--threads", "0", NULL};
    char **cases[] = {no_bundle, bad_mode, bad_port, bad_thr};
    const char *says[] = {"--bundle", "unknown mode", "--port", "--threads"};
    for (int i = 0; i < 4; i++) {
        proc w;
        spawn(&w, cases[i], NULL);
        int rc = reap(&w, 5000);
        cr_assert_eq(rc, 2, "case %d exit %d; log:\n%s", i, rc, w.log);
        cr_assert(log_has(&w, says[i]), "case %d does not mention %s:\n%s", i, says[i], w.log);
    }
    char *fail_load[] = {"infemeral-worker", "serve", "--bundle", "/b", "--port", "0", NULL};
    char *env[] = {"FAKE_HANDLER_FAIL_LOAD=1", NULL};
    proc w;
    spawn(&w, fail_load, env);
    cr_assert_eq(reap(&w, 5000), 1, "log:\n%s", w.log);
    cr_assert(log_has(&w, "fake load failure"), "%s", w.log);
}
