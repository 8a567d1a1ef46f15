/*
 * rope.c: the rotary position tables and the in-place rotation of q and k
 * heads (see rope.h for the convention).
 */
#include "rope.h"

#include <math.h>

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

void rope_rotate_rows(float *x, int B, int T, int ld, int pos0, int n, int stride, int dim, const float *cos_t,
                      const float *sin_t, int inverse) {
    const int half = dim / 2;
    const float sign = inverse ? -1.0f : 1.0f;
    // a decode step's few rows are less work than waking the threads
    const int parallel = (size_t)B * T * n * half >= ROPE_PARALLEL_MIN;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *row = x + ((size_t)b * T + t) * ld;
            const float *c = cos_t + (size_t)(pos0 + t) * half, *s = sin_t + (size_t)(pos0 + t) * half;
            for (int h = 0; h < n; h++) {
                float *x1 = row + (size_t)h * stride, *x2 = x1 + half;
#pragma omp simd
                for (int i = 0; i < half; i++) {
                    const float a = x1[i], b2 = x2[i], si = sign * s[i];
                    x1[i] = a * c[i] - b2 * si;
                    x2[i] = b2 * c[i] + a * si;
                }
            }
        }
    }
}
