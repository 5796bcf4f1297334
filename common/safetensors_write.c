/* safetensors_write.c — writes a safetensors file atomically.
 *
 * Crash safety: the bytes go to PATH.tmp (created fresh, O_EXCL after
 * removing a stale one), are fsync'ed, and only then is PATH.tmp renamed
 * over PATH, followed by an fsync of the directory so the rename itself is
 * durable. rename(2) replaces the name in one step, so after a crash, power
 * loss or any error at any point, PATH is either the complete old file (or
 * absent, if there was none) or the complete new one — never a mix or a
 * truncated file. A failed write removes PATH.tmp and leaves PATH as it
 * was; tests/test_safetensors.c proves that by making the write fail with
 * an old file in place. (A crash can leave a stale PATH.tmp behind; the next
 * write replaces it, and readers never look at it.)
 *
 * Layout: header = one JSON object ("__metadata__" first, then tensors
 * in data order), padded with spaces so the data region starts at a
 * multiple of 8; tensors are placed by decreasing element size, then in the
 * order they were added, back to back, so each is aligned to its element
 * size and the data region has no gaps.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapfile.h"
#include "safetensors.h"

typedef struct {
    char *name;
    inf_dtype dtype;
    int ndim;
    int64_t shape[INF_MAX_DIMS];
    const void *data;
    size_t nbytes;
    size_t order;
    st_produce_fn produce; /* lazy tensors: data == NULL */
    void *user;
} wr_tensor;

struct st_writer {
    bool adding_lazy;
    wr_tensor *t;
    size_t n, cap;
    char **keys, **vals;
    size_t n_meta, cap_meta;
};

inf_status st_writer_new(st_writer **out, inf_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? INF_OK : inf_fail(err, INF_E_NOMEM, "out of memory for a safetensors writer");
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->keys[i]);
        free(w->vals[i]);
    }
    free(w->t);
    free(w->keys);
    free(w->vals);
    free(w);
}

static size_t elem_size(inf_dtype dt) { return inf_dtype_block_bytes(dt); }

inf_status st_writer_add(st_writer *w, const char *name, inf_dtype dtype, int ndim,
                         const int64_t *shape, const void *data, size_t nbytes, inf_error *err) {
    if (!name || !*name) return inf_fail(err, INF_E_ARG, "safetensors writer: empty tensor name");
    if (strcmp(name, "__metadata__") == 0)
        return inf_fail(err, INF_E_ARG, "safetensors writer: '__metadata__' cannot be a tensor name");
    if (!st_dtype_name(dtype))
        return inf_fail(err, INF_E_ARG, "safetensors writer: tensor '%s': dtype %s cannot be stored directly",
                        name, inf_dtype_name(dtype));
    size_t want;
    inf_status st = inf_tensor_data_bytes(dtype, ndim, shape, &want, name, err);
    if (st) return st;
    if (want != nbytes)
        return inf_fail(err, INF_E_ARG, "safetensors writer: tensor '%s': shape needs %zu bytes, given %zu",
                        name, want, nbytes);
    if (nbytes && !data && !w->adding_lazy)
        return inf_fail(err, INF_E_ARG, "safetensors writer: tensor '%s': no data", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return inf_fail(err, INF_E_ARG, "safetensors writer: tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        wr_tensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
        w->t = nt;
        w->cap = nc;
    }
    wr_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    t->order = w->n++;
    return INF_OK;
}

inf_status st_writer_add_lazy(st_writer *w, const char *name, inf_dtype dtype, int ndim,
                              const int64_t *shape, size_t nbytes, st_produce_fn produce,
                              void *user, inf_error *err) {
    if (!produce) return inf_fail(err, INF_E_ARG, "safetensors writer: tensor '%s': no producer", name);
    w->adding_lazy = true;
    inf_status st = st_writer_add(w, name, dtype, ndim, shape, NULL, nbytes, err);
    w->adding_lazy = false;
    if (st) return st;
    w->t[w->n - 1].produce = produce;
    w->t[w->n - 1].user = user;
    return INF_OK;
}

static inf_status write_all(int fd, const void *p, size_t n, const char *path, inf_error *err);

static inf_status write_tensor(int fd, const wr_tensor *t, const char *tmp, inf_error *err) {
    if (!t->produce) return write_all(fd, t->data, t->nbytes, tmp, err);
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for tensor '%s' (%zu bytes)", tmp, t->name, t->nbytes);
    inf_status st = t->produce(t->user, buf, t->nbytes, err);
    if (!st) st = write_all(fd, buf, t->nbytes, tmp, err);
    free(buf);
    return st;
}

inf_status st_writer_meta(st_writer *w, const char *key, const char *value, inf_error *err) {
    if (!key || !value) return inf_fail(err, INF_E_ARG, "safetensors writer: NULL metadata key or value");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
            free(w->vals[i]);
            w->vals[i] = v;
            return INF_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t nc = w->cap_meta ? w->cap_meta * 2 : 16;
        char **nk = realloc(w->keys, nc * sizeof *nk);
        if (!nk) return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
        w->keys = nk;
        char **nv = realloc(w->vals, nc * sizeof *nv);
        if (!nv) return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
        w->vals = nv;
        w->cap_meta = nc;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return inf_fail(err, INF_E_NOMEM, "safetensors writer: out of memory");
    }
    w->keys[w->n_meta] = k;
    w->vals[w->n_meta] = v;
    w->n_meta++;
    return INF_OK;
}

/* ---- header text -------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t k) {
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + k + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, unsigned long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(b, tmp, (size_t)k);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped;
 * other bytes (UTF-8) pass through. */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *p);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_layout(const void *a, const void *b) {
    const wr_tensor *x = *(const wr_tensor *const *)a, *y = *(const wr_tensor *const *)b;
    size_t ex = elem_size(x->dtype), ey = elem_size(y->dtype);
    if (ex != ey) return ex > ey ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* ---- writing -------------------------------------------------------------------- */

static inf_status write_all(int fd, const void *p, size_t n, const char *path, inf_error *err) {
    if (inf_write_all(fd, p, n) != 0) return inf_fail(err, INF_E_IO, "%s: write failed: %s", path, strerror(errno));
    return INF_OK;
}

static inf_status fsync_dir_of(const char *path, inf_error *err) {
    if (inf_fsync_parent(path) != 0)
        return inf_fail(err, INF_E_IO, "%s: fsync of its directory failed: %s", path, strerror(errno));
    return INF_OK;
}

inf_status st_writer_write(st_writer *w, const char *path, inf_error *err) {
    const wr_tensor **lay = calloc(w->n ? w->n : 1, sizeof *lay);
    if (!lay) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < w->n; i++) lay[i] = &w->t[i];
    qsort(lay, w->n, sizeof *lay, cmp_layout);

    sbuf h = {0};
    sb_str(&h, "{");
    bool first = true;
    if (w->n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json(&h, w->keys[i]);
            sb_str(&h, ":");
            sb_json(&h, w->vals[i]);
        }
        sb_str(&h, "}");
        first = false;
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wr_tensor *t = lay[i];
        if (!first) sb_str(&h, ",");
        first = false;
        sb_json(&h, t->name);
        sb_str(&h, ":{\"dtype\":");
        sb_json(&h, st_dtype_name(t->dtype));
        sb_str(&h, ",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) sb_fmt(&h, d ? ",%llu" : "%llu", (unsigned long long)t->shape[d]);
        sb_fmt(&h, "],\"data_offsets\":[%llu,", off);
        off += t->nbytes;
        sb_fmt(&h, "%llu]}", off);
    }
    sb_str(&h, "}");
    while (!h.oom && (8 + h.n) % 8 != 0) sb_str(&h, " ");
    if (h.oom) {
        free(h.p);
        free((void *)lay);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory building the header", path);
    }

    char tmp[2048];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    inf_status st = INF_OK;
    (void)unlink(tmp); /* a stale one from an earlier crash */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = inf_fail(err, INF_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    if (!st) st = write_all(fd, len, 8, tmp, err);
    if (!st) st = write_all(fd, h.p, h.n, tmp, err);
    for (size_t i = 0; i < w->n && !st; i++) st = write_tensor(fd, lay[i], tmp, err);
    if (!st && fsync(fd) != 0) st = inf_fail(err, INF_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !st) st = inf_fail(err, INF_E_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = inf_fail(err, INF_E_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (st) (void)unlink(tmp);
    else st = fsync_dir_of(path, err);
done:
    free(h.p);
    free((void *)lay);
    return st;
}
