/* profile.c — see profile.h. */
#define _POSIX_C_SOURCE 200809L
#include "profile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *const phase_names[INF_PH_COUNT] = {
    [INF_PH_EMBED] = "embed",         [INF_PH_CLOAK] = "cloak",     [INF_PH_LAYERS] = "layers",
    [INF_PH_SERIALIZE] = "serialize", [INF_PH_SEAL] = "seal",       [INF_PH_NETWORK] = "network",
    [INF_PH_OPEN] = "open",           [INF_PH_UNCLOAK] = "uncloak", [INF_PH_LM_HEAD] = "lm_head",
    [INF_PH_SAMPLE] = "sample",
};

const char *inf_phase_name(inf_phase ph) {
    return (int)ph >= 0 && ph < INF_PH_COUNT ? phase_names[ph] : "?";
}

double inf_prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- sample arrays ------------------------------------------------------------ */

int inf_samples_push(inf_samples *s, double x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

int inf_samples_extend(inf_samples *s, const inf_samples *src) {
    for (size_t i = 0; i < src->n; i++)
        if (inf_samples_push(s, src->v[i])) return -1;
    return 0;
}

void inf_samples_free(inf_samples *s) {
    free(s->v);
    *s = (inf_samples){0};
}

/* ---- the profile ------------------------------------------------------------- */

void inf_profile_init(inf_profile *p) { memset(p, 0, sizeof *p); }

void inf_profile_reset(inf_profile *p) {
    for (int i = 0; i < INF_PH_COUNT; i++) {
        p->decode[i].n = 0;
        p->prefill[i].n = 0;
        p->cur[i] = 0;
        p->used[i] = false;
    }
    p->decode_wall.n = 0;
    p->prefill_wall.n = 0;
    p->oom = false;
    p->open = false;
}

void inf_profile_free(inf_profile *p) {
    for (int i = 0; i < INF_PH_COUNT; i++) {
        inf_samples_free(&p->decode[i]);
        inf_samples_free(&p->prefill[i]);
    }
    inf_samples_free(&p->decode_wall);
    inf_samples_free(&p->prefill_wall);
    memset(p, 0, sizeof *p);
}

void inf_profile_begin(inf_profile *p, inf_step_kind kind) {
    if (p->open) inf_profile_end(p);
    memset(p->cur, 0, sizeof p->cur);
    p->kind = kind;
    p->open = true;
    p->step_t0 = inf_prof_now();
}

void inf_profile_add(inf_profile *p, inf_phase ph, double seconds) {
    if (!p->open || (int)ph < 0 || ph >= INF_PH_COUNT) return;
    p->cur[ph] += seconds;
    p->used[ph] = true;
}

void inf_profile_end(inf_profile *p) {
    if (!p->open) return;
    double wall = inf_prof_now() - p->step_t0;
    p->open = false;
    if (p->oom) return; /* keep the arrays aligned: all phases of a step or none */
    inf_samples *ph = p->kind == INF_STEP_DECODE ? p->decode : p->prefill;
    inf_samples *w = p->kind == INF_STEP_DECODE ? &p->decode_wall : &p->prefill_wall;
    size_t n0 = w->n;
    int bad = inf_samples_push(w, wall);
    for (int i = 0; i < INF_PH_COUNT && !bad; i++) bad = inf_samples_push(&ph[i], p->cur[i]);
    if (bad) { /* roll back this step */
        w->n = n0;
        for (int i = 0; i < INF_PH_COUNT; i++)
            if (ph[i].n > n0) ph[i].n = n0;
        p->oom = true;
    }
}

void inf_profile_cancel(inf_profile *p) { p->open = false; }

/* ---- statistics --------------------------------------------------------------- */

double inf_percentile_sorted(const double *sorted, size_t n, double p) {
    if (n == 0) return 0.0;
    /* p * n is exact for integral p and any realistic n, so ceil() sees the true rank */
    double r = ceil(p * (double)n / 100.0);
    size_t rank = r < 1 ? 1 : r > (double)n ? n : (size_t)r;
    return sorted[rank - 1];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

inf_status inf_summarize(const double *v, size_t n, inf_summary *out, inf_error *err) {
    *out = (inf_summary){0};
    if (n == 0) return INF_OK;
    double *s = malloc(n * sizeof *s);
    if (!s) return inf_fail(err, INF_E_NOMEM, "profile: out of memory summarizing %zu samples", n);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double total = 0;
    for (size_t i = 0; i < n; i++) total += s[i];
    *out = (inf_summary){.n = n,
                         .p50 = inf_percentile_sorted(s, n, 50),
                         .p95 = inf_percentile_sorted(s, n, 95),
                         .p99 = inf_percentile_sorted(s, n, 99),
                         .mean = total / (double)n,
                         .total = total,
                         .min = s[0],
                         .max = s[n - 1]};
    free(s);
    return INF_OK;
}

double inf_peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

/* ---- reports ------------------------------------------------------------------- */

/* The per-step time no phase covers (loop overhead, allocations). */
static double *other_samples(const inf_profile *p) {
    size_t n = p->decode_wall.n;
    double *o = malloc((n ? n : 1) * sizeof *o);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        double sum = 0;
        for (int ph = 0; ph < INF_PH_COUNT; ph++) sum += p->decode[ph].v[i];
        o[i] = p->decode_wall.v[i] - sum;
        if (o[i] < 0) o[i] = 0;
    }
    return o;
}

static double sum_of(const inf_samples *s) {
    double t = 0;
    for (size_t i = 0; i < s->n; i++) t += s->v[i];
    return t;
}

static void print_row(FILE *f, const char *name, const inf_summary *s, double wall_total) {
    fprintf(f, "  %-10s %9.3f %9.3f %9.3f %9.3f %6.1f%%\n", name, s->p50 * 1e3, s->p95 * 1e3, s->p99 * 1e3,
            s->mean * 1e3, wall_total > 0 ? 100.0 * s->total / wall_total : 0.0);
}

void inf_profile_print(FILE *f, const inf_profile *p, const inf_profile_totals *t) {
    inf_error err = {{0}};
    inf_summary s, wall;
    size_t n = p->decode_wall.n;
    if (inf_summarize(p->decode_wall.v, n, &wall, &err)) {
        fprintf(f, "profile: %s\n", err.msg);
        return;
    }
    fprintf(f, "profile: %zu decode token%s (the first generated token counts as prefill)%s\n", n,
            n == 1 ? "" : "s", p->oom ? "; INCOMPLETE: out of memory while recording" : "");
    fprintf(f, "  %-10s %9s %9s %9s %9s %7s\n", "phase", "p50 ms", "p95 ms", "p99 ms", "mean ms", "share");
    for (int ph = 0; ph < INF_PH_COUNT; ph++) {
        if (!p->used[ph]) continue;
        if (inf_summarize(p->decode[ph].v, n, &s, &err)) continue;
        print_row(f, inf_phase_name((inf_phase)ph), &s, wall.total);
    }
    double *o = other_samples(p);
    if (o && !inf_summarize(o, n, &s, &err)) print_row(f, "other", &s, wall.total);
    free(o);
    print_row(f, "token", &wall, wall.total);

    /* the prefill: per run, its phases summed over the run's prefill steps */
    const int runs = t->runs > 0 ? t->runs : 1;
    fprintf(f, "prefill: %d tokens, %.1f ms%s", t->n_prompt, t->prefill_s * 1e3, runs > 1 ? " per run (mean)" : "");
    const char *sep = " (";
    for (int ph = 0; ph < INF_PH_COUNT; ph++) {
        if (!p->used[ph]) continue;
        double x = sum_of(&p->prefill[ph]) / runs;
        if (x <= 0) continue;
        fprintf(f, "%s%s %.2f", sep, inf_phase_name((inf_phase)ph), x * 1e3);
        sep = ", ";
    }
    if (strcmp(sep, ", ") == 0) fputc(')', f);
    fputc('\n', f);
    fprintf(f, "time to first token: %.1f ms\n", t->ttft_s * 1e3);
    fprintf(f, "decode: %.2f tokens/s (%d generated%s)\n", t->decode_tok_s, t->n_gen, runs > 1 ? " per run" : "");
    fprintf(f, "peak memory: %.1f MiB (max RSS)\n", t->peak_mib);
}

static cJSON *summary_json(const inf_summary *s, double wall_total) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "p50_ms", s->p50 * 1e3);
    cJSON_AddNumberToObject(o, "p95_ms", s->p95 * 1e3);
    cJSON_AddNumberToObject(o, "p99_ms", s->p99 * 1e3);
    cJSON_AddNumberToObject(o, "mean_ms", s->mean * 1e3);
    cJSON_AddNumberToObject(o, "total_ms", s->total * 1e3);
    if (wall_total > 0) cJSON_AddNumberToObject(o, "share", s->total / wall_total);
    return o;
}

cJSON *inf_profile_to_json(const inf_profile *p, const inf_profile_totals *t) {
    inf_error err = {{0}};
    inf_summary s, wall;
    size_t n = p->decode_wall.n;
    if (inf_summarize(p->decode_wall.v, n, &wall, &err)) return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *phases = cJSON_CreateObject(), *pre = cJSON_CreateObject();
    double *o = other_samples(p);
    bool ok = root && phases && pre && o;
    if (ok) {
        cJSON_AddNumberToObject(root, "tokens_per_s", t->decode_tok_s);
        cJSON_AddNumberToObject(root, "ttft_ms", t->ttft_s * 1e3);
        cJSON_AddNumberToObject(root, "prefill_ms", t->prefill_s * 1e3);
        cJSON_AddNumberToObject(root, "prompt_tokens", t->n_prompt);
        cJSON_AddNumberToObject(root, "generated_tokens", t->n_gen);
        cJSON_AddNumberToObject(root, "decode_tokens", (double)n);
        cJSON_AddNumberToObject(root, "peak_memory_mib", t->peak_mib);
        cJSON_AddBoolToObject(root, "complete", !p->oom);
        ok = cJSON_AddItemToObject(root, "token_ms", summary_json(&wall, 0));
    }
    for (int ph = 0; ok && ph < INF_PH_COUNT; ph++) {
        if (!p->used[ph]) continue;
        ok = !inf_summarize(p->decode[ph].v, n, &s, &err) &&
             cJSON_AddItemToObject(phases, inf_phase_name((inf_phase)ph), summary_json(&s, wall.total)) &&
             cJSON_AddNumberToObject(pre, inf_phase_name((inf_phase)ph),
                                     sum_of(&p->prefill[ph]) * 1e3 / (t->runs > 0 ? t->runs : 1));
    }
    if (ok) ok = !inf_summarize(o, n, &s, &err) && cJSON_AddItemToObject(phases, "other", summary_json(&s, wall.total));
    free(o);
    if (ok) {
        cJSON_AddItemToObject(root, "phases", phases);
        phases = NULL;
        cJSON_AddItemToObject(root, "prefill_phases_ms", pre);
        pre = NULL;
    }
    cJSON_Delete(phases);
    cJSON_Delete(pre);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}
