/* placeholder, being written */
typedef int inf_placeholder_kv_t;
