/*
 * rope.h: rotary position embeddings (RoPE, Su et al. 2021), the position
 * scheme of a GPTConfig with pos = rope (gpt.h).
 *
 * Convention: GPT-NeoX / Llama "rotate half". A head vector x of HS numbers
 * (HS even) at position t is rotated pair by pair, pair i < HS/2 being the
 * two numbers (x[i], x[i + HS/2]), by the angle t * theta^(-2i/HS):
 *     x'[i]        = x[i] cos - x[i + HS/2] sin
 *     x'[i + HS/2] = x[i + HS/2] cos + x[i] sin
 * i.e. x' = x * cos + rotate_half(x) * sin with rotate_half(x) =
 * (-x[HS/2..HS), x[0..HS/2)) and cos, sin repeated over both halves. Every
 * query head and every key head is rotated by its token's position before
 * the scores; values are not. Then q_t . k_j depends on t - j only.
 *
 * The rotation of a whole batch works in place on the fused projection
 * rows (B, T, QKV) of gpt.h, [q heads | k heads | v heads]: the first
 * (NH + NKV) * HS numbers of each row are rotated, the value heads left.
 * Its backward is the inverse rotation (by -angle) of the gradient.
 */
#ifndef GQA_ROPE_H
#define GQA_ROPE_H

#include <stddef.h>

// cos_t, sin_t (maxT, HS/2): cos and sin of t * theta^(-2i/HS) for
// t < maxT, i < HS/2, computed in double and rounded to float.
void rope_tables(float *cos_t, float *sin_t, int maxT, int HS, double theta);

// Rotate in place the NH query heads and NKV key heads of every row of qkv
// (B, T, QKV), QKV = (NH + 2 NKV) HS: row (b, t) by position pos0 + t (the
// tables must hold it). inverse = 1 rotates by the opposite angle: the
// rotation's backward on a gradient, and its inverse.
void rope_rotate(float *qkv, int B, int T, int pos0, int NH, int NKV, int HS, const float *cos_t,
                 const float *sin_t, int inverse);

// The general form: in every row (b, t) of x (B*T rows, ld floats apart),
// rotate n vectors of `dim` numbers starting at x + row * ld + i * stride
// (i < n) by position pos0 + t, tables (maxT, dim/2). MLA rotates its
// decoupled parts with it: the rope part of each query head (n = NH,
// stride D) and the one shared rope key (n = 1).
void rope_rotate_rows(float *x, int B, int T, int ld, int pos0, int n, int stride, int dim, const float *cos_t,
                      const float *sin_t, int inverse);

#endif
