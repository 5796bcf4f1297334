/* If this fails, users see Hugging Face Llama checkpoints (plain, sharded,
 * Llama 3.1 rope scaling, AutoAWQ INT4) refused, loaded with the wrong
 * config or weights (gibberish output), or a bad config.json/safetensors
 * give a crash or a message that does not name the file and field. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#include "testutil.h"

/* ---- a tiny random Llama written by the test ------------------------------------ */

static uint64_t rng;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)(rnd() & 0xffffff) / 16777216.0f - 0.5f; }

static const int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};

typedef struct {
    inf_dtype dt;       /* float dtype of every weight */
    bool tied;
    int shards;         /* 1, or 2 (embeddings + layer 0 | the rest) */
    bool index;         /* write model.safetensors.index.json */
    int group;          /* > 0: AWQ with this group size */
    int dim, layers, heads, kv, ffn, vocab;
    const char *config; /* JSON object whose fields replace the defaults */
    const char *drop;   /* a tensor left out */
    const char *grow;   /* a tensor written with one row too many */
    const char *as_f64; /* a tensor written with dtype F64 (same values) */
    const char *as_i32; /* a tensor written with dtype I32 (same bytes) */
    bool bias;          /* add model.layers.0.self_attn.q_proj.bias */
} opts;

typedef struct {
    char name[128];
    const char *dtype; /* safetensors spelling */
    inf_dtype dt;
    int ndim;
    int64_t shape[2];
    void *data;
    size_t nbytes;
    int shard;
} ent;

/* AWQ: the logical q [K][N], z [G][N], s [G][N] of one projection. */
typedef struct {
    char prefix[96];
    int64_t N, K;
    uint8_t *q, *z;
    uint16_t *s;
} awq_proj;

/* What the test wrote, to check what the loader made of it. */
typedef struct {
    ent e[160];
    int n;
    awq_proj awq[32];
    int n_awq;
} model_data;

static model_data md;
static char dir[512];

static void teardown(void) {
    for (int i = 0; i < md.n; i++) free(md.e[i].data);
    for (int i = 0; i < md.n_awq; i++) {
        free(md.awq[i].q);
        free(md.awq[i].z);
        free(md.awq[i].s);
    }
    memset(&md, 0, sizeof md);
    if (dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        (void)!system(cmd);
        dir[0] = '\0';
    }
}

TestSuite(model_hf, .fini = teardown);

static ent *add(const char *name, inf_dtype dt, int64_t r, int64_t c, int shard) {
    cr_assert_lt(md.n, 160);
    ent *e = &md.e[md.n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dt = dt;
    e->dtype = st_dtype_name(dt);
    e->ndim = c ? 2 : 1;
    e->shape[0] = r;
    e->shape[1] = c;
    size_t n = (size_t)r * (size_t)(c ? c : 1);
    e->nbytes = n * inf_dtype_block_bytes(dt);
    e->data = calloc(1, e->nbytes + 8);
    e->shard = shard;
    return e;
}

static void fill_float(ent *e, float scale, float offset) {
    size_t n = e->nbytes / inf_dtype_block_bytes(e->dt);
    for (size_t i = 0; i < n; i++) {
        float v = offset + scale * frand();
        if (e->dt == INF_DT_F32) ((float *)e->data)[i] = v;
        else if (e->dt == INF_DT_F16) ((uint16_t *)e->data)[i] = inf_f32_to_f16(v);
        else ((uint16_t *)e->data)[i] = inf_f32_to_bf16(v);
    }
}

static void add_float(const opts *o, const char *name, int64_t r, int64_t c, int shard) {
    ent *e = add(name, o->dt, r, c, shard);
    fill_float(e, c ? 0.2f : 0.1f, c ? 0.0f : 1.0f);
}

/* The AutoAWQ GEMM triplet for a projection [N out, K in]. */
static void add_awq(const opts *o, const char *prefix, int64_t N, int64_t K, int shard) {
    int g = o->group;
    int64_t G = K / g, C = N / 8;
    cr_assert_lt(md.n_awq, 32);
    awq_proj *a = &md.awq[md.n_awq++];
    snprintf(a->prefix, sizeof a->prefix, "%s", prefix);
    a->N = N;
    a->K = K;
    a->q = malloc((size_t)(K * N));
    a->z = malloc((size_t)(G * N));
    a->s = malloc(sizeof(uint16_t) * (size_t)(G * N));
    for (int64_t i = 0; i < K * N; i++) a->q[i] = (uint8_t)(rnd() & 15);
    for (int64_t i = 0; i < G * N; i++) {
        a->z[i] = (uint8_t)(rnd() & 15);
        a->s[i] = inf_f32_to_f16(0.001f + 0.05f * (frand() + 0.5f));
    }
    char nm[160];
    snprintf(nm, sizeof nm, "%s.qweight", prefix);
    uint32_t *qw = add(nm, INF_DT_I32, K, C, shard)->data;
    snprintf(nm, sizeof nm, "%s.qzeros", prefix);
    uint32_t *qz = add(nm, INF_DT_I32, G, C, shard)->data;
    snprintf(nm, sizeof nm, "%s.scales", prefix);
    uint16_t *sc = add(nm, INF_DT_F16, G, N, shard)->data;
    /* nibble i of word c holds logical column 8c + AWQ_ORDER[i] */
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < C; c++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++) v |= (uint32_t)a->q[k * N + 8 * c + AWQ_ORDER[i]] << (4 * i);
            qw[k * C + c] = v;
        }
    for (int64_t gi = 0; gi < G; gi++)
        for (int64_t c = 0; c < C; c++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++) v |= (uint32_t)a->z[gi * N + 8 * c + AWQ_ORDER[i]] << (4 * i);
            qz[gi * C + c] = v;
        }
    memcpy(sc, a->s, sizeof(uint16_t) * (size_t)(G * N));
}

static void tiny_defaults(opts *o) {
    if (!o->dim) o->dim = 64;
    if (!o->layers) o->layers = 2;
    if (!o->heads) o->heads = 4;
    if (!o->kv) o->kv = 2;
    if (!o->ffn) o->ffn = 96;
    if (!o->vocab) o->vocab = 128;
    if (!o->shards) o->shards = 1;
}

static void write_config(const opts *o) {
    cJSON *c = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "hidden_size", o->dim);
    cJSON_AddNumberToObject(c, "num_hidden_layers", o->layers);
    cJSON_AddNumberToObject(c, "num_attention_heads", o->heads);
    cJSON_AddNumberToObject(c, "num_key_value_heads", o->kv);
    cJSON_AddNumberToObject(c, "intermediate_size", o->ffn);
    cJSON_AddNumberToObject(c, "vocab_size", o->vocab);
    cJSON_AddNumberToObject(c, "max_position_embeddings", 256);
    cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "rope_theta", 10000.0);
    cJSON_AddNullToObject(c, "rope_scaling");
    cJSON_AddBoolToObject(c, "tie_word_embeddings", o->tied);
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "bos_token_id", 1);
    cJSON_AddNumberToObject(c, "eos_token_id", 2);
    cJSON_AddStringToObject(c, "torch_dtype", "float16");
    cJSON_AddStringToObject(c, "some_future_field", "ignored");
    if (o->group) {
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "awq");
        cJSON_AddNumberToObject(q, "bits", 4);
        cJSON_AddNumberToObject(q, "group_size", o->group);
        cJSON_AddBoolToObject(q, "zero_point", 1);
        cJSON_AddStringToObject(q, "version", "gemm");
    }
    if (o->config) {
        cJSON *ov = cJSON_Parse(o->config);
        cr_assert_not_null(ov, "bad override JSON in the test: %s", o->config);
        for (cJSON *it = ov->child; it; it = it->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(c, it->string);
            cJSON_AddItemToObject(c, it->string, cJSON_Duplicate(it, 1));
        }
        cJSON_Delete(ov);
    }
    char *text = cJSON_Print(c);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    free(text);
    cJSON_Delete(c);
}

static const char *shard_name(const opts *o, int shard) {
    static char buf[2][64];
    if (o->shards == 1) return "model.safetensors";
    snprintf(buf[shard], sizeof buf[shard], "model-%05d-of-%05d.safetensors", shard + 1, o->shards);
    return buf[shard];
}

/* An independent minimal safetensors writer, for dtypes st_writer refuses. */
static void raw_write(const char *path, int shard) {
    char *h = malloc(65536);
    size_t n = 0, off = 0;
    n += (size_t)snprintf(h + n, 65536 - n, "{");
    for (int i = 0; i < md.n; i++) {
        const ent *e = &md.e[i];
        if (e->shard != shard) continue;
        n += (size_t)snprintf(h + n, 65536 - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", n > 1 ? "," : "",
                              e->name, e->dtype, (long long)e->shape[0]);
        if (e->ndim == 2) n += (size_t)snprintf(h + n, 65536 - n, ",%lld", (long long)e->shape[1]);
        n += (size_t)snprintf(h + n, 65536 - n, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    n += (size_t)snprintf(h + n, 65536 - n, "}");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 8; i++) fputc((int)((uint64_t)n >> (8 * i)) & 255, f);
    fwrite(h, 1, n, f);
    for (int i = 0; i < md.n; i++)
        if (md.e[i].shard == shard) fwrite(md.e[i].data, 1, md.e[i].nbytes, f);
    cr_assert_eq(fclose(f), 0);
    free(h);
}

/* Writes config.json and the safetensors file(s) into a fresh dir. */
static void write_model(opts *o, uint64_t seed) {
    tiny_defaults(o);
    rng = seed;
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    write_config(o);
    int64_t d = o->dim, hd = o->dim / o->heads, qd = o->heads * hd, kvd = o->kv * hd, f = o->ffn;
    add_float(o, "model.embed_tokens.weight", o->vocab, d, 0);
    if (!o->tied) add_float(o, "lm_head.weight", o->vocab, d, o->shards - 1);
    add_float(o, "model.norm.weight", d, 0, o->shards - 1);
    for (int l = 0; l < o->layers; l++) {
        int sh = l == 0 ? 0 : o->shards - 1;
        char nm[128];
        static const char *norms[] = {"input_layernorm", "post_attention_layernorm"};
        for (int i = 0; i < 2; i++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, norms[i]);
            add_float(o, nm, d, 0, sh);
        }
        static const char *mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                     "mlp.down_proj"};
        const int64_t outs[] = {qd, kvd, kvd, d, f, f, d}, ins[] = {d, d, d, qd, d, d, f};
        for (int i = 0; i < 7; i++) {
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, mods[i]);
            if (o->group) {
                add_awq(o, nm, outs[i], ins[i], sh);
            } else {
                strcat(nm, ".weight");
                add_float(o, nm, outs[i], ins[i], sh);
            }
        }
    }
    if (o->bias) add_float(o, "model.layers.0.self_attn.q_proj.bias", qd, 0, 0);
    bool raw = false;
    for (int i = 0; i < md.n; i++) {
        ent *e = &md.e[i];
        if (o->drop && strcmp(e->name, o->drop) == 0) e->shard = -1;
        if (o->grow && strcmp(e->name, o->grow) == 0) {
            e->shape[0]++;
            e->nbytes += e->nbytes / (size_t)(e->shape[0] - 1);
            e->data = realloc(e->data, e->nbytes);
            memset(e->data, 0, e->nbytes);
        }
        if (o->as_i32 && strcmp(e->name, o->as_i32) == 0) {
            cr_assert_eq(e->dt, INF_DT_F32);
            e->dt = INF_DT_I32;
            e->dtype = "I32";
        }
        if (o->as_f64 && strcmp(e->name, o->as_f64) == 0) {
            size_t n = e->nbytes / inf_dtype_block_bytes(e->dt);
            double *v = malloc(8 * n);
            for (size_t j = 0; j < n; j++) v[j] = ((float *)e->data)[j];
            free(e->data);
            e->data = v;
            e->nbytes = 8 * n;
            e->dtype = "F64";
            raw = true;
        }
    }
    for (int s = 0; s < o->shards; s++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, shard_name(o, s));
        if (raw) {
            raw_write(p, s);
            continue;
        }
        st_writer *w;
        inf_error err;
        cr_assert_eq(st_writer_new(&w, &err), INF_OK);
        cr_assert_eq(st_writer_meta(w, "format", "pt", &err), INF_OK);
        for (int i = 0; i < md.n; i++) {
            const ent *e = &md.e[i];
            if (e->shard != s) continue;
            cr_assert_eq(st_writer_add(w, e->name, e->dt, e->ndim, e->shape, e->data, e->nbytes, &err), INF_OK,
                         "%s", err.msg);
        }
        cr_assert_eq(st_writer_write(w, p, &err), INF_OK, "%s", err.msg);
        st_writer_free(w);
    }
    if (o->index) {
        cJSON *ix = cJSON_CreateObject();
        cJSON *wm = cJSON_AddObjectToObject(ix, "weight_map");
        for (int i = 0; i < md.n; i++)
            if (md.e[i].shard >= 0) cJSON_AddStringToObject(wm, md.e[i].name, shard_name(o, md.e[i].shard));
        char *text = cJSON_Print(ix);
        char p[600];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
        free(text);
        cJSON_Delete(ix);
    }
}

static const ent *find_ent(const char *name) {
    for (int i = 0; i < md.n; i++)
        if (strcmp(md.e[i].name, name) == 0) return &md.e[i];
    cr_assert_fail("test bug: no entry '%s'", name);
    return NULL;
}

/* The loaded tensor holds exactly the values the test wrote. */
static void expect_same(const inf_tensor *t, const char *name) {
    const ent *e = find_ent(name);
    cr_assert_eq(t->dtype, e->dt, "%s: dtype %d, wrote %d", name, t->dtype, e->dt);
    cr_assert_eq(t->nbytes, e->nbytes);
    cr_assert_eq(memcmp(t->data, e->data, e->nbytes), 0, "%s: bytes differ", name);
}

static void expect_gain(const float *g, const char *name, int dim) {
    const ent *e = find_ent(name);
    inf_tensor t = {.dtype = e->dt, .ndim = 1, .shape = {dim}, .data = e->data, .nbytes = e->nbytes};
    float want[256];
    inf_tensor_row_f32(&t, 0, want);
    for (int i = 0; i < dim; i++) cr_assert_eq(g[i], want[i], "%s[%d]", name, i);
}

static inf_model *load_ok(const char *path) {
    inf_model *m = NULL;
    inf_error err = {{0}};
    inf_status st = inf_model_load(path, &m, &err);
    cr_assert_eq(st, INF_OK, "load failed: %s", err.msg);
    cr_assert_not_null(m);
    return m;
}

static void check_tiny(const inf_model *m, const opts *o) {
    const inf_model_config *c = &m->cfg;
    cr_assert_str_eq(c->arch, "llama");
    cr_assert_eq(c->dim, o->dim);
    cr_assert_eq(c->n_layers, o->layers);
    cr_assert_eq(c->n_heads, o->heads);
    cr_assert_eq(c->n_kv_heads, o->kv);
    cr_assert_eq(c->head_dim, o->dim / o->heads);
    cr_assert_eq(c->ffn_dim, o->ffn);
    cr_assert_eq(c->vocab_size, o->vocab);
    cr_assert_eq(c->max_seq, 256);
    cr_assert_float_eq(c->rms_eps, 1e-5f, 1e-12);
    cr_assert_eq(c->rope_theta, 10000.0f);
    cr_assert_eq(c->rope_scaling, INF_ROPE_SCALING_NONE);
    cr_assert_not(c->rope_interleaved, "HF q/k rows use rotate_half");
    cr_assert_eq(c->tied_embeddings, o->tied);
    cr_assert_eq(c->bos_id, 1);
    cr_assert_eq(c->eos_id, 2);
    cr_assert_eq(c->eot_id, -1);
    cr_assert_eq(m->source, o->group ? INF_SRC_AWQ : INF_SRC_SAFETENSORS);
    expect_same(&m->tok_embd, "model.embed_tokens.weight");
    if (o->tied) {
        cr_assert_eq(m->lm_head.data, m->tok_embd.data);
    } else {
        expect_same(&m->lm_head, "lm_head.weight");
    }
    expect_gain(m->out_norm, "model.norm.weight", o->dim);
    int hd = o->dim / o->heads;
    for (int l = 0; l < o->layers; l++) {
        const inf_layer *L = &m->layers[l];
        char nm[128];
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        expect_gain(L->attn_norm, nm, o->dim);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        expect_gain(L->ffn_norm, nm, o->dim);
        cr_assert_eq(L->wq.shape[0], o->heads * hd);
        cr_assert_eq(L->wk.shape[0], o->kv * hd);
        cr_assert_eq(L->wo.shape[1], o->heads * hd);
        cr_assert_eq(L->w_down.shape[0], o->dim);
        cr_assert_eq(L->w_down.shape[1], o->ffn);
        if (o->group) continue;
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.q_proj.weight", l);
        expect_same(&L->wq, nm);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.weight", l);
        expect_same(&L->wv, nm);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
        expect_same(&L->w_down, nm);
    }
}

/* ---- loading ---------------------------------------------------------------------- */

Test(model_hf, untied_f32_directory) {
    opts o = {.dt = INF_DT_F32};
    write_model(&o, 1);
    inf_model *m = load_ok(dir);
    check_tiny(m, &o);
    cr_assert_neq(m->lm_head.data, m->tok_embd.data);
    inf_model_free(m);
}

Test(model_hf, tied_f16_and_bf16) {
    inf_dtype dts[2] = {INF_DT_F16, INF_DT_BF16};
    for (int i = 0; i < 2; i++) {
        opts o = {.dt = dts[i], .tied = true};
        write_model(&o, 2 + (uint64_t)i);
        inf_model *m = load_ok(dir);
        check_tiny(m, &o);
        cr_assert_eq(m->layers[1].w_up.dtype, dts[i]);
        inf_model_free(m);
        teardown();
    }
}

Test(model_hf, single_file_path_with_config_beside_it) {
    opts o = {.dt = INF_DT_BF16};
    write_model(&o, 4);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    inf_model *m = load_ok(p); /* recognized by content through inf_model_load */
    check_tiny(m, &o);
    cr_assert_str_eq(m->path, p);
    inf_model_free(m);
}

Test(model_hf, sharded_with_and_without_index) {
    for (int with_index = 0; with_index < 2; with_index++) {
        opts o = {.dt = INF_DT_F16, .shards = 2, .index = with_index};
        write_model(&o, 5);
        inf_model *m = load_ok(dir);
        check_tiny(m, &o);
        inf_model_free(m);
        teardown();
    }
}

Test(model_hf, token_ids_and_eos_list) {
    opts o = {.dt = INF_DT_F32,
              .config = "{\"bos_token_id\":0,\"eos_token_id\":[3,5,7],\"pad_token_id\":9,"
                        "\"num_key_value_heads\":null,\"head_dim\":null}"};
    write_model(&o, 6);
    /* num_key_value_heads null -> heads: the tensors must then be MHA-shaped. */
    inf_error err;
    inf_model *m = NULL;
    cr_assert_eq(inf_model_load(dir, &m, &err), INF_E_SHAPE);
    cr_assert(strstr(err.msg, "k_proj"), "%s", err.msg);
    teardown();

    o.kv = 4;
    write_model(&o, 6);
    m = load_ok(dir);
    cr_assert_eq(m->cfg.bos_id, 0);
    cr_assert_eq(m->cfg.eos_id, 3);
    cr_assert_eq(m->cfg.eot_id, 7, "the last of several eos ids is the end of turn");
    cr_assert_eq(m->cfg.pad_id, 9);
    cr_assert_eq(m->cfg.n_kv_heads, 4);
    cr_assert_eq(m->cfg.head_dim, 16);
    inf_model_free(m);
    teardown();

    o.config = "{\"eos_token_id\":[3,5],\"bos_token_id\":null}";
    write_model(&o, 6);
    m = load_ok(dir);
    cr_assert_eq(m->cfg.bos_id, -1);
    cr_assert_eq(m->cfg.eos_id, 3);
    cr_assert_eq(m->cfg.eot_id, 5);
    inf_model_free(m);
}

Test(model_hf, llama3_rope_scaling_frequencies) {
    opts o = {.dt = INF_DT_F32,
              .config = "{\"rope_theta\":500000.0,\"max_position_embeddings\":131072,"
                        "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
                        "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}"};
    write_model(&o, 7);
    inf_model *m = load_ok(dir);
    const inf_model_config *c = &m->cfg;
    cr_assert_eq(c->rope_scaling, INF_ROPE_SCALING_LLAMA3);
    cr_assert_eq(c->rope_factor, 8.0f);
    cr_assert_eq(c->rope_low_freq, 1.0f);
    cr_assert_eq(c->rope_high_freq, 4.0f);
    cr_assert_eq(c->rope_orig_ctx, 8192);
    cr_assert_eq(c->max_seq, 131072);
    /* Llama 3.1's rule: wavelengths under orig/high kept, over orig/low
     * divided by factor, in between a linear blend in orig/wavelength. */
    int hd = c->head_dim, kept = 0, scaled = 0, blended = 0;
    for (int i = 0; i < hd / 2; i++) {
        double base = 1.0 / pow(500000.0, (2.0 * i) / hd);
        double wl = 2.0 * M_PI / base, want;
        if (wl < 8192.0 / 4.0) {
            want = base;
            kept++;
        } else if (wl > 8192.0 / 1.0) {
            want = base / 8.0;
            scaled++;
        } else {
            double s = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want = (1 - s) * base / 8.0 + s * base;
            blended++;
        }
        cr_assert(fabs(m->rope_inv_freq[i] - want) <= 1e-6 * want, "inv_freq[%d] = %.9g, want %.9g", i,
                  m->rope_inv_freq[i], want);
    }
    cr_assert(kept && scaled && blended, "the test must cover all three bands (%d %d %d)", kept, scaled, blended);
    inf_model_free(m);
    teardown();

    /* Old spelling "type", and "default" meaning none. */
    o.config = "{\"rope_scaling\":{\"type\":\"default\"}}";
    write_model(&o, 7);
    m = load_ok(dir);
    cr_assert_eq(m->cfg.rope_scaling, INF_ROPE_SCALING_NONE);
    cr_assert_float_eq(m->rope_inv_freq[1], pow(10000.0, -2.0 / 16), 1e-7);
    inf_model_free(m);
}

Test(model_hf, mistral_without_sliding_window) {
    opts o = {.dt = INF_DT_F16, .config = "{\"model_type\":\"mistral\",\"sliding_window\":null}"};
    write_model(&o, 8);
    inf_model *m = load_ok(dir);
    check_tiny(m, &o);
    inf_model_free(m);
    teardown();
    /* A window at least as long as the context never slides. */
    o.config = "{\"model_type\":\"mistral\",\"sliding_window\":256}";
    write_model(&o, 8);
    m = load_ok(dir);
    check_tiny(m, &o);
    inf_model_free(m);
}

/* ---- AWQ -------------------------------------------------------------------------------- */

static void check_awq_projection(const inf_tensor *t, const char *prefix) {
    const awq_proj *a = NULL;
    for (int i = 0; i < md.n_awq; i++)
        if (strcmp(md.awq[i].prefix, prefix) == 0) a = &md.awq[i];
    cr_assert_not_null(a, "%s", prefix);
    int64_t N = a->N, K = a->K;
    cr_assert_eq(t->dtype, INF_DT_Q4G, "%s", prefix);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], N);
    cr_assert_eq(t->shape[1], K);
    cr_assert_eq(t->nbytes, (size_t)(N * K / 2), "%s: not 4 bits per weight", prefix);
    int g = t->group;
    float *row = malloc(sizeof(float) * (size_t)K), *x = malloc(sizeof(float) * (size_t)K);
    for (int64_t k = 0; k < K; k++) x[k] = 2.0f * frand();
    for (int64_t n = 0; n < N; n++) {
        inf_tensor_row_f32(t, n, row);
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; k++) {
            float s = inf_f16_to_f32(a->s[(k / g) * N + n]);
            float want = ((float)a->q[k * N + n] - (float)a->z[(k / g) * N + n]) * s;
            cr_assert_eq(row[k], want, "%s: W[%lld][%lld] = %g, want (q - z) * s = %g", prefix, (long long)n,
                         (long long)k, row[k], want);
            ref += (double)want * x[k];
            mag += fabs((double)want * x[k]);
        }
        double got = inf_tensor_row_dot(t, n, x);
        cr_assert(fabs(got - ref) <= 1e-4 * mag + 1e-30, "%s row %lld: dot %.9g, reference %.9g", prefix,
                  (long long)n, got, ref);
    }
    free(row);
    free(x);
}

Test(model_hf, awq_repack_is_exact) {
    const int groups[2] = {128, 64};
    for (int gi = 0; gi < 2; gi++) {
        opts o = {.dt = INF_DT_F16, .group = groups[gi], .dim = 128, .heads = 4, .kv = 2, .ffn = 256,
                  .vocab = 64, .shards = gi ? 2 : 1, .index = gi == 1};
        write_model(&o, 9 + (uint64_t)gi);
        inf_model *m = load_ok(dir);
        check_tiny(m, &o);
        cr_assert_eq(m->source, INF_SRC_AWQ);
        for (int l = 0; l < o.layers; l++) {
            const inf_layer *L = &m->layers[l];
            const inf_tensor *ts[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            static const char *mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};
            for (int i = 0; i < 7; i++) {
                char prefix[96];
                snprintf(prefix, sizeof prefix, "model.layers.%d.%s", l, mods[i]);
                cr_assert_eq(ts[i]->group, groups[gi]);
                check_awq_projection(ts[i], prefix);
            }
        }
        inf_model_free(m);
        teardown();
    }
}

/* ---- bad input ---------------------------------------------------------------------------- */

/* Loading must fail with `code`, leave *out NULL, and the message must name
 * `file` (a file name) and `what` (the field or tensor). */
static void expect_fail(opts *o, inf_status code, const char *file, const char *what) {
    write_model(o, 11);
    inf_model *m = (inf_model *)0x1;
    inf_error err = {{0}};
    inf_status st = inf_model_load(dir, &m, &err);
    cr_assert_eq(st, code, "status %d (%s), want %d; message: %s", st, inf_strstatus(st), code, err.msg);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, file), "message does not name the file '%s': %s", file, err.msg);
    cr_assert(strstr(err.msg, what), "message does not name '%s': %s", what, err.msg);
    cr_log_info("%s", err.msg);
    teardown();
}

#define AWQ_OPTS .dt = INF_DT_F16, .group = 128, .dim = 128, .ffn = 256, .vocab = 64

Test(model_hf, missing_tensor) {
    opts o = {.dt = INF_DT_F32, .drop = "model.layers.1.mlp.up_proj.weight"};
    expect_fail(&o, INF_E_NOTFOUND, "model.safetensors", "'model.layers.1.mlp.up_proj.weight'");
    opts u = {.dt = INF_DT_F32, .drop = "lm_head.weight"}; /* untied without a head */
    expect_fail(&u, INF_E_NOTFOUND, "model.safetensors", "'lm_head.weight'");
    opts s = {.dt = INF_DT_F32, .shards = 2, .drop = "model.norm.weight"};
    expect_fail(&s, INF_E_NOTFOUND, "safetensors files", "'model.norm.weight'");
    opts a = {AWQ_OPTS, .drop = "model.layers.0.mlp.down_proj.scales"};
    expect_fail(&a, INF_E_NOTFOUND, "model.safetensors", "'model.layers.0.mlp.down_proj.scales'");
}

Test(model_hf, shape_disagrees_with_config) {
    opts o = {.dt = INF_DT_F32, .grow = "model.layers.1.self_attn.k_proj.weight"};
    expect_fail(&o, INF_E_SHAPE, "model.safetensors", "'model.layers.1.self_attn.k_proj.weight'");
    opts c = {.dt = INF_DT_F16, .config = "{\"intermediate_size\":128}"};
    expect_fail(&c, INF_E_SHAPE, "model.safetensors", "'model.layers.0.mlp.gate_proj.weight'");
    opts v = {.dt = INF_DT_F16, .config = "{\"vocab_size\":100}"};
    expect_fail(&v, INF_E_SHAPE, "model.safetensors", "'model.embed_tokens.weight'");
    opts n = {.dt = INF_DT_F16, .grow = "model.norm.weight"};
    expect_fail(&n, INF_E_SHAPE, "model.safetensors", "'model.norm.weight'");
    opts a = {AWQ_OPTS, .grow = "model.layers.0.self_attn.o_proj.qzeros"};
    expect_fail(&a, INF_E_SHAPE, "model.safetensors", "'model.layers.0.self_attn.o_proj.qzeros'");
}

Test(model_hf, config_with_wrong_types) {
    const char *cases[][2] = {
        {"{\"hidden_size\":\"big\"}", "'hidden_size'"},
        {"{\"num_hidden_layers\":2.5}", "'num_hidden_layers'"},
        {"{\"tie_word_embeddings\":\"yes\"}", "'tie_word_embeddings'"},
        {"{\"rope_theta\":[1]}", "'rope_theta'"},
        {"{\"eos_token_id\":\"</s>\"}", "'eos_token_id'"},
        {"{\"eos_token_id\":[2,\"x\"]}", "'eos_token_id'"},
        {"{\"model_type\":7}", "'model_type'"},
        {"{\"rope_scaling\":\"llama3\"}", "'rope_scaling'"},
        {"{\"quantization_config\":[]}", "'quantization_config'"},
        {"{\"num_attention_heads\":-4}", "'num_attention_heads'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        opts o = {.dt = INF_DT_F32, .config = cases[i][0]};
        write_model(&o, 12);
        inf_model *m = (inf_model *)0x1;
        inf_error err = {{0}};
        cr_assert_neq(inf_model_load(dir, &m, &err), INF_OK, "%s was accepted", cases[i][0]);
        cr_assert_null(m);
        cr_assert(strstr(err.msg, "config.json") && strstr(err.msg, cases[i][1]), "%s -> %s", cases[i][0],
                  err.msg);
        teardown();
    }
    opts big = {.dt = INF_DT_F32, .config = "{\"hidden_size\":\"big\"}"};
    expect_fail(&big, INF_E_FORMAT, "config.json", "\"big\"");
    opts miss = {.dt = INF_DT_F32, .config = "{\"vocab_size\":null}"};
    expect_fail(&miss, INF_E_NOTFOUND, "config.json", "'vocab_size'");
    opts kv = {.dt = INF_DT_F32, .config = "{\"num_key_value_heads\":8}"};
    expect_fail(&kv, INF_E_RANGE, "config.json", "'num_key_value_heads'");
}

Test(model_hf, config_not_json_or_missing) {
    opts o = {.dt = INF_DT_F32};
    write_model(&o, 13);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    cr_assert_eq(tu_write_file(p, "{\"hidden_size\": 64,", 19), 0);
    inf_model *m = (inf_model *)0x1;
    inf_error err;
    cr_assert_eq(inf_model_load(dir, &m, &err), INF_E_FORMAT);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, "JSON"), "%s", err.msg);
    cr_assert_eq(unlink(p), 0);
    cr_assert_eq(inf_model_load(dir, &m, &err), INF_E_IO);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
}

Test(model_hf, unsupported_model_features) {
    opts t = {.dt = INF_DT_F32, .config = "{\"model_type\":\"gpt2\"}"};
    expect_fail(&t, INF_E_UNSUPPORTED, "config.json", "'model_type' = 'gpt2'");
    opts r = {.dt = INF_DT_F32, .config = "{\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}"};
    expect_fail(&r, INF_E_UNSUPPORTED, "config.json", "'yarn'");
    opts r2 = {.dt = INF_DT_F32, .config = "{\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}"};
    expect_fail(&r2, INF_E_UNSUPPORTED, "config.json", "'linear'");
    opts r3 = {.dt = INF_DT_F32,
               .config = "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1.0,"
                         "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}"};
    expect_fail(&r3, INF_E_NOTFOUND, "config.json", "'rope_scaling.factor'");
    opts sw = {.dt = INF_DT_F32, .config = "{\"model_type\":\"mistral\",\"sliding_window\":32}"};
    expect_fail(&sw, INF_E_UNSUPPORTED, "config.json", "'sliding_window'");
    opts sw2 = {.dt = INF_DT_F32, .config = "{\"model_type\":\"mistral\",\"max_position_embeddings\":8192}"};
    expect_fail(&sw2, INF_E_UNSUPPORTED, "config.json", "'sliding_window'");
    opts ab = {.dt = INF_DT_F32, .config = "{\"attention_bias\":true}"};
    expect_fail(&ab, INF_E_UNSUPPORTED, "config.json", "'attention_bias'");
    opts mb = {.dt = INF_DT_F32, .config = "{\"mlp_bias\":true}"};
    expect_fail(&mb, INF_E_UNSUPPORTED, "config.json", "'mlp_bias'");
    opts act = {.dt = INF_DT_F32, .config = "{\"hidden_act\":\"gelu\"}"};
    expect_fail(&act, INF_E_UNSUPPORTED, "config.json", "'hidden_act'");
    opts bias = {.dt = INF_DT_F32, .bias = true};
    expect_fail(&bias, INF_E_UNSUPPORTED, "model.safetensors", "'model.layers.0.self_attn.q_proj.bias'");
}

Test(model_hf, unusable_dtype_as_weight) {
    opts f = {.dt = INF_DT_F32, .as_f64 = "model.layers.0.self_attn.q_proj.weight"};
    expect_fail(&f, INF_E_UNSUPPORTED, "model.safetensors", "'model.layers.0.self_attn.q_proj.weight'");
    opts f2 = {.dt = INF_DT_F32, .as_f64 = "model.layers.1.mlp.gate_proj.weight"};
    expect_fail(&f2, INF_E_UNSUPPORTED, "model.safetensors", "F64");
    opts i = {.dt = INF_DT_F32, .as_i32 = "model.layers.1.self_attn.o_proj.weight"};
    expect_fail(&i, INF_E_UNSUPPORTED, "model.safetensors", "'model.layers.1.self_attn.o_proj.weight' has dtype I32");
}

Test(model_hf, bad_awq_config) {
    const struct { const char *cfg, *what; inf_status code; } cases[] = {
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":8,\"group_size\":128,\"zero_point\":true,"
         "\"version\":\"gemm\"}}",
         "'quantization_config.bits' = 8", INF_E_UNSUPPORTED},
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":128,\"zero_point\":false,"
         "\"version\":\"gemm\"}}",
         "'quantization_config.zero_point'", INF_E_UNSUPPORTED},
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":128,\"zero_point\":true,"
         "\"version\":\"gemv\"}}",
         "'quantization_config.version' = 'gemv'", INF_E_UNSUPPORTED},
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":96,\"zero_point\":true,"
         "\"version\":\"gemm\"}}",
         "'quantization_config.group_size' = 96", INF_E_UNSUPPORTED},
        {"{\"quantization_config\":{\"quant_method\":\"gptq\",\"bits\":4}}", "'quantization_config.quant_method'",
         INF_E_UNSUPPORTED},
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"group_size\":128}}", "'quantization_config.bits'",
         INF_E_NOTFOUND},
        {"{\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":\"4\",\"group_size\":128}}",
         "'quantization_config.bits'", INF_E_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        opts o = {AWQ_OPTS, .config = cases[i].cfg};
        expect_fail(&o, cases[i].code, "config.json", cases[i].what);
    }
}

Test(model_hf, truncated_safetensors) {
    opts o = {.dt = INF_DT_F32};
    write_model(&o, 14);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    size_t len;
    char *b = tu_read_file(p, &len);
    cr_assert_eq(tu_write_file(p, b, len / 2), 0);
    free(b);
    inf_model *m = (inf_model *)0x1;
    inf_error err;
    cr_assert_eq(inf_model_load(dir, &m, &err), INF_E_RANGE);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, p) && strstr(err.msg, "data_offsets"), "%s", err.msg);
}
