/* vocab.c — the greedy vocabulary subset with its exact fallback (vocab.h). */
#include "vocab.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "gemv.h"

inf_status inf_vocab_subset_init(inf_vocab_subset *vs, const inf_model *m, int n, inf_error *err) {
    memset(vs, 0, sizeof *vs);
    const int V = m->cfg.vocab_size;
    if (n < 1 || n > V)
        return inf_fail(err, INF_E_RANGE, "--vocab-subset %d: must be between 1 and the vocabulary size %d", n, V);
    if (!m->token_freq)
        return inf_fail(err, INF_E_NOTFOUND,
                        "--vocab-subset: %s has no token frequency table (token_freq.order); prepare the bundle again "
                        "with this infemeral's prep",
                        m->path);
    if (!m->lm_head.data) return inf_fail(err, INF_E_ARG, "--vocab-subset: %s has no lm_head", m->path);
    vs->n = n;
    vs->vocab = V;
    vs->in_ids = malloc(sizeof(int32_t) * (size_t)n);
    vs->out_ids = malloc(sizeof(int32_t) * (size_t)(V - n + 1));
    vs->in_mask = calloc((size_t)V, 1);
    vs->extra = malloc(sizeof(int32_t) * (size_t)V);
    float *norms = malloc(sizeof(float) * (size_t)V);
    if (!vs->in_ids || !vs->out_ids || !vs->in_mask || !vs->extra || !norms) {
        free(norms);
        inf_vocab_subset_free(vs);
        return inf_fail(err, INF_E_NOMEM, "--vocab-subset: out of memory");
    }
    for (int i = 0; i < n; i++) vs->in_mask[m->token_freq[i]] = 1;
    int a = 0, b = 0;
    for (int t = 0; t < V; t++) {
        if (vs->in_mask[t]) vs->in_ids[a++] = t;
        else vs->out_ids[b++] = t;
    }
    gemv_row_norms(&m->lm_head, m->lm_head_scale, norms);
    double mx = 0.0;
    for (int i = 0; i < b; i++) {
        double v = norms[vs->out_ids[i]];
        if (!(v <= mx)) mx = v; /* NaN or larger: a NaN norm makes the bound NaN, which proves nothing */
    }
    free(norms);
    vs->bound_norm = mx;
    const double u = 0x1p-24;
    vs->slack = (m->lm_head.dtype == INF_DT_I8 ? 8.0 * u : 4.0 * m->cfg.dim * u) + 1e-5;
    return INF_OK;
}

void inf_vocab_subset_free(inf_vocab_subset *vs) {
    if (!vs) return;
    free(vs->in_ids);
    free(vs->out_ids);
    free(vs->in_mask);
    free(vs->extra);
    memset(vs, 0, sizeof *vs);
}

/* The sampler's penalty rule (sample.c), on one value. */
static float penalized(float l, float r) { return l > 0 ? l / r : l * r; }

inf_status inf_vocab_logits(const inf_model *m, inf_vocab_subset *vs, const inf_sampler *s, const float *x,
                            float *logits, inf_error *err) {
    if (!vs || s->p.temperature > 0.0f) return inf_logits(m, x, logits, err);
    const int V = vs->vocab;
    inf_lm_state ls;
    inf_status st = inf_lm_begin(m, x, &ls, err);
    if (st) return st;
    for (int t = 0; t < V; t++) logits[t] = -INFINITY;
    inf_lm_rows(m, &ls, vs->in_ids, vs->n, logits);
    /* tokens the penalty changes: computed exactly whether or not in S */
    const bool pen = s->p.repeat_penalty != 1.0f;
    int ne = 0;
    if (pen)
        for (size_t i = 0; i < s->hist_len; i++) {
            int32_t id = s->hist[i];
            if (id < 0 || id >= V || vs->in_mask[id]) continue;
            bool dup = false;
            for (int k = 0; k < ne && !dup; k++) dup = vs->extra[k] == id;
            if (!dup) vs->extra[ne++] = id;
        }
    if (ne) inf_lm_rows(m, &ls, vs->extra, ne, logits);
    /* the best computed value after the penalty (each distinct id once) */
    float best = -INFINITY;
    for (int i = 0; i < vs->n; i++)
        if (logits[vs->in_ids[i]] > best) best = logits[vs->in_ids[i]];
    for (int k = 0; k < ne; k++)
        if (logits[vs->extra[k]] > best) best = logits[vs->extra[k]];
    if (pen) {
        /* penalized subset ids may have been the best before the penalty */
        best = -INFINITY;
        uint8_t *hit = vs->in_mask; /* reuse as "seen" marks: 1 = in S, 3 = in S and penalized */
        for (size_t i = 0; i < s->hist_len; i++) {
            int32_t id = s->hist[i];
            if (id >= 0 && id < V && hit[id] == 1) hit[id] = 3;
        }
        for (int i = 0; i < vs->n; i++) {
            int32_t id = vs->in_ids[i];
            float l = hit[id] == 3 ? penalized(logits[id], s->p.repeat_penalty) : logits[id];
            if (l > best) best = l;
            hit[id] = 1;
        }
        for (int k = 0; k < ne; k++) {
            float l = penalized(logits[vs->extra[k]], s->p.repeat_penalty);
            if (l > best) best = l;
        }
    }
    const double bound = ls.norm * vs->bound_norm * (1.0 + vs->slack);
    vs->steps++;
    if ((double)best > bound) {
        vs->hits++;
    } else {
        inf_lm_rows(m, &ls, vs->out_ids, V - vs->n, logits); /* the exact fallback: the rest of the rows */
    }
    inf_lm_end(&ls);
    return INF_OK;
}
