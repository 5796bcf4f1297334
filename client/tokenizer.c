/* tokenizer.c — the tokenizer core: lookup tables, BPE merging, pre-splitting,
 * special-token partitioning, decoding and the streaming detokenizer.
 * Loaders (tok_load.c) build a tokenizer through tok_new / tok_set_token /
 * tok_add_merge / tok_add_split / tok_finish.
 *
 * Merging is O(n log n) per pre-split piece: symbols form a linked list and
 * candidate pairs sit in a binary heap; a popped pair whose symbols changed
 * since it was pushed is stale and dropped (checked by the lengths of both
 * sides). Lookups go through small open-addressing hash tables.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *text; /* vocabulary spelling, NUL-terminated */
    char *bytes; /* what the token decodes to (may alias text) */
    uint32_t text_len, bytes_len;
    float score;
    uint8_t type;
} tok_entry;

typedef struct {
    int32_t a, b; /* left, right token ids */
    int32_t rank, id; /* merge rank, merged token id */
} pair_slot;

struct tok_tokenizer {
    tok_kind kind;
    int n;
    char *source;
    tok_entry *tok;
    tok_config cfg;
    bool finished;

    int32_t *text_slots; /* text -> id (every token) */
    size_t text_cap;
    int32_t *match_slots; /* match key -> id (tokens BPE may produce) */
    size_t match_cap;
    pair_slot *pairs; /* BPE merges */
    size_t pair_cap, pair_n;
    int32_t n_merges;

    int32_t byte_id[256];
    pcre2_code **re;
    int n_re;

    int32_t *special; /* tokens recognised in text, longest first */
    int n_special;
    uint8_t special_first[256];

    bool all_bytes; /* every byte value has a token */
    int32_t eog[16];
    int n_eog;
    size_t max_piece;
};

/* ---- hashing ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static void text_key(const tok_tokenizer *t, int32_t id, const char **p, size_t *n) {
    *p = t->tok[id].text;
    *n = t->tok[id].text_len;
}

/* SPM matches the vocabulary spelling (input spaces are escaped to '▁'); the
 * byte-level kinds match the decoded bytes. */
static void match_key(const tok_tokenizer *t, int32_t id, const char **p, size_t *n) {
    if (t->kind == TOK_KIND_SPM) {
        *p = t->tok[id].text;
        *n = t->tok[id].text_len;
    } else {
        *p = t->tok[id].bytes;
        *n = t->tok[id].bytes_len;
    }
}

typedef void (*key_fn)(const tok_tokenizer *, int32_t, const char **, size_t *);

static int32_t slots_find(const tok_tokenizer *t, const int32_t *slots, size_t cap, key_fn key,
                          const char *s, size_t n) {
    if (!slots) return -1;
    size_t i = (size_t)hash_bytes(s, n) & (cap - 1);
    for (;;) {
        int32_t id = slots[i];
        if (id < 0) return -1;
        const char *p;
        size_t len;
        key(t, id, &p, &len);
        if (len == n && memcmp(p, s, n) == 0) return id;
        i = (i + 1) & (cap - 1);
    }
}

/* Inserts id unless its key is present (first one wins). */
static void slots_insert(const tok_tokenizer *t, int32_t *slots, size_t cap, key_fn key, int32_t id) {
    const char *s;
    size_t n;
    key(t, id, &s, &n);
    size_t i = (size_t)hash_bytes(s, n) & (cap - 1);
    for (;;) {
        int32_t o = slots[i];
        if (o < 0) {
            slots[i] = id;
            return;
        }
        const char *p;
        size_t len;
        key(t, o, &p, &len);
        if (len == n && memcmp(p, s, n) == 0) return;
        i = (i + 1) & (cap - 1);
    }
}

static uint64_t hash_pair(int32_t a, int32_t b) {
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static const pair_slot *pair_find(const tok_tokenizer *t, int32_t a, int32_t b) {
    if (!t->pairs) return NULL;
    size_t i = (size_t)hash_pair(a, b) & (t->pair_cap - 1);
    for (;;) {
        const pair_slot *p = &t->pairs[i];
        if (p->id < 0) return NULL;
        if (p->a == a && p->b == b) return p;
        i = (i + 1) & (t->pair_cap - 1);
    }
}

static int pair_insert(tok_tokenizer *t, pair_slot ps) {
    if ((t->pair_n + 1) * 2 > t->pair_cap) {
        size_t ncap = t->pair_cap ? t->pair_cap * 2 : 1024;
        pair_slot *np = malloc(ncap * sizeof *np);
        if (!np) return -1;
        for (size_t i = 0; i < ncap; i++) np[i].id = -1;
        for (size_t j = 0; j < t->pair_cap; j++) {
            if (t->pairs[j].id < 0) continue;
            size_t i = (size_t)hash_pair(t->pairs[j].a, t->pairs[j].b) & (ncap - 1);
            while (np[i].id >= 0) i = (i + 1) & (ncap - 1);
            np[i] = t->pairs[j];
        }
        free(t->pairs);
        t->pairs = np;
        t->pair_cap = ncap;
    }
    size_t i = (size_t)hash_pair(ps.a, ps.b) & (t->pair_cap - 1);
    while (t->pairs[i].id >= 0) {
        if (t->pairs[i].a == ps.a && t->pairs[i].b == ps.b) return 0; /* first rank wins */
        i = (i + 1) & (t->pair_cap - 1);
    }
    t->pairs[i] = ps;
    t->pair_n++;
    return 0;
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Classifies the bytes at s[0..n): returns the length of a complete valid
 * character (> 0), 0 when they are a valid but incomplete prefix, or -k when
 * the first k >= 1 bytes can never start a character (one U+FFFD). */
static int utf8_class(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return -1;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return 0;
        unsigned b = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) return -k;
    }
    return need + 1;
}

/* Length of the character starting at s (invalid bytes count as one). */
static size_t utf8_step(const unsigned char *s, size_t n) {
    int c = utf8_class(s, n);
    return c > 0 ? (size_t)c : 1;
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's byte <-> unicode table: printable bytes stand for themselves, the
 * others map to U+0100.. in byte order. */
static uint32_t gpt2_byte_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
    return 256 + k;
}

/* Undoes the mapping of `text` into out (capacity >= len); returns the byte
 * count, or -1 when a character is not in the table. */
static long gpt2_unmap(const int16_t inv[324], const char *text, size_t len, char *out) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, o = 0;
    while (i < len) {
        int c = utf8_class(s + i, len - i);
        if (c <= 0) return -1;
        uint32_t cp;
        if (c == 1) cp = s[i];
        else if (c == 2) cp = ((s[i] & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
        else return -1; /* the table only reaches U+0143 */
        if (cp >= 324 || inv[cp] < 0) return -1;
        out[o++] = (char)inv[cp];
        i += (size_t)c;
    }
    return (long)o;
}

/* ---- building ------------------------------------------------------------------------------- */

void tok_config_default(tok_config *c) {
    memset(c, 0, sizeof *c);
    c->bos = c->eos = c->eot = c->eom = c->unk = c->pad = -1;
}

inf_status tok_new(tok_kind kind, int n_vocab, const char *source, tok_tokenizer **out,
                   inf_error *err) {
    *out = NULL;
    const char *src = source ? source : "(tokenizer)";
    if (n_vocab <= 0 || n_vocab > (1 << 24))
        return inf_fail(err, INF_E_RANGE, "%s: vocabulary size %d is out of range (1..16777216)", src,
                        n_vocab);
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", src);
    t->kind = kind;
    t->n = n_vocab;
    t->source = strdup(src);
    t->tok = calloc((size_t)n_vocab, sizeof *t->tok);
    if (!t->source || !t->tok) {
        tok_free(t);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory for %d tokens", src, n_vocab);
    }
    tok_config_default(&t->cfg);
    *out = t;
    return INF_OK;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    if (t->tok) {
        for (int i = 0; i < t->n; i++) {
            if (t->tok[i].bytes != t->tok[i].text) free(t->tok[i].bytes);
            free(t->tok[i].text);
        }
    }
    free(t->tok);
    free(t->source);
    free(t->text_slots);
    free(t->match_slots);
    free(t->pairs);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->re);
    free(t->special);
    free(t);
}

inf_status tok_set_token(tok_tokenizer *t, int32_t id, const char *text, size_t len, float score,
                         tok_type type, inf_error *err) {
    if (t->finished) return inf_fail(err, INF_E_ARG, "%s: tokenizer is already finished", t->source);
    if (id < 0 || id >= t->n)
        return inf_fail(err, INF_E_RANGE, "%s: token id %d is out of range (vocabulary %d)",
                        t->source, (int)id, t->n);
    if (len > (1u << 20))
        return inf_fail(err, INF_E_RANGE, "%s: token %d is %zu bytes long", t->source, (int)id, len);
    tok_entry *e = &t->tok[id];
    if (e->bytes != e->text) free(e->bytes);
    free(e->text);
    e->bytes = NULL;
    e->text = malloc(len + 1);
    if (!e->text) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    if (len) memcpy(e->text, text, len);
    e->text[len] = '\0';
    e->text_len = (uint32_t)len;
    e->score = score;
    e->type = (uint8_t)(type == TOK_TYPE_UNDEFINED ? TOK_TYPE_NORMAL : type);
    return INF_OK;
}

static inf_status build_text_hash(tok_tokenizer *t, inf_error *err) {
    if (t->text_slots) return INF_OK;
    for (int i = 0; i < t->n; i++)
        if (!t->tok[i].text) { /* an unset slot: empty, unused */
            t->tok[i].text = calloc(1, 1);
            if (!t->tok[i].text) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
            t->tok[i].type = TOK_TYPE_UNUSED;
        }
    t->text_cap = pow2_at_least((size_t)t->n * 2);
    t->text_slots = malloc(t->text_cap * sizeof *t->text_slots);
    if (!t->text_slots) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    memset(t->text_slots, 0xff, t->text_cap * sizeof *t->text_slots);
    for (int i = 0; i < t->n; i++) slots_insert(t, t->text_slots, t->text_cap, text_key, i);
    return INF_OK;
}

inf_status tok_add_merge(tok_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                         inf_error *err) {
    if (t->finished) return inf_fail(err, INF_E_ARG, "%s: tokenizer is already finished", t->source);
    inf_status st = build_text_hash(t, err);
    if (st) return st;
    int32_t rank = t->n_merges++;
    int32_t ia = slots_find(t, t->text_slots, t->text_cap, text_key, a, alen);
    int32_t ib = slots_find(t, t->text_slots, t->text_cap, text_key, b, blen);
    if (ia < 0 || ib < 0) return INF_OK;
    char stack[256];
    char *cat = alen + blen <= sizeof stack ? stack : malloc(alen + blen);
    if (!cat) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int32_t id = slots_find(t, t->text_slots, t->text_cap, text_key, cat, alen + blen);
    if (cat != stack) free(cat);
    if (id < 0) return INF_OK;
    if (pair_insert(t, (pair_slot){ia, ib, rank, id}))
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory for merges", t->source);
    return INF_OK;
}

inf_status tok_add_split(tok_tokenizer *t, const char *pattern, inf_error *err) {
    int ec;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return inf_fail(err, INF_E_FORMAT, "%s: pre-split regex \"%.200s\" does not compile at offset %zu: %s",
                        t->source, pattern, (size_t)eoff, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    pcre2_code **nr = realloc(t->re, (size_t)(t->n_re + 1) * sizeof *nr);
    if (!nr) {
        pcre2_code_free(re);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    }
    t->re = nr;
    t->re[t->n_re++] = re;
    return INF_OK;
}

static int cmp_u64(const void *pa, const void *pb) {
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

static inf_status check_id(const tok_tokenizer *t, const char *what, int32_t id, inf_error *err) {
    if (id < -1 || id >= t->n)
        return inf_fail(err, INF_E_RANGE, "%s: %s token id %d is out of range (vocabulary %d)",
                        t->source, what, (int)id, t->n);
    return INF_OK;
}

static void add_eog(tok_tokenizer *t, int32_t id) {
    if (id < 0 || t->n_eog >= (int)(sizeof t->eog / sizeof t->eog[0])) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

/* Sets tok[i].bytes from the text and type. */
static inf_status compute_bytes(tok_tokenizer *t, int32_t i, const int16_t inv[324],
                                inf_error *err) {
    tok_entry *e = &t->tok[i];
    e->bytes = e->text;
    e->bytes_len = e->text_len;
    if (e->type == TOK_TYPE_CONTROL) {
        e->bytes_len = 0;
        return INF_OK;
    }
    if (t->kind == TOK_KIND_BPE) {
        if (e->type == TOK_TYPE_USER_DEFINED) return INF_OK; /* added tokens are spelled raw */
        char *b = malloc(e->text_len + 1);
        if (!b) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
        long n = gpt2_unmap(inv, e->text, e->text_len, b);
        if (n < 0) { /* not byte-mapped (e.g. an added token): decode as written */
            free(b);
            return INF_OK;
        }
        e->bytes = b;
        e->bytes_len = (uint32_t)n;
    } else if (t->kind == TOK_KIND_SPM) {
        unsigned v;
        char tail;
        if (e->type == TOK_TYPE_BYTE && e->text_len == 6 && sscanf(e->text, "<0x%2X>%c", &v, &tail) == 1) {
            char *b = malloc(2);
            if (!b) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
            b[0] = (char)v;
            b[1] = '\0';
            e->bytes = b;
            e->bytes_len = 1;
        } else if (t->cfg.escape_spaces && strstr(e->text, "\xe2\x96\x81")) {
            char *b = malloc(e->text_len + 1);
            if (!b) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
            size_t o = 0;
            for (uint32_t k = 0; k < e->text_len;) {
                if (k + 3 <= e->text_len && memcmp(e->text + k, "\xe2\x96\x81", 3) == 0) {
                    b[o++] = ' ';
                    k += 3;
                } else b[o++] = e->text[k++];
            }
            b[o] = '\0';
            e->bytes = b;
            e->bytes_len = (uint32_t)o;
        }
    }
    return INF_OK;
}

inf_status tok_finish(tok_tokenizer *t, const tok_config *c, inf_error *err) {
    if (t->finished) return INF_OK;
    inf_status st;
    t->cfg = *c;
    if ((st = check_id(t, "BOS", c->bos, err)) || (st = check_id(t, "EOS", c->eos, err)) ||
        (st = check_id(t, "EOT", c->eot, err)) || (st = check_id(t, "EOM", c->eom, err)) ||
        (st = check_id(t, "unknown", c->unk, err)) || (st = check_id(t, "padding", c->pad, err)))
        return st;
    if ((st = build_text_hash(t, err))) return st;
    int16_t inv[324];
    for (int i = 0; i < 324; i++) inv[i] = -1;
    for (unsigned b = 0; b < 256; b++) inv[gpt2_byte_cp(b)] = (int16_t)b;
    for (int32_t i = 0; i < t->n; i++)
        if ((st = compute_bytes(t, i, inv, err))) return st;

    t->match_cap = pow2_at_least((size_t)t->n * 2);
    t->match_slots = malloc(t->match_cap * sizeof *t->match_slots);
    t->special = malloc((size_t)t->n * sizeof *t->special);
    if (!t->match_slots || !t->special) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    memset(t->match_slots, 0xff, t->match_cap * sizeof *t->match_slots);
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t ty = t->tok[i].type;
        if (ty == TOK_TYPE_CONTROL) continue;
        if (t->kind == TOK_KIND_SPM && ty == TOK_TYPE_BYTE) continue;
        if (t->tok[i].text_len == 0) continue;
        slots_insert(t, t->match_slots, t->match_cap, match_key, i);
    }

    /* byte -> token */
    for (int b = 0; b < 256; b++) {
        int32_t id = -1;
        if (t->kind == TOK_KIND_BPE) {
            char u[4];
            size_t n = utf8_put(gpt2_byte_cp((unsigned)b), u);
            id = slots_find(t, t->text_slots, t->text_cap, text_key, u, n);
        } else if (t->kind == TOK_KIND_TIKTOKEN) {
            char u = (char)b;
            id = slots_find(t, t->match_slots, t->match_cap, match_key, &u, 1);
        } else {
            char u[8];
            snprintf(u, sizeof u, "<0x%02X>", b);
            id = slots_find(t, t->text_slots, t->text_cap, text_key, u, 6);
        }
        t->byte_id[b] = id;
    }
    t->all_bytes = true;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) t->all_bytes = false;

    /* tokens recognised in raw text */
    t->n_special = 0;
    for (int32_t i = 0; i < t->n; i++) {
        uint8_t ty = t->tok[i].type;
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->tok[i].text_len > 0) {
            t->special[t->n_special++] = i;
            t->special_first[(unsigned char)t->tok[i].text[0]] = 1;
        }
    }
    /* longest first (so "<|im_start|>" wins over a shorter prefix), then by id */
    uint64_t *keys = malloc(((size_t)t->n_special + 1) * sizeof *keys);
    if (!keys) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", t->source);
    for (int k = 0; k < t->n_special; k++)
        keys[k] = ((uint64_t)(0xFFFFFFFFu - t->tok[t->special[k]].text_len) << 32) |
                  (uint32_t)t->special[k];
    qsort(keys, (size_t)t->n_special, sizeof *keys, cmp_u64);
    for (int k = 0; k < t->n_special; k++) t->special[k] = (int32_t)(keys[k] & 0xFFFFFFFFu);
    free(keys);

    /* end of generation */
    t->n_eog = 0;
    add_eog(t, c->eos);
    add_eog(t, c->eot);
    add_eog(t, c->eom);
    static const char *const eog_names[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>",
                                            "<|end_of_text|>", "<|endoftext|>", "<|end|>"};
    for (size_t k = 0; k < sizeof eog_names / sizeof eog_names[0]; k++) {
        int32_t id = slots_find(t, t->text_slots, t->text_cap, text_key, eog_names[k],
                                strlen(eog_names[k]));
        if (id >= 0 && t->tok[id].type == TOK_TYPE_CONTROL) add_eog(t, id);
    }

    t->max_piece = 0;
    for (int32_t i = 0; i < t->n; i++)
        if (t->tok[i].bytes_len > t->max_piece) t->max_piece = t->tok[i].bytes_len;
    t->finished = true;
    return INF_OK;
}

/* ---- queries -------------------------------------------------------------------------------- */

int tok_vocab_size(const tok_tokenizer *t) { return t->n; }
int tok_bos(const tok_tokenizer *t) { return t->cfg.bos; }
int tok_eos(const tok_tokenizer *t) { return t->cfg.eos; }
int tok_eot(const tok_tokenizer *t) { return t->cfg.eot; }
bool tok_add_bos(const tok_tokenizer *t) { return t->cfg.add_bos && t->cfg.bos >= 0; }
size_t tok_max_piece(const tok_tokenizer *t) { return t->max_piece; }
size_t tok_stream_cap(const tok_tokenizer *t) { return 3 * (t->max_piece + 3); }

bool tok_is_eog(const tok_tokenizer *t, int32_t id) {
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

int32_t tok_find(const tok_tokenizer *t, const char *piece) {
    if (!piece) return -1;
    return slots_find(t, t->text_slots, t->text_cap, text_key, piece, strlen(piece));
}

const char *tok_text(const tok_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n) return NULL;
    return t->tok[id].text;
}

/* ---- encoding ------------------------------------------------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

static int idvec_push(idvec *v, int32_t id) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, nc * sizeof *p);
        if (!p) return -1;
        v->v = p;
        v->cap = nc;
    }
    v->v[v->n++] = id;
    return 0;
}

typedef struct {
    double prio; /* smaller first */
    int32_t left, right;
    uint32_t llen, rlen;
    int32_t id;
} cand;

typedef struct {
    /* symbols */
    int32_t *prev, *next, *id;
    uint32_t *start, *len;
    size_t sym_cap;
    cand *heap;
    size_t heap_n, heap_cap;
    /* pieces */
    size_t *pa, *pb; /* (start, len) pairs */
    size_t pa_n, pa_cap, pb_n, pb_cap;
    pcre2_match_data *md;
    char *esc; /* SPM: escaped text */
    size_t esc_cap;
} scratch;

static void scratch_free(scratch *s) {
    free(s->prev);
    free(s->next);
    free(s->id);
    free(s->start);
    free(s->len);
    free(s->heap);
    free(s->pa);
    free(s->pb);
    free(s->esc);
    if (s->md) pcre2_match_data_free(s->md);
}

static int scratch_syms(scratch *s, size_t n) {
    if (n <= s->sym_cap) return 0;
    size_t c = pow2_at_least(n);
    int32_t *a = realloc(s->prev, c * sizeof *a);
    if (!a) return -1;
    s->prev = a;
    if (!(a = realloc(s->next, c * sizeof *a))) return -1;
    s->next = a;
    if (!(a = realloc(s->id, c * sizeof *a))) return -1;
    s->id = a;
    uint32_t *u = realloc(s->start, c * sizeof *u);
    if (!u) return -1;
    s->start = u;
    if (!(u = realloc(s->len, c * sizeof *u))) return -1;
    s->len = u;
    cand *h = realloc(s->heap, 3 * c * sizeof *h);
    if (!h) return -1;
    s->heap = h;
    s->heap_cap = 3 * c;
    s->sym_cap = c;
    return 0;
}

static bool cand_less(const cand *a, const cand *b) {
    if (a->prio != b->prio) return a->prio < b->prio;
    return a->left < b->left;
}

static int heap_push(scratch *s, cand c) {
    if (s->heap_n == s->heap_cap) {
        size_t nc = s->heap_cap * 2 + 16;
        cand *h = realloc(s->heap, nc * sizeof *h);
        if (!h) return -1;
        s->heap = h;
        s->heap_cap = nc;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
    return 0;
}

static cand heap_pop(scratch *s) {
    cand top = s->heap[0];
    cand last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *mc = &last;
        if (l < n && cand_less(&s->heap[l], mc)) { m = l; mc = &s->heap[l]; }
        if (r < n && cand_less(&s->heap[r], mc)) { m = r; mc = &s->heap[r]; }
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Pushes the candidate merge of symbols l and r of word w, if there is one. */
static int try_pair(const tok_tokenizer *t, scratch *s, const char *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    cand c = {0, l, r, s->len[l], s->len[r], -1};
    if (t->kind == TOK_KIND_BPE) {
        if (s->id[l] < 0 || s->id[r] < 0) return 0;
        const pair_slot *p = pair_find(t, s->id[l], s->id[r]);
        if (!p) return 0;
        c.prio = p->rank;
        c.id = p->id;
    } else {
        int32_t id = slots_find(t, t->match_slots, t->match_cap, match_key, w + s->start[l],
                                (size_t)s->len[l] + s->len[r]);
        if (id < 0) return 0;
        c.prio = t->kind == TOK_KIND_TIKTOKEN ? (double)id : -(double)t->tok[id].score;
        c.id = id;
    }
    return heap_push(s, c);
}

/* BPE-merges the word w[0..n) and appends its ids. */
static int encode_word(const tok_tokenizer *t, scratch *s, const char *w, size_t n, idvec *out) {
    if (n == 0) return 0;
    if (t->kind != TOK_KIND_SPM && (t->cfg.ignore_merges || t->kind == TOK_KIND_TIKTOKEN)) {
        int32_t id = slots_find(t, t->match_slots, t->match_cap, match_key, w, n);
        if (id >= 0) return idvec_push(out, id);
    }
    if (scratch_syms(s, n)) return -1;
    const unsigned char *u = (const unsigned char *)w;
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        size_t step = t->kind == TOK_KIND_SPM ? utf8_step(u + i, n - i) : 1;
        s->start[ns] = (uint32_t)i;
        s->len[ns] = (uint32_t)step;
        s->prev[ns] = ns - 1;
        s->next[ns] = -1;
        if (ns > 0) s->next[ns - 1] = ns;
        if (t->kind == TOK_KIND_SPM) s->id[ns] = slots_find(t, t->match_slots, t->match_cap, match_key, w + i, step);
        else s->id[ns] = t->byte_id[u[i]];
        ns++;
        i += step;
    }
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (try_pair(t, s, w, i, i + 1)) return -1;
    while (s->heap_n) {
        cand c = heap_pop(s);
        int32_t l = c.left, r = c.right;
        if (s->len[l] != c.llen || s->len[r] != c.rlen || s->next[l] != r) continue; /* stale */
        s->len[l] += s->len[r];
        s->id[l] = c.id;
        s->len[r] = 0; /* dead */
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (try_pair(t, s, w, s->prev[l], l) || try_pair(t, s, w, l, s->next[l])) return -1;
    }
    for (int32_t i = 0; i >= 0; i = s->next[i]) {
        if (s->id[i] >= 0) {
            if (idvec_push(out, s->id[i])) return -1;
            continue;
        }
        for (uint32_t k = 0; k < s->len[i]; k++) {
            int32_t id = t->byte_id[u[s->start[i] + k]];
            if (id < 0) id = t->cfg.unk;
            if (id >= 0 && idvec_push(out, id)) return -1;
        }
    }
    return 0;
}

static int pieces_push(size_t **v, size_t *n, size_t *cap, size_t a, size_t len) {
    if (*n + 2 > *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        size_t *p = realloc(*v, nc * sizeof *p);
        if (!p) return -1;
        *v = p;
        *cap = nc;
    }
    (*v)[(*n)++] = a;
    (*v)[(*n)++] = len;
    return 0;
}

/* Splits text[0..len) with the tokenizer's regexes into s->pa (pairs). */
static int presplit(const tok_tokenizer *t, scratch *s, const char *text, size_t len) {
    s->pa_n = 0;
    if (pieces_push(&s->pa, &s->pa_n, &s->pa_cap, 0, len)) return -1;
    for (int r = 0; r < t->n_re; r++) {
        s->pb_n = 0;
        for (size_t k = 0; k < s->pa_n; k += 2) {
            size_t base = s->pa[k], plen = s->pa[k + 1];
            PCRE2_SPTR subj = (PCRE2_SPTR)(text + base);
            size_t off = 0, gap = 0;
            while (off < plen) {
                int rc = pcre2_match(t->re[r], subj, plen, off, 0, s->md, NULL);
                if (rc < 0) break;
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* empty match: step one character */
                    off = ms + utf8_step((const unsigned char *)text + base + ms, plen - ms);
                    continue;
                }
                if (ms > gap && pieces_push(&s->pb, &s->pb_n, &s->pb_cap, base + gap, ms - gap)) return -1;
                if (pieces_push(&s->pb, &s->pb_n, &s->pb_cap, base + ms, me - ms)) return -1;
                off = gap = me;
            }
            if (gap < plen && pieces_push(&s->pb, &s->pb_n, &s->pb_cap, base + gap, plen - gap)) return -1;
        }
        size_t *tmp = s->pa;
        s->pa = s->pb;
        s->pb = tmp;
        size_t tc = s->pa_cap;
        s->pa_cap = s->pb_cap;
        s->pb_cap = tc;
        s->pa_n = s->pb_n;
    }
    return 0;
}

/* Encodes a stretch of text without special tokens. */
static int encode_raw(const tok_tokenizer *t, scratch *s, const char *text, size_t len,
                      bool prev_special, idvec *out) {
    if (len == 0) return 0;
    if (t->kind == TOK_KIND_SPM) {
        size_t need = len * 3 + 4;
        if (need > s->esc_cap) {
            char *e = realloc(s->esc, need);
            if (!e) return -1;
            s->esc = e;
            s->esc_cap = need;
        }
        size_t o = 0;
        const char *sp = t->cfg.escape_spaces ? "\xe2\x96\x81" : " ";
        size_t spn = t->cfg.escape_spaces ? 3 : 1;
        if (t->cfg.add_space_prefix && prev_special) {
            memcpy(s->esc, sp, spn);
            o += spn;
        }
        for (size_t i = 0; i < len; i++) {
            if (text[i] == ' ') {
                memcpy(s->esc + o, sp, spn);
                o += spn;
            } else s->esc[o++] = text[i];
        }
        return encode_word(t, s, s->esc, o, out);
    }
    if (presplit(t, s, text, len)) return -1;
    for (size_t k = 0; k < s->pa_n; k += 2)
        if (encode_word(t, s, text + s->pa[k], s->pa[k + 1], out)) return -1;
    return 0;
}

/* llama.cpp's reading of UTF-8 for byte-level vocabularies that lack tokens
 * for some byte values (SmolLM2 has none for 0xC0, 0xC1, 0xF5..0xFF): a lead
 * byte followed by enough continuation bytes is one character (re-encoded, so
 * an overlong form becomes canonical); any other byte becomes U+FFFD. Returns
 * a malloc'd copy, or NULL when out of memory. */
static char *sanitize_utf8(const char *text, size_t len, size_t *out_len) {
    char *o = malloc(len * 3 + 1);
    if (!o) return NULL;
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, k = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t need = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
        bool ok = need != 9;
        if (ok)
            for (size_t q = 1; q <= need; q++)
                if (i + q >= len || (s[i + q] & 0xC0) != 0x80) ok = false;
        if (!ok) {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
            continue;
        }
        uint32_t cp = need == 0 ? c : need == 1 ? c & 0x1F : need == 2 ? c & 0x0F : c & 0x07;
        for (size_t q = 1; q <= need; q++) cp = (cp << 6) | (s[i + q] & 0x3Fu);
        if (cp > 0x10FFFF) {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
            continue;
        }
        k += utf8_put(cp, o + k);
        i += need + 1;
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

inf_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t **ids, size_t *n_ids, inf_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return inf_fail(err, INF_E_ARG, "tok_encode: text is NULL but len is %zu", len);
    char *clean = NULL;
    if (t->kind != TOK_KIND_SPM && !t->all_bytes && len) {
        if (len > SIZE_MAX / 4 || !(clean = sanitize_utf8(text, len, &len)))
            return inf_fail(err, INF_E_NOMEM, "%s: out of memory encoding %zu bytes", t->source, len);
        text = clean;
    }
    idvec out = {0};
    scratch s = {0};
    int fail = 0;
    if (t->n_re) {
        s.md = pcre2_match_data_create(1, NULL);
        if (!s.md) fail = 1;
    }
    if (!fail && add_bos && t->cfg.bos >= 0) fail = idvec_push(&out, t->cfg.bos);
    size_t seg = 0, i = 0;
    bool prev_special = true;
    while (!fail && i < len) {
        unsigned char c = (unsigned char)text[i];
        int32_t hit = -1;
        if (t->special_first[c]) {
            for (int k = 0; k < t->n_special; k++) {
                int32_t id = t->special[k];
                const tok_entry *e = &t->tok[id];
                if ((unsigned char)e->text[0] != c || e->text_len > len - i) continue;
                if (!parse_special && e->type != TOK_TYPE_USER_DEFINED) continue;
                if (memcmp(e->text, text + i, e->text_len) == 0) {
                    hit = id;
                    break;
                }
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        fail = encode_raw(t, &s, text + seg, i - seg, prev_special, &out);
        if (!fail && i > seg) prev_special = false;
        if (!fail) fail = idvec_push(&out, hit);
        prev_special = true;
        i += t->tok[hit].text_len;
        seg = i;
    }
    if (!fail) fail = encode_raw(t, &s, text + seg, len - seg, prev_special, &out);
    if (!fail && !out.v) {
        out.v = malloc(sizeof *out.v);
        if (!out.v) fail = 1;
    }
    scratch_free(&s);
    free(clean);
    if (fail) {
        free(out.v);
        return inf_fail(err, INF_E_NOMEM, "%s: out of memory encoding %zu bytes", t->source, len);
    }
    *ids = out.v;
    *n_ids = out.n;
    return INF_OK;
}

/* ---- decoding ------------------------------------------------------------------------------- */

size_t tok_decode_token(const tok_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n) return 0;
    const tok_entry *e = &t->tok[id];
    size_t n = e->bytes_len;
    if (buf && cap) memcpy(buf, e->bytes, n < cap ? n : cap);
    return n;
}

static bool strips_space(const tok_tokenizer *t) {
    return t->kind == TOK_KIND_SPM && t->cfg.add_space_prefix;
}

inf_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, char **out,
                      size_t *out_len, inf_error *err) {
    *out = NULL;
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n) total += t->tok[ids[i]].bytes_len;
    char *o = malloc(total);
    if (!o) return inf_fail(err, INF_E_NOMEM, "%s: out of memory decoding %zu ids", t->source, n);
    size_t k = 0;
    bool strip = strips_space(t);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) continue;
        if (ids[i] == t->cfg.bos) {
            strip = strips_space(t);
            continue;
        }
        const tok_entry *e = &t->tok[ids[i]];
        const char *p = e->bytes;
        size_t len = e->bytes_len;
        if (len && strip && p[0] == ' ') {
            p++;
            len--;
        }
        if (e->bytes_len) strip = false;
        memcpy(o + k, p, len);
        k += len;
    }
    o[k] = '\0';
    *out = o;
    if (out_len) *out_len = k;
    return INF_OK;
}

/* ---- streaming ------------------------------------------------------------------------------ */

void tok_stream_init(tok_stream *s, const tok_tokenizer *t) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->strip_space = t && strips_space(t);
}

void tok_stream_after(tok_stream *s, int32_t prev_id) {
    s->strip_space = s->t && strips_space(s->t) && prev_id == s->t->cfg.bos;
}

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Emits whole characters of b[0..n) into out; keeps an incomplete tail when
 * `hold` (otherwise it becomes U+FFFD). */
static size_t stream_emit(tok_stream *s, const unsigned char *b, size_t n, bool hold, char *out,
                          size_t cap) {
    size_t o = 0, i = 0;
    s->npend = 0;
    while (i < n) {
        int c = utf8_class(b + i, n - i);
        if (c == 0 && hold) {
            memcpy(s->pend, b + i, n - i); /* at most 3 bytes */
            s->npend = (int)(n - i);
            break;
        }
        const char *src = (const char *)b + i;
        size_t len = (size_t)c, adv = (size_t)c;
        if (c <= 0) {
            src = REPL;
            len = 3;
            adv = c == 0 ? n - i : (size_t)-c;
        }
        if (o + len <= cap) {
            memcpy(out + o, src, len);
            o += len;
        } else cap = o; /* out of room: drop the rest, keep characters whole */
        i += adv;
    }
    return o;
}

size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap) {
    const tok_tokenizer *t = s->t;
    if (!t || id < 0 || id >= t->n) return 0;
    if (id == t->cfg.bos) {
        s->strip_space = strips_space(t);
        return 0;
    }
    const tok_entry *e = &t->tok[id];
    const char *p = e->bytes;
    size_t len = e->bytes_len;
    if (len == 0) return 0;
    if (s->strip_space && p[0] == ' ') {
        p++;
        len--;
    }
    s->strip_space = false;
    unsigned char stack[512];
    size_t n = (size_t)s->npend + len;
    unsigned char *b = n <= sizeof stack ? stack : malloc(n);
    if (!b) return 0;
    memcpy(b, s->pend, (size_t)s->npend);
    memcpy(b + s->npend, p, len);
    size_t o = stream_emit(s, b, n, true, out, cap);
    if (b != stack) free(b);
    return o;
}

size_t tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    unsigned char b[4];
    size_t n = (size_t)s->npend;
    memcpy(b, s->pend, n);
    return stream_emit(s, b, n, false, out, cap);
}
