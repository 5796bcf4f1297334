/* gguf.h — GGUF v2/v3 reader (llama.cpp's model file format).
 *
 * gguf_open maps the file and validates the whole header up front: every
 * length, count and tensor extent is checked against the file size with
 * overflow-checked arithmetic, so later accessors cannot read out of bounds.
 * Tensor data stays in the map (no copies). Strings are NOT NUL-terminated.
 * A gguf_file is immutable after open and safe to read from many threads;
 * gguf_close frees it and invalidates every pointer it handed out.
 */
#ifndef INF_GGUF_H
#define INF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE__COUNT
} gguf_type;

typedef struct {
    const char *ptr;
    size_t len;
} gguf_str;

typedef struct gguf_file gguf_file;

inf_status gguf_open(const char *path, gguf_file **out, inf_error *err);
void gguf_close(gguf_file *f);

const char *gguf_path(const gguf_file *f);
uint32_t gguf_version(const gguf_file *f);
const char *gguf_type_name(gguf_type t);

/* Key lookups. A missing key gives INF_E_NOTFOUND; a key of the wrong type
 * INF_E_FORMAT; both messages name the file and key. */
bool gguf_has(const gguf_file *f, const char *key);
inf_status gguf_get_int(const gguf_file *f, const char *key, int64_t *out, inf_error *err);
inf_status gguf_get_float(const gguf_file *f, const char *key, double *out, inf_error *err);
inf_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, inf_error *err);
inf_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, inf_error *err);
/* Numeric array: *data points into the map and may be unaligned (memcpy). */
inf_status gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem, uint64_t *n,
                        const void **data, inf_error *err);
/* Array of strings. */
inf_status gguf_get_str_arr(const gguf_file *f, const char *key, const gguf_str **strs,
                            uint64_t *n, inf_error *err);

/* Raw key/value entries, in file order: the key, and the entry's bytes as
 * stored (key, type, value), valid until gguf_close. */
size_t gguf_n_kv(const gguf_file *f);
gguf_str gguf_kv_key(const gguf_file *f, size_t i);
size_t gguf_kv_raw(const gguf_file *f, size_t i, const uint8_t **bytes);
/* Writes a tensor-less GGUF v3 holding the entries whose key starts with
 * `prefix`, copied byte for byte (e.g. "tokenizer." to carry a model's
 * tokenizer into a bundle). Atomic: path.tmp, fsync, rename. */
inf_status gguf_write_kv_subset(const gguf_file *f, const char *prefix, const char *path,
                                inf_error *err);

/* Tensors. A tensor whose GGML type has no kernel here is still listed (its
 * extent was checked) with supported=false; gguf_tensor_check reports it. */
size_t gguf_n_tensors(const gguf_file *f);
const char *gguf_tensor_name(const gguf_file *f, size_t i);
/* True when a tensor of that name is listed, whatever its type. */
bool gguf_has_tensor(const gguf_file *f, const char *name);
/* NULL when absent or of an unsupported type. */
const inf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
/* Like gguf_find_tensor but fails with a message naming the tensor when it
 * is missing or of a type the kernels cannot use. */
inf_status gguf_require_tensor(const gguf_file *f, const char *name, const inf_tensor **out,
                               inf_error *err);

#endif
