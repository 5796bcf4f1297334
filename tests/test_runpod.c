/* test_runpod.c — RunPod queue mode (worker/runpod.c and the worker binary's
 * queue and --test-input modes) against a fake RunPod API (fake_runpod.c)
 * over real loopback HTTP; tests/fake_handler.c stands in for the model.
 *
 * If these fail, a worker deployed on RunPod would not get its jobs, would
 * lose or double-post results, be refused for a wrong Authorization header,
 * let RunPod think a long job died (no heartbeat), hammer the API after a
 * 429, or drop the job in hand when RunPod scales it down (SIGTERM).
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_runpod.h"
#include "handler.h"
#include "runpod.h"

static fake_rp *F;
static inf_handler *H;

static void init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    inf_error err = {{0}};
    cr_assert_eq(inf_handler_create(NULL, &H, &err), INF_OK);
}

static void fini(void)
{
    fake_rp_stop(F);
    F = NULL;
    inf_handler_destroy(H);
}

TestSuite(runpod, .init = init, .fini = fini, .timeout = 60);

static char *handle(void *ctx, const char *in, size_t len, int *st) { return inf_handle(ctx, in, len, st); }

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void start_fake(const fake_rp_config *c)
{
    F = fake_rp_start(c);
    cr_assert_not_null(F, "cannot start the fake RunPod API");
}

/* ------------------------------------------------------ the loop, threaded */

static char T_get[256], T_post[256], T_ping[256];

typedef struct {
    rp_worker *w;
    inf_status st;
    inf_error err;
    pthread_t tid;
} running;

static void *run_thread(void *arg)
{
    running *r = arg;
    r->st = rp_run(r->w, &r->err);
    return NULL;
}

static void config(rp_config *c, int batch)
{
    rp_config_defaults(c);
    fake_rp_templates(F, batch, T_get, T_post, T_ping, sizeof T_get);
    c->get_job = T_get;
    c->post_output = T_post;
    c->ping = T_ping;
    c->api_key = "wk";
    c->pod_id = "pod1";
    c->ping_interval_ms = 100;
    c->backoff_ms = 50;
    c->backoff_max_ms = 200;
    c->busy_wait_ms = 300;
    c->post_retry_ms = 50;
    c->take_timeout_ms = 5000;
    c->quiet = 1;
}

static void launch(running *r, const rp_config *c, rp_handle_fn fn, void *ctx)
{
    memset(r, 0, sizeof *r);
    inf_error err = {{0}};
    cr_assert_eq(rp_create(c, fn, ctx, &r->w, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(pthread_create(&r->tid, NULL, run_thread, r), 0);
}

/* rp_stop, wait for rp_run, check no protocol breach; returns rp_run's status. */
static inf_status finish(running *r, rp_stats *st)
{
    rp_stop(r->w);
    pthread_join(r->tid, NULL);
    if (st)
        rp_get_stats(r->w, st);
    rp_destroy(r->w);
    return r->st;
}

static void assert_no_violations(void)
{
    char *v = fake_rp_violations(F);
    cr_expect_str_empty(v, "protocol breaches:\n%s", v);
    free(v);
}

static void expect_result(const char *id, const char *want)
{
    char *got = fake_rp_result(F, id);
    cr_assert_not_null(got, "no result for %s", id);
    cr_expect_str_eq(got, want, "job %s", id);
    free(got);
}

Test(runpod, takes_jobs_and_posts_outputs_with_raw_auth_and_parameters)
{
    start_fake(NULL);
    fake_rp_add_job(F, "j1", "{\"echo\":1}");
    fake_rp_add_job(F, "j2", "{\"echo\":\"two\"}");
    fake_rp_add_job(F, "j3", "{\"echo\":[3]}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 3, 10000), "the three results did not arrive");
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK, "%s", r.err.msg);
    expect_result("j1", "{\"output\":{\"echo\":1}}");
    expect_result("j2", "{\"output\":{\"echo\":\"two\"}}");
    expect_result("j3", "{\"output\":{\"echo\":[3]}}");
    cr_expect_eq(st.taken, 3);
    cr_expect_eq(st.done, 3);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.results, 3);
    cr_expect_eq(n.result_posts, 3, "each result posted once");
    cr_expect_geq(n.pings, 1, "a heartbeat at start");
    assert_no_violations();
}

Test(runpod, handler_errors_are_posted_as_code_colon_message)
{
    start_fake(NULL);
    fake_rp_add_job(F, "bad", "{\"fail\":\"auth\",\"status\":401}");
    fake_rp_add_job(F, "notjson", "\"a string input\"");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 2, 10000));
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK);
    expect_result("bad", "{\"error\":\"auth: fake failure\"}");
    expect_result("notjson", "{\"error\":\"bad_input: fake failure\"}");
    cr_expect_eq(st.failed, 2);
    assert_no_violations();
}

Test(runpod, heartbeat_names_the_jobs_in_flight)
{
    start_fake(NULL);
    fake_rp_add_job(F, "slow-1", "{\"echo\":1,\"sleep_ms\":700}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 1, 10000));
    cr_assert_eq(finish(&r, NULL), INF_OK);
    char *ids = fake_rp_ping_ids(F);
    cr_expect(strstr(ids, "slow-1\n") != NULL, "no heartbeat named the running job: [%s]", ids);
    free(ids);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_geq(n.pings_with_ids, 3, "a 700 ms job with a 100 ms interval: %d pings with ids",
                  n.pings_with_ids);
    assert_no_violations();
}

Test(runpod, no_job_429_errors_and_dropped_connections_on_take_back_off_and_go_on)
{
    start_fake(NULL);
    /* the drop comes first: on a fresh connection libcurl reports it (on a
     * reused one it silently reconnects and asks again) */
    fake_rp_fault f[] = {{0, 0, 0, 0},   {204, 0, 0, 0},   {400, 0, 0, 0}, {429, 0, 0, 0},
                         {500, 0, 0, 0}, {503, 100, 0, 0}, {404, 0, 0, 0}};
    fake_rp_fault_takes(F, f, 7);
    fake_rp_add_job(F, "after-faults", "{\"echo\":\"ok\"}");
    rp_config c;
    config(&c, 0);
    running r;
    double t0 = now_ms();
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 1, 15000), "the job after the faults never ran");
    double took = now_ms() - t0;
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK);
    expect_result("after-faults", "{\"output\":{\"echo\":\"ok\"}}");
    cr_expect_eq(st.busy, 1, "one 429");
    cr_expect_geq(st.no_job, 2, "204 and 400 are 'no job' (and the empty long polls after)");
    cr_expect_eq(st.take_errors, 4, "500, a dropped connection, 503, 404");
    /* 429 waits busy_wait_ms (300); the errors back off 50+100+200+200 */
    cr_expect_geq(took, 300 + 550 + 100, "took %.0f ms: the 429 wait or the back-off was skipped", took);
    assert_no_violations();
}

Test(runpod, result_post_5xx_and_a_dropped_connection_are_retried_and_posted_once)
{
    start_fake(NULL);
    fake_rp_fault f[] = {{0, 0, 0, 0}, {503, 0, 0, 0}, {500, 0, 0, 0}}; /* the drop first: see above */
    fake_rp_fault_posts(F, f, 3);
    fake_rp_add_job(F, "r1", "{\"echo\":\"kept\"}");
    fake_rp_add_job(F, "r2", "{\"echo\":\"next\"}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 2, 10000));
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK);
    expect_result("r1", "{\"output\":{\"echo\":\"kept\"}}");
    expect_result("r2", "{\"output\":{\"echo\":\"next\"}}");
    cr_expect_eq(st.post_retries, 3);
    cr_expect_eq(st.posts_lost, 0);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.result_posts, 5, "3 failed tries + 2 results");
    assert_no_violations();
}

Test(runpod, a_4xx_on_the_result_post_is_not_retried)
{
    start_fake(NULL);
    fake_rp_fault f[] = {{404, 0, 0, 0}};
    fake_rp_fault_posts(F, f, 1);
    fake_rp_add_job(F, "gone", "{\"echo\":1}");
    fake_rp_add_job(F, "fine", "{\"echo\":2}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 1, 10000));
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK);
    cr_expect_eq(st.posts_lost, 1);
    cr_expect_eq(st.post_retries, 0);
    expect_result("fine", "{\"output\":{\"echo\":2}}");
}

Test(runpod, batch_take_asks_for_the_free_slots_and_runs_every_job_of_the_list)
{
    start_fake(NULL);
    for (int i = 0; i < 7; i++) {
        char id[16], in[64];
        snprintf(id, sizeof id, "b%d", i);
        snprintf(in, sizeof in, "{\"echo\":%d,\"sleep_ms\":100}", i);
        fake_rp_add_job(F, id, in);
    }
    rp_config c;
    config(&c, 1);
    c.concurrency = 3;
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 7, 10000));
    cr_assert_eq(finish(&r, NULL), INF_OK);
    for (int i = 0; i < 7; i++) {
        char id[16], want[64];
        snprintf(id, sizeof id, "b%d", i);
        snprintf(want, sizeof want, "{\"output\":{\"echo\":%d}}", i);
        expect_result(id, want);
    }
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.max_batch_size, 3, "the first batch take asks for all 3 slots");
    cr_expect_leq(n.max_out, 3, "never more jobs out than slots");
    cr_expect_lt(n.batch_takes, 7, "jobs came in batches");
    assert_no_violations();
}

Test(runpod, n_concurrent_jobs_run_at_once_each_posting_its_own_result)
{
    start_fake(NULL);
    for (int i = 0; i < 8; i++) {
        char id[16], in[64];
        snprintf(id, sizeof id, "c%d", i);
        snprintf(in, sizeof in, "{\"echo\":%d,\"sleep_ms\":400}", i);
        fake_rp_add_job(F, id, in);
    }
    rp_config c;
    config(&c, 0);
    c.concurrency = 4;
    running r;
    double t0 = now_ms();
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 8, 10000));
    double took = now_ms() - t0;
    cr_assert_eq(finish(&r, NULL), INF_OK);
    for (int i = 0; i < 8; i++) {
        char id[16], want[64];
        snprintf(id, sizeof id, "c%d", i);
        snprintf(want, sizeof want, "{\"output\":{\"echo\":%d}}", i);
        expect_result(id, want);
    }
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.max_out, 4, "4 slots: 4 jobs out at once (saw %d)", n.max_out);
    cr_expect_lt(took, 8 * 400 * 0.6, "8 jobs of 400 ms on 4 slots took %.0f ms", took);
    cr_expect_geq(n.takes_in_progress, 1, "takes while jobs run say job_in_progress=1");
    assert_no_violations();
}

Test(runpod, stop_finishes_the_job_in_hand_and_takes_no_more)
{
    start_fake(NULL);
    fake_rp_add_job(F, "in-hand", "{\"echo\":\"finished\",\"sleep_ms\":600}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    fake_rp_counts n = {0};
    for (int i = 0; i < 200 && n.max_out < 1; i++) {
        usleep(10000);
        fake_rp_get_counts(F, &n);
    }
    cr_assert_eq(n.max_out, 1, "the job was not taken");
    fake_rp_add_job(F, "left", "{\"echo\":\"never\"}");
    double t0 = now_ms();
    cr_assert_eq(finish(&r, NULL), INF_OK, "%s", r.err.msg);
    cr_expect_lt(now_ms() - t0, 3000);
    expect_result("in-hand", "{\"output\":{\"echo\":\"finished\"}}");
    char *left = fake_rp_result(F, "left");
    cr_expect_null(left, "a job was taken after the stop");
    free(left);
    assert_no_violations();
}

Test(runpod, stop_during_a_long_poll_returns_at_once)
{
    fake_rp_config fc = {.hold_ms = 20000};
    start_fake(&fc);
    rp_config c;
    config(&c, 0);
    c.take_timeout_ms = 30000;
    running r;
    launch(&r, &c, handle, H);
    usleep(300000);
    double t0 = now_ms();
    cr_assert_eq(finish(&r, NULL), INF_OK);
    cr_expect_lt(now_ms() - t0, 2000, "rp_stop waited for the long poll");
}

Test(runpod, device_error_posts_stop_pod_and_stops_the_worker)
{
    start_fake(NULL);
    fake_rp_add_job(F, "gpu", "{\"fail\":\"device\",\"status\":500}");
    rp_config c;
    config(&c, 0);
    running r;
    launch(&r, &c, handle, H);
    cr_assert(fake_rp_wait_results(F, 1, 10000));
    pthread_join(r.tid, NULL); /* it stops by itself */
    cr_expect_eq(r.st, INF_E_IO);
    cr_expect(strstr(r.err.msg, "device") != NULL, "%s", r.err.msg);
    rp_destroy(r.w);
    expect_result("gpu", "{\"error\":\"device: fake failure\",\"stopPod\":true}");
    assert_no_violations();
}

Test(runpod, a_worker_that_could_not_start_fails_one_job_with_stop_pod)
{
    start_fake(NULL);
    fake_rp_add_job(F, "first", "{\"echo\":1}");
    rp_config c;
    config(&c, 0);
    c.startup_error = "cannot load the server bundle: /x: no such file";
    running r;
    launch(&r, &c, NULL, NULL);
    cr_assert(fake_rp_wait_results(F, 1, 10000));
    pthread_join(r.tid, NULL);
    cr_expect_eq(r.st, INF_E_IO);
    rp_destroy(r.w);
    expect_result("first", "{\"error\":\"internal: the worker could not start: cannot load the server "
                           "bundle: /x: no such file\",\"stopPod\":true}");
}

Test(runpod, a_wrong_key_is_refused_by_the_fake_and_the_worker_keeps_trying)
{
    start_fake(NULL);
    rp_config c;
    config(&c, 0);
    c.api_key = "Bearer wk"; /* what a worker that adds "Bearer" would send */
    running r;
    launch(&r, &c, handle, H);
    usleep(300000);
    rp_stats st;
    cr_assert_eq(finish(&r, &st), INF_OK);
    cr_expect_geq(st.take_errors, 1);
    char *v = fake_rp_violations(F);
    cr_expect(strstr(v, "Authorization is \"Bearer wk\"") != NULL, "%s", v);
    free(v);
}

Test(runpod, templates_are_expanded_and_escaped)
{
    char *s = rp_expand("https://x/v2/e/job-done/$RUNPOD_POD_ID/$ID?gpu=1", "pod 1", "job/&2");
    cr_assert_str_eq(s, "https://x/v2/e/job-done/pod%201/job%2F%262?gpu=1");
    free(s);
    s = rp_expand("https://x/v2/e/job-take/$ID?", "p1", NULL);
    cr_assert_str_eq(s, "https://x/v2/e/job-take/p1?");
    free(s);
}

Test(runpod, config_from_env_names_what_is_missing_or_wrong)
{
    rp_config c;
    inf_error err = {{0}};
    unsetenv("RUNPOD_WEBHOOK_GET_JOB");
    cr_expect_neq(rp_config_from_env(&c, &err), INF_OK);
    cr_expect(strstr(err.msg, "RUNPOD_WEBHOOK_GET_JOB") != NULL, "%s", err.msg);
    setenv("RUNPOD_WEBHOOK_GET_JOB", "http://a/$ID?", 1);
    setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "http://a/$ID?", 1);
    setenv("RUNPOD_PING_INTERVAL", "soon", 1);
    cr_expect_neq(rp_config_from_env(&c, &err), INF_OK);
    cr_expect(strstr(err.msg, "RUNPOD_PING_INTERVAL") != NULL, "%s", err.msg);
    setenv("RUNPOD_PING_INTERVAL", "2500", 1);
    setenv("RUNPOD_CONCURRENCY", "3", 1);
    cr_assert_eq(rp_config_from_env(&c, &err), INF_OK, "%s", err.msg);
    cr_expect_eq(c.ping_interval_ms, 2500);
    cr_expect_eq(c.concurrency, 3);
    unsetenv("RUNPOD_WEBHOOK_GET_JOB");
    unsetenv("RUNPOD_WEBHOOK_POST_OUTPUT");
    unsetenv("RUNPOD_PING_INTERVAL");
    unsetenv("RUNPOD_CONCURRENCY");
}

/* --------------------------------------------------------- the binary */

typedef struct {
    pid_t pid;
    int out_fd;
} child;

/* Runs the fake-handler worker binary with argv (NULL-terminated) and the
 * RunPod env pointing at the fake (when F is set). */
static child spawn(const char *const *args, const char *extra_env)
{
    const char *exe = getenv("INF_FAKE_WORKER");
    cr_assert_not_null(exe, "INF_FAKE_WORKER is not set (run through meson test)");
    int p[2];
    cr_assert_eq(pipe(p), 0);
    child ch = {0};
    ch.pid = fork();
    cr_assert_neq(ch.pid, -1);
    if (ch.pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        if (F) {
            setenv("RUNPOD_WEBHOOK_GET_JOB", T_get, 1);
            setenv("RUNPOD_WEBHOOK_POST_OUTPUT", T_post, 1);
            setenv("RUNPOD_WEBHOOK_PING", T_ping, 1);
            setenv("RUNPOD_AI_API_KEY", "wk", 1);
            setenv("RUNPOD_POD_ID", "pod1", 1);
            setenv("RUNPOD_PING_INTERVAL", "200", 1);
        } else {
            unsetenv("RUNPOD_WEBHOOK_GET_JOB");
        }
        setenv("INFEMERAL_BUNDLE", "/nonexistent-fake-bundle", 1);
        if (extra_env)
            putenv((char *)extra_env);
        char *argv[16] = {(char *)exe};
        for (int i = 0; args[i] && i < 14; i++)
            argv[i + 1] = (char *)args[i];
        execv(exe, argv);
        _exit(127);
    }
    close(p[1]);
    ch.out_fd = p[0];
    return ch;
}

/* Waits for the child (kills it after timeout_ms); returns its exit code
 * (-1: killed) and its stdout in out. */
static int reap(child ch, int timeout_ms, char *out, size_t cap)
{
    int status = 0;
    double t0 = now_ms();
    while (waitpid(ch.pid, &status, WNOHANG) == 0) {
        if (now_ms() - t0 > timeout_ms) {
            kill(ch.pid, SIGKILL);
            waitpid(ch.pid, &status, 0);
            break;
        }
        usleep(10000);
    }
    size_t n = 0;
    ssize_t k;
    while (out && n + 1 < cap && (k = read(ch.out_fd, out + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    if (out)
        out[n] = '\0';
    close(ch.out_fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(runpod, binary_queue_mode_finishes_the_job_in_hand_on_sigterm_and_exits_0)
{
    start_fake(NULL);
    rp_config c;
    config(&c, 0); /* fills the templates */
    fake_rp_add_job(F, "term", "{\"echo\":\"done before exit\",\"sleep_ms\":800}");
    const char *args[] = {"--quiet", NULL};
    child ch = spawn(args, NULL);
    fake_rp_counts n = {0};
    for (int i = 0; i < 500 && n.max_out < 1; i++) {
        usleep(10000);
        fake_rp_get_counts(F, &n);
    }
    cr_assert_eq(n.max_out, 1, "the binary did not take the job");
    fake_rp_add_job(F, "after-term", "{\"echo\":1}");
    kill(ch.pid, SIGTERM);
    int rc = reap(ch, 10000, NULL, 0);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    expect_result("term", "{\"output\":{\"echo\":\"done before exit\"}}");
    char *left = fake_rp_result(F, "after-term");
    cr_expect_null(left);
    free(left);
    fake_rp_get_counts(F, &n);
    cr_expect_geq(n.pings_with_ids, 2, "heartbeats went on while the job finished");
    assert_no_violations();
}

Test(runpod, binary_queue_mode_with_concurrency_option)
{
    start_fake(NULL);
    rp_config c;
    config(&c, 0);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        fake_rp_add_job(F, id, "{\"echo\":0,\"sleep_ms\":300}");
    }
    const char *args[] = {"--concurrency", "3", "--quiet", NULL};
    child ch = spawn(args, NULL);
    cr_assert(fake_rp_wait_results(F, 3, 10000));
    kill(ch.pid, SIGTERM);
    cr_expect_eq(reap(ch, 10000, NULL, 0), 0);
    fake_rp_counts n;
    fake_rp_get_counts(F, &n);
    cr_expect_eq(n.max_out, 3);
    assert_no_violations();
}

Test(runpod, binary_queue_mode_load_failure_fails_a_job_with_stop_pod_and_exits_1)
{
    start_fake(NULL);
    rp_config c;
    config(&c, 0);
    fake_rp_add_job(F, "victim", "{\"echo\":1}");
    const char *args[] = {NULL};
    child ch = spawn(args, "FAKE_HANDLER_FAIL_LOAD=1");
    cr_assert(fake_rp_wait_results(F, 1, 10000));
    cr_expect_eq(reap(ch, 10000, NULL, 0), 1);
    char *res = fake_rp_result(F, "victim");
    cr_assert_not_null(res);
    cr_expect(strstr(res, "fake load failure") && strstr(res, "\"stopPod\":true"), "%s", res);
    free(res);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(runpod, binary_test_input_runs_one_job_locally)
{
    char dir[] = "/tmp/inf_rp_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ok[64], bad[64], junk[64], out[4096];
    snprintf(ok, sizeof ok, "%s/ok.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    snprintf(junk, sizeof junk, "%s/junk.json", dir);
    write_file(ok, "{\"input\": {\"echo\": {\"x\": 5}}}\n");
    write_file(bad, "{\"input\": {\"fail\": \"format\"}}");
    write_file(junk, "{\"no_input\": 1}");

    const char *a1[] = {"--test-input", ok, NULL};
    int rc = reap(spawn(a1, NULL), 10000, out, sizeof out);
    cr_expect_eq(rc, 0);
    cr_expect_str_eq(out, "{\"echo\":{\"x\":5}}\n");

    const char *a2[] = {"--test-input", bad, NULL};
    rc = reap(spawn(a2, NULL), 10000, out, sizeof out);
    cr_expect_eq(rc, 1);
    cr_expect(strstr(out, "\"code\":\"format\"") != NULL, "%s", out);

    const char *a3[] = {"--test-input", junk, NULL};
    cr_expect_eq(reap(spawn(a3, NULL), 10000, out, sizeof out), 1);
    const char *a4[] = {"--test-input", "/nonexistent/in.json", NULL};
    cr_expect_eq(reap(spawn(a4, NULL), 10000, out, sizeof out), 1);

    /* no mode and no RunPod env: a usage error, as before */
    const char *a5[] = {NULL};
    cr_expect_eq(reap(spawn(a5, NULL), 10000, out, sizeof out), 2);
    const char *a6[] = {"--concurrency", "0", NULL};
    cr_expect_eq(reap(spawn(a6, NULL), 10000, out, sizeof out), 2);
    unlink(ok);
    unlink(bad);
    unlink(junk);
    rmdir(dir);
}
