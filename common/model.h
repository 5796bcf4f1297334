/* model.h — one description of a Llama-family model, whatever file it came
 * from (GGUF, HF safetensors + config.json, AWQ INT4, llama2.c checkpoint).
 *
 * Ownership: an inf_model owns everything its tensors point into (file maps,
 * repacked buffers) and releases it in inf_model_free. Weight tensors are
 * views used in place; only small things (norm gains in f32, RoPE
 * frequencies, repacked AWQ) are allocated. A loaded model is immutable and
 * may be shared by threads.
 *
 * Conventions:
 *  - linear weights are [out, in]; y = W x.
 *  - rope_interleaved: true when RoPE rotates adjacent pairs (2i, 2i+1), as
 *    in Meta's and llama2.c's checkpoints and in GGUF (whose converter
 *    permutes HF's q/k rows); false for HF's rotate_half (i, i + hd/2).
 *  - Norm gains may be NULL: a prepared bundle has them folded into the
 *    linear layers that read the norm (see DESIGN.md).
 */
#ifndef INF_MODEL_H
#define INF_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

#define INF_MAX_LAYERS 512
#define INF_MAX_DIM (1 << 16)
#define INF_MAX_VOCAB (1 << 22)
#define INF_MAX_CTX (1 << 22)

typedef enum { INF_ROPE_SCALING_NONE = 0, INF_ROPE_SCALING_LLAMA3 = 1 } inf_rope_scaling;

typedef enum {
    INF_SRC_GGUF = 0,
    INF_SRC_SAFETENSORS,
    INF_SRC_AWQ,
    INF_SRC_LLAMA2C,
    INF_SRC_BUNDLE,
} inf_model_source;

typedef struct {
    char arch[32]; /* "llama" */
    int dim;        /* hidden size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ffn_dim;    /* intermediate size */
    int vocab_size;
    int max_seq;    /* trained context length */
    float rope_theta;
    float rms_eps;
    inf_rope_scaling rope_scaling;
    float rope_factor;       /* llama3 scaling: factor */
    float rope_low_freq;     /* low_freq_factor */
    float rope_high_freq;    /* high_freq_factor */
    int rope_orig_ctx;       /* original_max_position_embeddings */
    bool rope_interleaved;
    bool tied_embeddings;
    int bos_id, eos_id, eot_id, pad_id; /* -1 when absent */
} inf_model_config;

typedef struct {
    const float *attn_norm; /* [dim] or NULL (folded) */
    inf_tensor wq;          /* [n_heads*head_dim, dim] */
    inf_tensor wk;          /* [n_kv_heads*head_dim, dim] */
    inf_tensor wv;          /* [n_kv_heads*head_dim, dim] */
    inf_tensor wo;          /* [dim, n_heads*head_dim] */
    const float *ffn_norm;  /* [dim] or NULL */
    inf_tensor w_gate;      /* [ffn_dim, dim] */
    inf_tensor w_up;        /* [ffn_dim, dim] */
    inf_tensor w_down;      /* [dim, ffn_dim] */
} inf_layer;

typedef struct inf_model_cleanup inf_model_cleanup;

typedef struct {
    inf_model_config cfg;
    inf_model_source source;
    char path[1024];
    inf_tensor tok_embd;    /* [vocab, dim] (may be absent in a server bundle: data NULL) */
    const float *out_norm;  /* [dim] or NULL */
    inf_tensor lm_head;     /* [vocab, dim]; a copy of tok_embd's view when tied */
    inf_layer *layers;      /* [n_layers] */
    const float *rope_inv_freq; /* [head_dim/2], scaling applied (set by finalize) */
    const float *rope_freq_factors; /* [head_dim/2] divisors (GGUF rope_freqs) or NULL */
    char rotation[72];      /* prepared bundles: the rotation's fingerprint, "none" if unrotated; "" otherwise */
    inf_model_cleanup *cleanup;
    /* Client bundles (common/bundle.h). lm_head_scale: [vocab] f32 per-row
     * scales when lm_head is I8 (prep --lm-head int8), else NULL.
     * token_freq: [vocab] every token id once, most frequent first (the
     * first pass of --vocab-subset), or NULL. */
    const float *lm_head_scale;
    const int32_t *token_freq;
    /* Client bundles prepared with the rotation folded in (the default of
     * prep; bundle.h): tok_embd holds the rotated rows Q e_t and an untied
     * lm_head is W_lm diag(g) Q^T, so the client does no d x d work per
     * token and never builds Q. A tied one keeps one table, so the final
     * gain cannot be folded into it: out_gain_rot [dim, dim] row-major is
     * G = Q diag(g_final) Q^T (symmetric), applied to the normalized
     * rotated state instead of out_norm (which is then NULL). */
    bool rot_folded;
    const float *out_gain_rot;
} inf_model;

/* Loads any supported checkpoint. PATH may be a .gguf file, a llama2.c .bin,
 * a .safetensors file (config.json beside it) or a directory holding
 * config.json and *.safetensors (sharded or not, AWQ or not). The format is
 * recognized by content, not by name. On failure *out is NULL and err names
 * the file and the field or tensor that was wrong. */
inf_status inf_model_load(const char *path, inf_model **out, inf_error *err);
void inf_model_free(inf_model *m);

/* ---- for the format-specific loaders (model_*.c) ---------------------------- */

inf_model *inf_model_new(const char *path, inf_model_source src);
/* Registers fn(arg) to run at inf_model_free (reverse order). Returns 0 and
 * runs fn(arg) at once if it cannot allocate. */
int inf_model_defer(inf_model *m, void (*fn)(void *), void *arg);
/* Allocates n bytes owned by the model (zeroed). NULL on failure. */
void *inf_model_alloc(inf_model *m, size_t n);
/* Converts a 1-D gain vector of any float dtype to f32 owned by the model. */
inf_status inf_model_gain(inf_model *m, const inf_tensor *t, const char *name, int dim,
                          const float **out, inf_error *err);
/* Checks the config (sizes, divisibility, rope) and every tensor's shape and
 * dtype against it, then computes rope_inv_freq. Messages name the field or
 * tensor. Every loader calls this last. */
inf_status inf_model_finalize(inf_model *m, inf_error *err);

/* inv[i] = theta^(-2i/head_dim) for i < head_dim/2, with llama3 scaling
 * applied and divided by freq_factors[i] when given (GGUF rope_freqs). The
 * config must already be range-checked (inf_model_finalize does). */
void inf_rope_inv_freq(const inf_model_config *c, const float *freq_factors, float *inv);

/* Format-specific loaders. */
inf_status inf_model_load_gguf(const char *path, inf_model **out, inf_error *err);
inf_status inf_model_load_llama2c(const char *path, inf_model **out, inf_error *err);
inf_status inf_model_load_hf(const char *path, inf_model **out, inf_error *err);
/* Prepared bundles (common/bundle.h describes the format). */
inf_status inf_model_load_server_bundle(const char *dir, inf_model **out, inf_error *err);
inf_status inf_model_load_client_bundle(const char *dir, inf_model **out, inf_error *err);

#endif
