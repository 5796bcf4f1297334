/* client_cuda.c — host side of the CUDA client path (contract in
 * client_cuda.h). Built only when meson found nvcc (INF_HAVE_CUDA);
 * client_device.c holds what every build has (the --device choice and, in
 * a build without CUDA, the stubs).
 *
 * One stream, synchronous per call: a step's input is copied into a pinned
 * staging buffer, sent, computed, and the small result comes back through
 * pinned memory. The rotations use cuBLAS (row-major Q is column-major Q^T,
 * so Q x is an op=T product and Q^T x op=N), in its default math mode: f32
 * throughout, no TF32.
 *
 * cuBLAS is loaded with dlopen when a device context opens, not linked
 * (common/cublas_dl.h): merely mapping libcublas costs every process
 * ~210 MiB of resident memory at start, which a client on the CPU path
 * should not pay.
 */
#include "client_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_kernels.h"
#include "cublas_dl.h"
#include "cuda_check.h"
#include "gemv.h"

struct inf_cc {
    const inf_model *m;
    int dim, vocab;
    cudaStream_t s;
    const cublas_dl_api *cb; /* process-wide, from cublas_dl_load */
    cublasHandle_t blas;
    /* weights (uploaded once) */
    void *d_embd;     /* [V, dim] embd_dt */
    void *d_lm;       /* [V, dim] lm_dt; == d_embd when tied */
    float *d_scale;   /* [V] int8 heads */
    float *d_gain;    /* [dim] or NULL */
    float *d_gain_rot; /* [dim, dim] G of a folded tied bundle, or NULL */
    float *d_q;       /* [dim, dim] or NULL */
    int embd_dt, lm_dt;
    bool tied;
    size_t weight_bytes;
    /* scratch */
    int cap_n;        /* rows the x buffers hold */
    float *d_x, *d_y; /* [cap_n, dim] */
    int32_t *d_ids;   /* [cap_n] */
    float *d_xn;      /* [dim] */
    int16_t *d_xq;    /* [dim] int8 heads */
    double *d_sx;
    float *d_logits;  /* [V] */
    int32_t *d_hist;  /* [cap_hist] */
    int cap_hist;
    unsigned long long *d_key;
    /* pinned host staging */
    float *h_x;       /* [cap_n, dim] */
    int32_t *h_ids;   /* [cap_n] */
    int32_t *h_hist;  /* [cap_hist] */
    float *h_logits;  /* [V] */
    uint32_t *h_id;   /* the low word of d_key */
    char desc[256];
};

static inf_status ck_dtype(inf_dtype dt, const char *what, const inf_model *m, int *out, inf_error *err) {
    switch (dt) {
    case INF_DT_F32: *out = CK_F32; return INF_OK;
    case INF_DT_F16: *out = CK_F16; return INF_OK;
    case INF_DT_BF16: *out = CK_BF16; return INF_OK;
    case INF_DT_I8: *out = CK_I8; return INF_OK;
    default:
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: the CUDA client path does not run a %s %s (f32, f16, bf16 or int8)",
                        m->path, inf_dtype_name(dt), what);
    }
}

static size_t dt_size(int dt) { return dt == CK_F32 ? 4 : dt == CK_I8 ? 1 : 2; }

/* Device buffer of n bytes holding a copy of src (pageable: one-time). */
static inf_status upload(void **dst, const void *src, size_t n, inf_error *err) {
    inf_status st;
    if ((st = CU(cudaMalloc(dst, n)))) return st;
    return CU(cudaMemcpy(*dst, src, n, cudaMemcpyHostToDevice));
}

/* Grows the per-call row buffers to hold n rows. */
static inf_status ensure_rows(inf_cc *c, int n, inf_error *err) {
    if (n <= c->cap_n) return INF_OK;
    inf_status st;
    cudaFree(c->d_x);
    cudaFree(c->d_y);
    cudaFree(c->d_ids);
    cudaFreeHost(c->h_x);
    cudaFreeHost(c->h_ids);
    c->d_x = c->d_y = NULL;
    c->d_ids = NULL;
    c->h_x = NULL;
    c->h_ids = NULL;
    c->cap_n = 0;
    const size_t rows = (size_t)n * (size_t)c->dim * sizeof(float);
    if ((st = CU(cudaMalloc((void **)&c->d_x, rows))) || (st = CU(cudaMalloc((void **)&c->d_y, rows))) ||
        (st = CU(cudaMalloc((void **)&c->d_ids, sizeof(int32_t) * (size_t)n))) ||
        (st = CU(cudaMallocHost((void **)&c->h_x, rows))) ||
        (st = CU(cudaMallocHost((void **)&c->h_ids, sizeof(int32_t) * (size_t)n))))
        return st;
    c->cap_n = n;
    return INF_OK;
}

static inf_status ensure_hist(inf_cc *c, int n, inf_error *err) {
    if (n <= c->cap_hist) return INF_OK;
    inf_status st;
    cudaFree(c->d_hist);
    cudaFreeHost(c->h_hist);
    c->d_hist = NULL;
    c->h_hist = NULL;
    c->cap_hist = 0;
    if ((st = CU(cudaMalloc((void **)&c->d_hist, sizeof(int32_t) * (size_t)n))) ||
        (st = CU(cudaMallocHost((void **)&c->h_hist, sizeof(int32_t) * (size_t)n))))
        return st;
    c->cap_hist = n;
    return INF_OK;
}

inf_status cc_open(const inf_model *m, const float *q, inf_cc **out, inf_error *err) {
    *out = NULL;
    inf_status st;
    const int dim = m->cfg.dim, V = m->cfg.vocab_size;
    if (!m->tok_embd.data) return inf_fail(err, INF_E_ARG, "%s: this model has no embedding table", m->path);
    if (!m->lm_head.data) return inf_fail(err, INF_E_ARG, "%s: this model has no lm_head", m->path);
    int embd_dt = 0, lm_dt = 0; /* set by ck_dtype on success */
    if ((st = ck_dtype(m->tok_embd.dtype, "embedding table", m, &embd_dt, err))) return st;
    if ((st = ck_dtype(m->lm_head.dtype, "lm_head", m, &lm_dt, err))) return st;
    if (embd_dt == CK_I8)
        return inf_fail(err, INF_E_UNSUPPORTED, "%s: the CUDA client path does not look up an int8 embedding table",
                        m->path);
    if (lm_dt == CK_I8 && !m->lm_head_scale)
        return inf_fail(err, INF_E_ARG, "%s: the int8 lm_head has no row scales", m->path);
    const size_t esz = (size_t)V * (size_t)dim;
    if (m->tok_embd.nbytes < esz * dt_size(embd_dt) || m->lm_head.nbytes < esz * dt_size(lm_dt))
        return inf_fail(err, INF_E_SHAPE, "%s: embedding table or lm_head smaller than [%d, %d]", m->path, V, dim);
    char why[160];
    if (cc_device_count(why, sizeof why) <= 0)
        return inf_fail(err, INF_E_DEVICE, "--device cuda: no usable CUDA GPU: %s", why);

    inf_cc *c = calloc(1, sizeof *c);
    if (!c) return inf_fail(err, INF_E_NOMEM, "CUDA client: out of memory");
    c->m = m;
    c->dim = dim;
    c->vocab = V;
    c->embd_dt = embd_dt;
    c->lm_dt = lm_dt;
    c->tied = m->lm_head.data == m->tok_embd.data && lm_dt == embd_dt;
    if ((st = CU(cudaSetDevice(0))) || (st = CU(cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking)))) goto fail;
    if ((st = cublas_dl_load(&c->cb, err))) {
        inf_wrap(err, st, "CUDA client");
        goto fail;
    }
    if ((st = CB(c->cb->create(&c->blas))) || (st = CB(c->cb->set_stream(c->blas, c->s))) ||
        (st = CB(c->cb->set_math_mode(c->blas, CUBLAS_DEFAULT_MATH))))
        goto fail;

    /* weights: one copy of a tied table */
    if ((st = upload(&c->d_embd, m->tok_embd.data, esz * dt_size(embd_dt), err))) goto fail;
    c->weight_bytes += esz * dt_size(embd_dt);
    if (c->tied) {
        c->d_lm = c->d_embd;
    } else {
        if ((st = upload(&c->d_lm, m->lm_head.data, esz * dt_size(lm_dt), err))) goto fail;
        c->weight_bytes += esz * dt_size(lm_dt);
    }
    if (lm_dt == CK_I8) {
        if ((st = upload((void **)&c->d_scale, m->lm_head_scale, sizeof(float) * (size_t)V, err))) goto fail;
        c->weight_bytes += sizeof(float) * (size_t)V;
    }
    if (m->out_norm) {
        if ((st = upload((void **)&c->d_gain, m->out_norm, sizeof(float) * (size_t)dim, err))) goto fail;
        c->weight_bytes += sizeof(float) * (size_t)dim;
    }
    if (m->out_gain_rot) { /* a folded tied bundle's G (common/bundle.h) */
        if ((st = upload((void **)&c->d_gain_rot, m->out_gain_rot, sizeof(float) * (size_t)dim * dim, err))) goto fail;
        c->weight_bytes += sizeof(float) * (size_t)dim * dim;
    }
    if (q) {
        if ((st = upload((void **)&c->d_q, q, sizeof(float) * (size_t)dim * dim, err))) goto fail;
        c->weight_bytes += sizeof(float) * (size_t)dim * dim;
    }

    /* per-step scratch */
    if ((st = CU(cudaMalloc((void **)&c->d_xn, sizeof(float) * (size_t)dim))) ||
        (st = CU(cudaMalloc((void **)&c->d_xq, sizeof(int16_t) * (size_t)dim))) ||
        (st = CU(cudaMalloc((void **)&c->d_sx, sizeof(double)))) ||
        (st = CU(cudaMalloc((void **)&c->d_logits, sizeof(float) * (size_t)V))) ||
        (st = CU(cudaMalloc((void **)&c->d_key, sizeof(unsigned long long)))) ||
        (st = CU(cudaMallocHost((void **)&c->h_logits, sizeof(float) * (size_t)V))) ||
        (st = CU(cudaMallocHost((void **)&c->h_id, sizeof(uint32_t)))))
        goto fail;
    if ((st = ensure_rows(c, 1, err))) goto fail;

    struct cudaDeviceProp prop;
    if ((st = CU(cudaGetDeviceProperties(&prop, 0)))) goto fail;
    snprintf(c->desc, sizeof c->desc, "%s, %.2f GB of client weights (lm_head %s%s%s)", prop.name,
             c->weight_bytes / 1e9, inf_dtype_name(m->lm_head.dtype), c->tied ? ", tied: one copy" : "",
             q ? ", rotation on the device" : "");
    *out = c;
    return INF_OK;
fail:
    cc_close(c);
    return st;
}

inf_status cc_open_rot(const inf_model *m, rot_ctx *rot, inf_cc **out, inf_error *err) {
    inf_status st;
    *out = NULL;
    if (!rot) return cc_open(m, NULL, out, err);
    if (rot->d != m->cfg.dim)
        return inf_fail(err, INF_E_SHAPE, "rotation dimension %d != model dimension %d", rot->d, m->cfg.dim);
    if ((st = rot_ctx_ready(rot, err))) return st;
    if (rot->q32) return cc_open(m, rot->q32, out, err);
    /* an f16 context: widen (exactly) for the upload, then wipe the copy */
    const size_t n = (size_t)rot->d * (size_t)rot->d;
    float *q = malloc(sizeof(float) * n);
    if (!q) return inf_fail(err, INF_E_NOMEM, "CUDA client: out of memory for Q");
    inf_tensor t = {.dtype = INF_DT_F16, .ndim = 2, .shape = {rot->d, rot->d}, .data = rot->q16,
                    .nbytes = n * sizeof(uint16_t)};
    for (int i = 0; i < rot->d; i++) gemv_row_f32(&t, i, q + (size_t)i * rot->d);
    st = cc_open(m, q, out, err);
    rot_matrix_free(q, rot->d);
    return st;
}

void cc_close(inf_cc *c) {
    if (!c) return;
    /* Q is as secret as the seed: overwrite it before the memory goes back */
    if (c->d_q) {
        cudaMemset(c->d_q, 0, sizeof(float) * (size_t)c->dim * c->dim);
        cudaDeviceSynchronize();
    }
    if (c->d_lm != c->d_embd) cudaFree(c->d_lm);
    cudaFree(c->d_embd);
    cudaFree(c->d_scale);
    cudaFree(c->d_gain);
    cudaFree(c->d_gain_rot);
    cudaFree(c->d_q);
    cudaFree(c->d_x);
    cudaFree(c->d_y);
    cudaFree(c->d_ids);
    cudaFree(c->d_xn);
    cudaFree(c->d_xq);
    cudaFree(c->d_sx);
    cudaFree(c->d_logits);
    cudaFree(c->d_hist);
    cudaFree(c->d_key);
    cudaFreeHost(c->h_x);
    cudaFreeHost(c->h_ids);
    cudaFreeHost(c->h_hist);
    cudaFreeHost(c->h_logits);
    cudaFreeHost(c->h_id);
    if (c->blas) c->cb->destroy(c->blas);
    if (c->s) cudaStreamDestroy(c->s);
    free(c);
}

const char *cc_describe(const inf_cc *c) { return c->desc; }
size_t cc_weight_bytes(const inf_cc *c) { return c->weight_bytes; }
bool cc_has_rotation(const inf_cc *c) { return c->d_q != NULL; }

/* Y[n, d] = X[n, d] Q^T (rows y_i = Q x_i: transpose 0) or X Q (y_i = Q^T x_i). */
static inf_status rotate_rows(inf_cc *c, const float *X, int n, int transpose, float *Y, inf_error *err) {
    const float one = 1.0f, zero = 0.0f;
    const int d = c->dim;
    /* cuBLAS is column-major: the row-major Q is Qc = Q^T, X is Xc [d, n]. */
    cublasOperation_t op = transpose ? CUBLAS_OP_N : CUBLAS_OP_T;
    if (n == 1) return CB(c->cb->sgemv(c->blas, op, d, d, &one, c->d_q, d, X, 1, &zero, Y, 1));
    return CB(c->cb->sgemm(c->blas, op, CUBLAS_OP_N, d, n, d, &one, c->d_q, d, X, d, &zero, Y, d));
}

inf_status cc_embed(inf_cc *c, const int32_t *ids, int n, bool rotate, float *x, inf_error *err) {
    inf_status st;
    if (n <= 0) return INF_OK;
    if (rotate && !c->d_q) return inf_fail(err, INF_E_ARG, "CUDA client: rotation asked for but no Q was given");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return inf_fail(err, INF_E_RANGE, "token id %d at index %d is outside the vocabulary (%d)", (int)ids[i],
                            i, c->vocab);
    if ((st = ensure_rows(c, n, err))) return st;
    const size_t bytes = (size_t)n * (size_t)c->dim * sizeof(float);
    memcpy(c->h_ids, ids, sizeof(int32_t) * (size_t)n);
    if ((st = CU(cudaMemcpyAsync(c->d_ids, c->h_ids, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice, c->s))))
        return st;
    if ((st = CU(ck_embed(c->d_embd, c->embd_dt, c->d_ids, n, c->dim, c->d_x, c->s)))) return st;
    float *res = c->d_x;
    if (rotate) {
        if ((st = rotate_rows(c, c->d_x, n, 0, c->d_y, err))) return st;
        res = c->d_y;
    }
    if ((st = CU(cudaMemcpyAsync(c->h_x, res, bytes, cudaMemcpyDeviceToHost, c->s)))) return st;
    if ((st = CU(cudaStreamSynchronize(c->s)))) return st;
    memcpy(x, c->h_x, bytes);
    return INF_OK;
}

/* d_logits = lm_head . rmsnorm(x or Q^T x) * gain */
static inf_status logits_dev(inf_cc *c, const float *x, bool unrotate, inf_error *err) {
    inf_status st;
    if (unrotate && !c->d_q) return inf_fail(err, INF_E_ARG, "CUDA client: un-rotation asked for but no Q was given");
    const size_t bytes = (size_t)c->dim * sizeof(float);
    memcpy(c->h_x, x, bytes);
    if ((st = CU(cudaMemcpyAsync(c->d_x, c->h_x, bytes, cudaMemcpyHostToDevice, c->s)))) return st;
    const float *h = c->d_x;
    if (unrotate) {
        if ((st = rotate_rows(c, c->d_x, 1, 1, c->d_y, err))) return st;
        h = c->d_y;
    }
    const bool i8 = c->lm_dt == CK_I8;
    const float *r = NULL; /* the state whose rms scales (NULL: the norm's input) */
    if (c->d_gain_rot) {
        /* G (h / rms(h)) = (G h) / rms(h): G is linear. G is symmetric, so
         * its row-major copy is its column-major one. */
        const float one = 1.0f, zero = 0.0f;
        float *gh = h == c->d_x ? c->d_y : c->d_x;
        if ((st = CB(c->cb->sgemv(c->blas, CUBLAS_OP_N, c->dim, c->dim, &one, c->d_gain_rot, c->dim, h, 1, &zero, gh, 1))))
            return st;
        r = h;
        h = gh;
    }
    if ((st = CU(ck_final_norm(h, r, c->d_gain, c->dim, c->m->cfg.rms_eps, c->d_xn, i8 ? c->d_xq : NULL, c->d_sx,
                               c->s))))
        return st;
    if (i8)
        return CU(ck_gemv_i8((const int8_t *)c->d_lm, c->d_scale, c->d_xq, c->d_sx, c->vocab, c->dim, c->d_logits,
                             c->s));
    return CU(ck_gemv(c->d_lm, c->lm_dt, c->d_xn, c->vocab, c->dim, c->d_logits, c->s));
}

/* The logits into the pinned c->h_logits. */
static inf_status logits_host(inf_cc *c, const float *x, bool unrotate, inf_error *err) {
    inf_status st;
    if ((st = logits_dev(c, x, unrotate, err))) return st;
    if ((st = CU(cudaMemcpyAsync(c->h_logits, c->d_logits, sizeof(float) * (size_t)c->vocab, cudaMemcpyDeviceToHost,
                                 c->s))))
        return st;
    return CU(cudaStreamSynchronize(c->s));
}

inf_status cc_logits(inf_cc *c, const float *x, bool unrotate, float *logits, inf_error *err) {
    inf_status st = logits_host(c, x, unrotate, err);
    if (!st) memcpy(logits, c->h_logits, sizeof(float) * (size_t)c->vocab);
    return st;
}

inf_status cc_next(inf_cc *c, const float *x, bool unrotate, inf_sampler *s, int32_t *id, inf_error *err) {
    inf_status st;
    if (s->vocab != c->vocab)
        return inf_fail(err, INF_E_ARG, "CUDA client: sampler vocabulary %d != model vocabulary %d", s->vocab, c->vocab);
    if (s->p.temperature > 0.0f) {
        /* temperature, top-k, top-p, the draw: the host sampler on the
         * device's logits (it applies the penalty itself) */
        if ((st = logits_host(c, x, unrotate, err))) return st;
        *id = inf_sample(s, c->h_logits);
        return INF_OK;
    }
    if ((st = logits_dev(c, x, unrotate, err))) return st;
    if (s->p.repeat_penalty != 1.0f && s->hist_len > 0) {
        /* the distinct ids of the history, as inf_sample visits them */
        if ((st = ensure_hist(c, (int)s->hist_len, err))) return st;
        int nh = 0;
        for (size_t i = 0; i < s->hist_len; i++) {
            int32_t v = s->hist[i];
            bool seen = v < 0 || v >= c->vocab;
            for (size_t j = 0; j < i && !seen; j++) seen = s->hist[j] == v;
            if (!seen) c->h_hist[nh++] = v;
        }
        if (nh > 0) {
            if ((st = CU(cudaMemcpyAsync(c->d_hist, c->h_hist, sizeof(int32_t) * (size_t)nh, cudaMemcpyHostToDevice,
                                         c->s))))
                return st;
            if ((st = CU(ck_penalty(c->d_logits, c->d_hist, nh, s->p.repeat_penalty, c->s)))) return st;
        }
    }
    if ((st = CU(cudaMemsetAsync(c->d_key, 0, sizeof *c->d_key, c->s)))) return st;
    if ((st = CU(ck_argmax(c->d_logits, c->vocab, c->d_key, c->s)))) return st;
    /* the low word of the little-endian key is 0xFFFFFFFF - id: 4 bytes back */
    if ((st = CU(cudaMemcpyAsync(c->h_id, c->d_key, sizeof(uint32_t), cudaMemcpyDeviceToHost, c->s)))) return st;
    if ((st = CU(cudaStreamSynchronize(c->s)))) return st;
    *id = (int32_t)(0xFFFFFFFFu - *c->h_id);
    return INF_OK;
}
