/* test_profile.c — the per-token phase profile (client/profile.h).
 *
 * If this fails, `infemeral generate --profile` and `infemeral bench` print
 * wrong percentiles (p99 of 100 tokens is not the 99th value), attribute a
 * phase's time to the wrong token, or count prefill chunks as decode tokens.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"
#include "kv.h"
#include "profile.h"
#include "testutil.h"

static inf_summary summarize(const double *v, size_t n) {
    inf_summary s;
    inf_error err = {{0}};
    cr_assert_eq(inf_summarize(v, n, &s, &err), INF_OK, "%s", err.msg);
    return s;
}

Test(profile, percentiles_of_one_value_are_that_value) {
    double v[] = {4.25};
    inf_summary s = summarize(v, 1);
    cr_expect_eq(s.n, 1);
    cr_expect_eq(s.p50, 4.25);
    cr_expect_eq(s.p95, 4.25);
    cr_expect_eq(s.p99, 4.25);
    cr_expect_eq(s.mean, 4.25);
    cr_expect_eq(s.total, 4.25);
}

Test(profile, empty_gives_zeros) {
    inf_summary s = summarize(NULL, 0);
    cr_expect_eq(s.n, 0);
    cr_expect_eq(s.p50, 0);
    cr_expect_eq(s.p99, 0);
    cr_expect_eq(s.mean, 0);
    cr_expect_eq(s.total, 0);
}

Test(profile, nearest_rank_on_ten_unsorted_values) {
    double v[] = {7, 3, 10, 1, 9, 2, 8, 5, 6, 4};
    inf_summary s = summarize(v, 10);
    cr_expect_eq(s.p50, 5, "p50 of 1..10: rank ceil(5) = 5, got %g", s.p50);
    cr_expect_eq(s.p95, 10, "p95 of 1..10: rank ceil(9.5) = 10, got %g", s.p95);
    cr_expect_eq(s.p99, 10);
    cr_expect_eq(s.mean, 5.5);
    cr_expect_eq(s.total, 55);
    cr_expect_eq(s.min, 1);
    cr_expect_eq(s.max, 10);
    cr_expect_eq(v[0], 7, "summarize must not reorder the caller's samples");
}

Test(profile, ties) {
    double v[] = {2, 2, 3, 2, 1};
    inf_summary s = summarize(v, 5);
    cr_expect_eq(s.p50, 2); /* 1 2 2 2 3: rank 3 */
    cr_expect_eq(s.p95, 3); /* rank ceil(4.75) = 5 */
    double w[] = {0.5, 0.5, 0.5, 0.5};
    s = summarize(w, 4);
    cr_expect_eq(s.p50, 0.5);
    cr_expect_eq(s.p99, 0.5);
    cr_expect_eq(s.total, 2.0);
}

Test(profile, p99_of_100_values_is_the_99th) {
    double v[100];
    for (int i = 0; i < 100; i++) v[i] = (double)((i * 37) % 100 + 1); /* 1..100, shuffled */
    inf_summary s = summarize(v, 100);
    cr_expect_eq(s.p99, 99, "p99 of 1..100 must be the 99th value, got %g", s.p99);
    cr_expect_eq(s.p95, 95);
    cr_expect_eq(s.p50, 50);
    cr_expect_eq(s.max, 100);
    double sorted[100];
    for (int i = 0; i < 100; i++) sorted[i] = i + 1;
    cr_expect_eq(inf_percentile_sorted(sorted, 100, 100), 100);
    cr_expect_eq(inf_percentile_sorted(sorted, 100, 1), 1);
    cr_expect_eq(inf_percentile_sorted(sorted, 100, 0.5), 1, "a rank below 1 is clamped to the first value");
    cr_expect_eq(inf_percentile_sorted(sorted, 100, 99.5), 100);
    cr_expect_eq(inf_percentile_sorted(sorted, 7, 99), 7); /* ceil(6.93) */
    cr_expect_eq(inf_percentile_sorted(sorted, 7, 50), 4); /* ceil(3.5) */
}

Test(profile, steps_sum_repeated_phases_and_keep_prefill_apart) {
    inf_profile p;
    inf_profile_init(&p);
    inf_profile_add(&p, INF_PH_EMBED, 1.0); /* no step open: dropped */
    inf_profile_begin(&p, INF_STEP_PREFILL);
    inf_profile_add(&p, INF_PH_NETWORK, 0.25);
    inf_profile_add(&p, INF_PH_NETWORK, 0.5); /* two requests in one prefill step */
    inf_profile_end(&p);
    for (int t = 0; t < 3; t++) {
        inf_profile_begin(&p, INF_STEP_DECODE);
        inf_profile_add(&p, INF_PH_EMBED, 0.001 * (t + 1));
        inf_profile_add(&p, INF_PH_SAMPLE, 0.002);
        inf_profile_end(&p);
    }
    inf_profile_begin(&p, INF_STEP_DECODE);
    inf_profile_add(&p, INF_PH_EMBED, 9.0);
    inf_profile_cancel(&p); /* a failed step leaves no trace */
    inf_profile_end(&p);    /* nothing open: no-op */

    cr_expect_eq(p.prefill_wall.n, 1);
    cr_expect_eq(p.decode_wall.n, 3);
    for (int ph = 0; ph < INF_PH_COUNT; ph++) {
        cr_expect_eq(p.prefill[ph].n, 1, "phase %s: one sample per prefill step", inf_phase_name(ph));
        cr_expect_eq(p.decode[ph].n, 3, "phase %s: one sample per decode token", inf_phase_name(ph));
    }
    cr_expect_eq(p.prefill[INF_PH_NETWORK].v[0], 0.75);
    cr_expect_eq(p.decode[INF_PH_NETWORK].v[0], 0.0);
    cr_expect_eq(p.decode[INF_PH_EMBED].v[2], 0.003);
    cr_expect(p.used[INF_PH_NETWORK] && p.used[INF_PH_EMBED] && p.used[INF_PH_SAMPLE]);
    cr_expect(!p.used[INF_PH_LAYERS] && !p.used[INF_PH_CLOAK]);
    cr_expect(!p.oom);

    inf_profile_reset(&p);
    cr_expect_eq(p.decode_wall.n, 0);
    cr_expect_eq(p.decode[INF_PH_EMBED].n, 0);
    cr_expect(!p.used[INF_PH_EMBED]);
    inf_profile_free(&p);
    inf_profile_free(&p); /* twice is safe */
}

Test(profile, step_wall_time_covers_its_phases) {
    inf_profile p;
    inf_profile_init(&p);
    inf_profile_begin(&p, INF_STEP_DECODE);
    double t = inf_prof_start(&p);
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    inf_prof_stop(&p, INF_PH_LM_HEAD, t);
    inf_profile_end(&p);
    cr_assert_eq(p.decode_wall.n, 1);
    double lm = p.decode[INF_PH_LM_HEAD].v[0];
    cr_expect_geq(lm, 0.002, "a 2 ms sleep measured as %g s", lm);
    cr_expect_geq(p.decode_wall.v[0], lm);
    inf_prof_stop(NULL, INF_PH_LM_HEAD, inf_prof_start(NULL)); /* off: a no-op */
    cr_expect_gt(inf_peak_rss_mib(), 0.0);
    inf_profile_free(&p);
}

Test(profile, json_has_the_phases_and_totals) {
    inf_profile p;
    inf_profile_init(&p);
    for (int t = 0; t < 4; t++) {
        inf_profile_begin(&p, INF_STEP_DECODE);
        inf_profile_add(&p, INF_PH_NETWORK, 0.010);
        inf_profile_end(&p);
    }
    inf_profile_totals tot = {.runs = 1, .n_prompt = 3, .n_gen = 5, .prefill_s = 0.02, .ttft_s = 0.02,
                              .decode_tok_s = 90, .peak_mib = 12};
    cJSON *j = inf_profile_to_json(&p, &tot);
    cr_assert_not_null(j);
    cr_expect_eq(cJSON_GetObjectItem(j, "tokens_per_s")->valuedouble, 90);
    cr_expect_eq(cJSON_GetObjectItem(j, "decode_tokens")->valuedouble, 4);
    const cJSON *net = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phases"), "network");
    cr_assert_not_null(net);
    cr_expect_float_eq(cJSON_GetObjectItem(net, "p50_ms")->valuedouble, 10.0, 1e-9);
    cr_expect_float_eq(cJSON_GetObjectItem(net, "total_ms")->valuedouble, 40.0, 1e-9);
    cr_expect_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phases"), "layers"), "unused phases are left out");
    cr_expect_not_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phases"), "other"));
    cJSON_Delete(j);
    inf_profile_free(&p);
}

typedef struct {
    int32_t *ids;
    int n;
} collect;

static bool on_tok(int32_t id, void *user) {
    collect *c = user;
    c->ids[c->n++] = id;
    return true;
}

/* The generation loop on a real (tiny) model: the steps land where they
 * should, and profiling does not change the text. */
Test(profile, generate_records_one_step_per_token_and_per_prefill_chunk) {
    char path[1024];
    inf_error err = {{0}};
    inf_model *m = NULL;
    cr_assert_eq(inf_model_load(tu_asset(path, sizeof path, "stories260K/stories260K.bin"), &m, &err), INF_OK, "%s",
                 err.msg);
    const int32_t prompt[7] = {1, 403, 407, 261, 378, 280, 261};
    const int max_new = 5;
    int32_t got[2][5];
    for (int run = 0; run < 2; run++) {
        inf_kv kv;
        cr_assert_eq(inf_kv_init(&kv, &m->cfg, 64, &err), INF_OK, "%s", err.msg);
        inf_sampler s;
        inf_sampler_params sp = inf_sampler_defaults();
        sp.temperature = 0;
        cr_assert_eq(inf_sampler_init(&s, &sp, m->cfg.vocab_size, &err), INF_OK);
        inf_profile prof;
        inf_profile_init(&prof);
        inf_profile *pp = run ? &prof : NULL;
        inf_local_layers local = {m, &kv};
        inf_timed_layers timed = {inf_local_layers_fn, &local, pp};
        inf_cloaked_layers cl = {inf_timed_layers_fn, &timed, NULL, m->cfg.dim, pp};
        inf_gen g = {m, inf_cloaked_layers_fn, &cl, 3};
        int pos = 0;
        inf_gen_stats st;
        collect c = {got[run], 0};
        cr_assert_eq(inf_generate_profiled(&g, pp, &pos, prompt, 7, max_new, &s, on_tok, NULL, &c, &st, &err), INF_OK,
                     "%s", err.msg);
        cr_assert_eq(st.n_gen, max_new);
        cr_assert_eq(pos, 7 + max_new - 1);
        if (run) {
            cr_expect_eq(prof.prefill_wall.n, 3, "7 prompt tokens in chunks of 3: 3 prefill steps, got %zu",
                         prof.prefill_wall.n);
            cr_expect_eq(prof.decode_wall.n, (size_t)max_new - 1, "%d generated: %d decode steps, got %zu", max_new,
                         max_new - 1, prof.decode_wall.n);
            cr_expect(prof.used[INF_PH_EMBED] && prof.used[INF_PH_LAYERS] && prof.used[INF_PH_LM_HEAD] &&
                      prof.used[INF_PH_SAMPLE]);
            cr_expect(!prof.used[INF_PH_NETWORK] && !prof.used[INF_PH_CLOAK],
                      "no network and no cloak in a local run without a cloak");
            /* lm_head and sampling of the first token belong to the last prefill step only */
            cr_expect_eq(prof.prefill[INF_PH_LM_HEAD].v[0], 0.0);
            cr_expect_gt(prof.prefill[INF_PH_LM_HEAD].v[2], 0.0);
            cr_expect_gt(prof.prefill[INF_PH_SAMPLE].v[2], 0.0);
            for (size_t i = 0; i < prof.decode_wall.n; i++) {
                double sum = 0;
                for (int ph = 0; ph < INF_PH_COUNT; ph++) sum += prof.decode[ph].v[i];
                cr_expect_gt(prof.decode[INF_PH_LAYERS].v[i], 0.0);
                cr_expect_leq(sum, prof.decode_wall.v[i] + 1e-9, "token %zu: phases exceed the step's wall time", i);
            }
            double total = 0;
            for (size_t i = 0; i < prof.prefill_wall.n; i++) total += prof.prefill_wall.v[i];
            cr_expect_leq(total, st.prefill_s + 1e-6, "the prefill steps fit in the time to first token");
        }
        inf_profile_free(&prof);
        inf_sampler_free(&s);
        inf_kv_free(&kv);
    }
    cr_expect_arr_eq(got[0], got[1], sizeof got[0], "the profiled run generated other tokens");
    inf_model_free(m);
}
