/*
 * kvcache.h: the inference-time KV cache: its element types, allocation, and
 * the layout in which it stores each position's keys and values. The grouped
 * attention kernel that reads it is attention_cached.h.
 *
 * Two kinds, by the model's attention (gpt_is_latent):
 *
 * Grouped (MHA/GQA/MQA). Per layer K and V of (B, NKV, maxT, HS),
 * head-major, so one KV head's numbers for all positions are contiguous.
 * Within a head, V is row-major (maxT, HS) and K is stored in tiles of
 * KV_TILE = 16 positions, each tile transposed to (HS, 16): the kernel then
 * scores 16 keys per vector instruction without horizontal sums. Its size is
 * exactly 2 * L * B * NKV * maxT * HS * sizeof(elem): it shrinks with
 * n_kv_head, which is the whole point of GQA.
 *
 * Latent (MLA, kv_lora_rank r > 0). Per layer and sequence one row-major
 * (maxT, W) block, W = r + dR: row t = [c (the normalised latent, r) | kr
 * (the rotated rope key, dR)], the same for every head. In the absorbed
 * decode (attention_latent.h) the whole row is every head's key and its
 * first r numbers every head's value. Size exactly
 * L * B * maxT * (r + dR) * sizeof(elem), with no factor 2 and no NH.
 */
#ifndef GQA_KVCACHE_H
#define GQA_KVCACHE_H

#include <stddef.h>

#include "gpt.h"

// Element type of the cache. 16-bit caches halve its bytes; the kernel
// converts numbers to float as it loads them.
typedef enum { KV_F32 = 0, KV_BF16 = 1, KV_F16 = 2 } KVDtype;

// "f32" | "bf16" | "f16" -> dtype; 0, or -1 if the name is unknown.
int kv_dtype_parse(const char *name, KVDtype *out);
const char *kv_dtype_name(KVDtype d);
size_t kv_dtype_bytes(KVDtype d);
// Convert n numbers between float and a cache element type.
void kv_to_float(const void *src, KVDtype d, float *dst, size_t n);
void kv_from_float(const float *src, KVDtype d, void *dst, size_t n);

typedef struct {
    int n_layer, batch, n_kv_head, max_T, head_size;  // L, B, NKV, maxT, HS
    int kv_lora_rank, rope_head_dim, width;           // MLA: r, dR, W = r + dR; all 0 for grouped
    KVDtype dtype;
    size_t elem;   // bytes per number: 4 or 2
    void *k;       // grouped: (L, B, NKV, maxT, HS) of dtype, per head in transposed tiles of KV_TILE positions
    void *v;       // grouped: (L, B, NKV, maxT, HS) of dtype
    void *latent;  // MLA: (L, B, maxT, W) of dtype, rows [c (r) | kr (dR)]; k and v are NULL
    size_t bytes;  // of k and v together, or of latent
} KVCache;

// Exact cache bytes for a config, batch and length (elem_bytes per number):
// grouped 2 * L * B * NKV * maxT * HS * elem, MLA L * B * maxT * (r + dR) * elem.
size_t kvcache_bytes(const GPTConfig *c, int batch, int max_T, size_t elem_bytes);
// Allocate (zeroed) the kind the config asks for. Returns 0, or -1 with err
// if it does not fit in memory.
int kvcache_init(KVCache *kv, const GPTConfig *c, int batch, int max_T, KVDtype dtype, char *err, size_t errlen);
void kvcache_free(KVCache *kv);

static inline int kvcache_is_latent(const KVCache *kv) { return kv->kv_lora_rank > 0; }

// Positions per K tile.
#define KV_TILE 16

// The K and V regions (maxT * HS elements each) of KV head g of sequence b
// in layer l. Use kvcache_read for one position's numbers.
static inline void *kvcache_k(const KVCache *kv, int l, int b, int g) {
    return (char *)kv->k + ((((size_t)l * kv->batch + b) * kv->n_kv_head + g) * kv->max_T) * kv->head_size * kv->elem;
}
static inline void *kvcache_v(const KVCache *kv, int l, int b, int g) {
    return (char *)kv->v + ((((size_t)l * kv->batch + b) * kv->n_kv_head + g) * kv->max_T) * kv->head_size * kv->elem;
}

// Element offset of key (position t, dim d) in one head's K region (of
// kvcache_k). Tile i holds positions [i*KV_TILE, i*KV_TILE + w) as HS rows of
// w numbers, w = KV_TILE except for a last partial tile, so the region is
// exactly maxT * HS numbers.
static inline size_t kvcache_k_offset(int max_T, int HS, int t, int d) {
    const int tile = t / KV_TILE, w = max_T - tile * KV_TILE < KV_TILE ? max_T - tile * KV_TILE : KV_TILE;
    return (size_t)tile * KV_TILE * HS + (size_t)d * w + t % KV_TILE;
}

// MLA: the (maxT, W) rows of sequence b in layer l; row t starts W elements
// after row t - 1.
static inline void *kvcache_latent(const KVCache *kv, int l, int b) {
    return (char *)kv->latent + ((size_t)l * kv->batch + b) * kv->max_T * kv->width * kv->elem;
}

// Grouped: copy the K and V parts of qkv (B, Tn, QKV) for positions
// pos0..pos0+Tn-1 into layer l of the cache.
void kvcache_store(KVCache *kv, int l, const float *qkv, int B, int Tn, int pos0, int NH);

// kvcache_store of one (sequence b, KV head g) pair's rows, on this thread.
void kvcache_store_pair(KVCache *kv, int l, const float *qkv, int b, int g, int Tn, int pos0, int NH);

// MLA: store rows [c | kr] for positions pos0..pos0+Tn-1 of B sequences in
// layer l: c (B*Tn rows of r, ldc floats apart) the normalised latent, kr
// (B*Tn rows of dR, ldkr apart) the rotated rope key (NULL when dR = 0).
void kvcache_store_latent(KVCache *kv, int l, const float *c, int ldc, const float *kr, int ldkr, int B, int Tn,
                          int pos0);

// Position t of sequence b in layer l, as stored (16-bit caches rounded).
// Grouped: key and value of KV head g, HS floats each. MLA (g ignored): the
// absorbed key, the whole row [c | kr] (W floats), into k, and the absorbed
// value, its first r floats (c), into v; either may be NULL.
void kvcache_read(const KVCache *kv, int l, int b, int g, int t, float *k, float *v);

// Copy positions [0, T) of sequence 0 to every other sequence, all layers
// (and heads): a prompt prefilled once for a whole batch. Both kinds.
void kvcache_broadcast(KVCache *kv, int T);

#endif
