/*
 * simd.h: AVX-512 helpers shared by the kernels (ops.c, attention_cached.c,
 * attention.c): a vector e^x and tanh accurate to a few float ulps, for the
 * softmaxes and GELU whose libm calls (expf, tanhf) otherwise dominate the
 * elementwise work, and the 16-vector horizontal sum of the weight-streaming
 * matmul (ops.c). Only with AVX-512F; callers keep a plain C path.
 */
#ifndef GQA_SIMD_H
#define GQA_SIMD_H

#if defined(__AVX512F__)
#include <immintrin.h>
#include <stdint.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

// e^x: x = n ln2 + r, |r| <= ln2/2 (ln2 in two parts, Cody-Waite), e^r by
// its degree-7 Taylor polynomial (relative error < 1e-7), times 2^n by
// scalef. Inputs below -100 give ~0 (softmax masks), above 88 infinity.
ALWAYS_INLINE __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-100.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = e^(-2|x|) <= 1: no overflow; the
// absolute error stays below ~2e-7 (relative error grows only as tanh -> 0).
ALWAYS_INLINE __m512 tanh512(__m512 x) {
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    const __m512 ax = _mm512_andnot_ps(sign, x);
    const __m512 e = exp512(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
    const __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    return _mm512_or_ps(t, _mm512_and_ps(sign, x));
}

// Lanes [0, n) of a 16-lane vector (n may exceed 16).
ALWAYS_INLINE __mmask16 mask16(long n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

// v[i] -> lane i of the result = the sum of v[i]'s lanes, for 16 vectors in
// 4 levels of pairwise half-swaps (30 permutes and 15 adds instead of 16
// full horizontal sums). Level k combines vectors whose lanes form groups of
// width W = 16 >> k: x takes the first half of every group of a then of b,
// y the second halves, and x + y has groups of W/2 (a's, then b's).
static const int32_t reduce16_index[4][2][16] __attribute__((aligned(64))) = {
    {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
    {{0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}, {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31}},
    {{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}, {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31}},
    {{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}, {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}},
};

ALWAYS_INLINE __m512 reduce16(__m512 *v) {
#pragma GCC unroll 4
    for (int level = 0, n = 16; level < 4; level++, n /= 2) {
        const __m512i px = _mm512_load_si512(reduce16_index[level][0]), py = _mm512_load_si512(reduce16_index[level][1]);
#pragma GCC unroll 8
        for (int i = 0; i < n / 2; i++)
            v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], px, v[2 * i + 1]),
                                 _mm512_permutex2var_ps(v[2 * i], py, v[2 * i + 1]));
    }
    return v[0];
}
#endif

#endif
