/* gguf_writer.c — see gguf_writer.h. Written from the GGUF v3 layout:
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x (str key, u32 type, value)        str = u64 len + bytes
 *   n_tensors x (str name, u32 n_dims, u64 dims[n_dims] innermost-first,
 *                u32 ggml_type, u64 offset from the data section)
 *   padding to the alignment, then the data section.
 */
#include "gguf_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"
#include "testutil.h"

#define GW_ALIGN 32

/* ---- growable byte buffer ------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int failed;
} buf;

static void b_put(buf *b, const void *src, size_t n) {
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void b_u32(buf *b, uint32_t v) { b_put(b, &v, 4); }
static void b_u64(buf *b, uint64_t v) { b_put(b, &v, 8); }
static void b_strn(buf *b, const char *s, size_t n) {
    b_u64(b, n);
    b_put(b, s, n);
}
static void b_str(buf *b, const char *s) { b_strn(b, s, strlen(s)); }
static void b_pad(buf *b, size_t align) {
    static const uint8_t zeros[64];
    while (b->n % align) b_put(b, zeros, 1);
}

/* ---- the writer ------------------------------------------------------------------ */

typedef struct {
    char *key;
    buf val; /* u32 type followed by the value bytes */
} kv;

typedef struct {
    char *name;
    uint32_t type;
    int ndim;
    int64_t shape[4];
    buf data;
    bool forced;
    uint64_t offset;
} tensor;

struct gw {
    kv *kvs;
    size_t n_kv, cap_kv;
    tensor *ts;
    size_t n_t, cap_t;
};

gw *gw_new(void) { return calloc(1, sizeof(gw)); }

void gw_free(gw *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->ts[i].name);
        free(w->ts[i].data.p);
    }
    free(w->kvs);
    free(w->ts);
    free(w);
}

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static kv *new_kv(gw *w, const char *key, uint32_t type) {
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        kv *n = realloc(w->kvs, cap * sizeof *n);
        if (!n) return NULL;
        w->kvs = n;
        w->cap_kv = cap;
    }
    kv *k = &w->kvs[w->n_kv];
    memset(k, 0, sizeof *k);
    k->key = dupstr(key);
    if (!k->key) return NULL;
    w->n_kv++;
    b_u32(&k->val, type);
    return k;
}

static int kv_done(kv *k) { return k && !k->val.failed ? 0 : -1; }

int gw_kv_u32(gw *w, const char *key, uint32_t v) {
    kv *k = new_kv(w, key, 4);
    if (k) b_u32(&k->val, v);
    return kv_done(k);
}

int gw_kv_i32(gw *w, const char *key, int32_t v) {
    kv *k = new_kv(w, key, 5);
    if (k) b_put(&k->val, &v, 4);
    return kv_done(k);
}

int gw_kv_f32(gw *w, const char *key, float v) {
    kv *k = new_kv(w, key, 6);
    if (k) b_put(&k->val, &v, 4);
    return kv_done(k);
}

int gw_kv_bool(gw *w, const char *key, bool v) {
    kv *k = new_kv(w, key, 7);
    uint8_t b = v ? 1 : 0;
    if (k) b_put(&k->val, &b, 1);
    return kv_done(k);
}

int gw_kv_str(gw *w, const char *key, const char *v) {
    kv *k = new_kv(w, key, 8);
    if (k) b_str(&k->val, v);
    return kv_done(k);
}

int gw_kv_arr_strn(gw *w, const char *key, const char *const *v, const size_t *lens, size_t n) {
    kv *k = new_kv(w, key, 9);
    if (!k) return -1;
    b_u32(&k->val, 8);
    b_u64(&k->val, n);
    for (size_t i = 0; i < n; i++) b_strn(&k->val, v[i], lens ? lens[i] : strlen(v[i]));
    return kv_done(k);
}

int gw_kv_arr_str(gw *w, const char *key, const char *const *v, size_t n) {
    return gw_kv_arr_strn(w, key, v, NULL, n);
}

int gw_kv_arr_i32(gw *w, const char *key, const int32_t *v, size_t n) {
    kv *k = new_kv(w, key, 9);
    if (!k) return -1;
    b_u32(&k->val, 5);
    b_u64(&k->val, n);
    b_put(&k->val, v, n * 4);
    return kv_done(k);
}

int gw_kv_arr_f32(gw *w, const char *key, const float *v, size_t n) {
    kv *k = new_kv(w, key, 9);
    if (!k) return -1;
    b_u32(&k->val, 6);
    b_u64(&k->val, n);
    b_put(&k->val, v, n * 4);
    return kv_done(k);
}

int gw_drop_kv(gw *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].key);
            free(w->kvs[i].val.p);
            memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof *w->kvs);
            w->n_kv--;
            return 0;
        }
    return -1;
}

int gw_drop_tensor(gw *w, const char *name) {
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->ts[i].name, name) == 0) {
            free(w->ts[i].name);
            free(w->ts[i].data.p);
            memmove(&w->ts[i], &w->ts[i + 1], (w->n_t - i - 1) * sizeof *w->ts);
            w->n_t--;
            return 0;
        }
    return -1;
}

size_t gw_n_tensors(const gw *w) { return w->n_t; }

static tensor *new_tensor(gw *w, const char *name, uint32_t type, int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > 4) return NULL;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        tensor *n = realloc(w->ts, cap * sizeof *n);
        if (!n) return NULL;
        w->ts = n;
        w->cap_t = cap;
    }
    tensor *t = &w->ts[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = dupstr(name);
    if (!t->name) return NULL;
    t->type = type;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    w->n_t++;
    return t;
}

int gw_tensor_raw(gw *w, const char *name, uint32_t type, int ndim, const int64_t *shape,
                  const void *bytes, size_t nbytes) {
    tensor *t = new_tensor(w, name, type, ndim, shape);
    if (!t) return -1;
    b_put(&t->data, bytes, nbytes);
    return t->data.failed ? -1 : 0;
}

int gw_force_offset(gw *w, size_t index, uint64_t offset) {
    if (index >= w->n_t) return -1;
    w->ts[index].forced = true;
    w->ts[index].offset = offset;
    return 0;
}

/* ---- quantizers (GGML block layouts, see common/tensor.h) ------------------------- */

static void put_f16(uint8_t *p, float f) {
    uint16_t h = inf_f32_to_f16(f);
    memcpy(p, &h, 2);
}

void gw_quantize_q8_0(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / 32; b++, x += 32, out += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(out, d);
        for (int j = 0; j < 32; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void gw_quantize_q4_0(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / 32; b++, x += 32, out += 18) {
        float amax = 0.0f, max = 0.0f; /* the element of largest magnitude, with its sign */
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(out, d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(int8_t)(x[j] * id + 8.5f);
            int q1 = (int)(int8_t)(x[j + 16] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            out[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void gw_quantize_q4_1(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / 32; b++, x += 32, out += 20) {
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; j++) {
            mn = fminf(mn, x[j]);
            mx = fmaxf(mx, x[j]);
        }
        float d = (mx - mn) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        put_f16(out, d);
        put_f16(out + 2, mn);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(int8_t)((x[j] - mn) * id + 0.5f);
            int q1 = (int)(int8_t)((x[j + 16] - mn) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            out[4 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

int gw_tensor(gw *w, const char *name, int type, int ndim, const int64_t *shape, const float *data) {
    if (ndim < 1 || ndim > 4) return -1;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        n *= (size_t)shape[i];
    }
    size_t cols = (size_t)shape[ndim - 1], nbytes;
    switch (type) {
    case GW_F32: nbytes = n * 4; break;
    case GW_F16:
    case GW_BF16: nbytes = n * 2; break;
    case GW_Q8_0: nbytes = n / 32 * 34; break;
    case GW_Q4_0: nbytes = n / 32 * 18; break;
    case GW_Q4_1: nbytes = n / 32 * 20; break;
    default: return -1;
    }
    if ((type == GW_Q8_0 || type == GW_Q4_0 || type == GW_Q4_1) && cols % 32 != 0) return -1;
    uint8_t *q = malloc(nbytes ? nbytes : 1);
    if (!q) return -1;
    switch (type) {
    case GW_F32: memcpy(q, data, nbytes); break;
    case GW_F16:
        for (size_t i = 0; i < n; i++) put_f16(q + 2 * i, data[i]);
        break;
    case GW_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = inf_f32_to_bf16(data[i]);
            memcpy(q + 2 * i, &h, 2);
        }
        break;
    case GW_Q8_0: gw_quantize_q8_0(data, n, q); break;
    case GW_Q4_0: gw_quantize_q4_0(data, n, q); break;
    case GW_Q4_1: gw_quantize_q4_1(data, n, q); break;
    }
    int rc = gw_tensor_raw(w, name, (uint32_t)type, ndim, shape, q, nbytes);
    free(q);
    return rc;
}

/* ---- serialization ------------------------------------------------------------------ */

int gw_bytes(const gw *w, uint8_t **out, size_t *len) {
    buf b = {0};
    *out = NULL;
    *len = 0;
    b_put(&b, "GGUF", 4);
    b_u32(&b, 3);
    b_u64(&b, w->n_t);
    b_u64(&b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        b_str(&b, w->kvs[i].key);
        b_put(&b, w->kvs[i].val.p, w->kvs[i].val.n);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const tensor *t = &w->ts[i];
        b_str(&b, t->name);
        b_u32(&b, (uint32_t)t->ndim);
        for (int d = t->ndim - 1; d >= 0; d--) b_u64(&b, (uint64_t)t->shape[d]); /* innermost first */
        b_u32(&b, t->type);
        b_u64(&b, t->forced ? t->offset : off);
        off += (t->data.n + GW_ALIGN - 1) / GW_ALIGN * GW_ALIGN;
    }
    b_pad(&b, GW_ALIGN);
    for (size_t i = 0; i < w->n_t; i++) {
        b_put(&b, w->ts[i].data.p, w->ts[i].data.n);
        b_pad(&b, GW_ALIGN);
    }
    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}

int gw_write(const gw *w, const char *path) {
    uint8_t *p;
    size_t n;
    if (gw_bytes(w, &p, &n) != 0) return -1;
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(p, 1, n, f) == n ? 0 : -1;
        if (fclose(f) != 0) rc = -1;
    }
    free(p);
    return rc;
}

/* ---- the tiny random Llama --------------------------------------------------------------- */

void gw_tiny_defaults(gw_tiny_opts *o) {
    o->dim = 64;
    o->n_layers = 2;
    o->n_heads = 4;
    o->n_kv_heads = 2;
    o->ffn_dim = 128;
    o->vocab = 259;
    o->ctx = 128;
    o->wtype = GW_F32;
    o->tied = true;
    o->seed = 42;
}

/* splitmix64: small, fixed, and the same on every platform. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static float next_unit(uint64_t *s) {
    return (float)((double)(next_u64(s) >> 40) / (double)(1ull << 23) - 1.0);
}

static int add_random(gw *w, uint64_t *rng, const char *name, int type, int64_t rows, int64_t cols,
                      float center, float scale) {
    size_t n = rows > 0 ? (size_t)rows * (size_t)cols : (size_t)cols;
    float *v = malloc(n * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < n; i++) v[i] = center + scale * next_unit(rng);
    int64_t shape2[2] = {rows, cols}, shape1[1] = {cols};
    int rc = rows > 0 ? gw_tensor(w, name, type, 2, shape2, v) : gw_tensor(w, name, type, 1, shape1, v);
    free(v);
    return rc;
}

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the
 * others are shifted to U+0100.. in byte order. Writes UTF-8, returns length. */
static size_t byte_token(int byte, char out[4]) {
    int printable = (byte >= '!' && byte <= '~') || (byte >= 0xa1 && byte <= 0xac) ||
                    (byte >= 0xae && byte <= 0xff);
    unsigned cp;
    if (printable) {
        cp = (unsigned)byte;
    } else {
        int k = 0;
        for (int b = 0; b < byte; b++) {
            int p = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
            if (!p) k++;
        }
        cp = 256u + (unsigned)k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

int gw_add_tiny_llama(gw *w, const gw_tiny_opts *o) {
    int rc = 0;
    int hd = o->dim / o->n_heads;
    rc |= gw_kv_str(w, "general.architecture", "llama");
    rc |= gw_kv_str(w, "general.name", "infemeral-tiny-random");
    rc |= gw_kv_u32(w, "general.alignment", GW_ALIGN);
    rc |= gw_kv_u32(w, "llama.context_length", (uint32_t)o->ctx);
    rc |= gw_kv_u32(w, "llama.embedding_length", (uint32_t)o->dim);
    rc |= gw_kv_u32(w, "llama.block_count", (uint32_t)o->n_layers);
    rc |= gw_kv_u32(w, "llama.feed_forward_length", (uint32_t)o->ffn_dim);
    rc |= gw_kv_u32(w, "llama.attention.head_count", (uint32_t)o->n_heads);
    rc |= gw_kv_u32(w, "llama.attention.head_count_kv", (uint32_t)o->n_kv_heads);
    rc |= gw_kv_u32(w, "llama.rope.dimension_count", (uint32_t)hd);
    rc |= gw_kv_f32(w, "llama.rope.freq_base", 10000.0f);
    rc |= gw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    rc |= gw_kv_u32(w, "llama.vocab_size", (uint32_t)o->vocab);

    /* tokenizer: 256 byte tokens, then control tokens */
    size_t nv = (size_t)o->vocab;
    char **toks = calloc(nv ? nv : 1, sizeof *toks);
    size_t *lens = calloc(nv ? nv : 1, sizeof *lens);
    int32_t *types = calloc(nv ? nv : 1, sizeof *types);
    if (!toks || !lens || !types) {
        free(toks);
        free(lens);
        free(types);
        return -1;
    }
    static const char *ctl[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (size_t i = 0; i < nv; i++) {
        toks[i] = malloc(32);
        if (!toks[i]) {
            rc = -1;
            continue;
        }
        if (i < 256) {
            lens[i] = byte_token((int)i, toks[i]);
            types[i] = 6; /* byte */
        } else {
            if (i < 259)
                snprintf(toks[i], 32, "%s", ctl[i - 256]);
            else
                snprintf(toks[i], 32, "<|extra_%zu|>", i - 259);
            lens[i] = strlen(toks[i]);
            types[i] = 3; /* control */
        }
    }
    if (rc == 0) {
        rc |= gw_kv_str(w, "tokenizer.ggml.model", "gpt2");
        rc |= gw_kv_str(w, "tokenizer.ggml.pre", "default");
        rc |= gw_kv_arr_strn(w, "tokenizer.ggml.tokens", (const char *const *)toks, lens, nv);
        rc |= gw_kv_arr_i32(w, "tokenizer.ggml.token_type", types, nv);
        rc |= gw_kv_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
        if (nv > 257) rc |= gw_kv_u32(w, "tokenizer.ggml.bos_token_id", 257);
        if (nv > 256) rc |= gw_kv_u32(w, "tokenizer.ggml.eos_token_id", 256);
        if (nv > 258) rc |= gw_kv_u32(w, "tokenizer.ggml.eot_token_id", 258);
        rc |= gw_kv_bool(w, "tokenizer.ggml.add_bos_token", false);
    }
    for (size_t i = 0; i < nv; i++) free(toks[i]);
    free(toks);
    free(lens);
    free(types);
    if (rc) return -1;

    uint64_t rng = o->seed;
    int64_t d = o->dim, f = o->ffn_dim, qd = (int64_t)o->n_heads * hd, kvd = (int64_t)o->n_kv_heads * hd;
    float sd = 1.0f / sqrtf((float)d), sf = 1.0f / sqrtf((float)f);
    rc |= add_random(w, &rng, "token_embd.weight", o->wtype, o->vocab, d, 0.0f, 1.0f);
    rc |= add_random(w, &rng, "output_norm.weight", GW_F32, 0, d, 1.0f, 0.1f);
    if (!o->tied) rc |= add_random(w, &rng, "output.weight", o->wtype, o->vocab, d, 0.0f, sd);
    for (int l = 0; l < o->n_layers && rc == 0; l++) {
        char nm[64];
#define R(suffix, type, rows, cols, center, scale)                          \
    snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                        \
    rc |= add_random(w, &rng, nm, type, rows, cols, center, scale);
        R("attn_norm.weight", GW_F32, 0, d, 1.0f, 0.1f)
        R("attn_q.weight", o->wtype, qd, d, 0.0f, sd)
        R("attn_k.weight", o->wtype, kvd, d, 0.0f, sd)
        R("attn_v.weight", o->wtype, kvd, d, 0.0f, sd)
        R("attn_output.weight", o->wtype, d, qd, 0.0f, sd)
        R("ffn_norm.weight", GW_F32, 0, d, 1.0f, 0.1f)
        R("ffn_gate.weight", o->wtype, f, d, 0.0f, sd)
        R("ffn_up.weight", o->wtype, f, d, 0.0f, sd)
        R("ffn_down.weight", o->wtype, d, f, 0.0f, sf)
#undef R
    }
    return rc ? -1 : 0;
}

int gw_write_tiny_llama_tmp(char *dir, size_t dcap, char *path, size_t pcap, const gw_tiny_opts *o) {
    char own[512];
    if (!dir) {
        dir = own;
        dcap = sizeof own;
    }
    if (!tu_tmpdir(dir, dcap)) return -1;
    if ((size_t)snprintf(path, pcap, "%s/tiny.gguf", dir) >= pcap) return -1;
    return gw_write_tiny_llama(path, o);
}

int gw_write_tiny_llama(const char *path, const gw_tiny_opts *o) {
    gw_tiny_opts def;
    if (!o) {
        gw_tiny_defaults(&def);
        o = &def;
    }
    gw *w = gw_new();
    if (!w) return -1;
    int rc = gw_add_tiny_llama(w, o);
    if (rc == 0) rc = gw_write(w, path);
    gw_free(w);
    return rc;
}
