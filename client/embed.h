/* embed.h — the client's two ends of the network: token ids to the
 * residual stream (embedding lookup) and the final hidden state to logits
 * (final RMSNorm + lm_head). Both read the model's weights in place; with
 * tied embeddings the lm_head IS the embedding table, one copy in memory,
 * and the final gain multiplies the hidden state instead of a second copy.
 * F32/F16/BF16 and int8 (client bundles from prep --lm-head int8) lm_heads
 * run on the bandwidth kernels of common/gemv.h; other dtypes (a GGUF's
 * Q8_0 head in a local run) on the per-row dots of common/tensor.h.
 * Thread-safe for concurrent calls on one model.
 */
#ifndef INF_EMBED_H
#define INF_EMBED_H

#include <stdint.h>

#include "gemv.h"
#include "model.h"
#include "status.h"

/* out[i] = tok_embd[ids[i]]   out: [n, dim]. Fails naming an id outside the vocabulary. */
inf_status inf_embed(const inf_model *m, const int32_t *ids, int n, float *out, inf_error *err);

/* logits[vocab] = lm_head · rmsnorm(x) * g_final     x: [dim] (not modified) */
inf_status inf_logits(const inf_model *m, const float *x, float *logits, inf_error *err);

/* The same in steps, for callers that want only some rows (the vocabulary
 * subset, client/vocab.h): begin normalizes x (and quantizes it for an int8
 * head), rows computes logits[rows[i]] for n listed ids (rows NULL: all),
 * end frees the scratch. A row's value is the same whichever rows are asked
 * for together. */
typedef struct {
    float *xn;     /* [dim] rmsnorm(x) * g_final */
    int16_t *xq;   /* [dim] int8 heads only */
    gemv_input in;
    double norm;   /* ||input||_2 as the dots see it (int8: the dequantized int16 copy) */
} inf_lm_state;
inf_status inf_lm_begin(const inf_model *m, const float *x, inf_lm_state *ls, inf_error *err);
void inf_lm_rows(const inf_model *m, const inf_lm_state *ls, const int32_t *rows, int64_t n, float *logits);
void inf_lm_end(inf_lm_state *ls);

#endif
