/*
 * kvcache.h: the inference-time KV cache and the grouped attention kernel
 * that reads it.
 *
 * Cache layout per layer: K and V of shape (B, NKV, maxT, HS), head-major,
 * so one KV head's keys for all positions are contiguous. Its size is
 * 2 * L * B * NKV * maxT * HS * sizeof(float): it shrinks with n_kv_head,
 * which is the whole point of GQA.
 *
 * The grouped kernel: for each (sequence, KV head) the group = NH / NKV query
 * vectors of its heads (for every new position) form one matrix, scored
 * against the cached keys in ONE sgemm and mixed with the cached values in
 * ONE sgemm. Each KV head is read once per step per group, never once per
 * query head, and never copied. When there are fewer (sequence, KV head)
 * pairs than threads (MQA at batch 1), the key axis is split across threads
 * and the pieces are merged with an online-softmax rescale.
 */
#ifndef GQA_KVCACHE_H
#define GQA_KVCACHE_H

#include <stddef.h>

#include "gpt.h"

typedef struct {
    int n_layer, batch, n_kv_head, max_T, head_size;  // L, B, NKV, maxT, HS
    float *k;      // (L, B, NKV, maxT, HS)
    float *v;      // (L, B, NKV, maxT, HS)
    size_t bytes;  // of k and v together
} KVCache;

// Exact cache bytes for a config, batch and length (elem_bytes per number).
size_t kvcache_bytes(const GPTConfig *c, int batch, int max_T, size_t elem_bytes);
// Allocate (zeroed). Returns 0, or -1 with err if it does not fit in memory.
int kvcache_init(KVCache *kv, const GPTConfig *c, int batch, int max_T, char *err, size_t errlen);
void kvcache_free(KVCache *kv);

// Rows (maxT, HS) of KV head g of sequence b in layer l.
static inline float *kvcache_k(const KVCache *kv, int l, int b, int g) {
    return kv->k + ((((size_t)l * kv->batch + b) * kv->n_kv_head + g) * kv->max_T) * kv->head_size;
}
static inline float *kvcache_v(const KVCache *kv, int l, int b, int g) {
    return kv->v + ((((size_t)l * kv->batch + b) * kv->n_kv_head + g) * kv->max_T) * kv->head_size;
}

// Copy the K and V parts of qkv (B, Tn, QKV) for positions pos0..pos0+Tn-1
// into layer l of the cache.
void kvcache_store(KVCache *kv, int l, const float *qkv, int B, int Tn, int pos0, int NH);

// Floats of scratch attention_cached needs for up to Tn new tokens at a
// context of up to ctx positions, with `threads` threads.
size_t attention_cached_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads);

// out (B, Tn, NH*HS): new token t of sequence b (position pos0 + t) attends
// causally to cache positions [0, pos0 + t] of layer l; q is read from qkv
// (B, Tn, QKV). The new tokens' K/V must already be stored.
void attention_cached(float *out, const float *qkv, const KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats);

#endif
