/* test_rotation.c — the secret rotation Q and its seed file.
 *
 * If this fails, a user would see garbled output from a prepared model
 * (Q not orthogonal, or the client's Q differing from the one prep folded
 * into the server weights), a client and server bundle that do not match
 * while their fingerprints say they do, a rotation that is weaker than
 * Haar-random, or a secret seed file that other users on the machine can
 * read (or that is silently accepted when it is malformed).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <lapacke.h>

#include "rotation.h"
#include "testutil.h"

static rot_seed seed_n(uint32_t k) {
    rot_seed s;
    for (int i = 0; i < ROT_SEED_BYTES; i++) s.b[i] = (uint8_t)(0xA5 ^ (i * 37));
    s.b[0] = (uint8_t)k;
    s.b[1] = (uint8_t)(k >> 8);
    s.b[2] = (uint8_t)(k >> 16);
    s.b[3] = (uint8_t)(k >> 24);
    return s;
}

static float *mat(const rot_seed *s, int d) {
    float *q = NULL;
    inf_error err;
    cr_assert_eq(rot_matrix(s, d, &q, &err), INF_OK, "%s", err.msg);
    cr_assert_not_null(q);
    return q;
}

/* max |A A^T - I| for A given as double [d*d] row-major. */
static double orth_err_d(const double *a, int d) {
    double *g = malloc(sizeof(double) * (size_t)d * (size_t)d);
    cr_assert_not_null(g);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d, d, d, 1.0, a, d, a, d, 0.0, g, d);
    double mx = 0.0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double e = fabs(g[(size_t)i * d + j] - (i == j ? 1.0 : 0.0));
            if (e > mx) mx = e;
        }
    free(g);
    return mx;
}

static double orth_err(const float *q, int d) {
    double *a = malloc(sizeof(double) * (size_t)d * (size_t)d);
    cr_assert_not_null(a);
    for (size_t i = 0; i < (size_t)d * d; i++) a[i] = q[i];
    double e = orth_err_d(a, d);
    free(a);
    return e;
}

Test(rotation, orthogonal_in_f32) {
    const int dims[] = {64, 576, 1000};
    for (int k = 0; k < 3; k++) {
        rot_seed s = seed_n(7);
        float *q = mat(&s, dims[k]);
        double e = orth_err(q, dims[k]);
        cr_expect_lt(e, 1e-5, "d=%d: max |Q Q^T - I| = %g", dims[k], e);
        rot_matrix_free(q, dims[k]);
    }
}

static int det_sign(const float *q, int d) {
    double *a = malloc(sizeof(double) * (size_t)d * d);
    lapack_int *piv = malloc(sizeof(lapack_int) * (size_t)d);
    cr_assert(a && piv);
    for (size_t i = 0; i < (size_t)d * d; i++) a[i] = q[i];
    cr_assert_eq(LAPACKE_dgetrf(LAPACK_ROW_MAJOR, d, d, a, d, piv), 0);
    int sgn = 1;
    for (int i = 0; i < d; i++) {
        if (a[(size_t)i * d + i] < 0) sgn = -sgn;
        if (piv[i] != i + 1) sgn = -sgn;
    }
    free(a);
    free(piv);
    return sgn;
}

/* Without the sign fix Q <- Q diag(sign(R_jj)), LAPACK's reflectors make
 * Q[0][0] = -|a00|/||a0|| < 0 for every seed; Haar has it symmetric about 0
 * with E[Q00^2] = 1/d, and det = +1 and -1 equally often. */
Test(rotation, haar_signs_det_and_diagonal) {
    const int d = 8, N = 200;
    int pos00 = 0, posdet = 0;
    double sq = 0.0;
    for (int k = 0; k < N; k++) {
        rot_seed s = seed_n(1000 + (uint32_t)k);
        float *q = mat(&s, d);
        if (q[0] > 0) pos00++;
        sq += (double)q[0] * q[0];
        if (det_sign(q, d) > 0) posdet++;
        rot_matrix_free(q, d);
    }
    /* binomial(200, 1/2): sd 7.1; +-30 is > 4 sd. E[Q00^2] = 1/8, sd of the mean 0.0105. */
    cr_expect(pos00 > 70 && pos00 < 130, "Q[0][0] > 0 for %d of %d seeds (Haar: about half)", pos00, N);
    cr_expect(posdet > 70 && posdet < 130, "det Q = +1 for %d of %d seeds (Haar: about half)", posdet, N);
    cr_expect(fabs(sq / N - 1.0 / d) < 0.045, "mean Q00^2 = %g, Haar gives 1/%d", sq / N, d);
}

/* For large d the entries of a Haar matrix are close to N(0, 1/d): check the
 * first row's mean and variance, and over all entries the fourth moment
 * (3d/(d+2) in units of 1/d^2) and the one-sigma mass (0.6827). */
Test(rotation, entries_look_gaussian) {
    const int d = 1000;
    rot_seed s = seed_n(42);
    float *q = mat(&s, d);
    double m = 0.0, v = 0.0;
    for (int j = 0; j < d; j++) m += q[j];
    m /= d;
    for (int j = 0; j < d; j++) v += (q[j] - m) * (q[j] - m);
    v /= (d - 1);
    cr_expect(fabs(m) < 5.0 / d, "first-row mean %g (N(0,1/d): |mean| << %g)", m, 5.0 / d);
    cr_expect(fabs(v * d - 1.0) < 0.01, "first-row variance * d = %g, want 1", v * d);
    double m4 = 0.0;
    size_t within = 0;
    const size_t nn = (size_t)d * d;
    const double sd = 1.0 / sqrt(d);
    for (size_t i = 0; i < nn; i++) {
        double x = q[i];
        m4 += x * x * x * x;
        if (fabs(x) < sd) within++;
    }
    double kurt = m4 / nn * (double)d * d;
    cr_expect(fabs(kurt - 3.0 * d / (d + 2.0)) < 0.05, "E[q^4] d^2 = %g, Haar gives %g", kurt, 3.0 * d / (d + 2.0));
    double frac = (double)within / nn;
    cr_expect(fabs(frac - 0.682689) < 0.005, "P(|q| < 1/sqrt d) = %g, Gaussian gives 0.6827", frac);
    rot_matrix_free(q, d);
}

Test(rotation, deterministic_in_seed_and_d) {
    const int d = 200;
    rot_seed s = seed_n(5), t = seed_n(6);
    float *a = mat(&s, d), *b = mat(&s, d), *c = mat(&t, d);
    cr_expect_eq(memcmp(a, b, sizeof(float) * d * d), 0, "same seed and d gave different Q");
    double mx = 0.0;
    for (int i = 0; i < d * d; i++) mx = fmax(mx, fabs(a[i] - c[i]));
    cr_expect_gt(mx, 0.05, "seeds differing in one byte gave nearly the same Q (max diff %g)", mx);
    /* d and d+1: neither is a block of the other. */
    float *e = mat(&s, d + 1);
    double mb = 0.0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) mb = fmax(mb, fabs(a[i * d + j] - e[i * (d + 1) + j]));
    cr_expect_gt(mb, 0.05, "Q(d) is (nearly) the top-left block of Q(d+1): max diff %g", mb);
    cr_expect_neq(memcmp(a, e, sizeof(float) * d), 0, "Q(d) and Q(d+1) share their first row prefix");
    rot_matrix_free(a, d);
    rot_matrix_free(b, d);
    rot_matrix_free(c, d);
    rot_matrix_free(e, d + 1);
}

Test(rotation, odd_dimension_is_orthogonal) {
    rot_seed s = seed_n(11);
    float *q = mat(&s, 77);
    cr_expect_lt(orth_err(q, 77), 1e-5);
    rot_matrix_free(q, 77);
}

Test(rotation, refuses_dimensions_out_of_range) {
    rot_seed s = seed_n(1);
    float *q = (float *)&s; /* must come back NULL */
    inf_error err;
    cr_expect_eq(rot_matrix(&s, 1, &q, &err), INF_E_RANGE);
    cr_expect_null(q);
    cr_expect(strstr(err.msg, "1") != NULL, "%s", err.msg);
    cr_expect_eq(rot_matrix(&s, 65537, &q, &err), INF_E_RANGE);
    cr_expect(strstr(err.msg, "65537") != NULL, "%s", err.msg);
    rot_ctx c;
    cr_expect_eq(rot_ctx_init(&c, &s, 0, false, &err), INF_E_RANGE);
    rot_ctx_free(&c);
    char fp[ROT_FINGERPRINT_LEN];
    cr_expect_eq(rot_fingerprint(&s, -3, fp, &err), INF_E_RANGE);
}

static void fill(float *x, size_t n, uint32_t seed) {
    uint32_t r = seed;
    for (size_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)((double)(r >> 8) / (1 << 24) * 2.0 - 1.0);
    }
}

Test(rotation, apply_then_apply_t_is_identity) {
    const int d = 576;
    const size_t ns[] = {1, 7};
    rot_seed s = seed_n(3);
    rot_ctx c;
    inf_error err;
    cr_assert_eq(rot_ctx_init(&c, &s, d, false, &err), INF_OK, "%s", err.msg);
    for (int k = 0; k < 2; k++) {
        size_t n = ns[k];
        float *x = malloc(sizeof(float) * n * d), *y = malloc(sizeof(float) * n * d),
              *z = malloc(sizeof(float) * n * d);
        fill(x, n * d, 99 + (uint32_t)k);
        cr_assert_eq(rot_apply(&c, x, n, y, &err), INF_OK, "%s", err.msg);
        cr_assert_eq(rot_apply_t(&c, y, n, z, &err), INF_OK, "%s", err.msg);
        double mx = 0.0, moved = 0.0;
        for (size_t i = 0; i < n * d; i++) {
            mx = fmax(mx, fabs(z[i] - x[i]));
            moved = fmax(moved, fabs(y[i] - x[i]));
        }
        cr_expect_lt(mx, 1e-5, "n=%zu: Q^T Q x differs from x by %g", n, mx);
        cr_expect_gt(moved, 0.1, "n=%zu: Q x is (nearly) x", n);
        /* y = Q x against a direct product with rot_matrix's Q. */
        float *q = mat(&s, d);
        double dm = 0.0;
        for (int r = 0; r < d; r++) {
            double acc = 0.0;
            for (int cc = 0; cc < d; cc++) acc += (double)q[r * d + cc] * x[cc];
            dm = fmax(dm, fabs(acc - y[r]));
        }
        cr_expect_lt(dm, 1e-5, "rot_apply disagrees with rot_matrix by %g", dm);
        rot_matrix_free(q, d);
        free(x);
        free(y);
        free(z);
    }
    cr_expect_eq(rot_apply(&c, (float *)&c, 1, (float *)&c, &err), INF_E_ARG, "aliasing input and output accepted");
    rot_ctx_free(&c);
}

/* rot_apply of the identity gives Q^T exactly (one nonzero term per sum). */
Test(rotation, f16_storage_meets_the_bound) {
    const int d = 576;
    rot_seed s = seed_n(21);
    rot_ctx h, f;
    inf_error err;
    cr_assert_eq(rot_ctx_init(&h, &s, d, true, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_ctx_init(&f, &s, d, false, &err), INF_OK, "%s", err.msg);
    float *eye = calloc((size_t)d * d, sizeof(float)), *qt = malloc(sizeof(float) * d * d);
    cr_assert(eye && qt);
    for (int i = 0; i < d; i++) eye[i * d + i] = 1.0f;
    cr_assert_eq(rot_apply(&h, eye, d, qt, &err), INF_OK, "%s", err.msg);
    double e = orth_err(qt, d); /* Q16^T Q16 - I, same max-entry scale as Q16 Q16^T - I */
    cr_expect_lt(e, 1e-3, "f16 Q: max |Q Q^T - I| = %g", e);
    cr_expect_gt(e, 1e-7, "f16 Q is exactly orthogonal (%g): was it stored as f32?", e);

    const size_t n = 5;
    float *x = malloc(sizeof(float) * n * d), *y16 = malloc(sizeof(float) * n * d),
          *y32 = malloc(sizeof(float) * n * d);
    fill(x, n * d, 7);
    for (int t = 0; t < 2; t++) {
        if (t == 0) {
            cr_assert_eq(rot_apply(&h, x, n, y16, &err), INF_OK, "%s", err.msg);
            cr_assert_eq(rot_apply(&f, x, n, y32, &err), INF_OK, "%s", err.msg);
        } else {
            cr_assert_eq(rot_apply_t(&h, x, n, y16, &err), INF_OK, "%s", err.msg);
            cr_assert_eq(rot_apply_t(&f, x, n, y32, &err), INF_OK, "%s", err.msg);
        }
        for (size_t i = 0; i < n; i++) {
            double num = 0.0, den = 0.0;
            for (int k = 0; k < d; k++) {
                double a = y16[i * d + k], b = y32[i * d + k];
                num = fmax(num, fabs(a - b));
                den = fmax(den, fabs(b));
            }
            cr_expect_lt(num / den, 2e-3, "%s row %zu: f16 vs f32 relative difference %g",
                         t ? "rot_apply_t" : "rot_apply", i, num / den);
        }
    }
    free(eye);
    free(qt);
    free(x);
    free(y16);
    free(y32);
    rot_ctx_free(&h);
    rot_ctx_free(&f);
}

typedef struct {
    rot_ctx *c;
    const float *x;
    float y[128];
    inf_status st;
} apply_job;

static void *apply_thread(void *arg) {
    apply_job *j = arg;
    inf_error err;
    j->st = rot_apply(j->c, j->x, 1, j->y, &err);
    return NULL;
}

Test(rotation, first_use_from_many_threads) {
    const int d = 128;
    rot_seed s = seed_n(77);
    rot_ctx c;
    inf_error err;
    cr_assert_eq(rot_ctx_init(&c, &s, d, false, &err), INF_OK, "%s", err.msg);
    float x[128];
    fill(x, d, 5);
    apply_job jobs[6];
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        jobs[i].c = &c;
        jobs[i].x = x;
        cr_assert_eq(pthread_create(&th[i], NULL, apply_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(jobs[i].st, INF_OK);
        cr_expect_eq(memcmp(jobs[i].y, jobs[0].y, sizeof jobs[0].y), 0, "thread %d got a different Q x", i);
    }
    rot_ctx_free(&c);
}

static char *tmpfile_in(char *buf, size_t cap, const char *dir, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

Test(rotation, seed_file_round_trip_mode_0600) {
    char dir[512], path[600];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    tmpfile_in(path, sizeof path, dir, "secret.key");
    rot_seed s, r;
    inf_error err;
    cr_assert_eq(rot_seed_generate(&s, &err), INF_OK, "%s", err.msg);
    mode_t old = umask(0); /* the file must still be 0600 with a permissive umask */
    inf_status st = rot_seed_write(path, &s, &err);
    umask(old);
    cr_assert_eq(st, INF_OK, "%s", err.msg);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600, "seed file mode %o, want 600", (unsigned)(sb.st_mode & 0777));
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text);
    cr_expect_eq(len, 65u);
    cr_expect_eq(text[64], '\n');
    free(text);
    memset(&r, 0, sizeof r);
    cr_assert_eq(rot_seed_read(path, &r, &err), INF_OK, "%s", err.msg);
    cr_expect_eq(memcmp(s.b, r.b, ROT_SEED_BYTES), 0, "seed read back differs");
    /* A second write must not replace the seed. */
    rot_seed other = seed_n(1);
    cr_expect_eq(rot_seed_write(path, &other, &err), INF_E_IO);
    cr_expect(strstr(err.msg, path) != NULL, "%s", err.msg);
    cr_assert_eq(rot_seed_read(path, &r, &err), INF_OK, "%s", err.msg);
    cr_expect_eq(memcmp(s.b, r.b, ROT_SEED_BYTES), 0, "an existing seed file was overwritten");
    rot_seed_wipe(&s);
    for (int i = 0; i < ROT_SEED_BYTES; i++) cr_expect_eq(s.b[i], 0);
    unlink(path);
    rmdir(dir);
}

Test(rotation, group_readable_seed_refused_with_chmod_hint) {
    char dir[512], path[600];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    tmpfile_in(path, sizeof path, dir, "secret.key");
    rot_seed s = seed_n(9), r;
    inf_error err;
    cr_assert_eq(rot_seed_write(path, &s, &err), INF_OK, "%s", err.msg);
    const mode_t modes[] = {0640, 0604, 0620};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(chmod(path, modes[i]), 0);
        cr_expect_neq(rot_seed_read(path, &r, &err), INF_OK, "mode %o accepted", (unsigned)modes[i]);
        cr_expect(strstr(err.msg, "chmod") != NULL, "no chmod hint: %s", err.msg);
        cr_expect(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    }
    cr_assert_eq(chmod(path, 0600), 0);
    cr_expect_eq(rot_seed_read(path, &r, &err), INF_OK, "%s", err.msg);
    unlink(path);
    rmdir(dir);
}

Test(rotation, malformed_seed_file_refused_naming_it) {
    char dir[512], path[600];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    tmpfile_in(path, sizeof path, dir, "bad.key");
    const char *hex64 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    char buf[160];
    const char *bad[8];
    bad[0] = "";
    bad[1] = "0011";
    snprintf(buf, sizeof buf, "%.63s", hex64); /* 63 chars */
    bad[2] = strdup(buf);
    snprintf(buf, sizeof buf, "%s0", hex64); /* 65 chars */
    bad[3] = strdup(buf);
    snprintf(buf, sizeof buf, "%s\n\n", hex64);
    bad[4] = strdup(buf);
    snprintf(buf, sizeof buf, "%s \n", hex64);
    bad[5] = strdup(buf);
    snprintf(buf, sizeof buf, "%.40sxy%s", hex64, hex64 + 42); /* non-hex */
    bad[6] = strdup(buf);
    snprintf(buf, sizeof buf, "%s\r\n", hex64);
    bad[7] = strdup(buf);
    rot_seed r;
    inf_error err;
    for (int i = 0; i < 8; i++) {
        unlink(path);
        cr_assert_eq(tu_write_file(path, bad[i], strlen(bad[i])), 0);
        cr_assert_eq(chmod(path, 0600), 0);
        cr_expect_eq(rot_seed_read(path, &r, &err), INF_E_FORMAT, "case %d accepted", i);
        cr_expect(strstr(err.msg, path) != NULL, "case %d: message does not name the file: %s", i, err.msg);
        cr_expect(strstr(err.msg, "8899") == NULL, "case %d: message leaks file content: %s", i, err.msg);
    }
    for (int i = 2; i < 8; i++) free((void *)bad[i]);
    /* the same 64 hex chars without a newline, and with one, are fine */
    for (int nl = 0; nl < 2; nl++) {
        unlink(path);
        snprintf(buf, sizeof buf, "%s%s", hex64, nl ? "\n" : "");
        cr_assert_eq(tu_write_file(path, buf, strlen(buf)), 0);
        cr_assert_eq(chmod(path, 0600), 0);
        cr_expect_eq(rot_seed_read(path, &r, &err), INF_OK, "%s", err.msg);
        cr_expect_eq(r.b[0], 0x00);
        cr_expect_eq(r.b[10], 0xaa);
        cr_expect_eq(r.b[31], 0xff);
    }
    unlink(path);
    cr_expect_eq(rot_seed_read(path, &r, &err), INF_E_IO);
    cr_expect(strstr(err.msg, path) != NULL, "%s", err.msg);
    rmdir(dir);
}

Test(rotation, fingerprint_is_stable_distinct_and_hides_the_seed) {
    rot_seed s = seed_n(1234), t = seed_n(1235);
    char a[ROT_FINGERPRINT_LEN], b[ROT_FINGERPRINT_LEN], c[ROT_FINGERPRINT_LEN], e[ROT_FINGERPRINT_LEN];
    inf_error err;
    cr_assert_eq(rot_fingerprint(&s, 576, a, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_fingerprint(&s, 576, b, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_fingerprint(&t, 576, c, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(rot_fingerprint(&s, 577, e, &err), INF_OK, "%s", err.msg);
    cr_expect_str_eq(a, b);
    cr_expect_str_neq(a, c, "different seeds, same fingerprint");
    cr_expect_str_neq(a, e, "different d, same fingerprint");
    cr_expect_eq(strlen(a), 64u);
    for (int i = 0; i < 64; i++) cr_expect(strchr("0123456789abcdef", a[i]) != NULL, "%s", a);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", s.b[i]);
    for (int off = 0; off + 8 <= 64; off += 8) {
        char piece[9];
        memcpy(piece, hex + off, 8);
        piece[8] = '\0';
        cr_expect(strstr(a, piece) == NULL, "fingerprint contains seed hex %s", piece);
    }
}
