/* placeholder, being written */
typedef int inf_placeholder_tok_load_t;
