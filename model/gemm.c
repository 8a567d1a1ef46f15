/*
 * gemm.c: see gemm.h. Ours cuts C into panels of GEMM_NR = 64 columns and K
 * into blocks of GEMM_KC = 256. Each (panel, K block) of B is packed once
 * into a contiguous (KC, 64) buffer, zero-padded past N; then every tile of
 * GEMM_MR = 6 rows of C is computed in registers, 6 x 4 vectors = 24
 * accumulators: per step p, 4 loads of the panel, 6 broadcasts of A and 24
 * FMAs. The panel (up to 64 KiB) stays in L2 while A's row tiles stream past
 * it. The tile and block sizes are the fastest of those tried on the cfg-s
 * training step.
 */
#include "gemm.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "../util/team.h"
#include "../util/util.h"
#include "simd.h"

#define GEMM_MR 6
#define GEMM_NV 4
#define GEMM_NR (16 * GEMM_NV)
#define GEMM_KC 256

#if defined(__AVX512F__)
static int use_openblas = 0;
#else
static int use_openblas = 1;
#endif

__attribute__((constructor)) static void gemm_backend_from_env(void) {
    const char *e = getenv("GQA_GEMM");
    if (e && !strcmp(e, "openblas")) use_openblas = 1;
}

int gemm_use_openblas(int on) {
    const int old = use_openblas;
#if defined(__AVX512F__)
    use_openblas = on != 0;
#else
    (void)on;  // OpenBLAS is the only backend
#endif
    return old;
}

typedef struct {
    int M, N, K;
    const float *A, *B, *bias;
    long ars, aps, brs, bcs, ldc;
    int accumulate;
    float *C;
} GemmArgs;

// Rows [begin, end) of C set to the bias (or 0), or the bias added.
static void bias_rows(void *ctx, long begin, long end, long step) {
    const GemmArgs *g = ctx;
    const int N = g->N;
    for (long i = begin; i < end; i += step) {
        float *c = g->C + i * g->ldc;
        if (!g->accumulate) {
            if (g->bias) memcpy(c, g->bias, (size_t)N * sizeof(float));
            else memset(c, 0, (size_t)N * sizeof(float));
        } else {
            for (int j = 0; j < N; j++) c[j] += g->bias[j];
        }
    }
}

// C = A B + bias (+ C) by cblas_sgemm: C starts as the bias, or as itself
// with the bias added, and sgemm adds A B to it (beta 1).
static void gemm_openblas(int M, int N, int K, const float *A, long ars, long aps, const float *B, long brs,
                          long bcs, const float *bias, int accumulate, float *C, long ldc) {
    if (!accumulate || bias) {
        GemmArgs g = {.N = N, .bias = bias, .ldc = ldc, .accumulate = accumulate, .C = C};
        team_for(M, 1, bias_rows, &g);
    }
    if (K <= 0) return;
    const int ta = aps != 1, tb = bcs != 1;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                (int)(ta ? aps : ars), B, (int)(tb ? bcs : brs), 1.0f, C, (int)ldc);
}

#if defined(__AVX512F__)
// Each thread's packed panel of B: (KC, NR), 64 KiB.
static _Thread_local float gemm_pack[GEMM_KC * GEMM_NR] __attribute__((aligned(64)));

// pack (kc, NR) = B's rows [p0, p0 + kc), columns [j0, j0 + nj), zeros past nj.
static void pack_panel(float *pack, const float *B, long brs, long bcs, int p0, int kc, int j0, int nj) {
    if (bcs == 1) {  // rows of B are contiguous: vector copies
        for (int p = 0; p < kc; p++) {
            const float *src = B + (long)(p0 + p) * brs + j0;
            float *dst = pack + (size_t)p * GEMM_NR;
            for (int v = 0; v < GEMM_NR; v += 16)
                _mm512_store_ps(dst + v, _mm512_maskz_loadu_ps(mask16(nj - v > 0 ? nj - v : 0), src + v));
        }
    } else {  // B^T in memory (a weight w for inp w^T): column j of the panel is a row of w
        if (nj < GEMM_NR) memset(pack, 0, sizeof(float) * (size_t)kc * GEMM_NR);
        for (int j = 0; j < nj; j++) {
            const float *src = B + (long)(j0 + j) * bcs + (long)p0 * brs;
            for (int p = 0; p < kc; p++) pack[(size_t)p * GEMM_NR + j] = src[(long)p * brs];
        }
    }
}

// Rows [0, R) of a tile of C, columns [0, nj) of its panel: the sum over the
// kc rows of the packed panel, plus bias if not NULL (the first K block),
// plus C itself if add_c (accumulating, or a later K block). R is a constant
// at every call, so acc lives in registers.
ALWAYS_INLINE void gemm_tile(const int R, int kc, const float *A, long ars, long aps, const float *pack,
                             const float *bias, int add_c, float *C, long ldc, int nj) {
    __m512 acc[GEMM_MR][GEMM_NV];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < GEMM_NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        __m512 b[GEMM_NV];
        for (int v = 0; v < GEMM_NV; v++) b[v] = _mm512_load_ps(pack + (size_t)p * GEMM_NR + 16 * v);
        for (int r = 0; r < R; r++) {
            const __m512 a = _mm512_set1_ps(A[r * ars + p * aps]);
            for (int v = 0; v < GEMM_NV; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
    for (int v = 0; v < GEMM_NV && 16 * v < nj; v++) {
        const __mmask16 m = mask16(nj - 16 * v);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + 16 * v) : _mm512_setzero_ps();
        for (int r = 0; r < R; r++) {
            float *c = C + r * ldc + 16 * v;
            __m512 y = _mm512_add_ps(acc[r][v], bv);
            if (add_c) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c));
            _mm512_mask_storeu_ps(c, m, y);
        }
    }
}

// The panel of columns [j0, j0 + NR): every K block, every row of C.
static void gemm_panel(int M, int N, int K, const float *A, long ars, long aps, const float *B, long brs, long bcs,
                       const float *bias, int accumulate, float *C, long ldc, int j0) {
    const int nj = N - j0 < GEMM_NR ? N - j0 : GEMM_NR;
    for (int p0 = 0; p0 < K; p0 += GEMM_KC) {
        const int kc = K - p0 < GEMM_KC ? K - p0 : GEMM_KC;
        pack_panel(gemm_pack, B, brs, bcs, p0, kc, j0, nj);
        const int add_c = accumulate || p0 > 0;
        const float *a = A + (long)p0 * aps, *bj = bias && p0 == 0 ? bias + j0 : NULL;
        float *c = C + j0;
        int i = 0;
        for (; i + GEMM_MR <= M; i += GEMM_MR)
            gemm_tile(GEMM_MR, kc, a + i * ars, ars, aps, gemm_pack, bj, add_c, c + i * ldc, ldc, nj);
        switch (M - i) {  // the rows left over, R a constant in each case
#define GEMM_REST(R) \
    case R: gemm_tile(R, kc, a + i * ars, ars, aps, gemm_pack, bj, add_c, c + i * ldc, ldc, nj); break;
            GEMM_REST(1) GEMM_REST(2) GEMM_REST(3) GEMM_REST(4) GEMM_REST(5)
#undef GEMM_REST
        default: break;
        }
    }
}
#endif

#if defined(__AVX512F__)
// Column panels [begin, end) of C, GEMM_NR columns each.
static void gemm_panels(void *ctx, long begin, long end, long step) {
    const GemmArgs *g = ctx;
    for (long jp = begin; jp < end; jp += step)
        gemm_panel(g->M, g->N, g->K, g->A, g->ars, g->aps, g->B, g->brs, g->bcs, g->bias, g->accumulate, g->C, g->ldc,
                   (int)jp * GEMM_NR);
}
#endif

void gemm(int M, int N, int K, const float *A, long ars, long aps, const float *B, long brs, long bcs,
          const float *bias, int accumulate, float *C, long ldc) {
    if (M <= 0 || N <= 0) return;
#if defined(__AVX512F__)
    if (!use_openblas && K > 0) {
        GemmArgs g = {M, N, K, A, B, bias, ars, aps, brs, bcs, ldc, accumulate, C};
        const int panels = (N + GEMM_NR - 1) / GEMM_NR;
        team_for(panels, panels > 1, gemm_panels, &g);
        return;
    }
#endif
    gemm_openblas(M, N, K, A, ars, aps, B, brs, bcs, bias, accumulate, C, ldc);
}

// GFLOP/s of the best of 3 timed products on the current backend.
static double gemm_best_of_3(int n, const float *a, const float *b, float *c) {
    const double flops = 2.0 * (double)n * n * n;
    double best = 0;
    for (int r = 0; r < 4; r++) {  // r = 0: warm-up (starts the thread pool, first touches)
        double t0 = now_seconds();
        gemm(n, n, n, a, n, 1, b, n, 1, NULL, 0, c, n);
        double g = flops / (now_seconds() - t0) / 1e9;
        if (r > 0 && g > best) best = g;
    }
    return best;
}

double gemm_peak(int n, double *ours, double *openblas) {
    const size_t nn = (size_t)n * n;
    float *a = malloc_check(3 * nn * sizeof(float)), *b = a + nn, *c = b + nn;
    for (size_t i = 0; i < 2 * nn; i++) a[i] = 0.01f * (float)(i % 7);
    const int old = gemm_use_openblas(1);
    *openblas = gemm_best_of_3(n, a, b, c);
    gemm_use_openblas(0);
    *ours = gemm_best_of_3(n, a, b, c);  // OpenBLAS again without AVX-512
    gemm_use_openblas(old);
    free(a);
    return *ours > *openblas ? *ours : *openblas;
}
