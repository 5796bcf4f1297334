/* placeholder, being written */
typedef int inf_placeholder_generate_t;
