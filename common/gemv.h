/* gemv.h — the client's memory-bound kernels: the lm_head GEMV (f32, f16,
 * bf16 or int8 rows), the d x d rotation and its transpose, and one
 * embedding row to f32.
 *
 * One token of Llama-3.1-8B reads the whole lm_head (128256 x 4096: 1 GB in
 * f16, 0.5 GB in int8) and the rotation twice (64 MB in f32), so these run
 * at memory bandwidth: SIMD dots over whole rows on all OpenMP threads.
 * The instruction set is picked at run time (AVX-512 when the CPU has
 * AVX512F/BW/VL, else AVX2+FMA+F16C, else portable C); INFEMERAL_ISA=
 * scalar|avx2|avx512 forces a lower one (benchmarks, tests).
 *
 * INT8 rows (per-row f32 scale s_r, w = q * s_r, q in [-127, 127]): the
 * input is quantized once per call to int16 (x ~ sx * xq, |xq| <= 16383,
 * symmetric, round to nearest) and each dot is summed EXACTLY in integers,
 * so every ISA gives bit-identical logits:  y_r = (float)(acc * s_r * sx)
 * with acc = sum q * xq (int64) and the product in double.
 * For f32/f16/bf16 rows the f32 sums differ between ISAs in their last bits
 * (summation order), but within one process a row's value never depends on
 * which other rows are computed or how threads split them.
 *
 * All functions are pure and thread-safe; they start their own OpenMP
 * parallel region (do not call them from inside one).
 */
#ifndef INF_GEMV_H
#define INF_GEMV_H

#include <stdint.h>

#include "tensor.h"

typedef enum { GEMV_SCALAR = 0, GEMV_AVX2 = 1, GEMV_AVX512 = 2 } gemv_isa;

/* The instruction set the kernels use now, and its name ("scalar", "avx2",
 * "avx512"). */
gemv_isa gemv_isa_active(void);
const char *gemv_isa_name(gemv_isa isa);
/* Forces an instruction set (a higher one than the CPU has is lowered to
 * what it has). For benchmarks and tests; not thread-safe against running
 * kernels. */
void gemv_isa_force(gemv_isa isa);

/* Whether gemv_rows can run on W: F32, F16, BF16, or I8 with row scales. */
int gemv_supports(inf_dtype dt);

/* The input prepared once per call (int16 copy for int8 rows). */
typedef struct {
    const float *x;  /* [cols] */
    int16_t *xq;     /* [cols] or NULL (not int8) */
    double sx;       /* x ~ sx * xq */
    double xq_norm;  /* sx * ||xq||_2: the norm of the input the int8 dots actually see */
} gemv_input;

/* y[r] = W[r,:] . x for every row (rows == NULL, n = rows of W) or for the
 * n listed rows (y[rows[i]] is written; other entries untouched).
 * scale: [rows of W] per-row scales for I8 rows, else NULL. in: from
 * gemv_input_make (the same x and W dtype). */
void gemv_rows(const inf_tensor *W, const float *scale, const gemv_input *in, const int32_t *rows, int64_t n,
               float *y);

/* Fills in for W's dtype: for I8 quantizes x into xq (cols int16,
 * caller-owned). Returns in. */
const gemv_input *gemv_input_make(gemv_input *in, inf_dtype dt, const float *x, int64_t cols, int16_t *xq);

/* ||W[r,:]||_2 as the kernels see it (I8: scale * ||q||) into norms[rows]. */
void gemv_row_norms(const inf_tensor *W, const float *scale, float *norms);

/* Square matrix times vector: y = A x (transpose = 0) or y = A^T x
 * (transpose = 1), A [d, d] row-major F32 or F16. x and y must not overlap. */
void gemv_square(const void *A, inf_dtype dt, int d, const float *x, int transpose, float *y);

/* One row of an F32/F16/BF16 table to f32 (vectorized; other dtypes go
 * through inf_tensor_row_f32). */
void gemv_row_f32(const inf_tensor *t, int64_t row, float *out);

/* Per-row symmetric int8 of one row of cols values: q = round(w / s),
 * s = max|w| / 127 (s = 0 and q = 0 for an all-zero row). Returns s. */
float gemv_quantize_row_i8(const float *w, int64_t cols, int8_t *q);

#endif
