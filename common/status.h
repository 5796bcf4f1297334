/* status.h — the error convention used by every module.
 *
 * Functions that can fail return an inf_status (0 = ok) and, when given a
 * non-NULL inf_error, fill it with one human sentence that names the file,
 * field or value that was wrong. Nothing here allocates; an inf_error lives on
 * the caller's stack. Thread-safe: no global state.
 */
#ifndef INF_STATUS_H
#define INF_STATUS_H

#include <stddef.h>

typedef enum {
    INF_OK = 0,
    INF_E_IO,          /* open/read/write/mmap failed */
    INF_E_FORMAT,      /* the bytes are not what the format says they must be */
    INF_E_UNSUPPORTED, /* well-formed but a feature/type/value we do not handle */
    INF_E_SHAPE,       /* tensor shapes disagree with the model description */
    INF_E_NOMEM,       /* allocation failed */
    INF_E_ARG,         /* bad argument from the user or caller */
    INF_E_NOTFOUND,    /* a required key, tensor or file is missing */
    INF_E_RANGE,       /* a value is out of its allowed range (sizes, ids) */
    INF_E_AUTH,        /* authentication failed: wrong key, tampered or replayed data */
    INF_E_BUSY,        /* temporarily unable (overloaded, locked); the caller may retry */
    INF_E_DEVICE,      /* the GPU or its driver failed (a CUDA error): this worker should be replaced */
    INF_E_STALE,       /* a newer state was stored first (a replayed or late request); nothing written */
    INF_E__COUNT
} inf_status;

#define INF_ERRMSG_MAX 512

typedef struct {
    char msg[INF_ERRMSG_MAX];
} inf_error;

/* A short name for the code, e.g. "format error". Never NULL. */
const char *inf_strstatus(inf_status st);

/* Formats msg into err (if err != NULL) and returns st, so callers write
 *   return inf_fail(err, INF_E_FORMAT, "%s: bad magic", path);            */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
inf_status inf_fail(inf_error *err, inf_status st, const char *fmt, ...);

/* Prepends "prefix: " to an existing message (for adding the file name
 * at an outer level). Returns st unchanged. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
inf_status inf_wrap(inf_error *err, inf_status st, const char *fmt, ...);

/* Overflow-checked size arithmetic for sizes read from files or the
 * network: return 0 on overflow, 1 on success. */
int inf_mul_size(size_t a, size_t b, size_t *out);
int inf_add_size(size_t a, size_t b, size_t *out);

#endif
