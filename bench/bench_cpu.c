/* bench_cpu.c — CPU prefill and decode speed of the local forward pass.
 *
 *   bench_cpu --model PATH [--prefill N] [--decode N] [--runs R] [--json FILE]
 *
 * Prefill: N prompt tokens in one pass (chunks of 256, as `infemeral run`
 * does), including the lm_head of the last position. Decode: N single-token
 * steps after a 16-token prompt, each with embedding, layers, lm_head and
 * greedy sampling. Token ids are fixed pseudo-random ids, so no tokenizer is
 * involved. Reports the median of R runs after one warm-up run.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "kv.h"
#include "model.h"
#include "sample.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bool keep_going(int32_t id, void *u) { return true; }

int main(int argc, char **argv) {
    const char *model = NULL, *json = NULL;
    int n_prefill = 512, n_decode = 128, runs = 3;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--model") && v) model = argv[++i];
        else if (!strcmp(argv[i], "--prefill") && v) n_prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && v) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && v) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && v) json = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cpu --model PATH [--prefill N] [--decode N] [--runs R] [--json FILE]\n");
            return 2;
        }
    }
    if (!model || n_prefill < 1 || n_decode < 2 || runs < 1) {
        fprintf(stderr, "bench_cpu: --model is required; counts must be positive\n");
        return 2;
    }
    inf_error err = {{0}};
    inf_model *m;
    if (inf_model_load(model, &m, &err)) {
        fprintf(stderr, "bench_cpu: %s\n", err.msg);
        return 1;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)n_prefill);
    uint64_t r = 12345;
    for (int i = 0; i < n_prefill; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((r >> 33) % (uint64_t)m->cfg.vocab_size);
    }
    inf_sampler_params sp = inf_sampler_defaults();
    sp.temperature = 0;
    sp.repeat_penalty = 1;
    double *pre = calloc((size_t)runs, sizeof *pre), *dec = calloc((size_t)runs, sizeof *dec);
    for (int run = -1; run < runs; run++) {
        for (int phase = 0; phase < 2; phase++) {
            inf_kv kv;
            inf_sampler s;
            int ctx = n_prefill + n_decode + 16;
            if (inf_kv_init(&kv, &m->cfg, ctx, &err) || inf_sampler_init(&s, &sp, m->cfg.vocab_size, &err)) {
                fprintf(stderr, "bench_cpu: %s\n", err.msg);
                return 1;
            }
            inf_local_layers local = {m, &kv};
            inf_gen g = {m, inf_local_layers_fn, &local, 256};
            inf_gen_stats st;
            int pos = 0;
            int np = phase == 0 ? n_prefill : 16, nd = phase == 0 ? 1 : n_decode;
            if (inf_generate(&g, &pos, ids, np, nd, &s, keep_going, NULL, NULL, &st, &err)) {
                fprintf(stderr, "bench_cpu: %s\n", err.msg);
                return 1;
            }
            if (run >= 0) {
                if (phase == 0) pre[run] = np / st.prefill_s;
                else dec[run] = (st.n_gen - 1) / st.decode_s;
            }
            inf_sampler_free(&s);
            inf_kv_free(&kv);
        }
    }
    qsort(pre, (size_t)runs, sizeof *pre, cmp_d);
    qsort(dec, (size_t)runs, sizeof *dec, cmp_d);
    double p50 = pre[runs / 2], d50 = dec[runs / 2];
    const char *name = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    int threads = omp_get_max_threads();
    printf("| model | threads | prefill %d tok/s | decode tok/s (%d steps) |\n", n_prefill, n_decode);
    printf("|---|---|---|---|\n");
    printf("| %s | %d | %.1f | %.1f |\n", name, threads, p50, d50);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "bench_cpu: cannot write %s\n", json);
            return 1;
        }
        fprintf(f,
                "{\"impl\": \"infemeral\", \"model\": \"%s\", \"threads\": %d, \"prefill_tokens\": %d, "
                "\"decode_tokens\": %d, \"runs\": %d, \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f}\n",
                name, threads, n_prefill, n_decode, runs, p50, d50);
        fclose(f);
    }
    free(pre);
    free(dec);
    free(ids);
    inf_model_free(m);
    return 0;
}
