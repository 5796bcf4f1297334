/* tok_load.c — the tokenizer loaders: GGUF metadata, HF tokenizer.json,
 * Meta's tiktoken tokenizer.model and llama2.c's tokenizer .bin. Each reads
 * its format, checks every length and id against the file, and builds the
 * tokenizer through the tok_new / tok_set_token / tok_finish interface of
 * tokenizer.c. Errors name the file and the field, line or token at fault.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mapfile.h"
#include "tokenizer.h"

/* ---- GGUF ------------------------------------------------------------------------------------ */

static int32_t gguf_id(const gguf_file *g, const char *key) {
    int64_t v;
    if (!gguf_has(g, key) || gguf_get_int(g, key, &v, NULL) != INF_OK) return -1;
    return v >= 0 && v < INT32_MAX ? (int32_t)v : -1;
}

static bool gguf_flag(const gguf_file *g, const char *key, bool dflt) {
    bool v;
    if (!gguf_has(g, key) || gguf_get_bool(g, key, &v, NULL) != INF_OK) return dflt;
    return v;
}

static bool str_is(gguf_str s, const char *lit) {
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

inf_status tok_load_gguf(const gguf_file *g, tok_tokenizer **out, inf_error *err) {
    *out = NULL;
    const char *path = gguf_path(g);
    inf_status st;
    gguf_str model;
    if ((st = gguf_get_str(g, "tokenizer.ggml.model", &model, err))) return st;
    tok_kind kind;
    if (str_is(model, "gpt2")) kind = TOK_KIND_BPE;
    else if (str_is(model, "llama")) kind = TOK_KIND_SPM;
    else
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s: tokenizer.ggml.model \"%.*s\" is not supported (only \"gpt2\" and \"llama\")",
                        path, (int)(model.len > 64 ? 64 : model.len), model.ptr);

    const gguf_str *toks;
    uint64_t n;
    if ((st = gguf_get_str_arr(g, "tokenizer.ggml.tokens", &toks, &n, err))) return st;
    if (n == 0 || n > (1u << 24))
        return inf_fail(err, INF_E_RANGE, "%s: tokenizer.ggml.tokens has %llu entries", path,
                        (unsigned long long)n);

    const void *scores = NULL, *types = NULL;
    gguf_type et;
    uint64_t m;
    if (gguf_has(g, "tokenizer.ggml.scores")) {
        if ((st = gguf_get_arr(g, "tokenizer.ggml.scores", &et, &m, &scores, err))) return st;
        if (et != GGUF_TYPE_FLOAT32 || m != n)
            return inf_fail(err, INF_E_FORMAT,
                            "%s: tokenizer.ggml.scores must be %llu float32 values (got %llu of %s)", path,
                            (unsigned long long)n, (unsigned long long)m, gguf_type_name(et));
    }
    if (gguf_has(g, "tokenizer.ggml.token_type")) {
        if ((st = gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &m, &types, err))) return st;
        if ((et != GGUF_TYPE_INT32 && et != GGUF_TYPE_UINT32) || m != n)
            return inf_fail(err, INF_E_FORMAT,
                            "%s: tokenizer.ggml.token_type must be %llu int32 values (got %llu of %s)",
                            path, (unsigned long long)n, (unsigned long long)m, gguf_type_name(et));
    }

    tok_tokenizer *t;
    if ((st = tok_new(kind, (int)n, path, &t, err))) return st;
    for (uint64_t i = 0; i < n; i++) {
        float score = 0;
        int32_t ty = TOK_TYPE_NORMAL;
        if (scores) memcpy(&score, (const char *)scores + i * 4, 4);
        if (types) memcpy(&ty, (const char *)types + i * 4, 4);
        if (ty < 0 || ty > TOK_TYPE_BYTE) {
            tok_free(t);
            return inf_fail(err, INF_E_FORMAT, "%s: tokenizer.ggml.token_type[%llu] = %d is not a token type (0..6)",
                            path, (unsigned long long)i, (int)ty);
        }
        if ((st = tok_set_token(t, (int32_t)i, toks[i].ptr, toks[i].len, score, (tok_type)ty, err))) {
            tok_free(t);
            return st;
        }
    }

    tok_config c;
    tok_config_default(&c);
    c.bos = gguf_id(g, "tokenizer.ggml.bos_token_id");
    c.eos = gguf_id(g, "tokenizer.ggml.eos_token_id");
    c.eot = gguf_id(g, "tokenizer.ggml.eot_token_id");
    c.eom = gguf_id(g, "tokenizer.ggml.eom_token_id");
    c.unk = gguf_id(g, "tokenizer.ggml.unknown_token_id");
    c.pad = gguf_id(g, "tokenizer.ggml.padding_token_id");
    if (c.pad >= (int32_t)n) c.pad = -1; /* some converters write a pad id past the vocabulary */

    if (kind == TOK_KIND_SPM) {
        c.add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", true);
        c.add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", true);
        c.escape_spaces = true;
    } else {
        gguf_str pre = {"default", 7};
        if (gguf_has(g, "tokenizer.ggml.pre") && (st = gguf_get_str(g, "tokenizer.ggml.pre", &pre, err))) {
            tok_free(t);
            return st;
        }
        c.add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", false);
        bool llama3 = str_is(pre, "llama-bpe") || str_is(pre, "llama3");
        c.add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", llama3);
        if (str_is(pre, "smollm")) {
            /* llama.cpp: each digit alone, then GPT-2's pattern */
            if (!(st = tok_add_split(t, "\\p{N}", err)))
                st = tok_add_split(t, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", err);
        } else if (llama3) {
            c.ignore_merges = true;
            st = tok_add_split(t, TOK_RE_LLAMA3, err);
        } else if (str_is(pre, "qwen2")) {
            st = tok_add_split(t,
                               "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
                               "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                               err);
        } else if (str_is(pre, "gpt2") || str_is(pre, "default")) {
            st = tok_add_split(t, TOK_RE_GPT2, err);
        } else {
            st = inf_fail(err, INF_E_UNSUPPORTED,
                          "%s: tokenizer.ggml.pre \"%.*s\" is not supported (smollm, llama-bpe, llama3, "
                          "qwen2, gpt2, default)",
                          path, (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
        }
        if (st) {
            tok_free(t);
            return st;
        }
        const gguf_str *merges;
        uint64_t nm;
        if ((st = gguf_get_str_arr(g, "tokenizer.ggml.merges", &merges, &nm, err))) {
            tok_free(t);
            return st;
        }
        for (uint64_t i = 0; i < nm; i++) {
            const char *sp = merges[i].len > 1 ? memchr(merges[i].ptr + 1, ' ', merges[i].len - 1) : NULL;
            if (!sp) {
                tok_free(t);
                return inf_fail(err, INF_E_FORMAT, "%s: tokenizer.ggml.merges[%llu] \"%.*s\" is not \"a b\"",
                                path, (unsigned long long)i, (int)(merges[i].len > 64 ? 64 : merges[i].len),
                                merges[i].ptr);
            }
            size_t al = (size_t)(sp - merges[i].ptr);
            if ((st = tok_add_merge(t, merges[i].ptr, al, sp + 1, merges[i].len - al - 1, err))) {
                tok_free(t);
                return st;
            }
        }
    }
    if ((st = tok_finish(t, &c, err))) {
        tok_free(t);
        return st;
    }
    *out = t;
    return INF_OK;
}

/* ---- HF tokenizer.json ------------------------------------------------------------------------ */

#define HF_MAX_BYTES ((size_t)512 << 20)

static bool json_has_bytelevel(const cJSON *node) {
    if (!node) return false;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "ByteLevel") == 0) return true;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(node, "pretokenizers");
    if (!seq) seq = cJSON_GetObjectItemCaseSensitive(node, "decoders");
    const cJSON *it;
    cJSON_ArrayForEach(it, seq) if (json_has_bytelevel(it)) return true;
    return false;
}

/* Quotes a literal for PCRE2 (\Q..\E cannot hold "\E", so escape by hand). */
static char *regex_quote(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(n * 2 + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i])) o[k++] = '\\';
        o[k++] = s[i];
    }
    o[k] = '\0';
    return o;
}

static inf_status hf_pretok(tok_tokenizer *t, const char *path, const cJSON *node, inf_error *err) {
    if (!node || cJSON_IsNull(node)) return INF_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (!cJSON_IsString(type))
        return inf_fail(err, INF_E_FORMAT, "%s: pre_tokenizer has no \"type\"", path);
    const char *ty = type->valuestring;
    inf_status st;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "pretokenizers")) {
            if ((st = hf_pretok(t, path, it, err))) return st;
        }
        return INF_OK;
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(node, "use_regex");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(node, "add_prefix_space");
        if (cJSON_IsTrue(aps))
            return inf_fail(err, INF_E_UNSUPPORTED, "%s: pre_tokenizer ByteLevel add_prefix_space=true is not supported", path);
        if (!ur || cJSON_IsTrue(ur)) return tok_add_split(t, TOK_RE_GPT2, err);
        return INF_OK;
    }
    if (strcmp(ty, "Digits") == 0) {
        const cJSON *ind = cJSON_GetObjectItemCaseSensitive(node, "individual_digits");
        return tok_add_split(t, cJSON_IsTrue(ind) ? "\\p{N}" : "\\p{N}+", err);
    }
    if (strcmp(ty, "Split") == 0) {
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(node, "behavior");
        const cJSON *inv = cJSON_GetObjectItemCaseSensitive(node, "invert");
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0 || cJSON_IsTrue(inv))
            return inf_fail(err, INF_E_UNSUPPORTED,
                            "%s: pre_tokenizer Split with behavior \"%s\"%s is not supported (only Isolated)", path,
                            cJSON_IsString(beh) ? beh->valuestring : "?", cJSON_IsTrue(inv) ? " inverted" : "");
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(node, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (cJSON_IsString(re)) return tok_add_split(t, re->valuestring, err);
        if (cJSON_IsString(lit)) {
            char *q = regex_quote(lit->valuestring);
            if (!q) return inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
            st = tok_add_split(t, q, err);
            free(q);
            return st;
        }
        return inf_fail(err, INF_E_FORMAT, "%s: pre_tokenizer Split has no pattern.Regex or pattern.String", path);
    }
    return inf_fail(err, INF_E_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported", path, ty);
}

/* Names a special token from tokenizer_config.json ("x" or {"content": "x"}). */
static const char *cfg_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int32_t first_found(const tok_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int32_t id = tok_find(t, *names);
        if (id >= 0) return id;
    }
    return -1;
}

/* BOS/EOS: tokenizer_config.json next to the file when there is one, else the
 * post_processor's template, else well-known names. */
static void hf_specials(tok_tokenizer *t, const char *path, const cJSON *root, tok_config *c) {
    static const char *const bos_names[] = {"<|begin_of_text|>", "<s>", "<|startoftext|>", NULL};
    static const char *const eos_names[] = {"<|end_of_text|>", "</s>", "<|endoftext|>", NULL};
    c->bos = first_found(t, bos_names);
    c->eos = first_found(t, eos_names);
    c->eot = tok_find(t, "<|eot_id|>");
    c->eom = tok_find(t, "<|eom_id|>");
    c->add_bos = false;
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *it;
    if (!items) { /* Sequence of processors */
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            items = cJSON_GetObjectItemCaseSensitive(it, "single");
            if (items) break;
        }
    }
    const cJSON *first = cJSON_GetArrayItem(items, 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
    if (cJSON_IsString(sp) && tok_find(t, sp->valuestring) >= 0) {
        c->bos = tok_find(t, sp->valuestring);
        c->add_bos = true;
    }

    char cfg_path[1200];
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(cfg_path, sizeof cfg_path, "%.*s/tokenizer_config.json", (int)(slash - path), path);
    else snprintf(cfg_path, sizeof cfg_path, "tokenizer_config.json");
    char *text = NULL;
    size_t len;
    if (inf_read_file(cfg_path, 16u << 20, &text, &len, NULL) != INF_OK) return;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cfg) return;
    const char *b = cfg_token(cfg, "bos_token"), *e = cfg_token(cfg, "eos_token");
    if (b && tok_find(t, b) >= 0) c->bos = tok_find(t, b);
    if (e && tok_find(t, e) >= 0) c->eos = tok_find(t, e);
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    if (cJSON_IsBool(ab)) c->add_bos = cJSON_IsTrue(ab);
    cJSON_Delete(cfg);
}

inf_status tok_load_hf_json(const char *path, tok_tokenizer **out, inf_error *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    inf_status st = inf_read_file(path, HF_MAX_BYTES, &text, &len, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    tok_tokenizer *t = NULL;
    if (!root) return inf_fail(err, INF_E_FORMAT, "%s: not valid JSON (a tokenizer.json was expected)", path);
    if (!cJSON_IsObject(root)) {
        st = inf_fail(err, INF_E_FORMAT, "%s: the top level is not a JSON object", path);
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(model)) {
        st = inf_fail(err, INF_E_FORMAT, "%s: no \"model\" object", path);
        goto done;
    }
    if (mtype && (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") != 0)) {
        st = inf_fail(err, INF_E_UNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", path,
                      cJSON_IsString(mtype) ? mtype->valuestring : "?");
        goto done;
    }
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        st = inf_fail(err, INF_E_FORMAT, "%s: model.vocab (object) and model.merges (array) are required", path);
        goto done;
    }
    if (!json_has_bytelevel(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")) &&
        !json_has_bytelevel(cJSON_GetObjectItemCaseSensitive(root, "decoder"))) {
        st = inf_fail(err, INF_E_UNSUPPORTED,
                      "%s: only byte-level BPE is supported (no ByteLevel pre_tokenizer or decoder)", path);
        goto done;
    }

    /* vocabulary size = largest id + 1 */
    double max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= (1 << 24) ||
            it->valuedouble != (double)(int)it->valuedouble) {
            st = inf_fail(err, INF_E_FORMAT, "%s: model.vocab[\"%.64s\"] is not a token id", path, it->string);
            goto done;
        }
        if (it->valuedouble > max_id) max_id = it->valuedouble;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (1 << 24) || !cJSON_IsString(content)) {
            st = inf_fail(err, INF_E_FORMAT, "%s: an added_tokens entry lacks a valid \"id\" or \"content\"", path);
            goto done;
        }
        if (id->valuedouble > max_id) max_id = id->valuedouble;
    }
    if (max_id < 0) {
        st = inf_fail(err, INF_E_FORMAT, "%s: model.vocab is empty", path);
        goto done;
    }
    if ((st = tok_new(TOK_KIND_BPE, (int)max_id + 1, path, &t, err))) goto done;
    cJSON_ArrayForEach(it, vocab) {
        if ((st = tok_set_token(t, (int32_t)it->valuedouble, it->string, strlen(it->string), 0,
                                TOK_TYPE_NORMAL, err)))
            goto done;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        bool special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        if ((st = tok_set_token(t, (int32_t)id->valuedouble, content->valuestring, strlen(content->valuestring), 0,
                                special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED, err)))
            goto done;
    }
    int idx = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring;
            const char *sp = s[0] ? strchr(s + 1, ' ') : NULL;
            if (sp) {
                a = s;
                al = (size_t)(sp - s);
                b = sp + 1;
                bl = strlen(b);
            }
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        }
        if (!a) {
            st = inf_fail(err, INF_E_FORMAT, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", path, idx);
            goto done;
        }
        if ((st = tok_add_merge(t, a, al, b, bl, err))) goto done;
        idx++;
    }
    if ((st = hf_pretok(t, path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), err))) goto done;

    tok_config c;
    tok_config_default(&c);
    c.ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) c.unk = tok_find(t, unk->valuestring);
    hf_specials(t, path, root, &c);
    if ((st = tok_finish(t, &c, err))) goto done;
    *out = t;
    t = NULL;
done:
    tok_free(t);
    cJSON_Delete(root);
    return st;
}

/* ---- tiktoken (Llama 3 tokenizer.model) ------------------------------------------------------- */

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard padded base64 s[0..n) into out (>= n*3/4 bytes); -1 if invalid. */
static long b64_decode(const char *s, size_t n, unsigned char *out) {
    if (n == 0 || n % 4) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)s[i + (size_t)k];
            if (ch == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad) return -1; /* data after padding */
                v[k] = b64_val(ch);
                if (v[k] < 0) return -1;
            }
        }
        uint32_t w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) | (uint32_t)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (pad < 2) out[o++] = (unsigned char)(w >> 8);
        if (pad < 1) out[o++] = (unsigned char)w;
    }
    return (long)o;
}

#define LLAMA3_N_SPECIAL 256

static void llama3_special_name(int k, char *buf, size_t cap) {
    static const char *const named[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                                        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                                        "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>",
                                        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"};
    if (k < 12) snprintf(buf, cap, "%s", named[k]);
    else snprintf(buf, cap, "<|reserved_special_token_%d|>", k - 10);
}

inf_status tok_load_tiktoken(const char *path, tok_tokenizer **out, inf_error *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    inf_status st = inf_read_file(path, (size_t)256 << 20, &text, &len, err);
    if (st) return st;
    /* pass 1: count lines, check the format, find the largest rank */
    long max_rank = -1;
    size_t n_lines = 0, line_no = 0;
    tok_tokenizer *t = NULL;
    unsigned char *buf = NULL;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line_no++;
        size_t le = e;
        if (le > i && text[le - 1] == '\r') le--;
        if (le > i) {
            const char *sp = memchr(text + i, ' ', le - i);
            char *endp = NULL;
            long r = sp ? strtol(sp + 1, &endp, 10) : -1;
            if (!sp || sp == text + i || endp != text + le || sp + 1 == text + le || r < 0 || r >= (1 << 24) - LLAMA3_N_SPECIAL) {
                st = inf_fail(err, INF_E_FORMAT, "%s: line %zu is not \"<base64> <rank>\"", path, line_no);
                goto done;
            }
            if (r > max_rank) max_rank = r;
            n_lines++;
        }
        i = e + 1;
    }
    if (n_lines == 0) {
        st = inf_fail(err, INF_E_FORMAT, "%s: no \"<base64> <rank>\" lines (a tiktoken tokenizer.model was expected)", path);
        goto done;
    }
    int n_base = (int)max_rank + 1;
    if ((st = tok_new(TOK_KIND_TIKTOKEN, n_base + LLAMA3_N_SPECIAL, path, &t, err))) goto done;
    buf = malloc(len + 4);
    if (!buf) {
        st = inf_fail(err, INF_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    line_no = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line_no++;
        size_t le = e;
        if (le > i && text[le - 1] == '\r') le--;
        if (le > i) {
            const char *sp = memchr(text + i, ' ', le - i);
            long r = strtol(sp + 1, NULL, 10);
            long nb = b64_decode(text + i, (size_t)(sp - (text + i)), buf);
            if (nb <= 0) {
                st = inf_fail(err, INF_E_FORMAT, "%s: line %zu: \"%.*s\" is not valid base64", path, line_no,
                              (int)((sp - (text + i)) > 40 ? 40 : (sp - (text + i))), text + i);
                goto done;
            }
            if (tok_text(t, (int32_t)r) != NULL) {
                st = inf_fail(err, INF_E_FORMAT, "%s: line %zu: rank %ld appears twice", path, line_no, r);
                goto done;
            }
            if ((st = tok_set_token(t, (int32_t)r, (const char *)buf, (size_t)nb, 0, TOK_TYPE_NORMAL, err))) goto done;
        }
        i = e + 1;
    }
    for (int k = 0; k < LLAMA3_N_SPECIAL; k++) {
        char name[64];
        llama3_special_name(k, name, sizeof name);
        if ((st = tok_set_token(t, n_base + k, name, strlen(name), 0, TOK_TYPE_CONTROL, err))) goto done;
    }
    if ((st = tok_add_split(t, TOK_RE_LLAMA3, err))) goto done;
    tok_config c;
    tok_config_default(&c);
    c.bos = n_base + 0;
    c.eos = n_base + 1;
    c.pad = n_base + 4;
    c.eom = n_base + 8;
    c.eot = n_base + 9;
    c.add_bos = true;
    c.ignore_merges = true;
    if ((st = tok_finish(t, &c, err))) goto done;
    *out = t;
    t = NULL;
done:
    free(buf);
    free(text);
    tok_free(t);
    return st;
}

/* ---- llama2.c tokenizer .bin ------------------------------------------------------------------ */

inf_status tok_load_llama2c(const char *path, int vocab_size, tok_tokenizer **out, inf_error *err) {
    *out = NULL;
    inf_mapfile mf;
    inf_status st = inf_map_open(&mf, path, err);
    if (st) return st;
    tok_tokenizer *t = NULL;
    const uint8_t *d = mf.data;
    size_t size = mf.size, off = 4;
    int32_t max_len;
    if (size < 4) {
        st = inf_fail(err, INF_E_FORMAT, "%s: %zu bytes is too short for a llama2.c tokenizer (no header)", path, size);
        goto done;
    }
    memcpy(&max_len, d, 4);
    if (max_len <= 0 || max_len > (1 << 16)) {
        st = inf_fail(err, INF_E_FORMAT, "%s: max_token_length %d is not plausible (1..65536)", path, (int)max_len);
        goto done;
    }
    /* count the tokens when the caller does not know */
    int n = vocab_size;
    if (n <= 0) {
        n = 0;
        for (size_t o = 4; o < size; n++) {
            int32_t l;
            if (size - o < 8) break;
            memcpy(&l, d + o + 4, 4);
            if (l < 0 || (size_t)l > size - o - 8) break;
            o += 8 + (size_t)l;
        }
        if (n == 0) {
            st = inf_fail(err, INF_E_FORMAT, "%s: no tokens after the header", path);
            goto done;
        }
    }
    if ((st = tok_new(TOK_KIND_SPM, n, path, &t, err))) goto done;
    for (int i = 0; i < n; i++) {
        float score;
        int32_t l;
        if (size - off < 8) {
            st = inf_fail(err, INF_E_FORMAT, "%s: truncated at token %d of %d (offset %zu of %zu bytes)", path, i, n,
                          off, size);
            goto done;
        }
        memcpy(&score, d + off, 4);
        memcpy(&l, d + off + 4, 4);
        off += 8;
        if (l < 0 || l > max_len || (size_t)l > size - off) {
            st = inf_fail(err, INF_E_FORMAT, "%s: token %d has length %d (max_token_length %d, %zu bytes left): %s",
                          path, i, (int)l, (int)max_len, size - off,
                          (size_t)l > size - off ? "file truncated" : "corrupt");
            goto done;
        }
        const char *s = (const char *)d + off;
        tok_type ty = TOK_TYPE_NORMAL;
        unsigned v;
        char tail;
        char tmp[8] = {0};
        if (l == 6) memcpy(tmp, s, 6);
        if (i == 0) ty = TOK_TYPE_UNKNOWN;
        else if (i == 1 || i == 2) ty = TOK_TYPE_CONTROL;
        else if (l == 6 && sscanf(tmp, "<0x%2X>%c", &v, &tail) == 1) ty = TOK_TYPE_BYTE;
        if ((st = tok_set_token(t, i, s, (size_t)l, score, ty, err))) goto done;
        off += (size_t)l;
    }
    tok_config c;
    tok_config_default(&c);
    c.unk = 0;
    c.bos = n > 1 ? 1 : -1;
    c.eos = n > 2 ? 2 : -1;
    c.add_bos = true;
    c.add_space_prefix = true;
    c.escape_spaces = false;
    if ((st = tok_finish(t, &c, err))) goto done;
    *out = t;
    t = NULL;
done:
    tok_free(t);
    inf_map_close(&mf);
    return st;
}

/* ---- any tokenizer file, recognized by content ---------------------------------- */

static bool tl_has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

inf_status tok_file_kind_of(const char *path, tok_file_kind *kind, inf_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return inf_fail(err, INF_E_IO, "%s: cannot open tokenizer: %s", path, strerror(errno));
    char head[64] = {0};
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) *kind = TOK_FILE_GGUF;
    else if (tl_has_suffix(path, ".json") || (n > 0 && head[0] == '{')) *kind = TOK_FILE_HF_JSON;
    else {
        /* tiktoken: "<base64> <rank>" text lines; else llama2.c's binary */
        bool text = n > 0;
        for (size_t i = 0; i < n && text; i++)
            text = (head[i] >= 0x20 && head[i] < 0x7f) || head[i] == '\n' || head[i] == '\r';
        *kind = text ? TOK_FILE_TIKTOKEN : TOK_FILE_LLAMA2C;
    }
    return INF_OK;
}

void tok_hf_path(const char *model_path, char *out, size_t cap) {
    struct stat sb;
    if (stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(out, cap, "%s/tokenizer.json", model_path);
        return;
    }
    const char *sl = strrchr(model_path, '/');
    snprintf(out, cap, "%.*s/tokenizer.json", sl ? (int)(sl - model_path) : 1, sl ? model_path : ".");
}

inf_status tok_load_file(const char *path, int vocab, tok_tokenizer **out, char **tmpl,
                         inf_error *err) {
    if (tmpl) *tmpl = NULL;
    tok_file_kind kind;
    inf_status st = tok_file_kind_of(path, &kind, err);
    if (st) return st;
    switch (kind) {
    case TOK_FILE_GGUF: {
        gguf_file *g;
        if ((st = gguf_open(path, &g, err))) return st;
        st = tok_load_gguf(g, out, err);
        gguf_str t;
        if (st == INF_OK && tmpl && gguf_get_str(g, "tokenizer.chat_template", &t, NULL) == INF_OK)
            *tmpl = strndup(t.ptr, t.len);
        gguf_close(g);
        return st;
    }
    case TOK_FILE_HF_JSON: return tok_load_hf_json(path, out, err);
    case TOK_FILE_TIKTOKEN: return tok_load_tiktoken(path, out, err);
    default: return tok_load_llama2c(path, vocab, out, err);
    }
}
