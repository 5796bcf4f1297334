/* main.c — the `infemeral` command line.
 *
 * Only argument parsing and wiring live here; every step of the work is a
 * module call. Generated text goes to stdout, everything else (progress,
 * timings, errors) to stderr, so `infemeral run ... > out.txt` captures
 * exactly the model's text.
 */
#include <cjson/cJSON.h>
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "chat.h"
#include "client_cuda.h"
#include "cloak.h"
#include "gemv.h"
#include "generate.h"
#include "keygen.h"
#include "gguf.h"
#include "kv.h"
#include "loopback.h"
#include "model.h"
#include "prep.h"
#include "profile.h"
#include "rotation.h"
#include "sample.h"
#include "threads.h"
#include "tokenizer.h"
#include "transport.h"
#include "vocab.h"

#define INF_VERSION "0.1.0"

static void usage(FILE *f) {
    fprintf(f,
            "usage: infemeral <command> [options]\n"
            "\n"
            "commands:\n"
            "  run    generate text locally on the CPU (a checkpoint, or a prepared\n"
            "         client + server bundle pair)\n"
            "  prep   split a checkpoint into a client bundle and a rotated server bundle\n"
            "  keygen make the worker's key pair\n"
            "  generate, chat  generate through a remote worker (infemeral-worker)\n"
            "  bench  time a fixed prompt per phase (local, split or through a worker)\n"
            "\n"
            "infemeral run --model PATH [--tokenizer PATH] [--prompt TEXT] [--chat]\n"
            "              [--system TEXT] [--max-tokens N] [--temperature T] [--top-k K]\n"
            "              [--top-p P] [--repeat-penalty R] [--seed S] [--ctx N]\n"
            "              [--threads N] [--no-bos] [--quiet]\n"
            "  --model PATH      a .gguf file, a llama2.c .bin, a .safetensors file or a\n"
            "                    Hugging Face model directory (config.json + safetensors)\n"
            "  --tokenizer PATH  tokenizer.json, Meta's tokenizer.model, a llama2.c\n"
            "                    tokenizer .bin or a .gguf (default: the model's own)\n"
            "  --prompt TEXT     the prompt; with --chat it is the user's message\n"
            "  --chat            apply the model's chat template; without --prompt, an\n"
            "                    interactive chat reading one message per line from stdin\n"
            "  --temperature T   0 = greedy and deterministic (default 0.7)\n"
            "  --max-tokens N    tokens to generate (default 256)\n"
            "  --top-k K         sample among the K most likely tokens (default 40; 0 = off)\n"
            "  --top-p P         nucleus sampling mass (default 0.95; 1 = off)\n"
            "  --repeat-penalty R  divide the logits of recent tokens by R (default 1 = off)\n"
            "  --seed S          sampling seed (default 0): same seed, same text\n"
            "  --ctx N           context limit in tokens (default: the model's); longer\n"
            "                    conversations keep the first --sink-tokens (default 4)\n"
            "                    and the most recent tokens\n"
            "  --threads N       CPU threads (default: all cores)\n"
            "  --system TEXT     system message for --chat\n"
            "  --no-bos          do not prepend BOS even when the tokenizer asks for it\n"
            "  --quiet           no timing line on stderr\n"
            "  --vocab-subset N  greedy steps first try the N most frequent tokens (the\n"
            "                    bundle's frequency order) and fall back to the full\n"
            "                    lm_head unless a row-norm bound proves the winner: the\n"
            "                    output is identical; prints the hit rate (client bundles)\n"
            "  --device D        cpu, cuda or auto (default): where the client's ends of a\n"
            "                    step run (lookup, rotation, final norm, lm_head, greedy\n"
            "                    sampling); auto = CUDA when built with it and a GPU is\n"
            "                    present (also for generate, chat and bench)\n"
            "  --profile         after generating, a per-token table on stderr: p50/p95/p99\n"
            "                    and mean ms of each phase (embed, cloak, serialize, seal,\n"
            "                    network, open, uncloak, lm_head, sample; layers when they\n"
            "                    run here), prefill, time to first token, peak memory\n"
            "                    (also for generate and chat)\n"
            "\n"
            "infemeral run --client-bundle DIR/client --server-bundle DIR/server --prompt TEXT ...\n"
            "  the cloaked split path in one process: the client rotates the hidden\n"
            "  states, the server half runs the rotated layers, the client un-rotates\n"
            "  --noise-sigma S   add N(0, S^2) to each embedding before rotating\n"
            "  --dp-epsilon E --dp-delta D  the same, with S from the Gaussian mechanism\n"
            "                    and the embedding table's L2 sensitivity (S is printed)\n"
            "\n"
            "infemeral prep --model PATH --out DIR [--tokenizer PATH]\n"
            "               [--weights f32|f16|bf16|int4] [--no-rotate] [--quiet]\n"
            "               [--lm-head f16|f32|int8] [--vocab-freq FILE] [--no-fold]\n"
            "  --lm-head int8    the client's lm_head as int8 with a scale per row\n"
            "                    (half of f16; tied models keep the f16 lookup table)\n"
            "  --no-fold         store the embeddings and lm_head unrotated (the\n"
            "                    client then builds Q and rotates every token); by\n"
            "                    default Q is folded into them at prep time\n"
            "  --vocab-freq FILE text whose token counts order the vocabulary for\n"
            "                    --vocab-subset (default: bench/text/english.txt)\n"
            "  writes DIR/client (embeddings, lm_head, tokenizer, secret.key) and\n"
            "  DIR/server (norm-folded, rotated layers; int4 = group-wise, g=128)\n"
            "\n"
            "infemeral keygen --out DIR      DIR/worker.key (0600) and DIR/worker.pub\n"
            "\n"
            "infemeral generate --client-bundle DIR/client (--endpoint URL | --runpod ID)\n"
            "                   --worker-pub FILE --prompt TEXT [sampling options]\n"
            "infemeral chat     (the same connection options) [--prompt TEXT]\n"
            "  only sealed, cloaked hidden states leave this machine; --endpoint is a\n"
            "  dev server or load-balancer URL (bearer token from $INFEMERAL_API_KEY),\n"
            "  --runpod a RunPod endpoint id ($RUNPOD_API_KEY, $RUNPOD_ENDPOINT_BASE_URL)\n"
            "  --wire-dtype f16|bf16|f32 the states on the wire (default f16)\n"
            "\n"
            "infemeral bench (--model PATH | --client-bundle DIR --server-bundle DIR |\n"
            "                 --client-bundle DIR (--endpoint URL | --runpod ID) --worker-pub FILE)\n"
            "                [--runs N] [--warmup N] [--prompt TEXT] [--max-tokens N] [--json FILE]\n"
            "  greedy (--temperature 0 unless given), a fresh session per run, exactly\n"
            "  --max-tokens tokens (default 32; no stop at end of text) after a fixed\n"
            "  prompt; --runs measured runs (default 5) after --warmup (default 1);\n"
            "  prints the --profile table over all runs' decode tokens; --json FILE\n"
            "  writes the same numbers and the configuration\n"
            "infemeral bench --client-only --client-bundle DIR [--server-bundle DIR]\n"
            "  the network replaced by a worker in this process (the real seal/open on\n"
            "  both ends; without --server-bundle it returns the states unchanged), so\n"
            "  the client's phases are measured alone; a bundle without a tokenizer\n"
            "  gets a fixed prompt of token ids\n");
}

typedef struct {
    const char *model, *tokenizer, *prompt, *system;
    const char *client_bundle, *server_bundle;
    const char *endpoint, *runpod, *worker_pub, *wire_dtype; /* generate / chat: the remote worker */
    bool remote;
    float noise_sigma, dp_epsilon, dp_delta; /* < 0: not given */
    bool chat, no_bos, quiet;
    bool profile;             /* --profile: the phase table after each generation */
    bool bench;               /* infemeral bench */
    int runs, warmup;         /* bench */
    const char *json;         /* bench --json FILE */
    int max_tokens, ctx, threads;
    int sink_tokens; /* context window: tokens kept from the start when the window slides */
    int vocab_subset; /* --vocab-subset N (0: off) */
    const char *device; /* --device cpu|cuda|auto (NULL: auto) */
    bool client_only; /* bench --client-only: an in-process worker instead of the network */
    inf_sampler_params sp;
} run_opts;

/* bench's default prompt: fixed, about 30 tokens with the usual BPE tokenizers */
#define BENCH_PROMPT \
    "The quick brown fox jumps over the lazy dog. Write a short story about a fox who learns to read, " \
    "and tell me the name of the first book it finds."

static int parse_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "infemeral: %s '%s': expected an integer in [%ld, %ld]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_float(const char *opt, const char *v, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !isfinite(x)) {
        fprintf(stderr, "infemeral: %s '%s': expected a number\n", opt, v);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* bench: remote is decided by the options given (--endpoint / --runpod). */
static int parse_run(int argc, char **argv, run_opts *o, bool remote, bool chat, bool bench) {
    *o = (run_opts){.max_tokens = bench ? 32 : 256, .ctx = 0, .threads = 0, .sp = inf_sampler_defaults(),
                    .noise_sigma = -1, .dp_epsilon = -1, .dp_delta = -1, .remote = remote || bench, .chat = chat,
                    .bench = bench, .runs = 5, .warmup = 1, .sink_tokens = 4};
    if (bench) o->sp.temperature = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
#define NEEDV                                                                 \
    if (!v) {                                                                 \
        fprintf(stderr, "infemeral: option %s needs a value\n", a);           \
        return -1;                                                            \
    }                                                                         \
    i++;
        if (!strcmp(a, "--model")) { NEEDV o->model = v; }
        else if (!strcmp(a, "--tokenizer")) { NEEDV o->tokenizer = v; }
        else if (!strcmp(a, "--prompt")) { NEEDV o->prompt = v; }
        else if (!strcmp(a, "--system")) { NEEDV o->system = v; }
        else if (!strcmp(a, "--client-bundle")) { NEEDV o->client_bundle = v; }
        else if (!strcmp(a, "--server-bundle")) { NEEDV o->server_bundle = v; }
        else if (o->remote && !strcmp(a, "--endpoint")) { NEEDV o->endpoint = v; }
        else if (o->remote && !strcmp(a, "--runpod")) { NEEDV o->runpod = v; }
        else if (o->remote && !strcmp(a, "--worker-pub")) { NEEDV o->worker_pub = v; }
        else if (o->remote && !strcmp(a, "--wire-dtype")) { NEEDV o->wire_dtype = v; }
        else if (!strcmp(a, "--noise-sigma")) { NEEDV if (parse_float(a, v, &o->noise_sigma)) return -1; }
        else if (!strcmp(a, "--dp-epsilon")) { NEEDV if (parse_float(a, v, &o->dp_epsilon)) return -1; }
        else if (!strcmp(a, "--dp-delta")) { NEEDV if (parse_float(a, v, &o->dp_delta)) return -1; }
        else if (!strcmp(a, "--chat")) o->chat = true;
        else if (!strcmp(a, "--no-bos")) o->no_bos = true;
        else if (!strcmp(a, "--quiet")) o->quiet = true;
        else if (!strcmp(a, "--profile")) o->profile = true;
        else if (o->bench && !strcmp(a, "--runs")) { NEEDV if (parse_int(a, v, 1, 100000, &x)) return -1; o->runs = (int)x; }
        else if (o->bench && !strcmp(a, "--warmup")) { NEEDV if (parse_int(a, v, 0, 100000, &x)) return -1; o->warmup = (int)x; }
        else if (o->bench && !strcmp(a, "--json")) { NEEDV o->json = v; }
        else if (o->bench && !strcmp(a, "--client-only")) o->client_only = true;
        else if (!strcmp(a, "--device")) { NEEDV o->device = v; }
        else if (!strcmp(a, "--vocab-subset")) { NEEDV if (parse_int(a, v, 1, INF_MAX_VOCAB, &x)) return -1; o->vocab_subset = (int)x; }
        else if (!strcmp(a, "--max-tokens")) { NEEDV if (parse_int(a, v, 0, INF_MAX_CTX, &x)) return -1; o->max_tokens = (int)x; }
        else if (!strcmp(a, "--ctx")) { NEEDV if (parse_int(a, v, 1, INF_MAX_CTX, &x)) return -1; o->ctx = (int)x; }
        else if (!strcmp(a, "--sink-tokens")) { NEEDV if (parse_int(a, v, 0, 1 << 16, &x)) return -1; o->sink_tokens = (int)x; }
        else if (!strcmp(a, "--threads")) { NEEDV if (parse_int(a, v, 1, 1024, &x)) return -1; o->threads = (int)x; }
        else if (!strcmp(a, "--top-k")) { NEEDV if (parse_int(a, v, 0, INT_MAX, &x)) return -1; o->sp.top_k = (int)x; }
        else if (!strcmp(a, "--repeat-last-n")) { NEEDV if (parse_int(a, v, 0, 1 << 20, &x)) return -1; o->sp.repeat_last_n = (int)x; }
        else if (!strcmp(a, "--seed")) {
            NEEDV
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v || v[0] == '-') {
                fprintf(stderr, "infemeral: --seed '%s': expected a non-negative integer\n", v);
                return -1;
            }
            o->sp.seed = s;
        }
        else if (!strcmp(a, "--temperature")) { NEEDV if (parse_float(a, v, &o->sp.temperature)) return -1; }
        else if (!strcmp(a, "--top-p")) { NEEDV if (parse_float(a, v, &o->sp.top_p)) return -1; }
        else if (!strcmp(a, "--repeat-penalty")) { NEEDV if (parse_float(a, v, &o->sp.repeat_penalty)) return -1; }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        else {
            fprintf(stderr, "infemeral %s: unknown option '%s' (see infemeral --help)\n",
                    bench ? "bench" : remote ? (chat ? "chat" : "generate") : "run", a);
            return -1;
        }
#undef NEEDV
    }
    if (bench) {
        if (o->chat) {
            fprintf(stderr, "infemeral bench: --chat is not supported (bench runs a plain prompt)\n");
            return -1;
        }
        o->remote = !o->client_only && (o->endpoint || o->runpod || o->worker_pub || o->wire_dtype);
        if (!o->prompt) o->prompt = BENCH_PROMPT;
        o->profile = true;
        if (o->client_only) {
            if (!o->client_bundle || o->model || o->endpoint || o->runpod || o->worker_pub) {
                fprintf(stderr, "infemeral bench --client-only takes --client-bundle DIR (and optionally "
                                "--server-bundle DIR), not --model, --endpoint, --runpod or --worker-pub\n");
                return -1;
            }
            return 0;
        }
    }
    if (o->remote) {
        if (!o->client_bundle || o->server_bundle || o->model) {
            fprintf(stderr, "infemeral: generate, chat and a remote bench take --client-bundle DIR (the server bundle lives on the worker)\n");
            return -1;
        }
        if (!o->endpoint == !o->runpod) {
            fprintf(stderr, "infemeral: give exactly one of --endpoint URL and --runpod ENDPOINT_ID\n");
            return -1;
        }
        if (!o->worker_pub) {
            fprintf(stderr, "infemeral: --worker-pub FILE (the worker's public key, from infemeral keygen) is required\n");
            return -1;
        }
        if (!o->prompt && !o->chat) {
            fprintf(stderr, "infemeral generate: --prompt TEXT is required\n");
            return -1;
        }
        return 0;
    }
    bool split = o->client_bundle || o->server_bundle;
    if (split && !(o->client_bundle && o->server_bundle)) {
        fprintf(stderr, "infemeral run: --client-bundle and --server-bundle go together\n");
        return -1;
    }
    if (split && o->model) {
        fprintf(stderr, "infemeral run: give --model PATH or the two bundles, not both\n");
        return -1;
    }
    if (!o->model && !split) {
        fprintf(stderr, "infemeral run: --model PATH (or --client-bundle and --server-bundle) is required\n");
        return -1;
    }
    if (o->noise_sigma >= 0 && (o->dp_epsilon >= 0 || o->dp_delta >= 0)) {
        fprintf(stderr, "infemeral run: give --noise-sigma or --dp-epsilon/--dp-delta, not both\n");
        return -1;
    }
    if ((o->dp_epsilon >= 0) != (o->dp_delta >= 0)) {
        fprintf(stderr, "infemeral run: --dp-epsilon and --dp-delta go together\n");
        return -1;
    }
    if (!split && (o->noise_sigma >= 0 || o->dp_epsilon >= 0)) {
        fprintf(stderr, "infemeral run: noise options need the split path (--client-bundle/--server-bundle)\n");
        return -1;
    }
    if (!o->prompt && !o->chat) {
        fprintf(stderr, "infemeral run: give --prompt TEXT, or --chat for an interactive chat\n");
        return -1;
    }
    return 0;
}

/* ---- tokenizer discovery ---------------------------------------------------- */

static inf_status load_tokenizer(const run_opts *o, const inf_model *m, tok_tokenizer **out,
                                 char **tmpl, inf_error *err) {
    if (o->tokenizer) return tok_load_file(o->tokenizer, m->cfg.vocab_size, out, tmpl, err);
    if (o->client_bundle) {
        static const char *names[] = {"tokenizer.gguf", "tokenizer.json", "tokenizer.model", "tokenizer.bin"};
        for (int i = 0; i < 4; i++) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", o->client_bundle, names[i]);
            if (access(path, F_OK) == 0) return tok_load_file(path, m->cfg.vocab_size, out, tmpl, err);
        }
        return inf_fail(err, INF_E_NOTFOUND, "%s: the client bundle has no tokenizer file", o->client_bundle);
    }
    switch (m->source) {
    case INF_SRC_GGUF: return tok_load_file(o->model, m->cfg.vocab_size, out, tmpl, err);
    case INF_SRC_SAFETENSORS:
    case INF_SRC_AWQ: {
        char path[2048];
        tok_hf_path(o->model, path, sizeof path);
        return tok_load_hf_json(path, out, err);
    }
    default:
        return inf_fail(err, INF_E_NOTFOUND,
                        "%s: this model file carries no tokenizer; pass --tokenizer PATH", o->model);
    }
}

/* ---- streaming output ----------------------------------------------------------- */

typedef struct {
    const tok_tokenizer *tok;
    tok_stream stream;
    char *reply; /* assistant text of this turn (for chat history) */
    size_t reply_len, reply_cap;
    int32_t *gen; /* tokens generated this turn */
    int n_gen, gen_cap;
} out_ctx;

static void out_write(out_ctx *c, const char *s, size_t n) {
    if (n == 0) return;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    if (c->reply_len + n + 1 > c->reply_cap) {
        size_t cap = (c->reply_cap + n + 1) * 2;
        char *r = realloc(c->reply, cap);
        if (!r) return;
        c->reply = r;
        c->reply_cap = cap;
    }
    memcpy(c->reply + c->reply_len, s, n);
    c->reply_len += n;
    c->reply[c->reply_len] = '\0';
}

static bool on_token(int32_t id, void *user) {
    out_ctx *c = user;
    if (c->n_gen == c->gen_cap) {
        int cap = c->gen_cap ? c->gen_cap * 2 : 256;
        int32_t *g = realloc(c->gen, sizeof *g * (size_t)cap);
        if (!g) return false;
        c->gen = g;
        c->gen_cap = cap;
    }
    c->gen[c->n_gen++] = id;
    if (tok_is_eog(c->tok, id)) return true;
    char buf[256];
    size_t n = tok_stream_push(&c->stream, id, buf, sizeof buf);
    out_write(c, buf, n);
    return true;
}

static bool is_stop(int32_t id, void *user) {
    out_ctx *c = user;
    return tok_is_eog(c->tok, id);
}

static void report(const run_opts *o, const inf_gen_stats *st) {
    if (o->quiet) return;
    double pre = st->prefill_s > 0 ? st->n_prompt / st->prefill_s : 0;
    double dec = st->n_gen > 1 && st->decode_s > 0 ? (st->n_gen - 1) / st->decode_s : 0;
    fprintf(stderr, "[prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s]\n",
            st->n_prompt, pre, st->n_gen, dec);
}

/* ---- run ---------------------------------------------------------------------------- */

typedef struct {
    int32_t *ids; /* tokens whose K/V are cached, position = index */
    int n, cap;
} token_log;

/* cached = a[0..na) followed by b[0..nb) */
static int log_set(token_log *l, const int32_t *a, int na, const int32_t *b, int nb) {
    if (na + nb > l->cap) {
        int32_t *p = realloc(l->ids, sizeof *p * (size_t)(na + nb));
        if (!p) return -1;
        l->ids = p;
        l->cap = na + nb;
    }
    memmove(l->ids, a, sizeof *a * (size_t)na);
    if (nb > 0) memcpy(l->ids + na, b, sizeof *b * (size_t)nb);
    l->n = na + nb;
    return 0;
}

/* One generation over `ids` (the whole conversation so far): reuse the cached
 * prefix, prefill the rest, stream the reply. */
static inf_status run_turn(const run_opts *o, const inf_gen *g, const inf_gen_device *dev, inf_profile *prof, inf_sampler *s,
                           token_log *cached, const int32_t *ids, int n, out_ctx *out, inf_gen_stats *st,
                           inf_error *err) {
    /* Context window. When the conversation and the reply would not fit, keep
     * the first sink_tokens tokens (attention sinks) and the most recent ones,
     * with positions renumbered: the worker truncates the session to the sinks
     * and recomputes the window after them, so every key is rotated (RoPE) at
     * a position inside the window and nothing stored is re-rotated. */
    const int ctx = o->ctx > 0 && o->ctx < g->model->cfg.max_seq ? o->ctx : g->model->cfg.max_seq;
    const int budget = ctx - o->max_tokens; /* room for the prompt */
    int32_t *window = NULL;
    if (n > budget) {
        int sinks = o->sink_tokens;
        if (budget < sinks + 1)
            return inf_fail(err, INF_E_ARG,
                            "the context (%d tokens) cannot hold --max-tokens %d plus %d attention-sink tokens and a prompt",
                            ctx, o->max_tokens, sinks);
        window = malloc(sizeof *window * (size_t)budget);
        if (!window) return inf_fail(err, INF_E_NOMEM, "out of memory");
        memcpy(window, ids, sizeof *window * (size_t)sinks);
        memcpy(window + sinks, ids + (n - (budget - sinks)), sizeof *window * (size_t)(budget - sinks));
        if (!o->quiet)
            fprintf(stderr, "context: %d tokens and %d to generate exceed %d; keeping the first %d and the last %d\n",
                    n, o->max_tokens, ctx, sinks, budget - sinks);
        ids = window;
        n = budget;
    }
    int common = 0;
    while (common < n && common < cached->n && cached->ids[common] == ids[common]) common++;
    if (common == n) common = n - 1; /* at least one token must go in to get logits */
    int pos = common;
    tok_stream_init(&out->stream, out->tok);
    tok_stream_after(&out->stream, ids[n - 1]); /* only a BOS before it strips a leading space */
    out->reply_len = 0;
    out->n_gen = 0;
    inf_status rc = inf_generate_device(g, dev, prof, &pos, ids + common, n - common, o->max_tokens, s, on_token,
                                          is_stop, out, st, err);
    if (rc) {
        free(window);
        return rc;
    }
    char buf[64];
    out_write(out, buf, tok_stream_flush(&out->stream, buf, sizeof buf));
    /* the cache now holds ids[0..n) and every generated token but the pending one */
    int ran = out->n_gen - (st->pending >= 0 ? 1 : 0);
    int bad = log_set(cached, ids, n, out->gen, ran > 0 ? ran : 0);
    free(window);
    if (bad) return inf_fail(err, INF_E_NOMEM, "out of memory");
    return INF_OK;
}

/* The client's secret rotation and optional noise for the split path. */
static inf_status split_setup(const run_opts *o, const inf_model *cm, rot_ctx *rot, cloak_ctx *cloak,
                              bool *have_rot, bool *have_cloak, inf_error *err) {
    double sigma = o->noise_sigma > 0 ? o->noise_sigma : 0.0;
    inf_status st;
    if (o->dp_epsilon >= 0) {
        double l2;
        if ((st = cloak_sensitivity(cm, &l2, err))) return st;
        if ((st = cloak_sigma_for_dp(o->dp_epsilon, o->dp_delta, l2, &sigma, err))) return st;
        fprintf(stderr, "cloak: L2 sensitivity of the embedding table %.4g; epsilon %g, delta %g -> noise sigma %.4g\n",
                l2, o->dp_epsilon, o->dp_delta, sigma);
    } else if (sigma > 0) {
        fprintf(stderr, "cloak: noise sigma %.4g\n", sigma);
    }
    if (strcmp(cm->rotation, "none") == 0) {
        if (sigma > 0)
            return inf_fail(err, INF_E_ARG, "%s: noise needs a rotated bundle (this one was prepared with --no-rotate)",
                            o->client_bundle);
        return INF_OK; /* nothing to hide: the unrotated bundle runs as is */
    }
    char path[2048];
    rot_seed seed;
    snprintf(path, sizeof path, "%s/%s", o->client_bundle, INF_BUNDLE_SEED_FILE);
    if ((st = rot_seed_read(path, &seed, err))) return st;
    char fp[ROT_FINGERPRINT_LEN];
    st = rot_fingerprint(&seed, cm->cfg.dim, fp, err);
    if (!st && strcmp(fp, cm->rotation) != 0)
        st = inf_fail(err, INF_E_ARG, "%s does not belong to this bundle (its fingerprint differs)", path);
    if (!st) st = rot_ctx_init(rot, &seed, cm->cfg.dim, false, err);
    rot_seed_wipe(&seed);
    if (st) return st;
    *have_rot = true;
    if ((st = cloak_init(cloak, rot, sigma, err))) return st;
    *have_cloak = true;
    if (cm->rot_folded) cloak_set_prerotated(cloak); /* Q is then never built */
    return INF_OK;
}

static int cmd_prep(int argc, char **argv) {
    prep_opts o = {.weights = PREP_F16, .rotate = true, .progress = true};
    inf_error err = {{0}};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((!strcmp(a, "--model") || !strcmp(a, "--out") || !strcmp(a, "--tokenizer") ||
             !strcmp(a, "--weights") || !strcmp(a, "--lm-head") || !strcmp(a, "--vocab-freq")) && !v) {
            fprintf(stderr, "infemeral prep: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) o.model = argv[++i];
        else if (!strcmp(a, "--out")) o.out = argv[++i];
        else if (!strcmp(a, "--tokenizer")) o.tokenizer = argv[++i];
        else if (!strcmp(a, "--weights")) {
            if (prep_parse_weights(argv[++i], &o.weights, &err)) {
                fprintf(stderr, "infemeral prep: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--lm-head")) {
            if (prep_parse_lm_head(argv[++i], &o.lm_head, &err)) {
                fprintf(stderr, "infemeral prep: %s\n", err.msg);
                return 2;
            }
        } else if (!strcmp(a, "--vocab-freq")) o.vocab_freq = argv[++i];
        else if (!strcmp(a, "--no-rotate")) o.rotate = false;
        else if (!strcmp(a, "--no-fold")) o.no_fold = true;
        else if (!strcmp(a, "--quiet")) o.progress = false;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "infemeral prep: unknown option '%s' (see infemeral --help)\n", a);
            return 2;
        }
    }
    if (!o.model || !o.out) {
        fprintf(stderr, "infemeral prep: --model PATH and --out DIR are required\n");
        return 2;
    }
    if (prep_run(&o, &err)) {
        fprintf(stderr, "infemeral prep: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---- a session: the model halves, the cloak, the worker, the caches ------------------ */

static bool has_tokenizer(const run_opts *o) {
    if (o->tokenizer) return true;
    static const char *names[] = {"tokenizer.gguf", "tokenizer.json", "tokenizer.model", "tokenizer.bin"};
    for (int i = 0; i < 4; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", o->client_bundle, names[i]);
        if (access(path, F_OK) == 0) return true;
    }
    return false;
}

/* What the client's weights cost in memory, and what tying / int8 saved. */
static void client_memory_log(const run_opts *o, const inf_model *m) {
    if (o->quiet) return;
    const double mib = 1.0 / (1 << 20);
    const double emb = (double)m->tok_embd.nbytes * mib;
    if (m->lm_head.data == m->tok_embd.data) {
        fprintf(stderr, "client: tied embeddings: one %s table (%.1f MiB) serves lookup and lm_head, the final gain "
                        "goes on the hidden state: %.1f MiB saved\n",
                inf_dtype_name(m->tok_embd.dtype), emb, emb);
    } else if (m->lm_head.dtype == INF_DT_I8) {
        double head = ((double)m->lm_head.nbytes + 4.0 * m->cfg.vocab_size) * mib;
        double f16 = 2.0 * (double)m->cfg.vocab_size * m->cfg.dim * mib;
        if (m->cfg.tied_embeddings)
            fprintf(stderr, "client: tied embeddings with an int8 lm_head: the %s lookup table (%.1f MiB) stays and the "
                            "int8 copy costs %.1f MiB more\n",
                    inf_dtype_name(m->tok_embd.dtype), emb, head);
        else
            fprintf(stderr, "client: int8 lm_head, %.1f MiB with its row scales (f16: %.1f MiB, %.1f MiB saved)\n", head,
                    f16, f16 - head);
    }
    if (m->rot_folded) {
        double q = 4.0 * m->cfg.dim * (double)m->cfg.dim;
        fprintf(stderr, "client: rotation folded into the bundle: %s %d x %d product per token instead of two, Q (%.1f MiB) "
                        "never built\n",
                m->out_gain_rot ? "one (the tied gain)" : "no", m->cfg.dim, m->cfg.dim, q * mib);
    }
}

typedef enum { MODE_LOCAL, MODE_SPLIT, MODE_REMOTE, MODE_CLIENT_ONLY } run_mode;
static const char *const mode_names[] = {"local", "split", "remote", "client-only"};

/* What one generation needs, built from the options. The layers structs
 * point into the session, so a session does not move once opened. */
typedef struct {
    run_mode mode;
    inf_model *m, *sm;         /* sm: the server bundle in the split path */
    inf_remote_opts ro;
    inf_remote *remote;        /* generate / chat: the worker session */
    rot_ctx rot;
    cloak_ctx cloak;
    bool have_rot, have_cloak;
    tok_tokenizer *tok;
    char *tmpl;
    inf_kv kv;
    inf_sampler s;
    inf_local_layers local;
    inf_timed_layers timed;    /* local and split: the "layers" phase */
    inf_cloaked_layers cloaked; /* split and remote */
    inf_gen g;
    inf_profile prof;
    inf_profile *profp;        /* &prof with --profile, else NULL */
    inf_loopback loop;         /* client-only: the in-process worker */
    bool have_loop;
    inf_vocab_subset subset;   /* --vocab-subset */
    bool have_subset;
    inf_cc *cc;                /* --device cuda: the client's ends on the GPU */
    cc_gen ccg;
    inf_gen_device gdev;
    const inf_gen_device *devp; /* &gdev on the GPU, else NULL */
} session;

/* --device: the CUDA client path when chosen (client/cuda/client_cuda.h).
 * The device also applies the rotation when the cloak adds no noise (the
 * noise stream is the host's); the layers then get its rows as they are. */
static inf_status device_setup(const run_opts *o, session *S, inf_error *err) {
    bool use = false;
    inf_status st = cc_choose(o->device, "--device", &use, err);
    if (st || !use) return st;
    const bool rotate = S->have_cloak && !S->cloak.prerotated && S->cloak.sigma == 0.0 && S->cloaked.inner;
    double t = inf_now();
    st = cc_open_rot(S->m, rotate ? &S->rot : NULL, &S->cc, err);
    if (st == INF_E_UNSUPPORTED && (!o->device || strcmp(o->device, "cuda"))) {
        fprintf(stderr, "infemeral: the CUDA client path cannot run this model (%s); using the CPU\n", err->msg);
        return INF_OK;
    }
    if (st) return st;
    S->ccg = (cc_gen){S->cc, rotate};
    S->gdev = (inf_gen_device){&S->ccg, cc_gen_embed, cc_gen_next};
    S->devp = &S->gdev;
    if (rotate) {
        S->g.layers = S->cloaked.inner;
        S->g.layers_ctx = S->cloaked.inner_ctx;
    }
    if (!o->quiet) {
        fprintf(stderr, "client device: %s (set up in %.0f ms)\n", cc_describe(S->cc), 1e3 * (inf_now() - t));
        if (S->have_subset) fprintf(stderr, "--vocab-subset is not used on the GPU: it computes the full lm_head\n");
    }
    return INF_OK;
}

static inf_status session_open(const run_opts *o, session *S, inf_error *err) {
    inf_status st;
    memset(S, 0, sizeof *S);
    inf_profile_init(&S->prof);
    S->profp = o->profile ? &S->prof : NULL;
    if (o->model) {
        S->mode = MODE_LOCAL;
        if ((st = inf_model_load(o->model, &S->m, err))) return st;
    } else if (o->remote) {
        S->mode = MODE_REMOTE;
        if ((st = inf_model_load_client_bundle(o->client_bundle, &S->m, err))) return st;
        if ((st = split_setup(o, S->m, &S->rot, &S->cloak, &S->have_rot, &S->have_cloak, err))) return st;
        inf_remote_opts *ro = &S->ro;
        inf_remote_opts_init(ro);
        ro->endpoint = o->endpoint;
        ro->runpod_id = o->runpod;
        ro->api_key = getenv(o->runpod ? "RUNPOD_API_KEY" : "INFEMERAL_API_KEY");
        if (o->runpod && (!ro->api_key || !*ro->api_key))
            return inf_fail(err, INF_E_ARG, "--runpod needs RUNPOD_API_KEY in the environment");
        if (o->wire_dtype && (st = wire_dtype_parse(o->wire_dtype, "--wire-dtype", &ro->dtype, err))) return st;
        if ((st = keys_read_public(o->worker_pub, &ro->worker_pub, err))) return st;
        if ((st = inf_remote_open(ro, S->m->cfg.dim, &S->remote, err))) return st;
        inf_remote_set_profile(S->remote, S->profp);
    } else if (o->client_only && !o->server_bundle) {
        S->mode = MODE_CLIENT_ONLY;
        if ((st = inf_model_load_client_bundle(o->client_bundle, &S->m, err))) return st;
        if ((st = split_setup(o, S->m, &S->rot, &S->cloak, &S->have_rot, &S->have_cloak, err))) return st;
    } else {
        S->mode = o->client_only ? MODE_CLIENT_ONLY : MODE_SPLIT;
        if ((st = inf_model_load_client_bundle(o->client_bundle, &S->m, err))) return st;
        if ((st = inf_model_load_server_bundle(o->server_bundle, &S->sm, err))) return st;
        if (strcmp(S->m->rotation, S->sm->rotation) != 0)
            return inf_fail(err, INF_E_ARG,
                            "%s and %s come from different preps (rotation %.16s... vs %.16s...): the output would be noise",
                            o->client_bundle, o->server_bundle, S->m->rotation, S->sm->rotation);
        if ((st = split_setup(o, S->m, &S->rot, &S->cloak, &S->have_rot, &S->have_cloak, err))) return st;
    }
    if (o->client_bundle) client_memory_log(o, S->m);
    if (o->client_only && !has_tokenizer(o)) {
        /* a bundle without a tokenizer (bench/mkbundle): bench feeds ids */
    } else if ((st = load_tokenizer(o, S->m, &S->tok, &S->tmpl, err))) {
        return st;
    } else if (tok_vocab_size(S->tok) > S->m->cfg.vocab_size)
        return inf_fail(err, INF_E_SHAPE, "tokenizer has %d tokens but the model's vocabulary is %d",
                        tok_vocab_size(S->tok), S->m->cfg.vocab_size);
    int ctx = o->ctx > 0 && o->ctx < S->m->cfg.max_seq ? o->ctx : S->m->cfg.max_seq;
    if ((st = inf_kv_init(&S->kv, &S->m->cfg, ctx, err))) return st;
    if ((st = inf_sampler_init(&S->s, &o->sp, S->m->cfg.vocab_size, err))) return st;
    if (o->vocab_subset > 0) {
        double t = inf_now();
        if ((st = inf_vocab_subset_init(&S->subset, S->m, o->vocab_subset, err))) return st;
        S->have_subset = true;
        S->s.subset = &S->subset;
        if (!o->quiet)
            fprintf(stderr, "vocab subset: the %d most frequent of %d tokens first at temperature 0 (bound set up in %.0f ms)\n",
                    o->vocab_subset, S->m->cfg.vocab_size, 1e3 * (inf_now() - t));
    }
    /* local:  layers(model)
     * split:  cloak -> layers(server bundle) -> uncloak   (as inf_split_layers_fn)
     * remote: cloak -> serialize, seal, network, open      -> uncloak */
    void *cloak = S->have_cloak ? &S->cloak : NULL;
    const int dim = S->m->cfg.dim;
    S->local = (inf_local_layers){S->sm ? S->sm : S->m, &S->kv};
    S->timed = (inf_timed_layers){inf_local_layers_fn, &S->local, S->profp};
    S->g = (inf_gen){S->m, inf_timed_layers_fn, &S->timed, 256};
    if (S->mode == MODE_SPLIT) {
        S->cloaked = (inf_cloaked_layers){inf_timed_layers_fn, &S->timed, cloak, dim, S->profp};
        S->g.layers = inf_cloaked_layers_fn;
        S->g.layers_ctx = &S->cloaked;
    } else if (S->mode == MODE_REMOTE) {
        S->cloaked = (inf_cloaked_layers){inf_remote_layers_fn, S->remote, cloak, dim, S->profp};
        S->g.layers = inf_cloaked_layers_fn;
        S->g.layers_ctx = &S->cloaked;
    } else if (S->mode == MODE_CLIENT_ONLY) {
        wire_dtype wd = WIRE_F16;
        if (o->wire_dtype && (st = wire_dtype_parse(o->wire_dtype, "--wire-dtype", &wd, err))) return st;
        /* the in-process worker runs the server bundle's layers untimed by
         * the client (its time is the "network" phase), or echoes */
        if ((st = inf_loopback_open(&S->loop, dim, wd, S->sm ? inf_local_layers_fn : NULL, S->sm ? &S->local : NULL,
                                    S->profp, err)))
            return st;
        S->have_loop = true;
        S->cloaked = (inf_cloaked_layers){inf_loopback_layers_fn, &S->loop, cloak, dim, S->profp};
        S->g.layers = inf_cloaked_layers_fn;
        S->g.layers_ctx = &S->cloaked;
    }
    return device_setup(o, S, err);
}

/* A fresh session on the same weights (bench): an empty cache, a new
 * sampler and, for a worker, a new session id and key (a new connection). */
static inf_status session_restart(const run_opts *o, session *S, inf_error *err) {
    inf_status st;
    inf_kv_truncate(&S->kv, 0);
    inf_sampler_free(&S->s);
    if ((st = inf_sampler_init(&S->s, &o->sp, S->m->cfg.vocab_size, err))) return st;
    if (S->have_subset) S->s.subset = &S->subset;
    if (S->have_loop) {
        inf_loopback lb = S->loop;
        inf_loopback_close(&S->loop);
        if ((st = inf_loopback_open(&S->loop, lb.dim, lb.dtype, lb.inner, lb.inner_ctx, lb.prof, err))) {
            S->have_loop = false;
            return st;
        }
    }
    if (S->mode == MODE_REMOTE) {
        inf_remote_close(S->remote);
        S->remote = NULL;
        if ((st = inf_remote_open(&S->ro, S->m->cfg.dim, &S->remote, err))) return st;
        inf_remote_set_profile(S->remote, S->profp);
        S->cloaked.inner_ctx = S->remote;
    }
    return INF_OK;
}

static void session_close(session *S) {
    free(S->tmpl);
    inf_sampler_free(&S->s);
    inf_kv_free(&S->kv);
    tok_free(S->tok);
    inf_remote_close(S->remote);
    if (S->have_loop) inf_loopback_close(&S->loop);
    if (S->have_subset) inf_vocab_subset_free(&S->subset);
    cc_close(S->cc);
    if (S->have_cloak) cloak_free(&S->cloak);
    if (S->have_rot) rot_ctx_free(&S->rot);
    inf_model_free(S->sm);
    inf_model_free(S->m);
    inf_profile_free(&S->prof);
    memset(S, 0, sizeof *S);
}

/* --vocab-subset: how often the bound proved the subset's winner. */
static void subset_report(const run_opts *o, const session *S) {
    if (!S->have_subset || o->quiet) return;
    const inf_vocab_subset *v = &S->subset;
    fprintf(stderr, "vocab subset %d: %ld of %ld greedy steps proved in the subset (%.1f%%), the rest computed the full lm_head\n",
            v->n, v->hits, v->steps, v->steps ? 100.0 * v->hits / v->steps : 0.0);
}

/* --profile after one generation: the table, then a clean profile for the next turn. */
static void profile_report(session *S, const inf_gen_stats *gs) {
    if (!S->profp) return;
    inf_profile_totals t = {
        .runs = 1,
        .n_prompt = gs->n_prompt,
        .n_gen = gs->n_gen,
        .prefill_s = gs->prefill_s,
        .ttft_s = gs->prefill_s,
        .decode_tok_s = gs->n_gen > 1 && gs->decode_s > 0 ? (gs->n_gen - 1) / gs->decode_s : 0,
        .peak_mib = inf_peak_rss_mib(),
    };
    inf_profile_print(stderr, S->profp, &t);
    inf_profile_reset(S->profp);
}

/* Generation uses BLAS only for the per-token rotation (a d x d matrix-vector
 * product): OpenBLAS's own threads would spin against the OpenMP threads of
 * the forward pass and the lm_head, which measured p95 token latency 116 ms
 * instead of 31 ms on 2 cores. prep keeps BLAS threads for its big GEMMs. */
static void quiet_blas(void) { openblas_set_num_threads(1); }

static int cmd_run(int argc, char **argv, bool remote, bool chat) {
    run_opts o;
    if (parse_run(argc, argv, &o, remote, chat, false)) return 2;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    quiet_blas();
    inf_error err = {{0}};
    session S;
    token_log cached = {0};
    out_ctx out = {0};
    int32_t *ids = NULL;
    char *text = NULL;
    chat_msg *msgs = NULL;
    size_t n_msgs = 0;
    int rc = 1;
    inf_status st;

    if ((st = session_open(&o, &S, &err))) goto fail;
    out.tok = S.tok;
    size_t n_ids;

    if (!o.chat) {
        bool bos = !o.no_bos && tok_add_bos(S.tok);
        if ((st = tok_encode(S.tok, o.prompt, strlen(o.prompt), bos, true, &ids, &n_ids, &err))) goto fail;
        if (n_ids == 0) {
            st = inf_fail(&err, INF_E_ARG, "the prompt is empty and this tokenizer adds no BOS token; give some text");
            goto fail;
        }
        inf_gen_stats gs;
        if ((st = run_turn(&o, &S.g, S.devp, S.profp, &S.s, &cached, ids, (int)n_ids, &out, &gs, &err))) goto fail;
        fputc('\n', stdout);
        fflush(stdout);
        report(&o, &gs);
        profile_report(&S, &gs);
        subset_report(&o, &S);
        rc = 0;
        goto done;
    }

    chat_format fmt = chat_detect(S.tok, S.tmpl);
    if (fmt == CHAT_NONE) {
        st = inf_fail(&err, INF_E_UNSUPPORTED, "%s: no chat template is known for this model; use --prompt without --chat",
                      o.model);
        goto fail;
    }
    size_t cap_msgs = 16;
    msgs = calloc(cap_msgs, sizeof *msgs);
    if (!msgs) { st = inf_fail(&err, INF_E_NOMEM, "out of memory"); goto fail; }
    if (o.system) msgs[n_msgs++] = (chat_msg){"system", strdup(o.system)};
    bool interactive = o.prompt == NULL;
    char *line = NULL;
    size_t line_cap = 0;
    for (;;) {
        const char *user_text = o.prompt;
        if (interactive) {
            if (isatty(STDIN_FILENO)) fputs("> ", stderr);
            ssize_t got = getline(&line, &line_cap, stdin);
            if (got < 0) break;
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
            if (got == 0) continue;
            user_text = line;
        }
        if (n_msgs + 2 > cap_msgs) {
            cap_msgs *= 2;
            chat_msg *nm = realloc(msgs, cap_msgs * sizeof *msgs);
            if (!nm) { st = inf_fail(&err, INF_E_NOMEM, "out of memory"); free(line); goto fail; }
            msgs = nm;
        }
        msgs[n_msgs++] = (chat_msg){"user", strdup(user_text)};
        free(text);
        text = NULL;
        if ((st = chat_render(fmt, msgs, n_msgs, true, NULL, &text, &err))) { free(line); goto fail; }
        free(ids);
        ids = NULL;
        if ((st = tok_encode(S.tok, text, strlen(text), false, true, &ids, &n_ids, &err))) { free(line); goto fail; }
        inf_gen_stats gs;
        if ((st = run_turn(&o, &S.g, S.devp, S.profp, &S.s, &cached, ids, (int)n_ids, &out, &gs, &err))) { free(line); goto fail; }
        fputc('\n', stdout);
        fflush(stdout);
        report(&o, &gs);
        profile_report(&S, &gs);
        msgs[n_msgs++] = (chat_msg){"assistant", strdup(out.reply ? out.reply : "")};
        if (!interactive) break;
    }
    free(line);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "infemeral: %s\n", err.msg[0] ? err.msg : inf_strstatus(st));
    rc = 1;
done:
    for (size_t i = 0; i < n_msgs; i++) free((void *)msgs[i].content);
    free(msgs);
    free(text);
    free(ids);
    free(cached.ids);
    free(out.reply);
    free(out.gen);
    session_close(&S);
    return rc;
}

/* ---- bench ------------------------------------------------------------------------------ */

typedef struct {
    int n_prompt, n_gen;
    double prefill_s, decode_s;
} bench_run;

static cJSON *bench_json(const run_opts *o, const session *S, const inf_profile_totals *t, const bench_run *runs) {
    cJSON *root = inf_profile_to_json(&S->prof, t);
    if (!root) return NULL;
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON *arr = cJSON_AddArrayToObject(root, "per_run");
    if (!cfg || !arr) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(cfg, "mode", mode_names[S->mode]);
    if (o->model) cJSON_AddStringToObject(cfg, "model", o->model);
    if (o->client_bundle) cJSON_AddStringToObject(cfg, "client_bundle", o->client_bundle);
    if (o->server_bundle) cJSON_AddStringToObject(cfg, "server_bundle", o->server_bundle);
    if (o->endpoint) cJSON_AddStringToObject(cfg, "endpoint", o->endpoint);
    if (o->runpod) cJSON_AddStringToObject(cfg, "runpod", o->runpod);
    if (S->mode == MODE_REMOTE) cJSON_AddStringToObject(cfg, "wire_dtype", wire_dtype_name(S->ro.dtype));
    else cJSON_AddNullToObject(cfg, "wire_dtype");
    cJSON_AddBoolToObject(cfg, "rotated", S->have_rot);
    cJSON_AddNumberToObject(cfg, "noise_sigma", S->have_cloak ? S->cloak.sigma : 0.0);
    cJSON_AddNumberToObject(cfg, "runs", o->runs);
    cJSON_AddNumberToObject(cfg, "warmup", o->warmup);
    cJSON_AddNumberToObject(cfg, "max_tokens", o->max_tokens);
    cJSON_AddStringToObject(cfg, "prompt", o->prompt);
    cJSON_AddNumberToObject(cfg, "prompt_tokens", t->n_prompt);
    cJSON_AddNumberToObject(cfg, "temperature", o->sp.temperature);
    cJSON_AddBoolToObject(cfg, "stops_at_end_of_text", false);
    cJSON_AddNumberToObject(cfg, "threads", omp_get_max_threads());
    cJSON_AddStringToObject(cfg, "isa", gemv_isa_name(gemv_isa_active()));
    cJSON_AddStringToObject(cfg, "lm_head", inf_dtype_name(S->m->lm_head.dtype));
    cJSON_AddBoolToObject(cfg, "tied_embeddings", S->m->lm_head.data == S->m->tok_embd.data);
    cJSON_AddNumberToObject(cfg, "vocab_subset", o->vocab_subset);
    cJSON_AddStringToObject(cfg, "device", S->cc ? "cuda" : "cpu");
    if (S->have_subset) {
        cJSON *vs = cJSON_AddObjectToObject(root, "vocab_subset");
        if (vs) {
            cJSON_AddNumberToObject(vs, "steps", S->subset.steps);
            cJSON_AddNumberToObject(vs, "hits", S->subset.hits);
            cJSON_AddNumberToObject(vs, "hit_rate", S->subset.steps ? (double)S->subset.hits / S->subset.steps : 0.0);
        }
    }
    cJSON_AddStringToObject(cfg, "version", INF_VERSION);
    for (int r = 0; r < o->runs; r++) {
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        const bench_run *b = &runs[r];
        cJSON_AddNumberToObject(x, "prompt_tokens", b->n_prompt);
        cJSON_AddNumberToObject(x, "generated_tokens", b->n_gen);
        cJSON_AddNumberToObject(x, "ttft_ms", b->prefill_s * 1e3);
        cJSON_AddNumberToObject(x, "decode_ms", b->decode_s * 1e3);
        cJSON_AddNumberToObject(x, "tokens_per_s", b->n_gen > 1 && b->decode_s > 0 ? (b->n_gen - 1) / b->decode_s : 0);
        cJSON_AddItemToArray(arr, x);
    }
    return root;
}

static int cmd_bench(int argc, char **argv) {
    run_opts o;
    if (parse_run(argc, argv, &o, false, false, true)) return 2;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    quiet_blas();
    inf_error err = {{0}};
    session S;
    int32_t *ids = NULL;
    bench_run *runs = NULL;
    char *json = NULL;
    cJSON *root = NULL;
    int rc = 1;
    inf_status st;

    if ((st = session_open(&o, &S, &err))) goto fail;
    size_t n_ids;
    if (!S.tok) { /* no tokenizer: a fixed prompt of 32 spread-out ids */
        n_ids = 32;
        if (!(ids = malloc(sizeof *ids * n_ids))) {
            st = inf_fail(&err, INF_E_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_ids; i++) ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)S.m->cfg.vocab_size);
    } else if ((st = tok_encode(S.tok, o.prompt, strlen(o.prompt), !o.no_bos && tok_add_bos(S.tok), true, &ids, &n_ids,
                                &err))) {
        goto fail;
    }
    if (n_ids == 0) {
        st = inf_fail(&err, INF_E_ARG, "the prompt is empty and this tokenizer adds no BOS token; give some text");
        goto fail;
    }
    if (!(runs = calloc((size_t)o.runs, sizeof *runs))) {
        st = inf_fail(&err, INF_E_NOMEM, "out of memory");
        goto fail;
    }
    if (!o.quiet)
        fprintf(stderr, "bench: %s, %zu prompt tokens, %d generated, %d warm-up + %d runs\n", mode_names[S.mode],
                n_ids, o.max_tokens, o.warmup, o.runs);
    /* every run: a fresh session, greedy, a fixed token count (no stop at end of text) */
    double prefill = 0, decode = 0;
    int decoded = 0;
    for (int r = 0; r < o.warmup + o.runs; r++) {
        if (r > 0 && (st = session_restart(&o, &S, &err))) goto fail;
        if (r == o.warmup) inf_profile_reset(&S.prof); /* the warm-up runs are not measured */
        int pos = 0;
        inf_gen_stats gs;
        if ((st = inf_generate_device(&S.g, S.devp, &S.prof, &pos, ids, (int)n_ids, o.max_tokens, &S.s, NULL, NULL, NULL,
                                        &gs, &err)))
            goto fail;
        if (r < o.warmup) continue;
        bench_run *b = &runs[r - o.warmup];
        *b = (bench_run){gs.n_prompt, gs.n_gen, gs.prefill_s, gs.decode_s};
        prefill += gs.prefill_s;
        decode += gs.decode_s;
        decoded += gs.n_gen > 1 ? gs.n_gen - 1 : 0;
        if (!o.quiet)
            fprintf(stderr, "  run %d: time to first token %.1f ms, %.2f tokens/s\n", r - o.warmup + 1,
                    gs.prefill_s * 1e3, gs.n_gen > 1 && gs.decode_s > 0 ? (gs.n_gen - 1) / gs.decode_s : 0.0);
    }
    inf_profile_totals t = {
        .runs = o.runs,
        .n_prompt = (int)n_ids,
        .n_gen = runs[0].n_gen,
        .prefill_s = prefill / o.runs,
        .ttft_s = prefill / o.runs,
        .decode_tok_s = decode > 0 ? decoded / decode : 0,
        .peak_mib = inf_peak_rss_mib(),
    };
    inf_profile_print(stderr, &S.prof, &t);
    subset_report(&o, &S);
    if (o.json) {
        if (!(root = bench_json(&o, &S, &t, runs)) || !(json = cJSON_Print(root))) {
            st = inf_fail(&err, INF_E_NOMEM, "out of memory writing the JSON report");
            goto fail;
        }
        FILE *f = fopen(o.json, "w");
        if (!f) {
            st = inf_fail(&err, INF_E_IO, "%s: cannot create: %s", o.json, strerror(errno));
            goto fail;
        }
        bool bad = fputs(json, f) < 0 || fputc('\n', f) == EOF;
        if (fclose(f) != 0 || bad) {
            st = inf_fail(&err, INF_E_IO, "%s: write failed: %s", o.json, strerror(errno));
            goto fail;
        }
        if (!o.quiet) fprintf(stderr, "bench: wrote %s\n", o.json);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "infemeral bench: %s\n", err.msg[0] ? err.msg : inf_strstatus(st));
    rc = 1;
done:
    free(json);
    cJSON_Delete(root);
    free(runs);
    free(ids);
    session_close(&S);
    return rc;
}

int main(int argc, char **argv) {
    inf_threads_init(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc - 2, argv + 2, false, false);
    if (!strcmp(cmd, "generate")) return cmd_run(argc - 2, argv + 2, true, false);
    if (!strcmp(cmd, "chat")) return cmd_run(argc - 2, argv + 2, true, true);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "keygen")) return cmd_keygen(argc - 2, argv + 2);
    if (!strcmp(cmd, "prep")) return cmd_prep(argc - 2, argv + 2);
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("infemeral %s\n", INF_VERSION);
        return 0;
    }
    fprintf(stderr, "infemeral: unknown command '%s' (see infemeral --help)\n", cmd);
    return 2;
}
