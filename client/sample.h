/* sample.h — turning logits into the next token.
 *
 * Order of operations (as llama.cpp's default chain): repetition penalty over
 * the last `repeat_last_n` accepted tokens, then temperature; temperature <= 0
 * means greedy (argmax, lowest id on ties) and skips the rest; then top-k,
 * then top-p (nucleus), then a draw from the renormalized distribution with
 * a seeded PRNG, so the same seed gives the same text.
 * A sampler belongs to one generation; not thread-safe.
 */
#ifndef INF_SAMPLE_H
#define INF_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* tokens of history the penalty looks at */
    uint64_t seed;
} inf_sampler_params;

typedef struct {
    inf_sampler_params p;
    uint64_t rng;
    int32_t *hist;
    size_t hist_len, hist_cap;
    int vocab;
    /* scratch for top-k/top-p: candidate ids and probabilities */
    int32_t *idx;
    float *prob;
    /* Set by the caller after init (NULL = off): greedy steps compute the
     * lm_head through this vocabulary subset (client/vocab.h); borrowed. */
    struct inf_vocab_subset_s *subset;
} inf_sampler;

inf_sampler_params inf_sampler_defaults(void);
/* Validates the parameters (messages name the option). */
inf_status inf_sampler_init(inf_sampler *s, const inf_sampler_params *p, int vocab, inf_error *err);
void inf_sampler_free(inf_sampler *s);
/* Picks a token; may modify logits. */
int32_t inf_sample(inf_sampler *s, float *logits);
/* Records a token (prompt or generated) for the repetition penalty. */
void inf_sampler_accept(inf_sampler *s, int32_t id);
/* Index of the largest value (lowest index on ties). */
int32_t inf_argmax(const float *v, int n);

#endif
