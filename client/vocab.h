/* vocab.h — --vocab-subset N: greedy decoding that first computes the
 * lm_head rows of the N most frequent tokens and proves, when it can, that
 * no other token could have won.
 *
 * The order comes from the client bundle (token_freq.order, made by prep
 * from a text corpus, common/bundle.h). One step at temperature 0:
 *   1. logits of the subset S and of every token the repetition penalty
 *      touches (their penalized values are exact), the rest set to -inf;
 *   2. L = the best of those after the penalty; for every other token t,
 *      |logit_t| <= ||h|| * ||w_t|| (Cauchy-Schwarz; h is the normalized
 *      state the dots see — for an int8 head its int16 copy — and ||w_t||
 *      the row norm the dots see — for int8 the dequantized row), so if
 *        L > ||h|| * max_{t not in S} ||w_t|| * (1 + slack)
 *      the greedy token is the subset's winner: a hit;
 *   3. otherwise the remaining rows are computed and the step is exactly
 *      the full lm_head's (each row's value does not depend on which rows
 *      are computed together).
 * slack covers the f32 rounding of a d-term dot (|error| <= 2 d u ||w|| ||h||
 * for the float heads, u = 2^-24; the int8 dots are exact integers).
 * Any other sampling (temperature > 0) always computes the full vocabulary.
 * So the greedy output is identical with and without the subset; only the
 * time differs. How often step 2 succeeds depends on the model: see
 * README, "Client speed".
 *
 * Ownership: the subset owns its arrays (inf_vocab_subset_free). One
 * generation at a time per subset (it keeps hit counters).
 */
#ifndef INF_VOCAB_H
#define INF_VOCAB_H

#include <stdint.h>

#include "model.h"
#include "sample.h"
#include "status.h"

typedef struct inf_vocab_subset_s {
    int n;              /* subset size */
    int vocab;
    int32_t *in_ids;    /* [n] the subset, ascending */
    int32_t *out_ids;   /* [vocab - n] the rest, ascending */
    uint8_t *in_mask;   /* [vocab] 1 for subset ids */
    int32_t *extra;     /* [vocab] scratch: penalized ids outside the subset */
    double bound_norm;  /* max row norm outside the subset */
    double slack;       /* relative margin on the bound */
    long steps, hits;   /* greedy steps taken through the subset, and those it proved */
} inf_vocab_subset;

/* The N most frequent tokens of m->token_freq, and the largest row norm of
 * the others (one pass over the lm_head). Fails naming --vocab-subset when
 * N is not in [1, vocab] or the bundle has no frequency table. */
inf_status inf_vocab_subset_init(inf_vocab_subset *vs, const inf_model *m, int n, inf_error *err);
void inf_vocab_subset_free(inf_vocab_subset *vs);

/* The logits one sampling step needs, into logits[vocab]: with vs == NULL
 * or s->p.temperature > 0, the full lm_head (inf_logits); else the subset
 * step above (entries that were not computed are -inf). */
inf_status inf_vocab_logits(const inf_model *m, inf_vocab_subset *vs, const inf_sampler *s, const float *x,
                            float *logits, inf_error *err);

#endif
