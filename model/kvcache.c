/*
 * kvcache.c: KV cache storage and the grouped cached-attention kernel (see
 * kvcache.h for the contract).
 *
 * Work items are (sequence b, KV head g, block of new tokens, key split). An
 * item's queries (its tokens x the group's heads, R rows) are gathered into
 * one scaled matrix Q (R, HS), then
 *     S = Q K^T                one pass over the key tiles [k0, k1)
 *     P = exp(S - max)         causal, row by row (vectorised exp)
 *     O = P V                  one pass over the value rows
 * in register blocks: up to 16 rows meet each key tile (16 keys at one dim)
 * while it is in a register, and up to 4 rows x 64 dims meet each value row.
 * 16-bit caches are converted as they are loaded. With one key split, O is
 * divided by the row sums and is the output. With several (decode only),
 * each split keeps its row max m, sum l and unnormalised O, and the merge
 * rescales them: out = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s,
 * M = max_s m_s.
 */
#include "kvcache.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"
#include "ops.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

// A key split is worth its merge only with at least this many keys.
#define MIN_KEYS_PER_SPLIT 256

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

size_t kvcache_bytes(const GPTConfig *c, int batch, int max_T, size_t elem_bytes) {
    return 2 * (size_t)c->n_layer * batch * c->n_kv_head * (size_t)max_T * (c->n_embd / c->n_head) * elem_bytes;
}

int kvcache_init(KVCache *kv, const GPTConfig *c, int batch, int max_T, KVDtype dtype, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    kv->n_layer = c->n_layer, kv->batch = batch, kv->n_kv_head = c->n_kv_head;
    kv->max_T = max_T, kv->head_size = c->n_embd / c->n_head;
    kv->dtype = dtype, kv->elem = kv_dtype_bytes(dtype);
    double want = 2.0 * c->n_layer * batch * c->n_kv_head * (double)max_T * kv->head_size * kv->elem;
    kv->bytes = kvcache_bytes(c, batch, max_T, kv->elem);
    char b[32];
    if (batch <= 0 || max_T <= 0 || want > (double)SIZE_MAX / 2) {
        snprintf(err, errlen, "KV cache for batch %d x %d positions is too large (%s)", batch, max_T,
                 format_bytes(want, b, sizeof b));
        return -1;
    }
    kv->k = calloc(kv->bytes / 2, 1);
    kv->v = calloc(kv->bytes / 2, 1);
    if (!kv->k || !kv->v) {
        snprintf(err, errlen, "cannot allocate the KV cache: %s for batch %d x %d positions",
                 format_bytes((double)kv->bytes, b, sizeof b), batch, max_T);
        kvcache_free(kv);
        return -1;
    }
    advise_huge_pages(kv->k, kv->bytes / 2);
    advise_huge_pages(kv->v, kv->bytes / 2);
    return 0;
}

void kvcache_free(KVCache *kv) {
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

// ----------------------------------------------------------------------------
// layout: V rows (maxT, HS) per head; K in tiles of KV_TILE positions, transposed

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Element offset of key (position t, dim d) in one head's K region. Tile i
// holds positions [i*KV_TILE, i*KV_TILE + w) as HS rows of w numbers, w = KV_TILE except
// for a last partial tile, so the region is exactly maxT * HS numbers.
static inline size_t k_offset(int max_T, int HS, int t, int d) {
    const int tile = t / KV_TILE, w = max_T - tile * KV_TILE < KV_TILE ? max_T - tile * KV_TILE : KV_TILE;
    return (size_t)tile * KV_TILE * HS + (size_t)d * w + t % KV_TILE;
}

void kvcache_store(KVCache *kv, int l, const float *qkv, int B, int Tn, int pos0, int NH) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, QKV = (NH + 2 * NKV) * HS;
    CHECK(pos0 >= 0 && pos0 + Tn <= kv->max_T && B <= kv->batch);
    const size_t row_bytes = (size_t)HS * kv->elem;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < NKV; g++) {
            char *kc = kvcache_k(kv, l, b, g), *vc = kvcache_v(kv, l, b, g);
            for (int t = 0; t < Tn; t++) {
                const int pos = pos0 + t;
                const float *row = qkv + ((size_t)b * Tn + t) * QKV;
                kv_from_float(row + (NH + NKV + g) * HS, kv->dtype, vc + (size_t)pos * row_bytes, (size_t)HS);
                for (int d = 0; d < HS; d++)  // one column of a key tile
                    kv_from_float(row + (NH + g) * HS + d, kv->dtype, kc + k_offset(kv->max_T, HS, pos, d) * kv->elem, 1);
            }
        }
    }
}

void kvcache_read(const KVCache *kv, int l, int b, int g, int t, float *k, float *v) {
    const int HS = kv->head_size;
    const char *kc = kvcache_k(kv, l, b, g), *vc = kvcache_v(kv, l, b, g);
    kv_to_float(vc + (size_t)t * HS * kv->elem, kv->dtype, v, (size_t)HS);
    for (int d = 0; d < HS; d++) kv_to_float(kc + k_offset(kv->max_T, HS, t, d) * kv->elem, kv->dtype, k + d, 1);
}

void kvcache_broadcast(KVCache *kv, int T) {
    CHECK(T >= 0 && T <= kv->max_T);
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

// ----------------------------------------------------------------------------
// the three steps of one work item, on nr query rows Q (nr, HS; pre-scaled)
//   qk:      S[r][j] = Q[r] . K[k0 + j]          j < nk (k0 a multiple of KV_TILE)
//   softmax: S[r][j] = exp(S[r][j] - max), j < vis (softmax_exp_row, ops.h);
//            0 for the keys other rows of the item still see
//   pv:      O[r] += sum_j S[r][j] V[k0 + j]
// S rows have leading dimension lds (a multiple of KV_TILE); qk may write junk in
// lanes [nk, round_up(nk, KV_TILE)). Kh is the head's K region, V its row k0.

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include "simd.h"
// Key tiles and value rows are prefetched this many bytes ahead into L1.
#ifndef KV_PREFETCH
#define KV_PREFETCH 8192  // bytes ahead (0: off)
#endif
#ifndef KV_HINT
#define KV_HINT _MM_HINT_T0
#endif
// With KV_FAR_ROWS or more query rows on a key tile (MQA's 8 at decode, and
// prefill) the score kernel does about as many FMAs as it reads bytes, and
// it also prefetches the tiles KV_PREFETCH_FAR bytes ahead into L2, as the
// weight matmul does (MQA batch 8 x 2048 and x 4032: +7-8% in alternating
// runs; batch 1 and prefill unchanged). With fewer rows, and for the value
// rows, that prefetch measured no better (GQA-2) or slower (MHA).
#ifndef KV_FAR_ROWS
#define KV_FAR_ROWS 8
#endif
#ifndef KV_PREFETCH_FAR
#define KV_PREFETCH_FAR 32768
#endif

// 16 cache numbers at p as floats (lanes outside m: 0).
ALWAYS_INLINE __m512 load16(const void *p, KVDtype dt, __mmask16 m) {
    if (dt == KV_F32) return _mm512_maskz_loadu_ps(m, p);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (dt == KV_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

// NR rows against one key tile at a time: NR accumulators of KV_TILE keys, one
// load of a tile row (KV_TILE keys at one dim) per NR FMAs, no horizontal sums.
// Few rows use NCH independent chains over d to hide FMA latency.
ALWAYS_INLINE void qk_rows(const int NR, const KVDtype dt, const float *Q, int HS, const char *Kh, int max_T, int k0,
                           int nk, float *S, int lds) {
    enum { MAXR = 16, MAXCH = 4 };
    const int NCH = NR == 1 ? 4 : NR == 2 ? 2 : 1;
    const size_t elem = dt == KV_F32 ? 4 : 2;
    for (int j = 0; j < nk; j += KV_TILE) {
        const int tile = (k0 + j) / KV_TILE, w = max_T - tile * KV_TILE < KV_TILE ? max_T - tile * KV_TILE : KV_TILE;
        const __mmask16 m = mask16(w);
        const char *T = Kh + (size_t)tile * KV_TILE * HS * elem;
        __m512 acc[MAXR][MAXCH];
#pragma GCC unroll 16
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
            for (int c = 0; c < NCH; c++) acc[r][c] = _mm512_setzero_ps();
        int d = 0;
        for (; d + NCH <= HS; d += NCH) {
#pragma GCC unroll 4
            for (int c = 0; c < NCH; c++) {
                const char *row = T + (size_t)(d + c) * w * elem;  // the tile's keys at dim d + c
                if (KV_PREFETCH) _mm_prefetch(row + KV_PREFETCH, KV_HINT);
                if (KV_PREFETCH_FAR && NR >= KV_FAR_ROWS) _mm_prefetch(row + KV_PREFETCH_FAR, _MM_HINT_T1);
                const __m512 kv = load16(row, dt, m);
#pragma GCC unroll 16
                for (int r = 0; r < NR; r++)
                    acc[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(Q[(size_t)r * HS + d + c]), kv, acc[r][c]);
            }
        }
        for (; d < HS; d++) {
            const __m512 kv = load16(T + (size_t)d * w * elem, dt, m);
#pragma GCC unroll 16
            for (int r = 0; r < NR; r++)
                acc[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(Q[(size_t)r * HS + d]), kv, acc[r][0]);
        }
#pragma GCC unroll 16
        for (int r = 0; r < NR; r++) {
            __m512 s = acc[r][0];
#pragma GCC unroll 4
            for (int c = 1; c < NCH; c++) s = _mm512_add_ps(s, acc[r][c]);
            _mm512_storeu_ps(S + (size_t)r * lds + j, s);
        }
    }
}

#define QK_CASE(NR, DT) \
    case NR: qk_rows(NR, DT, Q, HS, Kh, max_T, k0, nk, S, lds); break;
#define QK_SWITCH(DT)                                                                                             \
    switch (nr) {                                                                                                 \
        QK_CASE(1, DT) QK_CASE(2, DT) QK_CASE(3, DT) QK_CASE(4, DT) QK_CASE(5, DT) QK_CASE(6, DT) QK_CASE(7, DT) \
        QK_CASE(8, DT) QK_CASE(9, DT) QK_CASE(10, DT) QK_CASE(11, DT) QK_CASE(12, DT) QK_CASE(13, DT)            \
        QK_CASE(14, DT) QK_CASE(15, DT) QK_CASE(16, DT)                                                          \
    }

// nr <= QK_ROWS rows
static void qk(int nr, KVDtype dt, const float *Q, int HS, const char *Kh, int max_T, int k0, int nk, float *S,
               int lds) {
    if (dt == KV_F32) QK_SWITCH(KV_F32)
    else if (dt == KV_BF16) QK_SWITCH(KV_BF16)
    else QK_SWITCH(KV_F16)
}

// NR <= 4 rows x ND <= 4 vectors of 16 dims from d0 (the last one masked by
// mlast): O[r][d0..] += sum_j P[r][j] V[j][d0..], one load of each V row
// per NR x ND FMAs.
ALWAYS_INLINE void pv_rows(const int NR, const int ND, const KVDtype dt, const float *P, int ldp, const char *V, int HS,
                           int d0, __mmask16 mlast, int nk, float *O) {
    const size_t elem = dt == KV_F32 ? 4 : 2;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++)
            acc[r][v] = _mm512_maskz_loadu_ps(v == ND - 1 ? mlast : 0xFFFF, O + (size_t)r * HS + d0 + 16 * v);
    for (int j = 0; j < nk; j++) {
        const char *row = V + ((size_t)j * HS + d0) * elem;
        if (KV_PREFETCH)
#pragma GCC unroll 4
            for (int v = 0; v < ND; v++) _mm_prefetch(row + 16 * v * elem + KV_PREFETCH, KV_HINT);
        __m512 x[4];
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++) {
            x[v] = load16(row + 16 * v * elem, dt, v == ND - 1 ? mlast : 0xFFFF);
            __asm__("" : "+v"(x[v]));  // one load per vector, not one memory operand per row's FMA
        }
#pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const __m512 p = _mm512_set1_ps(P[(size_t)r * ldp + j]);
#pragma GCC unroll 4
            for (int v = 0; v < ND; v++) acc[r][v] = _mm512_fmadd_ps(p, x[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++)
            _mm512_mask_storeu_ps(O + (size_t)r * HS + d0 + 16 * v, v == ND - 1 ? mlast : 0xFFFF, acc[r][v]);
}

#define PV_CASE(NR, ND, DT) \
    case (NR) * 8 + (ND): pv_rows(NR, ND, DT, Pc, ldp, Vc, HS, d0, mlast, nk, Oc); break;
#define PV_SWITCH(DT)                                                                                   \
    switch (nr * 8 + nd) {                                                                              \
        PV_CASE(1, 1, DT) PV_CASE(1, 2, DT) PV_CASE(1, 3, DT) PV_CASE(1, 4, DT) PV_CASE(2, 1, DT)       \
        PV_CASE(2, 2, DT) PV_CASE(2, 3, DT) PV_CASE(2, 4, DT) PV_CASE(3, 1, DT) PV_CASE(3, 2, DT)       \
        PV_CASE(3, 3, DT) PV_CASE(3, 4, DT) PV_CASE(4, 1, DT) PV_CASE(4, 2, DT) PV_CASE(4, 3, DT)       \
        PV_CASE(4, 4, DT)                                                                               \
    }

// Keys in blocks of PV_KEYS (a block of V stays in L1 while every row chunk
// of 4 and dim chunk of 64 passes over it). vis[r]: keys row r sees.
#define PV_KEYS 64
static void pv(int R, const int *vis, KVDtype dt, const float *P, int ldp, const char *V, int HS, float *O) {
    const size_t elem = dt == KV_F32 ? 4 : 2;
    const int nvec = (HS + 15) / 16;
    const __mmask16 tail = mask16(HS - 16 * (nvec - 1));
    const int nk_all = vis[R - 1];
    for (int j0 = 0; j0 < nk_all; j0 += PV_KEYS) {
        for (int r0 = 0; r0 < R; r0 += 4) {
            const int nr = R - r0 < 4 ? R - r0 : 4, end = vis[r0 + nr - 1] < j0 + PV_KEYS ? vis[r0 + nr - 1] : j0 + PV_KEYS;
            if (end <= j0) continue;
            for (int v0 = 0; v0 < nvec; v0 += 4) {
                const int nd = nvec - v0 < 4 ? nvec - v0 : 4, d0 = 16 * v0, nk = end - j0;
                const __mmask16 mlast = v0 + nd == nvec ? tail : 0xFFFF;
                const float *Pc = P + (size_t)r0 * ldp + j0;
                const char *Vc = V + (size_t)j0 * HS * elem;
                float *Oc = O + (size_t)r0 * HS;
                if (dt == KV_F32) PV_SWITCH(KV_F32)
                else if (dt == KV_BF16) PV_SWITCH(KV_BF16)
                else PV_SWITCH(KV_F16)
            }
        }
    }
}

#else  // portable fallback: the same steps, one number at a time

static inline float kv_elem(const char *p, size_t i, KVDtype dt) {
    float f;
    kv_to_float(p + i * kv_dtype_bytes(dt), dt, &f, 1);
    return f;
}

static void qk(int nr, KVDtype dt, const float *Q, int HS, const char *Kh, int max_T, int k0, int nk, float *S,
               int lds) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nk; j++) {
            float s = 0.0f;
            for (int d = 0; d < HS; d++) s += Q[(size_t)r * HS + d] * kv_elem(Kh, k_offset(max_T, HS, k0 + j, d), dt);
            S[(size_t)r * lds + j] = s;
        }
}

static void pv(int R, const int *vis, KVDtype dt, const float *P, int ldp, const char *V, int HS, float *O) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < vis[r]; j++) {
            const float p = P[(size_t)r * ldp + j];
            for (int d = 0; d < HS; d++) O[(size_t)r * HS + d] += p * kv_elem(V, (size_t)j * HS + d, dt);
        }
}
#endif

// ----------------------------------------------------------------------------
// planning: rows per item, key splits, scratch

// Query rows one qk call scores together (its register block).
#define QK_ROWS 16

typedef struct {
    int rb, nrb;        // new tokens per work item, number of token blocks
    int nsplit, chunk;  // key splits and keys per split (a multiple of KV_TILE; the score rows' stride)
    size_t per_thread;  // Q/O (R, HS) + S (R, chunk) + vis, 1/sum (R each), in floats
} Plan;

// Tokens per item: as many as make QK_ROWS rows (at least one token).
static int tokens_per_item(int group, int Tn) {
    int rb = group >= QK_ROWS ? 1 : QK_ROWS / group;
    return rb < Tn ? rb : Tn;
}

static Plan make_plan(int B, int NKV, int group, int HS, int Tn, int ctx, int threads) {
    Plan p;
    p.rb = tokens_per_item(group, Tn);
    p.nrb = (Tn + p.rb - 1) / p.rb;
    p.nsplit = 1;
    const int items = B * NKV * p.nrb;
    if (Tn == 1 && items < threads) {  // decode with idle threads: split the keys
        int by_threads = (threads + items - 1) / items, by_len = ctx / MIN_KEYS_PER_SPLIT;
        p.nsplit = by_threads < by_len ? by_threads : by_len;
        if (p.nsplit < 1) p.nsplit = 1;
    }
    p.chunk = round_up((ctx + p.nsplit - 1) / p.nsplit, KV_TILE);
    const size_t R = (size_t)p.rb * group;
    p.per_thread = R * HS + R * p.chunk + 2 * R;
    return p;
}

size_t attention_cached_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads) {
    // the largest plan over any Tn' <= Tn, ctx' <= ctx: rows per item grow
    // with Tn', the score block with ctx' (one split is the longest)
    const int group = NH / kv->n_kv_head, HS = kv->head_size;
    const size_t R = (size_t)tokens_per_item(group, Tn) * group, lds = (size_t)round_up(ctx, KV_TILE);
    const size_t partials = (size_t)2 * threads * group * (HS + 2);
    return (size_t)threads * (R * HS + R * lds + 2 * R) + partials;
}

// ----------------------------------------------------------------------------
// the kernel

void attention_cached(float *out, const float *qkv, const KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, group = NH / NKV, QKV = (NH + 2 * NKV) * HS, C = NH * HS;
    const int ctx = pos0 + Tn, threads = omp_get_max_threads();
    const float scale = 1.0f / sqrtf((float)HS);
    const Plan p = make_plan(B, NKV, group, HS, Tn, ctx, threads);
    const int n_items = B * NKV * p.nrb * p.nsplit;
    // partial results of key splits (decode): per item R x HS outputs, R maxes, R sums
    const size_t R_split = (size_t)group, partial_stride = R_split * (HS + 2);
    float *partials = scratch + (size_t)threads * p.per_thread;
    CHECK(ctx <= kv->max_T);
    CHECK((size_t)threads * p.per_thread + (p.nsplit > 1 ? (size_t)n_items * partial_stride : 0) <= scratch_floats);

#pragma omp parallel for schedule(static)
    for (int it = 0; it < n_items; it++) {
        const int s = it % p.nsplit, rbi = (it / p.nsplit) % p.nrb;
        const int g = (it / p.nsplit / p.nrb) % NKV, b = it / p.nsplit / p.nrb / NKV;
        float *Q = scratch + (size_t)omp_get_thread_num() * p.per_thread;  // (R, HS), later O
        float *S = Q + (size_t)p.rb * group * HS;                           // (R, chunk)
        const int t0 = rbi * p.rb, t1 = t0 + p.rb < Tn ? t0 + p.rb : Tn, R = (t1 - t0) * group;
        const int k0 = s * p.chunk, k1 = k0 + p.chunk < ctx ? k0 + p.chunk : ctx;
        int *vis = (int *)(S + (size_t)p.rb * group * p.chunk);               // (R)
        float *inv = (float *)(vis + (size_t)p.rb * group);                 // (R)
        for (int r = 0; r < R; r++) {  // row (t, j) is query head g*group + j at time t; it sees keys [k0, pos0 + t]
            const int end = pos0 + t0 + r / group + 1;
            vis[r] = (end < k1 ? end : k1) - k0;
        }
        float *Op = partials + (size_t)it * partial_stride, *mp = Op + R_split * HS, *lp = mp + R_split;
        if (vis[R - 1] <= 0) {  // an empty split (only when splitting): rows are one token
            for (int r = 0; r < R; r++) mp[r] = -INFINITY, lp[r] = 0.0f;
            memset(Op, 0, (size_t)R * HS * sizeof(float));
            continue;
        }
        for (int t = t0; t < t1; t++) {  // gather the group's queries, scaled
            const float *q = qkv + ((size_t)b * Tn + t) * QKV + (size_t)g * group * HS;
            float *dst = Q + (size_t)(t - t0) * group * HS;
            for (int i = 0; i < group * HS; i++) dst[i] = q[i] * scale;
        }
        const char *Kh = kvcache_k(kv, l, b, g), *V = (const char *)kvcache_v(kv, l, b, g) + (size_t)k0 * HS * kv->elem;
        for (int r0 = 0; r0 < R; r0 += QK_ROWS) {
            const int nr = R - r0 < QK_ROWS ? R - r0 : QK_ROWS;
            qk(nr, kv->dtype, Q + (size_t)r0 * HS, HS, Kh, kv->max_T, k0, vis[r0 + nr - 1], S + (size_t)r0 * p.chunk,
               p.chunk);
        }
        for (int r = 0; r < R; r++) {  // unnormalised; keys [vis[r], vis[R - 1]) masked to 0 for pv
            float *row = S + (size_t)r * p.chunk, sum, mx = softmax_exp_row(row, vis[r], &sum);
            memset(row + vis[r], 0, (size_t)(vis[R - 1] - vis[r]) * sizeof(float));
            if (p.nsplit > 1) mp[r] = mx, lp[r] = sum;
            inv[r] = 1.0f / sum;  // vis >= 1 without splits
        }
        float *O = p.nsplit > 1 ? Op : Q;  // the queries are no longer needed
        memset(O, 0, (size_t)R * HS * sizeof(float));
        pv(R, vis, kv->dtype, S, p.chunk, V, HS, O);
        if (p.nsplit == 1) {  // normalise and scatter
            for (int r = 0; r < R; r++) {
                const int t = t0 + r / group, h = g * group + r % group;
                float *o = out + ((size_t)b * Tn + t) * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) o[d] = O[(size_t)r * HS + d] * inv[r];
            }
        }
    }
    if (p.nsplit == 1) return;

    // merge the key splits (Tn == 1: one row per query head)
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < NKV; g++) {
            const float *base = partials + ((size_t)b * NKV + g) * p.nsplit * partial_stride;
            for (int r = 0; r < group; r++) {
                float M = -INFINITY, L = 0.0f;
                for (int s = 0; s < p.nsplit; s++) {
                    float m = base[s * partial_stride + R_split * HS + r];
                    M = m > M ? m : M;
                }
                float *o = out + (size_t)b * C + ((size_t)g * group + r) * HS;
                memset(o, 0, HS * sizeof(float));
                for (int s = 0; s < p.nsplit; s++) {
                    const float *Os = base + s * partial_stride;
                    float m = Os[R_split * HS + r], lsum = Os[R_split * HS + R_split + r];
                    if (lsum == 0.0f) continue;
                    float w = expf(m - M);
                    L += w * lsum;
                    for (int d = 0; d < HS; d++) o[d] += w * Os[(size_t)r * HS + d];
                }
                for (int d = 0; d < HS; d++) o[d] /= L;
            }
        }
    }
}
