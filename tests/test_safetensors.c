/* If this fails, users see HF checkpoints and prepared bundles fail to load,
 * load garbage, or a crash instead of a message naming the bad file and
 * tensor; or a bundle write that dies half-way leaves a corrupt file. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

/* Writes u64 len + header + data exactly as given (independent of the writer). */
static void raw_file(const char *path, const char *header, const void *data, size_t n) {
    size_t hl = strlen(header);
    unsigned char *buf = malloc(8 + hl + n + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (n) memcpy(buf + 8 + hl, data, n);
    cr_assert_eq(tu_write_file(path, buf, 8 + hl + n), 0);
    free(buf);
}

static char dir[512];

static const char *tmp_path(char *buf, size_t cap, const char *name) {
    if (!dir[0]) cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

/* st_open must fail with `code`, and the message must name the file and
 * contain `what` (the tensor or field). */
static void expect_open_fails(const char *path, inf_status code, const char *what) {
    st_file *f = (st_file *)0x1;
    inf_error err = {{0}};
    inf_status st = st_open(path, &f, &err);
    cr_assert_eq(st, code, "%s: got status %d (%s), want %d", path, st, err.msg, code);
    cr_assert_null(f);
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    cr_assert(strstr(err.msg, what) != NULL, "message does not name '%s': %s", what, err.msg);
}

static void teardown(void) {
    if (dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        (void)!system(cmd);
        dir[0] = '\0';
    }
}

TestSuite(safetensors, .fini = teardown);

/* ---- writer + reader round trip --------------------------------------------------- */

Test(safetensors, round_trip_f32_f16_bf16_and_metadata) {
    enum { R = 3, C = 5 };
    float a[R * C];
    uint16_t h[R * C], b[R * C];
    int32_t iv[7];
    uint8_t u[3] = {1, 2, 250};
    for (int i = 0; i < R * C; i++) {
        a[i] = frand();
        h[i] = inf_f32_to_f16(frand());
        b[i] = inf_f32_to_bf16(frand());
    }
    for (int i = 0; i < 7; i++) iv[i] = -3 * i + 1;
    st_writer *w;
    inf_error err;
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    /* Odd-sized 1-byte tensor first: the writer must still align the rest. */
    cr_assert_eq(st_writer_add(w, "u8", INF_DT_U8, 1, (int64_t[]){3}, u, 3, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_writer_add(w, "half", INF_DT_F16, 2, (int64_t[]){R, C}, h, sizeof h, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "w.f32", INF_DT_F32, 2, (int64_t[]){R, C}, a, sizeof a, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "brain", INF_DT_BF16, 2, (int64_t[]){R, C}, b, sizeof b, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "ints", INF_DT_I32, 1, (int64_t[]){7}, iv, sizeof iv, &err), INF_OK);
    cr_assert_eq(st_writer_meta(w, "format", "pt", &err), INF_OK);
    cr_assert_eq(st_writer_meta(w, "note", "quote\" slash\\ nl\n", &err), INF_OK);
    cr_assert_eq(st_writer_meta(w, "format", "infemeral", &err), INF_OK); /* replaces */
    char p[600];
    tmp_path(p, sizeof p, "rt.safetensors");
    cr_assert_eq(st_writer_write(w, p, &err), INF_OK, "%s", err.msg);
    st_writer_free(w);

    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    cr_assert_neq(access(tmp, F_OK), 0, "the .tmp file was left behind");

    st_file *f;
    cr_assert_eq(st_open(p, &f, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_n_tensors(f), 5);
    cr_assert_str_eq(st_metadata_get(f, "format"), "infemeral");
    cr_assert_str_eq(st_metadata_get(f, "note"), "quote\" slash\\ nl\n");
    cr_assert_null(st_metadata_get(f, "absent"));
    cr_assert_eq(st_metadata_count(f), 2);

    const inf_tensor *t = st_find(f, "w.f32");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, INF_DT_F32);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], R);
    cr_assert_eq(t->shape[1], C);
    cr_assert_eq(memcmp(t->data, a, sizeof a), 0);
    cr_assert_eq((uintptr_t)t->data % 4, 0, "F32 data is not 4-byte aligned");
    float row[C];
    inf_tensor_row_f32(t, 2, row);
    cr_assert_eq(memcmp(row, a + 2 * C, sizeof row), 0);

    t = st_find(f, "half");
    cr_assert_eq(t->dtype, INF_DT_F16);
    cr_assert_eq(memcmp(t->data, h, sizeof h), 0);
    inf_tensor_row_f32(t, 1, row);
    for (int j = 0; j < C; j++) cr_assert_eq(row[j], inf_f16_to_f32(h[C + j]));

    t = st_find(f, "brain");
    cr_assert_eq(t->dtype, INF_DT_BF16);
    cr_assert_eq(memcmp(t->data, b, sizeof b), 0);
    inf_tensor_row_f32(t, 0, row);
    for (int j = 0; j < C; j++) cr_assert_eq(row[j], inf_bf16_to_f32(b[j]));

    t = st_find(f, "ints");
    cr_assert_eq(t->dtype, INF_DT_I32);
    cr_assert_eq((uintptr_t)t->data % 4, 0);
    cr_assert_eq(memcmp(t->data, iv, sizeof iv), 0);
    t = st_find(f, "u8");
    cr_assert_eq(t->dtype, INF_DT_U8);
    cr_assert_eq(memcmp(t->data, u, 3), 0);
    cr_assert_null(st_find(f, "nope"));
    cr_assert_not(st_has(f, "nope"));

    /* Layout: data region 8-aligned, no gaps (the Python library needs that). */
    size_t len;
    char *bytes = tu_read_file(p, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)bytes[i];
    cr_assert_eq((8 + hl) % 8, 0);
    cr_assert_eq(len - 8 - hl, 3 + sizeof h + sizeof a + sizeof b + sizeof iv);
    free(bytes);
    st_close(f);
}

Test(safetensors, zero_d_and_empty_tensors) {
    float s = 3.5f;
    st_writer *w;
    inf_error err;
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "scalar", INF_DT_F32, 0, NULL, &s, 4, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_writer_add(w, "empty", INF_DT_F16, 2, (int64_t[]){0, 4}, NULL, 0, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_writer_add(w, "empty2", INF_DT_F16, 1, (int64_t[]){0}, NULL, 0, &err), INF_OK, "%s", err.msg);
    char p[600];
    cr_assert_eq(st_writer_write(w, tmp_path(p, sizeof p, "z.safetensors"), &err), INF_OK, "%s", err.msg);
    st_writer_free(w);
    st_file *f;
    cr_assert_eq(st_open(p, &f, &err), INF_OK, "%s", err.msg);
    const inf_tensor *t = st_find(f, "scalar");
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(*(const float *)t->data, 3.5f);
    cr_assert_eq(st_find(f, "empty")->nbytes, 0);
    cr_assert_not_null(st_find(f, "empty2"));
    st_close(f);
}

Test(safetensors, writer_refuses_bad_entries) {
    st_writer *w;
    inf_error err;
    float x[4] = {0};
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    cr_assert_neq(st_writer_add(w, "a", INF_DT_F32, 1, (int64_t[]){4}, x, 12, &err), INF_OK);
    cr_assert(strstr(err.msg, "'a'"), "%s", err.msg);
    cr_assert_eq(st_writer_add(w, "a", INF_DT_F32, 1, (int64_t[]){4}, x, 16, &err), INF_OK);
    cr_assert_neq(st_writer_add(w, "a", INF_DT_F32, 1, (int64_t[]){4}, x, 16, &err), INF_OK);
    cr_assert(strstr(err.msg, "twice"), "%s", err.msg);
    cr_assert_neq(st_writer_add(w, "q", INF_DT_Q4G, 2, (int64_t[]){1, 4}, x, 2, &err), INF_OK);
    cr_assert_neq(st_writer_add(w, "__metadata__", INF_DT_F32, 1, (int64_t[]){4}, x, 16, &err), INF_OK);
    st_writer_free(w);
}

/* The crash-safety claim in safetensors_write.c: a failed write leaves the
 * old file exactly as it was. The failure is forced by making PATH.tmp a
 * directory, so the temporary file cannot be created. */
Test(safetensors, failed_write_leaves_old_file_intact) {
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
    st_writer *w;
    inf_error err;
    char p[600], tmp[620];
    tmp_path(p, sizeof p, "keep.safetensors");
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "t", INF_DT_F32, 1, (int64_t[]){4}, a, 16, &err), INF_OK);
    cr_assert_eq(st_writer_write(w, p, &err), INF_OK, "%s", err.msg);
    st_writer_free(w);
    size_t n0;
    char *before = tu_read_file(p, &n0);

    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    cr_assert_eq(mkdir(tmp, 0755), 0);
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "t", INF_DT_F32, 1, (int64_t[]){4}, b, 16, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, "u", INF_DT_F32, 1, (int64_t[]){4}, b, 16, &err), INF_OK);
    cr_assert_neq(st_writer_write(w, p, &err), INF_OK);
    cr_assert(strstr(err.msg, tmp), "message does not name the temporary file: %s", err.msg);
    size_t n1;
    char *after = tu_read_file(p, &n1);
    cr_assert_eq(n0, n1);
    cr_assert_eq(memcmp(before, after, n0), 0, "the old file changed");
    free(after);

    /* With the obstacle gone, the same writer replaces the file whole. */
    cr_assert_eq(rmdir(tmp), 0);
    cr_assert_eq(st_writer_write(w, p, &err), INF_OK, "%s", err.msg);
    st_writer_free(w);
    st_file *f;
    cr_assert_eq(st_open(p, &f, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_n_tensors(f), 2);
    cr_assert_eq(((const float *)st_find(f, "t")->data)[0], 5.0f);
    st_close(f);
    free(before);
}

/* ---- bad input ------------------------------------------------------------------------ */

Test(safetensors, truncated_file) {
    char p[600];
    tmp_path(p, sizeof p, "short.safetensors");
    cr_assert_eq(tu_write_file(p, "\x10\x00\x00", 3), 0);
    expect_open_fails(p, INF_E_FORMAT, "too short");
    /* A valid file cut in the middle of its data. */
    float x[8] = {0};
    raw_file(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", x, 20);
    expect_open_fails(p, INF_E_RANGE, "'t'");
}

Test(safetensors, header_length_beyond_file) {
    char p[600];
    tmp_path(p, sizeof p, "hl.safetensors");
    unsigned char b[20] = {0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, '{', '}'};
    cr_assert_eq(tu_write_file(p, b, sizeof b), 0);
    expect_open_fails(p, INF_E_FORMAT, "header length 255");
    b[7] = 0x80; /* 2^63 + 255: would overflow naive arithmetic */
    cr_assert_eq(tu_write_file(p, b, sizeof b), 0);
    expect_open_fails(p, INF_E_FORMAT, "header length");
}

Test(safetensors, header_length_over_cap) {
    char p[600];
    tmp_path(p, sizeof p, "big.safetensors");
    uint64_t hl = ST_MAX_HEADER + 1;
    unsigned char b[9];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    b[8] = '{';
    cr_assert_eq(tu_write_file(p, b, sizeof b), 0);
    cr_assert_eq(truncate(p, (off_t)(hl + 64)), 0); /* sparse: costs no disk */
    expect_open_fails(p, INF_E_RANGE, "limit");
}

Test(safetensors, invalid_json_header) {
    char p[600];
    tmp_path(p, sizeof p, "json.safetensors");
    raw_file(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],", NULL, 0);
    expect_open_fails(p, INF_E_FORMAT, "not valid JSON");
    raw_file(p, "[1,2]", NULL, 0);
    expect_open_fails(p, INF_E_FORMAT, "JSON object");
    raw_file(p, "{} garbage", NULL, 0);
    expect_open_fails(p, INF_E_FORMAT, "trailing");
    raw_file(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", NULL, 0);
    expect_open_fails(p, INF_E_FORMAT, "data_offsets");
    raw_file(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "abcd", 4);
    expect_open_fails(p, INF_E_FORMAT, "shape");
    raw_file(p, "{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd", 4);
    expect_open_fails(p, INF_E_FORMAT, "dtype");
    raw_file(p, "{\"__metadata__\":{\"k\":3}}", NULL, 0);
    expect_open_fails(p, INF_E_FORMAT, "'k'");
    raw_file(p,
             "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
             "ab", 2);
    expect_open_fails(p, INF_E_FORMAT, "listed twice");
}

Test(safetensors, overlapping_offsets) {
    char p[600];
    tmp_path(p, sizeof p, "ov.safetensors");
    float x[8] = {0};
    raw_file(p,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}",
             x, 32);
    expect_open_fails(p, INF_E_FORMAT, "overlaps");
    st_file *f;
    inf_error err;
    cr_assert_neq(st_open(p, &f, &err), INF_OK);
    cr_assert(strstr(err.msg, "'a'") && strstr(err.msg, "'b'"), "%s", err.msg);
    /* One tensor nested inside another is an overlap too. */
    raw_file(p,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             x, 32);
    expect_open_fails(p, INF_E_FORMAT, "overlaps");
}

Test(safetensors, offsets_past_the_end) {
    char p[600];
    tmp_path(p, sizeof p, "end.safetensors");
    float x[4] = {0};
    raw_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4,20]}}", x, 16);
    expect_open_fails(p, INF_E_RANGE, "'w'");
    raw_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", x, 16);
    expect_open_fails(p, INF_E_FORMAT, "'w'");
    raw_file(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e300,1e300]}}", x, 16);
    expect_open_fails(p, INF_E_FORMAT, "data_offsets");
}

Test(safetensors, dtype_shape_size_mismatch) {
    char p[600];
    tmp_path(p, sizeof p, "sz.safetensors");
    float x[6] = {0};
    raw_file(p, "{\"m\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", x, 24);
    expect_open_fails(p, INF_E_SHAPE, "'m'");
    /* Known but unsupported dtypes are size-checked too. */
    raw_file(p, "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", x, 8);
    expect_open_fails(p, INF_E_SHAPE, "'d'");
    /* Element count overflow. */
    raw_file(p,
             "{\"o\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}",
             x, 8);
    expect_open_fails(p, INF_E_RANGE, "'o'");
}

Test(safetensors, unsupported_dtype_is_listed_but_not_usable) {
    char p[600];
    tmp_path(p, sizeof p, "dt.safetensors");
    double d[2] = {1, 2};
    unsigned char buf[20];
    memcpy(buf, d, 16);
    memcpy(buf + 16, "abcd", 4);
    raw_file(p,
             "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
             "\"n\":{\"dtype\":\"NEW4\",\"shape\":[8],\"data_offsets\":[16,20]}}",
             buf, 20);
    st_file *f;
    inf_error err;
    cr_assert_eq(st_open(p, &f, &err), INF_OK, "%s", err.msg);
    cr_assert(st_has(f, "d"));
    cr_assert_null(st_find(f, "d"));
    cr_assert_null(st_find(f, "n"));
    const inf_tensor *t;
    cr_assert_eq(st_require(f, "d", &t, &err), INF_E_UNSUPPORTED);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, "'d'") && strstr(err.msg, "F64"), "%s", err.msg);
    cr_assert_eq(st_require(f, "n", &t, &err), INF_E_UNSUPPORTED);
    cr_assert(strstr(err.msg, "NEW4"), "%s", err.msg);
    cr_assert_eq(st_require(f, "zz", &t, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, "'zz'"), "%s", err.msg);
    st_close(f);
}

/* ---- sharded directories --------------------------------------------------------------- */

static void write_shard(const char *path, const char *n1, const char *n2, float base) {
    static float data[2][8];
    st_writer *w;
    inf_error err;
    for (int i = 0; i < 8; i++) {
        data[0][i] = base + (float)i;
        data[1][i] = -base - (float)i;
    }
    cr_assert_eq(st_writer_new(&w, &err), INF_OK);
    cr_assert_eq(st_writer_add(w, n1, INF_DT_F32, 2, (int64_t[]){2, 4}, data[0], 32, &err), INF_OK);
    if (n2) cr_assert_eq(st_writer_add(w, n2, INF_DT_F32, 1, (int64_t[]){8}, data[1], 32, &err), INF_OK);
    cr_assert_eq(st_writer_write(w, path, &err), INF_OK, "%s", err.msg);
    st_writer_free(w);
}

Test(safetensors, sharded_directory) {
    char p[600], q[600], ix[600];
    write_shard(tmp_path(p, sizeof p, "model-00001-of-00002.safetensors"), "x", "y", 1);
    write_shard(tmp_path(q, sizeof q, "model-00002-of-00002.safetensors"), "z", NULL, 100);
    st_set *s;
    inf_error err;
    /* Without an index: every *.safetensors. */
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_set_n_files(s), 2);
    cr_assert_eq(((const float *)st_set_find(s, "z")->data)[3], 103.0f);
    cr_assert_eq(((const float *)st_set_find(s, "y")->data)[2], -3.0f);
    cr_assert_str_eq(st_path(st_set_which(s, "z")), q);
    cr_assert_null(st_set_find(s, "w"));
    const inf_tensor *t;
    cr_assert_eq(st_set_require(s, "w", &t, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, dir) && strstr(err.msg, "'w'"), "%s", err.msg);
    st_set_close(s);

    /* With an index: only the files it names (a stray file is ignored). */
    write_shard(tmp_path(p, sizeof p, "consolidated.safetensors"), "x", NULL, 7);
    const char *index =
        "{\"metadata\":{\"total_size\":96},\"weight_map\":{"
        "\"x\":\"model-00001-of-00002.safetensors\",\"y\":\"model-00001-of-00002.safetensors\","
        "\"z\":\"model-00002-of-00002.safetensors\"}}";
    tmp_path(ix, sizeof ix, "model.safetensors.index.json");
    cr_assert_eq(tu_write_file(ix, index, strlen(index)), 0);
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(st_set_n_files(s), 2);
    cr_assert_eq(((const float *)st_set_find(s, "x")->data)[0], 1.0f);
    st_set_close(s);

    /* Index pointing a tensor at the wrong shard. */
    const char *wrong = "{\"weight_map\":{\"x\":\"model-00002-of-00002.safetensors\","
                        "\"z\":\"model-00002-of-00002.safetensors\"}}";
    cr_assert_eq(tu_write_file(ix, wrong, strlen(wrong)), 0);
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, ix) && strstr(err.msg, "'x'"), "%s", err.msg);
    /* Index naming a missing shard. */
    const char *missing = "{\"weight_map\":{\"x\":\"model-00003-of-00003.safetensors\"}}";
    cr_assert_eq(tu_write_file(ix, missing, strlen(missing)), 0);
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_E_IO);
    cr_assert(strstr(err.msg, "model-00003-of-00003.safetensors"), "%s", err.msg);
    /* Index escaping the directory. */
    const char *esc = "{\"weight_map\":{\"x\":\"../evil.safetensors\"}}";
    cr_assert_eq(tu_write_file(ix, esc, strlen(esc)), 0);
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "evil"), "%s", err.msg);
    cr_assert_eq(unlink(ix), 0);

    /* Without the index the stray file duplicates 'x': named with both files. */
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_E_FORMAT);
    cr_assert(strstr(err.msg, "'x'") && strstr(err.msg, "consolidated.safetensors") &&
                  strstr(err.msg, "model-00001-of-00002.safetensors"),
              "%s", err.msg);
}

Test(safetensors, empty_directory) {
    char p[600];
    tmp_path(p, sizeof p, "x");
    st_set *s;
    inf_error err;
    cr_assert_eq(st_set_open_dir(dir, &s, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, dir) && strstr(err.msg, "safetensors"), "%s", err.msg);
}
