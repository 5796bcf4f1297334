/* mkbundle.c — writes a random prepared model of a real model's shapes.
 *
 *   mkbundle --preset llama3-8b|smollm2-135m|tiny --weights f32|f16|bf16|int4
 *            --out DIR [--seed N] [--client-only | --server-only]
 *
 * Speed and memory depend on shapes, not on what the weights say, so a
 * benchmark of Llama-3.1-8B needs no 16 GB download: this writes
 * DIR/server (the worker's bundle) and DIR/client (embeddings, lm_head,
 * secret.key) in the formats of common/bundle.h, with uniform random weights
 * of variance 1/in (so activations stay in a realistic range through the
 * layers) and a fresh rotation seed. There is nothing to rotate: random
 * weights are as "rotated" as any. The same --seed gives the same weights.
 * The client bundle is marked folded (prep's default: rows already Q e_t;
 * a tied one gets G = Q diag(1) Q^T = I) unless --no-fold.
 * No tokenizer is written; benchmarks feed token ids.
 *
 * Memory: one tensor at a time (the 8B lm_head, 1 GB in f16, is the
 * largest); the files are written atomically by the safetensors writer.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bundle.h"
#include "model.h"
#include "prep.h"
#include "rotation.h"
#include "safetensors.h"
#include "tensor.h"

typedef struct {
    const char *name;
    inf_model_config cfg;
} preset;

static const preset presets[] = {
    {"llama3-8b",
     {.arch = "llama", .dim = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
      .ffn_dim = 14336, .vocab_size = 128256, .max_seq = 131072, .rope_theta = 500000.0f, .rms_eps = 1e-5f,
      .rope_scaling = INF_ROPE_SCALING_LLAMA3, .rope_factor = 8.0f, .rope_low_freq = 1.0f,
      .rope_high_freq = 4.0f, .rope_orig_ctx = 8192, .rope_interleaved = false, .tied_embeddings = false,
      .bos_id = 128000, .eos_id = 128001, .eot_id = 128009, .pad_id = -1}},
    {"smollm2-135m",
     {.arch = "llama", .dim = 576, .n_layers = 30, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64,
      .ffn_dim = 1536, .vocab_size = 49152, .max_seq = 8192, .rope_theta = 100000.0f, .rms_eps = 1e-5f,
      .rope_interleaved = false, .tied_embeddings = true, .bos_id = 1, .eos_id = 2, .eot_id = 2, .pad_id = -1}},
    {"tiny",
     {.arch = "llama", .dim = 256, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
      .ffn_dim = 512, .vocab_size = 512, .max_seq = 4096, .rope_theta = 10000.0f, .rms_eps = 1e-5f,
      .rope_interleaved = false, .tied_embeddings = false, .bos_id = 1, .eos_id = 2, .eot_id = 2, .pad_id = -1}},
};

/* splitmix64: a counter-based generator, so any row of any tensor can be
 * made independently (and in parallel) from (seed, tensor, row). */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform in [-1, 1). */
static float unif(uint64_t *s) {
    *s = mix(*s);
    return (float)((double)(*s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

typedef struct {
    uint64_t seed, tensor;
    int64_t rows, cols;
    inf_dtype dtype; /* F32/F16/BF16 weights, or U8 for the int4 parts */
    int part;        /* int4: 1 qweight, 2 scales, 3 zeros; else 0 */
    int group;
    float amp; /* uniform(-amp, amp); 0: sqrt(3/cols), variance 1/cols */
} gen;

static inf_status produce(void *user, void *buf, size_t nbytes, inf_error *err) {
    const gen *G = user;
    const float a = G->amp > 0 ? G->amp : sqrtf(3.0f / (float)G->cols);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < G->rows; r++) {
        uint64_t s = mix(G->seed ^ mix(G->tensor * 0x100000001b3ull + (uint64_t)r));
        if (G->part == 0) {
            for (int64_t j = 0; j < G->cols; j++) {
                float w = a * unif(&s);
                size_t i = (size_t)(r * G->cols + j);
                if (G->dtype == INF_DT_F32) ((float *)buf)[i] = w;
                else if (G->dtype == INF_DT_F16) ((uint16_t *)buf)[i] = inf_f32_to_f16(w);
                else ((uint16_t *)buf)[i] = inf_f32_to_bf16(w);
            }
        } else if (G->part == 1) { /* random nibbles */
            uint8_t *q = (uint8_t *)buf + r * (G->cols / 2);
            for (int64_t j = 0; j < G->cols / 2; j++) {
                s = mix(s);
                q[j] = (uint8_t)s;
            }
        } else if (G->part == 2) { /* (q - 8) * scale has variance ~21.25 scale^2 */
            uint16_t *sc = (uint16_t *)buf + r * (G->cols / G->group);
            float base = sqrtf(1.0f / (21.25f * (float)G->cols));
            for (int64_t j = 0; j < G->cols / G->group; j++) sc[j] = inf_f32_to_f16(base * (1.0f + 0.25f * unif(&s)));
        } else { /* zeros near the middle */
            uint8_t *z = (uint8_t *)buf + r * (G->cols / G->group);
            for (int64_t j = 0; j < G->cols / G->group; j++) {
                s = mix(s);
                z[j] = (uint8_t)(7 + (s & 1));
            }
        }
    }
    (void)nbytes;
    (void)err;
    return INF_OK;
}

/* mkdir -p: the parents 0755, the last one `mode`. */
static int mkdir_ok(const char *p, mode_t mode) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", p);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) break;
            *s = '/';
        }
    if (mkdir(p, mode) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "mkbundle: %s: cannot create directory: %s\n", p, strerror(errno));
    return -1;
}

static int usage(void) {
    fprintf(stderr, "usage: mkbundle --preset llama3-8b|smollm2-135m|tiny --weights f32|f16|bf16|int4 --out DIR\n"
                    "                [--seed N] [--client-only | --server-only] [--no-fold]\n");
    return 2;
}

static inf_status meta(st_writer *w, const char *format, int version, const char *cfg, const char *fp, inf_error *err) {
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    inf_status st = st_writer_meta(w, "format", format, err);
    if (!st) st = st_writer_meta(w, "format_version", ver, err);
    if (!st) st = st_writer_meta(w, "config", cfg, err);
    if (!st) st = st_writer_meta(w, "rotation", fp, err);
    return st;
}

int main(int argc, char **argv) {
    const char *pname = NULL, *wname = "f16", *out = NULL;
    uint64_t seed = 1;
    bool client = true, server = true, fold = true;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--preset") && v) pname = argv[++i];
        else if (!strcmp(argv[i], "--weights") && v) wname = argv[++i];
        else if (!strcmp(argv[i], "--out") && v) out = argv[++i];
        else if (!strcmp(argv[i], "--seed") && v) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--client-only")) server = false;
        else if (!strcmp(argv[i], "--server-only")) client = false;
        else if (!strcmp(argv[i], "--no-fold")) fold = false;
        else return usage();
    }
    if (!pname || !out || (!client && !server)) return usage();
    const preset *P = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, pname)) P = &presets[i];
    if (!P) {
        fprintf(stderr, "mkbundle: unknown --preset '%s' (llama3-8b, smollm2-135m or tiny)\n", pname);
        return 2;
    }
    inf_error err = {{0}};
    prep_weights wt;
    if (prep_parse_weights(wname, &wt, &err)) {
        fprintf(stderr, "mkbundle: %s\n", err.msg);
        return 2;
    }
    const inf_model_config *c = &P->cfg;
    static const char *wnames[] = {"f32", "f16", "bf16", "int4"};
    char sdir[2048], cdir[2048], path[2200], fp[ROT_FINGERPRINT_LEN];
    snprintf(sdir, sizeof sdir, "%s/server", out);
    snprintf(cdir, sizeof cdir, "%s/client", out);
    if (mkdir_ok(out, 0755) || (server && mkdir_ok(sdir, 0755)) || (client && mkdir_ok(cdir, 0700))) return 1;

    rot_seed rs;
    inf_status st = rot_seed_generate(&rs, &err);
    if (!st) st = rot_fingerprint(&rs, c->dim, fp, &err);
    char *cfg = inf_config_to_json(c);
    if (!st && !cfg) st = inf_fail(&err, INF_E_NOMEM, "out of memory");
    st_writer *w = NULL;
    gen *gens = calloc((size_t)c->n_layers * 7 * 3 + 4, sizeof *gens);
    if (!st && !gens) st = inf_fail(&err, INF_E_NOMEM, "out of memory");
    int ng = 0;
    uint64_t tensor_no = 0;

    if (!st && server) {
        st = st_writer_new(&w, &err);
        for (int l = 0; l < c->n_layers && !st; l++)
            for (int i = 0; i < 7 && !st; i++) {
                int64_t rows, cols;
                int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
                switch (i) {
                case 0: rows = qd, cols = c->dim; break;
                case 1:
                case 2: rows = kvd, cols = c->dim; break;
                case 3: rows = c->dim, cols = qd; break;
                case 4:
                case 5: rows = c->ffn_dim, cols = c->dim; break;
                default: rows = c->dim, cols = c->ffn_dim; break;
                }
                tensor_no++;
                char name[96];
                if (wt != PREP_INT4) {
                    inf_dtype dt = wt == PREP_F32 ? INF_DT_F32 : wt == PREP_F16 ? INF_DT_F16 : INF_DT_BF16;
                    int64_t shape[2] = {rows, cols};
                    gens[ng] = (gen){seed, tensor_no, rows, cols, dt, 0, 0, 0};
                    snprintf(name, sizeof name, "blk.%d.%s.weight", l, inf_bundle_linear_names[i]);
                    st = st_writer_add_lazy(w, name, dt, 2, shape, (size_t)(rows * cols) * (dt == INF_DT_F32 ? 4 : 2),
                                            produce, &gens[ng++], &err);
                    continue;
                }
                int g = prep_int4_group(cols);
                static const char *parts[] = {"", "qweight", "scales", "zeros"};
                for (int p = 1; p <= 3 && !st; p++) {
                    int64_t shape[2] = {rows, p == 1 ? cols / 2 : cols / g};
                    inf_dtype dt = p == 2 ? INF_DT_F16 : INF_DT_U8;
                    gens[ng] = (gen){seed, tensor_no * 4 + (uint64_t)p, rows, cols, dt, p, g, 0};
                    snprintf(name, sizeof name, "blk.%d.%s.%s", l, inf_bundle_linear_names[i], parts[p]);
                    st = st_writer_add_lazy(w, name, dt, 2, shape, (size_t)(shape[0] * shape[1]) * (p == 2 ? 2 : 1),
                                            produce, &gens[ng++], &err);
                }
            }
        int64_t half = c->head_dim / 2;
        float *inv = malloc(sizeof(float) * (size_t)half);
        if (!st && !inv) st = inf_fail(&err, INF_E_NOMEM, "out of memory");
        if (!st) {
            inf_rope_inv_freq(c, NULL, inv);
            st = st_writer_add(w, "rope.inv_freq", INF_DT_F32, 1, &half, inv, sizeof(float) * (size_t)half, &err);
        }
        if (!st) st = meta(w, INF_BUNDLE_SERVER_FORMAT, INF_BUNDLE_VERSION, cfg, fp, &err);
        if (!st) st = st_writer_meta(w, "weights", wnames[wt], &err);
        if (!st) st = st_writer_meta(w, "norms_folded", "true", &err);
        snprintf(path, sizeof path, "%s/%s", sdir, INF_BUNDLE_SERVER_FILE);
        if (!st) st = st_writer_write(w, path, &err);
        st_writer_free(w);
        w = NULL;
        free(inv);
    }

    if (!st && client) {
        inf_dtype cdt = wt == PREP_F32 ? INF_DT_F32 : INF_DT_F16;
        int64_t eshape[2] = {c->vocab_size, c->dim};
        size_t ebytes = (size_t)(eshape[0] * eshape[1]) * (cdt == INF_DT_F32 ? 4 : 2);
        st = st_writer_new(&w, &err);
        /* Embedding elements of variance ~1 (uniform on +-1.7), so the first
         * norm sees a realistic scale; the lm_head like any linear. */
        gens[ng] = (gen){seed, 1000001, c->vocab_size, c->dim, cdt, 0, 0, 1.7f};
        if (!st) st = st_writer_add_lazy(w, "token_embd.weight", cdt, 2, eshape, ebytes, produce, &gens[ng++], &err);
        float *one = malloc(sizeof(float) * (size_t)c->dim), *G = NULL;
        if (!st && !one) st = inf_fail(&err, INF_E_NOMEM, "out of memory");
        int64_t dshape = c->dim;
        if (!st && c->tied_embeddings && fold) {
            int64_t gshape[2] = {c->dim, c->dim};
            G = calloc((size_t)c->dim * c->dim, sizeof *G); /* borrowed by the writer until it writes */
            if (!G) st = inf_fail(&err, INF_E_NOMEM, "out of memory");
            for (int j = 0; !st && j < c->dim; j++) G[(size_t)j * c->dim + j] = 1.0f;
            if (!st)
                st = st_writer_add(w, "output_norm.rotated", INF_DT_F32, 2, gshape, G,
                                   sizeof(float) * (size_t)c->dim * c->dim, &err);
        } else if (!st && c->tied_embeddings) {
            for (int j = 0; j < c->dim; j++) one[j] = 1.0f;
            st = st_writer_add(w, "output_norm.weight", INF_DT_F32, 1, &dshape, one, sizeof(float) * (size_t)c->dim, &err);
        } else if (!st) {
            gens[ng] = (gen){seed, 1000002, c->vocab_size, c->dim, cdt, 0, 0, 0};
            st = st_writer_add_lazy(w, "output.weight", cdt, 2, eshape, ebytes, produce, &gens[ng++], &err);
        }
        if (!st) st = meta(w, INF_BUNDLE_CLIENT_FORMAT, fold ? 3 : INF_BUNDLE_VERSION, cfg, fp, &err);
        if (!st) st = st_writer_meta(w, "rotation_folded", fold ? "true" : "false", &err);
        snprintf(path, sizeof path, "%s/%s", cdir, INF_BUNDLE_CLIENT_FILE);
        if (!st) st = st_writer_write(w, path, &err);
        st_writer_free(w);
        free(one);
        free(G);
        snprintf(path, sizeof path, "%s/%s", cdir, INF_BUNDLE_SEED_FILE);
        if (!st) st = rot_seed_write(path, &rs, &err);
    }
    rot_seed_wipe(&rs);
    free(gens);
    free(cfg);
    if (st) {
        fprintf(stderr, "mkbundle: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "mkbundle: wrote a random %s bundle (%s weights) to %s\n", P->name, wnames[wt], out);
    return 0;
}
