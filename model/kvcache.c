/*
 * kvcache.c: KV cache storage and the grouped cached-attention kernel (see
 * kvcache.h for the contract).
 *
 * Work items are (sequence b, KV head g, block of new rows, key split). A
 * block's queries (its rows x the group's heads) are gathered into one
 * contiguous matrix Qc (R x HS), then
 *     S = Qc K^T * scale      one pass over the cached keys [k0, k1)
 *     P = causal softmax(S)   row loop
 *     O = P V                 one pass over the cached values
 * (scores() and mix() pick sgemv, a streaming loop or sgemm by R).
 * With one key split, P is normalised before the second sgemm and O is the
 * output. With several (decode only), each split keeps its row max m, sum l
 * and unnormalised O, and the merge rescales them: out = sum_s e^(m_s - M) O_s
 * / sum_s e^(m_s - M) l_s, M = max_s m_s.
 */
#include "kvcache.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

// Score block budget per thread (floats): rows per block are chosen so that
// R x keys stays near this, about 1 MiB, within L2.
#define SCORE_BUDGET (1 << 18)
// A key split is worth its merge only with at least this many keys.
#define MIN_KEYS_PER_SPLIT 256
// 16-bit caches are converted to float this many keys at a time (in L2).
#define CONVERT_BLOCK 256

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
    return 0;
}

void kvcache_free(KVCache *kv) {
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

void kvcache_store(KVCache *kv, int l, const float *qkv, int B, int Tn, int pos0, int NH) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, QKV = (NH + 2 * NKV) * HS;
    CHECK(pos0 >= 0 && pos0 + Tn <= kv->max_T && B <= kv->batch);
    const size_t row_bytes = (size_t)HS * kv->elem;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < NKV; g++) {
            char *kc = (char *)kvcache_k(kv, l, b, g) + (size_t)pos0 * row_bytes;
            char *vc = (char *)kvcache_v(kv, l, b, g) + (size_t)pos0 * row_bytes;
            for (int t = 0; t < Tn; t++) {
                const float *row = qkv + ((size_t)b * Tn + t) * QKV;
                kv_from_float(row + (NH + g) * HS, kv->dtype, kc + (size_t)t * row_bytes, (size_t)HS);
                kv_from_float(row + (NH + NKV + g) * HS, kv->dtype, vc + (size_t)t * row_bytes, (size_t)HS);
            }
        }
    }
}

void kvcache_broadcast(KVCache *kv, int T) {
    CHECK(T >= 0 && T <= kv->max_T);
    const size_t bytes = (size_t)T * kv->head_size * kv->elem;
#pragma omp parallel for collapse(2) schedule(static)
    for (int l = 0; l < kv->n_layer; l++) {
        for (int b = 1; b < kv->batch; b++) {
            for (int g = 0; g < kv->n_kv_head; g++) {
                memcpy(kvcache_k(kv, l, b, g), kvcache_k(kv, l, 0, g), bytes);
                memcpy(kvcache_v(kv, l, b, g), kvcache_v(kv, l, 0, g), bytes);
            }
        }
    }
}

#if defined(__AVX512F__)
#include <immintrin.h>
// Up to this many query rows (a decode step's group) the kernel streams the
// keys and values itself: each row of K or V is loaded once and meets every
// query row while it is in registers. sgemm would pack (copy) the whole
// block first, which cost more than the product at these shapes. Not for
// 16-bit caches: their blocks are converted into L2 first, where sgemm on
// the converted block measured faster (`stream` = 0).
#define STREAM_ROWS 16
#endif

// S (R, nk; leading dim lds) = scale * Q (R, HS) K^T, K (nk, HS). One query
// row (MHA decode) goes to sgemv, which streams K without packing it.
static void scores(int R, int nk, int HS, float scale, const float *Q, const float *K, float *S, int lds, int stream) {
    if (R == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, nk, HS, scale, K, HS, Q, 1, 0.0f, S, 1);
        return;
    }
#if defined(__AVX512F__)
    if (stream && R <= STREAM_ROWS && HS % 16 == 0) {
        for (int j = 0; j < nk; j++) {
            const float *k = K + (size_t)j * HS;
            for (int r = 0; r < R; r++) {
                const float *q = Q + (size_t)r * HS;
                __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(k));
                for (int d = 16; d < HS; d += 16)
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(k + d), acc);
                S[(size_t)r * lds + j] = scale * _mm512_reduce_add_ps(acc);
            }
        }
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, nk, HS, scale, Q, HS, K, HS, 0.0f, S, lds);
}

// O (R, HS) = P (R, nk; leading dim ldp) V (nk, HS) + beta O.
static void mix(int R, int nk, int HS, const float *P, int ldp, const float *V, float *O, float beta, int stream) {
    if (R == 1) {
        cblas_sgemv(CblasRowMajor, CblasTrans, nk, HS, 1.0f, V, HS, P, 1, beta, O, 1);
        return;
    }
#if defined(__AVX512F__)
    if (stream && R <= STREAM_ROWS && HS % 16 == 0) {
        if (beta == 0.0f) memset(O, 0, (size_t)R * HS * sizeof(float));
        for (int j = 0; j < nk; j++) {
            const float *v = V + (size_t)j * HS;
            for (int r = 0; r < R; r++) {
                const float p = P[(size_t)r * ldp + j];
                if (p == 0.0f) continue;  // masked keys of a prefill block
                const __m512 pv = _mm512_set1_ps(p);
                float *o = O + (size_t)r * HS;
                for (int d = 0; d < HS; d += 16)
                    _mm512_storeu_ps(o + d, _mm512_fmadd_ps(pv, _mm512_loadu_ps(v + d), _mm512_loadu_ps(o + d)));
            }
        }
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, HS, nk, 1.0f, P, ldp, V, HS, beta, O, HS);
}

// ----------------------------------------------------------------------------
// planning: rows per block, key splits, scratch

typedef struct {
    int rb, nrb;       // new rows per block, number of blocks
    int nsplit, chunk; // key splits and keys per split
    size_t per_thread; // Qc + S (+ a converted key/value block) floats
} Plan;

static Plan make_plan(int B, int NKV, int group, int HS, int Tn, int ctx, int threads, int convert) {
    Plan p;
    long rb = SCORE_BUDGET / ((long)group * ctx);
    p.rb = rb < 1 ? 1 : rb > Tn ? Tn : (int)rb;
    p.nrb = (Tn + p.rb - 1) / p.rb;
    p.nsplit = 1;
    int items = B * NKV * p.nrb;
    if (Tn == 1 && items < threads) {  // decode with idle threads: split the keys
        int by_threads = (threads + items - 1) / items, by_len = ctx / MIN_KEYS_PER_SPLIT;
        p.nsplit = by_threads < by_len ? by_threads : by_len;
        if (p.nsplit < 1) p.nsplit = 1;
    }
    p.chunk = (ctx + p.nsplit - 1) / p.nsplit;
    p.per_thread = (size_t)p.rb * group * HS + (size_t)p.rb * group * p.chunk + (convert ? (size_t)CONVERT_BLOCK * HS : 0);
    return p;
}

size_t attention_cached_scratch_floats(const KVCache *kv, int NH, int Tn, int ctx, int threads) {
    // the largest plan over any Tn' <= Tn, ctx' <= ctx: rows per block are
    // bounded by both the budget and Tn, the score block by the budget or
    // one block row of group x ctx
    const int group = NH / kv->n_kv_head, HS = kv->head_size;
    size_t rows = (size_t)(SCORE_BUDGET / group > 0 ? SCORE_BUDGET / group : 1);
    if (rows > (size_t)Tn) rows = Tn;
    size_t scores = (size_t)group * ctx > SCORE_BUDGET ? (size_t)group * ctx : SCORE_BUDGET;
    size_t per_thread = rows * group * HS + scores + (size_t)group * ctx + (size_t)CONVERT_BLOCK * HS;
    size_t partials = (size_t)2 * threads * group * (HS + 2);
    return (size_t)threads * per_thread + partials;
}

// ----------------------------------------------------------------------------
// the kernel

void attention_cached(float *out, const float *qkv, const KVCache *kv, int l, int B, int Tn, int pos0, int NH,
                      float *scratch, size_t scratch_floats) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, group = NH / NKV, QKV = (NH + 2 * NKV) * HS, C = NH * HS;
    const int ctx = pos0 + Tn, threads = omp_get_max_threads();
    const float scale = 1.0f / sqrtf((float)HS);
    const Plan p = make_plan(B, NKV, group, HS, Tn, ctx, threads, kv->dtype != KV_F32);
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
        float *Qc = scratch + (size_t)omp_get_thread_num() * p.per_thread;  // (R, HS)
        float *S = Qc + (size_t)p.rb * group * HS;                          // (R, nk)
        const int t0 = rbi * p.rb, t1 = t0 + p.rb < Tn ? t0 + p.rb : Tn, R = (t1 - t0) * group;
        const int kend = pos0 + t1;  // keys visible to the block's last row
        const int k0 = s * p.chunk, k1 = k0 + p.chunk < kend ? k0 + p.chunk : kend, nk = k1 - k0;
        float *Op = partials + (size_t)it * partial_stride, *mp = Op + R_split * HS, *lp = mp + R_split;
        if (nk <= 0) {  // an empty split (only when splitting)
            for (int r = 0; r < R; r++) mp[r] = -INFINITY, lp[r] = 0.0f;
            memset(Op, 0, (size_t)R * HS * sizeof(float));
            continue;
        }
        // gather the group's queries: row (t, j) is query head g*group + j at time t
        for (int t = t0; t < t1; t++)
            memcpy(Qc + (size_t)(t - t0) * group * HS, qkv + ((size_t)b * Tn + t) * QKV + (size_t)g * group * HS,
                   (size_t)group * HS * sizeof(float));
        const size_t row_bytes = (size_t)HS * kv->elem;
        const char *K = (const char *)kvcache_k(kv, l, b, g) + (size_t)k0 * row_bytes;
        const char *V = (const char *)kvcache_v(kv, l, b, g) + (size_t)k0 * row_bytes;
        float *conv = S + (size_t)p.rb * group * p.chunk;  // (CONVERT_BLOCK, HS) for 16-bit caches
        if (kv->dtype == KV_F32) {
            scores(R, nk, HS, scale, Qc, (const float *)K, S, nk, 1);
        } else {  // blocks of keys to float, each scored by one sgemm while it sits in L2
            for (int j0 = 0; j0 < nk; j0 += CONVERT_BLOCK) {
                int nj = nk - j0 < CONVERT_BLOCK ? nk - j0 : CONVERT_BLOCK;
                kv_to_float(K + (size_t)j0 * row_bytes, kv->dtype, conv, (size_t)nj * HS);
                scores(R, nj, HS, scale, Qc, conv, S + j0, nk, 0);
            }
        }
        for (int r = 0; r < R; r++) {
            const int t = t0 + r / group;
            int vis = pos0 + t + 1 - k0;  // keys [k0, pos0 + t] are visible
            if (vis > nk) vis = nk;
            float *row = S + (size_t)r * nk;
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j < vis; j++) mx = row[j] > mx ? row[j] : mx;
            for (int j = 0; j < vis; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            for (int j = vis > 0 ? vis : 0; j < nk; j++) row[j] = 0.0f;
            if (p.nsplit > 1) {
                mp[r] = vis > 0 ? mx : -INFINITY;
                lp[r] = sum;
            } else {
                const float inv = 1.0f / sum;  // vis >= 1 always without splits
                for (int j = 0; j < vis; j++) row[j] *= inv;
            }
        }
        // O = P V into Op (key splits) or Qc (no longer needed), then scattered
        float *O = p.nsplit > 1 ? Op : Qc;
        if (kv->dtype == KV_F32) {
            mix(R, nk, HS, S, nk, (const float *)V, O, 0.0f, 1);
        } else {
            for (int j0 = 0; j0 < nk; j0 += CONVERT_BLOCK) {
                int nj = nk - j0 < CONVERT_BLOCK ? nk - j0 : CONVERT_BLOCK;
                kv_to_float(V + (size_t)j0 * row_bytes, kv->dtype, conv, (size_t)nj * HS);
                mix(R, nj, HS, S + j0, nk, conv, O, j0 ? 1.0f : 0.0f, 0);
            }
        }
        if (p.nsplit == 1) {
            for (int t = t0; t < t1; t++)
                memcpy(out + ((size_t)b * Tn + t) * C + (size_t)g * group * HS, Qc + (size_t)(t - t0) * group * HS,
                       (size_t)group * HS * sizeof(float));
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
