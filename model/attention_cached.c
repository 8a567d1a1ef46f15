/*
 * attention_cached.c: the grouped attention over a KV cache, for prefill and
 * decode (see attention_cached.h for the contract). The cache object itself,
 * its layout and conversions, is kvcache.c; the row softmax is ops.c's.
 *
 * Work items are (sequence b, KV head g, block of new tokens, key split). An
 * item's queries (its tokens x the group's heads, R rows) are gathered into
 * one scaled matrix Q (R, HS), then
 *     S = Q K^T                one pass over the key tiles [k0, k1)
 *     P = exp(S - max)         causal, row by row (vectorised exp)
 *     O = P V                  one pass over the value rows
 * in register blocks: up to 16 rows meet each key tile (16 keys at one dim)
 * while it is in a register (3 to 8 rows: two tiles, so that each broadcast
 * of a query number serves two FMAs), and up to 4 rows x 64 dims meet each
 * value row.
 * 16-bit caches are converted as they are loaded. With one key split, O is
 * divided by the row sums and is the output. With several (decode only),
 * each split keeps its row max m, sum l and unnormalised O, and the merge
 * rescales them: out = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s,
 * M = max_s m_s.
 */
#include "attention_cached.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "../util/team.h"
#include "../util/util.h"
#include "ops.h"

// A key split is worth its merge only with at least this many keys.
#define MIN_KEYS_PER_SPLIT 256

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

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
// weight matmul does. With fewer rows, and for the value rows, only the L1
// prefetch runs: the L2 one does not pay there.
#ifndef KV_FAR_ROWS
#define KV_FAR_ROWS 8
#endif
#ifndef KV_PREFETCH_FAR
#define KV_PREFETCH_FAR 32768
#endif
// 1: the score kernel takes two tiles at a time for 3 to 8 rows (0: one).
#ifndef QK_PAIRS
#define QK_PAIRS 1
#endif

// 16 cache numbers at p as floats (lanes outside m: 0).
ALWAYS_INLINE __m512 load16(const void *p, KVDtype dt, __mmask16 m) {
    if (dt == KV_F32) return _mm512_maskz_loadu_ps(m, p);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (dt == KV_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

// Dim d of NT tiles at T (rows of w keys) into chain c of the accumulators.
ALWAYS_INLINE void qk_dim(const int NR, const int NT, const KVDtype dt, const float *Q, int HS, const char *T,
                          size_t tile_bytes, int w, __mmask16 m, int d, int c, __m512 (*acc)[16][4]) {
    const size_t elem = dt == KV_F32 ? 4 : 2;
    __m512 kv[2];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) {
        const char *row = T + t * tile_bytes + (size_t)d * w * elem;  // the tile's keys at dim d
        if (KV_PREFETCH) _mm_prefetch(row + KV_PREFETCH, KV_HINT);
        if (KV_PREFETCH_FAR && NR >= KV_FAR_ROWS) _mm_prefetch(row + KV_PREFETCH_FAR, _MM_HINT_T1);
        kv[t] = load16(row, dt, m);
    }
#pragma GCC unroll 16
    for (int r = 0; r < NR; r++) {
        const __m512 q = _mm512_set1_ps(Q[(size_t)r * HS + d]);
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) acc[t][r][c] = _mm512_fmadd_ps(q, kv[t], acc[t][r][c]);
    }
}

// NR rows against NT key tiles from tile `tile` (NT = 2: both full), the
// scores into S's columns from j: NR x NT accumulators of KV_TILE keys, one
// load of a tile row (KV_TILE keys at one dim) per NR FMAs, no horizontal
// sums; with two tiles each broadcast of a query number serves two FMAs.
// Few rows use NCH independent chains over d to hide FMA latency.
ALWAYS_INLINE void qk_tiles(const int NR, const int NT, const KVDtype dt, const float *Q, int HS, const char *Kh,
                            int max_T, int tile, float *S, int lds, int j) {
    const int NCH = NR == 1 ? 4 : NR == 2 ? 2 : 1;
    const size_t tile_bytes = (size_t)KV_TILE * HS * (dt == KV_F32 ? 4 : 2);
    const int w = max_T - tile * KV_TILE < KV_TILE ? max_T - tile * KV_TILE : KV_TILE;  // of the first (or only) tile
    const __mmask16 m = mask16(w);
    const char *T = Kh + (size_t)tile * tile_bytes;
    __m512 acc[2][16][4];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 16
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
            for (int c = 0; c < NCH; c++) acc[t][r][c] = _mm512_setzero_ps();
    int d = 0;
    for (; d + NCH <= HS; d += NCH)
#pragma GCC unroll 4
        for (int c = 0; c < NCH; c++) qk_dim(NR, NT, dt, Q, HS, T, tile_bytes, w, m, d + c, c, acc);
    for (; d < HS; d++) qk_dim(NR, NT, dt, Q, HS, T, tile_bytes, w, m, d, 0, acc);
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 16
        for (int r = 0; r < NR; r++) {
            __m512 s = acc[t][r][0];
#pragma GCC unroll 4
            for (int c = 1; c < NCH; c++) s = _mm512_add_ps(s, acc[t][r][c]);
            _mm512_storeu_ps(S + (size_t)r * lds + j + t * KV_TILE, s);
        }
}

// NR rows against key tiles from key k0 (a multiple of KV_TILE), nk keys;
// 3 to 8 rows take two full tiles at a time.
ALWAYS_INLINE void qk_rows(const int NR, const KVDtype dt, const float *Q, int HS, const char *Kh, int max_T, int k0,
                           int nk, float *S, int lds) {
    int j = 0;
    if (QK_PAIRS && NR >= 3 && NR <= 8)
        for (; j + KV_TILE < nk && k0 + j + 2 * KV_TILE <= max_T; j += 2 * KV_TILE)
            qk_tiles(NR, 2, dt, Q, HS, Kh, max_T, (k0 + j) / KV_TILE, S, lds, j);
    for (; j < nk; j += KV_TILE) qk_tiles(NR, 1, dt, Q, HS, Kh, max_T, (k0 + j) / KV_TILE, S, lds, j);
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
            for (int d = 0; d < HS; d++) s += Q[(size_t)r * HS + d] * kv_elem(Kh, kvcache_k_offset(max_T, HS, k0 + j, d), dt);
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

typedef struct {
    float *out, *scratch, *partials;
    const float *qkv;
    KVCache *kv;
    Plan p;
    size_t partial_stride;  // floats of a split item's partial result: R x HS outputs, R maxes, R sums
    float scale;
    int l, Tn, pos0, NH;
    int store;  // items store their pair's new rows (one row block per pair)
} CachedArgs;

// Items [begin, end): (sequence, KV head, row block, key split).
static void cached_items(void *ctx, long begin, long end, long step) {
    const CachedArgs *a = ctx;
    KVCache *kv = a->kv;
    const Plan p = a->p;
    const int l = a->l, Tn = a->Tn, pos0 = a->pos0, NH = a->NH;
    const int NKV = kv->n_kv_head, HS = kv->head_size, group = NH / NKV, QKV = (NH + 2 * NKV) * HS, C = NH * HS;
    const int ctx_len = pos0 + Tn;
    const float scale = a->scale, *qkv = a->qkv;
    float *out = a->out, *scratch = a->scratch, *partials = a->partials;
    const size_t R_split = (size_t)group, partial_stride = a->partial_stride;
    for (long it = begin; it < end; it += step) {
        const int s = it % p.nsplit, rbi = (it / p.nsplit) % p.nrb;
        const int g = (it / p.nsplit / p.nrb) % NKV, b = it / p.nsplit / p.nrb / NKV;
        float *Q = scratch + (size_t)omp_get_thread_num() * p.per_thread;  // (R, HS), later O
        float *S = Q + (size_t)p.rb * group * HS;                           // (R, chunk)
        const int t0 = rbi * p.rb, t1 = t0 + p.rb < Tn ? t0 + p.rb : Tn, R = (t1 - t0) * group;
        const int k0 = s * p.chunk, k1 = k0 + p.chunk < ctx_len ? k0 + p.chunk : ctx_len;
        int *vis = (int *)(S + (size_t)p.rb * group * p.chunk);               // (R)
        float *inv = (float *)(vis + (size_t)p.rb * group);                 // (R)
        for (int r = 0; r < R; r++) {  // row (t, j) is query head g*group + j at time t; it sees keys [k0, pos0 + t]
            const int last = pos0 + t0 + r / group + 1;
            vis[r] = (last < k1 ? last : k1) - k0;
        }
        float *Op = partials + (size_t)it * partial_stride, *mp = Op + R_split * HS, *lp = mp + R_split;
        if (vis[R - 1] <= 0) {  // an empty split (only when splitting): rows are one token
            for (int r = 0; r < R; r++) mp[r] = -INFINITY, lp[r] = 0.0f;
            memset(Op, 0, (size_t)R * HS * sizeof(float));
            continue;
        }
        // the split holding the new positions (key tiles, hence their
        // lines, belong to one split; t0 = 0 with one row block a pair)
        if (a->store && pos0 >= k0 && pos0 < k1) kvcache_store_pair(kv, l, qkv, b, g, Tn, pos0, NH);
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
}

// Merge the key splits of (sequence, KV head) pairs [begin, end) (Tn == 1:
// one row per query head).
static void cached_merge(void *ctx, long begin, long end, long step) {
    const CachedArgs *a = ctx;
    const int nsplit = a->p.nsplit, NKV = a->kv->n_kv_head, HS = a->kv->head_size, group = a->NH / NKV;
    const int C = a->NH * HS;
    for (long i = begin; i < end; i += step) {
        const int b = (int)(i / NKV), g = (int)(i % NKV);
        const float *parts = a->partials + ((size_t)b * NKV + g) * nsplit * a->partial_stride;
        for (int r = 0; r < group; r++)
            softmax_merge_splits(a->out + (size_t)b * C + ((size_t)g * group + r) * HS, parts, a->partial_stride,
                                 nsplit, group, HS, r);
    }
}

void attention_cached(float *out, const float *qkv, KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, group = NH / NKV;
    const int ctx = pos0 + Tn, threads = omp_get_max_threads();
    const Plan p = make_plan(B, NKV, group, HS, Tn, ctx, threads);
    const int n_items = B * NKV * p.nrb * p.nsplit;
    // partial results of key splits (decode): per item R x HS outputs, R maxes, R sums
    const size_t partial_stride = (size_t)group * (HS + 2);
    CHECK(ctx <= kv->max_T);
    CHECK((size_t)threads * p.per_thread + (p.nsplit > 1 ? (size_t)n_items * partial_stride : 0) <= scratch_floats);
    CachedArgs a = {.out = out, .scratch = scratch, .partials = scratch + (size_t)threads * p.per_thread, .qkv = qkv,
                    .kv = kv, .p = p, .partial_stride = partial_stride, .scale = 1.0f / sqrtf((float)HS), .l = l,
                    .Tn = Tn, .pos0 = pos0, .NH = NH, .store = p.nrb == 1};
    if (!a.store) kvcache_store(kv, l, qkv, B, Tn, pos0, NH);  // row blocks of a pair all read its new keys
    team_for(n_items, 1, cached_items, &a);
    if (p.nsplit > 1) team_for((long)B * NKV, 1, cached_merge, &a);
}
