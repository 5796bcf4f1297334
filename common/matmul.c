#include "matmul.h"

#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define INF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define INF_CLONES
#endif

typedef float v8f __attribute__((vector_size(32)));

#define TILE_ROWS 16

static inline v8f ld8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum(v8f v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* y[i][r] for 4 dequantized rows w0..w3 against one input x. */
INF_CLONES static void dot4(const float *w, int64_t cols, const float *x, float *out4) {
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) {
        v8f xv = ld8(x + j);
        a0 += ld8(w + j) * xv;
        a1 += ld8(w + cols + j) * xv;
        a2 += ld8(w + 2 * cols + j) * xv;
        a3 += ld8(w + 3 * cols + j) * xv;
    }
    float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
    for (; j < cols; j++) {
        s0 += w[j] * x[j];
        s1 += w[cols + j] * x[j];
        s2 += w[2 * cols + j] * x[j];
        s3 += w[3 * cols + j] * x[j];
    }
    out4[0] = s0;
    out4[1] = s1;
    out4[2] = s2;
    out4[3] = s3;
}

INF_CLONES static float dot1(const float *w, int64_t cols, const float *x) {
    v8f a = {0};
    int64_t j = 0;
    for (; j + 8 <= cols; j += 8) a += ld8(w + j) * ld8(x + j);
    float s = hsum(a);
    for (; j < cols; j++) s += w[j] * x[j];
    return s;
}

void inf_matmul(const inf_tensor *W, const float *X, int64_t n, float *Y) {
    const int64_t rows = inf_tensor_rows(W), cols = inf_tensor_cols(W);
    const int par = n * rows * cols >= INF_PAR_MIN_WORK;
    if (n <= 2) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < n; i++) Y[i * rows + r] = inf_tensor_row_dot(W, r, X + i * cols);
        return;
    }
    const int64_t ntiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
#pragma omp parallel if (par)
    {
        float *buf = malloc(sizeof(float) * (size_t)(TILE_ROWS * cols));
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntiles; t++) {
            int64_t r0 = t * TILE_ROWS, nr = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
            if (!buf) { /* no scratch: fall back to per-row dots */
                for (int64_t r = r0; r < r0 + nr; r++)
                    for (int64_t i = 0; i < n; i++) Y[i * rows + r] = inf_tensor_row_dot(W, r, X + i * cols);
                continue;
            }
            for (int64_t r = 0; r < nr; r++) inf_tensor_row_f32(W, r0 + r, buf + r * cols);
            for (int64_t i = 0; i < n; i++) {
                const float *x = X + i * cols;
                float *y = Y + i * rows + r0;
                int64_t r = 0;
                for (; r + 4 <= nr; r += 4) dot4(buf + r * cols, cols, x, y + r);
                for (; r < nr; r++) y[r] = dot1(buf + r * cols, cols, x);
            }
        }
        free(buf);
    }
}
