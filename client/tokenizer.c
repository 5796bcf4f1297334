/* placeholder, being written */
typedef int inf_placeholder_tokenizer_t;
