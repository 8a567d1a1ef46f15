/*
 * testutil.h: helpers shared by the Check suites: tensor comparison with a
 * report of max abs and normalised error, random fills, and a suite runner.
 * Header-only (static functions): each suite is one translation unit.
 */
#ifndef GQA_TESTUTIL_H
#define GQA_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../util/rng.h"

// Max |a - b| over n, and the normalised error ||a - b|| / max(||b||, tiny).
typedef struct {
    double max_abs, norm_err;
    size_t argmax;
} Diff;

static inline Diff diff_tensors(const float *a, const float *b, size_t n) {
    Diff d = {0, 0, 0};
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d.max_abs || isnan(e)) {
            d.max_abs = isnan(e) ? INFINITY : e;
            d.argmax = i;
        }
        num += e * e;
        den += (double)b[i] * b[i];
    }
    d.norm_err = sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
    return d;
}

// Fail the test (with the errors printed) unless max abs error <= tol.
#define ck_assert_tensor_close(name, got, want, n, tol)                                                        \
    do {                                                                                                        \
        Diff d_ = diff_tensors((got), (want), (n));                                                             \
        ck_assert_msg(d_.max_abs <= (tol),                                                                      \
                      "%s: max abs error %.3g at [%zu] (got %.7g, want %.7g), normalised error %.3g, tol %.3g", \
                      (name), d_.max_abs, d_.argmax, (double)(got)[d_.argmax], (double)(want)[d_.argmax],       \
                      d_.norm_err, (double)(tol));                                                              \
    } while (0)

static inline void fill_normal(float *x, size_t n, float std, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(rng);
}

// Run a suite; returns the number of failures (Check prints "N%: Checks: ...").
static inline int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

#endif
