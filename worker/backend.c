/* backend.c — picks and wraps a backend (contract in backend.h). */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef INF_HAVE_CUDA
#include "cuda_backend.h"
#endif

typedef enum { BK_CPU, BK_CUDA } bk_kind;

struct inf_backend {
    bk_kind kind;
    const inf_model *model;
    char desc[256];
#ifdef INF_HAVE_CUDA
    cuda_backend *cuda;
#endif
};

void inf_backend_forget(inf_backend *b, const char *tag) {
#ifdef INF_HAVE_CUDA
    if (b->kind == BK_CUDA) cuda_forget(b->cuda, tag);
#else
    (void)b;
    (void)tag;
#endif
}

bool inf_backend_has_cuda(void) {
#ifdef INF_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

int inf_backend_cuda_devices(char *why, size_t cap) {
#ifdef INF_HAVE_CUDA
    return cuda_device_count(why, cap);
#else
    if (why && cap) snprintf(why, cap, "this build has no CUDA backend (nvcc was not found when it was built)");
    return 0;
#endif
}

static inf_status open_cpu(const inf_model *m, inf_backend **out, const char *note, inf_error *err) {
    inf_backend *b = calloc(1, sizeof *b);
    if (!b) return inf_fail(err, INF_E_NOMEM, "backend: out of memory");
    b->kind = BK_CPU;
    b->model = m;
    snprintf(b->desc, sizeof b->desc, "cpu%s%s", note ? ": " : "", note ? note : "");
    *out = b;
    return INF_OK;
}

#ifdef INF_HAVE_CUDA
static inf_status open_cuda(const inf_model *m, inf_backend **out, inf_error *err) {
    inf_backend *b = calloc(1, sizeof *b);
    if (!b) return inf_fail(err, INF_E_NOMEM, "backend: out of memory");
    b->kind = BK_CUDA;
    b->model = m;
    inf_status st = cuda_open(m, &b->cuda, err);
    if (st) {
        free(b);
        return st;
    }
    snprintf(b->desc, sizeof b->desc, "%s", cuda_describe(b->cuda));
    *out = b;
    return INF_OK;
}
#endif

inf_status inf_backend_open(const inf_model *m, const char *device, inf_backend **out, inf_error *err) {
    *out = NULL;
    const char *what = device ? "device" : "INFEMERAL_DEVICE";
    if (!device) device = getenv("INFEMERAL_DEVICE");
    if (!device || !*device) device = "auto";
    if (!strcmp(device, "cpu")) return open_cpu(m, out, NULL, err);
    bool want_cuda = !strcmp(device, "cuda");
    if (!want_cuda && strcmp(device, "auto"))
        return inf_fail(err, INF_E_ARG, "%s=%s: unknown device (expected cpu, cuda or auto)", what, device);
#ifdef INF_HAVE_CUDA
    char why[300] = "";
    int ndev = cuda_device_count(why, sizeof why);
    if (ndev <= 0) {
        if (want_cuda)
            return inf_fail(err, INF_E_DEVICE,
                            "%s=cuda but no CUDA GPU is usable: %s (set INFEMERAL_DEVICE=cpu or auto to run on the CPU)",
                            what, why);
        return open_cpu(m, out, "no CUDA GPU", err);
    }
    inf_status st = open_cuda(m, out, err);
    if (st == INF_E_UNSUPPORTED && !want_cuda) {
        fprintf(stderr, "infemeral: the CUDA backend cannot run this model (%s); using the CPU\n", err->msg);
        return open_cpu(m, out, "the CUDA backend does not run this model", err);
    }
    if (st && want_cuda) return inf_wrap(err, st, "%s=cuda", what);
    return st;
#else
    if (want_cuda)
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s=cuda but this build has no CUDA backend (nvcc was not found when it was built); "
                        "set INFEMERAL_DEVICE=cpu or auto",
                        what);
    return open_cpu(m, out, NULL, err);
#endif
}

void inf_backend_close(inf_backend *b) {
    if (!b) return;
#ifdef INF_HAVE_CUDA
    if (b->kind == BK_CUDA) cuda_close(b->cuda);
#endif
    free(b);
}

const char *inf_backend_name(const inf_backend *b) { return b->kind == BK_CUDA ? "cuda" : "cpu"; }

const char *inf_backend_describe(const inf_backend *b) { return b->desc; }

inf_status inf_backend_forward(inf_backend *b, inf_kv *kv, float *x, int n, int pos, inf_error *err) {
#ifdef INF_HAVE_CUDA
    if (b->kind == BK_CUDA) return cuda_forward(b->cuda, kv, x, n, pos, err);
#endif
    return cpu_forward(b->model, kv, x, n, pos, err);
}

void inf_backend_get_stats(const inf_backend *b, inf_backend_stats *out) {
    memset(out, 0, sizeof *out);
#ifdef INF_HAVE_CUDA
    if (b->kind == BK_CUDA) cuda_get_stats(b->cuda, out);
#else
    (void)b;
#endif
}
