/* gguf.c — see gguf.h. The parser is a bounds-checked cursor over the map:
 * every read goes through cur_need(), so a truncated or lying file ends in a
 * format error that names the file and what was being read. */
#include "gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mapfile.h"

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_STR ((uint64_t)1 << 30)

typedef struct {
    gguf_str key;
    gguf_type type;
    gguf_type arr_type;
    uint64_t arr_n;
    const uint8_t *val; /* scalar value or first array element */
    const uint8_t *raw, *raw_end; /* the whole entry as stored: key, type, value */
    gguf_str *strs;     /* string arrays, and a string scalar as strs[0] */
} gguf_kv;

typedef struct {
    char *name;
    uint32_t ggml_type;
    bool supported;
    inf_tensor t;
} gguf_tinfo;

struct gguf_file {
    inf_mapfile map;
    uint32_t version;
    gguf_kv *kvs;
    uint64_t n_kv;
    gguf_tinfo *tensors;
    uint64_t n_tensors;
};

typedef struct {
    const uint8_t *base, *p, *end;
    const char *path;
    inf_error *err;
} cursor;

static inf_status cur_need(cursor *c, uint64_t n, const char *what) {
    if ((uint64_t)(c->end - c->p) < n)
        return inf_fail(c->err, INF_E_FORMAT,
                        "%s: truncated GGUF file (needed %llu more bytes for %s at offset %zu)",
                        c->path, (unsigned long long)n, what, (size_t)(c->p - c->base));
    return INF_OK;
}

static inf_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    inf_status st = cur_need(c, 4, what);
    if (st) return st;
    memcpy(v, c->p, 4);
    c->p += 4;
    return INF_OK;
}

static inf_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    inf_status st = cur_need(c, 8, what);
    if (st) return st;
    memcpy(v, c->p, 8);
    c->p += 8;
    return INF_OK;
}

static inf_status rd_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t n;
    inf_status st = rd_u64(c, &n, what);
    if (st) return st;
    if (n > GGUF_MAX_STR)
        return inf_fail(c->err, INF_E_FORMAT, "%s: %s has an implausible length %llu", c->path,
                        what, (unsigned long long)n);
    if ((st = cur_need(c, n, what))) return st;
    s->ptr = (const char *)c->p;
    s->len = (size_t)n;
    c->p += n;
    return INF_OK;
}

static size_t scalar_size(gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(gguf_type t) {
    static const char *n[GGUF_TYPE__COUNT] = {"uint8", "int8",  "uint16", "int16", "uint32",
                                              "int32", "float32", "bool", "string", "array",
                                              "uint64", "int64", "float64"};
    return (unsigned)t < GGUF_TYPE__COUNT ? n[t] : "unknown";
}

/* GGML tensor types: name, elements per block, bytes per block, our dtype
 * (or -1 when listed but without a kernel here). */
typedef struct {
    const char *name;
    int block;
    int bytes;
    int dtype;
} ggml_type_info;

static const ggml_type_info GGML_TYPES[] = {
    [0] = {"F32", 1, 4, INF_DT_F32},       [1] = {"F16", 1, 2, INF_DT_F16},
    [2] = {"Q4_0", 32, 18, INF_DT_Q4_0},   [3] = {"Q4_1", 32, 20, INF_DT_Q4_1},
    [6] = {"Q5_0", 32, 22, INF_DT_Q5_0},   [7] = {"Q5_1", 32, 24, INF_DT_Q5_1},
    [8] = {"Q8_0", 32, 34, INF_DT_Q8_0},   [9] = {"Q8_1", 32, 36, -1},
    [10] = {"Q2_K", 256, 84, -1},          [11] = {"Q3_K", 256, 110, -1},
    [12] = {"Q4_K", 256, 144, INF_DT_Q4_K}, [13] = {"Q5_K", 256, 176, INF_DT_Q5_K},
    [14] = {"Q6_K", 256, 210, INF_DT_Q6_K}, [15] = {"Q8_K", 256, 292, -1},
    [16] = {"IQ2_XXS", 256, 66, -1},       [17] = {"IQ2_XS", 256, 74, -1},
    [18] = {"IQ3_XXS", 256, 98, -1},       [19] = {"IQ1_S", 256, 50, -1},
    [20] = {"IQ4_NL", 32, 18, -1},         [21] = {"IQ3_S", 256, 110, -1},
    [22] = {"IQ2_S", 256, 82, -1},         [23] = {"IQ4_XS", 256, 136, -1},
    [24] = {"I8", 1, 1, INF_DT_I8},        [25] = {"I16", 1, 2, -1},
    [26] = {"I32", 1, 4, INF_DT_I32},      [27] = {"I64", 1, 8, -1},
    [28] = {"F64", 1, 8, -1},              [29] = {"IQ1_M", 256, 56, -1},
    [30] = {"BF16", 1, 2, INF_DT_BF16},
};
#define N_GGML_TYPES (sizeof GGML_TYPES / sizeof GGML_TYPES[0])

static inf_status parse_value(cursor *c, gguf_kv *kv) {
    inf_status st;
    char what[160]; /* names the key in truncation messages */
    snprintf(what, sizeof what, "the value of key '%.*s'", (int)(kv->key.len > 100 ? 100 : kv->key.len),
             kv->key.ptr);
    if (kv->type == GGUF_TYPE_STRING) {
        kv->strs = malloc(sizeof *kv->strs);
        if (!kv->strs) return inf_fail(c->err, INF_E_NOMEM, "%s: out of memory", c->path);
        kv->arr_n = 1;
        return rd_str(c, &kv->strs[0], what);
    }
    if (kv->type == GGUF_TYPE_ARRAY) {
        uint32_t et;
        if ((st = rd_u32(c, &et, what))) return st;
        if (et >= GGUF_TYPE__COUNT || et == GGUF_TYPE_ARRAY)
            return inf_fail(c->err, INF_E_FORMAT, "%s: key '%.*s': unsupported array element type %u",
                            c->path, (int)kv->key.len, kv->key.ptr, et);
        kv->arr_type = (gguf_type)et;
        if ((st = rd_u64(c, &kv->arr_n, what))) return st;
        kv->val = c->p;
        if (et == GGUF_TYPE_STRING) {
            /* each string needs at least its 8-byte length: bound n by the file */
            if (kv->arr_n > (uint64_t)(c->end - c->p) / 8)
                return inf_fail(c->err, INF_E_FORMAT, "%s: key '%.*s': array of %llu strings does not fit the file",
                                c->path, (int)kv->key.len, kv->key.ptr,
                                (unsigned long long)kv->arr_n);
            kv->strs = malloc(sizeof *kv->strs * (size_t)(kv->arr_n ? kv->arr_n : 1));
            if (!kv->strs) return inf_fail(c->err, INF_E_NOMEM, "%s: out of memory", c->path);
            for (uint64_t i = 0; i < kv->arr_n; i++)
                if ((st = rd_str(c, &kv->strs[i], what))) return st;
            return INF_OK;
        }
        size_t es = scalar_size(kv->arr_type);
        size_t total;
        if (kv->arr_n > SIZE_MAX || !inf_mul_size((size_t)kv->arr_n, es, &total))
            return inf_fail(c->err, INF_E_FORMAT, "%s: key '%.*s': array size overflows", c->path,
                            (int)kv->key.len, kv->key.ptr);
        if ((st = cur_need(c, total, what))) return st;
        c->p += total;
        return INF_OK;
    }
    size_t es = scalar_size(kv->type);
    if (es == 0)
        return inf_fail(c->err, INF_E_FORMAT, "%s: key '%.*s': unknown value type %u", c->path,
                        (int)kv->key.len, kv->key.ptr, (unsigned)kv->type);
    if ((st = cur_need(c, es, what))) return st;
    kv->val = c->p;
    c->p += es;
    return INF_OK;
}

static const gguf_kv *find_kv(const gguf_file *f, const char *key) {
    size_t kl = strlen(key);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key.len == kl && memcmp(f->kvs[i].key.ptr, key, kl) == 0) return &f->kvs[i];
    return NULL;
}

static inf_status parse(gguf_file *f, inf_error *err) {
    const char *path = f->map.path;
    cursor c = {f->map.data, f->map.data, f->map.data + f->map.size, path, err};
    inf_status st;
    if (f->map.size < 4 || memcmp(f->map.data, "GGUF", 4) != 0)
        return inf_fail(err, INF_E_FORMAT, "%s: not a GGUF file (bad magic)", path);
    c.p += 4;
    if ((st = rd_u32(&c, &f->version, "the version"))) return st;
    if (f->version == 0x02000000u || f->version == 0x03000000u)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: big-endian GGUF (version field reads 0x%08x); only little-endian files are supported",
                        path, f->version);
    if (f->version == 1)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: GGUF version 1 is not supported (need 2 or 3)", path);
    if (f->version != 2 && f->version != 3)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: GGUF version %u is not supported (need 2 or 3)",
                        path, f->version);
    if ((st = rd_u64(&c, &f->n_tensors, "the tensor count"))) return st;
    if ((st = rd_u64(&c, &f->n_kv, "the key count"))) return st;
    /* each kv needs >= 12 bytes, each tensor info >= 24: bound counts by file size */
    if (f->n_kv > f->map.size / 12 || f->n_tensors > f->map.size / 24)
        return inf_fail(err, INF_E_FORMAT, "%s: implausible counts (%llu keys, %llu tensors) for a %zu-byte file",
                        path, (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors, f->map.size);
    f->kvs = calloc((size_t)f->n_kv + 1, sizeof *f->kvs);
    f->tensors = calloc((size_t)f->n_tensors + 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);

    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kvs[i];
        uint32_t t;
        kv->raw = c.p;
        if ((st = rd_str(&c, &kv->key, "a key name"))) return st;
        if ((st = rd_u32(&c, &t, "a value type"))) return st;
        if (t >= GGUF_TYPE__COUNT)
            return inf_fail(err, INF_E_FORMAT, "%s: key '%.*s' has unknown value type %u", path,
                            (int)kv->key.len, kv->key.ptr, t);
        kv->type = (gguf_type)t;
        if ((st = parse_value(&c, kv))) return st;
        kv->raw_end = c.p;
    }

    uint64_t alignment = 32;
    const gguf_kv *al = find_kv(f, "general.alignment");
    if (al) {
        uint32_t a;
        if (al->type != GGUF_TYPE_UINT32)
            return inf_fail(err, INF_E_FORMAT, "%s: general.alignment must be uint32", path);
        memcpy(&a, al->val, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return inf_fail(err, INF_E_FORMAT, "%s: general.alignment %u is not a power of two", path, a);
        alignment = a;
    }

    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tinfo *ti = &f->tensors[i];
        gguf_str name;
        uint32_t nd, type;
        uint64_t dims[GGUF_MAX_DIMS], off;
        if ((st = rd_str(&c, &name, "a tensor name"))) return st;
        ti->name = malloc(name.len + 1);
        if (!ti->name) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
        memcpy(ti->name, name.ptr, name.len);
        ti->name[name.len] = '\0';
        if ((st = rd_u32(&c, &nd, "a tensor's dimension count"))) return st;
        if (nd == 0 || nd > GGUF_MAX_DIMS)
            return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s' has %u dimensions (1..%d allowed)",
                            path, ti->name, nd, GGUF_MAX_DIMS);
        for (uint32_t d = 0; d < nd; d++)
            if ((st = rd_u64(&c, &dims[d], "a tensor dimension"))) return st;
        if ((st = rd_u32(&c, &type, "a tensor type"))) return st;
        if ((st = rd_u64(&c, &off, "a tensor offset"))) return st;
        if (type >= N_GGML_TYPES || GGML_TYPES[type].name == NULL)
            return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s' has unknown GGML type id %u",
                            path, ti->name, type);
        const ggml_type_info *gt = &GGML_TYPES[type];
        ti->ggml_type = type;
        ti->supported = gt->dtype >= 0;
        ti->t.ndim = (int)nd;
        size_t nel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (dims[d] > (uint64_t)INT64_MAX / 2 || !inf_mul_size(nel, (size_t)dims[d], &nel))
                return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': dimensions overflow", path, ti->name);
            ti->t.shape[nd - 1 - d] = (int64_t)dims[d]; /* GGUF is innermost-first */
        }
        if (dims[0] % (uint64_t)gt->block != 0)
            return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': row length %llu is not a multiple of the %s block size %d",
                            path, ti->name, (unsigned long long)dims[0], gt->name, gt->block);
        ti->t.nbytes = nel / (size_t)gt->block * (size_t)gt->bytes;
        ti->t.dtype = ti->supported ? (inf_dtype)gt->dtype : INF_DT__COUNT;
        ti->t.data = (const void *)(uintptr_t)off; /* made absolute below */
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(f->tensors[j].name, ti->name) == 0)
                return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s' appears twice", path, ti->name);
    }

    size_t hdr = (size_t)(c.p - f->map.data);
    size_t data_start = (hdr + (size_t)alignment - 1) / (size_t)alignment * (size_t)alignment;
    if (data_start > f->map.size && f->n_tensors > 0)
        return inf_fail(err, INF_E_FORMAT, "%s: truncated GGUF file (tensor data missing)", path);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tinfo *ti = &f->tensors[i];
        size_t off = (size_t)(uintptr_t)ti->t.data, end;
        if (off % alignment != 0)
            return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s' offset %zu is not %llu-aligned", path,
                            ti->name, off, (unsigned long long)alignment);
        if (!inf_add_size(data_start, off, &off) || !inf_add_size(off, ti->t.nbytes, &end) ||
            end > f->map.size)
            return inf_fail(err, INF_E_FORMAT,
                            "%s: truncated GGUF file: tensor '%s' (%zu bytes) extends past the end of the file (%zu bytes)",
                            path, ti->name, ti->t.nbytes, f->map.size);
        ti->t.data = f->map.data + off;
    }
    return INF_OK;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kvs)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kvs[i].strs);
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    inf_map_close(&f->map);
    free(f);
}

inf_status gguf_open(const char *path, gguf_file **out, inf_error *err) {
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    inf_status st = inf_map_open(&f->map, path, err);
    if (st == INF_OK) st = parse(f, err);
    if (st != INF_OK) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return INF_OK;
}

const char *gguf_path(const gguf_file *f) { return f->map.path; }
uint32_t gguf_version(const gguf_file *f) { return f->version; }
bool gguf_has(const gguf_file *f, const char *key) { return find_kv(f, key) != NULL; }

static inf_status need_kv(const gguf_file *f, const char *key, const gguf_kv **kv, inf_error *err) {
    *kv = find_kv(f, key);
    if (!*kv) return inf_fail(err, INF_E_NOTFOUND, "%s: key '%s' not found", f->map.path, key);
    return INF_OK;
}

static bool read_int(gguf_type t, const uint8_t *p, int64_t *out) {
    switch (t) {
    case GGUF_TYPE_UINT8: *out = *p; return true;
    case GGUF_TYPE_INT8: *out = (int8_t)*p; return true;
    case GGUF_TYPE_BOOL: *out = *p != 0; return true;
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case GGUF_TYPE_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > INT64_MAX) return false;
        *out = (int64_t)v;
        return true;
    }
    case GGUF_TYPE_INT64: memcpy(out, p, 8); return true;
    default: return false;
    }
}

inf_status gguf_get_int(const gguf_file *f, const char *key, int64_t *out, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (!read_int(kv->type, kv->val, out))
        return inf_fail(err, INF_E_FORMAT, "%s: key '%s' has type %s, expected an integer",
                        f->map.path, key, gguf_type_name(kv->type));
    return INF_OK;
}

inf_status gguf_get_float(const gguf_file *f, const char *key, double *out, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        float v;
        memcpy(&v, kv->val, 4);
        *out = v;
        return INF_OK;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        memcpy(out, kv->val, 8);
        return INF_OK;
    }
    int64_t i;
    if (kv->type != GGUF_TYPE_BOOL && read_int(kv->type, kv->val, &i)) {
        *out = (double)i;
        return INF_OK;
    }
    return inf_fail(err, INF_E_FORMAT, "%s: key '%s' has type %s, expected a number", f->map.path,
                    key, gguf_type_name(kv->type));
}

inf_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (kv->type != GGUF_TYPE_BOOL)
        return inf_fail(err, INF_E_FORMAT, "%s: key '%s' has type %s, expected bool", f->map.path,
                        key, gguf_type_name(kv->type));
    *out = *kv->val != 0;
    return INF_OK;
}

inf_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (kv->type != GGUF_TYPE_STRING)
        return inf_fail(err, INF_E_FORMAT, "%s: key '%s' has type %s, expected string", f->map.path,
                        key, gguf_type_name(kv->type));
    *out = kv->strs[0];
    return INF_OK;
}

inf_status gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem, uint64_t *n,
                        const void **data, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type == GGUF_TYPE_STRING)
        return inf_fail(err, INF_E_FORMAT, "%s: key '%s' has type %s, expected a numeric array",
                        f->map.path, key,
                        kv->type == GGUF_TYPE_ARRAY ? "array of string" : gguf_type_name(kv->type));
    *elem = kv->arr_type;
    *n = kv->arr_n;
    *data = kv->val;
    return INF_OK;
}

inf_status gguf_get_str_arr(const gguf_file *f, const char *key, const gguf_str **strs,
                            uint64_t *n, inf_error *err) {
    const gguf_kv *kv;
    inf_status st = need_kv(f, key, &kv, err);
    if (st) return st;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return inf_fail(err, INF_E_FORMAT, "%s: key '%s' is not an array of strings", f->map.path, key);
    *strs = kv->strs;
    *n = kv->arr_n;
    return INF_OK;
}

size_t gguf_n_kv(const gguf_file *f) { return (size_t)f->n_kv; }

gguf_str gguf_kv_key(const gguf_file *f, size_t i) {
    return i < f->n_kv ? f->kvs[i].key : (gguf_str){NULL, 0};
}

size_t gguf_kv_raw(const gguf_file *f, size_t i, const uint8_t **bytes) {
    if (i >= f->n_kv) return 0;
    *bytes = f->kvs[i].raw;
    return (size_t)(f->kvs[i].raw_end - f->kvs[i].raw);
}

inf_status gguf_write_kv_subset(const gguf_file *f, const char *prefix, const char *path,
                                inf_error *err) {
    size_t plen = strlen(prefix), n = 0;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kvs[i].key.len >= plen && memcmp(f->kvs[i].key.ptr, prefix, plen) == 0) n++;
    char tmp[2048];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "wb");
    if (!o) return inf_fail(err, INF_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
    uint32_t ver = 3;
    uint64_t nt = 0, nk = n;
    bool ok = fwrite("GGUF", 1, 4, o) == 4 && fwrite(&ver, 4, 1, o) == 1 && fwrite(&nt, 8, 1, o) == 1 &&
              fwrite(&nk, 8, 1, o) == 1;
    for (uint64_t i = 0; ok && i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kvs[i];
        if (kv->key.len >= plen && memcmp(kv->key.ptr, prefix, plen) == 0)
            ok = fwrite(kv->raw, 1, (size_t)(kv->raw_end - kv->raw), o) == (size_t)(kv->raw_end - kv->raw);
    }
    ok = ok && fflush(o) == 0 && fsync(fileno(o)) == 0;
    if (fclose(o) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return inf_fail(err, INF_E_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return INF_OK;
}

size_t gguf_n_tensors(const gguf_file *f) { return (size_t)f->n_tensors; }

const char *gguf_tensor_name(const gguf_file *f, size_t i) {
    return i < f->n_tensors ? f->tensors[i].name : NULL;
}

static const gguf_tinfo *find_tinfo(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

bool gguf_has_tensor(const gguf_file *f, const char *name) { return find_tinfo(f, name) != NULL; }

const inf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    const gguf_tinfo *ti = find_tinfo(f, name);
    return ti && ti->supported ? &ti->t : NULL;
}

inf_status gguf_require_tensor(const gguf_file *f, const char *name, const inf_tensor **out,
                               inf_error *err) {
    const gguf_tinfo *ti = find_tinfo(f, name);
    *out = NULL;
    if (!ti) return inf_fail(err, INF_E_NOTFOUND, "%s: tensor '%s' not found", f->map.path, name);
    if (!ti->supported)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: tensor '%s' has GGML type %s (%u), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
                        f->map.path, name, GGML_TYPES[ti->ggml_type].name, ti->ggml_type);
    *out = &ti->t;
    return INF_OK;
}
