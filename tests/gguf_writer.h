/* gguf_writer.h — a small GGUF v3 writer for the tests.
 *
 * Builds a file in memory: key/value pairs in the order added, then tensor
 * infos, then the data section (alignment 32, each tensor padded to it).
 * Shapes are given row-major [rows, cols] like inf_tensor and written
 * innermost-first as GGUF requires. Float tensors are converted or quantized
 * on the way in with GGML's byte layout (see common/tensor.h):
 *   Q8_0: d = max|x|/127, q = round(x/d)
 *   Q4_0: d = x_absmax_signed / -8, q = min(15, (int)(x/d + 8.5))
 *   Q4_1: d = (max-min)/15, m = min, q = min(15, (int)((x-min)/d + 0.5))
 * (d and m are stored as f16; dequantization uses the stored f16 values).
 *
 * For bad-input tests a tensor can be given raw bytes and any GGML type id,
 * and its data offset can be forced. Not thread-safe; one writer per test.
 * Every function returns 0 on success and -1 on allocation failure or bad
 * arguments.
 */
#ifndef INF_TEST_GGUF_WRITER_H
#define INF_TEST_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GGML type ids as GGUF stores them. */
enum {
    GW_F32 = 0,
    GW_F16 = 1,
    GW_Q4_0 = 2,
    GW_Q4_1 = 3,
    GW_Q8_0 = 8,
    GW_Q4_K = 12,
    GW_BF16 = 30,
};

typedef struct gw gw;

gw *gw_new(void);
void gw_free(gw *w);

int gw_kv_u32(gw *w, const char *key, uint32_t v);
int gw_kv_i32(gw *w, const char *key, int32_t v);
int gw_kv_f32(gw *w, const char *key, float v);
int gw_kv_bool(gw *w, const char *key, bool v);
int gw_kv_str(gw *w, const char *key, const char *v);
int gw_kv_arr_str(gw *w, const char *key, const char *const *v, size_t n);
int gw_kv_arr_i32(gw *w, const char *key, const int32_t *v, size_t n);
int gw_kv_arr_f32(gw *w, const char *key, const float *v, size_t n);
/* Strings with explicit lengths (may hold any bytes). */
int gw_kv_arr_strn(gw *w, const char *key, const char *const *v, const size_t *lens, size_t n);

/* Adds a tensor from f32 data (rows*cols... row-major), converted to `type`
 * (GW_F32, GW_F16, GW_BF16, GW_Q8_0, GW_Q4_0, GW_Q4_1). */
int gw_tensor(gw *w, const char *name, int type, int ndim, const int64_t *shape, const float *data);
/* Adds a tensor with raw bytes and any type id (no checks). */
int gw_tensor_raw(gw *w, const char *name, uint32_t type, int ndim, const int64_t *shape,
                  const void *bytes, size_t nbytes);
/* Forces the data offset recorded for tensor `index` (in add order). */
int gw_force_offset(gw *w, size_t index, uint64_t offset);
/* Removes a key or a tensor added earlier (0 when found, -1 when not). */
int gw_drop_kv(gw *w, const char *key);
int gw_drop_tensor(gw *w, const char *name);
size_t gw_n_tensors(const gw *w);

/* Serializes to a malloc'd buffer (caller frees) or to a file. */
int gw_bytes(const gw *w, uint8_t **out, size_t *len);
int gw_write(const gw *w, const char *path);

/* Quantizers (n a multiple of 32; out holds n/32 blocks). */
void gw_quantize_q8_0(const float *x, size_t n, uint8_t *out);
void gw_quantize_q4_0(const float *x, size_t n, uint8_t *out);
void gw_quantize_q4_1(const float *x, size_t n, uint8_t *out);

/* A tiny random Llama model for fast tests: dim 64, 2 layers, 4 heads,
 * 2 kv heads (head_dim 16), ffn 128, context 128, theta 10000, eps 1e-5,
 * tied embeddings (no output.weight), with plausible llama.* metadata and a
 * minimal gpt2-style tokenizer: ids 0..255 are the 256 byte tokens (GPT-2's
 * byte-to-unicode spelling, so token i is byte i), then three control
 * tokens 256 "<|endoftext|>" (eos), 257 "<|im_start|>" (bos), 258
 * "<|im_end|>" (eot); vocab 259, no merges, add_bos_token false.
 * Linear weights and the embeddings use `wtype`; norms are F32. Weights are
 * uniform in +-1/sqrt(fan_in), gains 1 +- 0.1, from a fixed-seed generator:
 * the same options always give the same bytes. */
typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab, ctx;
    int wtype;
    bool tied;      /* false: also writes output.weight */
    uint64_t seed;
} gw_tiny_opts;

/* Fills *o with the defaults above (vocab 259, wtype F32, tied, seed 42).
 * A vocab other than 259 keeps the 256 byte tokens when it can and then
 * skips or truncates the control tokens; below 3 there are no bos/eos. */
void gw_tiny_defaults(gw_tiny_opts *o);
/* Adds the whole model to w (so callers may add or change things first). */
int gw_add_tiny_llama(gw *w, const gw_tiny_opts *o);
/* Convenience: a fresh writer with the tiny model, written to path. */
int gw_write_tiny_llama(const char *path, const gw_tiny_opts *o);
/* The same as DIR/tiny.gguf in a fresh temporary directory (tu_tmpdir,
 * removed when the test exits); dir and path receive the names (dir may be
 * NULL). o NULL: the defaults. */
int gw_write_tiny_llama_tmp(char *dir, size_t dcap, char *path, size_t pcap, const gw_tiny_opts *o);

#endif
