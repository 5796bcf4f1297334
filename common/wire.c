/* wire.c — see wire.h and docs/wire.md. */
#include "wire.h"

#include "tensor.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <zstd.h>

#include "base64.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wire.c assumes a little-endian host (the wire's states are little-endian)"
#endif

void wire_msg_free(wire_msg *m) {
    if (!m) return;
    free(m->payload);
    memset(m, 0, sizeof *m);
}

const char *wire_dtype_name(wire_dtype t) {
    switch (t) {
    case WIRE_F32: return "f32";
    case WIRE_F16: return "f16";
    case WIRE_BF16: return "bf16";
    }
    return "?";
}

size_t wire_dtype_size(wire_dtype t) { return t == WIRE_F32 ? 4 : 2; }

/* A short printable copy of attacker-controlled text for messages. */
static const char *printable(const char *s, char *buf, size_t cap) {
    size_t o = 0, i = 0;
    for (; s[i] && o + 1 < cap; i++) buf[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i] && cap >= 4) memcpy(buf + cap - 4, "...", 3), o = cap - 1;
    buf[o] = '\0';
    return buf;
}

inf_status wire_dtype_parse(const char *s, const char *field, wire_dtype *t, inf_error *err) {
    if (!strcmp(s, "f32")) *t = WIRE_F32;
    else if (!strcmp(s, "f16")) *t = WIRE_F16;
    else if (!strcmp(s, "bf16")) *t = WIRE_BF16;
    else {
        char pb[40];
        return inf_fail(err, INF_E_FORMAT, "%s: \"%s\" is not a wire dtype (f32, f16 or bf16)", field,
                        printable(s, pb, sizeof pb));
    }
    return INF_OK;
}

void wire_states_from_f32(const float *x, size_t count, wire_dtype t, void *out) {
    uint8_t *p = out;
    for (size_t i = 0; i < count; i++) {
        uint16_t hv;
        switch (t) {
        case WIRE_F32: memcpy(p + 4 * i, &x[i], 4); break;
        case WIRE_F16: hv = inf_f32_to_f16(x[i]); memcpy(p + 2 * i, &hv, 2); break;
        case WIRE_BF16: hv = inf_f32_to_bf16(x[i]); memcpy(p + 2 * i, &hv, 2); break;
        }
    }
}

void wire_states_to_f32(const void *in, size_t count, wire_dtype t, float *x) {
    const uint8_t *p = in;
    for (size_t i = 0; i < count; i++) {
        uint16_t hv;
        switch (t) {
        case WIRE_F32: memcpy(&x[i], p + 4 * i, 4); break;
        case WIRE_F16: memcpy(&hv, p + 2 * i, 2); x[i] = inf_f16_to_f32(hv); break;
        case WIRE_BF16: memcpy(&hv, p + 2 * i, 2); x[i] = inf_bf16_to_f32(hv); break;
        }
    }
}

inf_status wire_states_bytes(int32_t n, int32_t d, wire_dtype t, size_t *bytes, inf_error *err) {
    size_t nd;
    if (n < 0 || d < 0 || !inf_mul_size((size_t)n, (size_t)d, &nd) || !inf_mul_size(nd, wire_dtype_size(t), bytes))
        return inf_fail(err, INF_E_RANGE, "states of %" PRId32 " x %" PRId32 " are too large", n, d);
    return INF_OK;
}

size_t wire_request_max_json(int32_t n, int32_t d, wire_dtype t) {
    size_t b;
    if (n < 1 || n > WIRE_MAX_N || d < 1 || d > WIRE_MAX_D || wire_states_bytes(n, d, t, &b, NULL) != INF_OK)
        return 0;
    return 256 + b64_encoded_len(b + WIRE_KV_KEY_BYTES + SEAL_TAG_BYTES);
}

/* ---- header checks (shared by parse, to_json, seal and open) --------------- */

static int is_lowhex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* Everything but the payload. `what` is "request" or "reply". */
static inf_status check_header(const wire_msg *m, bool request, inf_error *err) {
    const char *what = request ? "request" : "reply";
    for (int i = 0; i < SEAL_SID_HEX; i++)
        if (!is_lowhex(m->session[i]))
            return inf_fail(err, INF_E_FORMAT, "%s: session: character %d is not lowercase hex (32 expected)", what,
                            i);
    if (m->session[SEAL_SID_HEX] != '\0')
        return inf_fail(err, INF_E_FORMAT, "%s: session: longer than 32 hex characters", what);
    if (m->step > WIRE_MAX_STEP)
        return inf_fail(err, INF_E_RANGE, "%s: step: %" PRIu64 " is out of range (0..2^53)", what, m->step);
    if (m->pos < 0 || m->pos > WIRE_MAX_POS)
        return inf_fail(err, INF_E_RANGE, "%s: pos: %" PRId64 " is out of range (0..2^31-1)", what, m->pos);
    if (m->n < 1 || m->n > WIRE_MAX_N)
        return inf_fail(err, INF_E_RANGE, "%s: n: %" PRId32 " is out of range (1..65536)", what, m->n);
    if (m->pos + m->n > WIRE_MAX_POS + 1)
        return inf_fail(err, INF_E_RANGE, "%s: pos + n: %" PRId64 " + %" PRId32 " goes past position 2^31", what,
                        m->pos, m->n);
    if (m->d < 1 || m->d > WIRE_MAX_D)
        return inf_fail(err, INF_E_RANGE, "%s: shape[1]: %" PRId32 " is out of range (1..65536)", what, m->d);
    if (m->dtype != WIRE_F32 && m->dtype != WIRE_F16 && m->dtype != WIRE_BF16)
        return inf_fail(err, INF_E_FORMAT, "%s: dtype: %d is not a wire dtype", what, (int)m->dtype);
    if (request && !m->has_epk) return inf_fail(err, INF_E_FORMAT, "request: epk: missing");
    if (!request && m->has_epk) return inf_fail(err, INF_E_FORMAT, "reply: epk: a reply carries no epk");
    return INF_OK;
}

/* Plaintext size declared by the header (before compression). */
static size_t plain_size(const wire_msg *m, bool request) {
    size_t b = 0;
    (void)wire_states_bytes(m->n, m->d, m->dtype, &b, NULL); /* fits: n, d <= 65536 */
    return b + (request ? WIRE_KV_KEY_BYTES : 0);
}

static inf_status check_payload_len(const wire_msg *m, bool request, inf_error *err) {
    const char *what = request ? "request" : "reply";
    size_t raw = plain_size(m, request);
    if (!m->zstd && m->payload_len != raw + SEAL_TAG_BYTES)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: payload: %zu bytes, but n=%" PRId32 " x d=%" PRId32 " %s %sneeds exactly %zu "
                        "(plaintext + 16-byte tag)",
                        what, m->payload_len, m->n, m->d, wire_dtype_name(m->dtype),
                        request ? "with the 32-byte kv key " : "", raw + SEAL_TAG_BYTES);
    if (m->zstd && (m->payload_len <= SEAL_TAG_BYTES || m->payload_len >= raw + SEAL_TAG_BYTES))
        return inf_fail(err, INF_E_FORMAT,
                        "%s: payload: %zu bytes with zstd:true, but a compressed payload must be shorter than "
                        "the %zu bytes of the uncompressed one and hold more than the 16-byte tag",
                        what, m->payload_len, raw + SEAL_TAG_BYTES);
    return INF_OK;
}

/* ---- AAD ------------------------------------------------------------------------- */

static inf_status aad_common(const wire_msg *m, const char *kind, const char *tail, char *out, size_t cap,
                             size_t *len, inf_error *err) {
    int k = snprintf(out, cap, "infemeral/1 %s %s %" PRIu64 " %" PRId64 " %" PRId32 " %s %" PRId32 " %d %s", kind,
                     m->session, m->step, m->pos, m->n, wire_dtype_name(m->dtype), m->d, m->zstd ? 1 : 0, tail);
    if (k < 0 || (size_t)k >= cap) return inf_fail(err, INF_E_RANGE, "AAD: buffer of %zu bytes too small", cap);
    *len = (size_t)k;
    return INF_OK;
}

inf_status wire_request_aad(const wire_msg *req, char *out, size_t cap, size_t *len, inf_error *err) {
    inf_status st = check_header(req, true, err);
    if (st != INF_OK) return st;
    char epk[KEYS_B64_LEN + 1];
    keys_public_base64(&req->epk, epk);
    return aad_common(req, "req", epk, out, cap, len, err);
}

inf_status wire_reply_aad(const wire_msg *reply, const wire_msg *req, char *out, size_t cap, size_t *len,
                          inf_error *err) {
    inf_status st = check_header(reply, false, err);
    if (st != INF_OK) return st;
    if (!req->payload || req->payload_len == 0)
        return inf_fail(err, INF_E_ARG, "reply AAD: the request has no payload to bind to");
    uint8_t md[32];
    st = seal_sha256(req->payload, req->payload_len, md, err);
    if (st != INF_OK) return st;
    static const char hexd[] = "0123456789abcdef";
    char hex[65];
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = hexd[md[i] >> 4];
        hex[2 * i + 1] = hexd[md[i] & 15];
    }
    hex[64] = '\0';
    return aad_common(reply, "rep", hex, out, cap, len, err);
}

/* ---- JSON out ------------------------------------------------------------------ */

static char *to_json(const wire_msg *m, bool request, size_t *len, inf_error *err) {
    if (check_header(m, request, err) != INF_OK) return NULL;
    if (!m->payload) {
        inf_fail(err, INF_E_ARG, "%s: no payload (seal it first)", request ? "request" : "reply");
        return NULL;
    }
    if (check_payload_len(m, request, err) != INF_OK) return NULL;
    size_t b64 = b64_encoded_len(m->payload_len);
    size_t cap = 256 + b64; /* the fixed fields fit in 256 with room to spare */
    char *s = malloc(cap);
    if (!s) {
        inf_fail(err, INF_E_NOMEM, "%s: out of memory for %zu bytes of JSON", request ? "request" : "reply", cap);
        return NULL;
    }
    char epk[KEYS_B64_LEN + 1];
    if (request) keys_public_base64(&m->epk, epk);
    int k = snprintf(s, cap,
                     "{\"v\":%d,\"session\":\"%s\",\"step\":%" PRIu64 ",\"pos\":%" PRId64 ",\"n\":%" PRId32
                     ",\"dtype\":\"%s\",\"shape\":[%" PRId32 ",%" PRId32 "],\"zstd\":%s,%s%s%s\"payload\":\"",
                     WIRE_VERSION, m->session, m->step, m->pos, m->n, wire_dtype_name(m->dtype), m->n, m->d,
                     m->zstd ? "true" : "false", request ? "\"epk\":\"" : "", request ? epk : "",
                     request ? "\"," : "");
    if (k < 0 || (size_t)k + b64 + 3 > cap) { /* cannot happen: 256 covers the fixed part */
        free(s);
        inf_fail(err, INF_E_RANGE, "JSON header too long");
        return NULL;
    }
    b64_encode(m->payload, m->payload_len, s + k);
    memcpy(s + k + b64, "\"}", 3);
    if (len) *len = (size_t)k + b64 + 2;
    return s;
}

char *wire_request_to_json(const wire_msg *m, size_t *len, inf_error *err) { return to_json(m, true, len, err); }
char *wire_reply_to_json(const wire_msg *m, size_t *len, inf_error *err) { return to_json(m, false, len, err); }

char *wire_error_json(const char *code, const char *message) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_CreateObject();
    char *txt = NULL;
    if (root && e) {
        cJSON_AddItemToObject(root, "error", e);
        e = NULL;
        cJSON *ee = cJSON_GetObjectItemCaseSensitive(root, "error");
        if (cJSON_AddStringToObject(ee, "code", code ? code : "internal") &&
            cJSON_AddStringToObject(ee, "message", message ? message : "")) {
            char *p = cJSON_PrintUnformatted(root);
            if (p) {
                txt = strdup(p); /* plain malloc for the caller, whatever cJSON's hooks are */
                cJSON_free(p);
            }
        }
    }
    cJSON_Delete(e);
    cJSON_Delete(root);
    return txt;
}

static const struct {
    inf_status st;
    const char *code;
} CODES[] = {
    {INF_E_IO, "io"},           {INF_E_FORMAT, "format"},     {INF_E_UNSUPPORTED, "unsupported"},
    {INF_E_SHAPE, "shape"},     {INF_E_NOMEM, "nomem"},       {INF_E_ARG, "arg"},
    {INF_E_NOTFOUND, "notfound"}, {INF_E_RANGE, "range"},     {INF_E_AUTH, "auth"},
    {INF_E_BUSY, "busy"},       {INF_E_DEVICE, "device"}, /* runpod.c: "device" -> stopPod */
    {INF_E_STALE, "replay"},
};

const char *wire_status_code(inf_status st) {
    for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++)
        if (CODES[i].st == st) return CODES[i].code;
    return "internal";
}

inf_status wire_code_status(const char *code) {
    for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++)
        if (!strcmp(CODES[i].code, code)) return CODES[i].st;
    return INF_E_FORMAT;
}

/* ---- JSON in ------------------------------------------------------------------- */

static const char *json_type(const cJSON *it) {
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "invalid";
}

/* An integral JSON number in [lo, hi]. */
static inf_status get_int(const cJSON *it, const char *what, const char *field, double lo, double hi,
                          const char *range, double *out, inf_error *err) {
    if (!cJSON_IsNumber(it))
        return inf_fail(err, INF_E_FORMAT, "%s: %s: must be an integer, got %s", what, field, json_type(it));
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return inf_fail(err, INF_E_FORMAT, "%s: %s: must be an integer, got %.17g", what, field, v);
    if (v < lo || v > hi)
        return inf_fail(err, INF_E_RANGE, "%s: %s: %.17g is out of range (%s)", what, field, v, range);
    *out = v;
    return INF_OK;
}

enum { F_V, F_SESSION, F_STEP, F_POS, F_N, F_DTYPE, F_SHAPE, F_ZSTD, F_EPK, F_PAYLOAD, F_COUNT };
static const char *const FIELDS[F_COUNT] = {"v",     "session", "step", "pos", "n",
                                            "dtype", "shape",   "zstd", "epk", "payload"};

static inf_status from_cjson_fields(const cJSON *obj, bool request, wire_msg *out, inf_error *err) {
    const char *what = request ? "request" : "reply";
    char pb[48];
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(obj)) return inf_fail(err, INF_E_FORMAT, "%s: must be a JSON object, got %s", what, json_type(obj));
    if (!request && cJSON_GetObjectItemCaseSensitive(obj, "error")) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, "error");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        const char *cs = cJSON_IsString(c) ? c->valuestring : "unknown";
        char mb[400];
        return inf_fail(err, wire_code_status(cs), "worker error (%s): %s", printable(cs, pb, sizeof pb),
                        cJSON_IsString(msg) ? printable(msg->valuestring, mb, sizeof mb) : "(no message)");
    }
    const cJSON *f[F_COUNT] = {0};
    for (const cJSON *it = obj->child; it; it = it->next) {
        int k = -1;
        for (int j = 0; j < F_COUNT; j++)
            if (it->string && !strcmp(it->string, FIELDS[j])) k = j;
        if (k < 0 || (k == F_EPK && !request))
            return inf_fail(err, INF_E_FORMAT, "%s: unknown field \"%s\"", what,
                            printable(it->string ? it->string : "", pb, sizeof pb));
        if (f[k]) return inf_fail(err, INF_E_FORMAT, "%s: duplicate field \"%s\"", what, FIELDS[k]);
        f[k] = it;
    }
    for (int j = 0; j < F_COUNT; j++)
        if (!f[j] && (j != F_EPK || request))
            return inf_fail(err, INF_E_FORMAT, "%s: missing field \"%s\"", what, FIELDS[j]);

    double v;
    inf_status st;
    if (!cJSON_IsNumber(f[F_V]))
        return inf_fail(err, INF_E_FORMAT, "%s: v: must be the number 1, got %s", what, json_type(f[F_V]));
    if (f[F_V]->valuedouble != WIRE_VERSION)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: v: wire format version %.17g is not supported (this build speaks 1)",
                        what, f[F_V]->valuedouble);

    if (!cJSON_IsString(f[F_SESSION]))
        return inf_fail(err, INF_E_FORMAT, "%s: session: must be a string of 32 lowercase hex characters, got %s",
                        what, json_type(f[F_SESSION]));
    const char *sid = f[F_SESSION]->valuestring;
    size_t sl = strlen(sid);
    bool okhex = sl == SEAL_SID_HEX;
    for (size_t i = 0; okhex && i < sl; i++) okhex = is_lowhex(sid[i]);
    if (!okhex)
        return inf_fail(err, INF_E_FORMAT, "%s: session: \"%s\" is not 32 lowercase hex characters", what,
                        printable(sid, pb, sizeof pb));
    memcpy(out->session, sid, SEAL_SID_HEX + 1);

    if ((st = get_int(f[F_STEP], what, "step", 0, (double)WIRE_MAX_STEP, "0..2^53", &v, err))) return st;
    out->step = (uint64_t)v;
    if ((st = get_int(f[F_POS], what, "pos", 0, (double)WIRE_MAX_POS, "0..2^31-1", &v, err))) return st;
    out->pos = (int64_t)v;
    if ((st = get_int(f[F_N], what, "n", 1, WIRE_MAX_N, "1..65536", &v, err))) return st;
    out->n = (int32_t)v;
    if (out->pos + out->n > WIRE_MAX_POS + 1)
        return inf_fail(err, INF_E_RANGE, "%s: pos: %" PRId64 " + n %" PRId32 " goes past position 2^31", what,
                        out->pos, out->n);

    if (!cJSON_IsString(f[F_DTYPE]))
        return inf_fail(err, INF_E_FORMAT, "%s: dtype: must be a string (f32, f16 or bf16), got %s", what,
                        json_type(f[F_DTYPE]));
    char field[32];
    snprintf(field, sizeof field, "%s: dtype", what);
    if ((st = wire_dtype_parse(f[F_DTYPE]->valuestring, field, &out->dtype, err))) return st;

    const cJSON *sh = f[F_SHAPE];
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 2)
        return inf_fail(err, INF_E_FORMAT, "%s: shape: must be an array [n, d] of two integers, got %s", what,
                        cJSON_IsArray(sh) ? "an array of another length" : json_type(sh));
    if ((st = get_int(cJSON_GetArrayItem(sh, 0), what, "shape[0]", 1, WIRE_MAX_N, "1..65536", &v, err))) return st;
    if ((int32_t)v != out->n)
        return inf_fail(err, INF_E_SHAPE, "%s: shape[0]: %.17g differs from n = %" PRId32, what, v, out->n);
    if ((st = get_int(cJSON_GetArrayItem(sh, 1), what, "shape[1]", 1, WIRE_MAX_D, "1..65536", &v, err))) return st;
    out->d = (int32_t)v;

    if (!cJSON_IsBool(f[F_ZSTD]))
        return inf_fail(err, INF_E_FORMAT, "%s: zstd: must be true or false, got %s", what, json_type(f[F_ZSTD]));
    out->zstd = cJSON_IsTrue(f[F_ZSTD]);

    if (request) {
        if (!cJSON_IsString(f[F_EPK]))
            return inf_fail(err, INF_E_FORMAT, "request: epk: must be a base64 string of 32 bytes, got %s",
                            json_type(f[F_EPK]));
        if ((st = keys_public_from_base64(f[F_EPK]->valuestring, &out->epk, err)))
            return inf_wrap(err, st, "request: epk");
        out->has_epk = true;
    }

    if (!cJSON_IsString(f[F_PAYLOAD]))
        return inf_fail(err, INF_E_FORMAT, "%s: payload: must be a base64 string, got %s", what,
                        json_type(f[F_PAYLOAD]));
    const char *p64 = f[F_PAYLOAD]->valuestring;
    size_t plen = strlen(p64);
    size_t raw = plain_size(out, request) + SEAL_TAG_BYTES;
    /* Bound before decoding: the payload can be at most `raw` bytes. */
    char pf[32];
    snprintf(pf, sizeof pf, "%s: payload", what);
    if (plen > b64_encoded_len(raw) || (!out->zstd && plen != b64_encoded_len(raw))) {
        st = inf_fail(err, INF_E_FORMAT,
                      "%s: payload: %zu base64 characters, but n=%" PRId32 " x d=%" PRId32 " %s %s%s %zu "
                      "(%zu bytes with the 16-byte tag)",
                      what, plen, out->n, out->d, wire_dtype_name(out->dtype),
                      request ? "with the 32-byte kv key " : "", out->zstd ? "allows at most" : "needs exactly",
                      b64_encoded_len(raw), raw);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->payload = malloc(plen ? b64_decoded_max(plen) : 1);
    if (!out->payload) {
        memset(out, 0, sizeof *out);
        return inf_fail(err, INF_E_NOMEM, "%s: payload: out of memory for %zu bytes", what, b64_decoded_max(plen));
    }
    st = b64_decode(p64, plen, out->payload, b64_decoded_max(plen), &out->payload_len, pf, err);
    if (st == INF_OK) st = check_payload_len(out, request, err);
    if (st != INF_OK) wire_msg_free(out);
    return st;
}

static inf_status from_cjson(const cJSON *obj, bool request, wire_msg *out, inf_error *err) {
    inf_status st = from_cjson_fields(obj, request, out, err);
    if (st != INF_OK) wire_msg_free(out);
    return st;
}

inf_status wire_request_from_cjson(const cJSON *obj, wire_msg *out, inf_error *err) {
    return from_cjson(obj, true, out, err);
}
inf_status wire_reply_from_cjson(const cJSON *obj, wire_msg *out, inf_error *err) {
    return from_cjson(obj, false, out, err);
}

static inf_status parse(const char *json, size_t len, size_t max_bytes, bool request, wire_msg *out,
                        inf_error *err) {
    const char *what = request ? "request" : "reply";
    memset(out, 0, sizeof *out);
    if (len > max_bytes)
        return inf_fail(err, INF_E_RANGE, "%s: %zu bytes of JSON is more than the limit of %zu", what, len,
                        max_bytes);
    if (len == 0) return inf_fail(err, INF_E_FORMAT, "%s: empty JSON", what);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        return inf_fail(err, INF_E_FORMAT, "%s: malformed JSON near byte %zu of %zu", what, off, len);
    }
    size_t off = (size_t)(end - json);
    while (off < len && (json[off] == ' ' || json[off] == '\t' || json[off] == '\n' || json[off] == '\r')) off++;
    inf_status st;
    if (off != len)
        st = inf_fail(err, INF_E_FORMAT, "%s: malformed JSON: trailing bytes after the object at byte %zu of %zu",
                      what, off, len);
    else
        st = from_cjson(root, request, out, err);
    cJSON_Delete(root);
    return st;
}

inf_status wire_request_parse(const char *json, size_t len, size_t max_bytes, wire_msg *out, inf_error *err) {
    return parse(json, len, max_bytes, true, out, err);
}
inf_status wire_reply_parse(const char *json, size_t len, size_t max_bytes, wire_msg *out, inf_error *err) {
    return parse(json, len, max_bytes, false, out, err);
}

/* ---- sealing --------------------------------------------------------------------- */

/* Seals plain[0..n) (a buffer with 16 spare bytes after n, wiped and freed
 * here) into m->payload, compressing first when that is smaller. */
static inf_status seal_into(const seal_keys *keys, uint32_t dir, wire_msg *m, const wire_msg *req, uint8_t *plain,
                            size_t n, inf_error *err) {
    const char *what = req ? "reply" : "request";
    uint8_t *buf = plain;
    size_t len = n;
    m->zstd = false;
    /* Room for one byte less than the plaintext: zstd fails with
     * "destination too small" exactly when compressing would not help. */
    size_t cap = n - 1;
    uint8_t *z = n > 1 ? malloc(cap + SEAL_TAG_BYTES) : NULL;
    if (z) {
        size_t c = ZSTD_compress(z, cap, plain, n, WIRE_ZSTD_LEVEL);
        if (!ZSTD_isError(c) && c < n) {
            OPENSSL_cleanse(plain, n);
            free(plain);
            buf = z;
            len = c;
            m->zstd = true;
        } else {
            OPENSSL_cleanse(z, cap);
            free(z);
        }
    }
    char aad[WIRE_AAD_MAX];
    size_t alen = 0;
    inf_status st = req ? wire_reply_aad(m, req, aad, sizeof aad, &alen, err)
                        : wire_request_aad(m, aad, sizeof aad, &alen, err);
    if (st == INF_OK) st = seal_encrypt(keys, dir, m->step, aad, alen, buf, len, buf, err);
    if (st != INF_OK) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        return inf_wrap(err, st, "%s", what);
    }
    free(m->payload);
    m->payload = buf;
    m->payload_len = len + SEAL_TAG_BYTES;
    return INF_OK;
}

inf_status wire_seal_request(const seal_keys *keys, wire_msg *hdr, const uint8_t kv_key[WIRE_KV_KEY_BYTES],
                             const void *states, inf_error *err) {
    inf_status st = check_header(hdr, true, err);
    if (st != INF_OK) return st;
    size_t n = plain_size(hdr, true);
    uint8_t *plain = malloc(n + SEAL_TAG_BYTES);
    if (!plain) return inf_fail(err, INF_E_NOMEM, "request: out of memory for %zu bytes", n);
    memcpy(plain, kv_key, WIRE_KV_KEY_BYTES);
    memcpy(plain + WIRE_KV_KEY_BYTES, states, n - WIRE_KV_KEY_BYTES);
    return seal_into(keys, SEAL_DIR_C2S, hdr, NULL, plain, n, err);
}

/* Decompresses src into a malloc'd buffer of exactly `expect` bytes,
 * refusing more (the bomb check runs as the output grows) or less. */
static inf_status unzstd(const uint8_t *src, size_t n, size_t expect, const char *what, uint8_t **out,
                         inf_error *err) {
    uint8_t *dst = malloc(expect + 1); /* one spare byte tells "too much" apart */
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dst || !dc) {
        free(dst);
        ZSTD_freeDCtx(dc);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory for %zu decompressed bytes", what, expect);
    }
    ZSTD_inBuffer in = {src, n, 0};
    ZSTD_outBuffer ob = {dst, expect + 1, 0};
    size_t r = 1;
    inf_status st = INF_OK;
    while (in.pos < in.size || r != 0) {
        size_t before_in = in.pos, before_out = ob.pos;
        r = ZSTD_decompressStream(dc, &ob, &in);
        if (ZSTD_isError(r)) {
            st = inf_fail(err, INF_E_FORMAT, "%s: payload: the zstd data is corrupt (%s)", what, ZSTD_getErrorName(r));
            break;
        }
        if (ob.pos > expect) {
            st = inf_fail(err, INF_E_FORMAT,
                          "%s: payload: zstd data decompresses to more than the %zu bytes the header declares "
                          "(refused while decompressing)",
                          what, expect);
            break;
        }
        if (in.pos == before_in && ob.pos == before_out) { /* no progress: input ended inside a frame */
            st = inf_fail(err, INF_E_FORMAT, "%s: payload: the zstd data is truncated", what);
            break;
        }
    }
    if (st == INF_OK && ob.pos != expect)
        st = inf_fail(err, INF_E_FORMAT, "%s: payload: zstd data decompresses to %zu bytes, the header declares %zu",
                      what, ob.pos, expect);
    ZSTD_freeDCtx(dc);
    if (st != INF_OK) {
        OPENSSL_cleanse(dst, expect + 1);
        free(dst);
        return st;
    }
    *out = dst;
    return INF_OK;
}

/* Authenticates and opens m (request or reply) into a malloc'd plaintext of
 * exactly plain_size bytes. */
static inf_status open_msg(const seal_keys *keys, uint32_t dir, const wire_msg *m, const wire_msg *req,
                           uint8_t **plain, inf_error *err) {
    bool request = req == NULL;
    const char *what = request ? "request" : "reply";
    inf_status st = check_header(m, request, err);
    if (st == INF_OK && (!m->payload || m->payload_len < SEAL_TAG_BYTES))
        st = inf_fail(err, INF_E_FORMAT, "%s: payload: missing or shorter than the 16-byte tag", what);
    if (st != INF_OK) return st;
    char aad[WIRE_AAD_MAX];
    size_t alen = 0;
    st = request ? wire_request_aad(m, aad, sizeof aad, &alen, err) : wire_reply_aad(m, req, aad, sizeof aad, &alen, err);
    if (st != INF_OK) return st;
    size_t n = m->payload_len - SEAL_TAG_BYTES;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for %zu bytes", what, n);
    st = seal_decrypt(keys, dir, m->step, aad, alen, m->payload, m->payload_len, buf, what, err);
    /* The length check comes after the tag: the header is in the AAD, so a
     * changed n, d or dtype reads as what it is (tampering, INF_E_AUTH);
     * once authentic, a length that disagrees is the sealer's own error. */
    if (st == INF_OK) st = check_payload_len(m, request, err);
    if (st != INF_OK) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        return st;
    }
    if (!m->zstd) {
        *plain = buf;
        return INF_OK;
    }
    st = unzstd(buf, n, plain_size(m, request), what, plain, err);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return st;
}

inf_status wire_open_request(const seal_keys *keys, const wire_msg *req, uint8_t kv_key[WIRE_KV_KEY_BYTES],
                             void **states, size_t *bytes, inf_error *err) {
    uint8_t *plain = NULL;
    inf_status st = open_msg(keys, SEAL_DIR_C2S, req, NULL, &plain, err);
    if (st != INF_OK) return st;
    size_t n = plain_size(req, true) - WIRE_KV_KEY_BYTES;
    memcpy(kv_key, plain, WIRE_KV_KEY_BYTES);
    memmove(plain, plain + WIRE_KV_KEY_BYTES, n); /* overwrites the key's copy */
    *states = plain;
    *bytes = n;
    return INF_OK;
}

inf_status wire_seal_reply(const seal_keys *keys, const wire_msg *req, wire_msg *reply, const void *states,
                           inf_error *err) {
    inf_status st = check_header(req, true, err);
    if (st != INF_OK) return st;
    memcpy(reply->session, req->session, sizeof reply->session);
    reply->step = req->step;
    reply->pos = req->pos;
    reply->has_epk = false;
    memset(&reply->epk, 0, sizeof reply->epk);
    st = check_header(reply, false, err);
    if (st != INF_OK) return st;
    if (reply->d != req->d)
        return inf_fail(err, INF_E_SHAPE, "reply: shape[1] %" PRId32 " differs from the request's %" PRId32, reply->d,
                        req->d);
    if (reply->n > req->n)
        return inf_fail(err, INF_E_SHAPE, "reply: n %" PRId32 " is more than the request's %" PRId32 " tokens",
                        reply->n, req->n);
    size_t n = plain_size(reply, false);
    uint8_t *plain = malloc(n + SEAL_TAG_BYTES);
    if (!plain) return inf_fail(err, INF_E_NOMEM, "reply: out of memory for %zu bytes", n);
    memcpy(plain, states, n);
    return seal_into(keys, SEAL_DIR_S2C, reply, req, plain, n, err);
}

inf_status wire_open_reply(const seal_keys *keys, const wire_msg *req, const wire_msg *reply, void **states,
                           size_t *bytes, inf_error *err) {
    inf_status st = check_header(req, true, err);
    if (st != INF_OK) return st;
    if (strcmp(reply->session, req->session) != 0 || reply->step != req->step || reply->pos != req->pos)
        return inf_fail(err, INF_E_AUTH,
                        "reply: answers session %.32s step %" PRIu64 " pos %" PRId64 ", but the request was step %" PRIu64
                        " pos %" PRId64 " of session %s (a reply to a different request)",
                        reply->session, reply->step, reply->pos, req->step, req->pos, req->session);
    if (reply->d != req->d || reply->n < 1 || reply->n > req->n)
        return inf_fail(err, INF_E_SHAPE,
                        "reply: shape [%" PRId32 ", %" PRId32 "] does not fit the request's [%" PRId32 ", %" PRId32 "]",
                        reply->n, reply->d, req->n, req->d);
    uint8_t *plain = NULL;
    st = open_msg(keys, SEAL_DIR_S2C, reply, req, &plain, err);
    if (st != INF_OK) return st;
    *states = plain;
    *bytes = plain_size(reply, false);
    return INF_OK;
}
