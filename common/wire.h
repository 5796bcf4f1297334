/* wire.h — wire format v1: the JSON envelope of a sealed request and its
 * reply (docs/wire.md is the byte-level spec, with a worked example).
 *
 *   request (the job "input"):
 *     {"v":1, "session":"<32 hex>", "step":S, "pos":P, "n":N, "dtype":"f16",
 *      "shape":[N, D], "zstd":false, "epk":"<base64 32 bytes>",
 *      "payload":"<base64 of AES-256-GCM(ciphertext) || tag>"}
 *     plaintext = kv_key (32 bytes) || N x D states in dtype, little-endian
 *   reply: the same without "epk"; plaintext = the reply's N x D states.
 *   error: {"error":{"code":"...","message":"..."}} (never sealed).
 *
 * The AAD of a request is the text
 *   "infemeral/1 req <session> <step> <pos> <n> <dtype> <d> <0|1> <epk>"
 * and of a reply
 *   "infemeral/1 rep <session> <step> <pos> <n> <dtype> <d> <0|1> <hex sha256(request payload)>"
 * so every header field is authenticated and a reply opens only against the
 * one request it answers. Requests are sealed with the session's c2s key and
 * nonce (1, step), replies with s2c and nonce (2, step) (crypto.h).
 *
 * Parsing is strict: unknown or duplicate fields, wrong types, values out of
 * range, shape[0] != n, a payload whose length does not match the header, and
 * JSON larger than the caller's limit are errors whose message names the
 * field and the bad value (attacker-controlled text is shortened and
 * non-printable bytes replaced). Decryption failures are INF_E_AUTH.
 *
 * zstd: the sealer compresses the plaintext (level WIRE_ZSTD_LEVEL) and sets
 * "zstd":true only when that makes it smaller. The opener decompresses
 * after authenticating, into a buffer of exactly the size the header
 * declares (request: n*d*elem + 32, reply: n*d*elem), and refuses a frame
 * that would produce more (a zstd bomb) or less.
 *
 * Memory: a wire_msg owns its payload (malloc'd); wire_msg_free releases it.
 * JSON text returned by *_to_json / wire_error_json is malloc'd; free() it.
 * States returned by wire_open_* are malloc'd; the caller frees them.
 * The caller bounds n and d against its model before opening (the decoded
 * buffer is n*d*elem bytes; up to 16 GiB for n = d = 65536 in f32).
 *
 * Thread-safety: no shared state.
 */
#ifndef INF_WIRE_H
#define INF_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "crypto.h"
#include "status.h"

#define WIRE_VERSION 1
#define WIRE_KV_KEY_BYTES 32
#define WIRE_MAX_STEP (UINT64_C(1) << 53) /* inclusive: JSON numbers are exact up to here */
#define WIRE_MAX_POS INT64_C(2147483647)  /* pos < 2^31, and pos + n <= 2^31 */
#define WIRE_MAX_N 65536
#define WIRE_MAX_D 65536
#define WIRE_ZSTD_LEVEL 1
#define WIRE_AAD_MAX 256

typedef enum { WIRE_F32 = 0, WIRE_F16 = 1, WIRE_BF16 = 2 } wire_dtype;

/* One envelope (request or reply). */
typedef struct {
    char session[SEAL_SID_HEX + 1]; /* 32 lowercase hex + NUL */
    uint64_t step;                  /* 0 .. 2^53 */
    int64_t pos;                    /* absolute position of the first token */
    int32_t n;                      /* tokens: shape[0] */
    int32_t d;                      /* hidden size: shape[1] */
    wire_dtype dtype;
    bool zstd;                      /* the plaintext was zstd-compressed before sealing */
    bool has_epk;                   /* requests: true; replies: false */
    keys_public epk;                /* the client's ephemeral public key (requests) */
    uint8_t *payload;               /* ciphertext || 16-byte tag (malloc'd, owned) */
    size_t payload_len;
} wire_msg;

/* Frees the payload and zeroes the struct. NULL is fine. */
void wire_msg_free(wire_msg *m);

/* "f32" / "f16" / "bf16"; bytes per element 4 / 2 / 2. */
const char *wire_dtype_name(wire_dtype t);
size_t wire_dtype_size(wire_dtype t);
/* Parses a dtype name; the error names `field` and the value. */
inf_status wire_dtype_parse(const char *s, const char *field, wire_dtype *t, inf_error *err);

/* n * d * elem, checked. */
inf_status wire_states_bytes(int32_t n, int32_t d, wire_dtype t, size_t *bytes, inf_error *err);
/* count values between f32 and the wire dtype (little-endian; f16/bf16
 * round to nearest even). Both ends of the wire use these. */
void wire_states_from_f32(const float *x, size_t count, wire_dtype t, void *out);
void wire_states_to_f32(const void *in, size_t count, wire_dtype t, float *x);

/* The largest JSON text of a request carrying n x d states of type t
 * uncompressed (a compressed one is never larger): what a client checks
 * against a transport's body limit when it splits a prompt into chunks.
 * 0 if the sizes are out of range. */
size_t wire_request_max_json(int32_t n, int32_t d, wire_dtype t);

/* The AAD texts (see the top of this file) into out[cap]; *len = length
 * (no NUL counted; out is NUL-terminated). The reply's AAD needs the request
 * it answers (for the SHA-256 of its payload). */
inf_status wire_request_aad(const wire_msg *req, char *out, size_t cap, size_t *len, inf_error *err);
inf_status wire_reply_aad(const wire_msg *reply, const wire_msg *req, char *out, size_t cap, size_t *len,
                          inf_error *err);

/* ---- JSON --------------------------------------------------------------------- */

/* Serializes (compact, fields in the order of the top of this file). The
 * header is validated first (a message that would not parse is not
 * written). Returns malloc'd NUL-terminated text (*len = its length, may be
 * NULL) or NULL with err filled. */
char *wire_request_to_json(const wire_msg *m, size_t *len, inf_error *err);
char *wire_reply_to_json(const wire_msg *m, size_t *len, inf_error *err);

/* Parses json[0..len) (no NUL needed) strictly. Refuses len > max_bytes
 * before looking at it. On success *out owns a payload; on failure *out is
 * zeroed. An error envelope given to wire_reply_parse returns the status
 * its code names (wire_code_status) and the message
 * "worker error (<code>): <message>". */
inf_status wire_request_parse(const char *json, size_t len, size_t max_bytes, wire_msg *out, inf_error *err);
inf_status wire_reply_parse(const char *json, size_t len, size_t max_bytes, wire_msg *out, inf_error *err);

/* The same from an already parsed object (e.g. the "input" of a RunPod job
 * or the "output" of a /runsync answer; the caller bounded its size). */
inf_status wire_request_from_cjson(const cJSON *obj, wire_msg *out, inf_error *err);
inf_status wire_reply_from_cjson(const cJSON *obj, wire_msg *out, inf_error *err);

/* {"error":{"code":CODE,"message":MESSAGE}} as malloc'd text (NULL only when
 * out of memory). The strings are JSON-escaped. */
char *wire_error_json(const char *code, const char *message);

/* The error code for a status ("auth", "format", "range", "busy", ...) and
 * back (an unknown code -> INF_E_FORMAT). */
const char *wire_status_code(inf_status st);
inf_status wire_code_status(const char *code);

/* ---- sealing ---------------------------------------------------------------- */

/* Client: seals kv_key || states (n*d*elem bytes of hdr->dtype, little-
 * endian) into hdr->payload with keys->c2s and nonce (1, hdr->step).
 * hdr's session, step, pos, n, d, dtype and epk (has_epk = true) must be set;
 * this sets zstd (true only if compression made the plaintext smaller) and
 * replaces any payload. Use a new step for every call, retries included. */
inf_status wire_seal_request(const seal_keys *keys, wire_msg *hdr, const uint8_t kv_key[WIRE_KV_KEY_BYTES],
                             const void *states, inf_error *err);

/* Worker: authenticates and opens a parsed request. On success kv_key holds
 * the session's KV key (wipe it after use), *states a malloc'd buffer of
 * *bytes = n*d*elem bytes. On failure nothing is returned (temporaries are
 * wiped); a failed tag is INF_E_AUTH. The replay check (step above the
 * last committed one) is the caller's: it knows the session. */
inf_status wire_open_request(const seal_keys *keys, const wire_msg *req, uint8_t kv_key[WIRE_KV_KEY_BYTES],
                             void **states, size_t *bytes, inf_error *err);

/* Worker: seals the reply to `req`. The caller sets reply->n, reply->d
 * (must equal req->d), reply->dtype (1 <= reply n <= request n: a worker may
 * return only the last rows); session, step and pos are copied from req;
 * zstd and payload are set here. states: n*d*elem bytes. Seal at most one
 * reply per (session, step) — see crypto.h, "Nonce discipline". */
inf_status wire_seal_reply(const seal_keys *keys, const wire_msg *req, wire_msg *reply, const void *states,
                           inf_error *err);

/* Client: opens the reply to `req` (the request exactly as sent). A reply
 * whose session/step/pos differ from req's, or that answers another request
 * of the same session, or whose bytes were changed, is INF_E_AUTH. */
inf_status wire_open_reply(const seal_keys *keys, const wire_msg *req, const wire_msg *reply, void **states,
                           size_t *bytes, inf_error *err);

#endif
