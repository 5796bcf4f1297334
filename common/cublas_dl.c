/* cublas_dl.c — cuBLAS through dlopen (contract in cublas_dl.h). */
#include "cublas_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)
/* The soname of the cuBLAS whose headers this is compiled against. */
#define CUBLAS_SONAME "libcublas.so." STR(CUBLAS_VER_MAJOR)

/* Each field has the type of cuBLAS's own declaration: the assignment is
 * type-checked (an incompatible pointer is a constraint violation, an error
 * under -Werror) but, inside sizeof, never evaluated, so it references no
 * cuBLAS symbol at link time. */
#define SAME_TYPE(field, fn)                                                                                  \
    _Static_assert(sizeof(((cublas_dl_api *)0)->field = &fn) == sizeof(((cublas_dl_api *)0)->field),      \
                   "cublas_dl_api." #field " is not the type of " #fn)
SAME_TYPE(create, cublasCreate_v2);
SAME_TYPE(destroy, cublasDestroy_v2);
SAME_TYPE(set_stream, cublasSetStream_v2);
SAME_TYPE(set_math_mode, cublasSetMathMode);
SAME_TYPE(sgemv, cublasSgemv_v2);
SAME_TYPE(sgemm, cublasSgemm_v2);
SAME_TYPE(gemm_ex, cublasGemmEx);
SAME_TYPE(get_status_string, cublasGetStatusString);
/* dlsym returns a void *; POSIX guarantees it holds a function pointer. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers do not fit a void *");

static const struct {
    const char *name;
    size_t off;
    int required;
} syms[] = {
    {"cublasCreate_v2", offsetof(cublas_dl_api, create), 1},
    {"cublasDestroy_v2", offsetof(cublas_dl_api, destroy), 1},
    {"cublasSetStream_v2", offsetof(cublas_dl_api, set_stream), 1},
    {"cublasSetMathMode", offsetof(cublas_dl_api, set_math_mode), 1},
    {"cublasSgemv_v2", offsetof(cublas_dl_api, sgemv), 1},
    {"cublasSgemm_v2", offsetof(cublas_dl_api, sgemm), 1},
    {"cublasGemmEx", offsetof(cublas_dl_api, gemm_ex), 1},
    {"cublasGetStatusString", offsetof(cublas_dl_api, get_status_string), 0},
};

/* Written once, inside pthread_once; read-only afterwards. */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static cublas_dl_api api;
static int loaded;
static char why[INF_ERRMSG_MAX];

/* Appends to why at *len (truncating at its end; *len stays inside it). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void why_add(size_t *len, const char *fmt, ...) {
    if (*len >= sizeof why - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(why + *len, sizeof why - *len, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n < sizeof why - *len ? (size_t)n : sizeof why - 1 - *len;
}

static void load(void) {
    static const char *names[] = {
        CUBLAS_SONAME,
#ifdef INF_CUDA_LIBDIR
        INF_CUDA_LIBDIR "/" CUBLAS_SONAME,
#endif
        "libcublas.so",
    };
    size_t len = 0;
    why_add(&len, "cannot load cuBLAS (%s; put its directory on LD_LIBRARY_PATH)", CUBLAS_SONAME);
    void *lib = NULL;
    const char *name = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            name = names[i];
            break;
        }
        /* glibc's dlerror() starts with the name given: keep only the reason */
        const char *e = dlerror();
        if (!e) e = "unknown dlopen error";
        size_t nl = strlen(names[i]);
        if (!strncmp(e, names[i], nl) && !strncmp(e + nl, ": ", 2)) e += nl + 2;
        why_add(&len, i ? "; %s: %s" : ", tried %s: %s", names[i], e);
    }
    if (!lib) return;
    cublas_dl_api t = {0};
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        (void)dlerror();
        void *p = dlsym(lib, syms[i].name);
        if (!p && syms[i].required) {
            const char *e = dlerror();
            len = 0;
            why_add(&len, "cuBLAS: %s lacks %s (%s; built for %s)", name, syms[i].name,
                    e ? e : "dlsym returned NULL", CUBLAS_SONAME);
            return; /* not unloaded: cublas_dl.h */
        }
        memcpy((char *)&t + syms[i].off, &p, sizeof p);
    }
    api = t;
    loaded = 1;
}

inf_status cublas_dl_load(const cublas_dl_api **out, inf_error *err) {
    pthread_once(&once, load);
    if (!loaded) {
        *out = NULL;
        return inf_fail(err, INF_E_DEVICE, "%s", why);
    }
    *out = &api;
    return INF_OK;
}

const char *cublas_dl_status_string(cublasStatus_t status) {
    pthread_once(&once, load);
    const char *s = loaded && api.get_status_string ? api.get_status_string(status) : NULL;
    return s ? s : "cuBLAS error";
}
