/* test_sample.c — sampling.
 *
 * If this fails, --temperature 0 is not deterministic, a fixed --seed gives
 * different text on different runs, or top-k/top-p/repetition penalty do not
 * do what their names say.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "sample.h"

#define V 8

static inf_sampler mk(float temp, int top_k, float top_p, float rep, uint64_t seed) {
    inf_sampler_params p = inf_sampler_defaults();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.repeat_penalty = rep;
    p.seed = seed;
    inf_sampler s;
    inf_error err;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_OK, "%s", err.msg);
    return s;
}

static const float base[V] = {1.0f, 3.0f, 2.5f, 0.5f, 3.0f, -1.0f, 0.0f, 2.0f};

Test(sample, greedy_is_argmax_lowest_id_on_ties) {
    inf_sampler s = mk(0.0f, 40, 0.95f, 1.0f, 0);
    float l[V];
    memcpy(l, base, sizeof l);
    cr_assert_eq(inf_sample(&s, l), 1); /* ids 1 and 4 tie at 3.0 */
    inf_sampler_free(&s);
}

Test(sample, same_seed_same_sequence_different_seed_differs) {
    int a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        inf_sampler s = mk(1.0f, 0, 1.0f, 1.0f, run == 2 ? 7 : 1234);
        for (int i = 0; i < 64; i++) {
            float l[V];
            memcpy(l, base, sizeof l);
            (run == 0 ? a : run == 1 ? b : c)[i] = inf_sample(&s, l);
        }
        inf_sampler_free(&s);
    }
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert_neq(memcmp(a, c, sizeof a), 0, "different seeds gave identical 64-token sequences");
}

Test(sample, frequencies_follow_softmax) {
    inf_sampler s = mk(1.0f, 0, 1.0f, 1.0f, 99);
    int count[V] = {0};
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        float l[V];
        memcpy(l, base, sizeof l);
        count[inf_sample(&s, l)]++;
    }
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(base[i]);
    for (int i = 0; i < V; i++) {
        double p = exp(base[i]) / z, f = (double)count[i] / N;
        double sd = sqrt(p * (1 - p) / N);
        cr_expect_leq(fabs(f - p), 5 * sd + 1e-3, "token %d: frequency %.4f, softmax %.4f", i, f, p);
    }
    inf_sampler_free(&s);
}

Test(sample, top_k_keeps_only_k_best) {
    inf_sampler s = mk(5.0f, 2, 1.0f, 1.0f, 3); /* hot: without top-k every id would show up */
    for (int i = 0; i < 500; i++) {
        float l[V];
        memcpy(l, base, sizeof l);
        int id = inf_sample(&s, l);
        cr_assert(id == 1 || id == 4, "top-k 2 sampled id %d", id);
    }
    inf_sampler_free(&s);
}

Test(sample, top_p_cuts_the_tail) {
    /* probabilities at T=1: ids 1 and 4 hold ~0.31 each, 2 ~0.19, 7 ~0.11 ... */
    inf_sampler s = mk(1.0f, 0, 0.5f, 1.0f, 5);
    for (int i = 0; i < 500; i++) {
        float l[V];
        memcpy(l, base, sizeof l);
        int id = inf_sample(&s, l);
        cr_assert(id == 1 || id == 4, "top-p 0.5 sampled id %d", id);
    }
    inf_sampler_free(&s);
}

Test(sample, repetition_penalty_demotes_seen_tokens) {
    inf_sampler s = mk(0.0f, 0, 1.0f, 2.0f, 0);
    inf_sampler_accept(&s, 1);
    inf_sampler_accept(&s, 4);
    float l[V];
    memcpy(l, base, sizeof l);
    cr_assert_eq(inf_sample(&s, l), 2, "after 1 and 4 were penalized, 2 should win");
    cr_assert_float_eq(l[1], 1.5f, 1e-6);
    inf_sampler_free(&s);
}

Test(sample, bad_parameters_are_refused_by_name) {
    inf_sampler_params p = inf_sampler_defaults();
    inf_sampler s;
    inf_error err;
    p.top_p = 1.5f;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_E_ARG);
    cr_assert(strstr(err.msg, "--top-p") != NULL);
    p = inf_sampler_defaults();
    p.temperature = -1.0f;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_E_ARG);
    cr_assert(strstr(err.msg, "--temperature") != NULL);
    p = inf_sampler_defaults();
    p.temperature = NAN;
    cr_assert_eq(inf_sampler_init(&s, &p, V, &err), INF_E_ARG);
}
