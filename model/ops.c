/*
 * ops.c: layer kernels (see ops.h). Each backward follows its forward and
 * accumulates into gradients. Loops over rows are OpenMP-parallel with a
 * static schedule, so results do not depend on timing (determinism).
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

// ----------------------------------------------------------------------------
// embedding

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)inp[b * T + t] * C, *pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = te[i] + pe[i];
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    // serial over (b, t): the same token may appear twice, and += must not race
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *te = dwte + (size_t)inp[b * T + t] * C, *pe = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) {
                te[i] += d[i];
                pe[i] += d[i];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// LayerNorm (eps 1e-5, as torch.nn.LayerNorm)

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + (b ? b[i] : 0.0f);
        mean[n] = m;
        rstd[n] = s;
    }
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
    // dw, db: a reduction over rows, so split over channels instead
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        float gw = 0.0f, gb = 0.0f;
        for (int n = 0; n < N; n++) {
            float d = dout[(size_t)n * C + i];
            gw += (inp[(size_t)n * C + i] - mean[n]) * rstd[n] * d;
            gb += d;
        }
        dw[i] += gw;
        if (db) db[i] += gb;
    }
}

// ----------------------------------------------------------------------------
// matmul: out = inp @ w^T + b

// Few rows (decode: one per sequence): stream each weight row once and dot it
// with every input row while it sits in L1. sgemm would first pack (copy)
// the whole weight matrix, doubling the memory traffic of a step whose cost
// is reading the weights.
#define SKINNY_ROWS 16

#if defined(__AVX512F__)
#include <immintrin.h>
// out[n * OC + o] = w_row . x_n for n < N <= 4, one pass over the row.
static inline void dot4(const float *wr, const float *x, int N, int C, float *out, int OC, int o, float bias) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int k = 0;
    for (; k + 16 <= C; k += 16) {
        __m512 wv = _mm512_loadu_ps(wr + k);
        a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + k), a0);
        if (N > 1) a1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + C + k), a1);
        if (N > 2) a2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + 2 * C + k), a2);
        if (N > 3) a3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + 3 * (size_t)C + k), a3);
    }
    float r[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                  _mm512_reduce_add_ps(a3)};
    for (int n = 0; n < N; n++) {
        for (int kk = k; kk < C; kk++) r[n] += wr[kk] * x[(size_t)n * C + kk];
        out[(size_t)n * OC + o] = r[n] + bias;
    }
}
#endif

static void matmul_forward_skinny(float *out, const float *inp, const float *w, const float *b, int N, int C,
                                  int OC) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        const float *wr = w + (size_t)o * C;
        const float bias = b ? b[o] : 0.0f;
#if defined(__AVX512F__)
        // the row stays in L1 while four input rows at a time meet it
        for (int n0 = 0; n0 < N; n0 += 4)
            dot4(wr, inp + (size_t)n0 * C, N - n0 < 4 ? N - n0 : 4, C, out + (size_t)n0 * OC, OC, o, bias);
#else
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float acc = 0.0f;
            for (int k = 0; k < C; k++) acc += wr[k] * x[k];
            out[(size_t)n * OC + o] = acc + bias;
        }
#endif
    }
}

void matmul_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC) {
    if (N <= SKINNY_ROWS) {
        matmul_forward_skinny(out, inp, w, b, N, C, OC);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC);
    if (b) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            for (int j = 0; j < OC; j++) o[j] += b[j];
        }
    }
}

void matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int N, int C, int OC) {
    // out = inp w^T  =>  dinp += dout w ; dw += dout^T inp ; db += sum_n dout
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (db) {
#pragma omp parallel for schedule(static)
        for (int j = 0; j < OC; j++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + j];
            db[j] += s;
        }
    }
}

// ----------------------------------------------------------------------------
// GELU, tanh approximation

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)

void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float sech2 = 1.0f - th * th;
        float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

// ----------------------------------------------------------------------------
// dropout and residual

void dropout_forward(float *x, size_t n, float p, uint64_t key) {
    if (p <= 0.0f) return;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= dropout_scale(key, i, p);
}

void dropout_backward(float *dx, size_t n, float p, uint64_t key) {
    dropout_forward(dx, n, p, key);  // the mask is its own derivative
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// ----------------------------------------------------------------------------
// softmax cross-entropy

void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *p = probs + (size_t)n * V;
        float mx = l[0];
        for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        float sum = 0.0f;
        for (int i = 0; i < V; i++) {
            p[i] = expf(l[i] - mx);
            sum += p[i];
        }
        for (int i = 0; i < V; i++) p[i] /= sum;
        // log p[t] computed from the logits, not log(p[t]), so it never hits log(0)
        losses[n] = -(l[targets[n]] - mx - logf(sum));
    }
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        for (int i = 0; i < V; i++) d[i] = (p[i] - (i == targets[n] ? 1.0f : 0.0f)) * dloss;
    }
}
