/* safetensors.c — the safetensors reader and the sharded-directory helper.
 *
 * Everything a later accessor relies on is checked once in st_open: header
 * length against the file, JSON shape of every entry, offsets against the
 * data region (with overflow-checked arithmetic), overlaps, duplicate names
 * and byte sizes. The parsed cJSON tree is kept for the file's lifetime;
 * tensor names and metadata values point into it.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapfile.h"

#define ST_MAX_INDEX ((size_t)64 * 1024 * 1024)
#define ST_INDEX_NAME "model.safetensors.index.json"
/* Offsets are JSON numbers (doubles in cJSON): beyond 2^53 they are not exact. */
#define ST_MAX_INT 9007199254740992.0

typedef struct {
    const char *name;  /* points into the cJSON tree */
    const char *dtype; /* likewise */
    bool supported;    /* usable as an inf_tensor */
    inf_tensor t;
    uint64_t begin, end; /* relative to the data region */
} st_entry;

struct st_file {
    inf_mapfile map;
    cJSON *root;
    st_entry *ents;
    size_t n;
    const st_entry **by_name; /* ents sorted by name */
    const cJSON **meta;
    size_t n_meta;
};

/* ---- dtypes ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int bytes;       /* element size */
    int dt;          /* inf_dtype, or -1 when we cannot use it */
} st_dtype_info;

static const st_dtype_info dtypes[] = {
    {"F32", 4, INF_DT_F32},  {"F16", 2, INF_DT_F16},  {"BF16", 2, INF_DT_BF16},
    {"I32", 4, INF_DT_I32},  {"I8", 1, INF_DT_I8},    {"U8", 1, INF_DT_U8},
    {"F64", 8, -1},          {"I64", 8, -1},          {"U64", 8, -1},
    {"I16", 2, -1},          {"U16", 2, -1},          {"U32", 4, -1},
    {"BOOL", 1, -1},         {"F8_E4M3", 1, -1},      {"F8_E5M2", 1, -1},
    {"F8_E8M0", 1, -1},      {"C64", 8, -1},
};

static const st_dtype_info *dtype_info(const char *s) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, s) == 0) return &dtypes[i];
    return NULL;
}

const char *st_dtype_name(inf_dtype dt) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == (int)dt) return dtypes[i].name;
    return NULL;
}

/* ---- open ---------------------------------------------------------------------- */

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int cmp_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_INT) || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

static inf_status parse_entry(st_file *f, const cJSON *item, st_entry *e, size_t data_size,
                              inf_error *err) {
    const char *path = f->map.path, *name = item->string;
    e->name = name;
    if (!cJSON_IsObject(item))
        return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': header entry is not a JSON object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!jd) return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': field 'dtype' is missing", path, name);
    if (!js) return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': field 'shape' is missing", path, name);
    if (!jo) return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': field 'data_offsets' is missing", path, name);
    if (!cJSON_IsString(jd))
        return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': field 'dtype' is not a string", path, name);
    if (!cJSON_IsArray(js))
        return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': field 'shape' is not an array", path, name);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: tensor '%s': field 'data_offsets' is not an array of two integers", path, name);
    e->dtype = jd->valuestring;

    uint64_t b, en;
    if (!json_uint(cJSON_GetArrayItem(jo, 0), &b) || !json_uint(cJSON_GetArrayItem(jo, 1), &en))
        return inf_fail(err, INF_E_FORMAT,
                        "%s: tensor '%s': field 'data_offsets' holds something other than two non-negative integers",
                        path, name);
    if (b > en)
        return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                        path, name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return inf_fail(err, INF_E_RANGE,
                        "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data region (%zu bytes)",
                        path, name, (unsigned long long)b, (unsigned long long)en, data_size);
    e->begin = b;
    e->end = en;

    int ndim = cJSON_GetArraySize(js);
    size_t numel = 1;
    int64_t shape[INF_MAX_DIMS] = {0};
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, js) {
        uint64_t v;
        if (!json_uint(d, &v))
            return inf_fail(err, INF_E_FORMAT,
                            "%s: tensor '%s': field 'shape' entry %d is not a non-negative integer", path,
                            name, i);
        if (!inf_mul_size(numel, (size_t)v, &numel))
            return inf_fail(err, INF_E_RANGE, "%s: tensor '%s': element count overflows", path, name);
        if (i < INF_MAX_DIMS) shape[i] = (int64_t)v;
        i++;
    }

    const st_dtype_info *info = dtype_info(e->dtype);
    if (info) {
        size_t want;
        if (!inf_mul_size(numel, (size_t)info->bytes, &want) || want != en - b)
            return inf_fail(err, INF_E_SHAPE,
                            "%s: tensor '%s': %s shape of %zu elements needs %zu bytes but data_offsets [%llu, %llu] hold %llu",
                            path, name, e->dtype, numel, want, (unsigned long long)b,
                            (unsigned long long)en, (unsigned long long)(en - b));
    }
    e->supported = info && info->dt >= 0 && ndim <= INF_MAX_DIMS;
    if (e->supported) {
        e->t.dtype = (inf_dtype)info->dt;
        e->t.ndim = ndim;
        memcpy(e->t.shape, shape, sizeof shape);
        e->t.nbytes = (size_t)(en - b);
        /* A zero-byte tensor gets a valid non-NULL pointer too ("present"). */
        e->t.data = f->map.data + (f->map.size - data_size) + b;
    }
    return INF_OK;
}

static inf_status parse_metadata(st_file *f, const cJSON *item, inf_error *err) {
    const char *path = f->map.path;
    if (f->meta) return inf_fail(err, INF_E_FORMAT, "%s: '__metadata__' appears twice", path);
    if (!cJSON_IsObject(item))
        return inf_fail(err, INF_E_FORMAT, "%s: '__metadata__' is not a JSON object", path);
    size_t n = (size_t)cJSON_GetArraySize(item);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, item) {
        if (!cJSON_IsString(kv))
            return inf_fail(err, INF_E_FORMAT, "%s: '__metadata__' entry '%s' is not a string", path,
                            kv->string);
        for (size_t i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta[i]->string, kv->string) == 0)
                return inf_fail(err, INF_E_FORMAT, "%s: '__metadata__' key '%s' appears twice", path,
                                kv->string);
        f->meta[f->n_meta++] = kv;
    }
    return INF_OK;
}

static inf_status parse_header(st_file *f, inf_error *err) {
    const char *path = f->map.path;
    size_t size = f->map.size;
    if (size < 8)
        return inf_fail(err, INF_E_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", path,
                        size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map.data[i];
    if (hlen > size - 8)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                        (unsigned long long)hlen, size);
    if (hlen > ST_MAX_HEADER)
        return inf_fail(err, INF_E_RANGE, "%s: header length %llu exceeds the %zu-byte limit", path,
                        (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen < 2 || f->map.data[8] != '{')
        return inf_fail(err, INF_E_FORMAT, "%s: header does not start with a JSON object ('{')", path);
    size_t data_size = size - 8 - (size_t)hlen;

    /* cJSON gets its own NUL-terminated copy: the map is not terminated. */
    char *buf = malloc((size_t)hlen + 1);
    if (!buf) return inf_fail(err, INF_E_NOMEM, "%s: out of memory for a %llu-byte header", path,
                              (unsigned long long)hlen);
    memcpy(buf, f->map.data + 8, (size_t)hlen);
    buf[hlen] = '\0';
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts(buf, (size_t)hlen, &end, 0);
    if (!f->root) {
        size_t at = end && end >= buf && end <= buf + hlen ? (size_t)(end - buf) : 0;
        free(buf);
        return inf_fail(err, INF_E_FORMAT, "%s: header is not valid JSON (error near header byte %zu)", path, at);
    }
    for (const char *p = end; p && p < buf + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            size_t at = (size_t)(p - buf);
            free(buf);
            return inf_fail(err, INF_E_FORMAT, "%s: header has trailing bytes after the JSON object (at byte %zu)",
                            path, at);
        }
    }
    free(buf);
    if (!cJSON_IsObject(f->root))
        return inf_fail(err, INF_E_FORMAT, "%s: header is not a JSON object", path);

    size_t n_items = (size_t)cJSON_GetArraySize(f->root);
    f->ents = calloc(n_items ? n_items : 1, sizeof *f->ents);
    f->by_name = calloc(n_items ? n_items : 1, sizeof *f->by_name);
    const st_entry **by_begin = calloc(n_items ? n_items : 1, sizeof *by_begin);
    if (!f->ents || !f->by_name || !by_begin) {
        free((void *)by_begin);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory for %zu header entries", path, n_items);
    }
    const cJSON *item;
    inf_status st = INF_OK;
    cJSON_ArrayForEach(item, f->root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            st = parse_metadata(f, item, err);
        } else {
            st = parse_entry(f, item, &f->ents[f->n], data_size, err);
            f->n++;
        }
        if (st) {
            free((void *)by_begin);
            return st;
        }
    }

    for (size_t i = 0; i < f->n; i++) f->by_name[i] = by_begin[i] = &f->ents[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name);
    qsort(by_begin, f->n, sizeof *by_begin, cmp_begin);
    for (size_t i = 1; i < f->n; i++) {
        const char *a = f->by_name[i - 1]->name, *b = f->by_name[i]->name;
        if (strcmp(a, b) == 0) {
            free((void *)by_begin);
            return inf_fail(err, INF_E_FORMAT, "%s: tensor '%s' is listed twice", path, a);
        }
    }
    /* Overlap: an entry with bytes may not start before the furthest end
     * seen so far (entries sorted by begin). Empty tensors own no bytes. */
    const st_entry *furthest = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const st_entry *e = by_begin[i];
        if (e->end == e->begin) continue;
        if (furthest && e->begin < furthest->end) {
            free((void *)by_begin);
            return inf_fail(err, INF_E_FORMAT,
                            "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (bytes %llu..%llu)",
                            path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            furthest->name, (unsigned long long)furthest->begin,
                            (unsigned long long)furthest->end);
        }
        if (!furthest || e->end > furthest->end) furthest = e;
    }
    free((void *)by_begin);
    return INF_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    inf_map_close(&f->map);
    cJSON_Delete(f->root);
    free(f->ents);
    free((void *)f->by_name);
    free(f->meta);
    free(f);
}

inf_status st_open(const char *path, st_file **out, inf_error *err) {
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    inf_status st = inf_map_open(&f->map, path, err);
    if (!st) st = parse_header(f, err);
    if (st) {
        st_close(f);
        return st;
    }
    *out = f;
    return INF_OK;
}

/* ---- accessors ------------------------------------------------------------------ */

const char *st_path(const st_file *f) { return f->map.path; }
size_t st_n_tensors(const st_file *f) { return f->n; }
const char *st_tensor_name(const st_file *f, size_t i) { return i < f->n ? f->ents[i].name : NULL; }
const char *st_tensor_dtype(const st_file *f, size_t i) { return i < f->n ? f->ents[i].dtype : NULL; }

static const st_entry *lookup(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_entry *e = f->by_name[mid];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

bool st_has(const st_file *f, const char *name) { return lookup(f, name) != NULL; }

const inf_tensor *st_find(const st_file *f, const char *name) {
    const st_entry *e = lookup(f, name);
    return e && e->supported ? &e->t : NULL;
}

static inf_status entry_unusable(const st_file *f, const st_entry *e, inf_error *err) {
    if (!dtype_info(e->dtype) || dtype_info(e->dtype)->dt < 0)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: tensor '%s' has dtype '%s', which is not supported (supported: F32, F16, BF16, I32, I8, U8)",
                        f->map.path, e->name, e->dtype);
    return inf_fail(err, INF_E_UNSUPPORTED, "%s: tensor '%s' has more than %d dimensions", f->map.path,
                    e->name, INF_MAX_DIMS);
}

inf_status st_require(const st_file *f, const char *name, const inf_tensor **out, inf_error *err) {
    *out = NULL;
    const st_entry *e = lookup(f, name);
    if (!e) return inf_fail(err, INF_E_NOTFOUND, "%s: tensor '%s' not found", f->map.path, name);
    if (!e->supported) return entry_unusable(f, e, err);
    *out = &e->t;
    return INF_OK;
}

const char *st_metadata_get(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i]->string, key) == 0) return f->meta[i]->valuestring;
    return NULL;
}
size_t st_metadata_count(const st_file *f) { return f->n_meta; }
const char *st_metadata_key(const st_file *f, size_t i) { return i < f->n_meta ? f->meta[i]->string : NULL; }

/* ---- sets of files --------------------------------------------------------------- */

typedef struct {
    const char *name;
    const st_file *file;
} st_ref;

struct st_set {
    char dir[1024];
    st_file **files;
    size_t n_files;
    st_ref *refs; /* sorted by name */
    size_t n_refs;
};

void st_set_close(st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) st_close(s->files[i]);
    free(s->files);
    free(s->refs);
    free(s);
}

static int cmp_ref(const void *a, const void *b) {
    return strcmp(((const st_ref *)a)->name, ((const st_ref *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Opens the files named in `names` (relative to s->dir) and builds the
 * merged, duplicate-free name index. */
static inf_status set_build(st_set *s, char **names, size_t n, inf_error *err) {
    s->files = calloc(n ? n : 1, sizeof *s->files);
    if (!s->files) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", s->dir);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        char p[2048];
        if (s->dir[0]) snprintf(p, sizeof p, "%s/%s", s->dir, names[i]);
        else snprintf(p, sizeof p, "%s", names[i]);
        inf_status st = st_open(p, &s->files[s->n_files], err);
        if (st) return st;
        total += st_n_tensors(s->files[s->n_files]);
        s->n_files++;
    }
    s->refs = calloc(total ? total : 1, sizeof *s->refs);
    if (!s->refs) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", s->dir);
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i]->n; j++)
            s->refs[s->n_refs++] = (st_ref){s->files[i]->ents[j].name, s->files[i]};
    qsort(s->refs, s->n_refs, sizeof *s->refs, cmp_ref);
    for (size_t i = 1; i < s->n_refs; i++)
        if (strcmp(s->refs[i - 1].name, s->refs[i].name) == 0)
            return inf_fail(err, INF_E_FORMAT, "tensor '%s' is in both %s and %s", s->refs[i].name,
                            st_path(s->refs[i - 1].file), st_path(s->refs[i].file));
    return INF_OK;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n > k && strcmp(s + n - k, suf) == 0;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Files named by the index's weight_map, each once, in name order. */
static inf_status index_files(const char *dir, const char *ipath, cJSON **root_out, char ***out,
                              size_t *n_out, inf_error *err) {
    char *text = NULL;
    inf_status st = inf_read_file(ipath, ST_MAX_INDEX, &text, NULL, err);
    if (st) return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return inf_fail(err, INF_E_FORMAT, "%s: not valid JSON", ipath);
    *root_out = root;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!wm) return inf_fail(err, INF_E_FORMAT, "%s: field 'weight_map' is missing", ipath);
    if (!cJSON_IsObject(wm)) return inf_fail(err, INF_E_FORMAT, "%s: field 'weight_map' is not an object", ipath);
    size_t n = (size_t)cJSON_GetArraySize(wm), k = 0;
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!names) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", ipath);
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            free_names(names, k);
            return inf_fail(err, INF_E_FORMAT, "%s: weight_map entry '%s' is not a string", ipath, e->string);
        }
        const char *fn = e->valuestring;
        if (!*fn || strchr(fn, '/') || fn[0] == '.') {
            free_names(names, k);
            return inf_fail(err, INF_E_FORMAT,
                            "%s: weight_map entry '%s' names file '%s', which is not a plain file name in %s",
                            ipath, e->string, fn, dir);
        }
        bool seen = false;
        for (size_t i = 0; i < k && !seen; i++) seen = strcmp(names[i], fn) == 0;
        if (seen) continue;
        if (!(names[k] = strdup(fn))) {
            free_names(names, k);
            return inf_fail(err, INF_E_NOMEM, "%s: out of memory", ipath);
        }
        k++;
    }
    if (k == 0) {
        free(names);
        return inf_fail(err, INF_E_NOTFOUND, "%s: weight_map lists no tensors", ipath);
    }
    qsort(names, k, sizeof *names, cmp_str);
    *out = names;
    *n_out = k;
    return INF_OK;
}

static inf_status glob_files(const char *dir, char ***out, size_t *n_out, inf_error *err) {
    DIR *d = opendir(dir);
    if (!d) return inf_fail(err, INF_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".safetensors")) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) break;
            names = nn;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    bool oom = de != NULL;
    closedir(d);
    if (oom) {
        free_names(names, n);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory listing files", dir);
    }
    if (n == 0) {
        free(names);
        return inf_fail(err, INF_E_NOTFOUND, "%s: no *.safetensors files in this directory", dir);
    }
    qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    return INF_OK;
}

inf_status st_set_open_dir(const char *dir, st_set **out, inf_error *err) {
    *out = NULL;
    st_set *s = calloc(1, sizeof *s);
    if (!s) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", dir);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    char ipath[2048];
    snprintf(ipath, sizeof ipath, "%s/%s", dir, ST_INDEX_NAME);
    cJSON *index = NULL;
    char **names = NULL;
    size_t n = 0;
    inf_status st;
    if (access(ipath, F_OK) == 0) st = index_files(dir, ipath, &index, &names, &n, err);
    else st = glob_files(dir, &names, &n, err);
    if (!st) st = set_build(s, names, n, err);
    if (!st && index) {
        /* Every tensor the index promises must be where it says. */
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(index, "weight_map")) {
            const st_file *f = st_set_which(s, e->string);
            char want[2048];
            snprintf(want, sizeof want, "%s/%s", dir, e->valuestring);
            if (!f || strcmp(st_path(f), want) != 0) {
                st = inf_fail(err, INF_E_NOTFOUND, "%s: tensor '%s' is mapped to '%s', which does not list it",
                              ipath, e->string, e->valuestring);
                break;
            }
        }
    }
    cJSON_Delete(index);
    free_names(names, n);
    if (st) {
        st_set_close(s);
        return st;
    }
    *out = s;
    return INF_OK;
}

inf_status st_set_open_file(const char *path, st_set **out, inf_error *err) {
    *out = NULL;
    st_set *s = calloc(1, sizeof *s);
    if (!s) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    char *name = strdup(path);
    if (!name) {
        free(s);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
    }
    inf_status st = set_build(s, &name, 1, err);
    free(name);
    if (st) {
        st_set_close(s);
        return st;
    }
    snprintf(s->dir, sizeof s->dir, "%s", path);
    *out = s;
    return INF_OK;
}

size_t st_set_n_files(const st_set *s) { return s->n_files; }
const st_file *st_set_file(const st_set *s, size_t i) { return i < s->n_files ? s->files[i] : NULL; }

const st_file *st_set_which(const st_set *s, const char *name) {
    st_ref key = {name, NULL};
    const st_ref *r = bsearch(&key, s->refs, s->n_refs, sizeof *s->refs, cmp_ref);
    return r ? r->file : NULL;
}

bool st_set_has(const st_set *s, const char *name) { return st_set_which(s, name) != NULL; }

const inf_tensor *st_set_find(const st_set *s, const char *name) {
    const st_file *f = st_set_which(s, name);
    return f ? st_find(f, name) : NULL;
}

inf_status st_set_require(const st_set *s, const char *name, const inf_tensor **out, inf_error *err) {
    *out = NULL;
    const st_file *f = st_set_which(s, name);
    if (!f) {
        if (s->n_files == 1) return st_require(s->files[0], name, out, err);
        return inf_fail(err, INF_E_NOTFOUND, "%s: tensor '%s' not found in any of its %zu safetensors files",
                        s->dir, name, s->n_files);
    }
    return st_require(f, name, out, err);
}
