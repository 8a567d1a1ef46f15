/*
 * ops.h: the layer kernels of the GPT, forward and backward side by side:
 * embedding, LayerNorm, matmul (+bias), GELU, residual dropout, softmax
 * cross-entropy. Attention lives in attention.h.
 *
 * Conventions (as llm.c): N = B*T rows; activations are row-major (N, C);
 * a Linear weight is (OC, C) as in PyTorch, so out = inp @ w^T + b.
 * Backward functions accumulate (+=) into their weight gradients; each one
 * says whether it accumulates into or overwrites its input gradient.
 * Matmuls go to gemm.h (our AVX-512 kernel, or OpenBLAS) above 16 rows and
 * to a weight-streaming kernel below; elementwise loops run over OpenMP threads.
 * No kernel allocates memory.
 */
#ifndef GQA_OPS_H
#define GQA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../util/rng.h"

// out (B,T,C) = wte[inp[b,t]] + wpe[t]; wpe (and dwpe) may be NULL: no
// position embedding (pos = rope), out = wte[inp[b,t]].
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
// dwte (V,C) +=, dwpe (maxT,C) +=
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);

// out (N,C) = (inp - mean) * rstd * w + b; b may be NULL. mean, rstd (N) are saved.
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int N, int C);
// dinp (N,C) +=, dw (C) +=, db (C) += (db may be NULL)
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C);

// RMSNorm (MLA's latent norm): out (N,C) = inp * rstd * w, rstd = 1 /
// sqrt(mean(inp^2) + eps) saved (N); inp rows are ld floats apart (ld >= C).
void rmsnorm_forward(float *out, float *rstd, const float *inp, int ld, const float *w, float eps, int N, int C);
// dinp (N, ld) += in its first C columns, dw (C) +=
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, int ld, const float *w,
                      const float *rstd, int N, int C);

// out (N,OC) = inp (N,C) @ w^T (OC,C) + b (OC); b may be NULL.
void matmul_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC);
// dinp (N,C) = (overwritten), dw (OC,C) +=, db (OC) += (db may be NULL; dinp
// may be NULL to skip)
void matmul_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int N, int C, int OC);

// tanh-approximate GELU, as GPT-2 and nn.GELU(approximate='tanh')
void gelu_forward(float *out, const float *inp, size_t n);
// Training forward: out = gelu(inp) (gelu_forward's values) and dlocal =
// gelu'(inp), from one tanh; dlocal may be inp itself (in place), or NULL for
// the values alone (gelu_forward). The backward is then a product, dinp =
// dlocal * dout (overwritten).
void gelu_forward_train(float *out, float *dlocal, const float *inp, size_t n);
void gelu_backward_local(float *dinp, const float *dlocal, const float *dout, size_t n);

// Inverted dropout with a counter-based mask: element i of x is kept (and
// scaled by 1/(1-p)) iff rng_hash_uniform(key, i0 + i) >= p. In place. p == 0
// is a no-op. i0 places x in a larger tensor (a shard of a batch draws the
// masks the whole batch would).
void dropout_forward(float *x, size_t n, float p, uint64_t key, size_t i0);
// dx *= mask / (1-p), in place, with the same key and i0 as the forward.
void dropout_backward(float *dx, size_t n, float p, uint64_t key, size_t i0);

// out = a + b, elementwise
void residual_forward(float *out, const float *a, const float *b, size_t n);

// s[0, n) = exp(s[j] - max) in place, n >= 1 (an unnormalised softmax row:
// attention's, training and decode). Returns the max; *sum = the sum of the
// exponentials.
float softmax_exp_row(float *s, int n, float *sum);

// Row i of a softmax over keys split in nsplit parts, merged: part s at
// parts + s * stride holds the unnormalised O (rows, dim), then the rows'
// maxima m and sums l (rows each); o (dim) = sum_s e^(m_s - M) O_s[i] /
// sum_s e^(m_s - M) l_s, M = max_s m_s, parts with l = 0 (empty) skipped.
void softmax_merge_splits(float *o, const float *parts, size_t stride, int nsplit, int rows, int dim, int i);

// probs (N,V) = softmax(logits); losses (N) = -log probs[target], or 0
// where the target is negative (ignored: GPT_IGNORE).
void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, int N, int V);
// dlogits (N,V) = (probs - onehot(target)) * dloss, rows of ignored
// (negative) targets 0; may alias probs (in place).
void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, int N, int V);

// The mask of dropout_forward for element i: 0 or 1/(1-p).
static inline float dropout_scale(uint64_t key, size_t i, float p) {
    return rng_hash_uniform(key, i) >= p ? 1.0f / (1.0f - p) : 0.0f;
}

#endif
