/*
 * rope.c: the rotary position tables and the in-place rotation of q and k
 * heads (see rope.h for the convention).
 */
#include "rope.h"

#include <math.h>

#include "../util/team.h"

// Pairs of numbers to rotate below which one thread does it all.
#define ROPE_PARALLEL_MIN 16384

void rope_tables(float *cos_t, float *sin_t, int maxT, int HS, double theta) {
    const int half = HS / 2;
    for (int i = 0; i < half; i++) {
        const double inv_freq = pow(theta, -2.0 * i / HS);
        for (int t = 0; t < maxT; t++) {
            const double a = (double)t * inv_freq;
            cos_t[(size_t)t * half + i] = (float)cos(a);
            sin_t[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

void rope_rotate(float *qkv, int B, int T, int pos0, int NH, int NKV, int HS, const float *cos_t,
                 const float *sin_t, int inverse) {
    // the query heads, then the key heads: NH + NKV vectors of HS from each row's start
    rope_rotate_rows(qkv, B, T, (NH + 2 * NKV) * HS, pos0, NH + NKV, HS, HS, cos_t, sin_t, inverse);
}

typedef struct {
    float *x;
    const float *cos_t, *sin_t;
    int T, ld, pos0, n, stride, half;
    float sign;
} RopeArgs;

// Rows [begin, end) of x: row b T + t is token t of sequence b.
static void rope_rows(void *ctx, long begin, long end, long step) {
    const RopeArgs *a = ctx;
    const int half = a->half;
    for (long r = begin; r < end; r += step) {
        const int t = (int)(r % a->T);
        float *row = a->x + (size_t)r * a->ld;
        const float *c = a->cos_t + (size_t)(a->pos0 + t) * half, *s = a->sin_t + (size_t)(a->pos0 + t) * half;
        for (int h = 0; h < a->n; h++) {
            float *x1 = row + (size_t)h * a->stride, *x2 = x1 + half;
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float p = x1[i], q = x2[i], si = a->sign * s[i];
                x1[i] = p * c[i] - q * si;
                x2[i] = q * c[i] + p * si;
            }
        }
    }
}

void rope_rotate_rows(float *x, int B, int T, int ld, int pos0, int n, int stride, int dim, const float *cos_t,
                      const float *sin_t, int inverse) {
    RopeArgs a = {x, cos_t, sin_t, T, ld, pos0, n, stride, dim / 2, inverse ? -1.0f : 1.0f};
    // a decode step's few rows are less work than waking the threads
    team_for((long)B * T, (size_t)B * T * n * a.half >= ROPE_PARALLEL_MIN, rope_rows, &a);
}
