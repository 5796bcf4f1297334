/* teacher.h — teacher-forced evaluation: how a model (or a prepared,
 * cloaked, quantized or noised version of it) scores a fixed text.
 *
 * For ids[0..n), every position i < n-1 gets the model's top-1 prediction
 * and the log-probability it gives to the true next token ids[i+1]. Runs
 * the text through g->layers in chunks from position 0 (any cached state
 * in the layers' session is overwritten). Used by the prep quality table,
 * the privacy noise sweep and the tests that prove prep keeps the function.
 */
#ifndef INF_TEACHER_H
#define INF_TEACHER_H

#include <stdint.h>

#include "generate.h"

/* top1: [n-1], logp: [n-1] (natural log). */
inf_status inf_teacher_force(const inf_gen *g, const int32_t *ids, int n, int32_t *top1, double *logp,
                             inf_error *err);

/* exp(-mean(logp[0..n))) */
double inf_perplexity(const double *logp, int n);
/* fraction of i with a[i] == b[i] */
double inf_agreement(const int32_t *a, const int32_t *b, int n);

#endif
