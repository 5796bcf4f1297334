/* gpu.c — speed and memory of the CUDA backend on one server bundle.
 *
 *   bench_gpu --server DIR [--label NAME] [--ctx 128,2048] [--prefill 512]
 *             [--steps 64] [--reps 5] [--json FILE]
 *
 * Prints, and writes as JSON:
 *  - the device's copy bandwidth: a 1 GiB device-to-device cudaMemcpy,
 *    median of 20, counting bytes read plus bytes written;
 *  - weight bytes (the layer weights as stored in the bundle: data, and
 *    for INT4 scales and zeros) and the floor = weight bytes / bandwidth,
 *    the least time one decode step can take;
 *  - decode ms/token at each context (median over `steps` steps after the
 *    prompt was prefilled; the session is tagged so its KV stays on the
 *    device, as the worker's handler does): wall time of the whole call
 *    (state copies, KV rows back to the host) and device time of the layers
 *    (CUDA events inside the backend);
 *  - prefill of `prefill` tokens: ms (median of reps) and tokens/s;
 *  - peak device memory: at open (weights + activations + cuBLAS) measured
 *    with cudaMemGetInfo, and per session of N tokens (2 x layers x N x
 *    kv_dim x 4 bytes, the f32 KV mirror; also what the mirrors held).
 */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "kv.h"
#include "model.h"
#include "tensor.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define CK(call)                                                                                     \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "bench_gpu: %s failed: %s\n", #call, cudaGetErrorString(e_));            \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

/* Device-to-device copy bandwidth (read + write), GB/s. */
static double copy_bandwidth(void) {
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    cudaEvent_t e0, e1;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n)); /* not zeros: see METHOD.md */
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    double t[20];
    for (int i = -3; i < 20; i++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, n, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 0) t[i] = ms;
    }
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return 2.0 * (double)n / (median(t, 20) * 1e-3) / 1e9;
}

static size_t weight_bytes(const inf_model *m) {
    size_t t = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const inf_layer *L = &m->layers[l];
        const inf_tensor *ts[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) {
            t += ts[i]->nbytes;
            if (ts[i]->dtype == INF_DT_Q4G)
                t += (size_t)inf_tensor_rows(ts[i]) * (size_t)(inf_tensor_cols(ts[i]) / ts[i]->group) * 3;
        }
    }
    return t;
}

static void fill(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
}

typedef struct {
    int ctx;
    double wall_ms, device_ms;
} decode_row;

int main(int argc, char **argv) {
    const char *server = NULL, *label = NULL, *json = NULL, *ctxs = "128,2048";
    int prefill = 512, steps = 64, reps = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--server") && v) server = argv[++i];
        else if (!strcmp(a, "--label") && v) label = argv[++i];
        else if (!strcmp(a, "--json") && v) json = argv[++i];
        else if (!strcmp(a, "--ctx") && v) ctxs = argv[++i];
        else if (!strcmp(a, "--prefill") && v) prefill = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && v) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_gpu --server DIR [--label NAME] [--ctx 128,2048] [--prefill 512] "
                            "[--steps 64] [--reps 5] [--json FILE]\n");
            return 2;
        }
    }
    if (!server || prefill < 2 || steps < 1 || reps < 1 || reps > 100 || steps > 10000) {
        fprintf(stderr, "bench_gpu: --server DIR is required (prefill >= 2, steps >= 1, 1 <= reps <= 100)\n");
        return 2;
    }
    if (!label) label = server;
    inf_error err = {{0}};
    inf_model *m = NULL;
    if (inf_model_load_server_bundle(server, &m, &err)) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        return 1;
    }
    const double bw = copy_bandwidth();
    const size_t wb = weight_bytes(m);
    size_t free0, free1, total;
    CK(cudaMemGetInfo(&free0, &total));
    inf_backend *b = NULL;
    if (inf_backend_open(m, "cuda", &b, &err)) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        return 1;
    }
    CK(cudaMemGetInfo(&free1, &total));
    const size_t open_bytes = free0 - free1;
    const int d = m->cfg.dim, kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
    const size_t per_token = (size_t)2 * m->cfg.n_layers * kvd * sizeof(float);

    int maxctx = prefill;
    decode_row rows[8];
    int nrows = 0;
    for (const char *p = ctxs; *p && nrows < 8;) {
        int c = atoi(p);
        if (c > 0) {
            rows[nrows++].ctx = c;
            if (c > maxctx) maxctx = c;
        }
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    float *x = malloc(sizeof(float) * (size_t)maxctx * d);
    if (!x) return 1;
    size_t mirror_peak = 0;
    unsigned long long session = 1;

    /* decode at each context */
    for (int r = 0; r < nrows; r++) {
        inf_kv kv;
        if (inf_kv_init(&kv, &m->cfg, rows[r].ctx + steps + 8, &err)) return 1;
        snprintf(kv.tag, sizeof kv.tag, "%032llx", session++);
        kv.version = 0;
        kv.next_version = 1;
        fill(x, (size_t)rows[r].ctx * d, 7u + (unsigned)r);
        /* the prompt in chunks of at most 2048 rows, as a client would send it */
        for (int p0 = 0; p0 < rows[r].ctx; p0 += 2048) {
            int n = rows[r].ctx - p0 < 2048 ? rows[r].ctx - p0 : 2048;
            if (inf_backend_forward(b, &kv, x + (size_t)p0 * d, n, p0, &err)) {
                fprintf(stderr, "bench_gpu: prefill: %s\n", err.msg);
                return 1;
            }
            kv.version = kv.next_version++;
        }
        double *wall = malloc(sizeof(double) * (size_t)steps), *dev = malloc(sizeof(double) * (size_t)steps);
        for (int s = -3; s < steps; s++) { /* 3 warm-up steps */
            fill(x, (size_t)d, 100u + (unsigned)s);
            const int pos = kv.len;
            double t0 = now_ms();
            if (inf_backend_forward(b, &kv, x, 1, pos, &err)) {
                fprintf(stderr, "bench_gpu: decode: %s\n", err.msg);
                return 1;
            }
            double t1 = now_ms();
            kv.version = kv.next_version++;
            inf_backend_stats st;
            inf_backend_get_stats(b, &st);
            if (st.mirror_bytes > mirror_peak) mirror_peak = st.mirror_bytes;
            if (s >= 0) {
                wall[s] = t1 - t0;
                dev[s] = st.last_compute_ms;
            }
        }
        rows[r].wall_ms = median(wall, steps);
        rows[r].device_ms = median(dev, steps);
        free(wall);
        free(dev);
        inf_kv_free(&kv);
    }

    /* prefill */
    double *pw = malloc(sizeof(double) * (size_t)reps), *pd = malloc(sizeof(double) * (size_t)reps);
    fill(x, (size_t)prefill * d, 99u);
    for (int r = -1; r < reps; r++) {
        inf_kv kv;
        if (inf_kv_init(&kv, &m->cfg, prefill, &err)) return 1;
        float *xx = malloc(sizeof(float) * (size_t)prefill * d);
        memcpy(xx, x, sizeof(float) * (size_t)prefill * d);
        double t0 = now_ms();
        if (inf_backend_forward(b, &kv, xx, prefill, 0, &err)) {
            fprintf(stderr, "bench_gpu: prefill: %s\n", err.msg);
            return 1;
        }
        double t1 = now_ms();
        inf_backend_stats st;
        inf_backend_get_stats(b, &st);
        if (r >= 0) {
            pw[r] = t1 - t0;
            pd[r] = st.last_compute_ms;
        }
        free(xx);
        inf_kv_free(&kv);
    }
    const double pre_wall = median(pw, reps), pre_dev = median(pd, reps);
    inf_backend_stats st;
    inf_backend_get_stats(b, &st);
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const double floor_ms = (double)wb / (bw * 1e9) * 1e3;

    printf("%s on %s\n", label, prop.name);
    printf("  weights %.3f GB, copy bandwidth %.0f GB/s (read+write), floor %.3f ms/token\n", (double)wb / 1e9, bw,
           floor_ms);
    for (int r = 0; r < nrows; r++)
        printf("  decode @%-5d %7.3f ms/token wall, %7.3f ms device = %.2fx floor (%.0f tok/s)\n", rows[r].ctx,
               rows[r].wall_ms, rows[r].device_ms, rows[r].device_ms / floor_ms, 1e3 / rows[r].wall_ms);
    printf("  prefill %d   %7.2f ms wall, %7.2f ms device (%.0f tok/s)\n", prefill, pre_wall, pre_dev,
           prefill / (pre_wall * 1e-3));
    printf("  device memory: %.3f GiB at open (weights %.3f, activations %.3f), %.3f MiB per 1k-token session "
           "(mirrors held up to %.1f MiB)\n",
           (double)open_bytes / (1 << 30), (double)st.weight_bytes / (1 << 30), (double)st.scratch_bytes / (1 << 30),
           (double)per_token * 1000 / (1 << 20), (double)mirror_peak / (1 << 20));
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\"label\": \"%s\", \"gpu\": \"%s\", \"weights\": \"%s\", \"weight_bytes\": %zu, ", label, prop.name,
                inf_dtype_name(m->layers[0].wq.dtype), wb);
        fprintf(f, "\"copy_bw_gbs\": %.1f, \"floor_ms\": %.4f, \"decode\": [", bw, floor_ms);
        for (int r = 0; r < nrows; r++)
            fprintf(f, "%s{\"ctx\": %d, \"wall_ms\": %.4f, \"device_ms\": %.4f}", r ? ", " : "", rows[r].ctx,
                    rows[r].wall_ms, rows[r].device_ms);
        fprintf(f, "], \"prefill\": {\"tokens\": %d, \"wall_ms\": %.3f, \"device_ms\": %.3f, \"tok_s\": %.1f}, ",
                prefill, pre_wall, pre_dev, prefill / (pre_wall * 1e-3));
        fprintf(f, "\"memory\": {\"open_bytes\": %zu, \"weight_bytes_device\": %zu, \"scratch_bytes\": %zu, "
                   "\"kv_bytes_per_token\": %zu, \"mirror_peak_bytes\": %zu}}\n",
                open_bytes, st.weight_bytes, st.scratch_bytes, per_token, mirror_peak);
        fclose(f);
    }
    free(pw);
    free(pd);
    free(x);
    inf_backend_close(b);
    inf_model_free(m);
    return 0;
}
