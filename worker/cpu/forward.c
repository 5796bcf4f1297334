/* forward.c — the CPU reference forward pass over a model's layers.
 *
 * This is the spec every other backend is checked against: plain f32
 * arithmetic, top to bottom, shapes in the comments. Weights of any dtype are
 * dequantized tile by tile inside inf_matmul (common/matmul.c); the matmuls
 * and the attention loop use all cores through OpenMP.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "matmul.h"

void inf_rmsnorm(float *y, const float *x, const float *g, int dim, float eps) {
    double ss = 0.0;
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / dim + eps));
    if (g)
        for (int i = 0; i < dim; i++) y[i] = x[i] * scale * g[i];
    else
        for (int i = 0; i < dim; i++) y[i] = x[i] * scale;
}

/* Rotates one head vector v[head_dim] for absolute position p. */
static void rope(float *v, int head_dim, int p, const float *inv_freq, bool interleaved) {
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double a = (double)p * inv_freq[i];
        float c = (float)cos(a), s = (float)sin(a);
        int i0 = interleaved ? 2 * i : i;
        int i1 = interleaved ? 2 * i + 1 : i + half;
        float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x0 * s + x1 * c;
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

inf_status cpu_forward(const inf_model *m, inf_kv *kv, float *x, int n, int pos, inf_error *err) {
    const inf_model_config *c = &m->cfg;
    const int dim = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int qd = nh * hd, kvd = nkv * hd, ffn = c->ffn_dim;
    const int group = nh / nkv; /* query heads per kv head (GQA) */
    if (n <= 0) return inf_fail(err, INF_E_ARG, "forward: %d tokens (need at least 1)", n);
    if (pos < 0 || pos > kv->len)
        return inf_fail(err, INF_E_ARG, "forward: position %d is past the cached length %d", pos, kv->len);
    if (n > kv->max_len - pos)
        return inf_fail(err, INF_E_RANGE, "context full: positions %d..%d exceed the limit %d", pos,
                        pos + n - 1, kv->max_len);
    inf_kv_truncate(kv, pos);
    inf_status st = inf_kv_reserve(kv, pos + n, err);
    if (st) return st;

    size_t nn = (size_t)n;
    float *xb = malloc(sizeof(float) * nn * (size_t)(dim > qd ? dim : qd)); /* [n, max(dim,qd)] */
    float *q = malloc(sizeof(float) * nn * (size_t)qd);                    /* [n, qd] */
    float *att = malloc(sizeof(float) * nn * (size_t)qd);                  /* [n, qd] */
    float *hb = malloc(sizeof(float) * nn * (size_t)ffn);                  /* [n, ffn] */
    float *hb2 = malloc(sizeof(float) * nn * (size_t)ffn);                 /* [n, ffn] */
    float *kvt = malloc(sizeof(float) * nn * (size_t)kvd);                 /* [n, kvd] */
    const int T = pos + n;                                                 /* context after this call */
    if (!xb || !q || !att || !hb || !hb2 || !kvt) {
        st = inf_fail(err, INF_E_NOMEM, "forward: out of memory for %d tokens", n);
        goto done;
    }
    const float scale = 1.0f / sqrtf((float)hd);

    for (int l = 0; l < c->n_layers; l++) {
        const inf_layer *L = &m->layers[l];
        float *kc = kv->k[l], *vc = kv->v[l]; /* [capacity, kvd] */

        /* ---- attention ---- */
        for (int i = 0; i < n; i++) /* xb[i] = rmsnorm(x[i]) * g_attn    [n, dim] */
            inf_rmsnorm(xb + (size_t)i * dim, x + (size_t)i * dim, L->attn_norm, dim, c->rms_eps);
        inf_matmul(&L->wq, xb, n, q); /* q = xb Wqᵀ   [n, qd] */
        inf_matmul(&L->wk, xb, n, kvt); /* k -> cache rows pos..pos+n-1  [n, kvd] */
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nkv; h++)
                rope(kvt + (size_t)i * kvd + h * hd, hd, pos + i, m->rope_inv_freq, c->rope_interleaved);
            memcpy(kc + (size_t)(pos + i) * kvd, kvt + (size_t)i * kvd, sizeof(float) * kvd);
        }
        inf_matmul(&L->wv, xb, n, kvt); /* v -> cache  [n, kvd] */
        memcpy(vc + (size_t)pos * kvd, kvt, sizeof(float) * nn * kvd);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < nh; h++)
                rope(q + (size_t)i * qd + h * hd, hd, pos + i, m->rope_inv_freq, c->rope_interleaved);

        /* causal attention: token i (position pos+i) sees positions 0..pos+i */
        int oom = 0;
#pragma omp parallel reduction(| : oom) if ((int64_t)n * nh * T * hd >= INF_PAR_MIN_WORK)
        {
        float *s = malloc(sizeof(float) * (size_t)T); /* this thread's scores [T] */
        if (!s) oom = 1;
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nh; h++) {
                if (!s) continue;
                const int p = pos + i, kh = h / group;
                const float *qh = q + (size_t)i * qd + h * hd;
                float mx = -INFINITY;
                for (int t = 0; t <= p; t++) {
                    const float *kt = kc + (size_t)t * kvd + kh * hd;
                    float d = 0.0f;
                    for (int j = 0; j < hd; j++) d += qh[j] * kt[j];
                    s[t] = d * scale;
                    if (s[t] > mx) mx = s[t];
                }
                float sum = 0.0f;
                for (int t = 0; t <= p; t++) {
                    s[t] = expf(s[t] - mx);
                    sum += s[t];
                }
                float inv = 1.0f / sum;
                float *o = att + (size_t)i * qd + h * hd; /* [hd] */
                memset(o, 0, sizeof(float) * hd);
                for (int t = 0; t <= p; t++) {
                    const float *vt = vc + (size_t)t * kvd + kh * hd;
                    float a = s[t] * inv;
                    for (int j = 0; j < hd; j++) o[j] += a * vt[j];
                }
            }
        }
        free(s);
        }
        if (oom) {
            st = inf_fail(err, INF_E_NOMEM, "forward: out of memory for attention over %d positions", T);
            goto done;
        }
        inf_matmul(&L->wo, att, n, xb); /* xb = att Woᵀ   [n, dim] */
        for (size_t e = 0; e < nn * dim; e++) x[e] += xb[e]; /* residual */

        /* ---- feed-forward (SwiGLU) ---- */
        for (int i = 0; i < n; i++)
            inf_rmsnorm(xb + (size_t)i * dim, x + (size_t)i * dim, L->ffn_norm, dim, c->rms_eps);
        inf_matmul(&L->w_gate, xb, n, hb); /* [n, ffn] */
        inf_matmul(&L->w_up, xb, n, hb2);  /* [n, ffn] */
        for (size_t e = 0; e < nn * ffn; e++) hb[e] = silu(hb[e]) * hb2[e];
        inf_matmul(&L->w_down, hb, n, xb); /* [n, dim] */
        for (size_t e = 0; e < nn * dim; e++) x[e] += xb[e];
    }
    kv->len = pos + n;
    st = INF_OK;
done:
    free(xb);
    free(q);
    free(att);
    free(hb);
    free(hb2);
    free(kvt);
    return st;
}
