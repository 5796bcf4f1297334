/* chat.h — chat templates: a list of messages -> the prompt text to encode.
 *
 * The rendered text contains the special tokens' text ("<|im_start|>",
 * "<|begin_of_text|>", "<s>"), so encode it with tok_encode(...,
 * add_bos=false, parse_special=true). Where BOS comes from:
 *   - CHAT_LLAMA3 starts with "<|begin_of_text|>" (the BOS) itself;
 *   - CHAT_LLAMA2 writes "<s>" before every [INST] turn itself;
 *   - CHAT_CHATML has no BOS (SmolLM2's add_bos_token is false).
 * So never add BOS again when encoding a rendering.
 *
 * Ownership: chat_render returns a malloc'd NUL-terminated string the caller
 * frees. No global state; thread-safe.
 */
#ifndef INF_CHAT_H
#define INF_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"
#include "tokenizer.h"

typedef enum { CHAT_NONE, CHAT_CHATML, CHAT_LLAMA3, CHAT_LLAMA2 } chat_format;

typedef struct {
    const char *role; /* "system", "user", "assistant" (ChatML/Llama 3 accept any role) */
    const char *content;
} chat_msg;

/* The format of a model: from its template text when given (GGUF
 * tokenizer.chat_template; may be NULL), else from the tokenizer's vocabulary:
 * ChatML if "<|im_start|>" exists, Llama 3 if "<|start_header_id|>" exists,
 * Llama 2 if the template uses "[INST]". CHAT_NONE when nothing fits. */
chat_format chat_detect(const tok_tokenizer *t, const char *template_text);

/* A short name ("chatml", "llama3", "llama2", "none"). */
const char *chat_format_name(chat_format f);

/* Renders msgs[0..n).
 *  CHAT_CHATML: SmolLM2's template: when msgs[0] is not a system message a
 *    system message is inserted first: default_system, or when that is NULL
 *    SmolLM2's "You are a helpful AI assistant named SmolLM, trained by
 *    Hugging Face" ("" inserts none). Each message is
 *    "<|im_start|>{role}\n{content}<|im_end|>\n"; the generation prompt is
 *    "<|im_start|>assistant\n".
 *  CHAT_LLAMA3: "<|begin_of_text|>", then for each message
 *    "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" with
 *    content trimmed of leading/trailing whitespace as Meta's template does; the
 *    generation prompt is "<|start_header_id|>assistant<|end_header_id|>\n\n".
 *    default_system (when not NULL or "") is inserted as a system message when
 *    msgs[0] is not one.
 *  CHAT_LLAMA2: "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]", then
 *    " {assistant} </s>" and "<s>[INST] {user} [/INST]" for later turns
 *    (add_generation_prompt changes nothing: [/INST] already asks for a reply).
 * Errors: CHAT_NONE or an unknown format, a NULL role/content, Llama 2
 * messages out of user/assistant order. */
inf_status chat_render(chat_format f, const chat_msg *msgs, size_t n, bool add_generation_prompt,
                       const char *default_system, char **out, inf_error *err);

#endif
