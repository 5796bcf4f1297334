/* loopback.c — an in-process worker behind the real wire code (loopback.h). */
#include "loopback.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

inf_status inf_loopback_open(inf_loopback *lb, int dim, wire_dtype dtype, inf_layers_fn inner, void *inner_ctx,
                             inf_profile *prof, inf_error *err) {
    memset(lb, 0, sizeof *lb);
    lb->dim = dim;
    lb->dtype = dtype;
    lb->inner = inner;
    lb->inner_ctx = inner_ctx;
    lb->prof = prof;
    inf_status st;
    if ((st = keys_generate(&lb->worker, err)) || (st = keys_generate(&lb->eph, err)) ||
        (st = seal_sid_generate(lb->sid, err)) ||
        (st = seal_derive_client(&lb->eph, &lb->worker.pub, lb->sid, &lb->ck, err))) {
        inf_loopback_close(lb);
        return st;
    }
    if (RAND_bytes(lb->kv_key, sizeof lb->kv_key) != 1) {
        inf_loopback_close(lb);
        return inf_fail(err, INF_E_IO, "loopback: RAND_bytes failed");
    }
    seal_sid_hex(lb->sid, lb->sid_hex);
    return INF_OK;
}

/* The worker's half: parse, open, layers, seal, reply JSON. */
static inf_status worker_side(inf_loopback *lb, const char *req_json, size_t req_len, char **rep_json,
                              size_t *rep_len, inf_error *err) {
    wire_msg req = {0}, rep = {0};
    seal_keys wk;
    uint8_t kv[WIRE_KV_KEY_BYTES];
    void *states = NULL;
    size_t bytes = 0;
    float *x = NULL;
    inf_status st = wire_request_parse(req_json, req_len, req_len + 1, &req, err);
    if (!st) st = seal_derive_worker(&lb->worker, &req.epk, lb->sid, &wk, err);
    if (!st) st = wire_open_request(&wk, &req, kv, &states, &bytes, err);
    const size_t count = (size_t)req.n * (size_t)req.d;
    if (!st && !(x = malloc(count * sizeof *x))) st = inf_fail(err, INF_E_NOMEM, "loopback: out of memory");
    if (!st) {
        wire_states_to_f32(states, count, req.dtype, x);
        if (lb->inner) st = lb->inner(lb->inner_ctx, x, req.n, (int)req.pos, err);
    }
    if (!st) {
        wire_states_from_f32(x, count, req.dtype, states);
        rep.n = req.n;
        rep.d = req.d;
        rep.dtype = req.dtype;
        st = wire_seal_reply(&wk, &req, &rep, states, err);
    }
    if (!st && !(*rep_json = wire_reply_to_json(&rep, rep_len, err))) st = err->msg[0] ? INF_E_FORMAT : INF_E_NOMEM;
    OPENSSL_cleanse(kv, sizeof kv);
    seal_keys_wipe(&wk);
    free(states);
    free(x);
    wire_msg_free(&req);
    wire_msg_free(&rep);
    return st;
}

inf_status inf_loopback_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_loopback *lb = ctx;
    const size_t count = (size_t)n * (size_t)lb->dim, es = wire_dtype_size(lb->dtype);
    double t = inf_prof_start(lb->prof);
    uint8_t *states = malloc(count * es);
    if (!states) return inf_fail(err, INF_E_NOMEM, "loopback: out of memory");
    wire_states_from_f32(x, count, lb->dtype, states);
    inf_prof_stop(lb->prof, INF_PH_SERIALIZE, t);

    wire_msg req = {0}, rep = {0};
    char *json = NULL, *rjson = NULL;
    void *out = NULL;
    size_t jl = 0, rl = 0, out_bytes = 0;
    snprintf(req.session, sizeof req.session, "%s", lb->sid_hex);
    req.step = ++lb->step;
    req.pos = pos;
    req.n = n;
    req.d = lb->dim;
    req.dtype = lb->dtype;
    req.has_epk = true;
    req.epk = lb->eph.pub;
    t = inf_prof_start(lb->prof);
    inf_status st = wire_seal_request(&lb->ck, &req, lb->kv_key, states, err);
    inf_prof_stop(lb->prof, INF_PH_SEAL, t);
    t = inf_prof_start(lb->prof);
    if (!st && !(json = wire_request_to_json(&req, &jl, err))) st = err->msg[0] ? INF_E_FORMAT : INF_E_NOMEM;
    inf_prof_stop(lb->prof, INF_PH_SERIALIZE, t);
    t = inf_prof_start(lb->prof);
    if (!st) st = worker_side(lb, json, jl, &rjson, &rl, err);
    inf_prof_stop(lb->prof, INF_PH_NETWORK, t);
    t = inf_prof_start(lb->prof);
    if (!st) st = wire_reply_parse(rjson, rl, rl + 1, &rep, err);
    if (!st) st = wire_open_reply(&lb->ck, &req, &rep, &out, &out_bytes, err);
    if (!st && out_bytes != count * es)
        st = inf_fail(err, INF_E_SHAPE, "loopback: the reply holds %zu bytes, expected %zu", out_bytes, count * es);
    if (!st) wire_states_to_f32(out, count, lb->dtype, x);
    inf_prof_stop(lb->prof, INF_PH_OPEN, t);
    free(states);
    free(out);
    free(json);
    free(rjson);
    wire_msg_free(&req);
    wire_msg_free(&rep);
    return st;
}

void inf_loopback_close(inf_loopback *lb) {
    if (!lb) return;
    keys_wipe(&lb->worker);
    keys_wipe(&lb->eph);
    seal_keys_wipe(&lb->ck);
    OPENSSL_cleanse(lb, sizeof *lb);
}
