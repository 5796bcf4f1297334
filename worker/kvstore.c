/* kvstore.c — encrypted, crash-safe session KV store. The format, the commit
 * order and why it is safe are in kvstore.h; comments here explain the
 * places where the order matters. */
#include "kvstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvstore.c writes host-order integers and floats: little-endian hosts only"
#endif

#define HDR_LEN 40
#define TAG_LEN 16
#define NONCE_LEN 12
#define VERSION 1u
#define MAN_FIXED 48      /* manifest plaintext before the segment list */
#define MAN_SEG 24        /* one segment reference */
#define MAN_MAX_SEGS 65536
#define SEG_FIXED 24      /* segment plaintext before the rows */
#define CHUNK (1u << 20)  /* streaming buffer */
#define UNLOCKED_GRACE_S 600
#define BASES 256
#define LOAD_RETRIES 8

static const char AAD_LABEL[] = "infemeral/kv/1\n";

typedef struct {
    uint64_t id;
    uint32_t first, n_pos, used;
} seg_ref;

typedef struct {
    uint32_t n_layers, kv_dim, len, nsegs;
    uint64_t last_step, time;
    uint8_t mid[16];
    seg_ref *segs;
} manifest;

typedef struct {
    int used, pins, dead;
    char sid[KVS_SESSION_ID_LEN + 1];
    uint8_t mid[16];
    uint8_t tag[32]; /* HMAC-SHA256(key, sid) */
    int n_layers, kv_dim, len, cap;
    uint64_t last_step, lru;
    float **k, **v; /* [n_layers] -> [cap][kv_dim]; NULL while lent */
    /* Lent (kvs_checkout): the arrays are the caller's kv until
     * kvs_release; lent_k identifies that kv. A commit of it records the new
     * state here (p_*) instead of copying rows; kvs_release then takes the
     * arrays back as that state. The entry stays pinned while lent. */
    int lent, p_set, p_len;
    float **lent_k;
    uint64_t p_step;
    uint8_t p_mid[16];
} cache_ent;

typedef struct {
    char sid[KVS_SESSION_ID_LEN + 1];
    uint8_t mid[16];
    uint64_t lru;
} base_ent;

struct kvs_store {
    char dir[PATH_MAX];
    kvs_options o;
    pthread_mutex_t mu; /* guards everything below */
    uint64_t tick;
    cache_ent *cache;
    base_ent bases[BASES];
    kvs_stats st;
};

/* ---- small helpers --------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int valid_sid(const char *sid) {
    if (!sid) return 0;
    for (int i = 0; i < KVS_SESSION_ID_LEN; i++) {
        char c = sid[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
    }
    return sid[KVS_SESSION_ID_LEN] == '\0';
}

static void hex64(char out[17], uint64_t v) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4) out[i] = hx[v & 15];
    out[16] = '\0';
}

static int parse_hex64(const char *s, uint64_t *v) {
    uint64_t r = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return 0;
        r = (r << 4) | (uint64_t)d;
    }
    if (s[16] != '\0') return 0;
    *v = r;
    return 1;
}

static inf_status rnd(void *p, size_t n, inf_error *err) {
    if (RAND_bytes(p, (int)n) != 1) return inf_fail(err, INF_E_IO, "KV store: RAND_bytes failed");
    return INF_OK;
}

/* Fault injection for the tests: every file-system step that changes
 * something passes a crash point; kvs_debug_crash_at(n) makes the n-th one
 * SIGKILL the process (see test `crash_at_every_step`). */
static atomic_long crash_at, crash_count;

void kvs_debug_crash_at(long n) {
    atomic_store(&crash_count, 0);
    atomic_store(&crash_at, n);
}

static void crash_point(void) {
    long at = atomic_load(&crash_at);
    if (at > 0 && atomic_fetch_add(&crash_count, 1) + 1 == at) raise(SIGKILL);
}

static int x_fsync(int fd) {
    crash_point();
    int rc = fsync(fd);
    crash_point();
    return rc;
}

static int x_rename(const char *a, const char *b) {
    crash_point();
    int rc = rename(a, b);
    crash_point();
    return rc;
}

static int x_unlinkat(int dfd, const char *name) {
    crash_point();
    return unlinkat(dfd, name, 0);
}

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        crash_point();
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1 = all n bytes, 0 = short (end of file), -1 = error (errno). */
static int read_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return 0;
        b += r;
        n -= (size_t)r;
    }
    return 1;
}

static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = x_fsync(fd);
    close(fd);
    return rc;
}

static void keytag(const uint8_t key[KVS_KEY_LEN], const char *sid, uint8_t out[32]) {
    size_t n = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, KVS_KEY_LEN, (const unsigned char *)sid,
                   KVS_SESSION_ID_LEN, out, 32, &n))
        RAND_bytes(out, 32); /* cannot happen; a random tag simply never matches */
}

/* The AAD: label, session id, the file's final name, its clear header. */
static int set_aad(EVP_CIPHER_CTX *c, int enc, const char *sid, const char *name, const uint8_t *hdr) {
    int n;
    int (*upd)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;
    return upd(c, NULL, &n, (const unsigned char *)AAD_LABEL, (int)strlen(AAD_LABEL)) == 1 &&
           upd(c, NULL, &n, (const unsigned char *)sid, KVS_SESSION_ID_LEN) == 1 &&
           upd(c, NULL, &n, (const unsigned char *)"/", 1) == 1 &&
           upd(c, NULL, &n, (const unsigned char *)name, (int)strlen(name)) == 1 &&
           upd(c, NULL, &n, hdr, HDR_LEN) == 1;
}

/* ---- sealed writer: .tmp file -> fsync -> rename ------------------------------ */

typedef struct {
    int fd;
    EVP_CIPHER_CTX *c;
    uint8_t *buf;
    size_t used;
    uint64_t left; /* plaintext bytes still expected */
    char tmp[PATH_MAX], final[PATH_MAX];
    const char *sid;
} sealw;

static void sealw_abort(sealw *w) {
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    w->fd = -1;
    EVP_CIPHER_CTX_free(w->c);
    w->c = NULL;
    free(w->buf);
    w->buf = NULL;
}

static inf_status sealw_begin(sealw *w, const char *sdir, const char *sid, const char *name,
                              const char *magic, const uint8_t key[KVS_KEY_LEN], uint64_t ptlen,
                              inf_error *err) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->sid = sid;
    uint64_t r;
    inf_status st = rnd(&r, sizeof r, err);
    if (st) return st;
    char hx[17];
    hex64(hx, r);
    snprintf(w->tmp, sizeof w->tmp, "%s/.tmp-%s", sdir, hx);
    snprintf(w->final, sizeof w->final, "%s/%s", sdir, name);
    uint8_t hdr[HDR_LEN] = {0};
    memcpy(hdr, magic, 8);
    put32(hdr + 8, VERSION);
    if ((st = rnd(hdr + 16, NONCE_LEN, err))) return st;
    put64(hdr + 32, ptlen);
    w->buf = malloc(CHUNK);
    w->c = EVP_CIPHER_CTX_new();
    if (!w->buf || !w->c) {
        sealw_abort(w);
        return inf_fail(err, INF_E_NOMEM, "KV session %s: %s: out of memory", sid, w->final);
    }
    if (EVP_EncryptInit_ex(w->c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(w->c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(w->c, NULL, NULL, key, hdr + 16) != 1 || !set_aad(w->c, 1, sid, name, hdr)) {
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: %s: AES-GCM setup failed", sid, w->final);
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        int e = errno;
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: cannot create %s: %s", sid, w->tmp, strerror(e));
    }
    if (write_all(w->fd, hdr, HDR_LEN)) {
        int e = errno;
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: writing %s: %s", sid, w->tmp, strerror(e));
    }
    w->left = ptlen;
    return INF_OK;
}

static inf_status sealw_flush(sealw *w, inf_error *err) {
    if (w->used && write_all(w->fd, w->buf, w->used)) {
        int e = errno;
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: writing %s: %s", w->sid, w->final, strerror(e));
    }
    w->used = 0;
    return INF_OK;
}

static inf_status sealw_put(sealw *w, const void *data, size_t n, inf_error *err) {
    const uint8_t *p = data;
    if (n > w->left) {
        sealw_abort(w);
        return inf_fail(err, INF_E_ARG, "KV session %s: %s: more bytes than announced", w->sid, w->final);
    }
    w->left -= n;
    while (n) {
        size_t take = CHUNK - w->used;
        if (take > n) take = n;
        if (take > INT_MAX) take = INT_MAX;
        int outl = 0;
        if (EVP_EncryptUpdate(w->c, w->buf + w->used, &outl, p, (int)take) != 1 || (size_t)outl != take) {
            sealw_abort(w);
            return inf_fail(err, INF_E_IO, "KV session %s: %s: encryption failed", w->sid, w->final);
        }
        w->used += take;
        p += take;
        n -= take;
        if (w->used == CHUNK) {
            inf_status st = sealw_flush(w, err);
            if (st) return st;
        }
    }
    return INF_OK;
}

/* Tag, fsync, rename to the final name. The caller fsyncs the directory. */
static inf_status sealw_end(sealw *w, inf_error *err) {
    if (w->left) {
        sealw_abort(w);
        return inf_fail(err, INF_E_ARG, "KV session %s: %s: fewer bytes than announced", w->sid, w->final);
    }
    inf_status st = sealw_flush(w, err);
    if (st) return st;
    uint8_t tag[TAG_LEN];
    int outl = 0;
    if (EVP_EncryptFinal_ex(w->c, w->buf, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(w->c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1) {
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: %s: encryption failed", w->sid, w->final);
    }
    if (write_all(w->fd, tag, TAG_LEN) || x_fsync(w->fd)) {
        int e = errno;
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: writing %s: %s", w->sid, w->final, strerror(e));
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) || x_rename(w->tmp, w->final)) {
        int e = errno;
        unlink(w->tmp);
        sealw_abort(w);
        return inf_fail(err, INF_E_IO, "KV session %s: renaming to %s: %s", w->sid, w->final, strerror(e));
    }
    sealw_abort(w); /* frees the context and buffer; fd already closed */
    return INF_OK;
}

/* ---- sealed reader: streams and authenticates one file ------------------------- */

typedef struct {
    int fd;
    EVP_CIPHER_CTX *c;
    uint8_t *buf;
    uint64_t left, ptlen;
    char path[PATH_MAX];
    const char *sid;
} sealr;

static void sealr_close(sealr *r) {
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    EVP_CIPHER_CTX_free(r->c);
    r->c = NULL;
    if (r->buf) OPENSSL_cleanse(r->buf, CHUNK);
    free(r->buf);
    r->buf = NULL;
}

static inf_status bad(sealr *r, inf_error *err, const char *why) {
    sealr_close(r);
    return inf_fail(err, INF_E_AUTH, "KV session %s: %s fails authentication (%s): wrong key or altered file",
                    r->sid, r->path, why);
}

/* Opens sdir/name. ENOENT -> INF_E_NOTFOUND. expect_ptlen: the size the
 * (authenticated) manifest predicts, or 0 for "any up to max_pt". */
static inf_status sealr_open(sealr *r, const char *sdir, const char *sid, const char *name,
                             const char *magic, const uint8_t key[KVS_KEY_LEN], uint64_t expect_ptlen,
                             uint64_t max_pt, inf_error *err) {
    memset(r, 0, sizeof *r);
    r->sid = sid;
    snprintf(r->path, sizeof r->path, "%s/%s", sdir, name);
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        if (e == ENOENT) return inf_fail(err, INF_E_NOTFOUND, "KV session %s: %s does not exist", sid, r->path);
        return inf_fail(err, INF_E_IO, "KV session %s: cannot open %s: %s", sid, r->path, strerror(e));
    }
    struct stat sb;
    uint8_t hdr[HDR_LEN];
    int rr;
    if (fstat(r->fd, &sb) || (rr = read_all(r->fd, hdr, HDR_LEN)) < 0) {
        int e = errno;
        sealr_close(r);
        return inf_fail(err, INF_E_IO, "KV session %s: reading %s: %s", sid, r->path, strerror(e));
    }
    if (rr == 0) return bad(r, err, "shorter than its header");
    if (memcmp(hdr, magic, 8)) return bad(r, err, "bad magic");
    if (get32(hdr + 8) != VERSION) return bad(r, err, "unknown version");
    uint64_t ptlen = get64(hdr + 32);
    if (ptlen > (uint64_t)sb.st_size || (uint64_t)sb.st_size - ptlen != HDR_LEN + TAG_LEN)
        return bad(r, err, "size does not match its header: truncated or extended");
    if (expect_ptlen && ptlen != expect_ptlen) return bad(r, err, "size differs from what the manifest says");
    if (ptlen > max_pt) {
        sealr_close(r);
        return inf_fail(err, INF_E_RANGE, "KV session %s: %s holds %llu bytes, over the limit of %llu", sid,
                        r->path, (unsigned long long)ptlen, (unsigned long long)max_pt);
    }
    r->buf = malloc(CHUNK);
    r->c = EVP_CIPHER_CTX_new();
    if (!r->buf || !r->c) {
        sealr_close(r);
        return inf_fail(err, INF_E_NOMEM, "KV session %s: %s: out of memory", sid, r->path);
    }
    if (EVP_DecryptInit_ex(r->c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(r->c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(r->c, NULL, NULL, key, hdr + 16) != 1 || !set_aad(r->c, 0, sid, name, hdr)) {
        sealr_close(r);
        return inf_fail(err, INF_E_IO, "KV session %s: %s: AES-GCM setup failed", sid, r->path);
    }
    r->left = r->ptlen = ptlen;
    return INF_OK;
}

/* Decrypts the next n plaintext bytes into dst (NULL: discard). The bytes
 * are not authentic until sealr_end succeeds; callers only write them into
 * memory they throw away on failure. */
static inf_status sealr_get(sealr *r, void *dst, size_t n, inf_error *err) {
    uint8_t *d = dst;
    if (n > r->left) return bad(r, err, "shorter than its contents say");
    r->left -= n;
    while (n) {
        size_t take = n < CHUNK ? n : CHUNK;
        int rr = read_all(r->fd, r->buf, take);
        if (rr < 0) {
            int e = errno;
            sealr_close(r);
            return inf_fail(err, INF_E_IO, "KV session %s: reading %s: %s", r->sid, r->path, strerror(e));
        }
        if (rr == 0) return bad(r, err, "truncated");
        int outl = 0;
        uint8_t *out = d ? d : r->buf;
        if (EVP_DecryptUpdate(r->c, out, &outl, r->buf, (int)take) != 1 || (size_t)outl != take)
            return bad(r, err, "decryption error");
        if (d) d += take;
        n -= take;
    }
    return INF_OK;
}

static inf_status sealr_end(sealr *r, inf_error *err) {
    uint8_t tag[TAG_LEN];
    if (r->left) return bad(r, err, "not fully read");
    int rr = read_all(r->fd, tag, TAG_LEN);
    if (rr < 0) {
        int e = errno;
        sealr_close(r);
        return inf_fail(err, INF_E_IO, "KV session %s: reading %s: %s", r->sid, r->path, strerror(e));
    }
    if (rr == 0) return bad(r, err, "truncated tag");
    int outl = 0;
    if (EVP_CIPHER_CTX_ctrl(r->c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1 ||
        EVP_DecryptFinal_ex(r->c, r->buf, &outl) != 1)
        return bad(r, err, "GCM tag mismatch");
    sealr_close(r);
    return INF_OK;
}

/* ---- manifest ---------------------------------------------------------------- */

static void man_free(manifest *m) {
    free(m->segs);
    memset(m, 0, sizeof *m);
}

static int checked_bytes(uint64_t len, uint64_t n_layers, uint64_t kv_dim, uint64_t *out) {
    /* len * n_layers * kv_dim * 2 (K, V) * 4 bytes, each factor < 2^32 */
    size_t a, b, c;
    if (len > SIZE_MAX || n_layers > SIZE_MAX || kv_dim > SIZE_MAX) return 0;
    if (!inf_mul_size((size_t)len, (size_t)n_layers, &a) || !inf_mul_size(a, (size_t)kv_dim, &b) ||
        !inf_mul_size(b, 8, &c))
        return 0;
    *out = c;
    return 1;
}

/* Reads and authenticates sdir/manifest. INF_E_NOTFOUND when absent. */
static inf_status man_read(kvs_store *s, const char *sdir, const char *sid, const uint8_t key[KVS_KEY_LEN],
                           manifest *m, inf_error *err) {
    memset(m, 0, sizeof *m);
    sealr r;
    uint64_t max_pt = MAN_FIXED + (uint64_t)MAN_SEG * MAN_MAX_SEGS;
    inf_status st = sealr_open(&r, sdir, sid, "manifest", "INFKVMAN", key, 0, max_pt, err);
    if (st == INF_E_NOTFOUND)
        return inf_fail(err, INF_E_NOTFOUND, "KV session %s: unknown session (no %s/manifest)", sid, sdir);
    if (st) return st;
    if (r.ptlen < MAN_FIXED) return bad(&r, err, "too short for a manifest");
    uint8_t *pt = malloc((size_t)r.ptlen);
    if (!pt) {
        sealr_close(&r);
        return inf_fail(err, INF_E_NOMEM, "KV session %s: %s: out of memory", sid, r.path);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", r.path);
    size_t ptlen = (size_t)r.ptlen;
    if ((st = sealr_get(&r, pt, ptlen, err)) || (st = sealr_end(&r, err))) {
        OPENSSL_cleanse(pt, ptlen);
        free(pt);
        return st;
    }
    pthread_mutex_lock(&s->mu);
    s->st.manifests_read++;
    pthread_mutex_unlock(&s->mu);
    /* Authentic from here on: a mismatch is a bug or a foreign writer, not tampering. */
    m->n_layers = get32(pt);
    m->kv_dim = get32(pt + 4);
    m->len = get32(pt + 8);
    m->nsegs = get32(pt + 12);
    m->last_step = get64(pt + 16);
    m->time = get64(pt + 24);
    memcpy(m->mid, pt + 32, 16);
    uint64_t bytes = 0;
    if (m->nsegs > MAN_MAX_SEGS || ptlen != MAN_FIXED + (size_t)m->nsegs * MAN_SEG || m->n_layers == 0 ||
        m->n_layers > 65536 || m->kv_dim == 0 || m->kv_dim > (1u << 20) || m->len > INT_MAX) {
        OPENSSL_cleanse(pt, ptlen);
        free(pt);
        return inf_fail(err, INF_E_FORMAT, "KV session %s: %s: inconsistent manifest (layers %u, kv_dim %u, len %u, %u segments)",
                        sid, path, m->n_layers, m->kv_dim, m->len, m->nsegs);
    }
    if (!checked_bytes(m->len, m->n_layers, m->kv_dim, &bytes) || bytes > s->o.max_session_bytes) {
        OPENSSL_cleanse(pt, ptlen);
        free(pt);
        return inf_fail(err, INF_E_RANGE, "KV session %s: %s: %u positions x %u layers x %u exceed max_session_bytes %zu",
                        sid, path, m->len, m->n_layers, m->kv_dim, s->o.max_session_bytes);
    }
    m->segs = calloc(m->nsegs ? m->nsegs : 1, sizeof *m->segs);
    if (!m->segs) {
        OPENSSL_cleanse(pt, ptlen);
        free(pt);
        return inf_fail(err, INF_E_NOMEM, "KV session %s: %s: out of memory", sid, path);
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; i < m->nsegs; i++) {
        const uint8_t *p = pt + MAN_FIXED + (size_t)i * MAN_SEG;
        seg_ref *g = &m->segs[i];
        g->id = get64(p);
        g->first = get32(p + 8);
        g->n_pos = get32(p + 12);
        g->used = get32(p + 16);
        if (g->first != pos || g->used == 0 || g->used > g->n_pos || g->n_pos > INT_MAX) {
            OPENSSL_cleanse(pt, ptlen);
            free(pt);
            man_free(m);
            return inf_fail(err, INF_E_FORMAT, "KV session %s: %s: segment %u does not continue at position %llu",
                            sid, path, i, (unsigned long long)pos);
        }
        pos += g->used;
    }
    OPENSSL_cleanse(pt, ptlen);
    free(pt);
    if (pos != m->len) {
        man_free(m);
        return inf_fail(err, INF_E_FORMAT, "KV session %s: %s: segments cover %llu positions, manifest says %u",
                        sid, path, (unsigned long long)pos, m->len);
    }
    return INF_OK;
}

static inf_status man_write(const char *sdir, const char *sid, const uint8_t key[KVS_KEY_LEN],
                            const manifest *m, inf_error *err) {
    size_t n = MAN_FIXED + (size_t)m->nsegs * MAN_SEG;
    uint8_t *pt = calloc(1, n);
    if (!pt) return inf_fail(err, INF_E_NOMEM, "KV session %s: manifest: out of memory", sid);
    put32(pt, m->n_layers);
    put32(pt + 4, m->kv_dim);
    put32(pt + 8, m->len);
    put32(pt + 12, m->nsegs);
    put64(pt + 16, m->last_step);
    put64(pt + 24, m->time);
    memcpy(pt + 32, m->mid, 16);
    for (uint32_t i = 0; i < m->nsegs; i++) {
        uint8_t *p = pt + MAN_FIXED + (size_t)i * MAN_SEG;
        put64(p, m->segs[i].id);
        put32(p + 8, m->segs[i].first);
        put32(p + 12, m->segs[i].n_pos);
        put32(p + 16, m->segs[i].used);
    }
    sealw w;
    inf_status st = sealw_begin(&w, sdir, sid, "manifest", "INFKVMAN", key, n, err);
    if (!st) st = sealw_put(&w, pt, n, err);
    if (!st) st = sealw_end(&w, err);
    OPENSSL_cleanse(pt, n);
    free(pt);
    return st;
}

/* ---- segments ------------------------------------------------------------------ */

static uint64_t seg_ptlen(uint64_t n_pos, uint64_t n_layers, uint64_t kv_dim) {
    uint64_t b = 0;
    if (!checked_bytes(n_pos, n_layers, kv_dim, &b) || b > UINT64_MAX - SEG_FIXED) return 0;
    return b + SEG_FIXED;
}

static inf_status seg_write(kvs_store *s, const char *sdir, const char *sid, const uint8_t key[KVS_KEY_LEN],
                            const inf_kv *kv, int a, int b, uint64_t id, inf_error *err) {
    char name[32], hx[17];
    hex64(hx, id);
    snprintf(name, sizeof name, "seg-%s", hx);
    uint64_t n_pos = (uint64_t)(b - a);
    uint64_t ptlen = seg_ptlen(n_pos, (uint64_t)kv->n_layers, (uint64_t)kv->kv_dim);
    uint8_t h[SEG_FIXED];
    put32(h, (uint32_t)kv->n_layers);
    put32(h + 4, (uint32_t)kv->kv_dim);
    put32(h + 8, (uint32_t)a);
    put32(h + 12, (uint32_t)n_pos);
    put64(h + 16, id);
    sealw w;
    inf_status st = sealw_begin(&w, sdir, sid, name, "INFKVSEG", key, ptlen, err);
    if (!st) st = sealw_put(&w, h, SEG_FIXED, err);
    size_t rows = (size_t)n_pos * (size_t)kv->kv_dim * sizeof(float);
    for (int l = 0; !st && l < kv->n_layers; l++) {
        st = sealw_put(&w, kv->k[l] + (size_t)a * (size_t)kv->kv_dim, rows, err);
        if (!st) st = sealw_put(&w, kv->v[l] + (size_t)a * (size_t)kv->kv_dim, rows, err);
    }
    if (!st) st = sealw_end(&w, err);
    if (st) return st;
    pthread_mutex_lock(&s->mu);
    s->st.segments_written++;
    s->st.segment_bytes_written += ptlen;
    pthread_mutex_unlock(&s->mu);
    return INF_OK;
}

/* Decrypts the used positions of one segment into out's rows. */
static inf_status seg_read(kvs_store *s, const char *sdir, const char *sid, const uint8_t key[KVS_KEY_LEN],
                           const manifest *m, const seg_ref *g, inf_kv *out, inf_error *err) {
    char name[32], hx[17];
    hex64(hx, g->id);
    snprintf(name, sizeof name, "seg-%s", hx);
    uint64_t ptlen = seg_ptlen(g->n_pos, m->n_layers, m->kv_dim);
    if (!ptlen) return inf_fail(err, INF_E_RANGE, "KV session %s: %s/%s: size overflows", sid, sdir, name);
    sealr r;
    inf_status st = sealr_open(&r, sdir, sid, name, "INFKVSEG", key, ptlen,
                               (uint64_t)s->o.max_session_bytes + SEG_FIXED, err);
    if (st) return st;
    uint8_t h[SEG_FIXED];
    if ((st = sealr_get(&r, h, SEG_FIXED, err))) return st;
    /* Not yet authentic: on a mismatch read on and let the tag decide
     * between tampering (AUTH) and a writer bug (FORMAT). */
    int mismatch = get32(h) != m->n_layers || get32(h + 4) != m->kv_dim || get32(h + 8) != g->first ||
                   get32(h + 12) != g->n_pos || get64(h + 16) != g->id;
    size_t row = (size_t)m->kv_dim * sizeof(float);
    size_t used = (size_t)g->used * row, rest = (size_t)(g->n_pos - g->used) * row;
    for (uint32_t l = 0; !st && l < m->n_layers; l++) {
        for (int kvsel = 0; !st && kvsel < 2; kvsel++) {
            float *base = kvsel ? out->v[l] : out->k[l];
            st = sealr_get(&r, mismatch ? NULL : base + (size_t)g->first * m->kv_dim, used, err);
            if (!st) st = sealr_get(&r, NULL, rest, err);
        }
    }
    if (!st) st = sealr_end(&r, err);
    if (st) return st;
    if (mismatch)
        return inf_fail(err, INF_E_FORMAT, "KV session %s: %s/%s: its header disagrees with the manifest", sid,
                        sdir, name);
    pthread_mutex_lock(&s->mu);
    s->st.segments_read++;
    s->st.segment_bytes_read += ptlen;
    pthread_mutex_unlock(&s->mu);
    return INF_OK;
}

/* ---- cache and base table (callers hold s->mu) ---------------------------------- */

static void ent_wipe(cache_ent *e) {
    if (e->k)
        for (int l = 0; l < e->n_layers; l++) {
            if (e->k[l]) OPENSSL_cleanse(e->k[l], (size_t)e->cap * (size_t)e->kv_dim * sizeof(float));
            if (e->v[l]) OPENSSL_cleanse(e->v[l], (size_t)e->cap * (size_t)e->kv_dim * sizeof(float));
            free(e->k[l]);
            free(e->v[l]);
        }
    free(e->k);
    free(e->v);
    OPENSSL_cleanse(e, sizeof *e);
    memset(e, 0, sizeof *e);
}

static cache_ent *cache_find(kvs_store *s, const char *sid) {
    for (int i = 0; i < s->o.cache_sessions; i++)
        if (s->cache[i].used && !s->cache[i].dead && !memcmp(s->cache[i].sid, sid, KVS_SESSION_ID_LEN))
            return &s->cache[i];
    return NULL;
}

/* Drops sid's entry (wiped now, or by its last user when pinned). */
static void cache_drop(kvs_store *s, const char *sid) {
    cache_ent *e = cache_find(s, sid);
    if (!e) return;
    if (e->pins) e->dead = 1;
    else ent_wipe(e);
}

static void cache_unpin(kvs_store *s, cache_ent *e) {
    if (--e->pins == 0 && e->dead) ent_wipe(e);
}

/* A free or least-recently-used unpinned slot, wiped; NULL if none. */
static cache_ent *cache_slot(kvs_store *s) {
    cache_ent *best = NULL;
    for (int i = 0; i < s->o.cache_sessions; i++) {
        cache_ent *e = &s->cache[i];
        if (!e->used) return e;
        if (e->pins) continue;
        if (!best || e->lru < best->lru) best = e;
    }
    if (best) ent_wipe(best);
    return best;
}

static int base_get(kvs_store *s, const char *sid, uint8_t mid[16]) {
    for (int i = 0; i < BASES; i++)
        if (s->bases[i].lru && !memcmp(s->bases[i].sid, sid, KVS_SESSION_ID_LEN)) {
            memcpy(mid, s->bases[i].mid, 16);
            return 1;
        }
    return 0;
}

static void base_set(kvs_store *s, const char *sid, const uint8_t mid[16]) {
    base_ent *slot = NULL;
    for (int i = 0; i < BASES && !slot; i++)
        if (s->bases[i].lru && !memcmp(s->bases[i].sid, sid, KVS_SESSION_ID_LEN)) slot = &s->bases[i];
    for (int i = 0; i < BASES && !slot; i++)
        if (!s->bases[i].lru) slot = &s->bases[i];
    if (!slot) {
        slot = &s->bases[0];
        for (int i = 1; i < BASES; i++)
            if (s->bases[i].lru < slot->lru) slot = &s->bases[i];
    }
    memcpy(slot->sid, sid, KVS_SESSION_ID_LEN + 1);
    memcpy(slot->mid, mid, 16);
    slot->lru = ++s->tick;
}

static void base_drop(kvs_store *s, const char *sid) {
    for (int i = 0; i < BASES; i++)
        if (s->bases[i].lru && !memcmp(s->bases[i].sid, sid, KVS_SESSION_ID_LEN)) memset(&s->bases[i], 0, sizeof s->bases[i]);
}

/* Makes e hold rows [0, need) capacity (e pinned, s->mu not held). */
static int ent_reserve(cache_ent *e, int need) {
    if (need <= e->cap) return 1;
    /* 25% headroom: decoding appends one row per commit, and each growth
     * copies (and wipes) the whole entry. */
    int cap = need > INT_MAX - need / 4 - 16 ? need : need + need / 4 + 16;
    size_t row = (size_t)e->kv_dim * sizeof(float);
    for (int l = 0; l < e->n_layers; l++) {
        /* Grow by copy so that the old rows can be wiped, not left in freed memory. */
        float *nk = malloc((size_t)cap * row), *nv = malloc((size_t)cap * row);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return 0;
        }
        if (e->k[l]) {
            memcpy(nk, e->k[l], (size_t)e->len * row);
            memcpy(nv, e->v[l], (size_t)e->len * row);
            OPENSSL_cleanse(e->k[l], (size_t)e->cap * row);
            OPENSSL_cleanse(e->v[l], (size_t)e->cap * row);
            free(e->k[l]);
            free(e->v[l]);
        }
        e->k[l] = nk;
        e->v[l] = nv;
    }
    e->cap = cap;
    return 1;
}

/* Records kv's state for sid in the cache. When the entry already holds the
 * state this commit started from (old_mid), only rows [from, len) are
 * copied. Best effort: on any shortage the entry is dropped. */
static void cache_put(kvs_store *s, const char *sid, const uint8_t tag[32], const uint8_t *old_mid,
                      const uint8_t new_mid[16], const inf_kv *kv, int from, uint64_t step) {
    if (s->o.cache_sessions <= 0) return;
    pthread_mutex_lock(&s->mu);
    cache_ent *e = cache_find(s, sid);
    int copy_from = 0;
    if (e && e->lent) {
        /* The caller's kv IS this entry's storage: remember the state, the
         * rows come back with kvs_release. Anything else: drop the entry. */
        if (e->lent_k == kv->k && !CRYPTO_memcmp(e->tag, tag, 32)) { /* incremental or compacted alike */
            e->p_set = 1;
            e->p_len = kv->len;
            e->p_step = step;
            memcpy(e->p_mid, new_mid, 16);
        } else {
            e->dead = 1;
        }
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (e && !e->pins && old_mid && !memcmp(e->mid, old_mid, 16) && !CRYPTO_memcmp(e->tag, tag, 32) &&
        e->n_layers == kv->n_layers && e->kv_dim == kv->kv_dim && from <= e->len)
        copy_from = from;
    else if (e && e->pins) { /* in use by a racing load of the same session: leave it be */
        e->dead = 1;
        e = NULL;
    } else {
        if (e) ent_wipe(e);
        e = cache_slot(s);
        if (!e) {
            pthread_mutex_unlock(&s->mu);
            return;
        }
        e->used = 1;
        memcpy(e->sid, sid, KVS_SESSION_ID_LEN + 1);
        e->n_layers = kv->n_layers;
        e->kv_dim = kv->kv_dim;
        e->k = calloc((size_t)kv->n_layers, sizeof *e->k);
        e->v = calloc((size_t)kv->n_layers, sizeof *e->v);
        if (!e->k || !e->v) {
            ent_wipe(e);
            pthread_mutex_unlock(&s->mu);
            return;
        }
    }
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    memset(e->mid, 0, 16); /* unusable until filled */
    e->pins++;
    pthread_mutex_unlock(&s->mu);

    int ok = ent_reserve(e, kv->len);
    if (ok) {
        size_t row = (size_t)kv->kv_dim * sizeof(float);
        for (int l = 0; kv->len > copy_from && l < kv->n_layers; l++) {
            memcpy(e->k[l] + (size_t)copy_from * kv->kv_dim, kv->k[l] + (size_t)copy_from * kv->kv_dim,
                   (size_t)(kv->len - copy_from) * row);
            memcpy(e->v[l] + (size_t)copy_from * kv->kv_dim, kv->v[l] + (size_t)copy_from * kv->kv_dim,
                   (size_t)(kv->len - copy_from) * row);
        }
    }

    pthread_mutex_lock(&s->mu);
    if (ok) {
        e->len = kv->len;
        e->last_step = step;
        memcpy(e->mid, new_mid, 16);
        memcpy(e->tag, tag, 32);
        e->lru = ++s->tick;
    } else {
        e->dead = 1;
    }
    cache_unpin(s, e);
    pthread_mutex_unlock(&s->mu);
}

/* ---- session lock ---------------------------------------------------------------- */

static void sdir_of(const kvs_store *s, const char *sid, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", s->dir, sid);
}

/* Takes sdir/lock exclusively. *fd = -1 and *locked = 0 where flock is not
 * supported. create: make the session directory when missing (commit);
 * otherwise a missing directory is INF_E_NOTFOUND. nonblock: INF_E_BUSY
 * instead of waiting. */
static inf_status lock_session(kvs_store *s, const char *sid, const char *sdir, int create, int nonblock,
                               int *fd, int *locked, inf_error *err) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lock", sdir);
    *fd = -1;
    *locked = 0;
    for (int attempt = 0; attempt < 1000; attempt++) {
        if (create) {
            if (mkdir(sdir, 0700) == 0) {
                if (fsync_dir(s->dir))
                    return inf_fail(err, INF_E_IO, "KV session %s: fsync %s: %s", sid, s->dir, strerror(errno));
            } else if (errno != EEXIST) {
                return inf_fail(err, INF_E_IO, "KV session %s: cannot create %s: %s", sid, sdir, strerror(errno));
            }
        }
        int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (f < 0) {
            if (errno == ENOENT && create) continue; /* gc removed the directory meanwhile */
            if (errno == ENOENT) return inf_fail(err, INF_E_NOTFOUND, "KV session %s: %s does not exist", sid, sdir);
            return inf_fail(err, INF_E_IO, "KV session %s: cannot open %s: %s", sid, path, strerror(errno));
        }
        int rc;
        do rc = flock(f, LOCK_EX | (nonblock ? LOCK_NB : 0));
        while (rc && errno == EINTR);
        if (rc) {
            int e = errno;
            close(f);
            if (e == EWOULDBLOCK) return inf_fail(err, INF_E_BUSY, "KV session %s: %s is held", sid, path);
            if (e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS || e == EINVAL) return INF_OK; /* unlocked mode */
            return inf_fail(err, INF_E_IO, "KV session %s: flock %s: %s", sid, path, strerror(e));
        }
        /* The lock counts only if the path still names the inode we locked:
         * gc/forget may have unlinked it while we waited. */
        struct stat a, b;
        if (fstat(f, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            *fd = f;
            *locked = 1;
            return INF_OK;
        }
        close(f);
        if (!create) {
            if (access(sdir, F_OK)) return inf_fail(err, INF_E_NOTFOUND, "KV session %s: %s does not exist", sid, sdir);
        }
    }
    return inf_fail(err, INF_E_BUSY, "KV session %s: could not take %s", sid, path);
}

static void unlock_session(int fd) {
    if (fd >= 0) close(fd); /* releases the flock */
}

/* Deletes garbage: .tmp files and segments `keep` does not name. Unlocked,
 * only files older than UNLOCKED_GRACE_S (a racing writer's fresh segment
 * must survive). */
static void clean_garbage(const char *sdir, const manifest *keep, int locked) {
    DIR *d = opendir(sdir);
    if (!d) return;
    struct dirent *de;
    time_t now = time(NULL);
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        int garbage = 0;
        uint64_t id;
        if (!strncmp(n, ".tmp-", 5)) garbage = 1;
        else if (!strncmp(n, "seg-", 4) && parse_hex64(n + 4, &id)) {
            garbage = 1;
            for (uint32_t i = 0; keep && i < keep->nsegs; i++)
                if (keep->segs[i].id == id) garbage = 0;
        }
        if (!garbage) continue;
        if (!locked) {
            struct stat sb;
            if (fstatat(dirfd(d), n, &sb, 0) || now - sb.st_mtime < UNLOCKED_GRACE_S) continue;
        }
        x_unlinkat(dirfd(d), n);
    }
    closedir(d);
}

/* Removes every file of the session directory, the lock last, then the
 * directory. The caller holds the lock (or runs unlocked). */
static void remove_session_dir(const char *sdir) {
    DIR *d = opendir(sdir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "lock"))
            x_unlinkat(dirfd(d), de->d_name);
    x_unlinkat(dirfd(d), "lock");
    closedir(d);
    rmdir(sdir); /* fails harmlessly if a committer just created a new lock file */
}

/* ---- public API ------------------------------------------------------------------ */

void kvs_options_init(kvs_options *o) {
    o->ttl_seconds = 3600;
    o->cache_sessions = 8;
    o->max_session_bytes = (size_t)4 << 30;
    o->max_segments = 64;
}

inf_status kvs_open(kvs_store **out, const char *dir, const kvs_options *opts, inf_error *err) {
    *out = NULL;
    kvs_options o;
    if (opts) o = *opts;
    else kvs_options_init(&o);
    if (!dir || !*dir) return inf_fail(err, INF_E_ARG, "KV store: no directory given (INFEMERAL_KV_DIR)");
    if (strlen(dir) > PATH_MAX - 64) return inf_fail(err, INF_E_ARG, "KV store: directory path too long: %s", dir);
    if (o.ttl_seconds <= 0 || o.cache_sessions < 0 || o.cache_sessions > 4096 || o.max_session_bytes == 0 ||
        o.max_segments < 1 || o.max_segments > MAN_MAX_SEGS)
        return inf_fail(err, INF_E_ARG,
                        "KV store %s: bad options (ttl %ld s, cache %d sessions, max %zu bytes, %d segments)", dir,
                        o.ttl_seconds, o.cache_sessions, o.max_session_bytes, o.max_segments);
    if (mkdir(dir, 0700) && errno != EEXIST)
        return inf_fail(err, INF_E_IO, "KV store: cannot create %s: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        return inf_fail(err, INF_E_IO, "KV store: %s is not a directory", dir);
    kvs_store *s = calloc(1, sizeof *s);
    if (!s) return inf_fail(err, INF_E_NOMEM, "KV store %s: out of memory", dir);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->o = o;
    if (o.cache_sessions && !(s->cache = calloc((size_t)o.cache_sessions, sizeof *s->cache))) {
        free(s);
        return inf_fail(err, INF_E_NOMEM, "KV store %s: out of memory", dir);
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return INF_OK;
}

void kvs_close(kvs_store *s) {
    if (!s) return;
    for (int i = 0; i < s->o.cache_sessions; i++) ent_wipe(&s->cache[i]);
    free(s->cache);
    pthread_mutex_destroy(&s->mu);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

void kvs_get_stats(kvs_store *s, kvs_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

/* sid's cache entry when it holds exactly the state manifest m names (and
 * is not lent out), else NULL. Caller holds s->mu. */
static cache_ent *cache_hit(kvs_store *s, const char *sid, const manifest *m, const uint8_t tag[32],
                            const inf_model_config *cfg) {
    cache_ent *e = cache_find(s, sid);
    if (e && !e->lent && !memcmp(e->mid, m->mid, 16) && !CRYPTO_memcmp(e->tag, tag, 32) && e->len == (int)m->len &&
        e->n_layers == cfg->n_layers && e->kv_dim == cfg->n_kv_heads * cfg->head_dim)
        return e;
    return NULL;
}

static inf_status load_once(kvs_store *s, const char *sid, const char *sdir, const uint8_t key[KVS_KEY_LEN],
                            const uint8_t tag[32], const inf_model_config *cfg, int max_len, inf_kv *out,
                            uint64_t *last_step, int *missing, int lend, inf_error *err) {
    manifest m;
    inf_status st = man_read(s, sdir, sid, key, &m, err);
    if (st) return st;
    int kv_dim = cfg->n_kv_heads * cfg->head_dim;
    if ((int)m.n_layers != cfg->n_layers || (int)m.kv_dim != kv_dim) {
        man_free(&m);
        return inf_fail(err, INF_E_SHAPE,
                        "KV session %s: %s/manifest stores %u layers x kv_dim %u, the model has %d x %d", sid, sdir,
                        m.n_layers, m.kv_dim, cfg->n_layers, kv_dim);
    }
    if ((int)m.len > max_len) {
        man_free(&m);
        return inf_fail(err, INF_E_RANGE, "KV session %s: %s/manifest holds %u positions, the limit is %d", sid,
                        sdir, m.len, max_len);
    }
    if (lend) { /* hot path without a copy: lend the cached arrays */
        pthread_mutex_lock(&s->mu);
        cache_ent *e = cache_hit(s, sid, &m, tag, cfg);
        if (e && !e->pins) {
            e->lent = 1;
            e->p_set = 0;
            e->pins++;
            e->lru = ++s->tick;
            s->st.cache_hits++;
            s->st.lends++;
            out->n_layers = e->n_layers;
            out->kv_dim = kv_dim;
            out->max_len = max_len;
            out->capacity = e->cap;
            out->len = e->len;
            out->k = e->k;
            out->v = e->v;
            e->lent_k = e->k;
            e->k = e->v = NULL;
            base_set(s, sid, m.mid);
            pthread_mutex_unlock(&s->mu);
            if (last_step) *last_step = m.last_step;
            man_free(&m);
            return INF_OK;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if ((st = inf_kv_init(out, cfg, max_len, err)) || (st = inf_kv_reserve(out, (int)m.len, err))) {
        man_free(&m);
        inf_kv_free(out);
        return inf_wrap(err, st, "KV session %s", sid);
    }

    /* Hot path: the cached state is the one this manifest names. */
    pthread_mutex_lock(&s->mu);
    cache_ent *e = cache_hit(s, sid, &m, tag, cfg);
    if (e) {
        e->pins++;
        e->lru = ++s->tick;
        s->st.cache_hits++;
        pthread_mutex_unlock(&s->mu);
        size_t bytes = (size_t)m.len * (size_t)kv_dim * sizeof(float);
        for (int l = 0; m.len > 0 && l < cfg->n_layers; l++) {
            memcpy(out->k[l], e->k[l], bytes);
            memcpy(out->v[l], e->v[l], bytes);
        }
        out->len = (int)m.len;
        if (last_step) *last_step = m.last_step;
        pthread_mutex_lock(&s->mu);
        cache_unpin(s, e);
        base_set(s, sid, m.mid);
        pthread_mutex_unlock(&s->mu);
        man_free(&m);
        return INF_OK;
    }
    s->st.cache_misses++;
    pthread_mutex_unlock(&s->mu);

    for (uint32_t i = 0; i < m.nsegs; i++) {
        if ((st = seg_read(s, sdir, sid, key, &m, &m.segs[i], out, err))) {
            if (st == INF_E_NOTFOUND) *missing = 1;
            for (int l = 0; l < out->n_layers; l++) {
                OPENSSL_cleanse(out->k[l], (size_t)out->capacity * (size_t)kv_dim * sizeof(float));
                OPENSSL_cleanse(out->v[l], (size_t)out->capacity * (size_t)kv_dim * sizeof(float));
            }
            inf_kv_free(out);
            man_free(&m);
            return st;
        }
    }
    out->len = (int)m.len;
    if (last_step) *last_step = m.last_step;
    pthread_mutex_lock(&s->mu);
    base_set(s, sid, m.mid);
    pthread_mutex_unlock(&s->mu);
    cache_put(s, sid, tag, NULL, m.mid, out, 0, m.last_step);
    man_free(&m);
    return INF_OK;
}

static inf_status load(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                       const inf_model_config *cfg, int max_len, inf_kv *out, uint64_t *last_step, int lend,
                       inf_error *err) {
    memset(out, 0, sizeof *out);
    if (!valid_sid(session_id))
        return inf_fail(err, INF_E_ARG, "KV store: session id \"%.40s\" is not 32 lowercase hex characters",
                        session_id ? session_id : "(null)");
    char sdir[PATH_MAX];
    sdir_of(s, session_id, sdir, sizeof sdir);
    uint8_t tag[32];
    keytag(key, session_id, tag);
    inf_status st = INF_OK;
    /* A segment can vanish between reading the manifest and opening it only
     * when a commit replaced the manifest and cleaned up: read the new one. */
    int missing = 0;
    for (int attempt = 0; attempt < LOAD_RETRIES; attempt++) {
        missing = 0;
        st = load_once(s, session_id, sdir, key, tag, cfg, max_len, out, last_step, &missing, lend, err);
        if (!(st == INF_E_NOTFOUND && missing)) break;
    }
    if (st == INF_E_NOTFOUND && missing)
        st = inf_wrap(err, INF_E_FORMAT, "KV session %s: a segment the manifest names is missing", session_id);
    OPENSSL_cleanse(tag, sizeof tag);
    return st;
}

inf_status kvs_load(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                    const inf_model_config *cfg, int max_len, inf_kv *out, uint64_t *last_step, inf_error *err) {
    return load(s, session_id, key, cfg, max_len, out, last_step, 0, err);
}

inf_status kvs_checkout(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                        const inf_model_config *cfg, int max_len, inf_kv *out, uint64_t *last_step, inf_error *err) {
    return load(s, session_id, key, cfg, max_len, out, last_step, 1, err);
}

static void kv_wipe_free(inf_kv *kv) {
    for (int l = 0; l < kv->n_layers; l++) {
        size_t bytes = (size_t)kv->capacity * (size_t)kv->kv_dim * sizeof(float);
        if (kv->k && kv->k[l]) OPENSSL_cleanse(kv->k[l], bytes);
        if (kv->v && kv->v[l]) OPENSSL_cleanse(kv->v[l], bytes);
    }
    inf_kv_free(kv);
}

void kvs_release(kvs_store *s, const char *session_id, inf_kv *kv) {
    if (!kv->k) {
        memset(kv, 0, sizeof *kv);
        return;
    }
    pthread_mutex_lock(&s->mu);
    cache_ent *e = NULL;
    for (int i = 0; i < s->o.cache_sessions && !e; i++)
        if (s->cache[i].used && s->cache[i].lent && s->cache[i].lent_k == kv->k) e = &s->cache[i];
    if (e && !e->dead && e->p_set && e->p_len == kv->len && e->n_layers == kv->n_layers &&
        e->kv_dim == kv->kv_dim && session_id && !strncmp(e->sid, session_id, KVS_SESSION_ID_LEN)) {
        e->k = kv->k;
        e->v = kv->v;
        e->cap = kv->capacity;
        e->len = e->p_len;
        e->last_step = e->p_step;
        memcpy(e->mid, e->p_mid, 16);
        e->lru = ++s->tick;
        e->lent = e->p_set = 0;
        e->lent_k = NULL;
        cache_unpin(s, e);
        pthread_mutex_unlock(&s->mu);
        memset(kv, 0, sizeof *kv);
        return;
    }
    if (e) { /* not committed as lent (an error, a failed commit, a drop): forget the entry */
        e->lent = e->p_set = 0;
        e->lent_k = NULL;
        e->dead = 1;
        cache_unpin(s, e);
    }
    pthread_mutex_unlock(&s->mu);
    kv_wipe_free(kv);
}

inf_status kvs_commit(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN], const inf_kv *kv,
                      int from, uint64_t step, inf_error *err) {
    const char *sid = session_id;
    if (!valid_sid(sid))
        return inf_fail(err, INF_E_ARG, "KV store: session id \"%.40s\" is not 32 lowercase hex characters",
                        sid ? sid : "(null)");
    if (!kv || kv->n_layers <= 0 || kv->kv_dim <= 0 || kv->len < 0 || from < 0 || from > kv->len)
        return inf_fail(err, INF_E_ARG, "KV session %s: commit of positions [%d, %d) is not valid", sid, from,
                        kv ? kv->len : -1);
    uint64_t bytes;
    if (!checked_bytes((uint64_t)kv->len, (uint64_t)kv->n_layers, (uint64_t)kv->kv_dim, &bytes) ||
        bytes > s->o.max_session_bytes)
        return inf_fail(err, INF_E_RANGE, "KV session %s: %d positions exceed max_session_bytes %zu", sid, kv->len,
                        s->o.max_session_bytes);
    char sdir[PATH_MAX];
    sdir_of(s, sid, sdir, sizeof sdir);
    int lfd, locked;
    inf_status st = lock_session(s, sid, sdir, 1, 0, &lfd, &locked, err);
    if (st) return st;

    manifest cur, nm;
    memset(&nm, 0, sizeof nm);
    int have_cur = 0, wrote_seg = 0, committed = 0;
    st = man_read(s, sdir, sid, key, &cur, err);
    if (st == INF_OK) have_cur = 1;
    else if (st != INF_E_NOTFOUND) goto out; /* wrong key or altered: write nothing */
    st = INF_OK;
    /* Steps only grow: a late job (RunPod redelivering one another worker
     * already ran, a stale duplicate) must not roll the session back. Checked
     * under the session's file lock, so it holds across workers too. */
    if (have_cur && step <= cur.last_step) {
        st = inf_fail(err, INF_E_STALE, "KV session %s: step %llu is not newer than the stored step %llu (a newer request committed first)",
                      sid, (unsigned long long)step, (unsigned long long)cur.last_step);
        goto out;
    }
    if (have_cur && ((int)cur.n_layers != kv->n_layers || (int)cur.kv_dim != kv->kv_dim)) {
        st = inf_fail(err, INF_E_SHAPE, "KV session %s: %s/manifest stores %u layers x kv_dim %u, the commit has %d x %d",
                      sid, sdir, cur.n_layers, cur.kv_dim, kv->n_layers, kv->kv_dim);
        goto out;
    }

    /* Reuse the on-disk prefix only when it is the state the caller's kv
     * descends from: the manifest this store last loaded or committed. */
    uint8_t base[16];
    pthread_mutex_lock(&s->mu);
    int incremental = have_cur && base_get(s, sid, base) && !memcmp(base, cur.mid, 16) && from <= (int)cur.len;
    pthread_mutex_unlock(&s->mu);
    uint32_t kept = 0;
    if (incremental)
        while (kept < cur.nsegs && (int)cur.segs[kept].first < from) kept++;
    int new_seg = from < kv->len;
    if (incremental && (int)(kept + (uint32_t)new_seg) > s->o.max_segments) incremental = 0; /* compact */
    int a = incremental ? from : 0;
    if (!incremental) {
        kept = 0;
        new_seg = kv->len > 0;
    }

    nm.n_layers = (uint32_t)kv->n_layers;
    nm.kv_dim = (uint32_t)kv->kv_dim;
    nm.len = (uint32_t)kv->len;
    nm.last_step = step;
    nm.time = (uint64_t)time(NULL);
    nm.nsegs = kept + (uint32_t)new_seg;
    nm.segs = calloc(nm.nsegs ? nm.nsegs : 1, sizeof *nm.segs);
    if (!nm.segs) {
        st = inf_fail(err, INF_E_NOMEM, "KV session %s: out of memory", sid);
        goto out;
    }
    for (uint32_t i = 0; i < kept; i++) {
        nm.segs[i] = cur.segs[i];
        uint32_t end = cur.segs[i].first + cur.segs[i].used;
        if ((int)end > from) nm.segs[i].used = (uint32_t)from - cur.segs[i].first; /* partial use */
    }
    if ((st = rnd(nm.mid, sizeof nm.mid, err))) goto out;
    if (new_seg) {
        uint64_t id;
        if ((st = rnd(&id, sizeof id, err))) goto out;
        nm.segs[kept] = (seg_ref){.id = id, .first = (uint32_t)a, .n_pos = (uint32_t)(kv->len - a),
                                  .used = (uint32_t)(kv->len - a)};
        if ((st = seg_write(s, sdir, sid, key, kv, a, kv->len, id, err))) goto out;
        wrote_seg = 1;
        /* The segment's name must be durable before a manifest names it. */
        if (fsync_dir(sdir)) {
            st = inf_fail(err, INF_E_IO, "KV session %s: fsync %s: %s", sid, sdir, strerror(errno));
            goto out;
        }
    }
    if ((st = man_write(sdir, sid, key, &nm, err))) goto out;
    committed = 1;
    /* Committed (the rename in man_write). Make it durable, then tidy up. */
    if (fsync_dir(sdir)) st = inf_fail(err, INF_E_IO, "KV session %s: fsync %s after the commit: %s", sid, sdir,
                                       strerror(errno));
    clean_garbage(sdir, &nm, locked);
    pthread_mutex_lock(&s->mu);
    if (!incremental) s->st.full_writes++;
    if (st == INF_OK) base_set(s, sid, nm.mid);
    else base_drop(s, sid);
    pthread_mutex_unlock(&s->mu);
    if (st == INF_OK) {
        uint8_t tag[32];
        keytag(key, sid, tag);
        cache_put(s, sid, tag, incremental ? cur.mid : NULL, nm.mid, kv, incremental ? from : 0, step);
        OPENSSL_cleanse(tag, sizeof tag);
    } else {
        pthread_mutex_lock(&s->mu);
        cache_drop(s, sid);
        pthread_mutex_unlock(&s->mu);
    }

out:
    if (st && wrote_seg && !committed) clean_garbage(sdir, have_cur ? &cur : NULL, locked);
    if (have_cur) man_free(&cur);
    man_free(&nm);
    unlock_session(lfd);
    return st;
}

inf_status kvs_forget(kvs_store *s, const char *session_id, inf_error *err) {
    if (!valid_sid(session_id))
        return inf_fail(err, INF_E_ARG, "KV store: session id \"%.40s\" is not 32 lowercase hex characters",
                        session_id ? session_id : "(null)");
    pthread_mutex_lock(&s->mu);
    cache_drop(s, session_id);
    base_drop(s, session_id);
    pthread_mutex_unlock(&s->mu);
    char sdir[PATH_MAX];
    sdir_of(s, session_id, sdir, sizeof sdir);
    int lfd, locked;
    inf_status st = lock_session(s, session_id, sdir, 0, 0, &lfd, &locked, err);
    if (st == INF_E_NOTFOUND) return INF_OK;
    if (st) return st;
    remove_session_dir(sdir);
    unlock_session(lfd);
    return INF_OK;
}

inf_status kvs_gc(kvs_store *s, time_t now, int *removed, inf_error *err) {
    if (removed) *removed = 0;
    DIR *d = opendir(s->dir);
    if (!d) return inf_fail(err, INF_E_IO, "KV store: cannot list %s: %s", s->dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *sid = de->d_name;
        if (!valid_sid(sid)) continue;
        char sdir[PATH_MAX], mp[PATH_MAX];
        sdir_of(s, sid, sdir, sizeof sdir);
        int lfd, locked;
        inf_error e2;
        if (lock_session(s, sid, sdir, 0, 1, &lfd, &locked, &e2)) continue; /* busy (being committed) or gone */
        snprintf(mp, sizeof mp, "%s/manifest", sdir);
        struct stat sb;
        /* No manifest: a first commit that died; age it by the directory. */
        if (stat(mp, &sb) && stat(sdir, &sb)) {
            unlock_session(lfd);
            continue;
        }
        if ((long long)now - (long long)sb.st_mtime > (long long)s->o.ttl_seconds) {
            pthread_mutex_lock(&s->mu);
            cache_drop(s, sid);
            base_drop(s, sid);
            pthread_mutex_unlock(&s->mu);
            remove_session_dir(sdir);
            if (removed) (*removed)++;
        } else if (locked) {
            DIR *sd = opendir(sdir); /* dead .tmp files: we hold the lock, so no one is writing them */
            if (sd) {
                struct dirent *x;
                while ((x = readdir(sd)))
                    if (!strncmp(x->d_name, ".tmp-", 5)) x_unlinkat(dirfd(sd), x->d_name);
                closedir(sd);
            }
        }
        unlock_session(lfd);
    }
    closedir(d);
    return INF_OK;
}
