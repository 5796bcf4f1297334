/* PLACEHOLDER: replaced by the readers work. */
#include "model.h"
inf_status inf_model_load_hf(const char *path, inf_model **out, inf_error *err) {
    *out = NULL;
    return inf_fail(err, INF_E_UNSUPPORTED, "%s: safetensors checkpoints are not supported yet", path);
}
