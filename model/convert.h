/*
 * convert.h: change the attention of a trained model without retraining it.
 *
 * - gpt_convert_kv_heads: the number of KV heads (MHA -> GQA/MQA by
 *   mean-pooling, as Ainslie et al. 2023, or back by repeating).
 * - gpt_convert_to_latent: grouped attention (MHA, GQA or MQA) -> multi-head
 *   latent attention (MLA, DeepSeek-V2) by a truncated SVD of the stacked
 *   key/value projection, as MHA2MLA (Ji et al. 2025) and TransMLA (Meng et
 *   al. 2025) do: lossless at full rank, the best rank-r approximation of the
 *   projection (Eckart-Young) below it.
 *
 * Converted MLA models have no latent RMSNorm (latent_norm = 0): a norm
 * divides the latent by its own rms, which depends on x, so K and V become
 * non-linear in x while the source's are linear; no norm weight can
 * reproduce the source. They have learned positions only (rope_head_dim 0):
 * MLA's decoupled rotary key has no counterpart in a rope source. See
 * convert.c for the head mapping and the factorisation.
 */
#ifndef GQA_CONVERT_H
#define GQA_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "gpt.h"

typedef enum { CONVERT_MEAN = 0, CONVERT_FIRST = 1, CONVERT_RANDOM = 2, CONVERT_REPEAT = 3 } ConvertMethod;

// The methods' names in ConvertMethod order, NULL-terminated.
extern const char *const convert_method_names[];

// dst = src with G KV heads (dst is initialised here). Reduction methods
// need G to divide src's n_kv_head; repeat needs a multiple of it; G must
// divide n_head; src must be grouped (not MLA). Returns 0, or -1 with err
// naming the values (dst then holds nothing to free).
int gpt_convert_kv_heads(const GPT *src, GPT *dst, int G, ConvertMethod method, uint64_t seed, char *err,
                         size_t errlen);

// What the rank cut discards, over all layers. M_l is layer l's stacked
// key/value projection expanded to the n_head heads, (2*NH*HS, C): rows
// [K of heads 0..NH-1 | V of heads 0..NH-1], head h the source's KV head
// h / group. Relative Frobenius error: sqrt(discarded_sq / kv_sq).
typedef struct {
    double kv_sq;         // sum over layers of ||M_l||_F^2
    double discarded_sq;  // sum over layers of the squared singular values of M_l past the rank
                          // (= ||M_l - ukvw_l dkvw_l||_F^2 in exact arithmetic, Eckart-Young)
    int worst_layer;      // the layer with the largest relative error ...
    double worst_rel;     // ... and that error, sqrt(discarded / ||M_l||_F^2)
} ConvertLatentStats;

// dst = src as MLA with a latent of r = rank (dst is initialised here):
// n_kv_head = n_head, kv_lora_rank = r, rope_head_dim 0, latent_norm 0, every
// tensor but the attention's K/V projection copied. Per layer, with the SVD
// M_l = U S V^T: dkvw = V_r^T (r, C), ukvw = U_r S_r (2*NH*HS, r), ukvb = the
// source's K/V biases per head, dkvb = 0; the query rows of qkvw (and qkvb)
// as they are. src must be grouped with pos = learned; 1 <= r <= 2*NKV*HS
// (the full rank, where the logits are the source's up to float round-off).
// The rank of M is at most C too, so r = C is lossless already; when r > C
// the latent dimensions past C are zero (an x of C numbers spans no more)
// and stay zero in training. stats (may be NULL) gets what the cut
// discards. Returns 0, or -1 with err naming the values (dst then holds
// nothing to free).
int gpt_convert_to_latent(const GPT *src, GPT *dst, int rank, ConvertLatentStats *stats, char *err, size_t errlen);

// The SVD behind it, exposed for tests: A (m, n), row-major, in double, by
// one-sided Jacobi (Hestenes). sigma (n): the singular values, descending
// (n - min(m, n) of them zero); vt (n, n): row j is right singular vector j,
// an orthonormal basis of R^n even where sigma_j = 0; av (m, n) = A V, whose
// column j is sigma_j u_j. Deterministic. Returns the sweeps taken.
int convert_svd(const double *a, int m, int n, double *sigma, double *vt, double *av);

#endif
