/* If this fails, users chatting with SmolLM2 or a Llama 3 model send the
 * model a prompt laid out differently from its training template (missing or
 * doubled BOS, wrong markers or newlines), and replies degrade. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "testutil.h"

Test(chat, chatml_inserts_smollm2_default_system) {
    chat_msg m[] = {{"user", "Hi there"}};
    char *out = NULL;
    inf_error err = {{0}};
    cr_assert_eq(chat_render(CHAT_CHATML, m, 1, true, NULL, &out, &err), INF_OK, "%s", err.msg);
    cr_expect_str_eq(out,
                     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                     "Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
    free(out);
}

Test(chat, chatml_keeps_given_system_and_history) {
    chat_msg m[] = {{"system", "Be brief."}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}};
    char *out = NULL;
    cr_assert_eq(chat_render(CHAT_CHATML, m, 4, false, NULL, &out, NULL), INF_OK);
    cr_expect_str_eq(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                          "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n");
    free(out);
    /* "" as default system: no system message at all; custom default used as given */
    cr_assert_eq(chat_render(CHAT_CHATML, m + 1, 1, true, "", &out, NULL), INF_OK);
    cr_expect_str_eq(out, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    cr_assert_eq(chat_render(CHAT_CHATML, m + 1, 1, true, "S", &out, NULL), INF_OK);
    cr_expect_str_eq(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    free(out);
}

Test(chat, llama3_layout) {
    chat_msg m[] = {{"system", "You are terse."}, {"user", "  Hello?\n"}, {"assistant", "Hi."}, {"user", "Bye"}};
    char *out = NULL;
    cr_assert_eq(chat_render(CHAT_LLAMA3, m, 4, true, NULL, &out, NULL), INF_OK);
    cr_expect_str_eq(out,
                     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nHello?<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(out);
    cr_assert_eq(chat_render(CHAT_LLAMA3, m + 3, 1, false, NULL, &out, NULL), INF_OK);
    cr_expect_str_eq(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>");
    free(out);
}

Test(chat, llama2_layout) {
    chat_msg m[] = {{"system", "SYS"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}};
    char *out = NULL;
    cr_assert_eq(chat_render(CHAT_LLAMA2, m, 4, true, NULL, &out, NULL), INF_OK);
    cr_expect_str_eq(out, "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]");
    free(out);
    chat_msg bad[] = {{"assistant", "x"}};
    inf_error err = {{0}};
    cr_expect_neq(chat_render(CHAT_LLAMA2, bad, 1, true, NULL, &out, &err), INF_OK);
    cr_expect(strstr(err.msg, "assistant") != NULL, "%s", err.msg);
}

Test(chat, errors) {
    chat_msg m[] = {{"user", NULL}};
    char *out = NULL;
    inf_error err = {{0}};
    cr_expect_neq(chat_render(CHAT_CHATML, m, 1, true, NULL, &out, &err), INF_OK);
    cr_expect_null(out);
    chat_msg ok[] = {{"user", "x"}};
    cr_expect_neq(chat_render(CHAT_NONE, ok, 1, true, NULL, &out, &err), INF_OK);
    cr_expect(strstr(err.msg, "template") != NULL, "%s", err.msg);
}

Test(chat, detect) {
    cr_expect_eq(chat_detect(NULL, "{{'<|im_start|>' + message['role']}}"), CHAT_CHATML);
    cr_expect_eq(chat_detect(NULL, "{{ '<|start_header_id|>' }}"), CHAT_LLAMA3);
    cr_expect_eq(chat_detect(NULL, "{{ bos_token + '[INST] ' }}"), CHAT_LLAMA2);
    cr_expect_eq(chat_detect(NULL, NULL), CHAT_NONE);
    char p[1024];
    tok_tokenizer *t = NULL;
    cr_assert_eq(tok_load_tiktoken(tu_asset(p, sizeof p, "llama3-tokenizer/tokenizer.model"), &t, NULL), INF_OK);
    cr_expect_eq(chat_detect(t, NULL), CHAT_LLAMA3);
    tok_free(t);
    cr_assert_eq(tok_load_llama2c(tu_asset(p, sizeof p, "stories260K/tok512.bin"), 512, &t, NULL), INF_OK);
    cr_expect_eq(chat_detect(t, NULL), CHAT_NONE);
    tok_free(t);
}

/* The rendered ChatML prompt encodes to what llama.cpp gives for the same
 * text: BOS is not added (SmolLM2 has none) and markers are single ids. */
Test(chat, smollm2_chatml_encodes_like_llama_cpp) {
    const char *path = tu_smollm2();
    if (!path) {
        cr_skip_test("SmolLM2 GGUF not found: set INF_SMOLLM2 to SmolLM2-135M-Instruct.Q4_1.gguf");
        return;
    }
    gguf_file *g = NULL;
    inf_error err = {{0}};
    cr_assert_eq(gguf_open(path, &g, &err), INF_OK, "%s", err.msg);
    tok_tokenizer *t = NULL;
    cr_assert_eq(tok_load_gguf(g, &t, &err), INF_OK, "%s", err.msg);
    gguf_str tmpl;
    cr_assert_eq(gguf_get_str(g, "tokenizer.chat_template", &tmpl, &err), INF_OK, "%s", err.msg);
    char *tt = strndup(tmpl.ptr, tmpl.len);
    cr_expect_eq(chat_detect(t, tt), CHAT_CHATML);
    free(tt);
    gguf_close(g);
    chat_msg m[] = {{"user", "What is 2+2?"}};
    char *text = NULL;
    cr_assert_eq(chat_render(CHAT_CHATML, m, 1, true, NULL, &text, &err), INF_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(tok_encode(t, text, strlen(text), false, true, &ids, &n, &err), INF_OK);
    /* from llama.cpp via llama-cpp-python 0.3.16 (tokenize(add_bos=False, special=True)) */
    static const int32_t want[] = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198};
    size_t nw = sizeof want / sizeof want[0];
    cr_expect_eq(n, nw, "got %zu ids, want %zu", n, nw);
    cr_expect(n == nw && memcmp(ids, want, n * sizeof *ids) == 0, "ids differ from llama.cpp");
    free(ids);
    free(text);
    tok_free(t);
}
