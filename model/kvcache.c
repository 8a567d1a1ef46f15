/*
 * kvcache.c: the KV cache object (see kvcache.h): its element types and
 * their conversions, allocation, and storing, reading and broadcasting
 * positions in its two layouts (grouped K/V, MLA latent rows). The
 * attention that reads it is attention_cached.c (grouped) or
 * attention_latent.c (MLA).
 */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "../util/team.h"
#include "../util/util.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

// ----------------------------------------------------------------------------
// element types

int kv_dtype_parse(const char *name, KVDtype *out) {
    if (!strcmp(name, "f32")) *out = KV_F32;
    else if (!strcmp(name, "bf16")) *out = KV_BF16;
    else if (!strcmp(name, "f16")) *out = KV_F16;
    else return -1;
    return 0;
}

const char *kv_dtype_name(KVDtype d) { return d == KV_F32 ? "f32" : d == KV_BF16 ? "bf16" : "f16"; }
size_t kv_dtype_bytes(KVDtype d) { return d == KV_F32 ? 4 : 2; }

// IEEE half <-> float without F16C (subnormals, infinities and NaN kept).
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000u | (man << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else {  // subnormal: normalise
        int e = -1;
        do man <<= 1, e++; while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xFF, man = x & 0x7FFFFF;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 0x1F) return (uint16_t)(sign | 0x7C00);  // overflow: infinity
    if (e <= 0) {                                      // subnormal or zero
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e), half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;  // round to nearest even (may carry into exp)
    return (uint16_t)half;
}

void kv_to_float(const void *src, KVDtype d, float *dst, size_t n) {
    if (d == KV_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (d == KV_BF16) {
        const uint16_t *s = src;
        uint32_t *o = (uint32_t *)dst;
        for (size_t i = 0; i < n; i++) o[i] = (uint32_t)s[i] << 16;
    } else {
        const uint16_t *s = src;
        size_t i = 0;
#if defined(__F16C__)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
        for (; i < n; i++) dst[i] = half_to_float(s[i]);
    }
}

void kv_from_float(const float *src, KVDtype d, void *dst, size_t n) {
    if (d == KV_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (d == KV_BF16) {
        const uint32_t *s = (const uint32_t *)src;
        uint16_t *o = dst;
        for (size_t i = 0; i < n; i++) {  // round to nearest even
            uint32_t x = s[i];
            o[i] = (x & 0x7F800000u) == 0x7F800000u ? (uint16_t)((x >> 16) | ((x & 0xFFFF) ? 0x40 : 0))
                                                    : (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
        }
    } else {
        uint16_t *o = dst;
        for (size_t i = 0; i < n; i++) o[i] = float_to_half(src[i]);
    }
}

// Numbers per position per layer and sequence: 2 NKV HS (grouped), r + dR (MLA).
size_t kvcache_bytes(const GPTConfig *c, int batch, int max_T, size_t elem_bytes) {
    return (size_t)c->n_layer * batch * (size_t)max_T * gpt_kv_per_token_layer(c) * elem_bytes;
}

int kvcache_init(KVCache *kv, const GPTConfig *c, int batch, int max_T, KVDtype dtype, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    kv->n_layer = c->n_layer, kv->batch = batch, kv->n_kv_head = c->n_kv_head;
    kv->max_T = max_T, kv->head_size = c->n_embd / c->n_head;
    if (gpt_is_latent(c)) {
        kv->kv_lora_rank = c->kv_lora_rank, kv->rope_head_dim = c->rope_head_dim;
        kv->width = c->kv_lora_rank + c->rope_head_dim;
    }
    kv->dtype = dtype, kv->elem = kv_dtype_bytes(dtype);
    const double want = (double)c->n_layer * batch * (double)max_T * (double)gpt_kv_per_token_layer(c) * kv->elem;
    kv->bytes = kvcache_bytes(c, batch, max_T, kv->elem);
    char b[32];
    if (batch <= 0 || max_T <= 0 || want > (double)SIZE_MAX / 2) {
        snprintf(err, errlen, "KV cache for batch %d x %d positions is too large (%s)", batch, max_T,
                 format_bytes(want, b, sizeof b));
        return -1;
    }
    if (kvcache_is_latent(kv)) {
        kv->latent = calloc(kv->bytes, 1);
    } else {
        kv->k = calloc(kv->bytes / 2, 1);
        kv->v = calloc(kv->bytes / 2, 1);
    }
    if (kvcache_is_latent(kv) ? !kv->latent : !kv->k || !kv->v) {
        snprintf(err, errlen, "cannot allocate the KV cache: %s for batch %d x %d positions",
                 format_bytes((double)kv->bytes, b, sizeof b), batch, max_T);
        kvcache_free(kv);
        return -1;
    }
    if (kvcache_is_latent(kv)) {
        advise_huge_pages(kv->latent, kv->bytes);
    } else {
        advise_huge_pages(kv->k, kv->bytes / 2);
        advise_huge_pages(kv->v, kv->bytes / 2);
    }
    return 0;
}

void kvcache_free(KVCache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->latent);
    kv->k = kv->v = kv->latent = NULL;
}

// ----------------------------------------------------------------------------
// layout. Grouped: V rows (maxT, HS) per head; K in tiles of KV_TILE
// positions, transposed. MLA: rows (maxT, W) per sequence.

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

typedef struct {
    KVCache *kv;
    const float *x;  // qkv rows, or latent rows c
    const float *kr;  // MLA: the rope key rows
    int l, Tn, pos0, NH, ldc, ldkr;
} StoreArgs;

// (sequence, KV head) pairs [begin, end): their rows of the Tn new tokens.
static void store_pairs(void *ctx, long begin, long end, long step) {
    const StoreArgs *a = ctx;
    KVCache *kv = a->kv;
    const int NKV = kv->n_kv_head, HS = kv->head_size, NH = a->NH, QKV = (NH + 2 * NKV) * HS;
    const size_t row_bytes = (size_t)HS * kv->elem;
    for (long i = begin; i < end; i += step) {
        const int b = (int)(i / NKV), g = (int)(i % NKV);
        char *kc = kvcache_k(kv, a->l, b, g), *vc = kvcache_v(kv, a->l, b, g);
        for (int t = 0; t < a->Tn; t++) {
            const int pos = a->pos0 + t;
            const float *row = a->x + ((size_t)b * a->Tn + t) * QKV;
            kv_from_float(row + (NH + NKV + g) * HS, kv->dtype, vc + (size_t)pos * row_bytes, (size_t)HS);
            for (int d = 0; d < HS; d++)  // one column of a key tile
                kv_from_float(row + (NH + g) * HS + d, kv->dtype, kc + kvcache_k_offset(kv->max_T, HS, pos, d) * kv->elem, 1);
        }
    }
}

void kvcache_store_pair(KVCache *kv, int l, const float *qkv, int b, int g, int Tn, int pos0, int NH) {
    CHECK(!kvcache_is_latent(kv));
    CHECK(pos0 >= 0 && pos0 + Tn <= kv->max_T && b < kv->batch && g < kv->n_kv_head);
    StoreArgs a = {.kv = kv, .x = qkv, .l = l, .Tn = Tn, .pos0 = pos0, .NH = NH};
    const long i = (long)b * kv->n_kv_head + g;
    store_pairs(&a, i, i + 1, 1);
}

void kvcache_store(KVCache *kv, int l, const float *qkv, int B, int Tn, int pos0, int NH) {
    CHECK(!kvcache_is_latent(kv));  // MLA stores latent rows: kvcache_store_latent
    CHECK(pos0 >= 0 && pos0 + Tn <= kv->max_T && B <= kv->batch);
    StoreArgs a = {.kv = kv, .x = qkv, .l = l, .Tn = Tn, .pos0 = pos0, .NH = NH};
    // a key column is HS cache lines, each a miss: from 32 (sequence, KV
    // head) pairs the misses are split over the threads; fewer are less
    // work than waking them (decode steps store in attention_cached's items)
    const long pairs = (long)B * kv->n_kv_head;
    team_for(pairs, (size_t)pairs * Tn >= 32, store_pairs, &a);
}

// Rows n = b Tn + t in [begin, end): token t of sequence b.
static void store_latent_rows(void *ctx, long begin, long end, long step) {
    const StoreArgs *a = ctx;
    KVCache *kv = a->kv;
    const int r = kv->kv_lora_rank, dR = kv->rope_head_dim, W = kv->width;
    for (long n = begin; n < end; n += step) {
        const int b = (int)(n / a->Tn), t = (int)(n % a->Tn);
        char *row = (char *)kvcache_latent(kv, a->l, b) + (size_t)(a->pos0 + t) * W * kv->elem;
        kv_from_float(a->x + (size_t)n * a->ldc, kv->dtype, row, (size_t)r);
        if (dR) kv_from_float(a->kr + (size_t)n * a->ldkr, kv->dtype, row + (size_t)r * kv->elem, (size_t)dR);
    }
}

void kvcache_store_latent(KVCache *kv, int l, const float *c, int ldc, const float *kr, int ldkr, int B, int Tn,
                          int pos0) {
    CHECK(kvcache_is_latent(kv));
    CHECK(pos0 >= 0 && pos0 + Tn <= kv->max_T && B <= kv->batch && (kr || kv->rope_head_dim == 0));
    StoreArgs a = {.kv = kv, .x = c, .kr = kr, .l = l, .Tn = Tn, .pos0 = pos0, .ldc = ldc, .ldkr = ldkr};
    // a decode step's few rows are less work than waking the threads
    team_for((long)B * Tn, (size_t)B * Tn * kv->width >= 65536, store_latent_rows, &a);
}

void kvcache_read(const KVCache *kv, int l, int b, int g, int t, float *k, float *v) {
    if (kvcache_is_latent(kv)) {
        const char *row = (const char *)kvcache_latent(kv, l, b) + (size_t)t * kv->width * kv->elem;
        if (k) kv_to_float(row, kv->dtype, k, (size_t)kv->width);
        if (v) kv_to_float(row, kv->dtype, v, (size_t)kv->kv_lora_rank);
        return;
    }
    const int HS = kv->head_size;
    const char *kc = kvcache_k(kv, l, b, g), *vc = kvcache_v(kv, l, b, g);
    if (v) kv_to_float(vc + (size_t)t * HS * kv->elem, kv->dtype, v, (size_t)HS);
    if (k)
        for (int d = 0; d < HS; d++)
            kv_to_float(kc + kvcache_k_offset(kv->max_T, HS, t, d) * kv->elem, kv->dtype, k + d, 1);
}

void kvcache_broadcast(KVCache *kv, int T) {
    CHECK(T >= 0 && T <= kv->max_T);
    if (kvcache_is_latent(kv)) {  // positions [0, T) are the first T rows of each block
        const size_t bytes = (size_t)T * kv->width * kv->elem;
#pragma omp parallel for collapse(2) schedule(static)
        for (int l = 0; l < kv->n_layer; l++)
            for (int b = 1; b < kv->batch; b++) memcpy(kvcache_latent(kv, l, b), kvcache_latent(kv, l, 0), bytes);
        return;
    }
    // positions [0, T) are the first T rows of V and the first ceil(T / KV_TILE)
    // tiles of K (a partial tile's extra columns are overwritten before use)
    const int Tk = round_up(T, KV_TILE) < kv->max_T ? round_up(T, KV_TILE) : kv->max_T;
    const size_t kbytes = (size_t)Tk * kv->head_size * kv->elem, vbytes = (size_t)T * kv->head_size * kv->elem;
#pragma omp parallel for collapse(2) schedule(static)
    for (int l = 0; l < kv->n_layer; l++) {
        for (int b = 1; b < kv->batch; b++) {
            for (int g = 0; g < kv->n_kv_head; g++) {
                memcpy(kvcache_k(kv, l, b, g), kvcache_k(kv, l, 0, g), kbytes);
                memcpy(kvcache_v(kv, l, b, g), kvcache_v(kv, l, 0, g), vbytes);
            }
        }
    }
}
