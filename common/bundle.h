/* bundle.h — the prepared-model bundles `infemeral prep` writes.
 *
 * DIR/server/model.safetensors — what the worker holds. Norm-folded,
 *   rotated layer weights, nothing else: no embeddings, no lm_head, no seed.
 *   Tensors (GGUF-style names, [out, in]):
 *     blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight
 *         F32 / F16 / BF16, or for INT4 the three arrays of a Q4G tensor:
 *     blk.N.<name>.qweight U8 [out, in/2]   (element 2i in the low nibble)
 *     blk.N.<name>.scales  F16 [out, in/g]
 *     blk.N.<name>.zeros   U8 [out, in/g]   w = (q - zero) * scale
 *     rope.inv_freq        F32 [head_dim/2] (the exact RoPE frequencies)
 *   Row-major with groups along `in` lets a GPU warp stream one output row
 *   with 16-byte loads and dequantize in registers.
 * DIR/client/client.safetensors — what stays with the user:
 *     token_embd.weight    [vocab, dim] (F32 for --weights f32, else F16)
 *     output.weight        [vocab, dim] = W_lm · diag(g_final), when untied
 *     output_norm.weight   F32 [dim] = g_final, when tied (one matrix serves
 *                          lookup and lm_head; the gain is applied to the
 *                          hidden state at run time)
 *   with `prep --lm-head int8` (metadata lm_head = "int8-rowwise", client
 *   format_version 2; older readers refuse the file):
 *     output.weight        I8 [vocab, dim]: q = round(w / s), |q| <= 127
 *     output.scale         F32 [vocab]: s = max|w_row| / 127 (w = q * s)
 *                          untied: w = W_lm · diag(g_final); tied: w = the
 *                          embedding rows (token_embd stays F16 for the
 *                          lookup; output_norm.weight still carries g_final)
 *   with the rotation folded in (prep's default; metadata rotation_folded =
 *   "true", client format_version 3):
 *     token_embd.weight    the rotated rows Q e_t (what the cloak would send)
 *     output.weight        untied: W_lm · diag(g_final) · Q^T (f16/f32/int8),
 *                          so logits come straight from the rotated state
 *     output_norm.rotated  F32 [dim, dim], tied only, instead of
 *                          output_norm.weight: G = Q diag(g_final) Q^T, applied
 *                          to the normalized rotated state (the one table is
 *                          Q-rotated, so the gain must be too); an int8
 *                          lm_head quantizes the rotated rows
 *   The client then needs neither Q nor any d x d product per token (the
 *   Gaussian noise is added to the rotated row: Q n has the law of n).
 *   always (unless prep --no-vocab-freq):
 *     token_freq.order     I32 [vocab]: every token id once, most frequent
 *                          first in prep's corpus (ties: lower id first);
 *                          metadata token_freq = "<corpus name>, <N> tokens"
 * DIR/client/secret.key — the 256-bit rotation seed (mode 0600)
 * DIR/client/tokenizer.{gguf,json,bin,model} — the source's tokenizer
 *
 * Both safetensors files carry "__metadata__": format, format_version,
 * config (JSON of inf_model_config), rotation (fingerprint, or "none" for
 * --no-rotate), and on the server weights ("f32" | "f16" | "bf16" |
 * "int4") and norms_folded "true". The loaders refuse a wrong format, a
 * newer version, a config that disagrees with the tensors, and (in the
 * split run) a client and server whose rotation fingerprints differ.
 */
#ifndef INF_BUNDLE_H
#define INF_BUNDLE_H

#include "model.h"
#include "status.h"

#define INF_BUNDLE_VERSION 1
/* Client bundles: 1 = f16/f32 lm_head; 2 = adds the int8 lm_head; 3 = adds
 * the folded rotation. A reader accepts versions up to this one; prep writes
 * the lowest version that holds what it wrote. */
#define INF_BUNDLE_CLIENT_VERSION 3
#define INF_BUNDLE_LM_HEAD_INT8 "int8-rowwise"
#define INF_BUNDLE_SERVER_FILE "model.safetensors"
#define INF_BUNDLE_CLIENT_FILE "client.safetensors"
#define INF_BUNDLE_SEED_FILE "secret.key"
#define INF_BUNDLE_SERVER_FORMAT "infemeral-server-bundle"
#define INF_BUNDLE_CLIENT_FORMAT "infemeral-client-bundle"

/* The config as a JSON object string (malloc'd; NULL when out of memory). */
char *inf_config_to_json(const inf_model_config *c);
/* Parses what inf_config_to_json wrote; `where` names the file in errors. */
inf_status inf_config_from_json(const char *json, const char *where, inf_model_config *c,
                                inf_error *err);

/* Layer names in bundles, indexed like inf_layer's linear fields:
 * wq, wk, wv, wo, w_gate, w_up, w_down. */
extern const char *const inf_bundle_linear_names[7];
/* Address of the i-th linear of a layer (same order as the names). */
inf_tensor *inf_layer_linear(inf_layer *L, int i);

#endif
