/* client_kernels.c — the client's memory-bound kernels (common/gemv.h)
 * next to OpenBLAS, at Llama-3.1-8B shapes by default.
 *
 *   client_kernels [--vocab V] [--dim D] [--reps N] [--json FILE]
 *
 * lm_head: our f16 and int8 GEMV against cblas_sgemv on an f32 copy (the
 * only form OpenBLAS takes; converting the f16 rows first would read them
 * anyway and then write and read twice as much). Rotation: d x d f32, Q x
 * and Q^T x, ours against cblas_sgemv. Each at 1 and 2 threads (ours:
 * OpenMP; OpenBLAS: its own pool), best of N, with the GB/s each reached.
 * Random data: speed depends on shapes only.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemv.h"
#include "tensor.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    char name[96];
    int threads;
    double ms, gbs;
} row;

static row rows[64];
static int nrows;

static void add(const char *name, int threads, double s, double bytes) {
    row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->threads = threads;
    r->ms = s * 1e3;
    r->gbs = bytes / s / 1e9;
    printf("| %-44s | %d | %8.2f | %6.1f |\n", name, threads, r->ms, r->gbs);
    fflush(stdout);
}

int main(int argc, char **argv) {
    long V = 128256, D = 4096;
    int reps = 5;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--vocab") && v) V = atol(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && v) D = atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && v) json = argv[++i];
        else {
            fprintf(stderr, "usage: client_kernels [--vocab V] [--dim D] [--reps N] [--json FILE]\n");
            return 2;
        }
    }
    size_t n = (size_t)V * D;
    uint16_t *h = malloc(n * 2);
    float *w = malloc(n * 4), *x = malloc(D * 4), *y = malloc(V * 4), *Q = malloc((size_t)D * D * 4);
    int8_t *q = malloc(n);
    float *sc = malloc(V * 4);
    int16_t *xq = malloc(D * 2);
    if (!h || !w || !x || !y || !Q || !q || !sc || !xq) {
        fprintf(stderr, "client_kernels: out of memory\n");
        return 1;
    }
    uint64_t s = 88172645463325252ull;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < V; r++) {
        uint64_t z = s ^ (uint64_t)r * 0x9E3779B97F4A7C15ull;
        for (long j = 0; j < D; j++) {
            z ^= z << 13, z ^= z >> 7, z ^= z << 17;
            float v = ((float)(z >> 40) / 16777216.0f - 0.5f) * 0.05f;
            w[r * D + j] = v;
            h[r * D + j] = inf_f32_to_f16(v);
        }
        sc[r] = gemv_quantize_row_i8(w + r * D, D, q + r * D);
    }
    for (long j = 0; j < D; j++) x[j] = sinf((float)j);
    for (size_t i = 0; i < (size_t)D * D; i++) Q[i] = w[i % n];
    inf_tensor th = {.dtype = INF_DT_F16, .ndim = 2, .shape = {V, D}, .data = h};
    inf_tensor tq = {.dtype = INF_DT_I8, .ndim = 2, .shape = {V, D}, .data = q};
    const gemv_isa top = gemv_isa_active();
    printf("lm_head %ld x %ld, rotation %ld x %ld; best of %d; CPU ISA %s\n\n", V, D, D, D, reps, gemv_isa_name(top));
    printf("| kernel | threads | ms | GB/s |\n|---|---|---|---|\n");
    char name[96];
    for (int th_n = 1; th_n <= 2; th_n++) {
        omp_set_num_threads(th_n);
        openblas_set_num_threads(th_n);
        for (int isa = (int)top; isa >= 1; isa--) {
            gemv_isa_force((gemv_isa)isa);
            gemv_input in;
            double best = 1e9;
            for (int r = 0; r < reps; r++) {
                double t = now();
                gemv_rows(&th, NULL, gemv_input_make(&in, INF_DT_F16, x, D, NULL), NULL, V, y);
                t = now() - t;
                if (t < best) best = t;
            }
            snprintf(name, sizeof name, "lm_head f16, ours (%s)", gemv_isa_name((gemv_isa)isa));
            add(name, th_n, best, (double)n * 2);
            best = 1e9;
            for (int r = 0; r < reps; r++) {
                double t = now();
                gemv_rows(&tq, sc, gemv_input_make(&in, INF_DT_I8, x, D, xq), NULL, V, y);
                t = now() - t;
                if (t < best) best = t;
            }
            snprintf(name, sizeof name, "lm_head int8, ours (%s)", gemv_isa_name((gemv_isa)isa));
            add(name, th_n, best, (double)n);
        }
        gemv_isa_force(top);
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            double t = now();
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)V, (int)D, 1.0f, w, (int)D, x, 1, 0.0f, y, 1);
            t = now() - t;
            if (t < best) best = t;
        }
        add("lm_head f32, OpenBLAS sgemv", th_n, best, (double)n * 4);
        for (int tr = 0; tr < 2; tr++) {
            best = 1e9;
            for (int r = 0; r < reps * 4; r++) {
                double t = now();
                gemv_square(Q, INF_DT_F32, (int)D, x, tr, y);
                t = now() - t;
                if (t < best) best = t;
            }
            add(tr ? "rotation Q^T x f32, ours" : "rotation Q x f32, ours", th_n, best, (double)D * D * 4);
            best = 1e9;
            for (int r = 0; r < reps * 4; r++) {
                double t = now();
                cblas_sgemv(CblasRowMajor, tr ? CblasTrans : CblasNoTrans, (int)D, (int)D, 1.0f, Q, (int)D, x, 1, 0.0f,
                            y, 1);
                t = now() - t;
                if (t < best) best = t;
            }
            add(tr ? "rotation Q^T x f32, OpenBLAS sgemv" : "rotation Q x f32, OpenBLAS sgemv", th_n, best,
                (double)D * D * 4);
        }
        best = 1e9;
        float *e = malloc(D * 4);
        for (int r = 0; r < reps * 100; r++) {
            double t = now();
            gemv_row_f32(&th, (r * 7919) % V, e);
            t = now() - t;
            if (t < best) best = t;
        }
        free(e);
        add("embedding row f16 -> f32, ours", th_n, best, (double)D * 2);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "client_kernels: cannot write %s\n", json);
            return 1;
        }
        fprintf(f, "{\"vocab\": %ld, \"dim\": %ld, \"isa\": \"%s\", \"reps\": %d, \"rows\": [", V, D, gemv_isa_name(top), reps);
        for (int i = 0; i < nrows; i++)
            fprintf(f, "%s\n {\"kernel\": \"%s\", \"threads\": %d, \"ms\": %.3f, \"gb_s\": %.2f}", i ? "," : "",
                    rows[i].name, rows[i].threads, rows[i].ms, rows[i].gbs);
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
