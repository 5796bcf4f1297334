/* chat.c — chat template rendering (ChatML as SmolLM2 uses it, Llama 3,
 * Llama 2). Plain string building; see chat.h for the exact layouts. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#define SMOLLM2_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = (b->cap + n + 1) * 2;
        char *p = realloc(b->s, c);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_add(sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static void sb_add_trimmed(sbuf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n && is_ws(s[i])) i++;
    while (n > i && is_ws(s[n - 1])) n--;
    sb_addn(b, s + i, n - i);
}

chat_format chat_detect(const tok_tokenizer *t, const char *template_text) {
    if (template_text) {
        if (strstr(template_text, "<|im_start|>")) return CHAT_CHATML;
        if (strstr(template_text, "<|start_header_id|>")) return CHAT_LLAMA3;
        if (strstr(template_text, "[INST]")) return CHAT_LLAMA2;
    }
    if (t) {
        if (tok_find(t, "<|im_start|>") >= 0) return CHAT_CHATML;
        if (tok_find(t, "<|start_header_id|>") >= 0) return CHAT_LLAMA3;
    }
    return CHAT_NONE;
}

const char *chat_format_name(chat_format f) {
    switch (f) {
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA3: return "llama3";
    case CHAT_LLAMA2: return "llama2";
    default: return "none";
    }
}

static void chatml_msg(sbuf *b, const char *role, const char *content) {
    sb_add(b, "<|im_start|>");
    sb_add(b, role);
    sb_add(b, "\n");
    sb_add(b, content);
    sb_add(b, "<|im_end|>\n");
}

static void llama3_msg(sbuf *b, const char *role, const char *content) {
    sb_add(b, "<|start_header_id|>");
    sb_add(b, role);
    sb_add(b, "<|end_header_id|>\n\n");
    sb_add_trimmed(b, content);
    sb_add(b, "<|eot_id|>");
}

static inf_status render_llama2(sbuf *b, const chat_msg *msgs, size_t n, const char *default_system,
                                inf_error *err) {
    size_t i = 0;
    const char *sys = default_system && default_system[0] ? default_system : NULL;
    if (n > 0 && strcmp(msgs[0].role, "system") == 0) {
        sys = msgs[0].content;
        i = 1;
    }
    bool first = true;
    for (; i < n; i++) {
        bool user = strcmp(msgs[i].role, "user") == 0;
        bool want_user = ((i - (n > 0 && strcmp(msgs[0].role, "system") == 0 ? 1 : 0)) % 2) == 0;
        if (user != want_user || (!user && strcmp(msgs[i].role, "assistant") != 0))
            return inf_fail(err, INF_E_ARG,
                            "chat: message %zu has role \"%s\"; Llama 2 chats alternate user/assistant after an "
                            "optional system message",
                            i, msgs[i].role);
        if (user) {
            sb_add(b, "<s>[INST] ");
            if (first && sys) {
                sb_add(b, "<<SYS>>\n");
                sb_add(b, sys);
                sb_add(b, "\n<</SYS>>\n\n");
            }
            first = false;
            sb_add(b, msgs[i].content);
            sb_add(b, " [/INST]");
        } else {
            sb_add(b, " ");
            sb_add(b, msgs[i].content);
            sb_add(b, " </s>");
        }
    }
    return INF_OK;
}

inf_status chat_render(chat_format f, const chat_msg *msgs, size_t n, bool add_generation_prompt,
                       const char *default_system, char **out, inf_error *err) {
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return inf_fail(err, INF_E_ARG, "chat: message %zu has a NULL %s", i, msgs[i].role ? "content" : "role");
    sbuf b = {0};
    sb_add(&b, ""); /* never return NULL */
    bool has_sys = n > 0 && strcmp(msgs[0].role, "system") == 0;
    inf_status st = INF_OK;
    switch (f) {
    case CHAT_CHATML: {
        const char *sys = default_system ? default_system : SMOLLM2_SYSTEM;
        if (!has_sys && sys[0]) chatml_msg(&b, "system", sys);
        for (size_t i = 0; i < n; i++) chatml_msg(&b, msgs[i].role, msgs[i].content);
        if (add_generation_prompt) sb_add(&b, "<|im_start|>assistant\n");
        break;
    }
    case CHAT_LLAMA3:
        sb_add(&b, "<|begin_of_text|>");
        if (!has_sys && default_system && default_system[0]) llama3_msg(&b, "system", default_system);
        for (size_t i = 0; i < n; i++) llama3_msg(&b, msgs[i].role, msgs[i].content);
        if (add_generation_prompt) sb_add(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_LLAMA2:
        st = render_llama2(&b, msgs, n, default_system, err);
        break;
    default:
        st = inf_fail(err, INF_E_ARG, "chat: format %d has no template (the model has no known chat format)", (int)f);
    }
    if (st == INF_OK && b.oom) st = inf_fail(err, INF_E_NOMEM, "chat: out of memory rendering %zu messages", n);
    if (st) {
        free(b.s);
        return st;
    }
    *out = b.s;
    return INF_OK;
}
