#define _POSIX_C_SOURCE 200809L
#include "generate.h"

#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "cloak.h"
#include "embed.h"
#include "vocab.h"

double inf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

inf_status inf_local_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_local_layers *l = ctx;
    return cpu_forward(l->model, (inf_kv *)l->kv, x, n, pos, err);
}

inf_status inf_timed_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_timed_layers *l = ctx;
    double t = inf_prof_start(l->prof);
    inf_status st = l->inner(l->inner_ctx, x, n, pos, err);
    inf_prof_stop(l->prof, INF_PH_LAYERS, t);
    return st;
}

inf_status inf_cloaked_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_cloaked_layers *c = ctx;
    inf_status st;
    double t = inf_prof_start(c->prof);
    if (c->cloak && (st = cloak_states(c->cloak, x, (size_t)n, c->dim, err))) return st;
    if (c->cloak) inf_prof_stop(c->prof, INF_PH_CLOAK, t);
    if ((st = c->inner(c->inner_ctx, x, n, pos, err))) return st;
    t = inf_prof_start(c->prof);
    if (c->cloak && (st = uncloak_states(c->cloak, x, (size_t)n, c->dim, err))) return st;
    if (c->cloak) inf_prof_stop(c->prof, INF_PH_UNCLOAK, t);
    return INF_OK;
}

inf_status inf_split_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err) {
    inf_split_layers *s = ctx;
    inf_local_layers local = {s->server, s->kv};
    inf_cloaked_layers c = {inf_local_layers_fn, &local, s->cloak, s->server->cfg.dim, NULL};
    return inf_cloaked_layers_fn(&c, x, n, pos, err);
}

inf_status inf_generate(const inf_gen *g, int *pos, const int32_t *prompt, int n_prompt,
                        int max_new, inf_sampler *s, inf_token_cb on_token, inf_stop_cb is_stop,
                        void *user, inf_gen_stats *stats, inf_error *err) {
    return inf_generate_profiled(g, NULL, pos, prompt, n_prompt, max_new, s, on_token, is_stop, user, stats, err);
}

inf_status inf_generate_profiled(const inf_gen *g, inf_profile *prof, int *pos, const int32_t *prompt,
                                 int n_prompt, int max_new, inf_sampler *s, inf_token_cb on_token,
                                 inf_stop_cb is_stop, void *user, inf_gen_stats *stats, inf_error *err) {
    return inf_generate_device(g, NULL, prof, pos, prompt, n_prompt, max_new, s, on_token, is_stop, user, stats, err);
}

inf_status inf_generate_device(const inf_gen *g, const inf_gen_device *dev, inf_profile *prof, int *pos,
                               const int32_t *prompt, int n_prompt, int max_new, inf_sampler *s,
                               inf_token_cb on_token, inf_stop_cb is_stop, void *user, inf_gen_stats *stats,
                               inf_error *err) {
    const inf_model *m = g->model;
    const int dim = m->cfg.dim, V = m->cfg.vocab_size;
    const int chunk = g->prefill_chunk > 0 ? g->prefill_chunk : 256;
    *stats = (inf_gen_stats){.pending = -1};
    if (n_prompt <= 0) return inf_fail(err, INF_E_ARG, "generate: the prompt is empty (no tokens)");
    if (max_new < 0) return inf_fail(err, INF_E_ARG, "generate: --max-tokens %d must be >= 0", max_new);

    inf_status st = INF_OK;
    int32_t dev_id = -1; /* the device's pick for this step */
    int cn = n_prompt < chunk ? n_prompt : chunk;
    float *x = malloc(sizeof(float) * (size_t)cn * (size_t)dim);
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!x || !logits) {
        st = inf_fail(err, INF_E_NOMEM, "generate: out of memory");
        goto done;
    }
    for (int i = 0; i < n_prompt; i++) inf_sampler_accept(s, prompt[i]);

    /* Profile steps: one per prefill chunk (the last one also holds the first
     * token's sampling), then one per generated token. */
    double t0 = inf_now(), tp;
    for (int off = 0; off < n_prompt; off += cn) {
        int k = n_prompt - off < cn ? n_prompt - off : cn;
        if (prof) inf_profile_begin(prof, INF_STEP_PREFILL);
        tp = inf_prof_start(prof);
        st = dev ? dev->embed(dev->ctx, prompt + off, k, x, err) : inf_embed(m, prompt + off, k, x, err);
        if (st) goto done;
        inf_prof_stop(prof, INF_PH_EMBED, tp);
        if ((st = g->layers(g->layers_ctx, x, k, *pos, err))) goto done;
        *pos += k;
        if (off + k == n_prompt) {
            tp = inf_prof_start(prof);
            const float *xl = x + (size_t)(k - 1) * dim;
            st = dev ? dev->next(dev->ctx, xl, s, &dev_id, err) : inf_vocab_logits(m, s->subset, s, xl, logits, err);
            if (st) goto done;
            inf_prof_stop(prof, INF_PH_LM_HEAD, tp);
        } else if (prof) {
            inf_profile_end(prof);
        }
    }
    stats->n_prompt = n_prompt;
    double t1 = inf_now();
    for (int step = 0; step < max_new; step++) {
        if (step > 0) {
            int32_t last = stats->pending;
            if (prof) inf_profile_begin(prof, INF_STEP_DECODE);
            tp = inf_prof_start(prof);
            st = dev ? dev->embed(dev->ctx, &last, 1, x, err) : inf_embed(m, &last, 1, x, err);
            if (st) goto done;
            inf_prof_stop(prof, INF_PH_EMBED, tp);
            if ((st = g->layers(g->layers_ctx, x, 1, *pos, err))) goto done;
            *pos += 1;
            stats->pending = -1;
            tp = inf_prof_start(prof);
            st = dev ? dev->next(dev->ctx, x, s, &dev_id, err) : inf_vocab_logits(m, s->subset, s, x, logits, err);
            if (st) goto done;
            inf_prof_stop(prof, INF_PH_LM_HEAD, tp);
        }
        tp = inf_prof_start(prof);
        int32_t id = dev ? dev_id : inf_sample(s, logits); /* the device sampled in its lm_head phase */
        inf_sampler_accept(s, id);
        inf_prof_stop(prof, INF_PH_SAMPLE, tp);
        if (prof) inf_profile_end(prof);
        stats->pending = id;
        stats->n_gen++;
        if (step == 0) t1 = inf_now();
        bool stop = is_stop && is_stop(id, user);
        if (on_token && !on_token(id, user)) break;
        if (stop) {
            stats->stopped = true;
            break;
        }
    }
    if (prof) inf_profile_end(prof); /* max_new == 0: the prefill step is still open */
    double t2 = inf_now();
    stats->prefill_s = t1 - t0;
    stats->decode_s = t2 - t1;
done:
    if (prof && st) inf_profile_cancel(prof); /* a failed step is not a measurement */
    free(x);
    free(logits);
    return st;
}
