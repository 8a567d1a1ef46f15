/*
 * attention.c: causal GQA attention, forward and backward, for training.
 *
 * Query and key heads are D wide and value heads DV wide: D = DV = HS for
 * grouped attention, D = HS + rope_head_dim for MLA's unabsorbed form.
 *
 * Per (batch, query head) the scores are one sgemm over strided views of
 * qkv, the causal softmax is a row loop, and the output is a second sgemm
 * written straight into its head's columns of `out`. The loops over (batch,
 * KV head) run on OpenMP threads; with the OpenMP build of OpenBLAS each sgemm
 * inside a parallel region runs single-threaded, so threads never multiply.
 *
 * The two products with a transposed operand, q k^T (forward) and dy v^T
 * (backward), multiply by a copy of k (or v) transposed once per KV head
 * instead: OpenBLAS sends an (N, T) product of these sizes through its packing
 * path, while (N, N) ones take its unpacked small-matrix kernel, and the copy,
 * once per KV head, costs less than the packing it saves.
 */
#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "simd.h"

// Per thread: two (T, T) matrices and one (HS, T) transposed K or V, HS the
// wider of a key and a value head.
static size_t scratch_per_thread(int T, int HS) { return (size_t)2 * T * T + (size_t)HS * T; }

size_t attention_scratch_floats(int T, int HS, int threads) { return scratch_per_thread(T, HS) * (size_t)threads; }

// dst (HS, T) = the transpose of src (T, HS) with leading dimension ld.
static void transpose_head(float *dst, const float *src, int T, int HS, int ld) {
    for (int t = 0; t < T; t++)
        for (int d = 0; d < HS; d++) dst[(size_t)d * T + t] = src[(size_t)t * ld + d];
}

// Query rows per causal block: a block of rows [t0, t1) is multiplied with
// keys [0, t1) only: (n + 1) / 2n of the full T x T work in n blocks, 17/32
// at T = 256 and 5/8 at T = 64. Row blocks of 16: every product of a block
// then takes OpenBLAS's small-matrix kernel.
#ifndef ATT_ROW_BLOCK
#define ATT_ROW_BLOCK 16
#endif

// row[0, n) = softmax(row[0, n)), row[n, T) = 0 (the masked keys).
static void causal_softmax_row(float *row, int n, int T) {
    float sum;
    softmax_exp_row(row, n, &sum);
    const float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) row[j] *= inv;
    for (int j = n; j < T; j++) row[j] = 0.0f;
}

// sum of a[j] b[j], j < n
static float dot_n(const float *a, const float *b, int n) {
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = mask16(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), acc);
    }
    return _mm512_reduce_add_ps(acc);
#else
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += a[j] * b[j];
    return s;
#endif
}

// Index of element (t, j) of head (b, h)'s attention matrix, without the
// caller's offset i0: the dropout key space.
static inline size_t att_index(int b, int h, int NH, int T, int t, int j) {
    return (((size_t)b * NH + h) * T + t) * T + j;
}

// Rows [t0, t1), columns [0, t1) of head (b, h)'s P through its dropout mask
// into dst (T, T): the block the forward multiplied with v. Returns dst.
static float *dropout_block(float *dst, const float *P, int b, int h, int NH, int T, int t0, int t1, float p,
                            uint64_t key, size_t i0) {
    for (int t = t0; t < t1; t++)
        for (int j = 0; j < t1; j++)
            dst[(size_t)t * T + j] = P[(size_t)t * T + j] * dropout_scale(key, i0 + att_index(b, h, NH, T, t, j), p);
    return dst;
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int NH, int NKV, int D, int DV,
                       float p, uint64_t key, size_t i0, float *scratch) {
    const int group = NH / NKV, QKV = (NH + NKV) * D + NKV * DV, C = NH * DV, HSmax = D > DV ? D : DV;
    const float scale = 1.0f / sqrtf((float)D);
    // one task per (batch, KV head); its group's query heads share kT
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < NKV; g++) {
            float *tmp = scratch + (size_t)omp_get_thread_num() * scratch_per_thread(T, HSmax);  // (T, T)
            float *kT = tmp + (size_t)2 * T * T;                                                    // (D, T)
            const float *v = qkv + (size_t)b * T * QKV + (NH + NKV) * D + g * DV;  // (T, DV) ld QKV
            transpose_head(kT, qkv + (size_t)b * T * QKV + (NH + g) * D, T, D, QKV);
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float *q = qkv + (size_t)b * T * QKV + h * D;  // (T, D) ld QKV
                float *P = att + ((size_t)b * NH + h) * T * T;       // (T, T)
                float *y = out + (size_t)b * T * C + h * DV;         // (T, DV) ld C
                // rows in blocks [t0, t1): a block's queries see keys [0, t1) only,
                // so the masked upper triangle beyond each block is never computed
                for (int t0 = 0; t0 < T; t0 += ATT_ROW_BLOCK) {
                    const int t1 = t0 + ATT_ROW_BLOCK < T ? t0 + ATT_ROW_BLOCK : T, rb = t1 - t0;
                    // S = q k^T * scale
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, t1, D, scale, q + (size_t)t0 * QKV, QKV,
                                kT, T, 0.0f, P + (size_t)t0 * T, T);
                    // causal softmax, row by row; j > t is masked to exactly 0
                    for (int t = t0; t < t1; t++) causal_softmax_row(P + (size_t)t * T, t + 1, T);
                    // attention dropout on a private copy; att keeps P
                    const float *Pd = p > 0.0f ? dropout_block(tmp, P, b, h, NH, T, t0, t1, p, key, i0) : P;
                    // y_h = Pd v, into head h's columns of out
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, DV, t1, 1.0f, Pd + (size_t)t0 * T, T,
                                v, QKV, 0.0f, y + (size_t)t0 * C, C);
                }
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                        int NH, int NKV, int D, int DV, float p, uint64_t key, size_t i0, float *scratch) {
    const int group = NH / NKV, QKV = (NH + NKV) * D + NKV * DV, C = NH * DV, HSmax = D > DV ? D : DV;
    const float scale = 1.0f / sqrtf((float)D);
    // One task per (batch, KV head): the group's query heads run in this task,
    // so their += into the shared dK, dV never race.
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < NKV; g++) {
            float *dP = scratch + (size_t)omp_get_thread_num() * scratch_per_thread(T, HSmax);  // (T, T)
            float *Pd = dP + (size_t)T * T;                                                      // (T, T)
            float *vT = Pd + (size_t)T * T;                                                      // (DV, T)
            const float *k = qkv + (size_t)b * T * QKV + (NH + g) * D;
            const float *v = qkv + (size_t)b * T * QKV + (NH + NKV) * D + g * DV;
            float *dk = dqkv + (size_t)b * T * QKV + (NH + g) * D;
            float *dv = dqkv + (size_t)b * T * QKV + (NH + NKV) * D + g * DV;
            transpose_head(vT, v, T, DV, QKV);
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float *q = qkv + (size_t)b * T * QKV + h * D;
                float *dq = dqkv + (size_t)b * T * QKV + h * D;
                const float *P = att + ((size_t)b * NH + h) * T * T;
                const float *dy = dout + (size_t)b * T * C + h * DV;  // (T, DV) ld C
                for (int t0 = 0; t0 < T; t0 += ATT_ROW_BLOCK) {  // the forward's row blocks
                    const int t1 = t0 + ATT_ROW_BLOCK < T ? t0 + ATT_ROW_BLOCK : T, rb = t1 - t0;
                    // the probabilities that multiplied v
                    const float *Pv = p > 0.0f ? dropout_block(Pd, P, b, h, NH, T, t0, t1, p, key, i0) : P;
                    // y = Pv v  =>  dPv = dy v^T ; dV_g += Pv^T dy (summed over the group)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, t1, DV, 1.0f, dy + (size_t)t0 * C, C, vT,
                                T, 0.0f, dP + (size_t)t0 * T, T);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, DV, rb, 1.0f, Pv + (size_t)t0 * T, T,
                                dy + (size_t)t0 * C, C, 1.0f, dv, QKV);
                    // through the dropout mask, then the softmax: dS = P (dP - rowsum(P dP)) * scale
                    for (int t = t0; t < t1; t++) {
                        const float *Pr = P + (size_t)t * T;
                        float *dr = dP + (size_t)t * T;
                        if (p > 0.0f)
                            for (int j = 0; j <= t; j++)
                                dr[j] *= dropout_scale(key, i0 + att_index(b, h, NH, T, t, j), p);
                        const float dot = dot_n(Pr, dr, t + 1);
                        for (int j = 0; j <= t; j++) dr[j] = Pr[j] * (dr[j] - dot) * scale;
                        for (int j = t + 1; j < t1; j++) dr[j] = 0.0f;
                    }
                    // S = q k^T  =>  dq_h += dS k ; dK_g += dS^T q_h (summed over the group)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rb, D, t1, 1.0f, dP + (size_t)t0 * T, T, k,
                                QKV, 1.0f, dq + (size_t)t0 * QKV, QKV);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, D, rb, 1.0f, dP + (size_t)t0 * T, T,
                                q + (size_t)t0 * QKV, QKV, 1.0f, dk, QKV);
                }
            }
        }
    }
}
