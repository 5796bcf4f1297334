/* main.c — infemeral-worker: RunPod queue mode (the default), RunPod's
 * load-balancer mode (lb) and the local dev server (serve). Every mode puts
 * the one request handler (handler.h) behind a front door: the RunPod job
 * loop (runpod.h), or the HTTP server (http.h) with a job pool (jobs.h).
 *
 * Queue mode (no subcommand, RUNPOD_WEBHOOK_GET_JOB set): the model loads
 * first, then jobs are taken. SIGTERM/SIGINT: stop taking, finish the jobs
 * in hand and post their results, exit 0. A model that does not load fails
 * the first job it takes with "stopPod" (see runpod.h) and exits 1.
 * `--test-input FILE` (RunPod's local test mode): one job from a JSON file
 * {"input": {...}}, the handler's reply JSON on stdout; exit 0 when the
 * handler succeeded, 1 when it answered an error or could not start.
 *
 * HTTP modes start-up: the HTTP server listens first and answers the health
 * path with 204 while the model loads (inf_handler_create), then 200.
 * Shutdown (SIGINT/SIGTERM): the health path goes back to 204, the server
 * stops accepting connections, queued jobs fail, running jobs get up to
 * INFEMERAL_DRAIN_MS (default 30000) to finish and their /runsync callers
 * get the answer, then the process exits 0. A second signal exits at once
 * (in every mode).
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handler.h"
#include "http.h"
#include "jobs.h"
#include "runpod.h"
#include "threads.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: infemeral-worker [--bundle DIR] [--concurrency N]   (RunPod queue mode)\n"
            "       infemeral-worker [--bundle DIR] --test-input FILE   (one local job)\n"
            "       infemeral-worker serve --bundle DIR [--port 8000] [--host 127.0.0.1] [--threads N]\n"
            "       infemeral-worker lb    --bundle DIR [--threads N]\n"
            "\n"
            "(none) RunPod queue mode when RUNPOD_WEBHOOK_GET_JOB is set: takes jobs from\n"
            "       RunPod's queue (RUNPOD_WEBHOOK_*, RUNPOD_AI_API_KEY, RUNPOD_POD_ID,\n"
            "       RUNPOD_PING_INTERVAL); --concurrency N or $RUNPOD_CONCURRENCY jobs at once\n"
            "       (default 1). --test-input FILE runs the job {\"input\": ...} in FILE,\n"
            "       prints the reply JSON and exits (0: success, 1: the handler failed)\n"
            "serve  the local dev server: RunPod's endpoint API (POST /run, POST /runsync,\n"
            "       GET /status/{id}, POST /cancel/{id}, GET /health, GET /ping)\n"
            "lb     RunPod load-balancer mode: the same routes on $PORT (default 80), on\n"
            "       0.0.0.0; the health path $HEALTH_CHECK_PATH (default /ping) also on\n"
            "       $PORT_HEALTH when that is set and different\n"
            "\n"
            "options: --bundle DIR (or $INFEMERAL_BUNDLE) the server bundle\n"
            "         --port N, --host ADDR  where to listen\n"
            "         --threads N            concurrent jobs (default 1: the forward pass\n"
            "                                already uses every core)\n"
            "         --max-queue N          waiting jobs before 503 (default 256)\n"
            "         --quiet                no per-request log lines\n"
            "env:     INFEMERAL_API_KEY      bearer token every route but the health path needs\n"
            "         INFEMERAL_DRAIN_MS     how long running jobs may finish on shutdown\n");
}

/* ---------------------------------------------------------------- signals */

static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv = PTHREAD_COND_INITIALIZER;
static int stop_requested;

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    for (int n = 0;; n++) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (n > 0) {
            static const char msg[] = "infemeral-worker: second signal, exiting now\n";
            if (write(2, msg, sizeof msg - 1) < 0) {
            }
            _exit(1);
        }
        fprintf(stderr, "infemeral-worker: %s received, shutting down\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        pthread_mutex_lock(&stop_mu);
        stop_requested = 1;
        pthread_cond_broadcast(&stop_cv);
        pthread_mutex_unlock(&stop_mu);
    }
    return NULL;
}

/* ------------------------------------------------------------------- main */

static char *run_job(void *ctx, const char *input, size_t len, int *http_status)
{
    return inf_handle(ctx, input, len, http_status);
}

static int parse_uint(const char *s, unsigned long max, unsigned *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return 0;
    *out = (unsigned)v;
    return 1;
}

static int block_signals_and_watch(void)
{
    /* Every thread started from here on inherits the blocked signals; only
     * signal_thread receives them. */
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t sig_tid;
    if (pthread_create(&sig_tid, NULL, signal_thread, &set) != 0) {
        fprintf(stderr, "infemeral-worker: cannot start the signal thread\n");
        return 0;
    }
    pthread_detach(sig_tid);
    return 1;
}

/* ------------------------------------------------------ RunPod local test */

static int test_input(const char *bundle, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "infemeral-worker: --test-input %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *text = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *q = realloc(text, cap);
            if (!q) {
                fclose(f);
                free(text);
                fprintf(stderr, "infemeral-worker: out of memory reading %s\n", path);
                return 1;
            }
            text = q;
        }
        size_t k = fread(text + n, 1, 65536, f);
        n += k;
        if (k == 0 || n > INF_MAX_REQUEST_BYTES + (1u << 20))
            break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!text || rerr || n > INF_MAX_REQUEST_BYTES + (1u << 20)) {
        fprintf(stderr, "infemeral-worker: --test-input %s: %s\n", path,
                rerr ? "read error" : "larger than a request may be");
        free(text);
        return 1;
    }
    text[n] = '\0';
    cJSON *job = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(job, "input");
    if (!cJSON_IsObject(job) || !in) {
        fprintf(stderr, "infemeral-worker: --test-input %s: expected a JSON object {\"input\": {...}}\n",
                path);
        cJSON_Delete(job);
        return 1;
    }
    char *input = cJSON_PrintUnformatted(in);
    cJSON_Delete(job);
    if (!input) {
        fprintf(stderr, "infemeral-worker: out of memory\n");
        return 1;
    }
    inf_error err = {{0}};
    inf_handler *h = NULL;
    if (!bundle || !*bundle) {
        fprintf(stderr, "infemeral-worker: no server bundle: pass --bundle DIR or set INFEMERAL_BUNDLE\n");
        free(input);
        return 1;
    }
    if (inf_handler_create(bundle, &h, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: cannot load the server bundle: %s\n", err.msg);
        free(input);
        return 1;
    }
    int status = 500;
    char *reply = inf_handle(h, input, strlen(input), &status);
    free(input);
    int rc = status == 200 ? 0 : 1;
    printf("%s\n", reply ? reply : "{\"error\":{\"code\":\"nomem\",\"message\":\"out of memory\"}}");
    if (fflush(stdout) != 0)
        rc = 1;
    if (status != 200)
        fprintf(stderr, "infemeral-worker: the handler answered an error (HTTP %d)\n", status);
    free(reply);
    inf_handler_destroy(h);
    return rc;
}

/* ------------------------------------------------------- RunPod queue mode */

static void *stop_watch(void *arg)
{
    pthread_mutex_lock(&stop_mu);
    while (!stop_requested)
        pthread_cond_wait(&stop_cv, &stop_mu);
    pthread_mutex_unlock(&stop_mu);
    rp_stop(arg);
    return NULL;
}

static int queue_mode(const char *bundle, unsigned concurrency, int quiet)
{
    inf_error err = {{0}};
    rp_config rc;
    if (rp_config_from_env(&rc, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: %s\n", err.msg);
        return 2;
    }
    if (concurrency)
        rc.concurrency = concurrency;
    rc.quiet = quiet;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!block_signals_and_watch())
        return 1;

    /* The model loads once, before the first take. */
    inf_handler *h = NULL;
    char startup[600] = "";
    if (!bundle || !*bundle) {
        snprintf(startup, sizeof startup, "no server bundle: set INFEMERAL_BUNDLE or pass --bundle DIR");
    } else {
        fprintf(stderr, "infemeral-worker: RunPod queue mode; loading %s\n", bundle);
        if (inf_handler_create(bundle, &h, &err) != INF_OK)
            snprintf(startup, sizeof startup, "cannot load the server bundle: %s", err.msg);
    }
    if (startup[0]) {
        fprintf(stderr, "infemeral-worker: %s; failing the next job with stopPod so RunPod "
                        "replaces this worker\n", startup);
        rc.startup_error = startup;
    }
    pthread_mutex_lock(&stop_mu);
    int stopped = stop_requested;
    pthread_mutex_unlock(&stop_mu);
    if (stopped) {
        inf_handler_destroy(h);
        fprintf(stderr, "infemeral-worker: stopped before taking a job\n");
        return startup[0] ? 1 : 0;
    }
    rp_worker *w = NULL;
    if (rp_create(&rc, h ? run_job : NULL, h, &w, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: %s\n", err.msg);
        inf_handler_destroy(h);
        return 1;
    }
    pthread_t watch;
    if (pthread_create(&watch, NULL, stop_watch, w) != 0) {
        fprintf(stderr, "infemeral-worker: cannot start the stop watcher\n");
        rp_destroy(w);
        inf_handler_destroy(h);
        return 1;
    }
    if (!startup[0])
        fprintf(stderr, "infemeral-worker: ready (%u job%s at a time)\n", rc.concurrency,
                rc.concurrency == 1 ? "" : "s");
    inf_status st = rp_run(w, &err);
    /* release the watcher (a fatal error ends rp_run without a signal) */
    pthread_mutex_lock(&stop_mu);
    stop_requested = 1;
    pthread_cond_broadcast(&stop_cv);
    pthread_mutex_unlock(&stop_mu);
    pthread_join(watch, NULL);
    rp_destroy(w);
    inf_handler_destroy(h);
    if (st != INF_OK) {
        fprintf(stderr, "infemeral-worker: stopping after a fatal error: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "infemeral-worker: stopped\n");
    return 0;
}

/* No subcommand: RunPod queue mode or --test-input. */
static int default_mode(int argc, char **argv)
{
    const char *bundle = getenv("INFEMERAL_BUNDLE"), *input = NULL;
    unsigned concurrency = 0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--bundle") && v)
            bundle = v, i++;
        else if (!strcmp(a, "--test-input") && v)
            input = v, i++;
        else if (!strcmp(a, "--concurrency") && v) {
            if (!parse_uint(v, 256, &concurrency) || !concurrency) {
                fprintf(stderr, "infemeral-worker: bad value for --concurrency: %s (1..256)\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--quiet"))
            quiet = 1;
        else {
            fprintf(stderr, "infemeral-worker: unknown mode, option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (input)
        return test_input(bundle, input);
    const char *gj = getenv("RUNPOD_WEBHOOK_GET_JOB");
    if (!gj || !*gj) {
        fprintf(stderr, "infemeral-worker: no mode given and RUNPOD_WEBHOOK_GET_JOB is not set "
                        "(RunPod queue mode needs it; for local use: serve, or --test-input FILE)\n");
        usage(stderr);
        return 2;
    }
    return queue_mode(bundle, concurrency, quiet);
}

int main(int argc, char **argv)
{
    inf_threads_init(argv);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-')
        return default_mode(argc, argv);
    const char *mode = argv[1];
    int lb = !strcmp(mode, "lb");
    if (!lb && strcmp(mode, "serve") != 0) {
        fprintf(stderr, "infemeral-worker: unknown mode \"%s\" (serve, lb, or none for RunPod "
                        "queue mode)\n", mode);
        usage(stderr);
        return 2;
    }

    const char *bundle = getenv("INFEMERAL_BUNDLE");
    const char *host = lb ? "0.0.0.0" : "127.0.0.1";
    unsigned port = 8000, threads = 1, max_queue = 256, health_port = 0;
    int quiet = 0, port_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--bundle") && v)
            bundle = v, i++;
        else if (!strcmp(a, "--host") && v)
            host = v, i++;
        else if (!strcmp(a, "--port") && v)
            ok = parse_uint(v, 65535, &port), port_given = 1, i++;
        else if (!strcmp(a, "--threads") && v)
            ok = parse_uint(v, 256, &threads) && threads > 0, i++;
        else if (!strcmp(a, "--max-queue") && v)
            ok = parse_uint(v, 1000000, &max_queue) && max_queue > 0, i++;
        else if (!strcmp(a, "--quiet"))
            quiet = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 0;
        else {
            fprintf(stderr, "infemeral-worker: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "infemeral-worker: bad value for %s: %s\n", a, v);
            return 2;
        }
    }
    if (!bundle || !*bundle) {
        fprintf(stderr, "infemeral-worker: no server bundle: pass --bundle DIR or set INFEMERAL_BUNDLE\n");
        return 2;
    }
    const char *health_path = "/ping";
    if (lb) {
        const char *p = getenv("PORT"), *ph = getenv("PORT_HEALTH"), *hp = getenv("HEALTH_CHECK_PATH");
        if (!port_given) {
            port = 80;
            if (p && !parse_uint(p, 65535, &port)) {
                fprintf(stderr, "infemeral-worker: PORT=\"%s\" is not a port number\n", p);
                return 2;
            }
        }
        if (ph && *ph && !parse_uint(ph, 65535, &health_port)) {
            fprintf(stderr, "infemeral-worker: PORT_HEALTH=\"%s\" is not a port number\n", ph);
            return 2;
        }
        if (health_port == port)
            health_port = 0;
        if (hp && *hp)
            health_path = hp;
    }
    unsigned drain_ms = 30000;
    const char *dm = getenv("INFEMERAL_DRAIN_MS");
    if (dm && !parse_uint(dm, 3600000, &drain_ms)) {
        fprintf(stderr, "infemeral-worker: INFEMERAL_DRAIN_MS=\"%s\" is not a number of ms\n", dm);
        return 2;
    }

    if (!block_signals_and_watch())
        return 1;

    inf_error err = {{0}};
    http_config hc = {0};
    hc.host = host;
    hc.port = port;
    hc.api_key = getenv("INFEMERAL_API_KEY");
    hc.ping_path = health_path;
    hc.log = !quiet;
    http_server *srv = NULL, *health = NULL;
    if (http_start(&hc, &srv, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: %s\n", err.msg);
        return 1;
    }
    if (health_port) {
        http_config hh = hc;
        hh.port = health_port;
        hh.ping_only = 1;
        hh.api_key = NULL;
        if (http_start(&hh, &health, &err) != INF_OK) {
            fprintf(stderr, "infemeral-worker: health port: %s\n", err.msg);
            http_stop(srv);
            return 1;
        }
    }
    fprintf(stderr, "infemeral-worker: %s mode, listening on http://%s:%u (health %s%s%u)%s\n",
            lb ? "load-balancer" : "dev server", host, http_port(srv), health_path,
            health ? " also on port " : " on port ", health ? http_port(health) : http_port(srv),
            hc.api_key && *hc.api_key ? ", bearer token required" : "");
    fprintf(stderr, "infemeral-worker: loading %s\n", bundle);

    inf_handler *h = NULL;
    if (inf_handler_create(bundle, &h, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: cannot load the server bundle: %s\n", err.msg);
        http_stop(health);
        http_stop(srv);
        return 1;
    }
    jobs_config jc = {0};
    jc.threads = threads;
    jc.max_queue = max_queue;
    jobs_table *jobs = NULL;
    if (jobs_create(&jc, run_job, h, &jobs, &err) != INF_OK) {
        fprintf(stderr, "infemeral-worker: %s\n", err.msg);
        http_stop(health);
        http_stop(srv);
        inf_handler_destroy(h);
        return 1;
    }
    http_set_jobs(srv, jobs);
    if (health)
        http_set_ready(health, 1);
    fprintf(stderr, "infemeral-worker: ready (%u job thread%s)\n", threads, threads == 1 ? "" : "s");

    pthread_mutex_lock(&stop_mu);
    while (!stop_requested)
        pthread_cond_wait(&stop_cv, &stop_mu);
    pthread_mutex_unlock(&stop_mu);

    http_set_ready(srv, 0);
    if (health)
        http_set_ready(health, 0);
    http_quiesce(srv);
    http_quiesce(health);
    inf_status st = jobs_shutdown(jobs, drain_ms, &err);
    /* Every /runsync waiter has its answer now; let the replies go out. */
    unsigned left = http_drain(srv, 5000);
    if (left)
        fprintf(stderr, "infemeral-worker: %u request(s) still in progress; closing them\n", left);
    http_stop(health);
    http_stop(srv);
    if (st != INF_OK) {
        fprintf(stderr, "infemeral-worker: %s; exiting anyway\n", err.msg);
        return 0;
    }
    jobs_destroy(jobs);
    inf_handler_destroy(h);
    fprintf(stderr, "infemeral-worker: stopped\n");
    return 0;
}
