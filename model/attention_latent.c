/*
 * attention_latent.c: the absorbed MLA attention over a latent KV cache, for
 * prefill and decode (see attention_latent.h for the contract). The cache
 * object, its layout and conversions, is kvcache.c.
 *
 * Work items are (sequence b, block of new tokens, key split). An item's
 * rows are its tokens x the NH heads, R rows of W numbers (Q, pre-scaled),
 * and the cached rows it sees are [k0, k1). One pass, tile by tile of TK
 * positions:
 *     S = Q K_tile^T                     (R, TK), every row from the tile
 *     m' = max(m, max_j S), a = e^(m - m'), P = e^(S - m'), l = a l + sum P
 *     O = a O + P K_tile[:, :r]          from the same tile, still in L1
 * and at the end out = O / l. Causal: row (t, h) sees positions up to
 * pos0 + t; rows are ordered by token, so a tile meets a suffix of them and
 * P is 0 past each row's end. With several key splits (decode only) each
 * split keeps its m, l and unnormalised O, and the merge rescales them:
 * out = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s, M = max_s m_s.
 *
 * The tile: TK positions of W floats, about LATENT_TILE_BYTES (16 KiB: 32
 * positions at W = 128), a multiple of 16 in [16, 64]. f32 caches are read
 * in place; 16-bit ones are converted into a per-thread float tile first,
 * once, then read by both products.
 *
 * The products, both register-blocked over rows of the cache (row-major,
 * so no transposed copy of the tile is ever made):
 *   scores: a pair of query rows against 8 cached rows at a time, 16
 *           accumulators over the W numbers: each cached vector is loaded
 *           once into a register for the two rows' FMAs, then one
 *           16 x 16 transpose-and-add turns the accumulators into 16 scores
 *           (lanes 0-7 the first row's, 8-15 the second's). An odd row left
 *           over meets 16 cached rows at a time alone.
 *   sum:    up to 4 rows x 4 vectors of 16 latent dims in registers, one
 *           load of each cached vector per 4 FMAs (as attention_cached.c).
 * The score pass touches the cache first and would bear all its memory
 * latency, while the sum runs from L1 with the memory idle; so the sum
 * prefetches the next tile into L1, a few lines per key of its loop (not
 * all at once). How these shapes were chosen, and what was tried and
 * dropped, is in docs/history.md.
 * The portable C path runs the same items, tiles and online softmax with
 * plain loops; it is the only one without AVX-512 and a test's reference
 * for the vector one.
 */
#include "attention_latent.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "../util/team.h"
#include "../util/util.h"
#include "ops.h"

// Bytes of a float tile of cached rows (kept in L1 between the two products).
#ifndef LATENT_TILE_BYTES
#define LATENT_TILE_BYTES 16384
#endif
// A key split is worth its merge only with at least this many keys.
#define MIN_KEYS_PER_SPLIT 256
// Query rows (tokens x heads) per work item at prefill: every row re-reads
// the tile from L1, so more rows per item read the cache fewer times.
#define ITEM_ROWS 32

static int n_passes = 1;
#if defined(__AVX512F__)
static int use_portable = 0;
#else
static int use_portable = 1;
#endif

void attention_latent_set_passes(int passes) {
    CHECK(passes == 1 || passes == 2);
    n_passes = passes;
}

int attention_latent_set_portable(int on) {
    const int old = use_portable;
#if defined(__AVX512F__)
    use_portable = on != 0;
#else
    (void)on;  // the portable kernels are the only ones
#endif
    return old;
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

// ----------------------------------------------------------------------------
// the kernels of one tile, portable and AVX-512
//   convert: dst[0, n) = the n cache numbers at src as floats
//   score:   S[i][j] = Q[i] . K[j] (W numbers), i < nq <= 2, j < n; Q and K
//            rows W apart, S rows lds apart (a pair shares the cached loads)
//   online:  the online-softmax step of one row: s[0, n) -> e^(s - m'),
//            s[n, nk) = 0, *l = a *l + sum, *m = m'; returns a = e^(m - m')
//   pv:      O[i][0, r) += sum_{j < nk} P[i][j] K[j][0, r), i < nr; meanwhile
//            the pf_bytes at pf (the next tile in the cache, or NULL) are
//            prefetched into L1, a few lines per key

typedef struct {
    void (*convert)(const void *src, KVDtype dt, float *dst, size_t n);
    void (*score)(int nq, const float *Q, const float *K, int W, int n, float *S, int lds);
    float (*online)(float *s, int n, int nk, float *m, float *l);
    void (*pv)(int nr, const float *P, int ldp, const float *K, int W, int r, int nk, float *O, const char *pf,
               size_t pf_bytes);
} Kernels;

static void convert_c(const void *src, KVDtype dt, float *dst, size_t n) { kv_to_float(src, dt, dst, n); }

static void score_c(int nq, const float *Q, const float *K, int W, int n, float *S, int lds) {
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < n; j++) {
            const float *q = Q + (size_t)i * W, *k = K + (size_t)j * W;
            float acc = 0.0f;
            for (int d = 0; d < W; d++) acc += q[d] * k[d];
            S[(size_t)i * lds + j] = acc;
        }
}

static float online_c(float *s, int n, int nk, float *m, float *l) {
    float mx = *m;
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    const float a = *m == -INFINITY ? 0.0f : expf(*m - mx);
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += (s[j] = expf(s[j] - mx));
    for (int j = n; j < nk; j++) s[j] = 0.0f;
    *l = *l * a + sum;
    *m = mx;
    return a;
}

static void pv_c(int nr, const float *P, int ldp, const float *K, int W, int r, int nk, float *O, const char *pf,
                 size_t pf_bytes) {
    (void)pf, (void)pf_bytes;
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nk; j++) {
            const float p = P[(size_t)i * ldp + j];
            const float *k = K + (size_t)j * W;
            float *o = O + (size_t)i * r;
            for (int d = 0; d < r; d++) o[d] += p * k[d];
        }
}

static const Kernels kernels_c = {convert_c, score_c, online_c, pv_c};

#if defined(__AVX512F__)
#include "simd.h"

static void convert_avx(const void *src, KVDtype dt, float *dst, size_t n) {
    if (dt == KV_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    const uint16_t *s = src;
    size_t i = 0;
    if (dt == KV_BF16) {
        for (; i + 16 <= n; i += 16) {
            const __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)));
        }
    } else {
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    }
    if (i < n) kv_to_float(s + i, dt, dst + i, n - i);
}

// Lane j of the result = the sum of the 16 lanes of a[j]: a transpose-and-add
// tree, 15 adds and 30 shuffles, then one permutation into position order.
ALWAYS_INLINE __m512 hsum16x16(const __m512 a[16]) {
    __m512 v[8], w[4], x[2];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)  // 256-bit halves: a[j] | a[j + 8], 8 partial sums each
        v[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[j], a[j + 8], 0x44), _mm512_shuffle_f32x4(a[j], a[j + 8], 0xEE));
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)  // 128-bit lanes: a[j], a[j + 8], a[j + 4], a[j + 12], 4 partial sums each
        w[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[j], v[j + 4], 0x88), _mm512_shuffle_f32x4(v[j], v[j + 4], 0xDD));
#pragma GCC unroll 2
    for (int j = 0; j < 2; j++)  // pairs within each 128-bit lane
        x[j] = _mm512_add_ps(_mm512_shuffle_ps(w[j], w[j + 2], 0x44), _mm512_shuffle_ps(w[j], w[j + 2], 0xEE));
    const __m512 y = _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x88), _mm512_shuffle_ps(x[0], x[1], 0xDD));
    // y's lane i holds a[perm[i]]; perm is its own inverse
    const __m512i perm = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    return _mm512_permutexvar_ps(perm, y);
}

// One query row against 16 cached rows at a time.
static void score1_avx(const float *q, const float *K, int W, int n, float *s) {
    const int Wv = W / 16 * 16;
    const __mmask16 tail = mask16(W - Wv);
    for (int j0 = 0; j0 < n; j0 += 16) {
        const int nj = n - j0 < 16 ? n - j0 : 16;
        // rows past n repeat the last one (never read past the tile)
        const float *k0 = K + (size_t)j0 * W;
        const size_t last = (size_t)(nj - 1) * W;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
        if (nj == 16) {
            for (int d = 0; d < Wv; d += 16) {
                const __m512 qv = _mm512_loadu_ps(q + d);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    acc[j] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + (size_t)j * W + d), acc[j]);
            }
            if (tail) {
                const __m512 qv = _mm512_maskz_loadu_ps(tail, q + Wv);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tail, k0 + (size_t)j * W + Wv), acc[j]);
            }
        } else {
            for (int d = 0; d < W; d += 16) {
                const __mmask16 m = mask16(W - d);
                const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) {
                    const size_t off = (size_t)j * W < last ? (size_t)j * W : last;
                    acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k0 + off + d), acc[j]);
                }
            }
        }
        _mm512_mask_storeu_ps(s + j0, mask16(nj), hsum16x16(acc));
    }
}

// Two query rows against 8 cached rows at a time: each cached vector loaded
// once for 2 FMAs; accumulators 0-7 are row 0's, 8-15 row 1's.
static void score2_avx(const float *q0, const float *q1, const float *K, int W, int n, float *s0, float *s1) {
    const int Wv = W / 16 * 16;
    const __mmask16 tail = mask16(W - Wv);
    for (int j0 = 0; j0 < n; j0 += 8) {
        const int nj = n - j0 < 8 ? n - j0 : 8;
        const float *k0 = K + (size_t)j0 * W;
        const size_t last = (size_t)(nj - 1) * W;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
        if (nj == 8) {
            for (int d = 0; d < Wv; d += 16) {
                const __m512 a = _mm512_loadu_ps(q0 + d), b = _mm512_loadu_ps(q1 + d);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    __m512 kv = _mm512_loadu_ps(k0 + (size_t)j * W + d);
                    __asm__("" : "+v"(kv));  // one load for both rows' FMAs, not a memory operand in each
                    acc[j] = _mm512_fmadd_ps(a, kv, acc[j]);
                    acc[8 + j] = _mm512_fmadd_ps(b, kv, acc[8 + j]);
                }
            }
            if (tail) {
                const __m512 a = _mm512_maskz_loadu_ps(tail, q0 + Wv), b = _mm512_maskz_loadu_ps(tail, q1 + Wv);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const __m512 kv = _mm512_maskz_loadu_ps(tail, k0 + (size_t)j * W + Wv);
                    acc[j] = _mm512_fmadd_ps(a, kv, acc[j]);
                    acc[8 + j] = _mm512_fmadd_ps(b, kv, acc[8 + j]);
                }
            }
        } else {  // rows past n repeat the last one (never read past the tile)
            for (int d = 0; d < W; d += 16) {
                const __mmask16 m = mask16(W - d);
                const __m512 a = _mm512_maskz_loadu_ps(m, q0 + d), b = _mm512_maskz_loadu_ps(m, q1 + d);
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    const size_t off = (size_t)j * W < last ? (size_t)j * W : last;
                    const __m512 kv = _mm512_maskz_loadu_ps(m, k0 + off + d);
                    acc[j] = _mm512_fmadd_ps(a, kv, acc[j]);
                    acc[8 + j] = _mm512_fmadd_ps(b, kv, acc[8 + j]);
                }
            }
        }
        const __m512 sc = hsum16x16(acc);
        const __mmask16 m = mask16(nj);
        _mm512_mask_storeu_ps(s0 + j0, m, sc);
        _mm512_mask_storeu_ps(s1 + j0, m, _mm512_shuffle_f32x4(sc, sc, 0xEE));  // lanes 8-15 down to 0-7
    }
}


// nq <= 2 rows: a pair together, a single row alone.
static void score_avx(int nq, const float *Q, const float *K, int W, int n, float *S, int lds) {
    if (nq == 2) score2_avx(Q, Q + W, K, W, n, S, S + lds);
    else score1_avx(Q, K, W, n, S);
}

static float online_avx(float *s, int n, int nk, float *m, float *l) {
    __m512 mv = _mm512_set1_ps(*m);
    for (int j = 0; j < n; j += 16) mv = _mm512_mask_max_ps(mv, mask16(n - j), mv, _mm512_maskz_loadu_ps(mask16(n - j), s + j));
    const float mx = _mm512_reduce_max_ps(mv);
    const float a = *m == -INFINITY ? 0.0f : expf(*m - mx);
    const __m512 mxv = _mm512_set1_ps(mx);
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < nk; j += 16) {
        const __mmask16 mj = mask16(n - j > 0 ? n - j : 0), mk = mask16(nk - j);
        const __m512 e = _mm512_maskz_mov_ps(mj, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mj, s + j), mxv)));
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(s + j, mk, e);
    }
    *l = *l * a + _mm512_reduce_add_ps(sum);
    *m = mx;
    return a;
}

// NR <= 4 rows x ND <= 4 vectors of 16 dims from d0 (the last masked by mlast).
ALWAYS_INLINE void pv_rows(const int NR, const int ND, const float *P, int ldp, const float *K, int W, int d0,
                           __mmask16 mlast, int nk, float *O, int r, const char *pf, int lpj) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++)
            acc[i][v] = _mm512_maskz_loadu_ps(v == ND - 1 ? mlast : 0xFFFF, O + (size_t)i * r + d0 + 16 * v);
    for (int j = 0; j < nk; j++) {
        const float *row = K + (size_t)j * W + d0;
        if (pf)
            for (int c = 0; c < lpj; c++) _mm_prefetch(pf + ((size_t)j * lpj + c) * 64, _MM_HINT_T0);
        __m512 x[4];
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++) {
            x[v] = _mm512_maskz_loadu_ps(v == ND - 1 ? mlast : 0xFFFF, row + 16 * v);
            __asm__("" : "+v"(x[v]));  // one load per vector, not one memory operand per row's FMA
        }
#pragma GCC unroll 4
        for (int i = 0; i < NR; i++) {
            const __m512 p = _mm512_set1_ps(P[(size_t)i * ldp + j]);
#pragma GCC unroll 4
            for (int v = 0; v < ND; v++) acc[i][v] = _mm512_fmadd_ps(p, x[v], acc[i][v]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < ND; v++)
            _mm512_mask_storeu_ps(O + (size_t)i * r + d0 + 16 * v, v == ND - 1 ? mlast : 0xFFFF, acc[i][v]);
}

#define PV_CASE(NR, ND) \
    case (NR) * 8 + (ND): pv_rows(NR, ND, Pc, ldp, K, W, d0, mlast, nk, Oc, r, pfc, lpj); break;

static void pv_avx(int nr_all, const float *P, int ldp, const float *K, int W, int r, int nk, float *O, const char *pf,
                   size_t pf_bytes) {
    const int nvec = (r + 15) / 16;
    const __mmask16 tail = mask16(r - 16 * (nvec - 1));
    // the next tile's lines, spread over every block's key loop
    const int calls = (nr_all + 3) / 4 * ((nvec + 3) / 4), lines = (int)((pf_bytes + 63) / 64);
    const int lpj = pf && nk ? (lines + calls * nk - 1) / (calls * nk) : 0;
    size_t pf_off = 0;  // where the next block's share of the prefetches starts
    for (int i0 = 0; i0 < nr_all; i0 += 4) {
        const int nr = nr_all - i0 < 4 ? nr_all - i0 : 4;
        const float *Pc = P + (size_t)i0 * ldp;
        float *Oc = O + (size_t)i0 * r;
        for (int v0 = 0; v0 < nvec; v0 += 4) {
            const int nd = nvec - v0 < 4 ? nvec - v0 : 4, d0 = 16 * v0;
            const __mmask16 mlast = v0 + nd == nvec ? tail : 0xFFFF;
            const char *pfc = pf && pf_off < pf_bytes ? pf + pf_off : NULL;
            switch (nr * 8 + nd) {
                PV_CASE(1, 1) PV_CASE(1, 2) PV_CASE(1, 3) PV_CASE(1, 4) PV_CASE(2, 1) PV_CASE(2, 2) PV_CASE(2, 3)
                PV_CASE(2, 4) PV_CASE(3, 1) PV_CASE(3, 2) PV_CASE(3, 3) PV_CASE(3, 4) PV_CASE(4, 1) PV_CASE(4, 2)
                PV_CASE(4, 3) PV_CASE(4, 4)
            }
            pf_off += (size_t)nk * lpj * 64;
        }
    }
}

static const Kernels kernels_avx = {convert_avx, score_avx, online_avx, pv_avx};
#endif

// ----------------------------------------------------------------------------
// planning: tile, rows per item, key splits, scratch

typedef struct {
    int TK;             // positions per tile
    int rb, nrb;        // new tokens per work item, number of token blocks
    int nsplit, chunk;  // key splits, keys per split (a multiple of TK)
    int lds;            // stride of a score row: TK (one pass) or chunk (two passes)
    size_t per_thread;  // floats of one thread's scratch
} Plan;

// Positions per tile: about LATENT_TILE_BYTES of floats, a multiple of 16 in [16, 64].
static int tile_positions(int W) {
    int tk = LATENT_TILE_BYTES / (4 * W) / 16 * 16;
    return tk < 16 ? 16 : tk > 64 ? 64 : tk;
}

static int tokens_per_item(int NH, int Tn) {
    const int rb = NH >= ITEM_ROWS ? 1 : ITEM_ROWS / NH;
    return rb < Tn ? rb : Tn;
}

static size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// One thread's scratch: Q (R, W), O (R, r), S (R, lds), m and l (R each),
// the float tile (TK, W); each on a 64-byte boundary.
static size_t per_thread_floats(size_t R, int W, int r, size_t lds, int TK) {
    return align16(R * W) + align16(R * r) + align16(R * lds) + 2 * align16(R) + align16((size_t)TK * W);
}

static int gcd(int a, int b) { return b ? gcd(b, a % b) : a; }

static Plan make_plan(int B, int NH, int W, int r, int Tn, int ctx, int threads, int passes) {
    Plan p;
    p.TK = tile_positions(W);
    p.rb = tokens_per_item(NH, Tn);
    p.nrb = (Tn + p.rb - 1) / p.rb;
    p.nsplit = 1;
    // decode: split the keys so that the items fill the threads evenly
    // (batch 1 on 2 threads: 2 splits; batch 3: 2 splits, 6 items); not
    // worth it for a large batch or a short context
    if (Tn == 1 && B < 4 * threads) {
        const int want = threads / gcd(B, threads), by_len = ctx / MIN_KEYS_PER_SPLIT;
        p.nsplit = want < by_len ? want : by_len;
        if (p.nsplit < 1) p.nsplit = 1;
    }
    p.chunk = round_up((ctx + p.nsplit - 1) / p.nsplit, p.TK);
    p.lds = passes == 2 ? p.chunk : p.TK;
    p.per_thread = per_thread_floats((size_t)p.rb * NH, W, r, (size_t)p.lds, p.TK);
    return p;
}

size_t attention_latent_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads) {
    // the largest plan over Tn' <= Tn, ctx' <= ctx and both variants: rows
    // per item grow with Tn', two-pass score rows with ctx' (one split is
    // the longest); splits make at most batch x threads partial results
    const int W = kv->width, r = kv->kv_lora_rank, TK = tile_positions(W);
    const size_t R = (size_t)tokens_per_item(NH, Tn) * NH, lds = (size_t)round_up(ctx, TK);
    const size_t partials = (size_t)kv->batch * threads * NH * ((size_t)r + 2);
    return (size_t)threads * per_thread_floats(R, W, r, lds, TK) + partials;
}

// ----------------------------------------------------------------------------
// the kernel

// Causal visibility within an item: row i is token t0 + i / NH at position
// pos0 + t0 + i / NH, and sees keys up to that position (and below k1, the
// end of the item's key split).
typedef struct {
    int pos0, t0, NH, k1;
} Rows;

// One past the last key row i sees.
static inline int row_end(const Rows *x, int i) {
    const int e = x->pos0 + x->t0 + i / x->NH + 1;
    return e < x->k1 ? e : x->k1;
}

// The first row that sees key k (rows are ordered by token: all later ones do too).
static inline int first_row(const Rows *x, int k) {
    const int t = k - x->pos0 - x->t0;
    return t > 0 ? t * x->NH : 0;
}

// The cached rows [k, k + nk) of one sequence as floats: in place (f32) or
// converted into tile.
static const float *load_tile(const Kernels *kn, const KVCache *kv, const char *Kseq, int k, int nk, float *tile) {
    const char *src = Kseq + (size_t)k * kv->width * kv->elem;
    if (kv->dtype == KV_F32) return (const float *)src;
    kn->convert(src, kv->dtype, tile, (size_t)nk * kv->width);
    return tile;
}

typedef struct {
    float *olat, *scratch, *partials;
    const float *qabs;
    const KVCache *kv;
    const Kernels *kn;
    Plan p;
    size_t partial_stride;  // floats of a split item's partial result: O (NH, r), m, l (NH each)
    float scale;
    int l, Tn, pos0, NH, passes;
} LatentArgs;

// Items [begin, end) by step: (sequence, row block, key split).
static void latent_items(void *ctx, long begin, long end, long step) {
    const LatentArgs *a = ctx;
    const KVCache *kv = a->kv;
    const Kernels *kn = a->kn;
    const Plan p = a->p;
    const int W = kv->width, r = kv->kv_lora_rank, l = a->l, Tn = a->Tn, pos0 = a->pos0, NH = a->NH;
    const int ctx_len = pos0 + Tn, passes = a->passes;
    const float scale = a->scale, *qabs = a->qabs;
    float *olat = a->olat, *scratch = a->scratch, *partials = a->partials;
    const size_t partial_stride = a->partial_stride;
    for (long it = begin; it < end; it += step) {
        const int s = it % p.nsplit, rbi = (it / p.nsplit) % p.nrb, b = it / p.nsplit / p.nrb;
        const int t0 = rbi * p.rb, t1 = t0 + p.rb < Tn ? t0 + p.rb : Tn, R = (t1 - t0) * NH;
        const size_t Rc = (size_t)p.rb * NH;  // row capacity of the scratch blocks
        float *Q = scratch + (size_t)omp_get_thread_num() * p.per_thread;  // (R, W)
        float *O = Q + align16(Rc * W);                                       // (R, r)
        float *S = O + align16(Rc * r);                                       // (R, lds)
        float *m = S + align16(Rc * p.lds), *lsum = m + align16(Rc);         // (R) each
        float *tile = lsum + align16(Rc);                                     // (TK, W)
        // keys [k0, kend): the split's range, up to what the item's last token sees
        const int k0 = s * p.chunk, k1 = k0 + p.chunk < ctx_len ? k0 + p.chunk : ctx_len;
        const int kend = pos0 + t1 < k1 ? pos0 + t1 : k1;
        // with splits: the item's partial result, O (NH, r) then m and l (NH each)
        float *Op = p.nsplit > 1 ? partials + (size_t)it * partial_stride : NULL;
        if (kend <= k0) {  // an empty split (decode only: R = NH rows)
            memset(Op, 0, (size_t)R * r * sizeof(float));
            for (int i = 0; i < R; i++) Op[(size_t)NH * r + i] = -INFINITY, Op[(size_t)NH * r + NH + i] = 0.0f;
            continue;
        }
        // the item's query rows are contiguous in qabs: (t0, head 0) .. (t1 - 1, head NH - 1)
        const float *q = qabs + ((size_t)b * Tn + t0) * NH * W;
        for (size_t i = 0; i < (size_t)R * W; i++) Q[i] = q[i] * scale;
        memset(O, 0, (size_t)R * r * sizeof(float));
        const char *Kseq = kvcache_latent(kv, l, b);
        const Rows rows = {pos0, t0, NH, k1};
        if (passes == 1) {
            for (int i = 0; i < R; i++) m[i] = -INFINITY, lsum[i] = 0.0f;
            for (int k = k0; k < kend; k += p.TK) {
                const int nk = kend - k < p.TK ? kend - k : p.TK, i0 = first_row(&rows, k);
                const float *K = load_tile(kn, kv, Kseq, k, nk, tile);
                // rows in pairs, each pair scored up to its later row's end
                for (int i = i0; i < R; i += 2) {
                    const int nq = R - i < 2 ? R - i : 2, last = row_end(&rows, i + nq - 1);
                    kn->score(nq, Q + (size_t)i * W, K, W, (last < k + nk ? last : k + nk) - k, S + (size_t)i * p.lds,
                              p.lds);
                }
                for (int i = i0; i < R; i++) {
                    const int last = row_end(&rows, i), n = (last < k + nk ? last : k + nk) - k;
                    const float a = kn->online(S + (size_t)i * p.lds, n, nk, &m[i], &lsum[i]);
                    if (a != 1.0f)
                        for (int d = 0; d < r; d++) O[(size_t)i * r + d] *= a;
                }
                // the sum, fetching the next tile (if any) from memory meanwhile
                const int nn = kend - (k + nk) < p.TK ? kend - (k + nk) : p.TK;
                kn->pv(R - i0, S + (size_t)i0 * p.lds, p.lds, K, W, r, nk, O + (size_t)i0 * r,
                       nn > 0 ? Kseq + (size_t)(k + nk) * W * kv->elem : NULL, nn > 0 ? (size_t)nn * W * kv->elem : 0);
            }
        } else {
            // pass 1: every score of the item, then each row's softmax
            for (int k = k0; k < kend; k += p.TK) {
                const int nk = kend - k < p.TK ? kend - k : p.TK, i0 = first_row(&rows, k);
                const float *K = load_tile(kn, kv, Kseq, k, nk, tile);
                for (int i = i0; i < R; i += 2) {
                    const int nq = R - i < 2 ? R - i : 2, last = row_end(&rows, i + nq - 1);
                    kn->score(nq, Q + (size_t)i * W, K, W, (last < k + nk ? last : k + nk) - k,
                              S + (size_t)i * p.lds + (k - k0), p.lds);
                }
            }
            for (int i = 0; i < R; i++) {  // unnormalised; keys [vis, kend) masked to 0 for the sum
                float *Si = S + (size_t)i * p.lds;
                const int n = row_end(&rows, i) - k0;
                m[i] = softmax_exp_row(Si, n, &lsum[i]);
                memset(Si + n, 0, (size_t)(kend - k0 - n) * sizeof(float));
            }
            // pass 2: the weighted sum, reading the cache again
            for (int k = k0; k < kend; k += p.TK) {
                const int nk = kend - k < p.TK ? kend - k : p.TK, i0 = first_row(&rows, k);
                const float *K = load_tile(kn, kv, Kseq, k, nk, tile);
                kn->pv(R - i0, S + (size_t)i0 * p.lds + (k - k0), p.lds, K, W, r, nk, O + (size_t)i0 * r, NULL, 0);
            }
        }
        if (p.nsplit > 1) {  // keep m, l and the unnormalised O for the merge
            memcpy(Op, O, (size_t)R * r * sizeof(float));
            memcpy(Op + (size_t)NH * r, m, (size_t)R * sizeof(float));
            memcpy(Op + (size_t)NH * r + NH, lsum, (size_t)R * sizeof(float));
            continue;
        }
        float *o = olat + ((size_t)b * Tn + t0) * NH * r;  // the item's rows, contiguous
        for (int i = 0; i < R; i++) {
            const float inv = 1.0f / lsum[i];  // every row sees at least its own position
            for (int d = 0; d < r; d++) o[(size_t)i * r + d] = O[(size_t)i * r + d] * inv;
        }
    }
}

// Merge the key splits of (sequence, head) pairs [begin, end) (Tn == 1: one
// row per head).
static void latent_merge(void *ctx, long begin, long end, long step) {
    const LatentArgs *a = ctx;
    const int nsplit = a->p.nsplit, r = a->kv->kv_lora_rank, NH = a->NH;
    for (long i = begin; i < end; i += step) {
        const int b = (int)(i / NH), h = (int)(i % NH);
        softmax_merge_splits(a->olat + ((size_t)b * NH + h) * r, a->partials + (size_t)b * nsplit * a->partial_stride,
                             a->partial_stride, nsplit, NH, r, h);
    }
}

void attention_latent(float *olat, const float *qabs, const KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats) {
    CHECK(kvcache_is_latent(kv));
    const int W = kv->width, r = kv->kv_lora_rank, ctx = pos0 + Tn, threads = omp_get_max_threads();
    const int passes = n_passes;
    const Plan p = make_plan(B, NH, W, r, Tn, ctx, threads, passes);
    const int n_items = B * p.nrb * p.nsplit;
    const size_t partial_stride = (size_t)NH * ((size_t)r + 2);
    CHECK(ctx <= kv->max_T && B <= kv->batch);
    CHECK((size_t)threads * p.per_thread + (p.nsplit > 1 ? (size_t)n_items * partial_stride : 0) <= scratch_floats);
    LatentArgs a = {.olat = olat, .scratch = scratch, .partials = scratch + (size_t)threads * p.per_thread,
                    .qabs = qabs, .kv = kv,
#if defined(__AVX512F__)
                    .kn = use_portable ? &kernels_c : &kernels_avx,
#else
                    .kn = &kernels_c,
#endif
                    .p = p, .partial_stride = partial_stride,
                    .scale = 1.0f / sqrtf((float)(kv->head_size + kv->rope_head_dim)), .l = l, .Tn = Tn, .pos0 = pos0,
                    .NH = NH, .passes = passes};
    team_for_cyclic(n_items, 1, latent_items, &a);
    if (p.nsplit > 1) team_for((long)B * NH, 1, latent_merge, &a);
}
