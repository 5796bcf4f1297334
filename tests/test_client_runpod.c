/* test_client_runpod.c — `infemeral generate --runpod ENDPOINT_ID` end to
 * end: the CLI -> a fake RunPod API (RUNPOD_ENDPOINT_BASE_URL) -> the RunPod
 * queue loop (worker/runpod.c) with the real request handler and a tiny
 * prepared model -> the fake API -> the CLI, over loopback HTTP.
 *
 * If these fail, a user with a RunPod endpoint gets different text than a
 * local run, the client gives up when /runsync answers before the job is
 * done, a platform hiccup (a 5xx, a 429, a dropped connection, a lost reply,
 * a job handed out twice) ends a generation or changes its text, or a wrong
 * key, a wrong endpoint id, a failed or timed-out job ends in a hang or a
 * message that does not say what went wrong.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
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

/* The fault test's handler: the real one, with call number SlowCall made
 * slow. That call first notes the job the fake has out (the one it runs:
 * one job at a time), then waits until the worker's heartbeat has named
 * that job and the client has polled /status twice (capped at 5 s, so a
 * missing heartbeat fails the assertions below instead of hanging). */
static atomic_int Calls;
static int SlowCall;
static char SlowId[128];
static int SlowNamed, SlowPolled;

static char *slow_handle(void *ctx, const char *in, size_t len, int *st)
{
    if (atomic_fetch_add(&Calls, 1) + 1 == SlowCall) {
        char *out = fake_rp_out_ids(F);
        snprintf(SlowId, sizeof SlowId, "%s", out);
        free(out);
        for (int waited = 0; waited < 5000 && !(SlowNamed && SlowPolled); waited += 10) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            char *ids = fake_rp_ping_ids(F);
            for (char *line = ids, *nl; line && *line; line = nl ? nl + 1 : NULL) {
                nl = strchr(line, '\n');
                if (nl)
                    *nl = '\0';
                if (!strcmp(line, SlowId))
                    SlowNamed = 1;
            }
            free(ids);
            fake_rp_counts n;
            fake_rp_get_counts(F, &n);
            SlowPolled = n.status_polls >= 2;
        }
    }
    return inf_handle(ctx, in, len, st);
}

static void *run_thread(void *arg)
{
    inf_error err = {{0}};
    rp_run(arg, &err);
    return NULL;
}

/* A prepared model (stories260K when `stories`, else a tiny random one), a
 * worker key, the fake API and a queue worker (`fast`: short heartbeat,
 * back-off and retry pauses, and the slow handler above). */
static void start_with(const fake_rp_config *fc, int stories, int fast)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cr_assert_not_null(tu_tmpdir(Dir, sizeof Dir));
    char model[600], tok[600] = "", out[600], keys[600], kv[600];
    if (stories) {
        const char *assets = getenv("INF_ASSETS");
        cr_assert_not_null(assets, "INF_ASSETS is not set (run through meson test)");
        snprintf(model, sizeof model, "%s/stories260K/stories260K.bin", assets);
        snprintf(tok, sizeof tok, "%s/stories260K/tok512.bin", assets);
    } else {
        snprintf(model, sizeof model, "%s/tiny.gguf", Dir);
        gw_tiny_opts o;
        gw_tiny_defaults(&o);
        cr_assert_eq(gw_write_tiny_llama(model, &o), 0);
    }
    snprintf(out, sizeof out, "%s/prep", Dir);
    prep_opts po = {.model = model, .tokenizer = tok[0] ? tok : NULL, .out = out, .weights = PREP_F32,
                    .rotate = true};
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
    if (fast) {
        c.ping_interval_ms = 100;
        c.backoff_ms = 50;
        c.backoff_max_ms = 200;
        c.busy_wait_ms = 100;
        c.post_retry_ms = 20;
        c.take_timeout_ms = 5000; /* well over the fake's 200 ms long poll */
    }
    cr_assert_eq(rp_create(&c, fast ? slow_handle : handle, H, &W, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(pthread_create(&Tid, NULL, run_thread, W), 0);
}

static void start(const fake_rp_config *fc) { start_with(fc, 0, 0); }

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

/* One greedy generation on stories260K with faults on both sides of the
 * fake RunPod API, fired in the middle of it (`at` = results accepted so
 * far: job k's result is the k-th, before the retries below add jobs).
 * If this fails, a user on RunPod gets a wrong text, a hang or an error
 * when the platform hiccups: a lost reply, a redelivered or late job, a
 * 5xx, 429 or dropped connection on either side.
 *
 * A dropped connection comes twice in a row where the caller must see it:
 * libcurl itself sends a request again, once, when a reused connection
 * closes without a reply, so the first drop may never reach our code (for
 * the client's POST /runsync that re-send is the same sealed request: after
 * a commit the worker refuses it as a replay, which the client must
 * survive). */
Test(client_runpod, faults_on_both_sides_during_one_generation_still_give_the_local_text, .timeout = 120)
{
    fake_rp_config fc = {.client_key = "ck", .runsync_wait_ms = 10000};
    SlowCall = 5;
    start_with(&fc, 1, 1);
    /* worker side */
    const fake_rp_fault posts[] = {
        {503, 0, 0, FAKE_RP_INSTEAD}, /* the first result post (the prompt's job): retried */
        {0, 0, 8, FAKE_RP_LOST},      /* job 9's result never arrives: RunPod hands it out again */
    };
    const fake_rp_fault takes[] = {
        {500, 0, 2, FAKE_RP_INSTEAD}, {429, 0, 2, FAKE_RP_INSTEAD},
        {0, 0, 2, FAKE_RP_INSTEAD},   {0, 0, 2, FAKE_RP_INSTEAD}, /* dropped, twice */
        {502, 300, 2, FAKE_RP_INSTEAD}, /* a slow error */
        {0, 250, 2, FAKE_RP_SLOW},      /* a slow job hand-out */
    };
    /* client side */
    const fake_rp_fault runsync[] = {
        {0, 0, 4, FAKE_RP_EARLY},       /* job 5 (the slow one): IN_PROGRESS, the client polls */
        {502, 0, 11, FAKE_RP_INSTEAD},  /* refused before it was queued ... */
        {0, 0, 11, FAKE_RP_INSTEAD},    /* ... and the retry's connection dropped */
        {0, 0, 13, FAKE_RP_AFTER},      /* the worker committed the step, the reply is lost */
        {0, 0, 16, FAKE_RP_STALE},      /* queued, lost, and run late, after the client's retry */
        {503, 150, 19, FAKE_RP_AFTER},  /* committed, then a slow 503 */
    };
    const fake_rp_fault status[] = {
        {0, 400, 4, FAKE_RP_SLOW},    /* the slow job's first poll answers late */
        {503, 0, 4, FAKE_RP_INSTEAD}, /* the next fails: polled again, not sent again */
        {0, 0, 4, FAKE_RP_INSTEAD},   {0, 0, 4, FAKE_RP_INSTEAD}, /* dropped, twice */
    };
    fake_rp_fault_posts(F, posts, 2);
    fake_rp_fault_takes(F, takes, 6);
    fake_rp_fault_runsync(F, runsync, 6);
    fake_rp_fault_status(F, status, 4);

    static char want[8192], got[8192], errs[16384];
    const char *local[] = {"run", "--client-bundle", Client, "--server-bundle", Server, "--prompt",
                           "Once upon a time", "--temperature", "0", "--max-tokens", "30", NULL};
    cr_assert_eq(cli(local, NULL, NULL, want, sizeof want, errs, sizeof errs), 0, "local run: %s", errs);
    cr_assert_gt(strlen(want), 40, "the local run printed too little: %s", want);
    snprintf(Base, sizeof Base, "http://127.0.0.1:%u/v2", fake_rp_port(F));
    const char *args[] = {"generate", "--client-bundle", Client, "--runpod", "ep1", "--worker-pub", Pub,
                          "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "30",
                          "--wire-dtype", "f32", NULL};
    int rc = cli(args, Base, "ck", got, sizeof got, errs, sizeof errs);
    cr_assert_eq(rc, 0, "generate --runpod failed under faults: %s", errs);
    cr_expect_str_eq(got, want, "the text through RunPod with faults differs from the local run");

    /* stop the worker first: every count below is final */
    rp_stats ws;
    rp_stop(W);
    pthread_join(Tid, NULL);
    rp_get_stats(W, &ws);
    rp_destroy(W);
    W = NULL;

    int left = fake_rp_faults_left(F);
    cr_expect_eq(left, 0, "%d scripted fault(s) never fired: the test did not test them", left);
    char *v = fake_rp_violations(F);
    cr_expect_str_empty(v, "protocol breaches:\n%s", v);
    free(v);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.unfinished, 0, "%d job(s) never got a result", n.unfinished);
    cr_expect_eq(n.results, n.jobs, "%d jobs, %d results", n.jobs, n.results);
    cr_expect_eq(n.redelivered, 1, "the lost job was handed out again %d time(s)", n.redelivered);
    cr_expect_geq(n.status_polls, 2, "the client polled /status %d time(s)", n.status_polls);
    /* the jobs that failed are exactly the late ones (handed out after a
     * step of the session at least as new: the redelivered job, the stale
     * one, a request libcurl sent twice), each refused as a replay: none
     * changed the session, or the text above would differ */
    char *e = fake_rp_error_results(F), *late = fake_rp_late_ids(F);
    static char failed_ids[4096];
    size_t used = 0;
    int replays = 0, lines = 0;
    for (char *p = e, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        char *colon = strchr(p, ':');
        lines++;
        replays += !strncmp(colon, ": replay: ", 10);
        used += (size_t)snprintf(failed_ids + used, sizeof failed_ids - used, "%.*s\n", (int)(colon - p), p);
    }
    cr_expect_eq(replays, lines, "a job failed for another reason than a replay:\n%s", e);
    cr_expect_str_eq(failed_ids, late, "failed jobs:\n%s\nlate jobs:\n%s", e, late);
    cr_expect_geq(lines, 2, "want at least the redelivered and the stale job refused:\n%s", e);
    /* the worker saw what was injected */
    cr_expect_geq(ws.take_errors, 3, "take errors: %ld (500, dropped, 502)", ws.take_errors);
    cr_expect_eq(ws.busy, 1, "429s on take: %ld", ws.busy);
    cr_expect_eq(ws.posts_lost, 1, "result posts given up: %ld", ws.posts_lost);
    cr_expect_geq(ws.post_retries, 4, "result posts retried: %ld (the 503, the lost one's 3)", ws.post_retries);
    cr_expect_eq(ws.failed, lines, "error results posted: %ld", ws.failed);
    cr_expect_eq(ws.done + ws.failed, n.results, "worker posted %ld + %ld, the fake accepted %d", ws.done,
                 ws.failed, n.results);
    cr_log_info("%d jobs, %d results, %d /runsync, %d /status, %d failed as replays; worker: %ld takes, "
                "%ld take errors, %ld post retries", n.jobs, n.results, n.runsyncs, n.status_polls, lines,
                ws.takes, ws.take_errors, ws.post_retries);
    free(e);
    free(late);
    /* the slow job: named by the heartbeat while it ran, polled by the client */
    cr_expect(SlowId[0] && !strchr(SlowId, ','), "the slow job: \"%s\" (want one id)", SlowId);
    cr_expect(SlowNamed, "no heartbeat named the slow job %s while it ran", SlowId);
    cr_expect(SlowPolled, "the client did not poll /status while the slow job ran");
}

/* The lost-reply path alone (the test above mixes it with everything else):
 * the worker commits a step and the client never hears of it, twice over.
 * First /runsync's reply is dropped after the commit: the client's HTTP
 * library re-sends the same sealed request, which the worker refuses as a
 * replay, and the client must try again with a new step at the same pos.
 * Then a result post is lost and RunPod hands the job out again: the same
 * request runs twice, the second run is refused, and the client gets that
 * refusal as the job's FAILED status. If this fails, one lost reply ends a
 * user's generation with "replay: ..." (or worse, a wrong text). */
Test(client_runpod, a_step_committed_but_never_answered_is_sent_again_and_gives_the_same_text)
{
    fake_rp_config fc = {.client_key = "ck", .runsync_wait_ms = 10000};
    start_with(&fc, 0, 1);
    const fake_rp_fault runsync[] = {{0, 0, 3, FAKE_RP_AFTER}};
    const fake_rp_fault posts[] = {{0, 0, 6, FAKE_RP_LOST}};
    fake_rp_fault_runsync(F, runsync, 1);
    fake_rp_fault_posts(F, posts, 1);
    static char want[8192], got[8192], errs[8192];
    const char *local[] = {"run", "--client-bundle", Client, "--server-bundle", Server, "--prompt",
                           "Hello there", "--temperature", "0", "--max-tokens", "12", NULL};
    cr_assert_eq(cli(local, NULL, NULL, want, sizeof want, errs, sizeof errs), 0, "local run: %s", errs);
    int rc = generate("ep1", "ck", got, sizeof got, errs, sizeof errs);
    cr_assert_eq(rc, 0, "generate --runpod failed after a lost reply: %s", errs);
    cr_expect_str_eq(got, want, "the text after a lost reply differs from the local run");
    cr_expect_eq(fake_rp_faults_left(F), 0, "a scripted fault never fired");
    char *v = fake_rp_violations(F);
    cr_expect_str_empty(v, "protocol breaches:\n%s", v);
    free(v);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.unfinished, 0, "%d job(s) never got a result", n.unfinished);
    cr_expect_eq(n.redelivered, 1);
    char *e = fake_rp_error_results(F), *late = fake_rp_late_ids(F);
    int lines = 0, replays = 0;
    for (const char *p = e; *p; p = strchr(p, '\n') + 1) {
        lines++;
        replays += strstr(p, ": replay: ") < strchr(p, '\n') && strstr(p, ": replay: ");
    }
    int nlate = 0;
    for (const char *p = late; *p; p = strchr(p, '\n') + 1)
        nlate++;
    cr_expect(lines == nlate && replays == lines && nlate >= 1,
              "failed jobs (all must be refused replays, one per late job):\n%s\nlate jobs:\n%s", e, late);
    cr_log_info("%d late job(s) refused as replays", nlate);
    free(e);
    free(late);
}
