#include "status.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

const char *inf_strstatus(inf_status st) {
    switch (st) {
    case INF_OK: return "ok";
    case INF_E_IO: return "I/O error";
    case INF_E_FORMAT: return "format error";
    case INF_E_UNSUPPORTED: return "unsupported";
    case INF_E_SHAPE: return "shape mismatch";
    case INF_E_NOMEM: return "out of memory";
    case INF_E_ARG: return "invalid argument";
    case INF_E_NOTFOUND: return "not found";
    case INF_E_RANGE: return "out of range";
    case INF_E_AUTH: return "authentication failed";
    case INF_E_BUSY: return "busy";
    case INF_E_DEVICE: return "device error";
    case INF_E_STALE: return "stale request";
    default: return "unknown error";
    }
}

inf_status inf_fail(inf_error *err, inf_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

inf_status inf_wrap(inf_error *err, inf_status st, const char *fmt, ...) {
    if (!err) return st;
    char prefix[INF_ERRMSG_MAX];
    char old[INF_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return st;
}

int inf_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int inf_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}
