/* tokenizer.h — text <-> token ids for the client (the GPU never sees either).
 *
 * Three tokenizer families behind one opaque tok_tokenizer:
 *   - byte-level BPE (GPT-2 style; GGUF model "gpt2", HF tokenizer.json with a
 *     ByteLevel pre-tokenizer): text is pre-split with PCRE2 regexes, each
 *     piece's raw bytes are merged by merge rank;
 *   - tiktoken BPE (Meta's Llama 3 tokenizer.model): like the above, but the
 *     rank of a pair is the rank of its concatenation;
 *   - SentencePiece-style BPE (GGUF model "llama", llama2.c's tokenizer .bin):
 *     UTF-8 characters are merged by the highest token score, characters that
 *     are not in the vocabulary fall back to <0xXX> byte tokens.
 *
 * Ownership: the loaders return a tokenizer the caller frees with tok_free.
 * It copies everything it needs (a GGUF file may be closed right after
 * tok_load_gguf). tok_encode returns a malloc'd array the caller frees.
 *
 * Thread-safety: a tok_tokenizer is immutable once loaded; tok_encode,
 * tok_decode*, tok_find and friends may be called from many threads at once
 * (each call uses its own scratch memory). A tok_stream belongs to one thread.
 *
 * Special tokens: "control" tokens (<|im_start|>, <|eot_id|>, ...) are only
 * recognised in text when tok_encode is asked to (parse_special); tokens of
 * type "user defined" are always recognised. Control tokens decode to nothing.
 */
#ifndef INF_TOKENIZER_H
#define INF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tok_tokenizer tok_tokenizer;

/* ---- loaders ---------------------------------------------------------------------------- */

/* From a GGUF's tokenizer.ggml.* metadata: model "gpt2" (byte-level BPE with
 * merges; pre-split by tokenizer.ggml.pre: "smollm", "llama-bpe"/"llama3",
 * "gpt2"/"default" and a few others) or "llama" (SentencePiece with scores). */
inf_status tok_load_gguf(const gguf_file *g, tok_tokenizer **out, inf_error *err);
/* HF tokenizer.json with model.type "BPE" and a ByteLevel pre-tokenizer or
 * decoder (merges as "a b" strings or ["a","b"] pairs; added_tokens; Split,
 * Digits and ByteLevel pre-tokenizers, alone or in a Sequence). Normalizers
 * are ignored (the byte-level models we load have none). */
inf_status tok_load_hf_json(const char *path, tok_tokenizer **out, inf_error *err);
/* Meta's Llama 3 tokenizer.model ("base64 rank" lines) plus its 256 special
 * tokens at 128000.. and the Llama 3 pre-split pattern. BOS <|begin_of_text|>,
 * EOS <|end_of_text|>, EOT <|eot_id|>; add BOS by default. */
inf_status tok_load_tiktoken(const char *path, tok_tokenizer **out, inf_error *err);
/* llama2.c's tokenizer .bin (int32 max_token_length, then per token float32
 * score, int32 length, bytes). vocab_size tokens are read; vocab_size <= 0
 * reads until the end of the file. BOS 1, EOS 2, bytes at 3..258 as <0xXX>,
 * dummy prefix space, add BOS by default. */
inf_status tok_load_llama2c(const char *path, int vocab_size, tok_tokenizer **out, inf_error *err);

typedef enum { TOK_FILE_GGUF, TOK_FILE_HF_JSON, TOK_FILE_TIKTOKEN, TOK_FILE_LLAMA2C } tok_file_kind;
/* What kind of tokenizer file `path` is, by content (and a .json name);
 * the same rule tok_load_file loads by. */
inf_status tok_file_kind_of(const char *path, tok_file_kind *kind, inf_error *err);
/* Where a Hugging Face checkpoint keeps its tokenizer: tokenizer.json in
 * the model directory, or beside a .safetensors file. */
void tok_hf_path(const char *model_path, char *out, size_t cap);

/* Any of the above, recognized by content: a GGUF (its tokenizer.* keys),
 * tokenizer.json, Meta's tiktoken text, else a llama2.c .bin (which needs
 * vocab_size). When tmpl is non-NULL and the file is a GGUF with a
 * tokenizer.chat_template, *tmpl receives a malloc'd copy (else NULL). */
inf_status tok_load_file(const char *path, int vocab_size, tok_tokenizer **out, char **tmpl,
                         inf_error *err);

void tok_free(tok_tokenizer *t);

/* ---- queries ---------------------------------------------------------------------------- */

int tok_vocab_size(const tok_tokenizer *t);
int tok_bos(const tok_tokenizer *t); /* -1 when none */
int tok_eos(const tok_tokenizer *t); /* -1 when none */
int tok_eot(const tok_tokenizer *t); /* -1 when none */
/* Whether encoding a prompt for generation should prepend BOS by default. */
bool tok_add_bos(const tok_tokenizer *t);
/* End of generation: eos, eot, and <|im_end|>, <|eot_id|>, <|eom_id|>,
 * <|end_of_text|>, <|endoftext|> when they exist. */
bool tok_is_eog(const tok_tokenizer *t, int32_t id);
/* Exact token text (as the vocabulary spells it, e.g. "Ġthe", "▁the",
 * "<|im_start|>") -> id; -1 if absent. For tiktoken vocabularies the text is
 * the raw bytes. */
int32_t tok_find(const tok_tokenizer *t, const char *piece);
/* The vocabulary's text of a token (NUL-terminated, owned by t); NULL when
 * id is out of range. */
const char *tok_text(const tok_tokenizer *t, int32_t id);
/* The longest byte string any single token decodes to. */
size_t tok_max_piece(const tok_tokenizer *t);

/* ---- encode / decode -------------------------------------------------------------------- */

/* Encodes len bytes of text (need not be NUL-terminated; invalid UTF-8 is
 * fine: byte-level vocabularies encode raw bytes, SentencePiece ones fall back
 * to byte tokens). parse_special: recognise control tokens' text (e.g.
 * "<|im_start|>") as single ids. add_bos: prepend BOS (when the vocabulary has
 * one). *ids is malloc'd (never NULL on success, even for 0 ids); caller frees. */
inf_status tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t **ids, size_t *n_ids, inf_error *err);

/* The bytes a token decodes to (byte-level: the byte->unicode mapping undone;
 * SentencePiece: '▁' -> ' ', <0xXX> -> that byte; control tokens -> nothing).
 * Writes at most cap bytes (no NUL) and returns the token's full length, like
 * snprintf; an id out of range returns 0. */
size_t tok_decode_token(const tok_tokenizer *t, int32_t id, char *buf, size_t cap);

/* Concatenated bytes of ids (malloc'd, NUL-terminated; caller frees). For
 * SentencePiece vocabularies the leading space of the first piece at the start
 * or after BOS is dropped, so tok_decode(tok_encode(x)) == x. */
inf_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, char **out,
                      size_t *out_len, inf_error *err);

/* ---- streaming detokenizer -------------------------------------------------------------- */

/* Feeds generated ids one at a time and emits only whole UTF-8 characters: an
 * incomplete multi-byte sequence is held back until a later token completes
 * it; bytes that can never form a character are emitted as U+FFFD as soon as
 * that is certain, and whatever is still pending at tok_stream_flush too. For
 * SentencePiece vocabularies the leading space of the first piece at stream
 * start (or right after a BOS) is dropped, as llama2.c and sentencepiece do;
 * call tok_stream_after(s, last_prompt_id) when the stream continues text that
 * was already shown. */
typedef struct {
    const tok_tokenizer *t;
    unsigned char pend[4]; /* incomplete UTF-8 sequence carried over */
    int npend;
    bool strip_space; /* drop one leading ' ' of the next piece */
} tok_stream;

void tok_stream_init(tok_stream *s, const tok_tokenizer *t);
/* Tells the stream which token came right before its first one (BOS -> strip
 * the next leading space; anything else -> keep it). */
void tok_stream_after(tok_stream *s, int32_t prev_id);
/* Returns the number of bytes written to out. One push writes at most the
 * piece plus the <= 3 bytes carried over, except that every byte of an
 * invalid sequence becomes 3 bytes of U+FFFD: tok_stream_cap(t) =
 * 3 * (tok_max_piece(t) + 3) bytes always suffice (393 for Llama 3, whose
 * longest piece is 128 bytes; 252 for SmolLM2). 256 bytes suffice for every
 * piece that is valid UTF-8 in these vocabularies. If cap is still too small
 * the output is cut at a character boundary and the rest is dropped. */
size_t tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap);
size_t tok_stream_cap(const tok_tokenizer *t);
/* Emits what is pending (as U+FFFD: at most 9 bytes, so cap >= 16 suffices)
 * and resets the UTF-8 state. */
size_t tok_stream_flush(tok_stream *s, char *out, size_t cap);

/* ---- building a tokenizer (used by the loaders; also handy in tests) -------------------- */

typedef enum {
    TOK_KIND_BPE = 0, /* byte-level BPE, merges by pair rank, GPT-2 byte<->unicode text */
    TOK_KIND_TIKTOKEN, /* byte-level BPE, raw-byte token text, rank = id of concatenation */
    TOK_KIND_SPM,      /* SentencePiece BPE by score with <0xXX> byte fallback */
} tok_kind;

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. */
typedef enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
} tok_type;

/* A tokenizer with n_vocab empty slots; `source` (a path) is copied and used
 * in error messages. */
inf_status tok_new(tok_kind kind, int n_vocab, const char *source, tok_tokenizer **out,
                   inf_error *err);
/* Sets token `id` (text as the vocabulary spells it, len bytes). */
inf_status tok_set_token(tok_tokenizer *t, int32_t id, const char *text, size_t len, float score,
                         tok_type type, inf_error *err);
/* TOK_KIND_BPE: a merge "a b" of rank = number of merges added before. Call
 * after all tokens are set. A merge naming an unknown token is skipped. */
inf_status tok_add_merge(tok_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                         inf_error *err);
/* Appends a pre-split regex (PCRE2 syntax, UTF + UCP); regexes apply in
 * order, each splitting the pieces of the previous one (matches and the gaps
 * between them both become pieces). */
inf_status tok_add_split(tok_tokenizer *t, const char *pattern, inf_error *err);
typedef struct {
    int32_t bos, eos, eot, eom, unk, pad; /* -1 when none */
    bool add_bos;
    bool add_space_prefix; /* SPM: prepend ' ' to text at the start / after a special token */
    bool escape_spaces;    /* SPM: spaces are spelled '▁' in the vocabulary */
    bool ignore_merges;    /* BPE: a pre-split piece that is a token is emitted whole */
} tok_config;
void tok_config_default(tok_config *c);
/* Validates the ids, builds the lookup tables and freezes t. */
inf_status tok_finish(tok_tokenizer *t, const tok_config *c, inf_error *err);

/* Pre-split patterns by name. */
#define TOK_RE_GPT2 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define TOK_RE_LLAMA3                                                                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#endif
