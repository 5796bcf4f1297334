/* tensor.h — element types, tensor views and the per-row kernels every
 * backend builds on.
 *
 * An inf_tensor is a VIEW: it never owns its bytes (they belong to a mapped
 * file or to the model that repacked them). Shapes are row-major like
 * safetensors/PyTorch: shape[ndim-1] is the contiguous axis, and a linear
 * layer's weight is [out, in], so y = W x is one row dot per output.
 * GGUF lists dimensions innermost-first; its reader reverses them.
 *
 * Quantized block formats (the GGML ones keep GGML's byte layout so a GGUF
 * tensor is used in place, without copying). Products are evaluated in the
 * order written, in f32, so dequantization is bit-exact with ggml's:
 *   Q8_0: 32 weights: f16 d, int8 q[32];              w = d*q
 *   Q4_0: 32 weights: f16 d, u8 qs[16];               w = d*(q-8)
 *   Q4_1: 32 weights: f16 d, f16 m, u8 qs[16];        w = d*q + m
 *         (q of element j<16 is qs[j]&15, of element j+16 is qs[j]>>4)
 *   Q5_0: 32 weights: f16 d, u32 qh, u8 qs[16];       w = d*(q-16)
 *   Q5_1: 32 weights: f16 d, f16 m, u32 qh, u8 qs[16]; w = d*q + m
 *         (5-bit q: the low 4 bits are nibbles as in Q4_0/Q4_1, bit 4 of
 *         element j is bit j of the little-endian u32 qh)
 *   The K-quants pack 256 weights into a super-block of 8 or 16 sub-blocks,
 *   each with its own small integer scale, and one or two f16 factors that
 *   turn those integers into floats:
 *   Q4_K: 144 bytes: f16 d, f16 dmin, u8 scales[12], u8 qs[128].
 *         8 sub-blocks of 32 with a 6-bit scale sc and 6-bit min mn each;
 *         w = (d*sc)*q - (dmin*mn), q in 0..15. For sub-block j < 4,
 *         sc = scales[j]&63 and mn = scales[j+4]&63; for j >= 4 the low 4
 *         bits come from scales[j+4] (sc the low nibble, mn the high one)
 *         and the top 2 bits from bits 6-7 of scales[j-4] (sc) and
 *         scales[j] (mn). qs holds 4 runs of 32 bytes: run r gives
 *         sub-block 2r its low nibbles and sub-block 2r+1 its high ones.
 *   Q5_K: 176 bytes: f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128].
 *         As Q4_K with a fifth bit: q of element i of sub-block j is
 *         nibble | ((qh[i] >> j) & 1) << 4, q in 0..31.
 *   Q6_K: 210 bytes: u8 ql[128], u8 qh[64], int8 scales[16], f16 d (last).
 *         16 sub-blocks of 16, w = (d*scales[s])*(q-32), q in 0..63. Each
 *         half h of 128 weights uses ql[64h..], qh[32h..], scales[8h..]:
 *         for i < 32, weight i takes the low nibble of ql[i], weight 32+i
 *         the low nibble of ql[32+i], weight 64+i the high nibble of ql[i],
 *         weight 96+i the high nibble of ql[32+i]; their top 2 bits are
 *         bits 0-1, 2-3, 4-5, 6-7 of qh[i]; weight k's scale is k/16.
 *   Q4G:  group-wise int4 with separate arrays (AWQ repack, INT4 bundles):
 *         data u8 [rows][cols/2] (element 2i in the low nibble),
 *         scales f16 [rows][cols/group], zeros u8 [rows][cols/group];
 *         w = (q - zero) * scale.
 * All functions here are pure and thread-safe.
 */
#ifndef INF_TENSOR_H
#define INF_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Below this many multiply-adds a loop runs on one thread: starting an
 * OpenMP team and its barrier costs more than the work, and on a machine
 * whose cores are busy with something else a team waits for descheduled
 * threads (a tiny model went from ms to hundreds of ms per token that way). */
#define INF_PAR_MIN_WORK ((int64_t)1 << 18)

typedef enum {
    INF_DT_F32 = 0,
    INF_DT_F16,
    INF_DT_BF16,
    INF_DT_Q8_0,
    INF_DT_Q4_0,
    INF_DT_Q4_1,
    INF_DT_Q4G,
    INF_DT_I32,
    INF_DT_I8,
    INF_DT_U8,
    INF_DT_Q5_0,
    INF_DT_Q5_1,
    INF_DT_Q4_K,
    INF_DT_Q5_K,
    INF_DT_Q6_K,
    INF_DT__COUNT
} inf_dtype;

#define INF_MAX_DIMS 4

typedef struct {
    inf_dtype dtype;
    int ndim;
    int64_t shape[INF_MAX_DIMS];
    const void *data;
    size_t nbytes;
    /* INF_DT_Q4G only */
    const uint16_t *scales;
    const uint8_t *zeros;
    int group;
} inf_tensor;

const char *inf_dtype_name(inf_dtype dt);

/* Elements per block (1 for plain types, 32 for GGML blocks, 256 for the
 * K-quants' super-blocks) and bytes per
 * block. Q4G reports block 2, bytes 1 for its packed data array. */
int inf_dtype_block(inf_dtype dt);
size_t inf_dtype_block_bytes(inf_dtype dt);

/* Rows = product of all dims but the last; cols = the last dim. */
int64_t inf_tensor_rows(const inf_tensor *t);
int64_t inf_tensor_cols(const inf_tensor *t);
int64_t inf_tensor_numel(const inf_tensor *t);

/* Bytes of the data array for this dtype and shape; fails (naming `name`)
 * when cols is not a whole number of blocks or the size overflows. */
inf_status inf_tensor_data_bytes(inf_dtype dt, int ndim, const int64_t *shape,
                                 size_t *out, const char *name, inf_error *err);

/* Checks shape == expected (ndim entries) and names the tensor on mismatch. */
inf_status inf_tensor_expect(const inf_tensor *t, const char *name, int ndim,
                             const int64_t *expected, inf_error *err);

/* Which dtypes can be used as weights by the kernels below. */
bool inf_dtype_is_weight(inf_dtype dt);

/* Dequantize one row (cols values) to f32. */
void inf_tensor_row_f32(const inf_tensor *t, int64_t row, float *out);

/* sum_j W[row][j] * x[j], accumulated in f32. */
float inf_tensor_row_dot(const inf_tensor *t, int64_t row, const float *x);

/* Half-precision conversions (round to nearest even on the way down). */
float inf_f16_to_f32(uint16_t h);
uint16_t inf_f32_to_f16(float f);
float inf_bf16_to_f32(uint16_t h);
uint16_t inf_f32_to_bf16(float f);

#endif
