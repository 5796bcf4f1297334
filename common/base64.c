/* base64.c — see base64.h. */
#include "base64.h"

#include <stdint.h>
#include <stdlib.h>

static const char B64_ALPHA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n) {
    size_t groups = n / 3 + (n % 3 != 0);
    if (groups > SIZE_MAX / 4) return 0;
    return groups * 4;
}

void b64_encode(const void *in, size_t n, char *out) {
    const uint8_t *p = in;
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = B64_ALPHA[v >> 18];
        out[o++] = B64_ALPHA[(v >> 12) & 63];
        out[o++] = B64_ALPHA[(v >> 6) & 63];
        out[o++] = B64_ALPHA[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = B64_ALPHA[v >> 18];
        out[o++] = B64_ALPHA[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = B64_ALPHA[v >> 18];
        out[o++] = B64_ALPHA[(v >> 12) & 63];
        out[o++] = B64_ALPHA[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

char *b64_encode_alloc(const void *in, size_t n) {
    size_t len = b64_encoded_len(n);
    if (len == 0 && n != 0) return NULL;
    if (len == SIZE_MAX) return NULL;
    char *s = malloc(len + 1);
    if (s) b64_encode(in, n, s);
    return s;
}

size_t b64_decoded_max(size_t len) { return len / 4 * 3 + (len % 4) * 3 / 4; }

/* 0..63, or -1 for anything outside the alphabet (including '='). */
static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

inf_status b64_decode(const char *text, size_t len, uint8_t *out, size_t cap, size_t *out_len,
                      const char *what, inf_error *err) {
    const char *w = what ? what : "base64";
    *out_len = 0;
    if (len % 4 != 0)
        return inf_fail(err, INF_E_FORMAT, "%s: base64 text of %zu characters (must be a multiple of 4)", w,
                        len);
    size_t pad = 0;
    if (len >= 4 && text[len - 1] == '=') pad = text[len - 2] == '=' ? 2 : 1;
    size_t need = len / 4 * 3 - pad;
    if (need > cap)
        return inf_fail(err, INF_E_RANGE, "%s: base64 text decodes to %zu bytes, more than the %zu allowed", w,
                        need, cap);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v[4];
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)text[i + k];
            v[k] = b64_val(c);
            if (v[k] >= 0) continue;
            /* '=' is allowed only as the trailing padding counted above. */
            if (c == '=' && last && (size_t)k >= 4 - pad) {
                v[k] = 0;
                continue;
            }
            if (c == '=')
                return inf_fail(err, INF_E_FORMAT, "%s: misplaced '=' padding at offset %zu of the base64 text",
                                w, i + (size_t)k);
            return inf_fail(err, INF_E_FORMAT,
                            "%s: byte 0x%02x at offset %zu is not a base64 character (standard alphabet, no "
                            "whitespace)",
                            w, c, i + (size_t)k);
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if (last && pad == 2) {
            if (x & 0xffff)
                return inf_fail(err, INF_E_FORMAT,
                                "%s: non-canonical base64 (nonzero unused bits before the padding at offset %zu)",
                                w, i + 1);
            out[o++] = (uint8_t)(x >> 16);
        } else if (last && pad == 1) {
            if (x & 0xff)
                return inf_fail(err, INF_E_FORMAT,
                                "%s: non-canonical base64 (nonzero unused bits before the padding at offset %zu)",
                                w, i + 2);
            out[o++] = (uint8_t)(x >> 16);
            out[o++] = (uint8_t)(x >> 8);
        } else {
            out[o++] = (uint8_t)(x >> 16);
            out[o++] = (uint8_t)(x >> 8);
            out[o++] = (uint8_t)x;
        }
    }
    *out_len = o;
    return INF_OK;
}
