#include "teacher.h"

#include <math.h>
#include <stdlib.h>

#include "embed.h"
#include "sample.h"

inf_status inf_teacher_force(const inf_gen *g, const int32_t *ids, int n, int32_t *top1, double *logp,
                             inf_error *err) {
    const inf_model *m = g->model;
    const int d = m->cfg.dim, V = m->cfg.vocab_size;
    const int chunk = g->prefill_chunk > 0 ? g->prefill_chunk : 256;
    if (n < 2) return inf_fail(err, INF_E_ARG, "teacher forcing needs at least 2 tokens, got %d", n);
    float *x = malloc(sizeof(float) * (size_t)chunk * d), *logits = malloc(sizeof(float) * (size_t)V);
    inf_status st = INF_OK;
    if (!x || !logits) {
        st = inf_fail(err, INF_E_NOMEM, "teacher forcing: out of memory");
        goto done;
    }
    for (int off = 0; off < n - 1 && !st; off += chunk) {
        int k = n - 1 - off < chunk ? n - 1 - off : chunk; /* the last token needs no prediction */
        if ((st = inf_embed(m, ids + off, k, x, err))) break;
        if ((st = g->layers(g->layers_ctx, x, k, off, err))) break;
        for (int i = 0; i < k && !st; i++) {
            if ((st = inf_logits(m, x + (size_t)i * d, logits, err))) break;
            top1[off + i] = inf_argmax(logits, V);
            double mx = logits[top1[off + i]], z = 0;
            for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
            logp[off + i] = (double)logits[ids[off + i + 1]] - mx - log(z);
        }
    }
done:
    free(x);
    free(logits);
    return st;
}

double inf_perplexity(const double *logp, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += logp[i];
    return exp(-s / (n > 0 ? n : 1));
}

double inf_agreement(const int32_t *a, const int32_t *b, int n) {
    int same = 0;
    for (int i = 0; i < n; i++) same += a[i] == b[i];
    return n > 0 ? (double)same / n : 0.0;
}
