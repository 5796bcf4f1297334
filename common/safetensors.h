/* safetensors.h — reader and writer for Hugging Face's safetensors format.
 *
 * File layout: u64 little-endian N, then N bytes of JSON header, then the
 * data region. The header is an object mapping tensor names to
 *   {"dtype": "F16", "shape": [r, c], "data_offsets": [begin, end]}
 * (offsets relative to the data region) plus an optional "__metadata__"
 * object of string -> string.
 *
 * Reader (st_open): maps the file and validates the whole header up front —
 * N is bounded by the file size and by ST_MAX_HEADER, the header must be one
 * JSON object, every entry needs a dtype, a shape and data_offsets, offsets
 * must lie inside the data region and must not overlap, names must be
 * unique, and for every dtype whose size is known end - begin must equal
 * numel x element size. After that no accessor can read out of bounds.
 * Tensor data stays in the map (no copies) and may be unaligned when the
 * file was written by a tool that does not align (our writer does).
 *
 * Dtypes: F32, F16, BF16, I32, I8 and U8 become inf_tensor views. Any other
 * dtype string (F64, I64, BOOL, F8_E4M3, ... or one we have never heard of)
 * is listed and its extent checked, but st_find returns NULL for it and
 * st_require fails naming the tensor and the dtype. The same holds for
 * tensors of more than INF_MAX_DIMS dimensions.
 *
 * Ownership: an st_file owns its map and header; every pointer it hands out
 * (names, tensors, metadata values, tensor data) lives until st_close. An
 * st_set owns its st_files. Both are immutable after open and may be read
 * from many threads at once.
 *
 * Writer (st_writer_*): collects (name, dtype, shape, data) entries and a
 * metadata string map, then writes the file atomically — see
 * safetensors_write.c for the crash-safety argument. The header it writes
 * is padded so the data region starts on an 8-byte boundary, and tensors
 * are laid out by decreasing element size (as the Python library does), so
 * every tensor is aligned to its element size and the data region has no
 * gaps (which the Python library requires).
 */
#ifndef INF_SAFETENSORS_H
#define INF_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

#define ST_MAX_HEADER ((size_t)100 * 1024 * 1024)

/* ---- one file ---------------------------------------------------------------- */

typedef struct st_file st_file;

inf_status st_open(const char *path, st_file **out, inf_error *err);
void st_close(st_file *f); /* NULL is fine */

const char *st_path(const st_file *f);
size_t st_n_tensors(const st_file *f);
/* Names in header order; i < st_n_tensors. */
const char *st_tensor_name(const st_file *f, size_t i);
/* The dtype string exactly as the header spells it ("F16", "F64", ...). */
const char *st_tensor_dtype(const st_file *f, size_t i);
/* True when a tensor of that name is listed, whatever its dtype. */
bool st_has(const st_file *f, const char *name);
/* The tensor view, or NULL when absent or of an unsupported dtype/rank. */
const inf_tensor *st_find(const st_file *f, const char *name);
/* Like st_find but fails with a message naming the file and the tensor
 * (INF_E_NOTFOUND when absent, INF_E_UNSUPPORTED for its dtype/rank). */
inf_status st_require(const st_file *f, const char *name, const inf_tensor **out, inf_error *err);

/* "__metadata__" entries. NULL when the key is absent. */
const char *st_metadata_get(const st_file *f, const char *key);
size_t st_metadata_count(const st_file *f);
const char *st_metadata_key(const st_file *f, size_t i);

/* ---- a set of files (a sharded checkpoint) ----------------------------------- */

typedef struct st_set st_set;

/* Opens a directory's safetensors: when DIR/model.safetensors.index.json
 * exists, the files its weight_map names (every listed tensor must be in
 * the file it is listed in); otherwise every DIR/ *.safetensors, in name
 * order. A tensor name present in two files is an error naming both. */
inf_status st_set_open_dir(const char *dir, st_set **out, inf_error *err);
/* A set of one file. */
inf_status st_set_open_file(const char *path, st_set **out, inf_error *err);
void st_set_close(st_set *s); /* NULL is fine */

size_t st_set_n_files(const st_set *s);
const st_file *st_set_file(const st_set *s, size_t i);
/* Which file lists `name`, or NULL. */
const st_file *st_set_which(const st_set *s, const char *name);
bool st_set_has(const st_set *s, const char *name);
const inf_tensor *st_set_find(const st_set *s, const char *name);
/* Fails naming the tensor (and the file when it is listed but unusable;
 * the directory when no file lists it). */
inf_status st_set_require(const st_set *s, const char *name, const inf_tensor **out,
                          inf_error *err);

/* ---- writer ----------------------------------------------------------------- */

typedef struct st_writer st_writer;

inf_status st_writer_new(st_writer **out, inf_error *err);
void st_writer_free(st_writer *w); /* NULL is fine */

/* Adds a tensor. dtype: F32, F16, BF16, I32, I8 or U8 (a Q4G tensor is
 * written as its three arrays by the caller). nbytes must equal numel x
 * element size. The data is BORROWED: it must stay valid and unchanged
 * until st_writer_write returns. Names must be unique and non-empty. */
inf_status st_writer_add(st_writer *w, const char *name, inf_dtype dtype, int ndim,
                         const int64_t *shape, const void *data, size_t nbytes, inf_error *err);
/* Like st_writer_add, but the bytes are made when the file is written:
 * produce(user, buf, nbytes, err) fills buf (owned by the writer, freed
 * right after it is written) and returns INF_OK, or fails the write. Lets a
 * writer stream a model far larger than memory, one tensor at a time, in
 * the writer's layout order (decreasing element size, then add order). */
typedef inf_status (*st_produce_fn)(void *user, void *buf, size_t nbytes, inf_error *err);
inf_status st_writer_add_lazy(st_writer *w, const char *name, inf_dtype dtype, int ndim,
                              const int64_t *shape, size_t nbytes, st_produce_fn produce,
                              void *user, inf_error *err);
/* Sets a "__metadata__" entry (copied; a repeated key replaces the value). */
inf_status st_writer_meta(st_writer *w, const char *key, const char *value, inf_error *err);
/* Writes everything to `path` atomically (path.tmp, fsync, rename, fsync
 * of the directory). On failure `path` is untouched and path.tmp removed.
 * The writer may be written again or freed afterwards. */
inf_status st_writer_write(st_writer *w, const char *path, inf_error *err);

/* The safetensors dtype string for an inf_dtype ("F32", ...), or NULL for
 * dtypes safetensors cannot hold directly (Q8_0, Q4_0, Q4_1, Q4G). */
const char *st_dtype_name(inf_dtype dt);

#endif
