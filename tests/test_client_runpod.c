/* test_client_runpod.c — `infemeral generate --runpod ENDPOINT_ID` end to
 * end: the CLI -> a fake RunPod API (RUNPOD_ENDPOINT_BASE_URL) -> the RunPod
 * queue loop (worker/runpod.c) with the real request handler and a tiny
 * prepared model -> the fake API -> the CLI, over loopback HTTP.
 *
 * If these fail, a user with a RunPod endpoint gets different text than a
 * local run, the client gives up when /runsync answers before the job is
 * done, or a wrong key, a wrong endpoint id, a failed or timed-out job ends
 * in a hang or a message that does not say what went wrong.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "fake_runpod.h"
#include "gguf_writer.h"
#include "handler.h"
#include "prep.h"
#include "runpod.h"
#include "testutil.h"

static char Dir[512], Client[700], Server[700], Pub[700];
static fake_rp *F;
static inf_handler *H;
static rp_worker *W;
static pthread_t Tid;

static char *handle(void *ctx, const char *in, size_t len, int *st) { return inf_handle(ctx, in, len, st); }

static void *run_thread(void *arg)
{
    inf_error err = {{0}};
    rp_run(arg, &err);
    return NULL;
}

/* A tiny prepared model, a worker key, the fake API and a queue worker. */
static void start(const fake_rp_config *fc)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cr_assert_not_null(tu_tmpdir(Dir, sizeof Dir));
    char model[600], out[600], keys[600], kv[600];
    snprintf(model, sizeof model, "%s/tiny.gguf", Dir);
    gw_tiny_opts o;
    gw_tiny_defaults(&o);
    cr_assert_eq(gw_write_tiny_llama(model, &o), 0);
    snprintf(out, sizeof out, "%s/prep", Dir);
    prep_opts po = {.model = model, .out = out, .weights = PREP_F32, .rotate = true};
    inf_error err = {{0}};
    cr_assert_eq(prep_run(&po, &err), INF_OK, "%s", err.msg);
    snprintf(Client, sizeof Client, "%s/client", out);
    snprintf(Server, sizeof Server, "%s/server", out);
    snprintf(keys, sizeof keys, "%s/keys", Dir);
    keys_pair kp;
    mkdir(keys, 0700);
    cr_assert_eq(keys_generate(&kp, &err), INF_OK);
    cr_assert_eq(keys_write(keys, &kp, &err), INF_OK, "%s", err.msg);
    keys_wipe(&kp);
    snprintf(Pub, sizeof Pub, "%s/worker.pub", keys);
    char keyfile[700];
    snprintf(keyfile, sizeof keyfile, "%s/worker.key", keys);
    setenv("INFEMERAL_WORKER_KEY_FILE", keyfile, 1);
    unsetenv("INFEMERAL_WORKER_KEY");
    snprintf(kv, sizeof kv, "%s/kv", Dir);
    setenv("INFEMERAL_KV_DIR", kv, 1);
    cr_assert_eq(inf_handler_create(Server, &H, &err), INF_OK, "%s", err.msg);

    F = fake_rp_start(fc);
    cr_assert_not_null(F);
    static char get[256], post[256], ping[256];
    fake_rp_templates(F, 0, get, post, ping, sizeof get);
    rp_config c;
    rp_config_defaults(&c);
    c.get_job = get;
    c.post_output = post;
    c.ping = ping;
    c.api_key = "wk";
    c.pod_id = "pod1";
    c.ping_interval_ms = 500;
    c.quiet = 1;
    cr_assert_eq(rp_create(&c, handle, H, &W, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(pthread_create(&Tid, NULL, run_thread, W), 0);
}

static void stop(void)
{
    if (W) {
        rp_stop(W);
        pthread_join(Tid, NULL);
        rp_destroy(W);
    }
    fake_rp_stop(F);
    inf_handler_destroy(H);
    W = NULL;
    F = NULL;
    H = NULL;
}

TestSuite(client_runpod, .fini = stop, .timeout = 240);

/* Runs the infemeral CLI; returns its exit code, stdout and stderr. */
static int cli(const char *const *args, const char *base_url, const char *key, char *out, size_t ocap,
               char *errs, size_t ecap)
{
    const char *exe = getenv("INF_CLI");
    cr_assert_not_null(exe, "INF_CLI is not set (run through meson test)");
    char of[700], ef[700];
    snprintf(of, sizeof of, "%s/cli.out", Dir);
    snprintf(ef, sizeof ef, "%s/cli.err", Dir);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int o = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0600), e = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, 1);
        dup2(e, 2);
        if (base_url)
            setenv("RUNPOD_ENDPOINT_BASE_URL", base_url, 1);
        if (key)
            setenv("RUNPOD_API_KEY", key, 1);
        else
            unsetenv("RUNPOD_API_KEY");
        unsetenv("INFEMERAL_API_KEY");
        char *argv[32] = {(char *)exe};
        for (int i = 0; args[i] && i < 30; i++)
            argv[i + 1] = (char *)args[i];
        execv(exe, argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    FILE *f = fopen(of, "r");
    size_t n = f ? fread(out, 1, ocap - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    f = fopen(ef, "r");
    n = f ? fread(errs, 1, ecap - 1, f) : 0;
    errs[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char Base[128];

static int generate(const char *endpoint, const char *key, char *out, size_t ocap, char *errs, size_t ecap)
{
    snprintf(Base, sizeof Base, "http://127.0.0.1:%u/v2", fake_rp_port(F));
    const char *args[] = {"generate", "--client-bundle", Client, "--runpod", endpoint, "--worker-pub", Pub,
                          "--prompt", "Hello there", "--temperature", "0", "--max-tokens", "12",
                          "--wire-dtype", "f32", NULL};
    return cli(args, Base, key, out, ocap, errs, ecap);
}

Test(client_runpod, runsync_in_progress_then_status_completed_gives_the_local_text)
{
    fake_rp_config fc = {.client_key = "ck", .runsync_wait_ms = 0};
    start(&fc);
    static char want[8192], got[8192], errs[8192];
    const char *local[] = {"run", "--client-bundle", Client, "--server-bundle", Server, "--prompt",
                           "Hello there", "--temperature", "0", "--max-tokens", "12", NULL};
    cr_assert_eq(cli(local, NULL, NULL, want, sizeof want, errs, sizeof errs), 0, "local run: %s", errs);
    cr_assert_gt(strlen(want), 0, "the local run printed nothing");
    int rc = generate("ep1", "ck", got, sizeof got, errs, sizeof errs);
    cr_assert_eq(rc, 0, "generate --runpod failed: %s", errs);
    cr_expect_str_eq(got, want, "the text through RunPod differs from the local run");
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_geq(n.results, 12, "one job per step (prompt + tokens): %d", n.results);
    char *v = fake_rp_violations(F);
    cr_expect_str_empty(v, "%s", v);
    free(v);
}

Test(client_runpod, runsync_that_waits_for_the_result_works_too)
{
    fake_rp_config fc = {.client_key = "ck", .runsync_wait_ms = 5000};
    start(&fc);
    static char got[8192], errs[8192];
    cr_assert_eq(generate("ep1", "ck", got, sizeof got, errs, sizeof errs), 0, "%s", errs);
    cr_expect_gt(strlen(got), 0);
}

Test(client_runpod, a_wrong_api_key_is_a_clear_401)
{
    fake_rp_config fc = {.client_key = "ck"};
    start(&fc);
    static char got[8192], errs[8192];
    int rc = generate("ep1", "wrong", got, sizeof got, errs, sizeof errs);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(errs, "401") && strstr(errs, "API key"), "stderr: %s", errs);
}

Test(client_runpod, an_unknown_endpoint_id_is_a_clear_404)
{
    fake_rp_config fc = {.client_key = "ck"};
    start(&fc);
    static char got[8192], errs[8192];
    int rc = generate("no-such-endpoint", "ck", got, sizeof got, errs, sizeof errs);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(errs, "404") && strstr(errs, "endpoint"), "stderr: %s", errs);
}

Test(client_runpod, a_failed_job_reports_runpods_error)
{
    fake_rp_config fc = {.client_key = "ck", .force_status = "FAILED"};
    start(&fc);
    static char got[8192], errs[8192];
    int rc = generate("ep1", "ck", got, sizeof got, errs, sizeof errs);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(errs, "the job failed on the worker") != NULL, "stderr: %s", errs);
}

Test(client_runpod, a_timed_out_job_is_reported_as_timed_out)
{
    fake_rp_config fc = {.client_key = "ck", .force_status = "TIMED_OUT"};
    start(&fc);
    static char got[8192], errs[8192];
    int rc = generate("ep1", "ck", got, sizeof got, errs, sizeof errs);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(errs, "TIMED_OUT") != NULL, "stderr: %s", errs);
}

Test(client_runpod, a_handler_error_reaches_the_user_with_its_code)
{
    /* the client pinned another worker key: the worker cannot open the
     * request and posts {"error": "auth: ..."}; RunPod marks the job FAILED */
    fake_rp_config fc = {.client_key = "ck"};
    start(&fc);
    char other[700];
    snprintf(other, sizeof other, "%s/other", Dir);
    keys_pair kp;
    inf_error err = {{0}};
    mkdir(other, 0700);
    cr_assert_eq(keys_generate(&kp, &err), INF_OK);
    cr_assert_eq(keys_write(other, &kp, &err), INF_OK);
    keys_wipe(&kp);
    snprintf(Pub, sizeof Pub, "%s/worker.pub", other);
    static char got[8192], errs[8192];
    int rc = generate("ep1", "ck", got, sizeof got, errs, sizeof errs);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(errs, "auth") != NULL, "stderr: %s", errs);
}
