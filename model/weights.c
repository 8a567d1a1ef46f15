/*
 * weights.c: see weights.h. The conversions, then the product: the
 * activations are first put in the weights' form (bf16, or q8 blocks), then
 * every thread streams its groups of 16 interleaved weight rows once (one
 * row a vector lane), dotted with up to 8 input rows whose numbers are
 * broadcast as they are needed (ops.c's skinny matmul turned around: no
 * sums across lanes are left at the end).
 */
#include "weights.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../util/team.h"
#include "../util/util.h"
#include "kvcache.h"
#include "ops.h"
#include "simd.h"

// ----------------------------------------------------------------------------
// dtypes and layout

const char *const weight_dtype_names[] = {"f32", "bf16", "f16", "q8", NULL};

int weight_dtype_parse(const char *name, WeightDtype *out) {
    for (int d = 0; d < W_NUM_DTYPES; d++)
        if (!strcmp(name, weight_dtype_names[d])) {
            *out = (WeightDtype)d;
            return 0;
        }
    return -1;
}

const char *weight_dtype_name(WeightDtype d) { return d >= 0 && d < W_NUM_DTYPES ? weight_dtype_names[d] : "?"; }

int wmat_ld(WeightDtype d, int cols) {
    return d == W_Q8 ? (cols + WQ8_BLOCK - 1) / WQ8_BLOCK * WQ8_BLOCK : d == W_BF16 ? (cols + 1) / 2 * 2 : cols;
}

static size_t elem_bytes(WeightDtype d) { return d == W_F32 ? 4 : d == W_Q8 ? 1 : 2; }
// f32, bf16 and f16 are stored as the KV cache stores them (its conversions)
static KVDtype kv_form(WeightDtype d) { return d == W_F32 ? KV_F32 : d == W_BF16 ? KV_BF16 : KV_F16; }
static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// Rows stored: whole groups of rows.
static size_t stored_rows(size_t rows) { return (rows + WMAT_GROUP - 1) / WMAT_GROUP * WMAT_GROUP; }

size_t wmat_bytes(WeightDtype d, size_t rows, int cols) {
    const size_t ld = (size_t)wmat_ld(d, cols), n = stored_rows(rows);
    return round64(n * ld * elem_bytes(d)) + (d == W_Q8 ? round64(n * (ld / WQ8_BLOCK) * sizeof(float)) : 0);
}

size_t wmat_row_bytes(WeightDtype d, int cols) {
    const size_t ld = (size_t)wmat_ld(d, cols);
    return ld * elem_bytes(d) + (d == W_Q8 ? ld / WQ8_BLOCK * sizeof(float) : 0);
}

WMat wmat_view(const float *src, size_t rows, int cols) {
    return (WMat){.dtype = W_F32, .rows = rows, .cols = cols, .ld = cols, .grouped = 0, .data = (void *)src};
}

WMat wmat_rows(const WMat *w, size_t row0, size_t n) {
    WMat v = *w;
    v.rows = n;
    if (!w->grouped) {
        v.data = (char *)w->data + row0 * (size_t)w->ld * sizeof(float);
        return v;
    }
    const size_t p = (size_t)w->lane0 + row0, g0 = p / WMAT_GROUP * WMAT_GROUP;  // from the group that holds row0
    v.data = (char *)w->data + g0 * (size_t)w->ld * elem_bytes(w->dtype);
    if (w->scale) v.scale = w->scale + g0 * (size_t)(w->ld / WQ8_BLOCK);
    v.lane0 = (int)(p % WMAT_GROUP);
    return v;
}

// The element of column k of stored row p of a grouped matrix (counted from
// its first group; a view's row r is p = lane0 + r) in rows of ld: group p
// / 16 holds its rows' columns u at a time (f32 and f16 1, bf16 2, q8 4),
// the u columns of its 16 rows side by side, row i's at u i.
static inline size_t wmat_pos(WeightDtype d, size_t p, size_t k, size_t ld) {
    const size_t u = d == W_Q8 ? 4 : d == W_BF16 ? 2 : 1, g = p / WMAT_GROUP, i = p % WMAT_GROUP;
    return ((g * (ld / u) + k / u) * WMAT_GROUP + i) * u + k % u;
}

// q8: the index of the scale of block b of stored row p, in rows of nb blocks.
static inline size_t q8_scale_at(size_t p, size_t b, size_t nb) {
    return (p / WMAT_GROUP * nb + b) * WMAT_GROUP + p % WMAT_GROUP;
}

// q8 of n values (n <= 32; zeros past them): q[i] = round(x[i] / d), d =
// max|x| / 127 (0 for a block of zeros). Returns d.
static float q8_block(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < WQ8_BLOCK; i++) {
        const float v = i < n ? nearbyintf(x[i] * inv) : 0.0f;
        q[i] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
    }
    return d;
}

// A grouped (rows, cols) matrix of dtype d laid out at mem (wmat_bytes of
// it): its data, and q8's scales after it. The numbers are the caller's.
static void wmat_place(WMat *w, WeightDtype d, size_t rows, int cols, void *mem) {
    const int ld = wmat_ld(d, cols);
    *w = (WMat){.dtype = d, .rows = rows, .cols = cols, .ld = ld, .grouped = 1, .data = mem, .scale = NULL};
    if (d == W_Q8) w->scale = (float *)((char *)mem + round64(stored_rows(rows) * (size_t)ld));
}

void wmat_init_from_float(WMat *w, WeightDtype d, size_t rows, int cols, void *mem, const float *src) {
    wmat_place(w, d, rows, cols, mem);
    const int ld = w->ld;
    const size_t nb = (size_t)ld / WQ8_BLOCK, stored = stored_rows(rows), eb = elem_bytes(d);
#pragma omp parallel for schedule(static)
    for (size_t g = 0; g < stored / WMAT_GROUP; g++) {  // a group per thread: its rows share cache lines
        char *row = d == W_Q8 ? NULL : malloc_check((size_t)ld * eb);  // one row in its dtype
        for (size_t r = g * WMAT_GROUP; r < (g + 1) * WMAT_GROUP; r++) {  // the padding rows are zeros (q8: scale 0)
            const float *x = src + (r < rows ? r : 0) * (size_t)cols;
            if (d == W_Q8) {
                uint8_t *u = mem;
                for (size_t b = 0; b < nb; b++) {
                    const int k = (int)b * WQ8_BLOCK, n = r < rows ? (cols - k < WQ8_BLOCK ? cols - k : WQ8_BLOCK) : 0;
                    int8_t q[WQ8_BLOCK];
                    w->scale[q8_scale_at(r, b, nb)] = q8_block(x + k, n, q);
                    for (int i = 0; i < WQ8_BLOCK; i++) u[wmat_pos(d, r, (size_t)(k + i), (size_t)ld)] = (uint8_t)(q[i] + 128);
                }
                continue;
            }
            memset(row, 0, (size_t)ld * eb);
            if (r < rows) kv_from_float(x, kv_form(d), row, (size_t)cols);
            for (int k = 0; k < ld; k++) {
                const size_t at = wmat_pos(d, r, (size_t)k, (size_t)ld);
                if (eb == 4) ((float *)mem)[at] = ((const float *)row)[k];
                else ((uint16_t *)mem)[at] = ((const uint16_t *)row)[k];
            }
        }
        free(row);
    }
}

// ----------------------------------------------------------------------------
// the checkpoint's form (weights.h)

// q8's blocks a row: its scales.
static size_t q8_blocks(int cols) { return (size_t)wmat_ld(W_Q8, cols) / WQ8_BLOCK; }

size_t wmat_raw_bytes(WeightDtype d, size_t rows, int cols) {
    CHECK(d != W_F32);
    if (d == W_Q8) return rows * (q8_blocks(cols) * sizeof(float) + (size_t)cols);
    return rows * (size_t)cols * 2;
}

void wmat_to_raw(const WMat *w, uint8_t *raw) {
    CHECK(w->grouped && w->lane0 == 0 && w->dtype != W_F32);
    const size_t rows = w->rows, cols = (size_t)w->cols, ld = (size_t)w->ld;
    if (w->dtype == W_Q8) {
        const size_t nb = q8_blocks(w->cols);
        const uint8_t *u = w->data;
        uint8_t *q = raw + rows * nb * sizeof(float);
        for (size_t r = 0; r < rows; r++) {
            for (size_t b = 0; b < nb; b++) put_f32le(raw + (r * nb + b) * 4, w->scale[q8_scale_at(r, b, nb)]);
            for (size_t k = 0; k < cols; k++) q[r * cols + k] = (uint8_t)(u[wmat_pos(W_Q8, r, k, ld)] ^ 0x80);  // q + 128 -> q
        }
        return;
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < cols; k++)
            put_u16le(raw + 2 * (r * cols + k), ((const uint16_t *)w->data)[wmat_pos(w->dtype, r, k, ld)]);
}

// A 16-bit number's exponent all ones: infinity or NaN.
static int half_not_finite(WeightDtype d, uint16_t h) {
    return d == W_BF16 ? (h & 0x7F80) == 0x7F80 : (h & 0x7C00) == 0x7C00;
}

int wmat_raw_check(WeightDtype d, size_t rows, int cols, const uint8_t *raw, char *err, size_t errlen) {
    if (d == W_Q8) {
        const size_t nbr = q8_blocks(cols);
        for (size_t i = 0; i < rows * nbr; i++) {
            const float s = get_f32le(raw + 4 * i);
            if (!isfinite(s) || s < 0.0f) {
                snprintf(err, errlen, "row %zu, block %zu has scale %g (want finite and >= 0)", i / nbr, i % nbr,
                         (double)s);
                return -1;
            }
        }
        return 0;
    }
    for (size_t i = 0; i < rows * (size_t)cols; i++)
        if (half_not_finite(d, get_u16le(raw + 2 * i))) {
            snprintf(err, errlen, "row %zu, column %zu is not finite (0x%04x)", i / (size_t)cols, i % (size_t)cols,
                     get_u16le(raw + 2 * i));
            return -1;
        }
    return 0;
}

void wmat_init_from_raw(WMat *w, WeightDtype d, size_t rows, int cols, void *mem, const uint8_t *raw) {
    CHECK(d != W_F32);
    wmat_place(w, d, rows, cols, mem);
    const int ld = w->ld;
    const size_t stored = stored_rows(rows), nb = q8_blocks(cols), C = (size_t)cols;
    if (d == W_Q8) {  // the padding: q = 0 (stored 128), scale 0, as wmat_init_from_float's
        memset(mem, 0x80, stored * (size_t)ld);
        memset(w->scale, 0, stored * nb * sizeof(float));
        const uint8_t *q = raw + rows * nb * sizeof(float);
        for (size_t r = 0; r < rows; r++) {
            for (size_t b = 0; b < nb; b++) w->scale[q8_scale_at(r, b, nb)] = get_f32le(raw + (r * nb + b) * 4);
            for (size_t k = 0; k < C; k++) ((uint8_t *)mem)[wmat_pos(d, r, k, (size_t)ld)] = (uint8_t)(q[r * C + k] ^ 0x80);
        }
        return;
    }
    memset(mem, 0, stored * (size_t)ld * 2);
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < C; k++) ((uint16_t *)mem)[wmat_pos(d, r, k, (size_t)ld)] = get_u16le(raw + 2 * (r * C + k));
}

void wmat_row_to_float(const WMat *w, size_t r, float *dst) {
    const size_t p = (size_t)w->lane0 + r, ld = (size_t)w->ld, eb = elem_bytes(w->dtype);
    if (!w->grouped) {
        memcpy(dst, (const float *)w->data + r * ld, (size_t)w->cols * sizeof(float));
    } else if (w->dtype == W_Q8) {
        const uint8_t *u = w->data;
        const size_t nb = ld / WQ8_BLOCK;
        for (int k = 0; k < w->cols; k++)
            dst[k] = w->scale[q8_scale_at(p, (size_t)k / WQ8_BLOCK, nb)] * (float)((int)u[wmat_pos(W_Q8, p, (size_t)k, ld)] - 128);
    } else {  // gathered 256 at a time, then converted
        _Alignas(64) char part[256 * 4];
        for (int k0 = 0; k0 < w->cols; k0 += 256) {
            const int n = w->cols - k0 < 256 ? w->cols - k0 : 256;
            for (int k = 0; k < n; k++) {
                const size_t at = wmat_pos(w->dtype, p, (size_t)(k0 + k), ld);
                if (eb == 4) ((float *)part)[k] = ((const float *)w->data)[at];
                else ((uint16_t *)part)[k] = ((const uint16_t *)w->data)[at];
            }
            kv_to_float(part, kv_form(w->dtype), dst + k0, (size_t)n);
        }
    }
}

// ----------------------------------------------------------------------------
// the activations in the weights' form

// bf16: (N, ldx) of the rounded activations, zeros past cols, ldx = cols
// rounded up to 32 (one vdpbf16ps). q8 (ld = wmat_ld, nb = ld / 32
// blocks): xq (N, ld) int8, zeros past cols, and per block xc = -128
// times the sum of its q (N, nb) and its scale xs (N, nb).
typedef struct {
    const float *x;  // (N, cols) as given
    int cols;
    int ldx;         // bf16
    uint16_t *xb;    // bf16
    int8_t *xq;      // q8
    int32_t *xc;     // q8
    float *xs;       // q8
} Acts;

static int ldx_bf16(int cols) { return (cols + 31) / 32 * 32; }

size_t wmat_scratch_bytes(int N, int cols) {
    const size_t ld = (size_t)wmat_ld(W_Q8, cols), bf = round64((size_t)N * ldx_bf16(cols) * 2);
    const size_t q8 = round64((size_t)N * ld) + 2 * round64((size_t)N * (ld / WQ8_BLOCK) * 4);
    return bf > q8 ? bf : q8;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define HAVE_Q8_PREPARE 1
// q8_block's quantisation of x[0, 32) (the first n valid) into q[0, 32),
// with vector instructions: the same products, and vcvtps2dq rounds to
// nearest even as nearbyintf does, so the values are q8_block's. Returns
// the block's scale; *sum = the sum of its q.
static float q8_block_avx(const float *x, int n, int8_t *q, int32_t *sum) {
    const __m512 a = _mm512_maskz_loadu_ps(mask16(n), x), b = _mm512_maskz_loadu_ps(mask16(n - 16 > 0 ? n - 16 : 0), x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(qb));
    return amax / 127.0f;
}
#endif

static int use_portable = 0;

static Acts acts_prepare(const WMat *w, const float *inp, int N, void *scratch) {
    Acts a = {.x = inp, .cols = w->cols};
    if (w->dtype == W_BF16) {
        a.ldx = ldx_bf16(w->cols), a.xb = scratch;
        for (int n = 0; n < N; n++) {
            uint16_t *dst = a.xb + (size_t)n * a.ldx;
            kv_from_float(inp + (size_t)n * w->cols, KV_BF16, dst, (size_t)w->cols);
            memset(dst + w->cols, 0, (size_t)(a.ldx - w->cols) * 2);
        }
    } else if (w->dtype == W_Q8) {
        const size_t ld = (size_t)w->ld, nb = ld / WQ8_BLOCK;
        a.xq = scratch;
        a.xc = (int32_t *)((char *)scratch + round64((size_t)N * ld));
        a.xs = (float *)((char *)a.xc + round64((size_t)N * nb * 4));
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * w->cols;
            for (size_t b = 0; b < nb; b++) {
                const int k = (int)b * WQ8_BLOCK, cnt = w->cols - k < WQ8_BLOCK ? w->cols - k : WQ8_BLOCK;
                int8_t *q = a.xq + n * ld + k;
                int32_t sum = 0;
#if defined(HAVE_Q8_PREPARE)
                if (!use_portable) {
                    a.xs[n * nb + b] = q8_block_avx(x + k, cnt, q, &sum);
                    a.xc[n * nb + b] = -128 * sum;
                    continue;
                }
#endif
                a.xs[n * nb + b] = q8_block(x + k, cnt, q);
                for (int i = 0; i < WQ8_BLOCK; i++) sum += q[i];
                a.xc[n * nb + b] = -128 * sum;
            }
        }
    }
    return a;
}

// ----------------------------------------------------------------------------
// portable kernels: float32 sums, one weight row at a time

static float bf16_value(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

typedef void (*RowsFn)(int, int, const WMat *, const Acts *, const float *, int, size_t, float *);
// A product's arguments, for its loop over weight rows (the vector
// kernels: over groups of 16), which also take a function for NB input
// rows x a block of OB groups.
typedef struct {
    float *out;
    const WMat *w;
    const Acts *a;
    const float *b;
    int N, OB;
    RowsFn rows;
} MatmulArgs;

// Weight rows [begin, end).
static void portable_rows(void *ctx, long begin, long end, long step) {
    const MatmulArgs *p = ctx;
    const WMat *w = p->w;
    const Acts *a = p->a;
    float *out = p->out;
    const float *b = p->b;
    const int C = w->cols, ld = w->ld, N = p->N;
    const long OC = (long)w->rows;
    float *row = w->dtype == W_Q8 ? NULL : malloc_check((size_t)C * sizeof(float));
    for (long o = begin; o < end; o += step) {
        if (w->dtype == W_Q8) {  // sum over blocks of d_w d_x (sum of q_w q_x, exact in int32)
            const uint8_t *u = w->data;
            const size_t nb = (size_t)ld / WQ8_BLOCK, pr = (size_t)w->lane0 + (size_t)o;  // its stored row
            for (int n = 0; n < N; n++) {
                const int8_t *q = a->xq + (size_t)n * ld;
                const float *xs = a->xs + (size_t)n * nb;
                float acc = 0.0f;
                for (size_t blk = 0; blk < nb; blk++) {
                    // (u - 128) q summed as u q - 128 q: gcc 12 -O2 vectorises the
                    // first form wrongly for AVX512_VNNI (signs of products flip)
                    int32_t sum = 0, sq = 0;
                    for (size_t e = 0; e < WQ8_BLOCK; e++) {
                        const size_t k = blk * WQ8_BLOCK + e;
                        sum += (int32_t)u[wmat_pos(W_Q8, pr, k, (size_t)ld)] * q[k], sq += q[k];
                    }
                    acc += (float)(sum - 128 * sq) * (w->scale[q8_scale_at(pr, blk, nb)] * xs[blk]);
                }
                out[(size_t)n * OC + o] = acc + (b ? b[o] : 0.0f);
            }
        } else {
            wmat_row_to_float(w, (size_t)o, row);
            for (int n = 0; n < N; n++) {
                float acc = 0.0f;
                if (w->dtype == W_BF16) {
                    const uint16_t *x = a->xb + (size_t)n * a->ldx;
                    for (int k = 0; k < C; k++) acc += row[k] * bf16_value(x[k]);
                } else {
                    const float *x = a->x + (size_t)n * C;
                    for (int k = 0; k < C; k++) acc += row[k] * x[k];
                }
                out[(size_t)n * OC + o] = acc + (b ? b[o] : 0.0f);
            }
        }
    }
    free(row);
}

static void matmul_portable(float *out, const WMat *w, const Acts *a, const float *b, int N) {
    MatmulArgs p = {out, w, a, b, N, 1, NULL};
    team_for((long)w->rows, 1, portable_rows, &p);
}

// ----------------------------------------------------------------------------
// vector kernels

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define HAVE_F16_KERNEL 1
#endif
#if defined(HAVE_F16_KERNEL) && defined(__AVX512BF16__)
#define HAVE_BF16_KERNEL 1
#endif
#if defined(HAVE_F16_KERNEL) && defined(__AVX512VNNI__)
#define HAVE_Q8_KERNEL 1
#endif

// wmat_prefetch_ahead (weights.h), inlined into the kernels: past the
// group's end, the same group of the next block, not the next group in
// memory, which is this block's own and already being read.
static inline size_t prefetch_ahead(size_t off, size_t gbytes, int G, size_t dist) {
    const size_t d = dist < gbytes ? dist : gbytes;
    return off + d < gbytes ? d : (size_t)G * gbytes + d - gbytes;
}

size_t wmat_prefetch_ahead(size_t off, size_t gbytes, int G, size_t dist) {
    return prefetch_ahead(off, gbytes, G, dist);
}

#if defined(HAVE_F16_KERNEL)
// Prefetch the weights when several input rows make each load's FMAs too
// many to keep enough loads in flight (ops.c's reason): f32, f16 and bf16
// each group's WMAT_PREFETCH bytes ahead in the order they are read
// (prefetch_ahead) into L1, q8 WMAT_PREFETCH_Q8 bytes ahead in memory into
// L2 (the faster for each, design.md).
#ifndef WMAT_PREFETCH
#define WMAT_PREFETCH 4096
#endif
#ifndef WMAT_PREFETCH_Q8
#define WMAT_PREFETCH_Q8 16384
#endif

// Lanes of acc[n G + k] (group g0 + k, input row n0 + n) to the rows of
// the view they hold, plus the bias: the first group of a view from
// mid-group, and the last, also hold rows of other views (or padding).
ALWAYS_INLINE void store_groups(const int NB, const int G, const __m512 *acc, const WMat *w, const float *bias,
                                int n0, size_t g0, float *out) {
    const long rows = (long)w->rows;
#pragma GCC unroll 8
    for (int k = 0; k < G; k++) {
        const long r0 = (long)(g0 + k) * WMAT_GROUP - w->lane0;  // the view's row in lane 0
        if (r0 >= 0 && r0 + WMAT_GROUP <= rows) {
            const __m512 bv = bias ? _mm512_loadu_ps(bias + r0) : _mm512_setzero_ps();
#pragma GCC unroll 8
            for (int n = 0; n < NB; n++)
                _mm512_storeu_ps(out + (size_t)(n0 + n) * rows + r0, _mm512_add_ps(acc[n * G + k], bv));
            continue;
        }
        const int lo = r0 < 0 ? (int)-r0 : 0, hi = rows - r0 < WMAT_GROUP ? (int)(rows - r0) : WMAT_GROUP;
        for (int n = 0; n < NB; n++) {
            float v[WMAT_GROUP];
            _mm512_storeu_ps(v, acc[n * G + k]);
            for (int i = lo; i < hi; i++) out[(size_t)(n0 + n) * rows + r0 + i] = v[i] + (bias ? bias[r0 + i] : 0.0f);
        }
    }
}

// f32 and f16: NB input rows (float32) x G groups of 16 weight rows from
// group g0, a column at a time: its 16 weights (f16: 32 bytes, converted),
// times the input's number broadcast, into the 16 rows' lanes.
ALWAYS_INLINE void groups_f(const WeightDtype DT, const int NB, const int G, const WMat *w, const Acts *a,
                            const float *bias, int n0, size_t g0, float *out) {
    const int C = w->cols;
    const size_t gel = WMAT_GROUP * (size_t)w->ld;  // elements of a group
    const char *wq = (const char *)w->data + g0 * gel * (DT == W_F32 ? 4 : 2);
    const float *x = a->x + (size_t)n0 * C;
    __m512 acc[24];
#pragma GCC unroll 24
    for (int i = 0; i < NB * G; i++) acc[i] = _mm512_setzero_ps();
    const size_t eb = DT == W_F32 ? 4 : 2;  // bytes a weight
    const int pf = NB > 1 && n0 == 0;       // prefetch: the pass reading the block from memory
#pragma GCC unroll 2
    for (int c = 0; c < C; c++) {
        __m512 wv[8];
        const size_t ahead = prefetch_ahead((size_t)c * WMAT_GROUP * eb, gel * eb, G, WMAT_PREFETCH);
#pragma GCC unroll 8
        for (int k = 0; k < G; k++) {
            if (DT == W_F32) {
                const float *wp = (const float *)wq + k * gel + (size_t)c * WMAT_GROUP;
                if (pf) _mm_prefetch((const char *)wp + ahead, _MM_HINT_T0);
                wv[k] = _mm512_load_ps(wp);
            } else {
                const uint16_t *wp = (const uint16_t *)wq + k * gel + (size_t)c * WMAT_GROUP;
                if (pf && c % 2 == 0) _mm_prefetch((const char *)wp + ahead, _MM_HINT_T0);
                wv[k] = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)wp));
            }
        }
#pragma GCC unroll 8
        for (int n = 0; n < NB; n++) {
            __m512 xv = _mm512_set1_ps(x[(size_t)n * C + c]);
            __asm__("" : "+v"(xv));  // one broadcast per input row, not a memory operand per FMA
#pragma GCC unroll 8
            for (int k = 0; k < G; k++) acc[n * G + k] = _mm512_fmadd_ps(wv[k], xv, acc[n * G + k]);
        }
    }
    store_groups(NB, G, acc, w, bias, n0, g0, out);
}
#endif

#if defined(HAVE_BF16_KERNEL)
// bf16: NB input rows (bf16, rows of ldx, zero-padded) x G groups of 16
// weight rows from group g0, a pair of columns at a time: vdpbf16ps adds
// the 16 rows' pairs times the input's pair broadcast.
ALWAYS_INLINE void groups_bf16(const int NB, const int G, const WMat *w, const Acts *a, const float *bias, int n0,
                               size_t g0, float *out) {
    const size_t gel = WMAT_GROUP * (size_t)w->ld;
    const uint16_t *wq = (const uint16_t *)w->data + g0 * gel, *xb = a->xb + (size_t)n0 * a->ldx;
    __m512 acc[24];
#pragma GCC unroll 24
    for (int i = 0; i < NB * G; i++) acc[i] = _mm512_setzero_ps();
    const int pf = NB > 1 && n0 == 0;  // prefetch: the pass reading the block from memory
#pragma GCC unroll 2
    for (int p = 0; p < w->ld / 2; p++) {
        __m512i wv[8];
        const size_t ahead = prefetch_ahead((size_t)p * 2 * WMAT_GROUP * 2, gel * 2, G, WMAT_PREFETCH);
#pragma GCC unroll 8
        for (int k = 0; k < G; k++) {
            const uint16_t *wp = wq + k * gel + (size_t)p * 2 * WMAT_GROUP;
            if (pf) _mm_prefetch((const char *)wp + ahead, _MM_HINT_T0);
            wv[k] = _mm512_load_si512(wp);
        }
#pragma GCC unroll 8
        for (int n = 0; n < NB; n++) {
            int32_t x2;  // the input's pair
            memcpy(&x2, xb + (size_t)n * a->ldx + 2 * p, 4);
            __m512i xv = _mm512_set1_epi32(x2);
            __asm__("" : "+v"(xv));
#pragma GCC unroll 8
            for (int k = 0; k < G; k++)
                acc[n * G + k] = _mm512_dpbf16_ps(acc[n * G + k], (__m512bh)wv[k], (__m512bh)xv);
        }
    }
    store_groups(NB, G, acc, w, bias, n0, g0, out);
}
#endif

#if defined(HAVE_Q8_KERNEL)
// q8: NB input rows x G groups of 16 weight rows from group g0 of the
// view (each group's rows in the lanes): per block, the int32 lanes start
// from the compensation -128 sum q_x of the input row's block, vpdpbusd
// adds the 8 slices' q_w q_x with the input's 4 bytes broadcast, and one
// multiply-add scales the block's 16 sums by d_w (16 rows) d_x into acc.
// Lanes are stored to the rows of the view they hold (the first group of a
// view from mid-group, and the last, hold rows of other views too).
ALWAYS_INLINE void groups_q8(const int NB, const int G, const WMat *w, const Acts *a, const float *bias, int n0,
                             size_t g0, float *out) {
    const size_t ld = (size_t)w->ld, nb = ld / WQ8_BLOCK, gbytes = WMAT_GROUP * ld, gscales = WMAT_GROUP * nb;
    const uint8_t *wq = (const uint8_t *)w->data + g0 * gbytes;
    const float *ws = w->scale + g0 * gscales;
    const int8_t *xq = a->xq + (size_t)n0 * ld;
    const int32_t *xc = a->xc + (size_t)n0 * nb;
    const float *xs = a->xs + (size_t)n0 * nb;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < NB * G; i++) acc[i] = _mm512_setzero_ps();
    const int pf = NB > 1 && n0 == 0;  // prefetch: the pass reading the block from memory
    for (size_t b = 0; b < nb; b++) {
        __m512i dot[8];
#pragma GCC unroll 8
        for (int n = 0; n < NB; n++)
#pragma GCC unroll 4
            for (int k = 0; k < G; k++) dot[n * G + k] = _mm512_set1_epi32(xc[n * nb + b]);
#pragma GCC unroll 8
        for (int t = 0; t < WQ8_BLOCK / 4; t++) {
            __m512i wv[4];
#pragma GCC unroll 4
            for (int k = 0; k < G; k++) {
                const uint8_t *wp = wq + k * gbytes + (b * (WQ8_BLOCK / 4) + t) * 64;
                if (pf) _mm_prefetch((const char *)wp + WMAT_PREFETCH_Q8, _MM_HINT_T1);
                wv[k] = _mm512_load_si512(wp);
            }
#pragma GCC unroll 8
            for (int n = 0; n < NB; n++) {
                int32_t x4;  // the input's 4 bytes of slice t
                memcpy(&x4, xq + n * ld + b * WQ8_BLOCK + 4 * t, 4);
                const __m512i xv = _mm512_set1_epi32(x4);
#pragma GCC unroll 4
                for (int k = 0; k < G; k++) dot[n * G + k] = _mm512_dpbusd_epi32(dot[n * G + k], wv[k], xv);
            }
        }
#pragma GCC unroll 4
        for (int k = 0; k < G; k++) {
            const __m512 wsv = _mm512_load_ps(ws + k * gscales + b * WMAT_GROUP);
#pragma GCC unroll 8
            for (int n = 0; n < NB; n++)
                acc[n * G + k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[n * G + k]),
                                                 _mm512_mul_ps(wsv, _mm512_set1_ps(xs[n * nb + b])), acc[n * G + k]);
        }
    }
    store_groups(NB, G, acc, w, bias, n0, g0, out);
}
#endif

#if defined(HAVE_F16_KERNEL)
// Groups of 16 weight rows per block for NB input rows: f32, bf16 and f16
// keep NB x G float sums and G weight vectors in registers (at most 31 with
// the input's broadcast); q8 NB x G int32 sums and as many float ones.
// Fewer input rows take more groups, to keep enough chains of dot products
// in flight.
ALWAYS_INLINE int wmat_ob(WeightDtype d, int nb) {
    if (d == W_Q8) return nb <= 2 ? 4 : nb <= 4 ? 2 : 1;
    return nb <= 2 ? 8 : nb == 3 ? 6 : nb == 4 ? 5 : 24 / nb;
}

// Input rows [n0, n0 + NB) x groups [g0, g0 + G) of weight rows.
ALWAYS_INLINE void wblock(const WeightDtype DT, const int NB, const int G, const WMat *w, const Acts *a,
                          const float *b, int n0, size_t g0, float *out) {
    if (DT == W_F32 || DT == W_F16) groups_f(DT, NB, G, w, a, b, n0, g0, out);
#if defined(HAVE_BF16_KERNEL)
    if (DT == W_BF16) groups_bf16(NB, G, w, a, b, n0, g0, out);
#endif
#if defined(HAVE_Q8_KERNEL)
    if (DT == W_Q8) groups_q8(NB, G, w, a, b, n0, g0, out);
#endif
}

// A block of wmat_ob groups (one = 0) or of one group (one = 1), NB constant.
#define WMAT_DISPATCH(DT, FN)                                                                         \
    static void FN(int NB, int one, const WMat *w, const Acts *a, const float *b, int n0, size_t o0,   \
                   float *out) {                                                                      \
        switch (NB * 2 + one) {                                                                       \
            WMAT_CASES(DT, 1) WMAT_CASES(DT, 2) WMAT_CASES(DT, 3) WMAT_CASES(DT, 4) WMAT_CASES(DT, 5) \
            WMAT_CASES(DT, 6) WMAT_CASES(DT, 7) WMAT_CASES(DT, 8)                                     \
        }                                                                                             \
    }
#define WMAT_CASES(DT, NB)                                                 \
    case NB * 2: wblock(DT, NB, wmat_ob(DT, NB), w, a, b, n0, o0, out); break; \
    case NB * 2 + 1: wblock(DT, NB, 1, w, a, b, n0, o0, out); break;
WMAT_DISPATCH(W_F32, rows_f32)
WMAT_DISPATCH(W_F16, rows_f16)
#if defined(HAVE_BF16_KERNEL)
WMAT_DISPATCH(W_BF16, rows_bf16)
#endif
#if defined(HAVE_Q8_KERNEL)
WMAT_DISPATCH(W_Q8, rows_q8)
#endif
#undef WMAT_CASES
#undef WMAT_DISPATCH

#ifndef WMAT_NB
#define WMAT_NB 8  // input rows per pass over a block of weight rows
#endif

// ops.c's skinny loop over groups [begin, end) of weight rows, in blocks
// of OB groups (the shares split groups, not blocks: with a few dozen
// groups, whole blocks would leave one thread a block more); each block is
// read from memory by the first chunk of input rows and from cache by the
// next.
static void vector_blocks(void *ctx, long begin, long end, long step) {
    const MatmulArgs *v = ctx;
    (void)step;  // team_for: contiguous shares
    for (long o = begin; o < end; o += v->OB) {
        const long o1 = o + v->OB < end ? o + v->OB : end;
        for (int n0 = 0; n0 < v->N; n0 += WMAT_NB) {
            const int NB = v->N - n0 < WMAT_NB ? v->N - n0 : WMAT_NB, ob_n = wmat_ob(v->w->dtype, NB);
            for (long oo = o; oo < o1;) {
                const int full = oo + ob_n <= o1;
                v->rows(NB, !full, v->w, v->a, v->b, n0, (size_t)oo, v->out);
                oo += full ? ob_n : 1;
            }
        }
    }
}

static void matmul_vector(float *out, const WMat *w, const Acts *a, const float *b, int N) {
    RowsFn rows =
        w->dtype == W_F32 ? rows_f32 :
        w->dtype == W_F16 ? rows_f16 :
#if defined(HAVE_BF16_KERNEL)
        w->dtype == W_BF16 ? rows_bf16 :
#endif
#if defined(HAVE_Q8_KERNEL)
        w->dtype == W_Q8 ? rows_q8 :
#endif
                            NULL;
    CHECK(rows != NULL);
    const int OB = wmat_ob(w->dtype, N < WMAT_NB ? N : WMAT_NB);
    MatmulArgs v = {out, w, a, b, N, OB, rows};
    team_for(((long)w->rows + w->lane0 + WMAT_GROUP - 1) / WMAT_GROUP, 1, vector_blocks, &v);
}
#endif

// ----------------------------------------------------------------------------
// the product

__attribute__((constructor)) static void kernels_from_env(void) {
    const char *e = getenv("GQA_KERNELS");
    if (e && !strcmp(e, "portable")) use_portable = 1;
}

int wmat_use_portable(int on) {
    const int old = use_portable;
    use_portable = on != 0;
    return old;
}

static int have_vector(WeightDtype d) {
    switch (d) {
#if defined(HAVE_F16_KERNEL)
    case W_F32:
    case W_F16: return 1;
#endif
#if defined(HAVE_BF16_KERNEL)
    case W_BF16: return 1;
#endif
#if defined(HAVE_Q8_KERNEL)
    case W_Q8: return 1;
#endif
    default: return 0;
    }
}

const char *wmat_kernel_name(WeightDtype d) {
    if (use_portable || !have_vector(d)) return "portable";
    return d == W_BF16 ? "avx512bf16" : d == W_Q8 ? "avx512vnni" : "avx512f";
}

void wmat_matmul(float *out, const float *inp, const WMat *w, const float *b, int N, void *scratch) {
    if (N <= 0 || w->rows == 0) return;
    if (!w->grouped) {  // a view of float32 rows
        matmul_forward(out, inp, (const float *)w->data, b, N, w->cols, (int)w->rows);
        return;
    }
    const Acts a = acts_prepare(w, inp, N, scratch);
#if defined(HAVE_F16_KERNEL)
    if (!use_portable && have_vector(w->dtype)) {
        matmul_vector(out, w, &a, b, N);
        return;
    }
#endif
    matmul_portable(out, w, &a, b, N);
}
