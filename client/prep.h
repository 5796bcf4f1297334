/* prep.h — `infemeral prep`: split a checkpoint into a client bundle and a
 * rotated server bundle (format: common/bundle.h; math: DESIGN.md,
 * "computational invariance").
 *
 * For every layer: the RMSNorm gains are folded into the linears that read
 * the norm (W <- W diag(g)); with rotation, readers become W Qᵀ and writers
 * (attn_output, ffn_down) Q W, for a Haar-random orthogonal Q drawn from a
 * fresh 256-bit secret. INT4 is quantized AFTER rotating (rotation spreads
 * outliers, which is also what makes it quantize well). The source may be
 * any checkpoint the readers load (GGUF, HF safetensors, AWQ, llama2.c);
 * quantized sources are dequantized first.
 *
 * Memory: one weight matrix in f32 at a time (plus the int4 results until
 * they are written); the output files are written atomically.
 */
#ifndef INF_PREP_H
#define INF_PREP_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef enum { PREP_F32, PREP_F16, PREP_BF16, PREP_INT4 } prep_weights;
/* The client's lm_head: AUTO = F32 for --weights f32, else F16; INT8 =
 * per-row symmetric int8 + f32 scales (common/bundle.h). */
typedef enum { PREP_LMH_AUTO, PREP_LMH_F16, PREP_LMH_F32, PREP_LMH_INT8 } prep_lm_head;

typedef struct {
    const char *model;     /* source checkpoint */
    const char *tokenizer; /* optional tokenizer file (required for llama2.c sources) */
    const char *out;       /* writes out/client and out/server */
    prep_weights weights;
    bool rotate;           /* false: --no-rotate (fold only; for tests and comparisons) */
    /* --no-fold: the client bundle keeps the embeddings and lm_head
     * unrotated (format 1/2; the client rotates each token with Q). By
     * default, with rotate, Q is folded into them (bundle.h, format 3). */
    bool no_fold;
    bool progress;         /* progress bar on stderr */
    prep_lm_head lm_head;  /* --lm-head */
    /* --vocab-freq: a UTF-8 text whose tokens (the model's tokenizer) give
     * the client's token frequency order (--vocab-subset). NULL: the shipped
     * corpus (INF_DEFAULT_CORPUS) when it exists, else the token-id order. */
    const char *vocab_freq;
} prep_opts;

/* Parses "f16" | "f32" | "int8" (the --lm-head value). */
inf_status prep_parse_lm_head(const char *s, prep_lm_head *out, inf_error *err);

/* Token ids ordered by their count in text[0..len) tokenized with tok
 * (descending; ties: lower id first) into order[vocab]; *n_tokens = tokens
 * counted (ids >= vocab are ignored). `what` names the text in errors;
 * a text with no tokens is an error. */
struct tok_tokenizer;
inf_status prep_token_order(const struct tok_tokenizer *tok, const char *text, size_t len, int vocab, const char *what,
                            int32_t *order, size_t *n_tokens, inf_error *err);

/* Parses "f32" | "f16" | "bf16" | "int4". */
inf_status prep_parse_weights(const char *s, prep_weights *out, inf_error *err);
inf_status prep_run(const prep_opts *o, inf_error *err);

/* Group size used for INT4 along a row of `in` weights: 128 when it
 * divides `in`, else 64, else 32; 0 when none does. */
int prep_int4_group(int64_t in);

/* Round-to-nearest asymmetric int4 of one row (in values, groups of g):
 * q packed two per byte (element 2i low nibble), scales f16, zeros 0..15. */
void prep_quantize_row_int4(const float *w, int64_t in, int g, uint8_t *q, uint16_t *scales,
                            uint8_t *zeros);

#endif
