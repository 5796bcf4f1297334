#include "embed.h"

#include <stdlib.h>

#include "backend.h"
#include "matmul.h"

inf_status inf_embed(const inf_model *m, const int32_t *ids, int n, float *out, inf_error *err) {
    const int dim = m->cfg.dim;
    if (!m->tok_embd.data) return inf_fail(err, INF_E_ARG, "%s: this model has no embedding table", m->path);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return inf_fail(err, INF_E_RANGE, "token id %d at index %d is outside the vocabulary (%d)",
                            (int)ids[i], i, m->cfg.vocab_size);
        inf_tensor_row_f32(&m->tok_embd, ids[i], out + (size_t)i * dim);
    }
    return INF_OK;
}

inf_status inf_logits(const inf_model *m, const float *x, float *logits, inf_error *err) {
    const int dim = m->cfg.dim;
    if (!m->lm_head.data) return inf_fail(err, INF_E_ARG, "%s: this model has no lm_head", m->path);
    float *xn = malloc(sizeof(float) * (size_t)dim);
    if (!xn) return inf_fail(err, INF_E_NOMEM, "lm_head: out of memory");
    inf_rmsnorm(xn, x, m->out_norm, dim, m->cfg.rms_eps);
    inf_matmul(&m->lm_head, xn, 1, logits);
    free(xn);
    return INF_OK;
}
