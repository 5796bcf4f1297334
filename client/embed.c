#include "embed.h"

#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "backend.h"

inf_status inf_embed(const inf_model *m, const int32_t *ids, int n, float *out, inf_error *err) {
    const int dim = m->cfg.dim;
    if (!m->tok_embd.data) return inf_fail(err, INF_E_ARG, "%s: this model has no embedding table", m->path);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return inf_fail(err, INF_E_RANGE, "token id %d at index %d is outside the vocabulary (%d)",
                            (int)ids[i], i, m->cfg.vocab_size);
        gemv_row_f32(&m->tok_embd, ids[i], out + (size_t)i * dim);
    }
    return INF_OK;
}

inf_status inf_lm_begin(const inf_model *m, const float *x, inf_lm_state *ls, inf_error *err) {
    const int dim = m->cfg.dim;
    *ls = (inf_lm_state){0};
    if (!m->lm_head.data) return inf_fail(err, INF_E_ARG, "%s: this model has no lm_head", m->path);
    if (m->lm_head.dtype == INF_DT_I8 && !m->lm_head_scale)
        return inf_fail(err, INF_E_ARG, "%s: the int8 lm_head has no row scales", m->path);
    ls->xn = malloc(sizeof(float) * (size_t)dim);
    if (m->lm_head.dtype == INF_DT_I8) ls->xq = malloc(sizeof(int16_t) * (size_t)dim);
    if (!ls->xn || (m->lm_head.dtype == INF_DT_I8 && !ls->xq)) {
        inf_lm_end(ls);
        return inf_fail(err, INF_E_NOMEM, "lm_head: out of memory");
    }
    if (m->out_gain_rot) {
        /* folded and tied: the gain is the dense G (bundle.h); it is linear,
         * so G (x / rms(x)) = (G x) / rms(x) */
        float *gx = malloc(sizeof(float) * (size_t)dim);
        if (!gx) {
            inf_lm_end(ls);
            return inf_fail(err, INF_E_NOMEM, "lm_head: out of memory");
        }
        inf_rmsnorm(gx, x, NULL, dim, m->cfg.rms_eps);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, dim, dim, 1.0f, m->out_gain_rot, dim, gx, 1, 0.0f, ls->xn, 1);
        free(gx);
    } else {
        inf_rmsnorm(ls->xn, x, m->out_norm, dim, m->cfg.rms_eps);
    }
    gemv_input_make(&ls->in, m->lm_head.dtype, ls->xn, dim, ls->xq);
    if (m->lm_head.dtype == INF_DT_I8) {
        ls->norm = ls->in.xq_norm;
    } else {
        double s = 0.0;
        for (int j = 0; j < dim; j++) s += (double)ls->xn[j] * ls->xn[j];
        ls->norm = sqrt(s);
    }
    return INF_OK;
}

void inf_lm_rows(const inf_model *m, const inf_lm_state *ls, const int32_t *rows, int64_t n, float *logits) {
    if (gemv_supports(m->lm_head.dtype)) {
        gemv_rows(&m->lm_head, m->lm_head_scale, &ls->in, rows, n, logits);
        return;
    }
#pragma omp parallel for schedule(static) if (n * m->cfg.dim >= INF_PAR_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows ? rows[i] : i;
        logits[r] = inf_tensor_row_dot(&m->lm_head, r, ls->xn);
    }
}

void inf_lm_end(inf_lm_state *ls) {
    free(ls->xn);
    free(ls->xq);
    *ls = (inf_lm_state){0};
}

inf_status inf_logits(const inf_model *m, const float *x, float *logits, inf_error *err) {
    inf_lm_state ls;
    inf_status st = inf_lm_begin(m, x, &ls, err);
    if (st) return st;
    inf_lm_rows(m, &ls, NULL, m->cfg.vocab_size, logits);
    inf_lm_end(&ls);
    return INF_OK;
}
