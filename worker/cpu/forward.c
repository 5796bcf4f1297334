/* placeholder, being written */
typedef int inf_placeholder_forward_t;
