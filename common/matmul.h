/* matmul.h — Y = X · Wᵀ over any weight dtype, on all cores.
 *
 * W is a weight tensor [rows, cols] (any inf_dtype_is_weight type); X is
 * [n, cols] f32, Y is [n, rows] f32. Weights are dequantized on the fly, a
 * tile of rows at a time, never the whole matrix. n == 1 (decode) is one dot
 * per weight row; larger n (prefill) reuses each dequantized row tile for
 * every input row. Threads: OpenMP, one parallel region per call; thread
 * count from OMP_NUM_THREADS or the number of cores.
 */
#ifndef INF_MATMUL_H
#define INF_MATMUL_H

#include <stdint.h>

#include "tensor.h"

void inf_matmul(const inf_tensor *W, const float *X, int64_t n, float *Y);

#endif
