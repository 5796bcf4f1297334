/* placeholder, being written */
typedef int inf_placeholder_embed_t;
