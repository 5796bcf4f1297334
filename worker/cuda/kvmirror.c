/* kvmirror.c — device mirrors of session KV caches (contract and the
 * invariant in kvmirror.h). */
#include "kvmirror.h"

#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"

struct kvm_mirror {
    char tag[40];     /* "" = anonymous or unlabelled (never matched) */
    uint64_t version;
    bool labelled;    /* (tag, version) describe rows [0, len) */
    bool busy;        /* held by a forward between acquire and release */
    int len, cap, kvd;
    float *base;      /* [L][2][cap][kvd] f32, NULL = free slot */
    uint64_t used;    /* LRU clock */
};

struct kvm_cache {
    int L, kvd, max;
    size_t budget, bytes;
    uint64_t tick;
    kvm_mirror *m; /* [max] */
};

static size_t mirror_bytes(const kvm_cache *c, int cap) {
    return (size_t)2 * (size_t)c->L * (size_t)cap * (size_t)c->kvd * sizeof(float);
}

inf_status kvm_create(int n_layers, int kv_dim, size_t budget, int max_mirrors, kvm_cache **out, inf_error *err) {
    *out = NULL;
    kvm_cache *c = calloc(1, sizeof *c);
    if (c) c->m = calloc((size_t)max_mirrors, sizeof *c->m);
    if (!c || !c->m) {
        if (c) free(c->m);
        free(c);
        return inf_fail(err, INF_E_NOMEM, "KV mirrors: out of memory");
    }
    c->L = n_layers;
    c->kvd = kv_dim;
    c->max = max_mirrors;
    c->budget = budget;
    *out = c;
    return INF_OK;
}

/* Zeroes (the keys of a session must not outlive it on the device) and frees. */
static void drop(kvm_cache *c, kvm_mirror *m) {
    if (m->base) {
        size_t b = mirror_bytes(c, m->cap);
        /* Best effort: on a failed device these fail too, and there is
         * nothing better to do than let go of the memory. */
        (void)cudaMemset(m->base, 0, b);
        (void)cudaFree(m->base);
        c->bytes -= b;
    }
    memset(m, 0, sizeof *m);
}

void kvm_destroy(kvm_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->max; i++) drop(c, &c->m[i]);
    free(c->m);
    free(c);
}

/* Evicts idle mirrors, least recently used first, until `more` bytes fit
 * the budget. Returns false when they cannot. */
static bool make_room(kvm_cache *c, size_t more, const kvm_mirror *keep) {
    while (c->bytes + more > c->budget) {
        kvm_mirror *lru = NULL;
        for (int i = 0; i < c->max; i++) {
            kvm_mirror *m = &c->m[i];
            if (!m->base || m->busy || m == keep) continue;
            if (!lru || m->used < lru->used) lru = m;
        }
        if (!lru) return false;
        drop(c, lru);
    }
    return true;
}

static int grown_cap(int cur, int need, int max_len) {
    int cap = cur > 0 ? cur : 64;
    while (cap < need) cap = cap > max_len / 2 ? max_len : cap * 2;
    return cap > max_len ? max_len : cap;
}

inf_status kvm_acquire(kvm_cache *c, const inf_kv *kv, int pos, int need, cudaStream_t s, kvm_mirror **out,
                       int *uploaded, inf_error *err) {
    *out = NULL;
    *uploaded = 0;
    if (kv->n_layers != c->L || kv->kv_dim != c->kvd)
        return inf_fail(err, INF_E_ARG, "KV mirrors: the session's cache is %d layers x %d, the model's %d x %d",
                        kv->n_layers, kv->kv_dim, c->L, c->kvd);
    const bool tagged = kv->tag[0] != '\0';
    kvm_mirror *m = NULL;
    if (tagged)
        for (int i = 0; i < c->max && !m; i++)
            if (c->m[i].base && !c->m[i].busy && !strncmp(c->m[i].tag, kv->tag, sizeof c->m[i].tag)) m = &c->m[i];
    bool hit = m && m->labelled && m->version == kv->version && m->len >= pos;
    if (!m) { /* a free slot, else an unlabelled idle one, else the least recently used idle one */
        for (int i = 0; i < c->max && !m; i++)
            if (!c->m[i].base) m = &c->m[i];
        for (int i = 0; i < c->max && !m; i++)
            if (!c->m[i].busy && !c->m[i].labelled) m = &c->m[i];
        if (!m)
            for (int i = 0; i < c->max; i++)
                if (!c->m[i].busy && (!m || c->m[i].used < m->used)) m = &c->m[i];
        if (!m) return inf_fail(err, INF_E_BUSY, "KV mirrors: all %d device mirrors are in use", c->max);
        if (m->base && m->labelled) drop(c, m); /* another session's state: evict (zeroed) */
    }
    m->busy = true;
    m->labelled = false; /* until release: its rows past pos are about to change */
    const int keep = hit ? pos : 0;
    inf_status st = INF_OK;
    if (!m->base || m->cap < need) {
        const int cap = grown_cap(m->base ? m->cap : 0, need, kv->max_len);
        const size_t nb = mirror_bytes(c, cap);
        if (!make_room(c, nb, m)) {
            st = inf_fail(err, INF_E_NOMEM,
                          "KV mirrors: %d positions need %zu MiB of device memory; the budget for session caches is "
                          "%zu MiB (%zu MiB in use)",
                          need, nb >> 20, c->budget >> 20, c->bytes >> 20);
            goto fail;
        }
        float *nbase = NULL;
        if ((st = CU(cudaMalloc((void **)&nbase, nb)))) goto fail;
        c->bytes += nb;
        if (keep > 0) /* rows [0, keep) of all 2L slabs in one strided copy */
            st = CU(cudaMemcpy2DAsync(nbase, (size_t)cap * c->kvd * sizeof(float), m->base,
                                      (size_t)m->cap * c->kvd * sizeof(float), (size_t)keep * c->kvd * sizeof(float),
                                      (size_t)2 * c->L, cudaMemcpyDeviceToDevice, s));
        if (!st && m->base) st = CU(cudaStreamSynchronize(s)); /* the copy is done before the old one goes */
        if (m->base) {
            size_t ob = mirror_bytes(c, m->cap);
            (void)cudaMemset(m->base, 0, ob);
            (void)cudaFree(m->base);
            c->bytes -= ob;
        }
        m->base = nbase;
        m->cap = cap;
        m->kvd = c->kvd;
        if (st) goto fail;
    }
    if (!hit && pos > 0) { /* host rows [0, pos) -> device (pageable source: staged by the driver) */
        const size_t row = (size_t)c->kvd * sizeof(float);
        for (int l = 0; l < c->L && !st; l++) {
            st = CU(cudaMemcpyAsync(kvm_rows(m, l, 0), kv->k[l], (size_t)pos * row, cudaMemcpyHostToDevice, s));
            if (!st)
                st = CU(cudaMemcpyAsync(kvm_rows(m, l, 1), kv->v[l], (size_t)pos * row, cudaMemcpyHostToDevice, s));
        }
        if (st) goto fail;
        *uploaded = pos;
    }
    memset(m->tag, 0, sizeof m->tag);
    if (tagged) memcpy(m->tag, kv->tag, strnlen(kv->tag, sizeof m->tag - 1));
    m->len = pos;
    m->used = ++c->tick;
    *out = m;
    return INF_OK;
fail:
    m->busy = false;
    m->labelled = false;
    m->len = 0;
    return st;
}

void kvm_release(kvm_cache *c, kvm_mirror *m, bool ok, uint64_t version, int len) {
    (void)c;
    if (!m) return;
    m->busy = false;
    m->labelled = ok && m->tag[0] != '\0';
    m->version = version;
    m->len = ok ? len : 0;
}

void kvm_forget(kvm_cache *c, const char *tag) {
    if (!c || !tag || !tag[0]) return;
    for (int i = 0; i < c->max; i++) {
        kvm_mirror *m = &c->m[i];
        if (m->base && !m->busy && !strncmp(m->tag, tag, sizeof m->tag)) drop(c, m);
    }
}

float *kvm_rows(const kvm_mirror *m, int layer, int is_v) {
    return m->base + (size_t)(2 * layer + (is_v ? 1 : 0)) * (size_t)m->cap * (size_t)m->kvd;
}

int kvm_capacity(const kvm_mirror *m) { return m->cap; }
size_t kvm_bytes(const kvm_cache *c) { return c->bytes; }
size_t kvm_budget(const kvm_cache *c) { return c->budget; }
