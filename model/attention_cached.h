/*
 * attention_cached.h: causal grouped-query attention over a KV cache
 * (kvcache.h), for prefill chunks and decode steps. Training attention over
 * full sequences is attention.h.
 *
 * The grouped kernel: for each (sequence, KV head) the group = NH / NKV query
 * vectors of its heads (for every new position) form one block of rows,
 * scored against the cached keys in ONE pass and mixed with the cached
 * values in ONE pass, register-blocked (AVX-512; a plain C fallback
 * otherwise). Each KV head is read once per step per group, never once per
 * query head, and never copied. When there are fewer (sequence, KV head)
 * pairs than threads (MQA at batch 1), the key axis is split across threads
 * and the pieces are merged with an online-softmax rescale.
 */
#ifndef GQA_ATTENTION_CACHED_H
#define GQA_ATTENTION_CACHED_H

#include <stddef.h>

#include "kvcache.h"

// Floats of scratch attention_cached needs for up to Tn new tokens at a
// context of up to ctx positions, with `threads` threads.
size_t attention_cached_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads);

// Stores the new tokens' K/V (from qkv (B, Tn, QKV)) at positions pos0..
// of layer l, then out (B, Tn, NH*HS): new token t of sequence b (position
// pos0 + t) attends causally to cache positions [0, pos0 + t] of layer l,
// its q read from qkv. When each (sequence, KV head) pair's new tokens are
// one work item's rows (decode; prefill chunks of few tokens), the item
// that reads the pair's newest keys stores them first, on its own thread,
// so their cache lines are written and read by one core; otherwise the
// store is a loop of its own before the items.
void attention_cached(float *out, const float *qkv, KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats);

#endif
