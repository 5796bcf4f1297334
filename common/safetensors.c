/* PLACEHOLDER: replaced by the readers work. */
