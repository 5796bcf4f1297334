/* generate.h — the generation loop: embed, run the layers, lm_head, sample.
 *
 * The layers are a callback so the same loop drives the local CPU backend
 * (`infemeral run --model`), the split path over bundles, and later the
 * network worker: the loop only sees hidden states go out and come back.
 * Positions are absolute and owned by the caller (pos in, pos out), which is
 * what makes multi-turn chat send only the new tokens.
 */
#ifndef INF_GENERATE_H
#define INF_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "profile.h"
#include "sample.h"
#include "status.h"

/* Runs the transformer layers on x [n, dim] (in/out) at positions pos.. */
typedef inf_status (*inf_layers_fn)(void *ctx, float *x, int n, int pos, inf_error *err);

/* Called with each generated token; return false to stop. */
typedef bool (*inf_token_cb)(int32_t id, void *user);
/* True when id ends generation (end of turn / end of text). */
typedef bool (*inf_stop_cb)(int32_t id, void *user);

/* A device that does the client's ends of each step in place of the CPU
 * (client/cuda/client_cuda.h: cc_gen_embed, cc_gen_next): embed writes the
 * rows the layers get (rotated, when the device holds the cloak's Q);
 * next turns the layers' last row into the token, as inf_sample on
 * inf_logits would (the loop still calls inf_sampler_accept). */
typedef struct {
    void *ctx;
    inf_status (*embed)(void *ctx, const int32_t *ids, int n, float *x, inf_error *err);
    inf_status (*next)(void *ctx, const float *x, inf_sampler *s, int32_t *id, inf_error *err);
} inf_gen_device;

typedef struct {
    const inf_model *model; /* embeddings, final norm, lm_head, config */
    inf_layers_fn layers;
    void *layers_ctx;
    int prefill_chunk; /* tokens per layers call while prefilling (default 256) */
} inf_gen;

typedef struct {
    int n_prompt;      /* tokens prefilled */
    int n_gen;         /* tokens generated (including a stop token) */
    double prefill_s;  /* wall time of the prefill, including the first token's sampling */
    double decode_s;   /* wall time of the decode steps after the first token */
    int32_t pending;   /* last generated token, not yet run through the layers; -1 if none */
    bool stopped;      /* ended on a stop token (not max_new or the callback) */
} inf_gen_stats;

/* Prefills prompt[0..n_prompt) at *pos, then generates up to max_new tokens.
 * On return *pos is the number of positions the layers have cached; the last
 * token (stats->pending) still needs to go in front of the next prompt. */
inf_status inf_generate(const inf_gen *g, int *pos, const int32_t *prompt, int n_prompt,
                        int max_new, inf_sampler *s, inf_token_cb on_token, inf_stop_cb is_stop,
                        void *user, inf_gen_stats *stats, inf_error *err);

/* The same, with the time of each step recorded into prof (client/profile.h;
 * NULL = off): one prefill step per layers call of the prompt (the last one
 * also holds the first token's lm_head and sampling), one decode step per
 * token after that. This function records embed, lm_head and sample; the
 * layers callbacks record their own phases (inf_timed_layers,
 * inf_cloaked_layers.prof, inf_remote_set_profile). */
inf_status inf_generate_profiled(const inf_gen *g, inf_profile *prof, int *pos, const int32_t *prompt,
                                 int n_prompt, int max_new, inf_sampler *s, inf_token_cb on_token,
                                 inf_stop_cb is_stop, void *user, inf_gen_stats *stats, inf_error *err);

/* The same with the client's ends of each step on a device (dev NULL: the
 * CPU, as inf_generate_profiled). With a device the "lm_head" phase holds
 * the device's un-rotation, norm, lm_head and sampling, "sample" only the
 * bookkeeping. */
inf_status inf_generate_device(const inf_gen *g, const inf_gen_device *dev, inf_profile *prof, int *pos,
                               const int32_t *prompt, int n_prompt, int max_new, inf_sampler *s,
                               inf_token_cb on_token, inf_stop_cb is_stop, void *user, inf_gen_stats *stats,
                               inf_error *err);

/* Monotonic seconds. */
double inf_now(void);

/* Any layers function, its time recorded as the "layers" phase of prof
 * (NULL = off): what a local or split run does in place of the network. */
typedef struct {
    inf_layers_fn inner;
    void *inner_ctx;
    inf_profile *prof;
} inf_timed_layers;
inf_status inf_timed_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);

/* The local layers callback: the CPU backend over a loaded model. */
typedef struct {
    const inf_model *model;
    void *kv; /* inf_kv* (worker/kv.h) */
} inf_local_layers;
inf_status inf_local_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);

/* The split path in one process: cloak (noise + rotation), the server
 * bundle's layers on the CPU backend, uncloak. What a network worker will
 * replace is exactly the middle step. cloak may be NULL for an unrotated
 * (--no-rotate) bundle without noise. */
typedef struct {
    const inf_model *server;
    void *kv;    /* inf_kv* */
    void *cloak; /* cloak_ctx* (client/cloak.h) or NULL */
} inf_split_layers;
inf_status inf_split_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);

/* The general form: cloak, any inner layers function (a remote worker, or
 * the local CPU backend), uncloak. */
typedef struct {
    inf_layers_fn inner;
    void *inner_ctx;
    void *cloak; /* cloak_ctx* or NULL */
    int dim;
    inf_profile *prof; /* NULL: off; else cloak and uncloak (the inner function records its own) */
} inf_cloaked_layers;
inf_status inf_cloaked_layers_fn(void *ctx, float *x, int n, int pos, inf_error *err);

#endif
