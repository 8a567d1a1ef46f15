/*
 * ops.c: layer kernels (see ops.h). Each backward follows its forward and
 * accumulates into gradients. Loops over rows are OpenMP-parallel with a
 * static schedule, so results do not depend on timing (determinism).
 */
#include "ops.h"
#include "gemm.h"
#include "simd.h"
#include "../util/team.h"

#include <math.h>
#include <string.h>

// Elementwise work smaller than this many numbers runs on the calling
// thread: a decode step's rows (C or 4C numbers per sequence) cost less
// than waking the other threads and joining them.
#define OPS_PARALLEL_MIN 16384

// ----------------------------------------------------------------------------
// embedding

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)inp[b * T + t] * C;
            if (!wpe) {  // no position embedding (pos = rope)
                memcpy(o, te, (size_t)C * sizeof(float));
                continue;
            }
            const float *pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    // serial over (b, t): the same token may appear twice, and += must not race
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *te = dwte + (size_t)inp[b * T + t] * C;
            for (int i = 0; i < C; i++) te[i] += d[i];
            if (!dwpe) continue;
            float *pe = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) pe[i] += d[i];
        }
    }
}

// ----------------------------------------------------------------------------
// LayerNorm (eps 1e-5, as torch.nn.LayerNorm)

typedef struct {
    float *out, *mean, *rstd;
    const float *inp, *w, *b;
    int C;
} LayerNormArgs;

static void layernorm_rows(void *ctx, long begin, long end, long step) {
    const LayerNormArgs *a = ctx;
    const float *w = a->w, *b = a->b;
    const int C = a->C;
    for (long n = begin; n < end; n += step) {
        const float *x = a->inp + (size_t)n * C;
        float *o = a->out + (size_t)n * C;
        // the row sums as vector reductions (partial sums in lanes; without
        // `simd`, C's order rules keep them one scalar add chain)
        float m = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + (b ? b[i] : 0.0f);
        a->mean[n] = m;
        a->rstd[n] = s;
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C) {
    LayerNormArgs a = {out, mean, rstd, inp, w, b, C};
    team_for(N, (size_t)N * C >= OPS_PARALLEL_MIN, layernorm_rows, &a);
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C) {
    // dinp: rows are independent
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        // norm = (x - m) * s; dnorm = w * dout
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
        for (int i = 0; i < C; i++) {
            float dn = w[i] * d[i];
            dnorm_mean += dn;
            dnorm_norm_mean += dn * (x[i] - m) * s;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            dx[i] += (w[i] * d[i] - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
    // dw, db: a reduction over rows, so split over blocks of 64 channels
    // instead, each streaming the rows in order
    const int nblk = (C + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        const int i0 = blk * 64, ni = C - i0 < 64 ? C - i0 : 64;
        float gw[64] = {0}, gb[64] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * C + i0, *x = inp + (size_t)n * C + i0;
            const float m = mean[n], s = rstd[n];
            for (int i = 0; i < ni; i++) {
                gw[i] += (x[i] - m) * s * d[i];
                gb[i] += d[i];
            }
        }
        for (int i = 0; i < ni; i++) {
            dw[i0 + i] += gw[i];
            if (db) db[i0 + i] += gb[i];
        }
    }
}

// ----------------------------------------------------------------------------
// matmul: out = inp @ w^T + b

// Few rows (decode: one per sequence): stream each weight row once and dot it
// with every input row while it sits in a register. sgemm would first pack
// (copy) the whole weight matrix, doubling the memory traffic of a step whose
// cost is reading the weights.
#define SKINNY_ROWS 16

#if defined(__AVX512F__)
#ifndef SKINNY_NB
#define SKINNY_NB 8
#endif
// With several input rows the FMAs per weight byte leave too few loads in
// flight to cover DRAM latency: the weights SKINNY_PREFETCH bytes ahead are
// prefetched into L2, not L1, whose few miss buffers would limit the loads in
// flight; the hardware brings them on from L2.
#ifndef SKINNY_PREFETCH
#define SKINNY_PREFETCH 32768  // bytes ahead (0: off)
#endif
#ifndef SKINNY_HINT
#define SKINNY_HINT _MM_HINT_T1
#endif

ALWAYS_INLINE void skinny_step(const int NB, const int OB, const float *x, const float *w, int C, int o0, int k,
                               __mmask16 m, int full, __m512 *acc) {
    __m512 wv[16];
#pragma GCC unroll 16
    for (int j = 0; j < OB; j++) {
        const float *wp = w + (size_t)(o0 + j) * C + k;
        if (SKINNY_PREFETCH && NB > 1) _mm_prefetch((const char *)wp + SKINNY_PREFETCH, SKINNY_HINT);
        wv[j] = full ? _mm512_loadu_ps(wp) : _mm512_maskz_loadu_ps(m, wp);
    }
#pragma GCC unroll 16
    for (int n = 0; n < NB; n++) {
        __m512 xv = full ? _mm512_loadu_ps(x + (size_t)n * C + k) : _mm512_maskz_loadu_ps(m, x + (size_t)n * C + k);
        __asm__("" : "+v"(xv));  // keep the row in a register (not one memory operand per FMA)
#pragma GCC unroll 16
        for (int j = 0; j < OB; j++) acc[n * OB + j] = _mm512_fmadd_ps(wv[j], xv, acc[n * OB + j]);
    }
}

ALWAYS_INLINE void skinny_block(const int NB, const int OB, const float *x, const float *w, const float *b, int C,
                                int OC, int o0, float *out) {
    __m512 acc[32];  // NB x OB used; the rest zero, for the reductions of 16
#pragma GCC unroll 32
    for (int i = 0; i < 32; i++) acc[i] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= C; k += 16) skinny_step(NB, OB, x, w, C, o0, k, 0xFFFF, 1, acc);
    if (k < C) skinny_step(NB, OB, x, w, C, o0, k, mask16(C - k), 0, acc);
    float r[32];
    _mm512_storeu_ps(r, reduce16(acc));
    if (NB * OB > 16) _mm512_storeu_ps(r + 16, reduce16(acc + 16));
    for (int n = 0; n < NB; n++)
        for (int j = 0; j < OB; j++) out[(size_t)n * OC + o0 + j] = r[n * OB + j] + (b ? b[o0 + j] : 0.0f);
}

// Weight rows per block for NB input rows: NB x OB <= 16 accumulators, or
// 24 from 5 input rows on (more weight rows per block, fewer loads per FMA:
// 8 rows of cfg-d's weights 1.12x faster).
static int skinny_ob(int nb) { return nb >= 5 ? 24 / nb : nb == 3 ? 5 : 16 / nb; }

#define SKINNY_CASE(NB, OB) \
    case NB: skinny_block(NB, OB, x, w, b, C, OC, o, out); break;
// Rows n0..n0+NB of the product for weight rows [o, o + 16 / NB).
static void skinny_rows(int NB, const float *x, const float *w, const float *b, int C, int OC, int o, float *out) {
    switch (NB) {
        SKINNY_CASE(1, 16) SKINNY_CASE(2, 8) SKINNY_CASE(3, 5) SKINNY_CASE(4, 4)
        SKINNY_CASE(5, 4) SKINNY_CASE(6, 4) SKINNY_CASE(7, 3) SKINNY_CASE(8, 3)
    }
}
#define SKINNY_TAIL(NB) \
    case NB: skinny_block(NB, 1, x, w, b, C, OC, o, out); break;
static void skinny_rows_one(int NB, const float *x, const float *w, const float *b, int C, int OC, int o, float *out) {
    switch (NB) {
        SKINNY_TAIL(1) SKINNY_TAIL(2) SKINNY_TAIL(3) SKINNY_TAIL(4) SKINNY_TAIL(5) SKINNY_TAIL(6) SKINNY_TAIL(7)
        SKINNY_TAIL(8)
    }
}
#endif

typedef struct {
    float *out;
    const float *inp, *w, *b;
    int N, C, OC, OB;
} SkinnyArgs;

#if defined(__AVX512F__)
// Blocks [begin, end) of OB weight rows: input rows in chunks of up to
// SKINNY_NB; a block is read from memory by the first chunk and from L1 by
// the next.
static void skinny_blocks(void *ctx, long begin, long end, long step) {
    const SkinnyArgs *a = ctx;
    float *out = a->out;
    const float *inp = a->inp, *w = a->w, *b = a->b;
    const int N = a->N, C = a->C, OC = a->OC, OB = a->OB;
    for (long ob = begin; ob < end; ob += step) {
        const int o = (int)ob * OB;
        for (int n0 = 0; n0 < N; n0 += SKINNY_NB) {
            const int NB = N - n0 < SKINNY_NB ? N - n0 : SKINNY_NB, ob_n = skinny_ob(NB);
            for (int oo = o; oo < o + OB && oo < OC;) {
                float *dst = out + (size_t)n0 * OC;
                if (ob_n <= o + OB - oo && oo + ob_n <= OC) {
                    skinny_rows(NB, inp + (size_t)n0 * C, w, b, C, OC, oo, dst);
                    oo += ob_n;
                } else {  // the last weight rows, or a block narrower than this chunk's
                    skinny_rows_one(NB, inp + (size_t)n0 * C, w, b, C, OC, oo, dst);
                    oo += 1;
                }
            }
        }
    }
}
#else
// Weight rows [begin, end).
static void skinny_blocks(void *ctx, long begin, long end, long step) {
    const SkinnyArgs *a = ctx;
    float *out = a->out;
    const float *inp = a->inp, *w = a->w, *b = a->b;
    const int N = a->N, C = a->C, OC = a->OC;
    for (long o = begin; o < end; o += step) {
        const float *wr = w + (size_t)o * C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float acc = 0.0f;
            for (int k = 0; k < C; k++) acc += wr[k] * x[k];
            out[(size_t)n * OC + o] = acc + (b ? b[o] : 0.0f);
        }
    }
}
#endif

static void matmul_forward_skinny(float *out, const float *inp, const float *w, const float *b, int N, int C,
                                  int OC) {
#if defined(__AVX512F__)
    const int OB = skinny_ob(N < SKINNY_NB ? N : SKINNY_NB);
#else
    const int OB = 1;
#endif
    SkinnyArgs a = {out, inp, w, b, N, C, OC, OB};
    team_for((OC + OB - 1) / OB, 1, skinny_blocks, &a);
}

typedef struct {
    float *out, *rstd;
    const float *inp, *w;
    float eps;
    int ld, C;
} RmsNormArgs;

static void rmsnorm_rows(void *ctx, long begin, long end, long step) {
    const RmsNormArgs *a = ctx;
    const float *w = a->w;
    const float eps = a->eps;
    const int C = a->C;
    for (long n = begin; n < end; n += step) {
        const float *x = a->inp + (size_t)n * a->ld;
        float *y = a->out + (size_t)n * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        const float s = 1.0f / sqrtf(ss / C + eps);
        for (int i = 0; i < C; i++) y[i] = x[i] * s * w[i];
        a->rstd[n] = s;
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, int ld, const float *w, float eps, int N, int C) {
    RmsNormArgs a = {out, rstd, inp, w, eps, ld, C};
    team_for(N, (size_t)N * C >= 65536, rmsnorm_rows, &a);
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, int ld, const float *w,
                      const float *rstd, int N, int C) {
    // y = x s w, s = (mean(x^2) + eps)^(-1/2)  =>  dx = s (w dy) - x s^3 mean(w dy x) ; dw += x s dy
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * ld;
        float *dx = dinp + (size_t)n * ld;
        const float s = rstd[n];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < C; i++) dot += w[i] * d[i] * x[i];
        const float k = s * s * s * dot / C;
        for (int i = 0; i < C; i++) {
            dx[i] += s * w[i] * d[i] - x[i] * k;
            dw[i] += x[i] * s * d[i];
        }
    }
}

void matmul_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC) {
    if (N <= SKINNY_ROWS) {
        matmul_forward_skinny(out, inp, w, b, N, C, OC);
        return;
    }
    gemm(N, OC, C, inp, C, 1, w, 1, C, b, 0, out, OC);  // B = w^T: w read with its strides swapped
}

void matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int N, int C, int OC) {
    // out = inp w^T  =>  dinp = dout w ; dw += dout^T inp ; db += sum_n dout
    if (dinp) gemm(N, C, OC, dout, OC, 1, w, C, 1, NULL, 0, dinp, C);
    gemm(OC, C, N, dout, 1, OC, inp, C, 1, NULL, 1, dw, C);  // A = dout^T
    if (db) {  // column sums, a block of 64 columns per task, rows streamed in order
        const int nblk = (OC + 63) / 64;
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            const int j0 = blk * 64, nj = OC - j0 < 64 ? OC - j0 : 64;
            float s[64] = {0};
            for (int n = 0; n < N; n++) {
                const float *row = dout + (size_t)n * OC + j0;
                for (int j = 0; j < nj; j++) s[j] += row[j];
            }
            for (int j = 0; j < nj; j++) db[j0 + j] += s[j];
        }
    }
}

// ----------------------------------------------------------------------------
// GELU, tanh approximation

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)

// u = sqrt(2/pi) (x + 0.044715 x^3); gelu(x) = x/2 (1 + tanh u). Unless dlocal
// is NULL (gelu_forward), also dlocal = gelu'(x) = (1 + tanh u) / 2 +
// x/2 sech^2(u) du/dx, du/dx = sqrt(2/pi) (1 + 3 0.044715 x^2): one tanh
// serves both, and the backward is a product. dlocal may be inp (in place).
typedef struct {
    float *out, *dlocal;
    const float *inp;
    size_t n;
} GeluArgs;

// Vectors of 16 numbers [begin, end) with AVX-512, else numbers.
static void gelu_range(void *ctx, long begin, long end, long step) {
    const GeluArgs *g = ctx;
    float *out = g->out, *dlocal = g->dlocal;
    const float *inp = g->inp;
    const size_t n = g->n;
    (void)step;  // contiguous shares only
#if defined(__AVX512F__)
    for (long v = begin; v < end; v++) {
        const size_t i = (size_t)v * 16;
        const __mmask16 m = mask16((long)(n - i));
        const __m512 x = _mm512_maskz_loadu_ps(m, inp + i), x2 = _mm512_mul_ps(x, x), x3 = _mm512_mul_ps(x2, x);
        const __m512 u = _mm512_mul_ps(_mm512_set1_ps(GELU_SCALE), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
        const __m512 th = tanh512(u), half = _mm512_set1_ps(0.5f), hx = _mm512_mul_ps(half, x);
        _mm512_mask_storeu_ps(out + i, m, _mm512_fmadd_ps(hx, th, hx));
        if (dlocal) {
            const __m512 sech2 = _mm512_fnmadd_ps(th, th, _mm512_set1_ps(1.0f));
            const __m512 dudx = _mm512_mul_ps(_mm512_set1_ps(GELU_SCALE),
                                              _mm512_fmadd_ps(_mm512_set1_ps(3.0f * 0.044715f), x2, _mm512_set1_ps(1.0f)));
            _mm512_mask_storeu_ps(dlocal + i, m,
                                  _mm512_fmadd_ps(_mm512_mul_ps(hx, sech2), dudx, _mm512_fmadd_ps(half, th, half)));
        }
    }
#else
    (void)n;
    for (long i = begin; i < end; i++) {
        const float x = inp[i], th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
        out[i] = 0.5f * x * (1.0f + th);
        if (dlocal)
            dlocal[i] = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    }
#endif
}

void gelu_forward_train(float *out, float *dlocal, const float *inp, size_t n) {
    GeluArgs g = {out, dlocal, inp, n};
#if defined(__AVX512F__)
    team_for((long)((n + 15) / 16), n >= OPS_PARALLEL_MIN, gelu_range, &g);
#else
    team_for((long)n, 1, gelu_range, &g);
#endif
}

void gelu_forward(float *out, const float *inp, size_t n) { gelu_forward_train(out, NULL, inp, n); }

void gelu_backward_local(float *dinp, const float *dlocal, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = dlocal[i] * dout[i];
}

// ----------------------------------------------------------------------------
// softmax

float softmax_exp_row(float *s, int n, float *sum) {
#if defined(__AVX512F__)
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = mask16(n - j);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, s + j));
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = mask16(n - j);
        const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vm)));
        _mm512_mask_storeu_ps(s + j, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    *sum = _mm512_reduce_add_ps(vsum);
#else
    float mx = s[0], total = 0.0f;
    for (int j = 1; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    for (int j = 0; j < n; j++) total += (s[j] = expf(s[j] - mx));
    *sum = total;
#endif
    return mx;
}

void softmax_merge_splits(float *o, const float *parts, size_t stride, int nsplit, int rows, int dim, int i) {
    const size_t m_at = (size_t)rows * dim + i, l_at = m_at + rows;
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < nsplit; s++) {
        const float m = parts[s * stride + m_at];
        M = m > M ? m : M;
    }
    memset(o, 0, (size_t)dim * sizeof(float));
    for (int s = 0; s < nsplit; s++) {
        const float *Os = parts + s * stride, m = Os[m_at], l = Os[l_at];
        if (l == 0.0f) continue;
        const float w = expf(m - M);
        L += w * l;
        for (int d = 0; d < dim; d++) o[d] += w * Os[(size_t)i * dim + d];
    }
    for (int d = 0; d < dim; d++) o[d] /= L;
}

// ----------------------------------------------------------------------------
// dropout and residual

void dropout_forward(float *x, size_t n, float p, uint64_t key, size_t i0) {
    if (p <= 0.0f) return;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= dropout_scale(key, i0 + i, p);
}

void dropout_backward(float *dx, size_t n, float p, uint64_t key, size_t i0) {
    dropout_forward(dx, n, p, key, i0);  // the mask is its own derivative
}

typedef struct {
    float *out;
    const float *a, *b;
} ResidualArgs;

static void residual_range(void *ctx, long begin, long end, long step) {
    const ResidualArgs *r = ctx;
    float *out = r->out;
    const float *a = r->a, *b = r->b;
    (void)step;  // contiguous shares only
    for (long i = begin; i < end; i++) out[i] = a[i] + b[i];
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
    ResidualArgs r = {out, a, b};
    team_for((long)n, n >= OPS_PARALLEL_MIN, residual_range, &r);
}

// ----------------------------------------------------------------------------
// softmax cross-entropy

void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *p = probs + (size_t)n * V, sum;
        memcpy(p, l, (size_t)V * sizeof(float));
        const float mx = softmax_exp_row(p, V, &sum);
        for (int i = 0; i < V; i++) p[i] /= sum;
        // log p[t] computed from the logits, not log(p[t]), so it never hits log(0)
        losses[n] = targets[n] < 0 ? 0.0f : -(l[targets[n]] - mx - logf(sum));
    }
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        if (targets[n] < 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (int i = 0; i < V; i++) d[i] = (p[i] - (i == targets[n] ? 1.0f : 0.0f)) * dloss;
    }
}
