/* transport.c — see transport.h. */
#define _POSIX_C_SOURCE 200809L
#include "transport.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"

#define RUNPOD_API_BASE "https://api.runpod.ai/v2"
#define RUNSYNC_LIMIT (20u << 20)   /* RunPod /runsync request limit */
#define PAYLOAD_BUDGET (8u << 20)   /* what we allow one request's states (base64 grows by 4/3) */
#define MAX_REPLY (64u << 20)

struct inf_remote {
    inf_remote_opts o;
    int dim;
    char base[1024];   /* URL prefix: {base}/runsync, {base}/status/{id} */
    char auth[600];    /* "Authorization: Bearer ..." */
    CURL *curl;
    struct curl_slist *headers;
    keys_pair eph;
    uint8_t sid[SEAL_SID_BYTES];
    char sid_hex[SEAL_SID_HEX + 1];
    seal_keys keys;
    uint8_t kv_key[WIRE_KV_KEY_BYTES];
    uint64_t step;
    inf_remote_stats stats;
    inf_profile *prof; /* borrowed; NULL = off */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void inf_remote_opts_init(inf_remote_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = WIRE_F16;
    o->timeout_ms = 120000;
    o->retries = 3;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

inf_status inf_remote_open(const inf_remote_opts *o, int dim, inf_remote **out, inf_error *err) {
    *out = NULL;
    if (!o->endpoint == !o->runpod_id)
        return inf_fail(err, INF_E_ARG, "give exactly one of --endpoint URL and --runpod ENDPOINT_ID");
    pthread_once(&curl_once, curl_init_once);
    inf_remote *r = calloc(1, sizeof *r);
    if (!r) return inf_fail(err, INF_E_NOMEM, "out of memory");
    r->o = *o;
    r->dim = dim;
    if (o->endpoint) {
        size_t n = strlen(o->endpoint);
        while (n > 0 && o->endpoint[n - 1] == '/') n--;
        snprintf(r->base, sizeof r->base, "%.*s", (int)n, o->endpoint);
    } else {
        const char *api = getenv("RUNPOD_ENDPOINT_BASE_URL");
        if (!api || !*api) api = RUNPOD_API_BASE;
        size_t n = strlen(api);
        while (n > 0 && api[n - 1] == '/') n--;
        snprintf(r->base, sizeof r->base, "%.*s/%s", (int)n, api, o->runpod_id);
    }
    inf_status st = keys_generate(&r->eph, err);
    if (!st) st = seal_sid_generate(r->sid, err);
    if (!st) {
        seal_sid_hex(r->sid, r->sid_hex);
        st = seal_derive_client(&r->eph, &o->worker_pub, r->sid, &r->keys, err);
    }
    if (!st && RAND_bytes(r->kv_key, sizeof r->kv_key) != 1)
        st = inf_fail(err, INF_E_IO, "RAND_bytes failed for the session key");
    if (!st && !(r->curl = curl_easy_init())) st = inf_fail(err, INF_E_NOMEM, "libcurl: cannot create a handle");
    if (st) {
        inf_remote_close(r);
        return st;
    }
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (o->api_key && *o->api_key) {
        snprintf(r->auth, sizeof r->auth, "Authorization: Bearer %s", o->api_key);
        r->headers = curl_slist_append(r->headers, r->auth);
    }
    curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, o->timeout_ms > 0 ? o->timeout_ms : 120000L);
    curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT_MS, 15000L);
    curl_easy_setopt(r->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->curl, CURLOPT_ACCEPT_ENCODING, "");
    *out = r;
    return INF_OK;
}

void inf_remote_close(inf_remote *r) {
    if (!r) return;
    if (r->curl) curl_easy_cleanup(r->curl);
    curl_slist_free_all(r->headers);
    keys_wipe(&r->eph);
    OPENSSL_cleanse(&r->keys, sizeof r->keys);
    OPENSSL_cleanse(r->kv_key, sizeof r->kv_key);
    OPENSSL_cleanse(r->auth, sizeof r->auth);
    free(r);
}

const inf_remote_stats *inf_remote_get_stats(const inf_remote *r) { return &r->stats; }

void inf_remote_set_profile(inf_remote *r, inf_profile *prof) { r->prof = prof; }

typedef struct {
    char *p;
    size_t n, cap;
    bool too_big;
} buf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    buf *b = user;
    size_t k = size * nmemb;
    if (b->n + k + 1 > MAX_REPLY) {
        b->too_big = true;
        return 0;
    }
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, k);
    b->n += k;
    b->p[b->n] = '\0';
    return k;
}

/* One HTTP exchange. *code: HTTP status, 0 for a transport failure (err set). */
static inf_status http(inf_remote *r, const char *url, const char *body, size_t len, buf *out, long *code,
                       inf_error *err) {
    out->n = 0;
    out->too_big = false;
    if (out->p) out->p[0] = '\0';
    curl_easy_setopt(r->curl, CURLOPT_URL, url);
    curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, out);
    if (body) {
        curl_easy_setopt(r->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(r->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(r->curl, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(r->curl);
    *code = 0;
    if (rc != CURLE_OK) {
        if (out->too_big) return inf_fail(err, INF_E_RANGE, "%s: reply larger than %u bytes", url, MAX_REPLY);
        return inf_fail(err, INF_E_IO, "%s: %s", url, curl_easy_strerror(rc));
    }
    curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, code);
    r->stats.bytes_sent += len;
    r->stats.bytes_received += out->n;
    return INF_OK;
}

/* Reads a RunPod-shaped reply: {"id","status","output"|"error"}. Returns the
 * output object (owned by root) or fails with the worker's message. *pending
 * is set (with job_id) when the job is not finished yet. */
static inf_status runpod_output(const char *url, long code, const char *body, cJSON **root, const cJSON **output,
                                bool *pending, char *job_id, size_t job_cap, inf_error *err) {
    *pending = false;
    *output = NULL;
    *root = cJSON_Parse(body ? body : "");
    /* a job that ran and failed carries the worker's own error: report that */
    bool job = *root && cJSON_IsObject(*root) &&
               (cJSON_GetObjectItem(*root, "output") || cJSON_GetObjectItem(*root, "status"));
    if ((code == 401 || code == 403) && !job)
        return inf_fail(err, INF_E_AUTH, "%s: %ld: the endpoint refused the API key (check INFEMERAL_API_KEY / RUNPOD_API_KEY)", url, code);
    if (code == 404 && !job)
        return inf_fail(err, INF_E_NOTFOUND, "%s: 404: no such endpoint or route (check the URL / endpoint id)", url);
    if (!*root || !cJSON_IsObject(*root))
        return inf_fail(err, code >= 500 ? INF_E_BUSY : INF_E_FORMAT, "%s: HTTP %ld with a body that is not JSON", url, code);
    const cJSON *status = cJSON_GetObjectItem(*root, "status");
    const cJSON *id = cJSON_GetObjectItem(*root, "id");
    if (cJSON_IsString(id)) snprintf(job_id, job_cap, "%s", id->valuestring);
    const char *s = cJSON_IsString(status) ? status->valuestring : "";
    const cJSON *out = cJSON_GetObjectItem(*root, "output");
    const cJSON *e = cJSON_GetObjectItem(*root, "error");
    if (cJSON_IsObject(out)) {
        const cJSON *oe = cJSON_GetObjectItem(out, "error");
        if (oe) e = oe;
        else {
            *output = out;
            return INF_OK;
        }
    }
    if (e) {
        const char *msg = cJSON_IsString(e) ? e->valuestring : NULL;
        const cJSON *m = cJSON_GetObjectItem(e, "message"), *c = cJSON_GetObjectItem(e, "code");
        if (!msg && cJSON_IsString(m)) msg = m->valuestring;
        /* the worker's error code: {"code"} from the dev server and load-balancer
         * mode, the "code: " prefix of RunPod's error string in queue mode */
        char kind[16] = "";
        if (cJSON_IsString(c)) snprintf(kind, sizeof kind, "%s", c->valuestring);
        else if (msg) {
            size_t k = strspn(msg, "abcdefghijklmnopqrstuvwxyz");
            if (k > 0 && k < sizeof kind && msg[k] == ':' && msg[k + 1] == ' ')
                snprintf(kind, sizeof kind, "%.*s", (int)k, msg);
        }
        inf_status st = kind[0] ? wire_code_status(kind) : INF_E_FORMAT;
        if (code == 409) st = INF_E_AUTH; /* pos conflicts: not retried blindly */
        if (code >= 500 || code == 429) st = INF_E_BUSY;
        /* "replay": the session already holds this step or a newer one. This
         * request was delivered twice (RunPod hands out again a job whose
         * result it never got) or ran late (a duplicate sent after a lost
         * reply ran after our retry). Our reply is lost either way; a new
         * attempt (a new step, the same pos) is safe: the worker truncates
         * the session to pos first. */
        if (!strcmp(kind, "replay")) st = INF_E_BUSY;
        return inf_fail(err, st, "worker%s%s%s: %s%s%s", job_id[0] ? " job " : "", job_id,
                        !strcmp(s, "FAILED") ? " FAILED" : "", cJSON_IsString(c) ? c->valuestring : "",
                        cJSON_IsString(c) ? ": " : "", msg ? msg : "(no message)");
    }
    if (!strcmp(s, "IN_QUEUE") || !strcmp(s, "IN_PROGRESS")) {
        *pending = true;
        return INF_OK;
    }
    if (!strcmp(s, "TIMED_OUT") || !strcmp(s, "CANCELLED") || !strcmp(s, "FAILED"))
        return inf_fail(err, INF_E_BUSY, "%s: job %s ended %s", url, job_id, s);
    if (code >= 500 || code == 429) return inf_fail(err, INF_E_BUSY, "%s: HTTP %ld", url, code);
    return inf_fail(err, INF_E_FORMAT, "%s: HTTP %ld, reply has neither output nor error", url, code);
}

/* Adds the time since *t to phase ph (the session's totals, and the profile
 * when one is set); *t becomes now. */
static void spent(inf_remote *r, inf_phase ph, double *t) {
    double now = now_s(), d = now - *t;
    *t = now;
    switch (ph) {
    case INF_PH_SERIALIZE: r->stats.serialize_s += d; break;
    case INF_PH_SEAL: r->stats.seal_s += d; break;
    case INF_PH_NETWORK: r->stats.network_s += d; break;
    case INF_PH_OPEN: r->stats.open_s += d; break;
    default: break;
    }
    if (r->prof) inf_profile_add(r->prof, ph, d);
}

/* One request: seal x[0..n) at pos, exchange, open into x. */
static inf_status exchange(inf_remote *r, float *x, int n, int pos, inf_error *err) {
    const size_t count = (size_t)n * (size_t)r->dim, es = wire_dtype_size(r->o.dtype);
    inf_status st = INF_OK;
    double t = now_s();
    uint8_t *states = malloc(count * es);
    buf body = {0};
    if (!states) return inf_fail(err, INF_E_NOMEM, "out of memory");
    wire_states_from_f32(x, count, r->o.dtype, states);
    spent(r, INF_PH_SERIALIZE, &t);
    char url[1200];
    for (int attempt = 0;; attempt++) {
        wire_msg req = {0}, rep = {0};
        cJSON *root = NULL;
        char *json = NULL, *input = NULL;
        void *out = NULL;
        size_t out_bytes = 0;
        char job_id[128] = "";
        r->step++; /* every attempt is a new step: nonces never repeat */
        snprintf(req.session, sizeof req.session, "%s", r->sid_hex);
        req.step = r->step;
        req.pos = pos;
        req.n = n;
        req.d = r->dim;
        req.dtype = r->o.dtype;
        req.has_epk = true;
        req.epk = r->eph.pub;
        t = now_s();
        st = wire_seal_request(&r->keys, &req, r->kv_key, states, err);
        spent(r, INF_PH_SEAL, &t);
        size_t jl = 0;
        if (!st && !(json = wire_request_to_json(&req, &jl, err))) st = err->msg[0] ? INF_E_FORMAT : INF_E_NOMEM;
        if (!st && !(input = malloc(jl + 16))) st = inf_fail(err, INF_E_NOMEM, "out of memory");
        if (!st) {
            memcpy(input, "{\"input\":", 9);
            memcpy(input + 9, json, jl);
            memcpy(input + 9 + jl, "}", 2);
        }
        spent(r, INF_PH_SERIALIZE, &t);
        long code = 0;
        bool pending = false;
        const cJSON *output = NULL;
        if (!st) {
            snprintf(url, sizeof url, "%s/runsync", r->base);
            st = http(r, url, input, jl + 10, &body, &code, err);
            spent(r, INF_PH_NETWORK, &t);
            if (!st) st = runpod_output(url, code, body.p, &root, &output, &pending, job_id, sizeof job_id, err);
            spent(r, INF_PH_OPEN, &t);
            /* a queued or slow job: poll its status (RunPod may answer /runsync early) */
            for (int polls = 0, failed = 0; !st && pending && polls < 3600; polls++) {
                struct timespec ts = {0, 250 * 1000 * 1000};
                nanosleep(&ts, NULL);
                cJSON_Delete(root);
                root = NULL;
                snprintf(url, sizeof url, "%s/status/%s", r->base, job_id);
                st = http(r, url, NULL, 0, &body, &code, err);
                spent(r, INF_PH_NETWORK, &t);
                /* a poll that failed (dropped connection, 5xx, 429) is asked
                 * again: the job is still queued or running, and sending the
                 * step again would run it twice */
                if ((st == INF_E_IO || code >= 500 || code == 429) && failed++ < r->o.retries) {
                    r->stats.retries++;
                    st = INF_OK;
                    continue;
                }
                if (!st) st = runpod_output(url, code, body.p, &root, &output, &pending, job_id, sizeof job_id, err);
                spent(r, INF_PH_OPEN, &t);
            }
        }
        if (!st) st = wire_reply_from_cjson(output, &rep, err);
        if (!st) st = wire_open_reply(&r->keys, &req, &rep, &out, &out_bytes, err);
        if (!st && out_bytes != count * es)
            st = inf_fail(err, INF_E_SHAPE, "worker reply holds %zu bytes of states, expected %zu", out_bytes, count * es);
        if (!st) wire_states_to_f32(out, count, r->o.dtype, x);
        spent(r, INF_PH_OPEN, &t);
        r->stats.requests++;
        free(out);
        free(json);
        free(input);
        cJSON_Delete(root);
        wire_msg_free(&req);
        wire_msg_free(&rep);
        /* transport failures, 5xx and 429 are retried (same pos, new step) */
        if (st == INF_OK || !(st == INF_E_IO || st == INF_E_BUSY) || attempt >= r->o.retries) break;
        r->stats.retries++;
        struct timespec ts = {0, (long)(200 * 1000 * 1000) << (attempt < 3 ? attempt : 3)};
        t = now_s();
        nanosleep(&ts, NULL);
        spent(r, INF_PH_NETWORK, &t); /* the back-off is time lost to the network */
    }
    free(body.p);
    OPENSSL_cleanse(states, count * es);
    free(states);
    return st;
}

inf_status inf_remote_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_remote *r = ctx;
    size_t per_token = (size_t)r->dim * wire_dtype_size(r->o.dtype);
    int chunk = (int)(PAYLOAD_BUDGET / per_token);
    if (r->o.max_tokens_per_request > 0 && r->o.max_tokens_per_request < chunk) chunk = r->o.max_tokens_per_request;
    if (chunk < 1) chunk = 1;
    for (int off = 0; off < n; off += chunk) {
        int k = n - off < chunk ? n - off : chunk;
        inf_status st = exchange(r, x + (size_t)off * r->dim, k, pos + off, err);
        if (st) return st;
    }
    return INF_OK;
}
