/*
 * attention_latent.h: multi-head latent attention (MLA, DeepSeek-V2) over a
 * latent KV cache (kvcache.h), in the absorbed form, for prefill chunks and
 * decode steps. Training runs the unabsorbed form through the grouped
 * kernel (gpt.c); grouped inference is attention_cached.h.
 *
 * The cache holds per position one row [c | kr] of W = r + dR numbers: the
 * normalised latent and the rotated rope key. With W_uk_h, W_uv_h the
 * (HS, r) up-projections of head h, the caller absorbs them into the query
 * and the output:
 *     qabs_h  = [W_uk_h^T q_nope_h (r) | rotated q_rope_h (dR)]       (W)
 *     s_h(j)  = qabs_h . row_j * scale,  scale = 1 / sqrt(HS + dR)
 *     olat_h  = sum_j softmax(s_h)_j row_j[0:r]                       (r)
 *     o_h     = W_uv_h olat_h (+ b_uv_h)                              (HS)
 * so the keys and values of every head are the same cached rows: one row is
 * read once per step for all NH heads.
 *
 * The kernel, per work item (sequence, block of new tokens, key range):
 * the item's rows (tokens x NH heads) meet the cache one tile of positions
 * at a time: scores for all rows from the tile, an online-softmax update
 * (running max m and sum l per row, the partial output rescaled when m
 * grows), then the weighted sum from the SAME tile while it is still in L1.
 * One pass over the cache (the sum prefetches the next tile). 16-bit
 * caches are converted to float once per tile, into L1 scratch.
 * attention_latent_set_passes(2) selects the two-pass variant instead (all
 * scores and the softmax first, then a second pass over the cache for the
 * weighted sum, with the same score and sum kernels and no prefetch) for
 * comparison; it gives the same results up to float rounding.
 *
 * Threads: work items are (sequence, block of new tokens, key split). A
 * decode step splits the key axis when the batch does not fill the threads
 * evenly (batch 1 on 2 threads: 2 splits), the splits merged with the
 * online-softmax rescale.
 */
#ifndef GQA_ATTENTION_LATENT_H
#define GQA_ATTENTION_LATENT_H

#include <stddef.h>

#include "kvcache.h"

// Floats of scratch attention_latent needs for up to Tn new tokens at a
// context of up to ctx positions, with `threads` threads, for either number
// of passes and any batch up to kv->batch.
size_t attention_latent_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads);

// olat (B, Tn, NH, r): new token t of sequence b (position pos0 + t)
// attends causally to the cached rows [0, pos0 + t] of layer l (kv a latent
// cache) with queries qabs (B, Tn, NH, W), W = r + dR, unscaled (the kernel
// applies 1 / sqrt(HS + dR)). The new tokens' rows must already be stored
// (kvcache_store_latent). No allocation; runs on the OpenMP threads.
void attention_latent(float *olat, const float *qabs, const KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats);

// 1 (the default): one pass over the cache; 2: scores and softmax, then a
// second pass for the weighted sum. For benchmarks and tests; set it
// outside parallel work.
void attention_latent_set_passes(int passes);

// 1: the portable C kernels even where AVX-512 is compiled in (tests
// compare the two); 0: AVX-512 where compiled in. Without AVX-512 the
// portable kernels always run. Set it outside parallel work. Returns the
// previous setting.
int attention_latent_set_portable(int on);

#endif
