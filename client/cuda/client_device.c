/* client_device.c — the part of the CUDA client path every build has: the
 * --device choice, the generation-loop hooks, and (without CUDA) stubs that
 * say this build has none. The device code is client_cuda.c. */
#include <stdio.h>
#include <string.h>

#include "client_cuda.h"

#ifdef INF_HAVE_CUDA
#include <cuda_runtime_api.h>

bool cc_built(void) { return true; }

int cc_device_count(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why && cap) snprintf(why, cap, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        (void)cudaGetLastError(); /* a later call must not inherit it */
        return 0;
    }
    if (n == 0 && why && cap) snprintf(why, cap, "no CUDA device found");
    return n;
}
#else
#define NO_CUDA "this build has no CUDA (nvcc was not found when it was built)"

bool cc_built(void) { return false; }

int cc_device_count(char *why, size_t cap) {
    if (why && cap) snprintf(why, cap, NO_CUDA);
    return 0;
}

inf_status cc_open(const inf_model *m, const float *q, inf_cc **out, inf_error *err) {
    (void)m;
    (void)q;
    *out = NULL;
    return inf_fail(err, INF_E_UNSUPPORTED, "--device cuda: " NO_CUDA);
}
inf_status cc_open_rot(const inf_model *m, rot_ctx *rot, inf_cc **out, inf_error *err) {
    (void)rot;
    return cc_open(m, NULL, out, err);
}
void cc_close(inf_cc *c) { (void)c; }
const char *cc_describe(const inf_cc *c) {
    (void)c;
    return "no CUDA";
}
size_t cc_weight_bytes(const inf_cc *c) {
    (void)c;
    return 0;
}
bool cc_has_rotation(const inf_cc *c) {
    (void)c;
    return false;
}
inf_status cc_embed(inf_cc *c, const int32_t *ids, int n, bool rotate, float *x, inf_error *err) {
    (void)c, (void)ids, (void)n, (void)rotate, (void)x;
    return inf_fail(err, INF_E_UNSUPPORTED, NO_CUDA);
}
inf_status cc_logits(inf_cc *c, const float *x, bool unrotate, float *logits, inf_error *err) {
    (void)c, (void)x, (void)unrotate, (void)logits;
    return inf_fail(err, INF_E_UNSUPPORTED, NO_CUDA);
}
inf_status cc_next(inf_cc *c, const float *x, bool unrotate, inf_sampler *s, int32_t *id, inf_error *err) {
    (void)c, (void)x, (void)unrotate, (void)s, (void)id;
    return inf_fail(err, INF_E_UNSUPPORTED, NO_CUDA);
}
#endif

inf_status cc_choose(const char *device, const char *opt, bool *use_cuda, inf_error *err) {
    *use_cuda = false;
    if (!device || !*device || !strcmp(device, "auto")) {
        *use_cuda = cc_built() && cc_device_count(NULL, 0) > 0;
        return INF_OK;
    }
    if (!strcmp(device, "cpu")) return INF_OK;
    if (strcmp(device, "cuda"))
        return inf_fail(err, INF_E_ARG, "%s '%s': unknown device (expected cpu, cuda or auto)", opt, device);
    char why[160];
    if (!cc_built())
        return inf_fail(err, INF_E_UNSUPPORTED,
                        "%s cuda: this build has no CUDA (nvcc was not found when it was built); use %s cpu or auto",
                        opt, opt);
    if (cc_device_count(why, sizeof why) <= 0)
        return inf_fail(err, INF_E_DEVICE, "%s cuda: no usable CUDA GPU: %s (use %s cpu or auto to run on the CPU)",
                        opt, why, opt);
    *use_cuda = true;
    return INF_OK;
}

inf_status cc_gen_embed(void *ctx, const int32_t *ids, int n, float *x, inf_error *err) {
    cc_gen *g = ctx;
    return cc_embed(g->cc, ids, n, g->rotate, x, err);
}

inf_status cc_gen_next(void *ctx, const float *x, inf_sampler *s, int32_t *id, inf_error *err) {
    cc_gen *g = ctx;
    return cc_next(g->cc, x, g->rotate, s, id, err);
}
