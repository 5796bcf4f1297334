/* placeholder, being written */
typedef int inf_placeholder_chat_t;
