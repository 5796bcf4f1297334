/* test_kvstore.c — the worker's encrypted, crash-safe session KV store.
 *
 * If this fails, a user would see a chat that forgets or garbles earlier
 * turns (a reload that is not bit-exact, a truncation that keeps the wrong
 * positions), a worker killed mid-write that loses or corrupts a session, two
 * workers on one network volume that leave a mixed session behind, a wrong
 * key or an altered file accepted instead of refused, a stale session served
 * from the in-memory cache, or sessions that never expire.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv.h"
#include "kvstore.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------------- */

static inf_model_config mkcfg(int layers, int kv_heads, int head_dim) {
    inf_model_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = layers;
    c.n_heads = kv_heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = head_dim;
    c.dim = kv_heads * head_dim;
    return c;
}

/* 3 layers, kv_dim 16 */
static inf_model_config small_cfg(void) { return mkcfg(3, 2, 8); }

static void sid_of(char out[33], unsigned i) { snprintf(out, 33, "%032x", i + 0xabc000u); }

static void key_of(uint8_t k[32], unsigned i) {
    for (int j = 0; j < 32; j++) k[j] = (uint8_t)(i * 31 + j * 7 + 1);
}

/* A float with a full mantissa, determined by (tag, layer, K/V, pos, j). */
static float val(uint32_t tag, int l, int kind, int p, int j) {
    uint64_t x = ((uint64_t)tag << 32) ^ ((uint64_t)l << 24) ^ ((uint64_t)kind << 22) ^ ((uint64_t)p << 10) ^ (uint64_t)j;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (float)((double)(x >> 11) * 0x1p-53 * 8.0 - 4.0);
}

/* Truncates kv to `from` and writes rows [from, to) tagged `tag`. */
static int fill(inf_kv *kv, int from, int to, uint32_t tag) {
    inf_error e;
    inf_kv_truncate(kv, from);
    if (inf_kv_reserve(kv, to, &e)) return -1;
    for (int l = 0; l < kv->n_layers; l++)
        for (int p = from; p < to; p++)
            for (int j = 0; j < kv->kv_dim; j++) {
                kv->k[l][(size_t)p * kv->kv_dim + j] = val(tag, l, 0, p, j);
                kv->v[l][(size_t)p * kv->kv_dim + j] = val(tag, l, 1, p, j);
            }
    kv->len = to;
    return 0;
}

static int kv_equal(const inf_kv *a, const inf_kv *b) {
    if (a->len != b->len || a->n_layers != b->n_layers || a->kv_dim != b->kv_dim) return 0;
    size_t n = (size_t)a->len * a->kv_dim * sizeof(float);
    for (int l = 0; l < a->n_layers && n; l++)
        if (memcmp(a->k[l], b->k[l], n) || memcmp(a->v[l], b->v[l], n)) return 0;
    return 1;
}

static uint64_t kv_digest(const inf_kv *a) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)a->len;
    size_t n = (size_t)a->len * a->kv_dim * sizeof(float);
    for (int l = 0; l < a->n_layers; l++)
        for (int kind = 0; kind < 2; kind++) {
            const unsigned char *p = (const unsigned char *)(kind ? a->v[l] : a->k[l]);
            for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
        }
    return h;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}
static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* FNV-1a over the sorted names and contents of every file in a directory. */
static uint64_t dir_digest(const char *dir) {
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        for (const char *c = list[i]->d_name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        struct stat sb;
        if (list[i]->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            size_t len;
            char *d = tu_read_file(path, &len);
            for (size_t j = 0; d && j < len; j++) h = (h ^ (unsigned char)d[j]) * 1099511628211ull;
            free(d);
        }
        free(list[i]);
    }
    free(list);
    return h;
}

/* Names of the session's segment files (up to cap), returns the count. */
static int list_segs(const char *sdir, char names[][64], int cap) {
    DIR *d = opendir(sdir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (!strncmp(de->d_name, "seg-", 4)) {
            if (n < cap) snprintf(names[n], 64, "%s", de->d_name);
            n++;
        }
    if (d) closedir(d);
    return n;
}

static void flip_byte(const char *path, long off) {
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "open %s", path);
    struct stat sb;
    fstat(fd, &sb);
    if (off < 0) off += sb.st_size;
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x20;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static long fsize(const char *path) {
    struct stat sb;
    return stat(path, &sb) ? -1 : (long)sb.st_size;
}

typedef struct {
    char dir[512];
    kvs_store *s;
    inf_model_config cfg;
} fixture;

static void fx_open(fixture *f, int cache_sessions, int max_segments) {
    cr_assert_not_null(tu_tmpdir(f->dir, sizeof f->dir));
    strcat(f->dir, "/kv"); /* kvs_open creates it */
    kvs_options o;
    kvs_options_init(&o);
    o.cache_sessions = cache_sessions;
    if (max_segments) o.max_segments = max_segments;
    inf_error e;
    cr_assert_eq(kvs_open(&f->s, f->dir, &o, &e), INF_OK, "%s", e.msg);
    f->cfg = small_cfg();
}

static void fx_close(fixture *f) {
    kvs_close(f->s);
    char parent[512];
    snprintf(parent, sizeof parent, "%s", f->dir);
    *strrchr(parent, '/') = '\0';
    rm_rf(parent);
}

/* A store with no cache, so every load reads the files. */
static kvs_store *cold_store(const char *dir) {
    kvs_options o;
    kvs_options_init(&o);
    o.cache_sessions = 0;
    kvs_store *s;
    inf_error e;
    cr_assert_eq(kvs_open(&s, dir, &o, &e), INF_OK, "%s", e.msg);
    return s;
}

static void assert_loads(kvs_store *s, const char *sid, const uint8_t *key, const inf_model_config *cfg,
                         const inf_kv *want, uint64_t want_step) {
    inf_kv got;
    uint64_t step = 0;
    inf_error e;
    inf_status st = kvs_load(s, sid, key, cfg, 4096, &got, &step, &e);
    cr_assert_eq(st, INF_OK, "load: %s", e.msg);
    cr_assert_eq(got.len, want->len);
    cr_assert(kv_equal(&got, want), "reloaded state differs from the committed one");
    cr_assert_eq(step, want_step);
    inf_kv_free(&got);
}

/* ---- behaviour ----------------------------------------------------------------- */

Test(kvstore, round_trip_is_bit_exact) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 1);
    key_of(key, 1);
    inf_kv kv;
    inf_error e;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    cr_assert_eq(fill(&kv, 0, 10, 1), 0);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 7, &e), INF_OK, "%s", e.msg);
    assert_loads(f.s, sid, key, &f.cfg, &kv, 7); /* from the cache */
    kvs_store *cold = cold_store(f.dir);
    assert_loads(cold, sid, key, &f.cfg, &kv, 7); /* from the files */
    kvs_stats st;
    kvs_get_stats(cold, &st);
    cr_assert_eq(st.segments_read, 1);
    kvs_close(cold);
    /* the session directory is private */
    char sdir[600];
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    struct stat sb;
    cr_assert_eq(stat(sdir, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0700);
    /* an empty session round-trips too */
    char sid2[33];
    sid_of(sid2, 2);
    inf_kv empty;
    cr_assert_eq(inf_kv_init(&empty, &f.cfg, 4096, &e), INF_OK);
    cr_assert_eq(kvs_commit(f.s, sid2, key, &empty, 0, 1, &e), INF_OK, "%s", e.msg);
    cold = cold_store(f.dir);
    assert_loads(cold, sid2, key, &f.cfg, &empty, 1);
    kvs_close(cold);
    inf_kv_free(&empty);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, multi_step_append) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 3);
    key_of(key, 3);
    inf_error e;
    inf_kv want;
    cr_assert_eq(inf_kv_init(&want, &f.cfg, 4096, &e), INF_OK);
    fill(&want, 0, 5, 100); /* the prompt */
    cr_assert_eq(kvs_commit(f.s, sid, key, &want, 0, 1, &e), INF_OK, "%s", e.msg);
    for (int step = 2; step <= 21; step++) { /* one token per step, like decoding */
        inf_kv kv;
        uint64_t last;
        cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 4096, &kv, &last, &e), INF_OK, "%s", e.msg);
        cr_assert_eq(last, (uint64_t)step - 1);
        int pos = kv.len;
        fill(&kv, pos, pos + 1, 100 + (uint32_t)step);
        fill(&want, pos, pos + 1, 100 + (uint32_t)step);
        cr_assert_eq(kvs_commit(f.s, sid, key, &kv, pos, (uint64_t)step, &e), INF_OK, "%s", e.msg);
        inf_kv_free(&kv);
    }
    kvs_stats st;
    kvs_get_stats(f.s, &st);
    cr_assert_eq(st.full_writes, 1, "only the first commit writes everything, got %llu",
                 (unsigned long long)st.full_writes);
    cr_assert_eq(st.segments_read, 0, "a hot session is served from memory");
    kvs_store *cold = cold_store(f.dir);
    assert_loads(cold, sid, key, &f.cfg, &want, 21);
    kvs_close(cold);
    inf_kv_free(&want);
    fx_close(&f);
}

Test(kvstore, truncate_uses_segments_partially) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33], sdir[600];
    uint8_t key[32];
    sid_of(sid, 4);
    key_of(key, 4);
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 10, 1);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    fill(&kv, 10, 20, 2);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 10, 2, &e), INF_OK, "%s", e.msg);
    char before[8][64];
    cr_assert_eq(list_segs(sdir, before, 8), 2);
    uint64_t d0, d1;
    {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", sdir, before[0]);
        size_t n;
        char *b = tu_read_file(p, &n);
        d0 = n;
        for (size_t i = 0; i < n; i++) d0 = d0 * 31 + (unsigned char)b[i];
        free(b);
        snprintf(p, sizeof p, "%s/%s", sdir, before[1]);
        b = tu_read_file(p, &n);
        d1 = n;
        for (size_t i = 0; i < n; i++) d1 = d1 * 31 + (unsigned char)b[i];
        free(b);
    }
    /* a retry/rollback: the client says the new tokens start at 15 */
    fill(&kv, 15, 18, 3);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 15, 3, &e), INF_OK, "%s", e.msg);
    char after[8][64];
    cr_assert_eq(list_segs(sdir, after, 8), 3, "truncation must not rewrite old segments");
    /* old segments are byte-identical (nothing rewritten) */
    for (int i = 0; i < 2; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", sdir, before[i]);
        size_t n;
        char *b = tu_read_file(p, &n);
        cr_assert_not_null(b, "segment %s was removed", before[i]);
        uint64_t d = n;
        for (size_t j = 0; j < n; j++) d = d * 31 + (unsigned char)b[j];
        free(b);
        cr_assert_eq(d, i ? d1 : d0);
    }
    kvs_store *cold = cold_store(f.dir);
    assert_loads(cold, sid, key, &f.cfg, &kv, 3);
    /* truncate into the first segment, no new positions at all */
    inf_kv_truncate(&kv, 4);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 4, 4, &e), INF_OK, "%s", e.msg);
    assert_loads(cold, sid, key, &f.cfg, &kv, 4);
    cr_assert_eq(list_segs(sdir, after, 8), 1, "segments no manifest references are removed");
    /* and grow again from there */
    fill(&kv, 4, 9, 5);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 4, 5, &e), INF_OK, "%s", e.msg);
    assert_loads(cold, sid, key, &f.cfg, &kv, 5);
    kvs_close(cold);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, unknown_session_is_notfound) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 5);
    key_of(key, 5);
    inf_kv kv;
    inf_error e;
    cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 64, &kv, NULL, &e), INF_E_NOTFOUND);
    cr_assert_not_null(strstr(e.msg, sid), "message names the session: %s", e.msg);
    cr_assert_eq(kv.len, 0);
    inf_kv_free(&kv);
    /* malformed ids never reach the file system */
    cr_assert_eq(kvs_load(f.s, "../../etc/passwd", key, &f.cfg, 64, &kv, NULL, &e), INF_E_ARG);
    cr_assert_eq(kvs_load(f.s, "ABCDEF00000000000000000000000000", key, &f.cfg, 64, &kv, NULL, &e), INF_E_ARG);
    cr_assert_eq(kvs_forget(f.s, sid, &e), INF_OK, "forgetting an absent session is fine");
    fx_close(&f);
}

Test(kvstore, wrong_key_is_auth_and_changes_nothing) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33], sdir[600];
    uint8_t key[32], bad[32];
    sid_of(sid, 6);
    key_of(key, 6);
    key_of(bad, 7);
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 12, 9);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    uint64_t before = dir_digest(sdir);
    inf_kv got;
    /* the hot cache must not serve a wrong key either */
    cr_assert_eq(kvs_load(f.s, sid, bad, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH);
    cr_assert_not_null(strstr(e.msg, sid));
    cr_assert_not_null(strstr(e.msg, "manifest"), "message names the file: %s", e.msg);
    kvs_store *cold = cold_store(f.dir);
    cr_assert_eq(kvs_load(cold, sid, bad, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH);
    /* a commit under the wrong key writes nothing */
    inf_kv other;
    cr_assert_eq(inf_kv_init(&other, &f.cfg, 4096, &e), INF_OK);
    fill(&other, 0, 3, 10);
    cr_assert_eq(kvs_commit(f.s, sid, bad, &other, 0, 2, &e), INF_E_AUTH);
    cr_assert_eq(kvs_commit(cold, sid, bad, &other, 0, 2, &e), INF_E_AUTH);
    cr_assert_eq(dir_digest(sdir), before, "files changed after wrong-key calls");
    assert_loads(cold, sid, key, &f.cfg, &kv, 1);
    assert_loads(f.s, sid, key, &f.cfg, &kv, 1);
    kvs_close(cold);
    inf_kv_free(&other);
    inf_kv_free(&kv);
    fx_close(&f);
}

/* Every flipped byte — header, nonce, length, body, tag — is refused. */
static void tamper_case(const char *which) {
    fixture f;
    fx_open(&f, 0, 0);
    char sid[33], sdir[600];
    uint8_t key[32];
    sid_of(sid, 8);
    key_of(key, 8);
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 6, 1);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    fill(&kv, 6, 9, 2);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 6, 2, &e), INF_OK, "%s", e.msg);
    char segs[4][64], path[700];
    cr_assert_eq(list_segs(sdir, segs, 4), 2);
    if (!strcmp(which, "manifest")) snprintf(path, sizeof path, "%s/manifest", sdir);
    else snprintf(path, sizeof path, "%s/%s", sdir, segs[0]);
    long size = fsize(path);
    long offs[] = {0, 8, 12, 16, 27, 33, 39, 40, 41, size / 2, size - 17, size - 16, size - 1};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        flip_byte(path, offs[i]);
        inf_kv got;
        inf_status st = kvs_load(f.s, sid, key, &f.cfg, 4096, &got, NULL, &e);
        cr_assert_eq(st, INF_E_AUTH, "%s byte %ld flipped: got %s (%s)", which, offs[i], inf_strstatus(st), e.msg);
        cr_assert_not_null(strstr(e.msg, sid));
        cr_assert_not_null(strstr(e.msg, which[0] == 'm' ? "manifest" : segs[0]), "%s", e.msg);
        flip_byte(path, offs[i]);
    }
    /* truncated and extended files too */
    {
        size_t n;
        char *orig = tu_read_file(path, &n);
        cr_assert_eq(tu_write_file(path, orig, n - 1), 0);
        inf_kv got;
        cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH, "%s", e.msg);
        char *longer = malloc(n + 1);
        memcpy(longer, orig, n);
        longer[n] = 0;
        cr_assert_eq(tu_write_file(path, longer, n + 1), 0);
        cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH, "%s", e.msg);
        cr_assert_eq(tu_write_file(path, orig, n), 0);
        free(orig);
        free(longer);
    }
    /* a segment deleted outright: refused, naming it */
    if (which[0] == 's') {
        char away[800];
        snprintf(away, sizeof away, "%s.away", path);
        cr_assert_eq(rename(path, away), 0);
        inf_kv got;
        cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 4096, &got, NULL, &e), INF_E_FORMAT, "%s", e.msg);
        cr_assert_not_null(strstr(e.msg, segs[0]), "%s", e.msg);
        cr_assert_eq(rename(away, path), 0);
    }
    assert_loads(f.s, sid, key, &f.cfg, &kv, 2);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, tamper_segment_is_auth) { tamper_case("segment"); }
Test(kvstore, tamper_manifest_is_auth) { tamper_case("manifest"); }

Test(kvstore, swapped_files_are_auth) {
    fixture f;
    fx_open(&f, 0, 0);
    char a[33], b[33], adir[600], bdir[600];
    uint8_t key[32];
    sid_of(a, 10);
    sid_of(b, 11);
    key_of(key, 10); /* the same key for both: the AAD alone must catch it */
    snprintf(adir, sizeof adir, "%s/%s", f.dir, a);
    snprintf(bdir, sizeof bdir, "%s/%s", f.dir, b);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 4, 1);
    cr_assert_eq(kvs_commit(f.s, a, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    fill(&kv, 4, 8, 2);
    cr_assert_eq(kvs_commit(f.s, a, key, &kv, 4, 2, &e), INF_OK, "%s", e.msg);
    fill(&kv, 0, 4, 3);
    cr_assert_eq(kvs_commit(f.s, b, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    char as[4][64], bs[4][64], p[700], q[700];
    cr_assert_eq(list_segs(adir, as, 4), 2);
    cr_assert_eq(list_segs(bdir, bs, 1), 1);
    inf_kv got;
    /* A's segment copied over B's, keeping B's file name */
    snprintf(p, sizeof p, "%s/%s", adir, as[0]);
    snprintf(q, sizeof q, "%s/%s", bdir, bs[0]);
    size_t n;
    char *orig = tu_read_file(q, &n), *foreign = tu_read_file(p, &n);
    size_t on = 0;
    free(tu_read_file(q, &on));
    cr_assert_eq(tu_write_file(q, foreign, n), 0);
    inf_status st = kvs_load(f.s, b, key, &f.cfg, 4096, &got, NULL, &e);
    cr_assert_eq(st, INF_E_AUTH, "a segment from another session must not load: %s", e.msg);
    cr_assert_eq(tu_write_file(q, orig, on), 0);
    free(orig);
    free(foreign);
    /* A's manifest copied into B */
    snprintf(p, sizeof p, "%s/manifest", adir);
    snprintf(q, sizeof q, "%s/manifest", bdir);
    orig = tu_read_file(q, &on);
    foreign = tu_read_file(p, &n);
    cr_assert_eq(tu_write_file(q, foreign, n), 0);
    cr_assert_eq(kvs_load(f.s, b, key, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH, "%s", e.msg);
    cr_assert_eq(tu_write_file(q, orig, on), 0);
    free(orig);
    free(foreign);
    /* A's two segments swap names (positions) */
    char t[700];
    snprintf(p, sizeof p, "%s/%s", adir, as[0]);
    snprintf(q, sizeof q, "%s/%s", adir, as[1]);
    snprintf(t, sizeof t, "%s/tmpswap", adir);
    cr_assert_eq(rename(p, t), 0);
    cr_assert_eq(rename(q, p), 0);
    cr_assert_eq(rename(t, q), 0);
    cr_assert_eq(kvs_load(f.s, a, key, &f.cfg, 4096, &got, NULL, &e), INF_E_AUTH, "%s", e.msg);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, dims_mismatch_is_shape) {
    fixture f;
    fx_open(&f, 8, 0);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 12);
    key_of(key, 12);
    inf_error e;
    inf_kv kv, got;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 4, 1);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    inf_model_config more_layers = mkcfg(4, 2, 8), wider = mkcfg(3, 4, 8);
    cr_assert_eq(kvs_load(f.s, sid, key, &more_layers, 4096, &got, NULL, &e), INF_E_SHAPE);
    cr_assert_not_null(strstr(e.msg, sid));
    cr_assert_eq(kvs_load(f.s, sid, key, &wider, 4096, &got, NULL, &e), INF_E_SHAPE);
    /* a commit with other dims does not replace the session silently */
    inf_kv w;
    cr_assert_eq(inf_kv_init(&w, &wider, 4096, &e), INF_OK);
    fill(&w, 0, 2, 5);
    cr_assert_eq(kvs_commit(f.s, sid, key, &w, 0, 2, &e), INF_E_SHAPE);
    /* more positions than the caller's context */
    cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 3, &got, NULL, &e), INF_E_RANGE);
    assert_loads(f.s, sid, key, &f.cfg, &kv, 1);
    inf_kv_free(&w);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, gc_removes_only_expired_sessions) {
    fixture f;
    fx_open(&f, 8, 0);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 3, 1);
    char sid[3][33];
    uint8_t key[32];
    key_of(key, 13);
    for (unsigned i = 0; i < 3; i++) {
        sid_of(sid[i], 20 + i);
        cr_assert_eq(kvs_commit(f.s, sid[i], key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    }
    time_t now = time(NULL);
    /* session 0 was last committed two hours ago; session 1 too but it is being committed */
    for (int i = 0; i < 2; i++) {
        char mp[700];
        snprintf(mp, sizeof mp, "%s/%s/manifest", f.dir, sid[i]);
        struct timespec ts[2] = {{now - 7200, 0}, {now - 7200, 0}};
        cr_assert_eq(utimensat(AT_FDCWD, mp, ts, 0), 0);
    }
    char lp[700];
    snprintf(lp, sizeof lp, "%s/%s/lock", f.dir, sid[1]);
    int lfd = open(lp, O_RDWR);
    cr_assert(lfd >= 0);
    cr_assert_eq(flock(lfd, LOCK_EX), 0);
    int removed = -1;
    cr_assert_eq(kvs_gc(f.s, now, &removed, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(removed, 1);
    inf_kv got;
    cr_assert_eq(kvs_load(f.s, sid[0], key, &f.cfg, 4096, &got, NULL, &e), INF_E_NOTFOUND, "%s", e.msg);
    assert_loads(f.s, sid[2], key, &f.cfg, &kv, 1);
    close(lfd); /* the commit is over: now it may go */
    cr_assert_eq(kvs_gc(f.s, now, &removed, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(removed, 1);
    cr_assert_eq(kvs_load(f.s, sid[1], key, &f.cfg, 4096, &got, NULL, &e), INF_E_NOTFOUND);
    assert_loads(f.s, sid[2], key, &f.cfg, &kv, 1);
    /* an hour and a bit later everything is gone, directories included */
    cr_assert_eq(kvs_gc(f.s, now + 3700, &removed, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(removed, 1);
    char sdir[700];
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid[2]);
    cr_assert_neq(access(sdir, F_OK), 0);
    /* a removed session can start over */
    cr_assert_eq(kvs_commit(f.s, sid[2], key, &kv, 0, 9, &e), INF_OK, "%s", e.msg);
    assert_loads(f.s, sid[2], key, &f.cfg, &kv, 9);
    cr_assert_eq(kvs_forget(f.s, sid[2], &e), INF_OK);
    cr_assert_eq(kvs_load(f.s, sid[2], key, &f.cfg, 4096, &got, NULL, &e), INF_E_NOTFOUND);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, cache_serves_hot_sessions_and_never_stale_ones) {
    fixture f;
    fx_open(&f, 2, 0);
    char sid[33], sdir[600], hidden[600];
    uint8_t key[32];
    sid_of(sid, 30);
    key_of(key, 30);
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 8, 1);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    /* Hide the segments: a hot load must not need them (we run as root in CI,
     * so moving them away is the honest "unreadable"). */
    snprintf(hidden, sizeof hidden, "%s.hidden", sdir);
    cr_assert_eq(mkdir(hidden, 0700), 0);
    char segs[4][64], p[700], q[700];
    int n = list_segs(sdir, segs, 4);
    cr_assert_eq(n, 1);
    snprintf(p, sizeof p, "%s/%s", sdir, segs[0]);
    snprintf(q, sizeof q, "%s/%s", hidden, segs[0]);
    cr_assert_eq(rename(p, q), 0);
    assert_loads(f.s, sid, key, &f.cfg, &kv, 1);
    kvs_stats st;
    kvs_get_stats(f.s, &st);
    cr_assert_eq(st.cache_hits, 1);
    cr_assert_eq(st.segments_read, 0);
    cr_assert_eq(rename(q, p), 0);
    rmdir(hidden);
    /* another worker (another store) commits a different state */
    kvs_store *other = cold_store(f.dir);
    inf_kv kv2;
    cr_assert_eq(inf_kv_init(&kv2, &f.cfg, 4096, &e), INF_OK);
    fill(&kv2, 0, 8, 2); /* same length: only the content (and the step) differs */
    cr_assert_eq(kvs_commit(other, sid, key, &kv2, 0, 1, &e), INF_E_STALE, "a commit of a step already stored must be refused");
    cr_assert_eq(kvs_commit(other, sid, key, &kv2, 0, 2, &e), INF_OK, "%s", e.msg);
    assert_loads(f.s, sid, key, &f.cfg, &kv2, 2);
    kvs_get_stats(f.s, &st);
    cr_assert_eq(st.segments_read, 1, "the stale cache entry must be bypassed");
    /* The other worker moves on meanwhile; this store's commit must then write
     * its whole state, not graft its new row onto a prefix it never saw. */
    fill(&kv, 8, 9, 3);
    fill(&kv2, 8, 10, 4);
    cr_assert_eq(kvs_commit(other, sid, key, &kv2, 8, 3, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 8, 4, &e), INF_OK, "%s", e.msg);
    assert_loads(other, sid, key, &f.cfg, &kv, 4); /* exactly kv, not kv2's prefix + kv's row */
    /* evictions: three sessions through a two-entry cache still load right */
    inf_kv k3;
    cr_assert_eq(inf_kv_init(&k3, &f.cfg, 4096, &e), INF_OK);
    for (unsigned i = 0; i < 3; i++) {
        char s2[33];
        sid_of(s2, 40 + i);
        fill(&k3, 0, 2 + (int)i, 50 + i);
        cr_assert_eq(kvs_commit(f.s, s2, key, &k3, 0, 1, &e), INF_OK, "%s", e.msg);
    }
    for (unsigned i = 0; i < 3; i++) {
        char s2[33];
        sid_of(s2, 40 + i);
        fill(&k3, 0, 2 + (int)i, 50 + i);
        assert_loads(f.s, s2, key, &f.cfg, &k3, 1);
    }
    kvs_close(other);
    inf_kv_free(&k3);
    inf_kv_free(&kv2);
    inf_kv_free(&kv);
    fx_close(&f);
}

Test(kvstore, compaction_keeps_content) {
    fixture f;
    fx_open(&f, 8, 4);
    char sid[33], sdir[600];
    uint8_t key[32];
    sid_of(sid, 50);
    key_of(key, 50);
    snprintf(sdir, sizeof sdir, "%s/%s", f.dir, sid);
    inf_error e;
    inf_kv kv;
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    int len = 0;
    for (int step = 1; step <= 23; step++) {
        int from = (step % 6 == 0) ? len - 2 : len; /* an occasional rollback */
        fill(&kv, from, from + 3, (uint32_t)step);
        cr_assert_eq(kvs_commit(f.s, sid, key, &kv, from, (uint64_t)step, &e), INF_OK, "%s", e.msg);
        len = kv.len;
        char segs[16][64];
        cr_assert_leq(list_segs(sdir, segs, 16), 4);
    }
    kvs_stats st;
    kvs_get_stats(f.s, &st);
    cr_assert_geq(st.full_writes, 3, "compaction happened (%llu full writes)", (unsigned long long)st.full_writes);
    kvs_store *cold = cold_store(f.dir);
    assert_loads(cold, sid, key, &f.cfg, &kv, 23);
    kvs_close(cold);
    inf_kv_free(&kv);
    fx_close(&f);
}

/* ---- crash safety: SIGKILL during commits ------------------------------------------ */

/* The deterministic history the child follows: at step s it truncates to
 * from(s) and appends n(s) positions tagged s. */
#define CR_LAYERS 4
#define CR_KVH 4
#define CR_HD 16 /* kv_dim 64: 2 KiB per position over all layers, K and V */
#define CR_MAX 2400
static void crash_plan(uint64_t s, int prev_len, int *from, int *to) {
    uint64_t h = s * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    int n = 32 + (int)(h % 200); /* 64-464 KiB segments */
    int f = (s % 5 == 0) ? prev_len / 2 : prev_len;
    if (f + n > CR_MAX) f = (int)(h % 16);
    *from = f;
    *to = f + n;
}

static void crash_expected(inf_kv *kv, uint64_t step) {
    inf_kv_truncate(kv, 0);
    for (uint64_t s = 1; s <= step; s++) {
        int from, to;
        crash_plan(s, kv->len, &from, &to);
        fill(kv, from, to, (uint32_t)s);
    }
}

static void crash_child(const char *dir, const char *sid, const uint8_t *key, int wfd) {
    inf_model_config cfg = mkcfg(CR_LAYERS, CR_KVH, CR_HD);
    kvs_store *s;
    inf_error e;
    if (kvs_open(&s, dir, NULL, &e)) _exit(3);
    inf_kv kv;
    uint64_t step = 0;
    inf_status st = kvs_load(s, sid, key, &cfg, CR_MAX + 500, &kv, &step, &e);
    if (st == INF_E_NOTFOUND) {
        if (inf_kv_init(&kv, &cfg, CR_MAX + 500, &e)) _exit(4);
    } else if (st) {
        fprintf(stderr, "child load: %s\n", e.msg);
        _exit(5);
    }
    for (;;) {
        step++;
        int from, to;
        crash_plan(step, kv.len, &from, &to);
        if (fill(&kv, from, to, (uint32_t)step)) _exit(6);
        if (kvs_commit(s, sid, key, &kv, from, step, &e)) {
            fprintf(stderr, "child commit: %s\n", e.msg);
            _exit(7);
        }
        if (write(wfd, &step, sizeof step) != sizeof step) _exit(8);
    }
}

Test(kvstore, crash_sigkill_leaves_old_or_new_state, .timeout = 600) {
    char tmp[512], dir[600], sid[33];
    cr_assert_not_null(tu_tmpdir(tmp, sizeof tmp));
    snprintf(dir, sizeof dir, "%s/kv", tmp);
    uint8_t key[32];
    sid_of(sid, 60);
    key_of(key, 60);
    inf_model_config cfg = mkcfg(CR_LAYERS, CR_KVH, CR_HD);
    inf_kv want;
    inf_error e;
    cr_assert_eq(inf_kv_init(&want, &cfg, CR_MAX + 500, &e), INF_OK);
    uint64_t reported = 0; /* the last step a child said was committed */
    int kills_mid_run = 0;
    srand(12345);
    /* 50 kills at least; on a loaded machine the children commit less per
     * delay, so go on (up to 500 kills) until 50 steps were committed. */
    int it;
    for (it = 0; it < 50 || (reported < 50 && it < 500); it++) {
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            crash_child(dir, sid, key, pfd[1]);
        }
        close(pfd[1]);
        /* delays from 0 to ~60 ms, in microseconds, so kills land anywhere */
        int us = (it % 10 == 0) ? 0 : rand() % 60000;
        usleep((useconds_t)us);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child failed on its own (exit %d): a load or commit error",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        uint64_t v;
        uint64_t before = reported;
        while (read(pfd[0], &v, sizeof v) == sizeof v) reported = v;
        close(pfd[0]);
        if (reported == before) kills_mid_run++;
        kvs_store *fresh = cold_store(dir);
        inf_kv got;
        uint64_t step = 0;
        inf_status st = kvs_load(fresh, sid, key, &cfg, CR_MAX + 500, &got, &step, &e);
        if (st == INF_E_NOTFOUND) {
            cr_assert_eq(reported, 0, "iteration %d: committed step %llu lost", it, (unsigned long long)reported);
        } else {
            cr_assert_eq(st, INF_OK, "iteration %d: load after SIGKILL: %s", it, e.msg);
            cr_assert(step == reported || step == reported + 1,
                      "iteration %d: loaded step %llu, the child reported %llu", it, (unsigned long long)step,
                      (unsigned long long)reported);
            crash_expected(&want, step);
            cr_assert(kv_equal(&got, &want), "iteration %d: state of step %llu is not exactly that step's", it,
                      (unsigned long long)step);
            reported = step; /* the next child continues from what is on disk */
            inf_kv_free(&got);
        }
        kvs_close(fresh);
        /* garbage stays bounded: at most the live segments plus one dead one */
        char sdir[700], segs[8][64];
        snprintf(sdir, sizeof sdir, "%s/%s", dir, sid);
        cr_assert_leq(list_segs(sdir, segs, 8), 66);
    }
    cr_log_info("crash test: %d kills, %llu steps committed in all, %d kills before the child's first commit", it,
                (unsigned long long)reported, kills_mid_run);
    cr_assert_geq(reported, 50, "too few commits to mean anything (%llu)", (unsigned long long)reported);
    inf_kv_free(&want);
    rm_rf(tmp);
}

/* Deterministic fault injection (SQLite-style): a child commits and kills
 * itself at the n-th file-system step, for every n until the commit gets
 * through. After each death a fresh store must load exactly the old state or
 * exactly the new one, and a later commit must still work. */
typedef struct {
    const char *name;
    int pre_steps;    /* commits of 5 positions each before the one under test */
    int from, to;     /* the commit under test: truncate to from, append to `to` */
    int max_segments; /* 0: default */
} crash_scenario;

static void pre_state(inf_kv *kv, const crash_scenario *sc) {
    inf_kv_truncate(kv, 0);
    for (int i = 0; i < sc->pre_steps; i++) fill(kv, 5 * i, 5 * i + 5, (uint32_t)i + 1);
}

static kvs_store *store_with(const char *dir, int cache, int max_segments) {
    kvs_options o;
    kvs_options_init(&o);
    o.cache_sessions = cache;
    if (max_segments) o.max_segments = max_segments;
    kvs_store *s;
    inf_error e;
    if (kvs_open(&s, dir, &o, &e)) return NULL;
    return s;
}

Test(kvstore, crash_at_every_step, .timeout = 300) {
    static const crash_scenario scs[] = {
        {"first commit", 0, 0, 12, 0},
        {"append", 2, 10, 14, 0},
        {"truncate into a segment and append", 3, 7, 9, 0},
        {"truncate only", 3, 7, 7, 0},
        {"compaction", 3, 15, 40, 3},
    };
    char tmp[512], dir[600], sid[33];
    cr_assert_not_null(tu_tmpdir(tmp, sizeof tmp));
    snprintf(dir, sizeof dir, "%s/kv", tmp);
    uint8_t key[32];
    sid_of(sid, 65);
    key_of(key, 65);
    inf_model_config cfg = small_cfg();
    inf_error e;
    inf_kv old, neu, got;
    cr_assert_eq(inf_kv_init(&old, &cfg, 4096, &e), INF_OK);
    cr_assert_eq(inf_kv_init(&neu, &cfg, 4096, &e), INF_OK);
    for (size_t k = 0; k < sizeof scs / sizeof scs[0]; k++) {
        const crash_scenario *sc = &scs[k];
        pre_state(&old, sc);
        pre_state(&neu, sc);
        fill(&neu, sc->from, sc->to, 99);
        int saw_old = 0, saw_new = 0, n;
        for (n = 1; n < 1000; n++) {
            rm_rf(dir);
            kvs_store *p = store_with(dir, 0, sc->max_segments);
            cr_assert_not_null(p);
            inf_kv tmpkv;
            cr_assert_eq(inf_kv_init(&tmpkv, &cfg, 4096, &e), INF_OK);
            for (int i = 0; i < sc->pre_steps; i++) {
                fill(&tmpkv, 5 * i, 5 * i + 5, (uint32_t)i + 1);
                cr_assert_eq(kvs_commit(p, sid, key, &tmpkv, 5 * i, (uint64_t)i + 1, &e), INF_OK, "%s", e.msg);
            }
            inf_kv_free(&tmpkv);
            kvs_close(p);
            pid_t pid = fork();
            cr_assert(pid >= 0);
            if (pid == 0) {
                kvs_store *c = store_with(dir, 8, sc->max_segments);
                inf_kv kv;
                if (!c) _exit(3);
                inf_status st = kvs_load(c, sid, key, &cfg, 4096, &kv, NULL, &e);
                if (st == INF_E_NOTFOUND) st = inf_kv_init(&kv, &cfg, 4096, &e);
                if (st) _exit(4);
                fill(&kv, sc->from, sc->to, 99);
                kvs_debug_crash_at(n);
                st = kvs_commit(c, sid, key, &kv, sc->from, 100, &e);
                kvs_debug_crash_at(0);
                _exit(st ? 5 : 0);
            }
            int status;
            waitpid(pid, &status, 0);
            int survived = WIFEXITED(status);
            if (survived) cr_assert_eq(WEXITSTATUS(status), 0, "%s: the commit failed without a crash", sc->name);
            else cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
            kvs_store *fresh = store_with(dir, 0, sc->max_segments);
            uint64_t step = 0;
            inf_status st = kvs_load(fresh, sid, key, &cfg, 4096, &got, &step, &e);
            if (st == INF_E_NOTFOUND && sc->pre_steps == 0) {
                cr_assert(!survived, "%s: a completed commit is missing", sc->name);
                saw_old = 1;
            } else {
                cr_assert_eq(st, INF_OK, "%s, crash at step %d: %s", sc->name, n, e.msg);
                if (step == 100) {
                    cr_assert(kv_equal(&got, &neu), "%s, crash at step %d: the new step holds other data", sc->name, n);
                    saw_new = 1;
                } else {
                    cr_assert(!survived, "%s: a completed commit is missing", sc->name);
                    cr_assert_eq(step, (uint64_t)sc->pre_steps, "%s, crash at step %d", sc->name, n);
                    cr_assert(kv_equal(&got, &old), "%s, crash at step %d: the old step holds other data", sc->name, n);
                    saw_old = 1;
                }
                inf_kv_free(&got);
            }
            /* life goes on after the crash: the next commit works and cleans up */
            inf_kv next;
            cr_assert_eq(inf_kv_init(&next, &cfg, 4096, &e), INF_OK);
            fill(&next, 0, 3, 7);
            cr_assert_eq(kvs_commit(fresh, sid, key, &next, 0, 101, &e), INF_OK, "%s", e.msg);
            assert_loads(fresh, sid, key, &cfg, &next, 101);
            char sdir[700], segs[8][64];
            snprintf(sdir, sizeof sdir, "%s/%s", dir, sid);
            cr_assert_eq(list_segs(sdir, segs, 8), 1, "%s: garbage left after a crash at step %d", sc->name, n);
            inf_kv_free(&next);
            kvs_close(fresh);
            if (survived) break;
        }
        cr_assert(saw_old && saw_new, "%s: the sweep must see both outcomes", sc->name);
        cr_log_info("crash sweep '%s': %d crash points", sc->name, n - 1);
    }
    inf_kv_free(&old);
    inf_kv_free(&neu);
    rm_rf(tmp);
}

/* ---- concurrency ---------------------------------------------------------------------- */

/* Each writer loads whatever is there, truncates somewhere, appends its own
 * rows and commits; it logs (step, digest of the state it committed). */
static void race_child(const char *dir, const char *sid, const uint8_t *key, int writer, const char *log,
                       double seconds, int *shared_foreign) {
    inf_model_config cfg = small_cfg();
    kvs_store *s;
    inf_error e;
    if (kvs_open(&s, dir, NULL, &e)) _exit(3);
    FILE *lf = fopen(log, "w");
    if (!lf) _exit(4);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned seed = (unsigned)writer * 7919u + 1;
    for (uint64_t i = 1;; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9;
        /* on a busy machine the writers run in bursts: go on (up to 5x) until
         * one of them has built on the other's state */
        if (el > seconds && (__atomic_load_n(shared_foreign, __ATOMIC_SEQ_CST) || el > 5 * seconds)) break;
        inf_kv kv;
        uint64_t last = 0;
        inf_status st = kvs_load(s, sid, key, &cfg, 4096, &kv, &last, &e);
        if (st == INF_E_NOTFOUND) {
            if (inf_kv_init(&kv, &cfg, 4096, &e)) _exit(5);
        } else if (st) {
            fprintf(stderr, "writer %d load: %s\n", writer, e.msg);
            _exit(6);
        }
        int from = kv.len ? (int)(rand_r(&seed) % (unsigned)(kv.len + 1)) : 0;
        if (from > 300) from = 0;
        int n = 1 + (int)(rand_r(&seed) % 20);
        /* One client's steps only grow: the next after what was loaded, the
         * writer in the low bit. When both build on the same state, the
         * second commit is refused as stale (nothing written). */
        uint64_t step = (((last >> 1) + 1) << 1) | (uint64_t)(writer - 1);
        fill(&kv, from, from + n, (uint32_t)step);
        /* now and then hold the loaded state a while, as a slow forward pass
         * would: the other writer commits meanwhile, this commit is refused,
         * and the next round builds on the other's state */
        if (rand_r(&seed) % 4 == 0) usleep(5000);
        st = kvs_commit(s, sid, key, &kv, from, step, &e);
        if (st == INF_E_STALE) { /* lost the race: load the winner's state and build on it */
            inf_kv_free(&kv);
            continue;
        }
        if (st) {
            fprintf(stderr, "writer %d commit: %s\n", writer, e.msg);
            _exit(7);
        }
        int other = last && (last & 1) != (uint64_t)(writer - 1); /* built on the other writer's state */
        if (other) __atomic_fetch_add(shared_foreign, 1, __ATOMIC_SEQ_CST);
        fprintf(lf, "%llu %llu %d\n", (unsigned long long)step, (unsigned long long)kv_digest(&kv), other);
        fflush(lf);
        inf_kv_free(&kv);
        /* jitter: without it the two writers phase-lock, each loading while
         * the other commits, and never build on each other's states */
        usleep(rand_r(&seed) % 2000);
    }
    fclose(lf);
    kvs_close(s);
    _exit(0);
}

Test(kvstore, two_processes_one_session, .timeout = 300) {
    char tmp[512], dir[600], sid[33], logs[2][700];
    cr_assert_not_null(tu_tmpdir(tmp, sizeof tmp));
    snprintf(dir, sizeof dir, "%s/kv", tmp);
    uint8_t key[32];
    sid_of(sid, 70);
    key_of(key, 70);
    pid_t pids[2];
    int *shared = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(shared != MAP_FAILED);
    *shared = 0;
    for (int w = 0; w < 2; w++) {
        snprintf(logs[w], sizeof logs[w], "%s/writer%d.log", tmp, w + 1);
        pids[w] = fork();
        cr_assert(pids[w] >= 0);
        if (pids[w] == 0) race_child(dir, sid, key, w + 1, logs[w], 2.0, shared);
    }
    for (int w = 0; w < 2; w++) {
        int status;
        waitpid(pids[w], &status, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed (status %d)", w + 1, status);
    }
    /* every committed (step, digest), and each writer's last step */
    uint64_t *steps = NULL, *digs = NULL, last[2] = {0, 0};
    size_t n = 0, cap = 0;
    int n_foreign = 0;
    for (int w = 0; w < 2; w++) {
        FILE *lf = fopen(logs[w], "r");
        cr_assert_not_null(lf);
        unsigned long long a, b;
        int foreign;
        while (fscanf(lf, "%llu %llu %d", &a, &b, &foreign) == 3) {
            n_foreign += foreign;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                steps = realloc(steps, cap * sizeof *steps);
                digs = realloc(digs, cap * sizeof *digs);
            }
            steps[n] = a;
            digs[n++] = b;
            last[w] = a;
        }
        fclose(lf);
        cr_assert_gt(last[w], 0, "writer %d never committed", w + 1);
    }
    cr_assert_gt(n_foreign, 0, "the writers never saw each other's states: no race was tested");
    kvs_store *fresh = cold_store(dir);
    inf_model_config cfg = small_cfg();
    inf_kv got;
    uint64_t step;
    inf_error e;
    cr_assert_eq(kvs_load(fresh, sid, key, &cfg, 4096, &got, &step, &e), INF_OK, "%s", e.msg);
    cr_assert(step == last[0] || step == last[1], "the final state (step %llu) is neither writer's last commit",
              (unsigned long long)step);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (steps[i] == step) found = digs[i] == kv_digest(&got);
    cr_assert(found, "the final state is not exactly the state committed as step %llu", (unsigned long long)step);
    uint64_t newest = 0;
    for (size_t i = 0; i < n; i++)
        if (steps[i] > newest) newest = steps[i];
    cr_assert_eq(step, newest, "the session was rolled back: step %llu stored, %llu was committed",
                 (unsigned long long)step, (unsigned long long)newest);
    cr_log_info("two writers: %zu commits, last steps %llu and %llu, %d built on the other's state", n,
                (unsigned long long)last[0], (unsigned long long)last[1], n_foreign);
    inf_kv_free(&got);
    kvs_close(fresh);
    free(steps);
    free(digs);
    munmap(shared, sizeof(int));
    rm_rf(tmp);
}

typedef struct {
    kvs_store *s;
    int thread;
    int failures;
    char msg[600];
} th_arg;

#define TH_THREADS 8
#define TH_SESSIONS 32
#define TH_ROUNDS 6

static void th_want(inf_kv *kv, unsigned sess, int rounds) {
    inf_kv_truncate(kv, 0);
    for (int r = 0; r < rounds; r++) {
        int from = (r == 3) ? kv->len - 2 : kv->len;
        fill(kv, from, from + 3 + (int)(sess % 5), sess * 100 + (uint32_t)r);
    }
}

static void *th_main(void *p) {
    th_arg *a = p;
    inf_model_config cfg = small_cfg();
    inf_error e;
    for (int r = 0; r < TH_ROUNDS; r++)
        for (unsigned sess = (unsigned)a->thread; sess < TH_SESSIONS; sess += TH_THREADS) {
            char sid[33];
            uint8_t key[32];
            sid_of(sid, 100 + sess);
            key_of(key, 100 + sess);
            inf_kv kv;
            uint64_t last = 0;
            inf_status st = kvs_load(a->s, sid, key, &cfg, 4096, &kv, &last, &e);
            if (st == INF_E_NOTFOUND && r == 0) st = inf_kv_init(&kv, &cfg, 4096, &e);
            if (st || (r && last != (uint64_t)r)) {
                a->failures++;
                snprintf(a->msg, sizeof a->msg, "session %u round %d: %s", sess, r, st ? e.msg : "wrong step");
                return NULL;
            }
            int from = (r == 3) ? kv.len - 2 : kv.len;
            fill(&kv, from, from + 3 + (int)(sess % 5), sess * 100 + (uint32_t)r);
            if (kvs_commit(a->s, sid, key, &kv, from, (uint64_t)r + 1, &e)) {
                a->failures++;
                snprintf(a->msg, sizeof a->msg, "session %u round %d commit: %s", sess, r, e.msg);
            }
            inf_kv_free(&kv);
        }
    return NULL;
}

Test(kvstore, threads_32_sessions_isolated, .timeout = 300) {
    fixture f;
    fx_open(&f, 8, 0); /* fewer cache slots than sessions: evictions under load */
    pthread_t th[TH_THREADS];
    th_arg args[TH_THREADS];
    for (int i = 0; i < TH_THREADS; i++) {
        args[i] = (th_arg){.s = f.s, .thread = i};
        cr_assert_eq(pthread_create(&th[i], NULL, th_main, &args[i]), 0);
    }
    for (int i = 0; i < TH_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0, "thread %d: %s", i, args[i].msg);
    }
    kvs_store *cold = cold_store(f.dir);
    inf_kv want;
    inf_error e;
    cr_assert_eq(inf_kv_init(&want, &f.cfg, 4096, &e), INF_OK);
    for (unsigned sess = 0; sess < TH_SESSIONS; sess++) {
        char sid[33];
        uint8_t key[32];
        sid_of(sid, 100 + sess);
        key_of(key, 100 + sess);
        th_want(&want, sess, TH_ROUNDS);
        assert_loads(cold, sid, key, &f.cfg, &want, TH_ROUNDS);
        assert_loads(f.s, sid, key, &f.cfg, &want, TH_ROUNDS);
    }
    kvs_close(cold);
    inf_kv_free(&want);
    fx_close(&f);
}

/* ---- timing for a SmolLM2-135M-sized session (30 layers, kv_dim 192) ------------------- */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

Test(kvstore, timing_smollm2_sized_session, .timeout = 300) {
    fixture f;
    fx_open(&f, 8, 0);
    inf_model_config cfg = mkcfg(30, 3, 64);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 80);
    key_of(key, 80);
    inf_error e;
    inf_kv kv, got;
    cr_assert_eq(inf_kv_init(&kv, &cfg, 2048, &e), INF_OK);
    fill(&kv, 0, 512, 1);
    double t0 = now_ms();
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    double t_full = now_ms() - t0;
    kvs_store *cold = cold_store(f.dir);
    t0 = now_ms();
    cr_assert_eq(kvs_load(cold, sid, key, &cfg, 2048, &got, NULL, &e), INF_OK, "%s", e.msg);
    double t_cold = now_ms() - t0;
    cr_assert(kv_equal(&got, &kv));
    inf_kv_free(&got);
    t0 = now_ms();
    cr_assert_eq(kvs_load(f.s, sid, key, &cfg, 2048, &got, NULL, &e), INF_OK, "%s", e.msg);
    double t_hot = now_ms() - t0;
    inf_kv_free(&got);
    /* decoding: 16 steps of load (hot) + append one position + commit */
    double t_tok = 0, t_step = 0;
    for (int i = 0; i < 16; i++) {
        double t1 = now_ms();
        inf_kv_free(&kv);
        cr_assert_eq(kvs_load(f.s, sid, key, &cfg, 2048, &kv, NULL, &e), INF_OK, "%s", e.msg);
        fill(&kv, 512 + i, 513 + i, 2 + (uint32_t)i);
        t0 = now_ms();
        cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 512 + i, 2 + (uint64_t)i, &e), INF_OK, "%s", e.msg);
        t_tok += (now_ms() - t0) / 16;
        t_step += (now_ms() - t1) / 16;
    }
    cr_assert_eq(kvs_load(cold, sid, key, &cfg, 2048, &got, NULL, &e), INF_OK, "%s", e.msg);
    cr_assert(kv_equal(&got, &kv));
    inf_kv_free(&got);
    double mb = 30.0 * 192 * 512 * 8 / 1048576.0;
    fprintf(stderr,
            "kvstore timing (30 layers x kv_dim 192 x 512 positions = %.1f MiB f32): commit all %.1f ms, "
            "load cold %.1f ms, load hot (cache) %.1f ms; per decoded token: commit %.2f ms, hot load + commit %.1f ms\n",
            mb, t_full, t_cold, t_hot, t_tok, t_step);
    kvs_close(cold);
    inf_kv_free(&kv);
    fx_close(&f);
}

/* ---- checkout / release: the request path's no-copy loads -------------------- */

/* Decoding through checkout/commit/release: every load after the first is a
 * lend (no copy), the state is always the committed one (checked against a
 * cold store reading the disk), compaction included (max_segments 4). */
Test(kvstore, checkout_lends_without_copy_and_stays_exact) {
    fixture f;
    fx_open(&f, 2, 4);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 70);
    key_of(key, 70);
    inf_error e;
    inf_kv want, kv;
    cr_assert_eq(inf_kv_init(&want, &f.cfg, 4096, &e), INF_OK);
    cr_assert_eq(inf_kv_init(&kv, &f.cfg, 4096, &e), INF_OK);
    fill(&kv, 0, 5, 1);
    fill(&want, 0, 5, 1);
    cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 0, 1, &e), INF_OK, "%s", e.msg);
    kvs_release(f.s, sid, &kv); /* a new session's kv: freed */
    cr_assert_null(kv.k);
    kvs_store *cold = cold_store(f.dir);
    for (int step = 2; step <= 12; step++) {
        uint64_t last = 0;
        cr_assert_eq(kvs_checkout(f.s, sid, key, &f.cfg, 4096, &kv, &last, &e), INF_OK, "%s", e.msg);
        cr_assert_eq(last, (uint64_t)step - 1);
        cr_assert(kv_equal(&kv, &want), "step %d: the lent state differs from the committed one", step);
        fill(&kv, 3 + step, 4 + step, 100 + (uint32_t)step); /* truncate by one, append two */
        fill(&want, 3 + step, 4 + step, 100 + (uint32_t)step);
        cr_assert_eq(kvs_commit(f.s, sid, key, &kv, 3 + step, (uint64_t)step, &e), INF_OK, "%s", e.msg);
        kvs_release(f.s, sid, &kv);
        assert_loads(cold, sid, key, &f.cfg, &want, (uint64_t)step);
    }
    kvs_stats st;
    kvs_get_stats(f.s, &st);
    cr_assert_geq(st.lends, 10, "only %llu of 11 checkouts were served without a copy", (unsigned long long)st.lends);
    /* A plain load after all that still copies and still matches. */
    assert_loads(f.s, sid, key, &f.cfg, &want, 12);
    kvs_close(cold);
    inf_kv_free(&want);
    fx_close(&f);
}

/* A request that fails after checkout (no commit) must not leave its
 * half-computed rows in the cache: the next load reads the disk. */
Test(kvstore, release_without_commit_drops_the_lent_state) {
    fixture f;
    fx_open(&f, 2, 0);
    char sid[33];
    uint8_t key[32];
    sid_of(sid, 71);
    key_of(key, 71);
    inf_error e;
    inf_kv want, kv;
    cr_assert_eq(inf_kv_init(&want, &f.cfg, 4096, &e), INF_OK);
    fill(&want, 0, 6, 7);
    cr_assert_eq(kvs_commit(f.s, sid, key, &want, 0, 1, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(kvs_checkout(f.s, sid, key, &f.cfg, 4096, &kv, NULL, &e), INF_OK, "%s", e.msg);
    kvs_stats st;
    kvs_get_stats(f.s, &st);
    cr_assert_eq(st.lends, 1);
    fill(&kv, 2, 9, 99); /* the forward pass scribbled on it, then failed */
    kvs_release(f.s, sid, &kv);
    assert_loads(f.s, sid, key, &f.cfg, &want, 1);
    kvs_get_stats(f.s, &st);
    cr_assert_eq(st.segments_read, 1, "the scribbled cache entry must not be served");
    /* a commit under the wrong key while lent: refused, and the entry dropped */
    uint8_t bad[32];
    key_of(bad, 72);
    cr_assert_eq(kvs_checkout(f.s, sid, key, &f.cfg, 4096, &kv, NULL, &e), INF_OK, "%s", e.msg);
    fill(&kv, 6, 7, 5);
    cr_assert_eq(kvs_commit(f.s, sid, bad, &kv, 6, 2, &e), INF_E_AUTH);
    kvs_release(f.s, sid, &kv);
    assert_loads(f.s, sid, key, &f.cfg, &want, 1);
    /* forget while lent: the release frees, the session is gone */
    cr_assert_eq(kvs_checkout(f.s, sid, key, &f.cfg, 4096, &kv, NULL, &e), INF_OK, "%s", e.msg);
    cr_assert_eq(kvs_forget(f.s, sid, &e), INF_OK, "%s", e.msg);
    kvs_release(f.s, sid, &kv);
    inf_kv got;
    cr_assert_eq(kvs_load(f.s, sid, key, &f.cfg, 4096, &got, NULL, &e), INF_E_NOTFOUND);
    inf_kv_free(&want);
    fx_close(&f);
}
