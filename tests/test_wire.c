/* test_wire.c — wire format v1: the JSON envelope, sealing and opening of
 * requests and replies (common/wire.h, docs/wire.md).
 *
 * If this fails, a user would see a worker that cannot read what the client
 * sends (or the other way round), a worker that accepts a request whose
 * header was changed in transit (other positions, another session, other
 * shapes), a client that accepts a reply meant for another request, a
 * worker that can be made to allocate without bound by a zstd bomb, or
 * error messages that do not say which field was wrong.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "backend.h"
#include "base64.h"
#include "crypto.h"
#include "embed.h"
#include "kv.h"
#include "model.h"
#include "rotation.h"
#include "tensor.h"
#include "testutil.h"
#include "tokenizer.h"
#include "wire.h"

#define MAXJ (64u << 20)

typedef struct {
    keys_pair worker, eph;
    uint8_t sid[SEAL_SID_BYTES];
    seal_keys client, server;
    uint8_t kv_key[32];
} session;

static void session_new(session *s) {
    inf_error err;
    cr_assert_eq(keys_generate(&s->worker, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(keys_generate(&s->eph, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_sid_generate(s->sid, &err), INF_OK);
    cr_assert_eq(seal_derive_client(&s->eph, &s->worker.pub, s->sid, &s->client, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_derive_worker(&s->worker, &s->eph.pub, s->sid, &s->server, &err), INF_OK, "%s", err.msg);
    for (int i = 0; i < 32; i++) s->kv_key[i] = (uint8_t)(0xC0 + i);
}

static wire_msg header(const session *s, uint64_t step, int64_t pos, int n, int d, wire_dtype t) {
    wire_msg m;
    memset(&m, 0, sizeof m);
    seal_sid_hex(s->sid, m.session);
    m.step = step;
    m.pos = pos;
    m.n = n;
    m.d = d;
    m.dtype = t;
    m.has_epk = true;
    m.epk = s->eph.pub;
    return m;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double gauss(void) {
    double u1 = ((rng() >> 11) + 1) / 9007199254740992.0, u2 = (rng() >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* n*d Gaussian values (sigma) as dtype t; malloc'd. */
static void *gaussian_states(int n, int d, wire_dtype t, double sigma) {
    size_t cnt = (size_t)n * (size_t)d;
    void *p = malloc(cnt * wire_dtype_size(t));
    cr_assert_not_null(p);
    for (size_t i = 0; i < cnt; i++) {
        float v = (float)(gauss() * sigma);
        if (t == WIRE_F32) ((float *)p)[i] = v;
        else if (t == WIRE_F16) ((uint16_t *)p)[i] = inf_f32_to_f16(v);
        else ((uint16_t *)p)[i] = inf_f32_to_bf16(v);
    }
    return p;
}

/* Seals a request, returns its JSON, and parses it back into *parsed. */
static char *seal_to_json(const session *s, wire_msg *req, const void *states, size_t *len) {
    inf_error err;
    cr_assert_eq(wire_seal_request(&s->client, req, s->kv_key, states, &err), INF_OK, "%s", err.msg);
    char *j = wire_request_to_json(req, len, &err);
    cr_assert_not_null(j, "%s", err.msg);
    cr_assert_eq(strlen(j), *len);
    return j;
}

/* ---- round trips ---------------------------------------------------------------- */

static void full_round_trip(const void *states, int n, int d, wire_dtype t, bool expect_zstd) {
    session s;
    session_new(&s);
    inf_error err;
    size_t bytes = (size_t)n * (size_t)d * wire_dtype_size(t);
    /* client -> worker */
    wire_msg req = header(&s, 5, 100, n, d, t);
    size_t jlen;
    char *json = seal_to_json(&s, &req, states, &jlen);
    cr_assert_eq(req.zstd, expect_zstd, "zstd chosen: %d", req.zstd);
    cr_assert_leq(jlen, wire_request_max_json(n, d, t));
    wire_msg in;
    cr_assert_eq(wire_request_parse(json, jlen, MAXJ, &in, &err), INF_OK, "%s", err.msg);
    cr_assert_str_eq(in.session, req.session);
    cr_assert_eq(in.step, 5);
    cr_assert_eq(in.pos, 100);
    cr_assert_eq(in.n, n);
    cr_assert_eq(in.d, d);
    cr_assert_eq(in.dtype, t);
    cr_assert_eq(in.zstd, req.zstd);
    cr_assert_eq(memcmp(&in.epk, &s.eph.pub, 32), 0);
    cr_assert_eq(in.payload_len, req.payload_len);
    cr_assert_eq(memcmp(in.payload, req.payload, in.payload_len), 0);
    /* The worker derives its keys from what the request carries. */
    uint8_t sid[16];
    seal_keys wk;
    cr_assert_eq(seal_sid_parse(in.session, sid, &err), INF_OK);
    cr_assert_eq(seal_derive_worker(&s.worker, &in.epk, sid, &wk, &err), INF_OK);
    uint8_t kv[32];
    void *got = NULL;
    size_t got_bytes = 0;
    cr_assert_eq(wire_open_request(&wk, &in, kv, &got, &got_bytes, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(got_bytes, bytes);
    cr_assert_eq(memcmp(got, states, bytes), 0);
    cr_assert_eq(memcmp(kv, s.kv_key, 32), 0);
    /* worker -> client: the same states back (as if the layers were the identity) */
    wire_msg rep;
    memset(&rep, 0, sizeof rep);
    rep.n = n;
    rep.d = d;
    rep.dtype = t;
    cr_assert_eq(wire_seal_reply(&wk, &in, &rep, got, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rep.zstd, expect_zstd);
    char *rj = wire_reply_to_json(&rep, &jlen, &err);
    cr_assert_not_null(rj, "%s", err.msg);
    cr_assert_null(strstr(rj, "\"epk\""));
    wire_msg rin;
    cr_assert_eq(wire_reply_parse(rj, jlen, MAXJ, &rin, &err), INF_OK, "%s", err.msg);
    void *back = NULL;
    size_t back_bytes = 0;
    cr_assert_eq(wire_open_reply(&s.client, &req, &rin, &back, &back_bytes, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(back_bytes, bytes);
    cr_assert_eq(memcmp(back, states, bytes), 0);
    free(back);
    free(got);
    free(rj);
    free(json);
    wire_msg_free(&rin);
    wire_msg_free(&rep);
    wire_msg_free(&in);
    wire_msg_free(&req);
}

Test(wire, realistic_17x576_f16_round_trip_without_zstd) {
    /* Uniformly random bits: incompressible, so zstd stays off. */
    uint16_t *st = malloc(17 * 576 * 2);
    for (int i = 0; i < 17 * 576; i++) st[i] = (uint16_t)rng();
    full_round_trip(st, 17, 576, WIRE_F16, false);
    free(st);
}

Test(wire, realistic_17x576_f16_round_trip_with_zstd) {
    /* Gaussian f16 states: the exponent bits compress a little. */
    void *st = gaussian_states(17, 576, WIRE_F16, 1.0);
    full_round_trip(st, 17, 576, WIRE_F16, true);
    free(st);
}

Test(wire, other_dtypes_and_sizes_round_trip) {
    void *a = gaussian_states(1, 576, WIRE_F32, 0.05);
    full_round_trip(a, 1, 576, WIRE_F32, true);
    free(a);
    void *b = gaussian_states(3, 64, WIRE_BF16, 2.0);
    full_round_trip(b, 3, 64, WIRE_BF16, true);
    free(b);
    uint16_t one = 0x3c00;
    full_round_trip(&one, 1, 1, WIRE_F16, false);
}

Test(wire, json_is_the_documented_shape) {
    session s;
    session_new(&s);
    uint16_t st[4] = {1, 2, 3, 4};
    wire_msg req = header(&s, 7, 3, 2, 2, WIRE_F16);
    size_t len;
    char *j = seal_to_json(&s, &req, st, &len);
    char want[256], epk[45];
    keys_public_base64(&s.eph.pub, epk);
    snprintf(want, sizeof want,
             "{\"v\":1,\"session\":\"%s\",\"step\":7,\"pos\":3,\"n\":2,\"dtype\":\"f16\",\"shape\":[2,2],"
             "\"zstd\":false,\"epk\":\"%s\",\"payload\":\"",
             req.session, epk);
    cr_assert_eq(strncmp(j, want, strlen(want)), 0, "%s", j);
    cr_assert_eq(req.payload_len, 32 + 8 + 16);
    char aad[WIRE_AAD_MAX];
    size_t alen;
    inf_error err;
    cr_assert_eq(wire_request_aad(&req, aad, sizeof aad, &alen, &err), INF_OK);
    snprintf(want, sizeof want, "infemeral/1 req %s 7 3 2 f16 2 0 %s", req.session, epk);
    cr_assert_str_eq(aad, want);
    cr_assert_eq(alen, strlen(want));
    free(j);
    wire_msg_free(&req);
    char *e = wire_error_json("auth", "bad \"tag\"\n");
    cr_assert_str_eq(e, "{\"error\":{\"code\":\"auth\",\"message\":\"bad \\\"tag\\\"\\n\"}}");
    wire_msg m;
    cr_assert_eq(wire_reply_parse(e, strlen(e), MAXJ, &m, &err), INF_E_AUTH);
    cr_assert(strstr(err.msg, "worker error (auth): bad \"tag\""), "%s", err.msg);
    free(e);
    cr_assert_str_eq(wire_status_code(INF_E_BUSY), "busy");
    cr_assert_eq(wire_code_status("busy"), INF_E_BUSY);
}

/* ---- tampering ------------------------------------------------------------------ */

Test(wire, every_request_header_field_tampered_is_auth) {
    session s;
    session_new(&s);
    inf_error err;
    void *st = gaussian_states(17, 576, WIRE_F16, 1.0);
    for (int z = 0; z < 2; z++) { /* z = 1: a compressed payload (n and d may then change too) */
        wire_msg req = header(&s, 9, 40, 17, 576, WIRE_F16);
        if (!z) { /* incompressible states */
            uint16_t *u = st;
            for (int i = 0; i < 17 * 576; i++) u[i] = (uint16_t)rng();
        } else {
            free(st);
            st = gaussian_states(17, 576, WIRE_F16, 1.0);
        }
        cr_assert_eq(wire_seal_request(&s.client, &req, s.kv_key, st, &err), INF_OK);
        cr_assert_eq(req.zstd, z == 1);
        for (int f = 0; f < 11; f++) {
            wire_msg t = req;
            keys_pair other;
            switch (f) {
            case 0: t.session[5] = t.session[5] == 'a' ? 'b' : 'a'; break;
            case 1: t.step++; break;
            case 2: t.pos--; break;
            case 3: t.dtype = WIRE_BF16; break;
            case 4: t.epk.b[0] ^= 1; break;
            case 5: t.payload[3] ^= 0x80; break;
            case 6: t.payload[t.payload_len - 1] ^= 1; break;
            case 7: if (!z) continue; t.n = 18; break;
            case 8: if (!z) continue; t.d = 577; break;
            case 9: if (!z) continue; t.zstd = false; break;
            case 10:
                cr_assert_eq(keys_generate(&other, &err), INF_OK);
                t.epk = other.pub;
                break;
            }
            uint8_t kv[32];
            void *out = NULL;
            size_t nb;
            inf_status r = wire_open_request(&s.server, &t, kv, &out, &nb, &err);
            if (f == 9) { /* zstd true -> false: the length alone gives it away */
                cr_assert(r == INF_E_AUTH || r == INF_E_FORMAT, "field %d: %d", f, r);
            } else {
                cr_assert_eq(r, INF_E_AUTH, "field %d: st %d (%s)", f, r, err.msg);
                cr_assert(strstr(err.msg, "request: authentication failed"), "%s", err.msg);
            }
            cr_assert_null(out);
            if (f == 5) t.payload[3] ^= 0x80;
            if (f == 6) t.payload[t.payload_len - 1] ^= 1;
        }
        wire_msg_free(&req);
    }
    free(st);
}

Test(wire, tampered_json_text_is_auth) {
    session s;
    session_new(&s);
    inf_error err;
    void *st = gaussian_states(4, 64, WIRE_F16, 1.0);
    wire_msg req = header(&s, 12, 40, 4, 64, WIRE_F16);
    size_t len;
    char *j = seal_to_json(&s, &req, st, &len);
    const char *edits[][2] = {{"\"step\":12", "\"step\":13"}, {"\"pos\":40", "\"pos\":41"},
                              {"\"dtype\":\"f16\"", "\"dtype\":\"bf16\""}};
    for (int e = 0; e < 3; e++) {
        char *c = malloc(len + 8);
        char *at = strstr(j, edits[e][0]);
        cr_assert_not_null(at);
        size_t pre = (size_t)(at - j);
        memcpy(c, j, pre);
        strcpy(c + pre, edits[e][1]);
        strcat(c, at + strlen(edits[e][0]));
        wire_msg in;
        cr_assert_eq(wire_request_parse(c, strlen(c), MAXJ, &in, &err), INF_OK, "%s", err.msg);
        uint8_t kv[32];
        void *out = NULL;
        size_t nb;
        cr_assert_eq(wire_open_request(&s.server, &in, kv, &out, &nb, &err), INF_E_AUTH, "edit %d", e);
        wire_msg_free(&in);
        free(c);
    }
    free(j);
    free(st);
    wire_msg_free(&req);
}

Test(wire, reply_for_another_request_is_auth) {
    session s;
    session_new(&s);
    inf_error err;
    void *st = gaussian_states(2, 32, WIRE_F32, 1.0);
    wire_msg a = header(&s, 1, 0, 2, 32, WIRE_F32), b = header(&s, 1, 0, 2, 32, WIRE_F32),
             c = header(&s, 2, 2, 2, 32, WIRE_F32);
    cr_assert_eq(wire_seal_request(&s.client, &a, s.kv_key, st, &err), INF_OK);
    ((float *)st)[0] += 1; /* b: the same header, other states */
    cr_assert_eq(wire_seal_request(&s.client, &b, s.kv_key, st, &err), INF_OK);
    cr_assert_eq(wire_seal_request(&s.client, &c, s.kv_key, st, &err), INF_OK);
    wire_msg ra;
    memset(&ra, 0, sizeof ra);
    ra.n = 1;
    ra.d = 32;
    ra.dtype = WIRE_F32;
    cr_assert_eq(wire_seal_reply(&s.server, &a, &ra, st, &err), INF_OK, "%s", err.msg);
    void *out = NULL;
    size_t nb;
    cr_assert_eq(wire_open_reply(&s.client, &a, &ra, &out, &nb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(nb, 32 * 4);
    free(out);
    out = NULL;
    /* Same session, step and pos, other payload: only the hash tells. */
    cr_assert_eq(wire_open_reply(&s.client, &b, &ra, &out, &nb, &err), INF_E_AUTH);
    cr_assert(strstr(err.msg, "reply: authentication failed"), "%s", err.msg);
    /* Another step. */
    cr_assert_eq(wire_open_reply(&s.client, &c, &ra, &out, &nb, &err), INF_E_AUTH);
    cr_assert(strstr(err.msg, "different request"), "%s", err.msg);
    /* Another session with the same worker. */
    session t;
    session_new(&t);
    t.worker = s.worker;
    wire_msg x = header(&t, 1, 0, 2, 32, WIRE_F32);
    memcpy(x.session, a.session, sizeof x.session);
    cr_assert_eq(wire_seal_request(&t.client, &x, t.kv_key, st, &err), INF_OK);
    cr_assert_eq(wire_open_reply(&t.client, &x, &ra, &out, &nb, &err), INF_E_AUTH);
    /* A reply header edited in place. */
    wire_msg r2 = ra;
    r2.n = 2;
    cr_assert_eq(wire_open_reply(&s.client, &a, &r2, &out, &nb, &err), INF_E_AUTH);
    r2 = ra;
    r2.dtype = WIRE_F16;
    r2.d = 64;
    cr_assert_eq(wire_open_reply(&s.client, &a, &r2, &out, &nb, &err), INF_E_SHAPE);
    cr_assert_null(out);
    wire_msg_free(&ra);
    wire_msg_free(&a);
    wire_msg_free(&b);
    wire_msg_free(&c);
    wire_msg_free(&x);
    free(st);
}

/* ---- strict parsing ---------------------------------------------------------------- */

/* A valid request JSON to edit: n=2, d=4, f32, uncompressed. */
static char *valid_json(session *s, wire_msg *req) {
    session_new(s);
    float st[8] = {0};
    for (int i = 0; i < 8; i++) st[i] = (float)rng() / 1e19f; /* incompressible enough */
    *req = header(s, 3, 10, 2, 4, WIRE_F32);
    size_t len;
    char *j = seal_to_json(s, req, st, &len);
    cr_assert_eq(req->zstd, false);
    return j;
}

/* j with the first occurrence of `from` replaced by `to`; malloc'd. */
static char *edit(const char *j, const char *from, const char *to) {
    const char *at = strstr(j, from);
    cr_assert_not_null(at, "%s not in %s", from, j);
    char *c = malloc(strlen(j) + strlen(to) + 1);
    memcpy(c, j, (size_t)(at - j));
    strcpy(c + (at - j), to);
    strcat(c, at + strlen(from));
    return c;
}

static void expect_error(const char *json, inf_status want, const char *needle1, const char *needle2) {
    wire_msg m;
    inf_error err = {{0}};
    inf_status st = wire_request_parse(json, strlen(json), MAXJ, &m, &err);
    cr_assert_eq(st, want, "status %d (%s) for %.200s", st, err.msg, json);
    cr_assert(strstr(err.msg, needle1), "'%s' not in: %s", needle1, err.msg);
    if (needle2) cr_assert(strstr(err.msg, needle2), "'%s' not in: %s", needle2, err.msg);
    cr_assert_null(m.payload);
}

Test(wire, malformed_json) {
    expect_error("{", INF_E_FORMAT, "malformed JSON", NULL);
    expect_error("", INF_E_FORMAT, "empty", NULL);
    expect_error("[1,2]", INF_E_FORMAT, "must be a JSON object", "an array");
    expect_error("{\"v\":1} x", INF_E_FORMAT, "trailing", NULL);
    expect_error("{\"v\":1,}", INF_E_FORMAT, "malformed JSON", NULL);
    session s;
    wire_msg req;
    char *j = valid_json(&s, &req);
    char *c = edit(j, "}", "}}");
    expect_error(c, INF_E_FORMAT, "trailing", NULL);
    free(c);
    wire_msg m;
    inf_error err;
    cr_assert_eq(wire_request_parse(j, strlen(j), MAXJ, &m, &err), INF_OK, "%s", err.msg);
    wire_msg_free(&m);
    free(j);
    wire_msg_free(&req);
}

Test(wire, unknown_duplicate_and_missing_fields) {
    session s;
    wire_msg req;
    char *j = valid_json(&s, &req);
    char *c = edit(j, "\"v\":1,", "\"v\":1,\"extra\":true,");
    expect_error(c, INF_E_FORMAT, "unknown field \"extra\"", NULL);
    free(c);
    c = edit(j, "\"v\":1,", "\"v\":1,\"ba\\u0001d\":0,");
    expect_error(c, INF_E_FORMAT, "unknown field \"ba?d\"", NULL);
    free(c);
    c = edit(j, "\"v\":1,", "\"v\":1,\"step\":4,");
    expect_error(c, INF_E_FORMAT, "duplicate field \"step\"", NULL);
    free(c);
    /* Each field removed in turn. */
    static const char *const fields[] = {"v", "session", "step", "pos", "n", "dtype", "shape", "zstd", "epk", "payload"};
    for (size_t i = 0; i < 10; i++) {
        char key[32];
        snprintf(key, sizeof key, "\"%s\":", fields[i]);
        const char *at = strstr(j, key);
        cr_assert_not_null(at);
        /* the value ends at the next top-level comma or the closing brace */
        const char *end = at + strlen(key);
        int depth = 0, in_str = 0;
        for (;; end++) {
            if (*end == '"') in_str = !in_str;
            else if (!in_str && *end == '[') depth++;
            else if (!in_str && *end == ']') depth--;
            else if (!in_str && depth == 0 && (*end == ',' || *end == '}')) break;
        }
        char *cut = malloc(strlen(j) + 1);
        size_t pre = (size_t)(at - j);
        memcpy(cut, j, pre);
        strcpy(cut + pre, *end == ',' ? end + 1 : end);
        if (*end == '}' && cut[pre - 1] == ',') memmove(cut + pre - 1, cut + pre, strlen(cut + pre) + 1);
        char want[48];
        snprintf(want, sizeof want, "missing field \"%s\"", fields[i]);
        expect_error(cut, INF_E_FORMAT, want, NULL);
        free(cut);
    }
    /* A reply never carries epk. */
    c = edit(j, "\"v\":1,", "\"v\":1,");
    wire_msg m;
    inf_error err;
    cr_assert_eq(wire_reply_parse(c, strlen(c), MAXJ, &m, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "reply: unknown field \"epk\""), "%s", err.msg);
    free(c);
    free(j);
    wire_msg_free(&req);
}

Test(wire, wrong_types_and_ranges) {
    session s;
    wire_msg req;
    char *j = valid_json(&s, &req);
    char sess[64];
    snprintf(sess, sizeof sess, "\"session\":\"%s\"", req.session);
    struct {
        const char *from, *to;
        inf_status st;
        const char *n1, *n2;
    } cases[] = {
        {"\"v\":1", "\"v\":\"1\"", INF_E_FORMAT, "v:", "a string"},
        {"\"v\":1", "\"v\":2", INF_E_UNSUPPORTED, "v:", "version 2"},
        {sess, "\"session\":123", INF_E_FORMAT, "session:", "a number"},
        {sess, "\"session\":\"ABCDEF0123456789abcdef0123456789\"", INF_E_FORMAT, "session:", "ABCDEF01"},
        {sess, "\"session\":\"abc\"", INF_E_FORMAT, "session:", "\"abc\""},
        {"\"step\":3", "\"step\":\"3\"", INF_E_FORMAT, "step:", "a string"},
        {"\"step\":3", "\"step\":-1", INF_E_RANGE, "step:", "-1"},
        {"\"step\":3", "\"step\":1.5", INF_E_FORMAT, "step:", "1.5"},
        {"\"step\":3", "\"step\":9007199254740994", INF_E_RANGE, "step:", "9007199254740994"},
        {"\"step\":3", "\"step\":1e300", INF_E_RANGE, "step:", "1e+300"},
        {"\"pos\":10", "\"pos\":-1", INF_E_RANGE, "pos:", "-1"},
        {"\"pos\":10", "\"pos\":2147483648", INF_E_RANGE, "pos:", "2147483648"},
        {"\"pos\":10", "\"pos\":2147483647", INF_E_RANGE, "pos:", "2147483647"}, /* pos + n past 2^31 */
        {"\"pos\":10", "\"pos\":null", INF_E_FORMAT, "pos:", "null"},
        {"\"n\":2", "\"n\":true", INF_E_FORMAT, "n:", "a boolean"},
        {"\"n\":2", "\"n\":0", INF_E_RANGE, "n:", "0"},
        {"\"n\":2", "\"n\":65537", INF_E_RANGE, "n:", "65537"},
        {"\"dtype\":\"f32\"", "\"dtype\":\"f64\"", INF_E_FORMAT, "dtype:", "\"f64\""},
        {"\"dtype\":\"f32\"", "\"dtype\":32", INF_E_FORMAT, "dtype:", "a number"},
        {"\"shape\":[2,4]", "\"shape\":\"2x4\"", INF_E_FORMAT, "shape:", "a string"},
        {"\"shape\":[2,4]", "\"shape\":[2,4,1]", INF_E_FORMAT, "shape:", "another length"},
        {"\"shape\":[2,4]", "\"shape\":[3,4]", INF_E_SHAPE, "shape[0]:", "n = 2"},
        {"\"shape\":[2,4]", "\"shape\":[2,0]", INF_E_RANGE, "shape[1]:", "0"},
        {"\"shape\":[2,4]", "\"shape\":[2,65537]", INF_E_RANGE, "shape[1]:", "65537"},
        {"\"shape\":[2,4]", "\"shape\":[2,\"4\"]", INF_E_FORMAT, "shape[1]:", "a string"},
        {"\"zstd\":false", "\"zstd\":0", INF_E_FORMAT, "zstd:", "a number"},
        {"\"zstd\":false", "\"zstd\":true", INF_E_FORMAT, "payload:", "zstd:true"},
        {"\"epk\":\"", "\"epk\":5,\"x\":\"", INF_E_FORMAT, "", NULL}, /* then an unknown field */
        {"\"payload\":\"", "\"payload\":\"!", INF_E_FORMAT, "payload:", NULL},
        {"\"payload\":\"", "\"payload\":\"AAAA", INF_E_FORMAT, "payload:", "needs exactly"},
        {"\"payload\":\"", "\"payload\":null,\"y\":\"", INF_E_FORMAT, "", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *c = edit(j, cases[i].from, cases[i].to);
        expect_error(c, cases[i].st, cases[i].n1, cases[i].n2);
        free(c);
    }
    /* Type errors of epk and payload themselves. */
    char epk[64];
    keys_public_base64(&s.eph.pub, epk);
    char from[80];
    snprintf(from, sizeof from, "\"epk\":\"%s\"", epk);
    char *c = edit(j, from, "\"epk\":5");
    expect_error(c, INF_E_FORMAT, "epk:", "a number");
    free(c);
    c = edit(j, from, "\"epk\":\"AAAA\"");
    expect_error(c, INF_E_FORMAT, "request: epk", NULL);
    free(c);
    const char *p = strstr(j, "\"payload\":\"");
    char *np = strdup(j);
    strcpy(np + (p - j), "\"payload\":null}");
    expect_error(np, INF_E_FORMAT, "payload:", "null");
    free(np);
    free(j);
    wire_msg_free(&req);
}

Test(wire, size_limit_and_payload_length) {
    session s;
    wire_msg req;
    char *j = valid_json(&s, &req);
    size_t len = strlen(j);
    wire_msg m;
    inf_error err;
    cr_assert_eq(wire_request_parse(j, len, len - 1, &m, &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "limit"), "%s", err.msg);
    cr_assert_eq(wire_request_parse(j, len, len, &m, &err), INF_OK, "%s", err.msg);
    wire_msg_free(&m);
    /* 4 base64 characters short, and 4 too many. */
    const char *p = strstr(j, "\"payload\":\"") + 11;
    char *shortj = strdup(j);
    memmove(shortj + (p - j), p + 4, strlen(p + 4) + 1);
    expect_error(shortj, INF_E_FORMAT, "payload:", "needs exactly");
    free(shortj);
    char *longj = edit(j, "\"payload\":\"", "\"payload\":\"AAAA");
    expect_error(longj, INF_E_FORMAT, "payload:", "needs exactly");
    free(longj);
    free(j);
    wire_msg_free(&req);
}

/* Seals hand-made compressed plaintext under a valid header and AAD. */
static void seal_custom(const session *s, wire_msg *req, const uint8_t *plain, size_t n) {
    inf_error err;
    req->zstd = true;
    char aad[WIRE_AAD_MAX];
    size_t alen;
    cr_assert_eq(wire_request_aad(req, aad, sizeof aad, &alen, &err), INF_OK);
    req->payload = malloc(n + 16);
    req->payload_len = n + 16;
    cr_assert_eq(seal_encrypt(&s->client, SEAL_DIR_C2S, req->step, aad, alen, plain, n, req->payload, &err), INF_OK);
}

Test(wire, zstd_bomb_and_bad_frames_are_refused) {
    session s;
    session_new(&s);
    inf_error err;
    /* 64 MiB of zeros compresses to a few KiB; the header says 17 x 576 f16. */
    size_t big = 64u << 20;
    uint8_t *zeros = calloc(1, big);
    size_t cb = ZSTD_compressBound(big);
    uint8_t *z = malloc(cb);
    size_t zn = ZSTD_compress(z, cb, zeros, big, 3);
    cr_assert(!ZSTD_isError(zn));
    cr_assert_lt(zn, 17 * 576 * 2);
    wire_msg req = header(&s, 1, 0, 17, 576, WIRE_F16);
    seal_custom(&s, &req, z, zn);
    size_t jl;
    char *j = wire_request_to_json(&req, &jl, &err);
    cr_assert_not_null(j, "%s", err.msg);
    wire_msg in;
    cr_assert_eq(wire_request_parse(j, jl, MAXJ, &in, &err), INF_OK, "%s", err.msg);
    uint8_t kv[32];
    void *out = NULL;
    size_t nb;
    cr_assert_eq(wire_open_request(&s.server, &in, kv, &out, &nb, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "payload") && strstr(err.msg, "more than the 19616 bytes"), "%s", err.msg);
    cr_assert_null(out);
    wire_msg_free(&in);
    wire_msg_free(&req);
    free(j);
    /* Too short a result. */
    zn = ZSTD_compress(z, cb, zeros, 1000, 3);
    req = header(&s, 2, 0, 17, 576, WIRE_F16);
    seal_custom(&s, &req, z, zn);
    cr_assert_eq(wire_open_request(&s.server, &req, kv, &out, &nb, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "decompresses to 1000 bytes"), "%s", err.msg);
    wire_msg_free(&req);
    /* Not zstd at all (but authentic). */
    memset(z, 0x41, 100);
    req = header(&s, 3, 0, 17, 576, WIRE_F16);
    seal_custom(&s, &req, z, 100);
    cr_assert_eq(wire_open_request(&s.server, &req, kv, &out, &nb, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "zstd"), "%s", err.msg);
    wire_msg_free(&req);
    /* A truncated frame. */
    uint8_t *g = gaussian_states(17, 576, WIRE_F16, 1.0);
    uint8_t *pl = malloc(32 + 17 * 576 * 2);
    memcpy(pl + 32, g, 17 * 576 * 2);
    memset(pl, 7, 32);
    zn = ZSTD_compress(z, cb, pl, 32 + 17 * 576 * 2, 1);
    req = header(&s, 4, 0, 17, 576, WIRE_F16);
    seal_custom(&s, &req, z, zn - 5);
    cr_assert_eq(wire_open_request(&s.server, &req, kv, &out, &nb, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "truncated") || strstr(err.msg, "corrupt"), "%s", err.msg);
    wire_msg_free(&req);
    /* And the whole frame opens. */
    req = header(&s, 5, 0, 17, 576, WIRE_F16);
    seal_custom(&s, &req, z, zn);
    cr_assert_eq(wire_open_request(&s.server, &req, kv, &out, &nb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(out, g, nb), 0);
    free(out);
    wire_msg_free(&req);
    free(pl);
    free(g);
    free(z);
    free(zeros);
}

/* ---- compression: chosen only when smaller; the ratios on real-looking data ---- */

/* Compressed/raw for the request plaintext (kv key + states) at levels 1..3,
 * and checks that the wire chose zstd exactly when level WIRE_ZSTD_LEVEL
 * made it smaller. Prints one line for docs/wire.md. */
static void measure(const char *label, const void *states, int n, int d, wire_dtype t) {
    session s;
    session_new(&s);
    size_t bytes = (size_t)n * (size_t)d * wire_dtype_size(t), raw = bytes + 32;
    uint8_t *plain = malloc(raw);
    memcpy(plain, s.kv_key, 32);
    memcpy(plain + 32, states, bytes);
    size_t cb = ZSTD_compressBound(raw);
    uint8_t *z = malloc(cb);
    double ratio[4] = {0};
    for (int lvl = 1; lvl <= 3; lvl++) {
        size_t c = ZSTD_compress(z, cb, plain, raw, lvl);
        cr_assert(!ZSTD_isError(c));
        ratio[lvl] = (double)c / (double)raw;
    }
    wire_msg req = header(&s, 1, 0, n, d, t);
    inf_error err;
    cr_assert_eq(wire_seal_request(&s.client, &req, s.kv_key, states, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(req.zstd, ratio[WIRE_ZSTD_LEVEL] < 1.0, "%s: zstd flag %d, ratio %.4f", label, req.zstd,
                 ratio[WIRE_ZSTD_LEVEL]);
    if (req.zstd) cr_assert_lt(req.payload_len, raw + 16);
    else cr_assert_eq(req.payload_len, raw + 16);
    fprintf(stderr, "[wire ratio] %-44s %5d x %4d %-4s  level1 %.4f  level2 %.4f  level3 %.4f  -> zstd %s\n", label,
            n, d, wire_dtype_name(t), ratio[1], ratio[2], ratio[3], req.zstd ? "on" : "off");
    wire_msg_free(&req);
    free(z);
    free(plain);
}

Test(wire, zstd_only_when_smaller_gaussian) {
    uint16_t *u = malloc(17 * 576 * 2);
    for (int i = 0; i < 17 * 576; i++) u[i] = (uint16_t)rng();
    measure("uniform random bits", u, 17, 576, WIRE_F16);
    free(u);
    uint16_t *zero = calloc(17 * 576, 2);
    measure("all zeros", zero, 17, 576, WIRE_F16);
    free(zero);
    const wire_dtype ts[3] = {WIRE_F16, WIRE_BF16, WIRE_F32};
    for (int k = 0; k < 3; k++) {
        void *g = gaussian_states(17, 576, ts[k], 1.0);
        measure("Gaussian sigma 1", g, 17, 576, ts[k]);
        free(g);
        g = gaussian_states(1, 576, ts[k], 1.0);
        measure("Gaussian sigma 1 (one decode token)", g, 1, 576, ts[k]);
        free(g);
    }
}

static void *convert(const float *x, size_t cnt, wire_dtype t) {
    void *p = malloc(cnt * wire_dtype_size(t));
    for (size_t i = 0; i < cnt; i++) {
        if (t == WIRE_F32) ((float *)p)[i] = x[i];
        else if (t == WIRE_F16) ((uint16_t *)p)[i] = inf_f32_to_f16(x[i]);
        else ((uint16_t *)p)[i] = inf_f32_to_bf16(x[i]);
    }
    return p;
}

Test(wire, zstd_ratio_on_smollm2_states, .timeout = 600) {
    const char *path = tu_smollm2();
    if (!path) cr_skip_test("skipped: SmolLM2 GGUF not present (INF_SMOLLM2 unset)");
    inf_model *m = NULL;
    inf_error err;
    cr_assert_eq(inf_model_load(path, &m, &err), INF_OK, "%s", err.msg);
    tok_tokenizer *tok = NULL;
    cr_assert_eq(tok_load_file(path, m->cfg.vocab_size, &tok, NULL, &err), INF_OK, "%s", err.msg);
    const char *text = "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find "
                       "its friends who are waiting for it near the old oak tree by the river.";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq(tok_encode(tok, text, strlen(text), false, false, &ids, &n_ids, &err), INF_OK, "%s", err.msg);
    int n = (int)n_ids, d = m->cfg.dim;
    size_t cnt = (size_t)n * (size_t)d;
    float *e = malloc(cnt * sizeof(float)), *q = malloc(cnt * sizeof(float)), *h = malloc(cnt * sizeof(float));
    cr_assert_eq(inf_embed(m, ids, n, e, &err), INF_OK, "%s", err.msg);
    rot_seed seed;
    for (int i = 0; i < ROT_SEED_BYTES; i++) seed.b[i] = (uint8_t)(i * 29 + 1);
    rot_ctx rc;
    cr_assert_eq(rot_ctx_init(&rc, &seed, d, false, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_apply(&rc, e, (size_t)n, q, &err), INF_OK, "%s", err.msg);
    /* The reply side: the layers' output for the same tokens, rotated the
     * same way (what a rotated server bundle sends back, up to rounding). */
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &m->cfg, n, &err), INF_OK, "%s", err.msg);
    memcpy(h, e, cnt * sizeof(float));
    cr_assert_eq(cpu_forward(m, &kv, h, n, 0, &err), INF_OK, "%s", err.msg);
    float *hq = malloc(cnt * sizeof(float));
    cr_assert_eq(rot_apply(&rc, h, (size_t)n, hq, &err), INF_OK, "%s", err.msg);
    const wire_dtype ts[3] = {WIRE_F16, WIRE_BF16, WIRE_F32};
    for (int k = 0; k < 3; k++) {
        char label[64];
        void *p = convert(e, cnt, ts[k]);
        snprintf(label, sizeof label, "SmolLM2 embeddings, not rotated");
        measure(label, p, n, d, ts[k]);
        free(p);
        p = convert(q, cnt, ts[k]);
        measure("SmolLM2 embeddings, rotated (request)", p, n, d, ts[k]);
        free(p);
        p = convert(hq, cnt, ts[k]);
        measure("SmolLM2 layer output, rotated (reply)", p, n, d, ts[k]);
        free(p);
        p = convert(q + (size_t)(n - 1) * d, (size_t)d, ts[k]);
        measure("SmolLM2 one rotated embedding (decode)", p, 1, d, ts[k]);
        free(p);
    }
    /* What the compressed length says about a single-token request (what a
     * network observer sees): the spread of zstd sizes over the first 2000
     * vocabulary entries, rotated, f16, and its correlation with the
     * embedding's norm. */
    {
        int nv = m->cfg.vocab_size < 2000 ? m->cfg.vocab_size : 2000;
        float *ev = malloc((size_t)d * sizeof(float)), *rv = malloc((size_t)d * sizeof(float));
        uint8_t *plain = malloc(32 + (size_t)d * 2), *z = malloc(ZSTD_compressBound(32 + (size_t)d * 2));
        memset(plain, 0xA5, 32);
        double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
        size_t lo = SIZE_MAX, hi = 0;
        for (int32_t id = 0; id < nv; id++) {
            cr_assert_eq(inf_embed(m, &id, 1, ev, &err), INF_OK);
            cr_assert_eq(rot_apply(&rc, ev, 1, rv, &err), INF_OK);
            double nrm = 0;
            for (int i = 0; i < d; i++) {
                nrm += (double)ev[i] * ev[i];
                ((uint16_t *)(plain + 32))[i] = inf_f32_to_f16(rv[i]);
            }
            nrm = sqrt(nrm);
            size_t c = ZSTD_compress(z, ZSTD_compressBound(32 + (size_t)d * 2), plain, 32 + (size_t)d * 2,
                                     WIRE_ZSTD_LEVEL);
            if (c < lo) lo = c;
            if (c > hi) hi = c;
            sx += nrm; sy += (double)c; sxx += nrm * nrm; syy += (double)c * c; sxy += nrm * c;
        }
        double mx = sx / nv, my = sy / nv;
        double vx = sxx / nv - mx * mx, vy = syy / nv - my * my, cxy = sxy / nv - mx * my;
        fprintf(stderr,
                "[wire length leak] one rotated f16 embedding, %d ids: zstd size %zu..%zu bytes (mean %.1f, sd "
                "%.2f of %d raw), corr(size, norm) = %.3f\n",
                nv, lo, hi, my, sqrt(vy > 0 ? vy : 0), 32 + d * 2, vx > 0 && vy > 0 ? cxy / sqrt(vx * vy) : 0.0);
        free(ev);
        free(rv);
        free(plain);
        free(z);
    }
    inf_kv_free(&kv);
    rot_ctx_free(&rc);
    free(hq);
    free(h);
    free(q);
    free(e);
    free(ids);
    tok_free(tok);
    inf_model_free(m);
}

/* The worked example of docs/wire.md, computed independently with Python's
 * `cryptography` package (the script is in the document): the C code must
 * produce the same bytes. */
Test(wire, docs_worked_example_matches_an_independent_implementation) {
    static const char *const REQ =
        "{\"v\":1,\"session\":\"000102030405060708090a0b0c0d0e0f\",\"step\":1,\"pos\":0,\"n\":2,\"dtype\":\"f16\","
        "\"shape\":[2,4],\"zstd\":false,\"epk\":\"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\",\"payload\":"
        "\"N2e3K9FIo/Ed8hsfj8WJulOGOP3lRnWBr6Oa4+VQF2OUSdpd33cWY5XZxnPSFzCtFeUVDJ0UzLRofrDzOOsKbA==\"}";
    static const char *const REP =
        "{\"v\":1,\"session\":\"000102030405060708090a0b0c0d0e0f\",\"step\":1,\"pos\":0,\"n\":1,\"dtype\":\"f16\","
        "\"shape\":[1,4],\"zstd\":false,\"payload\":\"RVkwK69UWxQkKWxxRKcARO53P9tu7pRT\"}";
    inf_error err;
    keys_pair worker, eph;
    cr_assert_eq(keys_from_base64_private("XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os=", NULL, &worker, &err), INF_OK);
    uint8_t a[32];
    const char *ah = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(ah + 2 * i, "%2x", &v);
        a[i] = (uint8_t)v;
    }
    cr_assert_eq(keys_from_raw_private(a, &eph, &err), INF_OK);
    char fpr[KEYS_FPR_LEN], pub[KEYS_B64_LEN + 1];
    cr_assert_eq(keys_fingerprint(&worker.pub, fpr, &err), INF_OK);
    cr_assert_str_eq(fpr, "a9190aa6111c37cdfdb7fce94e35d6cf");
    keys_public_base64(&worker.pub, pub);
    cr_assert_str_eq(pub, "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=");
    uint8_t sid[16], kv[32];
    for (int i = 0; i < 16; i++) sid[i] = (uint8_t)i;
    for (int i = 0; i < 32; i++) kv[i] = (uint8_t)(0x20 + i);
    seal_keys ck, wk;
    cr_assert_eq(seal_derive_client(&eph, &worker.pub, sid, &ck, &err), INF_OK);
    const float xs[8] = {1.0f, -2.0f, 0.5f, 0.0f, 0.25f, 3.0f, -0.125f, 1.5f}, ys[4] = {-1.0f, 0.75f, 2.0f, -0.5f};
    uint16_t x16[8], y16[4];
    for (int i = 0; i < 8; i++) x16[i] = inf_f32_to_f16(xs[i]);
    for (int i = 0; i < 4; i++) y16[i] = inf_f32_to_f16(ys[i]);
    wire_msg req;
    memset(&req, 0, sizeof req);
    seal_sid_hex(sid, req.session);
    req.step = 1;
    req.n = 2;
    req.d = 4;
    req.dtype = WIRE_F16;
    req.has_epk = true;
    req.epk = eph.pub;
    cr_assert_eq(wire_seal_request(&ck, &req, kv, x16, &err), INF_OK, "%s", err.msg);
    char *j = wire_request_to_json(&req, NULL, &err);
    cr_assert_str_eq(j, REQ);
    free(j);
    /* The worker's side, from the text alone. */
    wire_msg in;
    cr_assert_eq(wire_request_parse(REQ, strlen(REQ), 4096, &in, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_derive_worker(&worker, &in.epk, sid, &wk, &err), INF_OK);
    uint8_t kv2[32];
    void *st = NULL;
    size_t nb;
    cr_assert_eq(wire_open_request(&wk, &in, kv2, &st, &nb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(kv2, kv, 32), 0);
    cr_assert_eq(memcmp(st, x16, 16), 0);
    free(st);
    wire_msg rep;
    memset(&rep, 0, sizeof rep);
    rep.n = 1;
    rep.d = 4;
    rep.dtype = WIRE_F16;
    cr_assert_eq(wire_seal_reply(&wk, &in, &rep, y16, &err), INF_OK, "%s", err.msg);
    j = wire_reply_to_json(&rep, NULL, &err);
    cr_assert_str_eq(j, REP);
    free(j);
    wire_msg rin;
    cr_assert_eq(wire_reply_parse(REP, strlen(REP), 4096, &rin, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(wire_open_reply(&ck, &req, &rin, &st, &nb, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(nb, 8);
    cr_assert_eq(memcmp(st, y16, 8), 0);
    free(st);
    wire_msg_free(&rin);
    wire_msg_free(&rep);
    wire_msg_free(&in);
    wire_msg_free(&req);
}
