#include "sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

inf_sampler_params inf_sampler_defaults(void) {
    inf_sampler_params p = {.temperature = 0.7f, .top_k = 40, .top_p = 0.95f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
    return p;
}

inf_status inf_sampler_init(inf_sampler *s, const inf_sampler_params *p, int vocab, inf_error *err) {
    memset(s, 0, sizeof *s);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return inf_fail(err, INF_E_ARG, "--temperature %g must be a finite number >= 0", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return inf_fail(err, INF_E_ARG, "--top-p %g must be in (0, 1]", p->top_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return inf_fail(err, INF_E_ARG, "--repeat-penalty %g must be > 0", p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return inf_fail(err, INF_E_ARG, "--repeat-last-n %d must be >= 0", p->repeat_last_n);
    if (vocab <= 0) return inf_fail(err, INF_E_ARG, "sampler: vocabulary size %d", vocab);
    s->p = *p;
    s->vocab = vocab;
    s->rng = p->seed ^ 0x9E3779B97F4A7C15ull;
    s->idx = malloc(sizeof *s->idx * (size_t)vocab);
    s->prob = malloc(sizeof *s->prob * (size_t)vocab);
    if (!s->idx || !s->prob) {
        inf_sampler_free(s);
        return inf_fail(err, INF_E_NOMEM, "sampler: out of memory");
    }
    return INF_OK;
}

void inf_sampler_free(inf_sampler *s) {
    free(s->hist);
    free(s->idx);
    free(s->prob);
    memset(s, 0, sizeof *s);
}

void inf_sampler_accept(inf_sampler *s, int32_t id) {
    if (s->p.repeat_last_n <= 0) return;
    size_t cap = (size_t)s->p.repeat_last_n;
    if (!s->hist) {
        s->hist = malloc(sizeof *s->hist * cap);
        if (!s->hist) return; /* penalty silently degrades to off rather than failing generation */
        s->hist_cap = cap;
    }
    if (s->hist_len < s->hist_cap) {
        s->hist[s->hist_len++] = id;
    } else {
        memmove(s->hist, s->hist + 1, sizeof *s->hist * (s->hist_cap - 1));
        s->hist[s->hist_cap - 1] = id;
    }
}

int32_t inf_argmax(const float *v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* splitmix64: small, fast, and the same on every platform */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float next_unit(uint64_t *state) { /* [0, 1) */
    return (float)(next_u64(state) >> 40) * (1.0f / 16777216.0f);
}

static const float *cmp_base;
static int cmp_desc(const void *a, const void *b) {
    float x = cmp_base[*(const int32_t *)a], y = cmp_base[*(const int32_t *)b];
    if (x > y) return -1;
    if (x < y) return 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

int32_t inf_sample(inf_sampler *s, float *logits) {
    const int V = s->vocab;
    /* repetition penalty (each distinct token once) */
    if (s->p.repeat_penalty != 1.0f) {
        for (size_t i = 0; i < s->hist_len; i++) {
            int32_t id = s->hist[i];
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++) seen = s->hist[j] == id;
            if (seen || id < 0 || id >= V) continue;
            logits[id] = logits[id] > 0 ? logits[id] / s->p.repeat_penalty
                                        : logits[id] * s->p.repeat_penalty;
        }
    }
    if (s->p.temperature <= 0.0f) return inf_argmax(logits, V);

    /* candidates: all ids, or the top_k by logit, sorted by logit descending */
    int n = V;
    for (int i = 0; i < V; i++) s->idx[i] = i;
    cmp_base = logits; /* qsort has no context argument; samplers are single-threaded */
    if (s->p.top_k > 0 && s->p.top_k < V) {
        /* partial selection: keep a sorted buffer of the best k */
        int k = s->p.top_k, have = 0;
        for (int i = 0; i < V; i++) {
            float v = logits[i];
            if (have == k && v <= logits[s->idx[k - 1]]) continue;
            int j = have < k ? have++ : k - 1;
            while (j > 0 && logits[s->idx[j - 1]] < v) {
                s->idx[j] = s->idx[j - 1];
                j--;
            }
            s->idx[j] = i;
        }
        n = k;
    } else if (s->p.top_p < 1.0f) {
        qsort(s->idx, (size_t)V, sizeof *s->idx, cmp_desc);
    }

    /* softmax with temperature over the candidates */
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[s->idx[i]] > mx) mx = logits[s->idx[i]];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((logits[s->idx[i]] - mx) / s->p.temperature);
        sum += s->prob[i];
    }
    /* top-p: the smallest prefix whose mass reaches top_p (candidates are
     * sorted whenever top_p < 1, see above) */
    if (s->p.top_p < 1.0f) {
        double acc = 0.0, target = s->p.top_p * sum;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (acc >= target) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += s->prob[i];
    }
    double r = (double)next_unit(&s->rng) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
