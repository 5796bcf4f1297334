/* embed.h — the client's two ends of the network: token ids to the
 * residual stream (embedding lookup) and the final hidden state to logits
 * (final RMSNorm + lm_head). Both read the model's weights in place; with
 * tied embeddings the lm_head IS the embedding table, one copy in memory.
 * Thread-safe for concurrent calls on one model.
 */
#ifndef INF_EMBED_H
#define INF_EMBED_H

#include <stdint.h>

#include "model.h"
#include "status.h"

/* out[i] = tok_embd[ids[i]]   out: [n, dim]. Fails naming an id outside the vocabulary. */
inf_status inf_embed(const inf_model *m, const int32_t *ids, int n, float *out, inf_error *err);

/* logits[vocab] = lm_head · rmsnorm(x) * g_final     x: [dim] (not modified) */
inf_status inf_logits(const inf_model *m, const float *x, float *logits, inf_error *err);

#endif
