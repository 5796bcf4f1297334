/* fake_handler.c — a test double for worker/handler.c, so the HTTP front
 * door and the worker binary can be tested without a model.
 *
 * Input {"echo": X, "sleep_ms": N, "fail": "code", "status": S, "big": B}:
 *   sleeps N ms, then answers {"echo": X} with 200; with "fail", answers
 *   {"error": {"code": "code", "message": "fake failure"}} with status S
 *   (default 400); with "big", the reply also carries "pad": B bytes of 'a'.
 * Input that is not a JSON object: 400 {"error":{"code":"bad_input",...}}.
 * Env FAKE_HANDLER_LOAD_MS makes inf_handler_create sleep (a slow model
 * load); FAKE_HANDLER_FAIL_LOAD makes it fail.
 * fake_handler_calls() counts inf_handle calls in this process.
 */
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handler.h"

struct inf_handler {
    int unused;
};

static atomic_int n_calls;

int fake_handler_calls(void);
int fake_handler_calls(void) { return atomic_load(&n_calls); }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

inf_status inf_handler_create(const char *dir, inf_handler **out, inf_error *err)
{
    *out = NULL;
    const char *ms = getenv("FAKE_HANDLER_LOAD_MS");
    if (ms)
        sleep_ms(atol(ms));
    if (getenv("FAKE_HANDLER_FAIL_LOAD"))
        return inf_fail(err, INF_E_NOTFOUND, "%s: fake load failure", dir ? dir : "(none)");
    if (!(*out = calloc(1, sizeof **out)))
        return inf_fail(err, INF_E_NOMEM, "out of memory");
    return INF_OK;
}

void inf_handler_destroy(inf_handler *h) { free(h); }

static char *error_reply(const char *code, int status, int *http_status)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", "fake failure");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    *http_status = status;
    return s;
}

char *inf_handle(inf_handler *h, const char *input, size_t len, int *http_status)
{
    atomic_fetch_add(&n_calls, 1);
    cJSON *in = cJSON_ParseWithLength(input, len);
    if (!cJSON_IsObject(in)) {
        cJSON_Delete(in);
        return error_reply("bad_input", 400, http_status);
    }
    cJSON *ms = cJSON_GetObjectItemCaseSensitive(in, "sleep_ms");
    if (cJSON_IsNumber(ms) && ms->valuedouble > 0)
        sleep_ms((long)ms->valuedouble);
    cJSON *fail = cJSON_GetObjectItemCaseSensitive(in, "fail");
    if (cJSON_IsString(fail)) {
        cJSON *st = cJSON_GetObjectItemCaseSensitive(in, "status");
        char *r = error_reply(fail->valuestring, cJSON_IsNumber(st) ? st->valueint : 400,
                              http_status);
        cJSON_Delete(in);
        return r;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *echo = cJSON_GetObjectItemCaseSensitive(in, "echo");
    cJSON_AddItemToObject(out, "echo", echo ? cJSON_Duplicate(echo, 1) : cJSON_CreateNull());
    cJSON *big = cJSON_GetObjectItemCaseSensitive(in, "big");
    if (cJSON_IsNumber(big) && big->valuedouble > 0) {
        size_t n = (size_t)big->valuedouble;
        char *pad = malloc(n + 1);
        memset(pad, 'a', n);
        pad[n] = '\0';
        cJSON_AddStringToObject(out, "pad", pad);
        free(pad);
    }
    char *s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    cJSON_Delete(in);
    *http_status = 200;
    return s;
}
