/* test_handler.c — the worker's request handler, called as every front door
 * calls it.
 *
 * If this fails, a user's sealed request is answered wrongly (different
 * states than the local split run), or a tampered, replayed, misaddressed or
 * malformed request is served or corrupts a stored session instead of being
 * refused with a clear error.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "base64.h"
#include "bundle.h"
#include "crypto.h"
#include "gguf_writer.h"
#include "handler.h"
#include "kv.h"
#include "model.h"
#include "prep.h"
#include "testutil.h"
#include "wire.h"

typedef struct {
    char dir[512];
    char server[700];
    inf_model *sm; /* the server bundle, for local reference runs */
    keys_pair worker;
    inf_handler *h;
} fixture;

static fixture F;

static void setup_env(const char *ttl) {
    if (ttl) setenv("INFEMERAL_KV_TTL", ttl, 1);
    else unsetenv("INFEMERAL_KV_TTL");
}

static void setup(void) {
    cr_assert_not_null(tu_tmpdir(F.dir, sizeof F.dir));
    char model[600], out[600], kvdir[600];
    snprintf(model, sizeof model, "%s/tiny.gguf", F.dir);
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    cr_assert_eq(gw_write_tiny_llama(model, &o), 0);
    snprintf(out, sizeof out, "%s/prep", F.dir);
    prep_opts po = {.model = model, .out = out, .weights = PREP_F32, .rotate = true};
    inf_error err = {{0}};
    cr_assert_eq(prep_run(&po, &err), INF_OK, "%s", err.msg);
    snprintf(F.server, sizeof F.server, "%s/server", out);
    cr_assert_eq(inf_model_load_server_bundle(F.server, &F.sm, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(keys_generate(&F.worker, &err), INF_OK);
    char *b64 = b64_encode_alloc(F.worker.priv, KEYS_BYTES);
    setenv("INFEMERAL_WORKER_KEY", b64, 1);
    free(b64);
    snprintf(kvdir, sizeof kvdir, "%s/kv", F.dir);
    setenv("INFEMERAL_KV_DIR", kvdir, 1);
    setup_env(NULL);
    cr_assert_eq(inf_handler_create(F.server, &F.h, &err), INF_OK, "%s", err.msg);
}

static void teardown(void) {
    inf_handler_destroy(F.h);
    inf_model_free(F.sm);
    keys_wipe(&F.worker);
}

TestSuite(handler, .init = setup, .fini = teardown, .timeout = 300);

typedef struct { /* one client session */
    keys_pair eph;
    uint8_t sid[SEAL_SID_BYTES];
    char sid_hex[SEAL_SID_HEX + 1];
    seal_keys keys;
    uint8_t kv_key[WIRE_KV_KEY_BYTES];
    uint64_t step;
    inf_kv ref; /* the same session computed locally */
} client;

static void client_init(client *c, const keys_public *worker_pub) {
    inf_error err = {{0}};
    memset(c, 0, sizeof *c);
    cr_assert_eq(keys_generate(&c->eph, &err), INF_OK);
    cr_assert_eq(seal_sid_generate(c->sid, &err), INF_OK);
    seal_sid_hex(c->sid, c->sid_hex);
    cr_assert_eq(seal_derive_client(&c->eph, worker_pub, c->sid, &c->keys, &err), INF_OK, "%s", err.msg);
    for (int i = 0; i < WIRE_KV_KEY_BYTES; i++) c->kv_key[i] = (uint8_t)(i * 7 + 1);
    cr_assert_eq(inf_kv_init(&c->ref, &F.sm->cfg, 128, &err), INF_OK);
}

static void states_for(int n, int pos, uint32_t seed, float *x) {
    int d = F.sm->cfg.dim;
    for (int i = 0; i < n * d; i++) {
        seed = seed * 1664525u + 1013904223u + (uint32_t)pos;
        x[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
}

/* Builds a sealed request JSON for x [n, d] at pos. */
static char *request(client *c, const float *x, int n, int pos, wire_msg *req) {
    inf_error err = {{0}};
    memset(req, 0, sizeof *req);
    snprintf(req->session, sizeof req->session, "%s", c->sid_hex);
    req->step = ++c->step;
    req->pos = pos;
    req->n = n;
    req->d = F.sm->cfg.dim;
    req->dtype = WIRE_F32;
    req->has_epk = true;
    req->epk = c->eph.pub;
    cr_assert_eq(wire_seal_request(&c->keys, req, c->kv_key, x, &err), INF_OK, "%s", err.msg);
    char *j = wire_request_to_json(req, NULL, &err);
    cr_assert_not_null(j, "%s", err.msg);
    return j;
}

/* Sends x at pos; on 200 checks the reply against the local forward. */
static int send_and_check(client *c, int n, int pos, uint32_t seed, bool expect_ok) {
    int d = F.sm->cfg.dim;
    float *x = malloc(sizeof(float) * n * d), *y = malloc(sizeof(float) * n * d);
    states_for(n, pos, seed, x);
    memcpy(y, x, sizeof(float) * n * d);
    wire_msg req;
    char *j = request(c, x, n, pos, &req);
    int code = 0;
    char *out = inf_handle(F.h, j, strlen(j), &code);
    cr_assert_not_null(out);
    if (code == 200) {
        cr_assert(expect_ok, "request unexpectedly served: %s", out);
        inf_error err = {{0}};
        wire_msg rep = {0};
        cr_assert_eq(wire_reply_parse(out, strlen(out), 1 << 26, &rep, &err), INF_OK, "%s", err.msg);
        void *st = NULL;
        size_t bytes = 0;
        cr_assert_eq(wire_open_reply(&c->keys, &req, &rep, &st, &bytes, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(bytes, sizeof(float) * n * d);
        cr_assert_eq(cpu_forward(F.sm, &c->ref, y, n, pos, &err), INF_OK, "%s", err.msg);
        const float *got = st;
        for (int i = 0; i < n * d; i++)
            cr_assert_float_eq(got[i], y[i], 1e-5f * (1 + fabsf(y[i])), "element %d: worker %g, local %g", i, got[i], y[i]);
        free(st);
        wire_msg_free(&rep);
    } else {
        cr_assert_not(expect_ok, "request failed with %d: %s", code, out);
        cr_assert(strstr(out, "\"error\"") != NULL, "error reply is not a JSON error: %s", out);
    }
    free(out);
    free(j);
    wire_msg_free(&req);
    free(x);
    free(y);
    return code;
}

Test(handler, a_session_over_several_requests_matches_the_local_run) {
    client c;
    client_init(&c, &F.worker.pub);
    send_and_check(&c, 7, 0, 1, true);  /* prefill */
    send_and_check(&c, 1, 7, 2, true);  /* decode steps */
    send_and_check(&c, 1, 8, 3, true);
    send_and_check(&c, 3, 6, 4, true);  /* rewrite from pos 6: a retry or an edit */
    send_and_check(&c, 1, 9, 5, true);
    inf_kv_free(&c.ref);
}

Test(handler, tampered_payload_wrong_key_and_replay_are_refused_without_changing_the_session) {
    client c;
    client_init(&c, &F.worker.pub);
    send_and_check(&c, 4, 0, 1, true);
    int d = F.sm->cfg.dim;
    float x[4 * 64];
    cr_assert_leq(d, 64);
    states_for(1, 4, 9, x);
    /* a flipped byte in the ciphertext */
    wire_msg req;
    char *j = request(&c, x, 1, 4, &req);
    cJSON *o = cJSON_Parse(j);
    char *p = cJSON_GetObjectItem(o, "payload")->valuestring;
    p[10] = p[10] == 'A' ? 'B' : 'A';
    char *bad = cJSON_PrintUnformatted(o);
    int code;
    char *out = inf_handle(F.h, bad, strlen(bad), &code);
    cr_assert_eq(code, 401, "tampered payload: %d %s", code, out);
    free(out);
    free(bad);
    /* a header field changed after sealing (pos is authenticated) */
    cJSON_ReplaceItemInObject(o, "payload", cJSON_CreateString(cJSON_GetObjectItem(cJSON_Parse(j), "payload")->valuestring));
    cJSON_ReplaceItemInObject(o, "pos", cJSON_CreateNumber(3));
    bad = cJSON_PrintUnformatted(o);
    out = inf_handle(F.h, bad, strlen(bad), &code);
    cr_assert_eq(code, 401, "tampered header: %d %s", code, out);
    free(out);
    free(bad);
    cJSON_Delete(o);
    /* the same request replayed after it was served */
    out = inf_handle(F.h, j, strlen(j), &code);
    cr_assert_eq(code, 200, "%s", out);
    free(out);
    out = inf_handle(F.h, j, strlen(j), &code);
    cr_assert_eq(code, 409, "replayed request: %d %s", code, out);
    cr_assert(strstr(out, "replay") != NULL, "%s", out);
    free(out);
    free(j);
    wire_msg_free(&req);
    /* the reference advanced by the one served request; the session must agree */
    inf_error err;
    float y[64];
    memcpy(y, x, sizeof(float) * d);
    cr_assert_eq(cpu_forward(F.sm, &c.ref, y, 1, 4, &err), INF_OK);
    send_and_check(&c, 1, 5, 11, true);
    /* a client that pinned another worker key */
    keys_pair other;
    cr_assert_eq(keys_generate(&other, &err), INF_OK);
    client w;
    client_init(&w, &other.pub);
    cr_assert_eq(send_and_check(&w, 2, 0, 1, false), 401);
    inf_kv_free(&c.ref);
    inf_kv_free(&w.ref);
}

Test(handler, malformed_misaddressed_and_misshaped_requests_get_clear_errors) {
    int code;
    char *out = inf_handle(F.h, "{not json", 9, &code);
    cr_assert_eq(code, 400, "%s", out);
    free(out);
    out = inf_handle(F.h, "{\"v\":1,\"mystery\":2}", 19, &code);
    cr_assert_eq(code, 400);
    free(out);
    /* unknown session: a first request that does not start at 0 */
    client c;
    client_init(&c, &F.worker.pub);
    cr_assert_eq(send_and_check(&c, 1, 5, 1, false), 404);
    /* pos past the session's length */
    send_and_check(&c, 2, 0, 1, true);
    cr_assert_eq(send_and_check(&c, 1, 9, 2, false), 409);
    /* wrong hidden size */
    int d = F.sm->cfg.dim;
    float x[128] = {0};
    wire_msg req = {0};
    inf_error err;
    snprintf(req.session, sizeof req.session, "%s", c.sid_hex);
    req.step = ++c.step;
    req.n = 1;
    req.d = d + 1;
    req.dtype = WIRE_F32;
    req.has_epk = true;
    req.epk = c.eph.pub;
    cr_assert_eq(wire_seal_request(&c.keys, &req, c.kv_key, x, &err), INF_OK, "%s", err.msg);
    char *j = wire_request_to_json(&req, NULL, &err);
    out = inf_handle(F.h, j, strlen(j), &code);
    cr_assert_eq(code, 400, "%s", out);
    cr_assert(strstr(out, "shape") != NULL, "%s", out);
    free(out);
    free(j);
    wire_msg_free(&req);
    inf_kv_free(&c.ref);
}

typedef struct {
    int id;
    int ok;
} th_arg;

static void *session_thread(void *p) {
    th_arg *a = p;
    client c;
    client_init(&c, &F.worker.pub);
    send_and_check(&c, 5, 0, (uint32_t)a->id, true);
    for (int s = 0; s < 4; s++) send_and_check(&c, 1, 5 + s, (uint32_t)(a->id * 100 + s), true);
    inf_kv_free(&c.ref);
    a->ok = 1;
    return NULL;
}

Test(handler, thirty_two_concurrent_sessions_stay_isolated_and_correct) {
    pthread_t t[32];
    th_arg a[32];
    for (int i = 0; i < 32; i++) {
        a[i] = (th_arg){i + 1, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, session_thread, &a[i]), 0);
    }
    for (int i = 0; i < 32; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 32; i++) cr_assert(a[i].ok, "session %d failed", i);
}

Test(handler, expired_sessions_are_swept) {
    /* a handler whose sessions live two seconds */
    inf_error err = {{0}};
    inf_handler_destroy(F.h);
    setup_env("2");
    cr_assert_eq(inf_handler_create(F.server, &F.h, &err), INF_OK, "%s", err.msg);
    client a, b;
    client_init(&a, &F.worker.pub);
    client_init(&b, &F.worker.pub);
    send_and_check(&a, 2, 0, 1, true);
    struct timespec ts = {3, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    send_and_check(&b, 2, 0, 2, true); /* any request triggers the sweep */
    cr_assert_eq(send_and_check(&a, 1, 2, 3, false), 404, "an expired session was still served");
    send_and_check(&b, 1, 2, 4, true); /* the fresh one survives */
    inf_kv_free(&a.ref);
    inf_kv_free(&b.ref);
    setup_env(NULL);
}
