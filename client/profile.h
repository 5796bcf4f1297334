/* profile.h — where the time of one generated token goes.
 *
 * A profile holds one sample per phase per step: a decode step is one
 * generated token (embed -> layers or cloak/serialize/seal/network/open/
 * uncloak -> lm_head -> sample); a prefill step is one chunk of the prompt
 * (the last one also carries the first token's lm_head and sampling, so the
 * prefill steps add up to the time to first token). A phase hit several
 * times within a step (a prompt split into several requests, a retry) is
 * summed into that step's sample.
 *
 * Instrumented code takes an optional `inf_profile *` (NULL = off) and
 * brackets a phase with inf_prof_start / inf_prof_stop: with NULL that is a
 * branch and nothing else. The clock is CLOCK_MONOTONIC.
 *
 * Ownership: the profile owns its sample arrays (inf_profile_free). An
 * allocation failure while recording is not an error of the generation: the
 * profile marks itself incomplete (`oom`) and stops recording.
 * Thread-safety: one profile, one thread (the generation loop's).
 */
#ifndef INF_PROFILE_H
#define INF_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "status.h"

typedef enum {
    INF_PH_EMBED,     /* token ids -> embeddings */
    INF_PH_CLOAK,     /* noise + rotation */
    INF_PH_LAYERS,    /* the transformer layers in this process (local and split runs) */
    INF_PH_SERIALIZE, /* f32 -> wire dtype, JSON envelope with the base64 payload */
    INF_PH_SEAL,      /* zstd (when it shrinks) + AES-256-GCM */
    INF_PH_NETWORK,   /* the HTTP exchange(s), polling included: the worker's time is in here */
    INF_PH_OPEN,      /* parse the reply, decrypt, wire dtype -> f32 */
    INF_PH_UNCLOAK,   /* inverse rotation */
    INF_PH_LM_HEAD,   /* final norm + lm_head */
    INF_PH_SAMPLE,    /* logits -> token id */
    INF_PH_COUNT
} inf_phase;

/* "embed", "cloak", ... */
const char *inf_phase_name(inf_phase ph);

/* A growable array of durations in seconds. */
typedef struct {
    double *v;
    size_t n, cap;
} inf_samples;

typedef enum { INF_STEP_PREFILL, INF_STEP_DECODE } inf_step_kind;

typedef struct {
    inf_samples decode[INF_PH_COUNT];  /* [phase][token] */
    inf_samples prefill[INF_PH_COUNT]; /* [phase][prefill step] */
    inf_samples decode_wall;           /* wall time of each decode step */
    inf_samples prefill_wall;          /* wall time of each prefill step */
    bool used[INF_PH_COUNT];           /* phases that were ever recorded */
    bool oom;                          /* an append failed: the samples are incomplete */
    /* the step in progress */
    bool open;
    inf_step_kind kind;
    double step_t0;
    double cur[INF_PH_COUNT];
} inf_profile;

void inf_profile_init(inf_profile *p);
/* Drops every sample (keeps the arrays' memory). */
void inf_profile_reset(inf_profile *p);
void inf_profile_free(inf_profile *p);

/* Monotonic seconds. */
double inf_prof_now(void);

/* Opens a step (closing one still open first). */
void inf_profile_begin(inf_profile *p, inf_step_kind kind);
/* Adds seconds to phase ph of the open step (or drops it when none is open). */
void inf_profile_add(inf_profile *p, inf_phase ph, double seconds);
/* Closes the open step: one sample per phase, and the step's wall time. */
void inf_profile_end(inf_profile *p);
/* Drops the open step without recording it (a step that failed). */
void inf_profile_cancel(inf_profile *p);

static inline double inf_prof_start(const inf_profile *p) { return p ? inf_prof_now() : 0.0; }
static inline void inf_prof_stop(inf_profile *p, inf_phase ph, double t0) {
    if (p) inf_profile_add(p, ph, inf_prof_now() - t0);
}

/* Appends x; -1 when out of memory (the array is unchanged). */
int inf_samples_push(inf_samples *s, double x);
/* Appends every sample of src. */
int inf_samples_extend(inf_samples *s, const inf_samples *src);
void inf_samples_free(inf_samples *s);

/* Summary of n values; the percentiles are nearest-rank: the p-th percentile
 * of n sorted values is the value of rank ceil(p/100 * n) (1-based), so it is
 * always one of the values (p99 of 100 values is the 99th smallest). n = 0
 * gives all zeros. */
typedef struct {
    size_t n;
    double p50, p95, p99, mean, total, min, max;
} inf_summary;

/* p in (0, 100]; sorted ascending, n >= 1. */
double inf_percentile_sorted(const double *sorted, size_t n, double p);
/* Sorts a copy; fails only when out of memory. */
inf_status inf_summarize(const double *v, size_t n, inf_summary *out, inf_error *err);

/* Peak resident set of this process (getrusage ru_maxrss) in MiB. */
double inf_peak_rss_mib(void);

/* What a report shows besides the phase table. */
typedef struct {
    int runs;             /* generations the profile holds (>= 1) */
    int n_prompt, n_gen;  /* prompt tokens and tokens generated, per run */
    double prefill_s;     /* mean prefill time per run */
    double ttft_s;        /* mean time to first token (prefill + first sampling) */
    double decode_tok_s;  /* generated tokens after the first / decode time */
    double peak_mib;
} inf_profile_totals;

/* The decode phase table (ms: p50 p95 p99 mean, share of the decode steps'
 * wall time) with an "other" row for what no phase covers, then the prefill,
 * the throughput, time to first token and peak memory. Phases never recorded
 * are left out. */
void inf_profile_print(FILE *f, const inf_profile *p, const inf_profile_totals *t);

/* The same numbers as a JSON object (caller frees with cJSON_Delete):
 *   {"tokens_per_s", "ttft_ms", "prefill_ms", "prompt_tokens", "generated_tokens",
 *    "decode_tokens", "peak_memory_mib", "complete",
 *    "token_ms": {p50_ms, p95_ms, p99_ms, mean_ms, total_ms},
 *    "phases": {"<phase>": {p50_ms, p95_ms, p99_ms, mean_ms, total_ms, share}, ..., "other": {...}},
 *    "prefill_phases_ms": {"<phase>": ms per run, ...}}
 * (ttft_ms and prefill_ms are means per run; the phases are over all decode tokens)
 * NULL when out of memory. */
cJSON *inf_profile_to_json(const inf_profile *p, const inf_profile_totals *t);

#endif
