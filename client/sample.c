/* placeholder, being written */
typedef int inf_placeholder_sample_t;
