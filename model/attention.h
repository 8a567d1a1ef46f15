/*
 * attention.h: causal grouped-query attention for training (full sequences).
 * The decode-time kernel over a KV cache lives with the cache (kvcache.h).
 *
 * Shapes: B batch, T time, NH query heads, NKV key/value heads, query and
 * key heads D wide, value heads DV wide (both HS for grouped attention; MLA
 * has D = HS + rope_head_dim, DV = HS), QKV = (NH + NKV) * D + NKV * DV.
 * Each row of qkv is [q heads | k heads | v heads].
 * Query head h reads KV head h / group, group = NH / NKV (NH % NKV == 0):
 * PyTorch's repeat_interleave convention. K and V are never copied per query
 * head; every head's matrices are strided views into qkv (leading dim QKV).
 */
#ifndef GQA_ATTENTION_H
#define GQA_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

// Floats of scratch the attention kernels need for (T, max(D, DV), threads).
size_t attention_scratch_floats(int T, int HS, int threads);

// out (B,T,NH*DV) = softmax(q k^T / sqrt(D), causal) v, per query head.
// att (B,NH,T,T) receives the softmax probabilities (before dropout; upper
// triangle zero) for the backward pass. With dropout p > 0 the probabilities
// are dropped with the counter-based mask keyed by `key` (see ops.h): entry
// (b, h, t, j) draws index i0 + ((b NH + h) T + t) T + j.
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int NH, int NKV, int D, int DV,
                       float p, uint64_t key, size_t i0, float *scratch);

// dqkv (B,T,QKV) += gradients of q, k and v. dK and dV of KV head g are the
// SUM over the `group` query heads that read it: that sum is the GQA gradient.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                        int NH, int NKV, int D, int DV, float p, uint64_t key, size_t i0, float *scratch);

#endif
