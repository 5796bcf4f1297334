/* client_cuda.h — the client's two ends of a step on a CUDA GPU (issue 7,
 * item 4): embedding lookup (+ the cloak's rotation Q) before the states
 * leave, and un-rotation (Q^T), final RMSNorm * gain, lm_head and sampling
 * after they come back. Plain C: this header compiles without CUDA; a build
 * without nvcc links stubs that fail with INF_E_UNSUPPORTED ("this build has
 * no CUDA").
 *
 * What lives on the device, uploaded ONCE by cc_open (no weight crosses PCIe
 * after that): the embedding table (f32/f16/bf16), the lm_head (f32/f16/bf16,
 * or int8 + its per-row f32 scales) — with tied embeddings ONE copy serves
 * lookup and lm_head —, the final gain (or a folded tied bundle's G), and
 * Q (f32, when given; never for a folded bundle, whose rows are rotated).
 *
 * What crosses PCIe per step:
 *   cc_embed: in, the n token ids (4n bytes); out, the n rows (4 n dim bytes),
 *             rotated on the device when asked;
 *   cc_next:  in, the worker's state (4 dim bytes) and, with a repetition
 *             penalty, the distinct recent ids (<= 4 repeat_last_n bytes);
 *             out, greedy: the token id (4 bytes); temperature > 0: the
 *             vocabulary's logits (4 V bytes), sampled on the host by
 *             inf_sample, so the draw, top-k and top-p are the CPU sampler's
 *             exactly (same seed, same logits -> same token).
 *
 * Arithmetic, against the CPU path (client/embed.c, common/gemv.h):
 *   - lookup: bit-identical (f16/bf16 -> f32 is exact);
 *   - final RMSNorm: bit-identical (the sum of squares is summed in double
 *     in the CPU's order by one thread; products and sums are rounded
 *     separately as the CPU does, never fused);
 *   - int8 lm_head: bit-identical: the int16 input is quantized with the
 *     CPU's expression, the dots are exact integers, and the row's value is
 *     (float)((double)acc * s_r * sx) as in gemv_rows;
 *   - f32/f16/bf16 lm_head and the rotations: f32 accumulation in another
 *     order than the CPU's SIMD sums (relative differences ~1e-7);
 *   - a folded tied bundle (m->out_gain_rot, common/bundle.h): G h by cuBLAS,
 *     then scaled by 1/rms(h), where the CPU scales first (relative ~1e-7;
 *     an int8 head's int16 input can then differ by one step in a few
 *     entries, so its logits are close, not bit-identical);
 *   - greedy: the CPU's inf_argmax exactly (largest value, lowest id on
 *     ties, -0 == +0, NaN never wins unless it sits at id 0); the repetition
 *     penalty divides or multiplies in f32 with IEEE rounding, as sample.c.
 *
 * Errors: every CUDA and cuBLAS call is checked; a failure is INF_E_DEVICE
 * (INF_E_NOMEM for device memory) with a message naming the call.
 * cc_open fails INF_E_UNSUPPORTED naming the tensor for dtypes it does not
 * run (a GGUF's Q8_0 head in a local run): --device auto then uses the CPU.
 *
 * Ownership: the model must outlive the context (its gain is copied at open,
 * but nothing else is kept). q is copied to the device; the caller keeps
 * (and wipes) its own. cc_close wipes Q on the device before freeing it.
 * Thread-safety: one context per generation at a time (it owns one stream
 * and one set of scratch buffers); no global state besides the CUDA
 * runtime's.
 */
#ifndef INF_CLIENT_CUDA_H
#define INF_CLIENT_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rotation.h"
#include "sample.h"
#include "status.h"

typedef struct inf_cc inf_cc;

/* Whether this build has the CUDA client path. */
bool cc_built(void);
/* Usable CUDA devices; 0 with the reason in why (may be NULL). */
int cc_device_count(char *why, size_t cap);

/* --device cpu|cuda|auto -> *use_cuda. auto: CUDA when built with it and a
 * GPU is present. cuda without a build or a GPU: INF_E_UNSUPPORTED /
 * INF_E_DEVICE saying which; any other value: INF_E_ARG naming it. opt is
 * the option's name for messages ("--device"). */
inf_status cc_choose(const char *device, const char *opt, bool *use_cuda, inf_error *err);

/* Uploads m's embedding table, lm_head (+ scales), final gain and, when
 * q != NULL, Q ([dim * dim] f32, row-major Q[i*dim + j]) to GPU 0. */
inf_status cc_open(const inf_model *m, const float *q, inf_cc **out, inf_error *err);
/* The same, taking Q from a rotation context (computing it if needed; an
 * f16 context's Q is widened to f32 exactly). */
inf_status cc_open_rot(const inf_model *m, rot_ctx *rot, inf_cc **out, inf_error *err);
void cc_close(inf_cc *c);
/* "NVIDIA H100 80GB HBM3, 1.02 GB of client weights (tied)" */
const char *cc_describe(const inf_cc *c);
size_t cc_weight_bytes(const inf_cc *c);
bool cc_has_rotation(const inf_cc *c);

/* x[n, dim] = Q e[ids] (rotate) or e[ids]. Fails naming an id outside the
 * vocabulary (as inf_embed), or rotate without Q. */
inf_status cc_embed(inf_cc *c, const int32_t *ids, int n, bool rotate, float *x, inf_error *err);
/* logits[V] of one state x[dim] (unrotate: of Q^T x), as inf_logits. */
inf_status cc_logits(inf_cc *c, const float *x, bool unrotate, float *logits, inf_error *err);
/* The next token from x[dim] (unrotate: Q^T x first) under s's parameters
 * and history, as inf_sample(s, inf_logits(x)) would pick it. Does not
 * record the token (the caller's inf_sampler_accept does). */
inf_status cc_next(inf_cc *c, const float *x, bool unrotate, inf_sampler *s, int32_t *id, inf_error *err);

/* The generation loop's device hook (client/generate.h, inf_gen_device):
 * ctx is a cc_gen. rotate: the device applies Q after the lookup and Q^T
 * before the norm (the caller then runs the layers WITHOUT the host cloak). */
typedef struct {
    inf_cc *cc;
    bool rotate;
} cc_gen;
inf_status cc_gen_embed(void *ctx, const int32_t *ids, int n, float *x, inf_error *err);
inf_status cc_gen_next(void *ctx, const float *x, inf_sampler *s, int32_t *id, inf_error *err);

#endif
