/*
 * test_infer.c: inference against the training forward and a plain loop.
 *
 * - Prefill + incremental decode (and chunked prefill) give the full
 *   forward's logits at every position, for n_kv_head 4, 2, 1, batch 1 and 3,
 *   learned positions and RoPE; 16-bit caches within their tolerances.
 * - The grouped cached-attention kernel equals a per-query-head reference
 *   loop (kept here), including decode with the key axis split over threads.
 * - MLA: the absorbed decode over the latent cache gives the unabsorbed full
 *   forward's logits (learned and rope, with and without the latent norm and
 *   biases, batch 1 and 3, f32 and 16-bit caches); decode token by token ==
 *   chunked prefill; the latent kernel (one and two passes, AVX-512 and
 *   portable) equals a float64 loop; cache bytes and buffers equal the
 *   formula; broadcast and shared prefill; `gqa sample` of an MLA model.
 * - Samplers keep exactly the expected candidate sets; greedy is argmax.
 * - `gqa sample` end to end: golden greedy text from a committed tiny
 *   checkpoint (version 1, learned positions), temperature 0 == top_k 1,
 *   seeds, generation past block_size, and with RoPE the greedy tokens of a
 *   full forward over the cropped context (this suite also runs under
 *   ASan+UBSan).
 */
#include <malloc.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../cli/cli.h"
#include "../data/tokenizer.h"
#include "../infer/infer.h"
#include "../model/checkpoint.h"
#include "../model/attention_cached.h"
#include "../model/attention_latent.h"
#include "../model/gpt.h"
#include "../model/kvcache.h"
#include "../train/adamw.h"
#include "../util/util.h"
#include "testutil.h"

static void randomize(GPT *m, uint64_t seed) {
    uint64_t rng = seed;
    float *p = m->params_memory;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        int ln_weight = (i == PARAM_LN1W || i == PARAM_LN2W || i == PARAM_LNFW || i == PARAM_KVNW);
        for (size_t j = 0; j < m->param_sizes[i]; j++) p[j] = (ln_weight ? 1.0f : 0.0f) + 0.2f * rng_normal(&rng);
        p += m->param_sizes[i];
    }
}

// ----------------------------------------------------------------------------
// incremental decode == full forward

// out (B, T, V): the logits of tok (B, T) through the cache: the first P
// tokens prefilled in one call, then one token per step (P = 1: decode
// from the first position).
static void decode_logits(Inference *inf, const int *tok, int B, int T, int P, float *out) {
    const int V = inf->model->config.vocab_size;
    int *chunk = malloc_check((size_t)B * P * sizeof(int));
    for (int b = 0; b < B; b++) memcpy(chunk + b * P, tok + b * T, P * sizeof(int));
    ck_assert_int_eq(infer_forward(inf, chunk, P, 0, 1), 0);
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * T * V, inf->logits + (size_t)b * P * V, (size_t)P * V * sizeof(float));
    for (int t = P; t < T; t++) {
        for (int b = 0; b < B; b++) chunk[b] = tok[b * T + t];
        ck_assert_int_eq(infer_forward(inf, chunk, 1, t, 0), 0);
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * T + t) * V, inf->logits + (size_t)b * V, (size_t)V * sizeof(float));
    }
    free(chunk);
}

// out (B, T, V): the logits of tok (B, T) prefilled n tokens per call, all logits.
static void chunked_logits(Inference *inf, const int *tok, int B, int T, int n, float *out) {
    const int V = inf->model->config.vocab_size;
    int *chunk = malloc_check((size_t)B * n * sizeof(int));
    for (int start = 0; start < T; start += n) {
        const int k = T - start < n ? T - start : n;
        for (int b = 0; b < B; b++) memcpy(chunk + b * k, tok + b * T + start, k * sizeof(int));
        ck_assert_int_eq(infer_forward(inf, chunk, k, start, 1), 0);
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * T + start) * V, inf->logits + (size_t)b * k * V, (size_t)k * V * sizeof(float));
    }
    free(chunk);
}

static const int nkv_cases[] = {4, 2, 1};

// _i: n_kv_head 4, 2, 1 x batch 1, 3 x learned positions (_i < 6) or rope
START_TEST(test_decode_equals_full_forward) {
    const int nkv = nkv_cases[_i % 3], B = _i % 6 < 3 ? 1 : 3, T = 24, V = 23;
    GPTConfig c = {.vocab_size = V, .block_size = 32, .n_layer = 2, .n_head = 4, .n_kv_head = nkv, .n_embd = 32,
                   .bias = 1, .pos = _i < 6 ? GPT_POS_LEARNED : GPT_POS_ROPE, .rope_theta = 100.0f};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    randomize(&m, 100 + _i);
    int tok[3 * 24];
    uint64_t rng = 9 + _i;
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&rng) % V);
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, B, T), 0);
    const float *full = m.acts.logits;  // (B, T, V)

    // (a) prefill 5 tokens, then decode one at a time; (b) chunked prefill of all T tokens, 7 at a time
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 8, KV_F32), 0);
    float *got = malloc_check((size_t)B * T * V * sizeof(float));
    decode_logits(&inf, tok, B, T, 5, got);
    const double worst_decode = diff_tensors(got, full, (size_t)B * T * V).max_abs;
    ck_assert_msg(worst_decode <= 1e-4, "pos %s n_kv_head %d batch %d: decode vs full forward max abs %.3g",
                  gpt_pos_names[c.pos], nkv, B, worst_decode);
    chunked_logits(&inf, tok, B, T, 7, got);
    const double worst = diff_tensors(got, full, (size_t)B * T * V).max_abs;
    ck_assert_msg(worst <= 1e-4, "pos %s n_kv_head %d batch %d: chunked prefill max abs %.3g", gpt_pos_names[c.pos],
                  nkv, B, worst);
    printf("pos %s, n_kv_head %d, batch %d: prefill + decode vs full forward max abs %.2g, chunked prefill %.2g\n",
           gpt_pos_names[c.pos], nkv, B, worst_decode, worst);
    free(got);
    infer_free(&inf);
    gpt_free(&m);
}
END_TEST

// 16-bit caches against the float32 full forward. bf16 keeps 8 significant
// bits (relative error <= 2^-9 per stored number), f16 11 (2^-12).
// _i: bf16, f16 x learned positions (_i < 2) or rope (keys rotated, then rounded)
START_TEST(test_decode_16bit_accuracy) {
    const KVDtype dt = _i % 2 == 0 ? KV_BF16 : KV_F16;
    const double tol = dt == KV_BF16 ? 3e-2 : 4e-3;
    const int B = 2, T = 20, V = 23;
    GPTConfig c = {.vocab_size = V, .block_size = 32, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 32,
                   .bias = 1, .pos = _i < 2 ? GPT_POS_LEARNED : GPT_POS_ROPE, .rope_theta = 100.0f};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    randomize(&m, 55);
    int tok[2 * 20];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % V;
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, B, T), 0);
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 4, dt), 0);
    ck_assert_uint_eq(inf.cache.bytes, kvcache_bytes(&c, B, T, 4) / 2);  // half of f32
    float *got = malloc_check((size_t)B * T * V * sizeof(float));
    decode_logits(&inf, tok, B, T, 1, got);
    const double worst = diff_tensors(got, m.acts.logits, (size_t)B * T * V).max_abs;
    free(got);
    printf("%s KV cache, pos %s: decode logits max abs error vs float32 forward %.3g (tolerance %.0e)\n",
           kv_dtype_name(dt), gpt_pos_names[c.pos], worst, tol);
    ck_assert_msg(worst <= tol && worst > 0, "%s: max abs error %.3g", kv_dtype_name(dt), worst);
    infer_free(&inf);
    gpt_free(&m);
}
END_TEST

START_TEST(test_kv_dtype_conversions) {
    // exact values survive; rounding is to nearest even; specials are kept
    const float x[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 1e-9f, 3.14159265f,
                       INFINITY, -INFINITY};
    const float want_f16[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.0f,
                              3.140625f, INFINITY, -INFINITY};
    const float want_bf16[] = {0.0f, -0.0f, 1.0f, -2.5f, 65536.0f, 6.1035156e-05f, 5.9604645e-08f, 1.0000000e-09f,
                               3.140625f, INFINITY, -INFINITY};
    const size_t n = sizeof x / sizeof x[0];
    uint16_t h[16];
    float back[16];
    kv_from_float(x, KV_F16, h, n);
    kv_to_float(h, KV_F16, back, n);
    for (size_t i = 0; i < n; i++) ck_assert_msg(back[i] == want_f16[i], "f16 %g -> %g", x[i], back[i]);
    kv_from_float(x, KV_BF16, h, n);
    kv_to_float(h, KV_BF16, back, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(back[i] - want_bf16[i]) <= 0x1p-8f * fabsf(want_bf16[i]) || back[i] == want_bf16[i],
                      "bf16 %g -> %g", x[i], back[i]);
    // every finite half survives a round trip through float
    for (uint32_t u = 0; u < 65536; u++) {
        uint16_t hv = (uint16_t)u, hb;
        if ((hv & 0x7C00) == 0x7C00) continue;
        float f;
        kv_to_float(&hv, KV_F16, &f, 1);
        kv_from_float(&f, KV_F16, &hb, 1);
        ck_assert_msg(hb == hv || (f == 0.0f && (hb & 0x7FFF) == 0), "half 0x%04x -> %g -> 0x%04x", hv, f, hb);
    }
    KVDtype d;
    ck_assert_int_eq(kv_dtype_parse("bf16", &d), 0);
    ck_assert_int_eq(d, KV_BF16);
    ck_assert_int_eq(kv_dtype_parse("fp8", &d), -1);
}
END_TEST

// a prompt prefilled once and broadcast == the same prompt run for every
// sequence. _i: grouped learned, rope; MLA learned, rope
START_TEST(test_prefill_shared_equals_batched) {
    const int B = 3, P = 11, V = 19, mla = _i >= 2;
    GPTConfig c = {.vocab_size = V, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = mla ? 4 : 2,
                   .n_embd = 16, .bias = 1, .pos = _i % 2 ? GPT_POS_ROPE : GPT_POS_LEARNED,
                   .rope_theta = GPT_ROPE_THETA_DEFAULT, .kv_lora_rank = mla ? 6 : 0,
                   .rope_head_dim = mla && _i % 2 ? 2 : 0, .latent_norm = 1};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 2), 0);
    randomize(&m, 8);
    int prompt[11], copies[3 * 11], next[3] = {1, 5, 7};
    for (int i = 0; i < P; i++) prompt[i] = (i * 3 + 1) % V;
    for (int b = 0; b < B; b++) memcpy(copies + b * P, prompt, sizeof prompt);
    Inference a, b;
    ck_assert_int_eq(infer_init(&a, &m, B, 16, 4, KV_F32), 0);
    ck_assert_int_eq(infer_init(&b, &m, B, 16, 16, KV_F32), 0);
    ck_assert_int_eq(infer_prefill_shared(&a, prompt, P), 0);  // in chunks of 4
    ck_assert_int_eq(infer_forward(&b, copies, P, 0, 0), 0);
    ck_assert_tensor_close("shared prefill logits", a.logits, b.logits, (size_t)B * V, 1e-5);
    ck_assert_int_eq(infer_forward(&a, next, 1, P, 0), 0);  // sequences diverge here
    ck_assert_int_eq(infer_forward(&b, next, 1, P, 0), 0);
    ck_assert_tensor_close("decode after shared prefill", a.logits, b.logits, (size_t)B * V, 1e-5);
    infer_free(&a), infer_free(&b);
    gpt_free(&m);
}
END_TEST

START_TEST(test_infer_bounds) {
    GPTConfig c = {.vocab_size = 7, .block_size = 8, .n_layer = 1, .n_head = 2, .n_kv_head = 1, .n_embd = 8};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, 1, 8, 4, KV_F32), 0);
    int tok[4] = {1, 2, 3, 4};
    ck_assert_int_eq(infer_forward(&inf, tok, 4, 6, 0), -1);  // would write positions 6..9 of 8
    ck_assert_msg(strstr(inf.error, "positions [6, 10) do not fit"), "%s", inf.error);
    ck_assert_int_eq(infer_forward(&inf, tok, 5, 0, 0), -1);  // more than the chunk
    tok[2] = 7;
    ck_assert_int_eq(infer_forward(&inf, tok, 4, 0, 0), -1);
    ck_assert_str_eq(inf.error, "token id 7 at position 2 is out of range [0, vocab_size=7)");
    infer_free(&inf);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// grouped kernel == per-query-head reference loop

// The plain loop: every query head on its own, reading its KV head h / group.
static void attention_reference(float *out, const float *qkv, const KVCache *kv, int l, int B, int Tn, int pos0,
                                int NH) {
    const int NKV = kv->n_kv_head, HS = kv->head_size, group = NH / NKV, QKV = (NH + 2 * NKV) * HS;
    const size_t n = (size_t)kv->max_T * HS;
    double *p = malloc_check((size_t)(pos0 + Tn) * sizeof(double));
    float *K = malloc_check(n * sizeof(float)), *V = malloc_check(n * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < Tn; t++)
            for (int h = 0; h < NH; h++) {
                const float *q = qkv + ((size_t)b * Tn + t) * QKV + h * HS;
                int n = pos0 + t + 1;
                for (int j = 0; j < n; j++)  // the values as stored
                    kvcache_read(kv, l, b, h / group, j, K + (size_t)j * HS, V + (size_t)j * HS);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += (double)q[d] * K[(size_t)j * HS + d];
                    p[j] = s / sqrt((double)HS);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < HS; d++) {
                    double o = 0;
                    for (int j = 0; j < n; j++) o += p[j] * V[(size_t)j * HS + d];
                    out[((size_t)b * Tn + t) * NH * HS + h * HS + d] = (float)(o / sum);
                }
            }
    free(p), free(K), free(V);
}

typedef struct {
    int B, NKV, Tn, pos0, threads;
    KVDtype dtype;
    int NH, HS;  // 0: 8 query heads of 16
} KernelCase;

// decode at long context with B * NKV < threads exercises the key split
// (up to 5 splits with 5 threads, some of them partly masked)
static const KernelCase kernel_cases[] = {
    {1, 8, 1, 40, 2, KV_F32, 0, 0},    {2, 4, 1, 77, 2, KV_F32, 0, 0},   {1, 1, 1, 700, 2, KV_F32, 0, 0},
    {1, 2, 1, 1500, 2, KV_F32, 0, 0},  {3, 1, 1, 600, 2, KV_F32, 0, 0},  {1, 1, 9, 30, 2, KV_F32, 0, 0},
    {2, 2, 33, 0, 2, KV_F32, 0, 0},    {1, 4, 5, 11, 2, KV_F32, 0, 0},   {1, 1, 1, 0, 2, KV_F32, 0, 0},
    {1, 1, 1, 1999, 5, KV_F32, 0, 0},  {1, 2, 1, 1300, 5, KV_F32, 0, 0}, {2, 1, 1, 1024, 3, KV_F32, 0, 0},
    // 16-bit caches, converted as loaded
    {1, 1, 1, 700, 2, KV_BF16, 0, 0},  {2, 2, 1, 300, 2, KV_F16, 0, 0},  {1, 4, 9, 600, 2, KV_BF16, 0, 0},
    {1, 2, 33, 0, 2, KV_F16, 0, 0},
    // other shapes: groups of 32 rows (more than one register block), head
    // sizes with tails (20, 24, 8) or more than 64 dims (80), partial key
    // tiles (max_T not a multiple of 16)
    {1, 1, 1, 50, 2, KV_F32, 32, 20}, {2, 1, 3, 40, 2, KV_F32, 32, 20}, {2, 2, 7, 13, 2, KV_BF16, 6, 24},
    {1, 3, 1, 100, 2, KV_F16, 12, 80}, {1, 3, 6, 29, 2, KV_F32, 12, 80}, {3, 2, 20, 5, 2, KV_F32, 4, 8},
    {1, 1, 1, 1000, 2, KV_F32, 4, 8},
};

START_TEST(test_grouped_kernel_vs_reference) {
    const KernelCase kc = kernel_cases[_i];
    omp_set_num_threads(kc.threads);
    const int NH = kc.NH ? kc.NH : 8, HS = kc.HS ? kc.HS : 16, L = 2, l = 1;
    GPTConfig c = {.vocab_size = 5, .block_size = 2048, .n_layer = L, .n_head = NH, .n_kv_head = kc.NKV,
                   .n_embd = NH * HS};
    KVCache kv;
    char err[256];
    const int max_T = kc.pos0 + kc.Tn;
    ck_assert_int_eq(kvcache_init(&kv, &c, kc.B, max_T, kc.dtype, err, sizeof err), 0);
    ck_assert_uint_eq(kv.bytes, 2u * L * kc.B * kc.NKV * max_T * HS * (kc.dtype == KV_F32 ? 4 : 2));
    uint64_t rng = 31 + _i;
    const size_t nel = kv.bytes / 2 / kv.elem;
    float *fill = malloc_check(nel * sizeof(float));
    fill_normal(fill, nel, 1.0f, &rng);
    kv_from_float(fill, kc.dtype, kv.k, nel);
    fill_normal(fill, nel, 1.0f, &rng);
    kv_from_float(fill, kc.dtype, kv.v, nel);
    free(fill);
    const int QKV = (NH + 2 * kc.NKV) * HS;
    size_t nq = (size_t)kc.B * kc.Tn * QKV, nout = (size_t)kc.B * kc.Tn * NH * HS;
    float *qkv = malloc_check(nq * 4), *out = malloc_check(nout * 4), *ref = malloc_check(nout * 4);
    fill_normal(qkv, nq, 1.0f, &rng);
    size_t ns = attention_cached_scratch_floats(&kv, NH, kc.Tn, max_T, omp_get_max_threads());
    float *scratch = malloc_check(ns * 4);
    attention_cached(out, qkv, &kv, l, kc.B, kc.Tn, kc.pos0, NH, scratch, ns);  // stores the new K/V, then attends
    char name[96];
    snprintf(name, sizeof name, "B %d NKV %d Tn %d pos0 %d %s", kc.B, kc.NKV, kc.Tn, kc.pos0, kv_dtype_name(kc.dtype));
    // the new tokens' K and V are in the cache, as the dtype rounds them
    float *k = malloc_check((size_t)HS * 4), *v = malloc_check((size_t)HS * 4), *want = malloc_check((size_t)HS * 4);
    char *tmp = malloc_check((size_t)HS * 4);
    for (int b = 0; b < kc.B; b++)
        for (int g = 0; g < kc.NKV; g++)
            for (int t = 0; t < kc.Tn; t++) {
                const float *row = qkv + ((size_t)b * kc.Tn + t) * QKV;
                kvcache_read(&kv, l, b, g, kc.pos0 + t, k, v);
                for (int kind = 0; kind < 2; kind++) {
                    kv_from_float(row + (size_t)(NH + kind * kc.NKV + g) * HS, kc.dtype, tmp, (size_t)HS);
                    kv_to_float(tmp, kc.dtype, want, (size_t)HS);
                    ck_assert_msg(!memcmp(kind ? v : k, want, (size_t)HS * 4), "%s: %s of seq %d head %d pos %d not stored",
                                  name, kind ? "V" : "K", b, g, kc.pos0 + t);
                }
            }
    free(k), free(v), free(want), free(tmp);
    if (kc.Tn > 1 || kc.B * kc.NKV >= kc.threads) {  // no key split: one thread gives the same numbers, exactly
        float *one = malloc_check(nout * 4);
        omp_set_num_threads(1);
        attention_cached(one, qkv, &kv, l, kc.B, kc.Tn, kc.pos0, NH, scratch, ns);
        omp_set_num_threads(kc.threads);
        ck_assert_msg(!memcmp(one, out, nout * 4), "%s: 1 thread differs from %d", name, kc.threads);
        free(one);
    }
    attention_reference(ref, qkv, &kv, l, kc.B, kc.Tn, kc.pos0, NH);
    ck_assert_tensor_close(name, out, ref, nout, 2e-5);
    free(qkv), free(out), free(ref), free(scratch);
    kvcache_free(&kv);
}
END_TEST


// ----------------------------------------------------------------------------
// MLA: absorbed decode over the latent cache == the unabsorbed full forward

// A small MLA model: n_head 4 (batch 1) or 3 (batch 3, odd), head size 8 or
// 12, kv_lora_rank 20 (not a multiple of 16), rope_head_dim 6 with rope.
static GPTConfig mla_config(int B, int pos, int latent_norm, int bias) {
    const int NH = B == 1 ? 4 : 3;
    GPTConfig c = {.vocab_size = 23, .block_size = 32, .n_layer = 2, .n_head = NH, .n_kv_head = NH,
                   .n_embd = NH == 4 ? 32 : 36, .bias = bias, .pos = pos, .rope_theta = 100.0f,
                   .kv_lora_rank = 20, .rope_head_dim = pos == GPT_POS_ROPE ? 6 : 0, .latent_norm = latent_norm};
    return c;
}

// The largest |logit| of the full forward: errors are stated relative to it.
static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

// _i: batch 1, 3 x learned, rope x (latent_norm, bias) (1, 1), (0, 0), (1, 0), (0, 1)
// f32 cache; errors relative to the largest logit (3-5 here). Measured (gcc
// 12, 2 threads, AVX-512 and portable builds): decode and chunked prefill
// vs the full forward <= 1.1e-6 of the logit scale, decode token by token vs
// chunked prefill <= 9.4e-7 (bit-identical at batch 1, where every matmul
// takes the few-row path); the tolerance 1e-5 leaves room for other
// kernels and thread counts.
START_TEST(test_mla_decode_equals_full_forward) {
    const int B = _i % 2 ? 3 : 1, pos = (_i / 2) % 2 ? GPT_POS_ROPE : GPT_POS_LEARNED, nb = _i / 4;
    const int norm = nb == 0 || nb == 2, bias = nb == 0 || nb == 3, T = 24;
    GPTConfig c = mla_config(B, pos, norm, bias);
    const int V = c.vocab_size;
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    randomize(&m, 300 + _i);
    int tok[3 * 24];
    uint64_t rng = 19 + _i;
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&rng) % V);
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, B, T), 0);
    float *full = malloc_check((size_t)B * T * V * sizeof(float)), *dec = malloc_check((size_t)B * T * V * sizeof(float));
    memcpy(full, m.acts.logits, (size_t)B * T * V * sizeof(float));
    const double scale = max_abs(full, (size_t)B * T * V);

    // (a) prefill 5 tokens, then decode one at a time: dec (B, T, V)
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 8, KV_F32), 0);
    ck_assert_uint_eq(inf.cache.bytes, (size_t)c.n_layer * B * T * (c.kv_lora_rank + c.rope_head_dim) * 4);
    decode_logits(&inf, tok, B, T, 5, dec);
    const double err_decode = diff_tensors(dec, full, (size_t)B * T * V).max_abs / scale;

    // (b) chunked prefill of all T tokens, 7 at a time, all logits
    float *chunked = malloc_check((size_t)B * T * V * sizeof(float));
    chunked_logits(&inf, tok, B, T, 7, chunked);
    const double err_chunked = diff_tensors(chunked, full, (size_t)B * T * V).max_abs / scale;
    const double err_vs_decode = diff_tensors(chunked, dec, (size_t)B * T * V).max_abs / scale;
    free(chunked);
    printf("MLA pos %s latent_norm %d bias %d batch %d (logits up to %.3g): decode vs full forward %.2g, chunked "
           "prefill %.2g, decode vs chunked %.2g (of the logit scale)\n",
           gpt_pos_names[pos], norm, bias, B, scale, err_decode, err_chunked, err_vs_decode);
    ck_assert_msg(err_decode <= 1e-5, "decode vs full forward: %.3g of the logit scale", err_decode);
    ck_assert_msg(err_chunked <= 1e-5, "chunked prefill vs full forward: %.3g", err_chunked);
    ck_assert_msg(err_vs_decode <= 1e-5, "decode vs chunked prefill: %.3g", err_vs_decode);
    free(full), free(dec);
    infer_free(&inf);
    gpt_free(&m);
}
END_TEST

// 16-bit latent caches against the float32 full forward (the latent and the
// rotated rope key are what is rounded). _i: bf16, f16 x learned, rope.
// Measured (relative to the largest logit, 3-5): bf16 <= 2.8e-3, f16 <=
// 3.4e-4 (about the grouped cache's, per number stored); tolerances 1.5e-2
// and 2e-3, and the error must not be 0 (the cache really rounds).
START_TEST(test_mla_decode_16bit_accuracy) {
    const KVDtype dt = _i % 2 == 0 ? KV_BF16 : KV_F16;
    const double tol = dt == KV_BF16 ? 1.5e-2 : 2e-3;
    const int B = 3, T = 20;
    GPTConfig c = mla_config(B, _i < 2 ? GPT_POS_LEARNED : GPT_POS_ROPE, 1, 1);
    const int V = c.vocab_size;
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    randomize(&m, 77 + _i);
    int tok[3 * 20];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % V;
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, B, T), 0);
    const double scale = max_abs(m.acts.logits, (size_t)B * T * V);
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 4, dt), 0);
    ck_assert_uint_eq(inf.cache.bytes, kvcache_bytes(&c, B, T, 4) / 2);  // half of f32
    float *got = malloc_check((size_t)B * T * V * sizeof(float));
    decode_logits(&inf, tok, B, T, 1, got);
    const double worst = diff_tensors(got, m.acts.logits, (size_t)B * T * V).max_abs / scale;
    free(got);
    printf("MLA %s latent cache, pos %s: decode logits error vs float32 forward %.3g of the logit scale %.3g "
           "(tolerance %.1e)\n", kv_dtype_name(dt), gpt_pos_names[c.pos], worst, scale, tol);
    ck_assert_msg(worst <= tol && worst > 0, "%s: error %.3g of the logit scale", kv_dtype_name(dt), worst);
    infer_free(&inf);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// latent kernel == float64 loop

// Every head on its own, in double, over the rows as stored (kvcache_read).
static void latent_reference(float *out, const float *qabs, const KVCache *kv, int l, int B, int Tn, int pos0, int NH) {
    const int W = kv->width, r = kv->kv_lora_rank;
    const double scale = 1.0 / sqrt((double)(kv->head_size + kv->rope_head_dim));
    const int ctx = pos0 + Tn;
    float *rows = malloc_check((size_t)ctx * W * sizeof(float));
    double *p = malloc_check((size_t)ctx * sizeof(double)), *o = malloc_check((size_t)r * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < ctx; j++) kvcache_read(kv, l, b, 0, j, rows + (size_t)j * W, NULL);
        for (int t = 0; t < Tn; t++)
            for (int h = 0; h < NH; h++) {
                const float *q = qabs + (((size_t)b * Tn + t) * NH + h) * W;
                const int n = pos0 + t + 1;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int d = 0; d < W; d++) s += (double)q[d] * rows[(size_t)j * W + d];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int d = 0; d < r; d++) o[d] = 0;
                for (int j = 0; j < n; j++) {
                    sum += (p[j] = exp(p[j] - mx));
                    for (int d = 0; d < r; d++) o[d] += p[j] * rows[(size_t)j * W + d];
                }
                for (int d = 0; d < r; d++) out[(((size_t)b * Tn + t) * NH + h) * r + d] = (float)(o[d] / sum);
            }
    }
    free(rows), free(p), free(o);
}

typedef struct {
    int B, Tn, pos0, threads, NH, HS, r, dR;
    KVDtype dtype;
} LatentCase;

// The tile is 64 positions at these widths (W <= 64), 32 at W 128, 16 at W
// 320: contexts below, at and past tiles, not multiples of them; r not a
// multiple of 16 (20, 12, 40); odd NH (3, 5); decode with the key axis split
// (batch 1 and 3 on 2 threads, batch 1 on 3 and 5); prefill chunks of more
// rows than one work item (Tn x NH > 32).
static const LatentCase latent_cases[] = {
    {1, 1, 0, 2, 4, 8, 20, 0, KV_F32},     {1, 1, 40, 2, 4, 8, 20, 6, KV_F32},   {2, 1, 77, 2, 3, 12, 12, 4, KV_F32},
    {1, 1, 700, 2, 8, 16, 32, 0, KV_F32},  {3, 1, 600, 2, 5, 8, 40, 8, KV_F32},  {1, 1, 1999, 5, 4, 8, 20, 6, KV_F32},
    {1, 1, 1300, 3, 3, 8, 16, 0, KV_F32},  {8, 1, 300, 2, 8, 16, 128, 0, KV_F32}, {2, 1, 500, 2, 2, 16, 300, 20, KV_F32},
    {1, 9, 30, 2, 4, 8, 20, 6, KV_F32},    {2, 33, 0, 2, 3, 12, 12, 4, KV_F32},  {1, 17, 63, 2, 5, 8, 40, 8, KV_F32},
    {3, 20, 5, 2, 8, 16, 128, 32, KV_F32}, {1, 70, 130, 2, 1, 16, 24, 0, KV_F32},
    // 16-bit caches, converted once per tile
    {1, 1, 700, 2, 4, 8, 20, 6, KV_BF16},  {2, 1, 300, 2, 3, 12, 12, 4, KV_F16},  {1, 9, 600, 2, 8, 16, 128, 0, KV_BF16},
    {1, 33, 0, 2, 5, 8, 40, 8, KV_F16},    {3, 1, 1000, 2, 4, 8, 20, 6, KV_F16},
};

// _i: case x passes (1, 2) x kernels (AVX-512, portable)
START_TEST(test_latent_kernel_vs_reference) {
    const LatentCase lc = latent_cases[_i / 4];
    const int passes = _i % 2 + 1, portable = (_i / 2) % 2;
    omp_set_num_threads(lc.threads);
    attention_latent_set_passes(passes);
    const int old_portable = attention_latent_set_portable(portable);
    const int L = 2, l = 1, NH = lc.NH, W = lc.r + lc.dR;
    GPTConfig c = {.vocab_size = 5, .block_size = 4096, .n_layer = L, .n_head = NH, .n_kv_head = NH,
                   .n_embd = NH * lc.HS, .pos = lc.dR ? GPT_POS_ROPE : GPT_POS_LEARNED, .rope_theta = 1e4f,
                   .kv_lora_rank = lc.r, .rope_head_dim = lc.dR, .latent_norm = 1};
    KVCache kv;
    char err[256];
    const int max_T = lc.pos0 + lc.Tn;
    ck_assert_int_eq(kvcache_init(&kv, &c, lc.B, max_T, lc.dtype, err, sizeof err), 0);
    uint64_t rng = 41 + _i / 4;
    const size_t nel = kv.bytes / kv.elem;
    float *fill = malloc_check(nel * sizeof(float));
    fill_normal(fill, nel, 1.0f, &rng);
    kv_from_float(fill, lc.dtype, kv.latent, nel);
    free(fill);
    // the new tokens' rows: latent and rope key from separate arrays, as infer stores them
    const size_t N = (size_t)lc.B * lc.Tn, nq = N * NH * W, nout = N * NH * lc.r;
    float *lat = malloc_check(N * lc.r * 4), *kr = malloc_check(N * (lc.dR + 1) * 4);
    fill_normal(lat, N * lc.r, 1.0f, &rng);
    fill_normal(kr, N * lc.dR, 1.0f, &rng);
    kvcache_store_latent(&kv, l, lat, lc.r, lc.dR ? kr : NULL, lc.dR, lc.B, lc.Tn, lc.pos0);
    float *qabs = malloc_check(nq * 4), *out = malloc_check(nout * 4), *ref = malloc_check(nout * 4);
    fill_normal(qabs, nq, 1.0f, &rng);
    const size_t ns = attention_latent_scratch_floats(&kv, NH, lc.Tn, max_T, omp_get_max_threads());
    float *scratch = malloc_check(ns * 4);
    attention_latent(out, qabs, &kv, l, lc.B, lc.Tn, lc.pos0, NH, scratch, ns);
    latent_reference(ref, qabs, &kv, l, lc.B, lc.Tn, lc.pos0, NH);
    char name[128];
    snprintf(name, sizeof name, "B %d Tn %d pos0 %d NH %d r %d dR %d %s, %d pass(es), %s", lc.B, lc.Tn, lc.pos0, NH,
             lc.r, lc.dR, kv_dtype_name(lc.dtype), passes, portable ? "portable" : "AVX-512 (where compiled)");
    ck_assert_tensor_close(name, out, ref, nout, 2e-5);
    attention_latent_set_passes(1);
    attention_latent_set_portable(old_portable);
    free(lat), free(kr), free(qabs), free(out), free(ref), free(scratch);
    kvcache_free(&kv);
}
END_TEST

// ----------------------------------------------------------------------------
// latent cache: bytes, buffers, read, broadcast

START_TEST(test_latent_cache_bytes) {
    struct { int L, NH, C, NKV, r, dR, B, maxT; KVDtype dt; } cases[] = {
        {6, 8, 512, 8, 128, 0, 8, 4096, KV_F32},  // cfg-d shape, MLA r = 2 HS: 96 MiB
        {6, 8, 512, 8, 128, 32, 1, 4032, KV_BF16}, {2, 4, 32, 4, 20, 6, 3, 17, KV_F16},
        {1, 3, 36, 3, 7, 2, 2, 5, KV_F32},         {3, 4, 64, 2, 0, 0, 3, 33, KV_F32},  // grouped, unchanged
        {2, 8, 128, 1, 0, 0, 2, 100, KV_BF16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        GPTConfig c = {.vocab_size = 5, .block_size = 4096, .n_layer = cases[i].L, .n_head = cases[i].NH,
                       .n_kv_head = cases[i].NKV, .n_embd = cases[i].C, .pos = cases[i].dR ? GPT_POS_ROPE : 0,
                       .rope_theta = 1e4f, .kv_lora_rank = cases[i].r, .rope_head_dim = cases[i].dR};
        const size_t elem = kv_dtype_bytes(cases[i].dt), B = cases[i].B, maxT = cases[i].maxT, L = cases[i].L;
        const size_t want = cases[i].r ? L * B * maxT * (cases[i].r + cases[i].dR) * elem
                                       : 2 * L * B * cases[i].NKV * maxT * (cases[i].C / cases[i].NH) * elem;
        ck_assert_uint_eq(kvcache_bytes(&c, (int)B, (int)maxT, elem), want);
        ck_assert_uint_eq(gpt_kv_bytes_per_token(&c, elem) * B * maxT, want);
        KVCache kv;
        char err[256];
        ck_assert_int_eq(kvcache_init(&kv, &c, (int)B, (int)maxT, cases[i].dt, err, sizeof err), 0);
        ck_assert_uint_eq(kv.bytes, want);
        // the buffers hold exactly that (malloc rounds up by less than a page);
        // the last byte is written, which ASan checks
        if (cases[i].r) {
            ck_assert_ptr_null(kv.k);
            ck_assert_ptr_null(kv.v);
            ck_assert_int_eq(kv.width, cases[i].r + cases[i].dR);
            const size_t got = malloc_usable_size(kv.latent);
            ck_assert_msg(got >= want && got < want + 4096, "latent buffer %zu bytes for %zu", got, want);
            ((char *)kv.latent)[want - 1] = 1;
            // the last row of the last sequence of the last layer ends at the buffer's end
            ck_assert_ptr_eq((char *)kvcache_latent(&kv, (int)L - 1, (int)B - 1) + maxT * kv.width * elem,
                             (char *)kv.latent + want);
        } else {
            ck_assert_ptr_null(kv.latent);
            const size_t gk = malloc_usable_size(kv.k), gv = malloc_usable_size(kv.v);
            ck_assert_msg(gk >= want / 2 && gk < want / 2 + 4096 && gv >= want / 2 && gv < want / 2 + 4096,
                          "K %zu, V %zu bytes for %zu each", gk, gv, want / 2);
        }
        kvcache_free(&kv);
    }
    // the cfg-d MLA cache at batch 8 and 4096 positions: 6 * 8 * 4096 * 128 * 4 bytes = 96 MiB
    ck_assert_uint_eq(cases[0].L * cases[0].B * cases[0].maxT * 128 * 4, 96u << 20);
}
END_TEST

START_TEST(test_latent_cache_broadcast) {
    const int B = 3, T = 13, P = 9, L = 2;
    GPTConfig c = mla_config(1, GPT_POS_ROPE, 1, 0);
    for (int dt = KV_F32; dt <= KV_F16; dt++) {
        KVCache kv;
        char err[256];
        ck_assert_int_eq(kvcache_init(&kv, &c, B, T, (KVDtype)dt, err, sizeof err), 0);
        const int W = kv.width, r = kv.kv_lora_rank, dR = kv.rope_head_dim;
        ck_assert_int_eq(W, 26);
        // every row of every sequence distinct: value = layer, sequence, position, dim
        float *lat = malloc_check((size_t)B * T * r * 4), *kr = malloc_check((size_t)B * T * dR * 4);
        for (int l = 0; l < L; l++) {
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    for (int d = 0; d < r; d++) lat[((size_t)b * T + t) * r + d] = (float)(l * 1000 + b * 100 + t) + d / 32.0f;
                    for (int d = 0; d < dR; d++) kr[((size_t)b * T + t) * dR + d] = -(float)(l * 1000 + b * 100 + t) - d / 8.0f;
                }
            kvcache_store_latent(&kv, l, lat, r, kr, dR, B, T, 0);
        }
        kvcache_broadcast(&kv, P);
        float row[32], row0[32], v[32];
        for (int l = 0; l < L; l++)
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    kvcache_read(&kv, l, b, 0, t, row, v);
                    kvcache_read(&kv, l, t < P ? 0 : b, 0, t, row0, NULL);  // what the row must now hold
                    const float want = (float)(l * 1000 + (t < P ? 0 : b) * 100 + t);
                    ck_assert_mem_eq(row, row0, (size_t)W * sizeof(float));
                    ck_assert_mem_eq(v, row, (size_t)r * sizeof(float));  // the value: the first r numbers
                    ck_assert_msg(fabsf(row[0] - want) <= 0.01f * fabsf(want) + 1e-6f && fabsf(row[r] + want) <= 0.01f * fabsf(want) + 1e-6f,
                                  "%s layer %d seq %d pos %d: %g, %g, want %g, %g", kv_dtype_name(kv.dtype), l, b, t,
                                  row[0], row[r], want, -want);
                }
        free(lat), free(kr);
        kvcache_free(&kv);
    }
}
END_TEST

// ----------------------------------------------------------------------------
// weights in bf16, f16 and q8 (model/weights.h)

static const WeightDtype low_dtypes[] = {W_BF16, W_F16, W_Q8};
// every dtype a matrix converts to: f32 too (its rows grouped)
static const WeightDtype conv_dtypes[] = {W_F32, W_BF16, W_F16, W_Q8};

// N input rows, rows x cols weights: below and above a vector, a q8 block
// (32), 512 columns and one more block, a q8 group of 16 rows, the 8 input
// rows of a pass, the rows of a block
static const int wmat_shapes[][3] = {{1, 1, 1},   {1, 17, 31},  {2, 16, 32}, {3, 5, 33},   {1, 33, 63},
                                     {4, 9, 64},  {5, 20, 65},  {8, 7, 100}, {9, 40, 127}, {1, 64, 512},
                                     {8, 48, 512}, {17, 3, 96}, {6, 37, 2048}, {3, 20, 544}, {2, 9, 1000}};

// x[k] as the product sees it: rounded to bf16, or q8 of its block of 32
// (the kernels' definition, written again here from weights.h; *dx the
// block's scale), or as is (f16)
static float act_as_seen(WeightDtype dt, const float *x, int cols, int k, float *dx) {
    *dx = 0.0f;
    if (dt == W_BF16) {
        uint16_t h;
        float v;
        kv_from_float(&x[k], KV_BF16, &h, 1);
        kv_to_float(&h, KV_BF16, &v, 1);
        return v;
    }
    if (dt != W_Q8) return x[k];
    const int b0 = k / 32 * 32;
    float amax = 0.0f;
    for (int i = b0; i < b0 + 32 && i < cols; i++) amax = fmaxf(amax, fabsf(x[i]));
    *dx = amax / 127.0f;
    return amax > 0.0f ? *dx * nearbyintf(x[k] * (127.0f / amax)) : 0.0f;
}

// _i: dtype x shape. out = x W^T + b against float64:
//  (a) of the converted weights and the activations as the kernel rounds
//      them: within the float32 summation bound cols * 2^-24 * sum |w x|,
//      for the vector and the portable kernels, and the two within twice it;
//  (b) of the float32 weights and activations: within the rounding bound of
//      the dtype, per term |w x - w' x'| <= |w - w'| |x| + |w'| |x - x'|:
//      bf16 (2^-9 + 2^-9 + 2^-18) |w x|, f16 2^-11 |w x| (normal range),
//      q8 d_w/2 |x| + |w| d_x/2 + d_w d_x/4 with d the block's scales.
START_TEST(test_wmat_kernels_vs_float64) {
    const int nshapes = sizeof wmat_shapes / sizeof wmat_shapes[0];
    const WeightDtype dt = conv_dtypes[_i / nshapes];
    const int N = wmat_shapes[_i % nshapes][0], rows = wmat_shapes[_i % nshapes][1], cols = wmat_shapes[_i % nshapes][2];
    uint64_t rng = 1000 + _i;
    float *w = malloc_check((size_t)rows * cols * sizeof(float)), *x = malloc_check((size_t)N * cols * sizeof(float));
    float *b = malloc_check((size_t)rows * sizeof(float)), *row = malloc_check((size_t)cols * sizeof(float));
    fill_normal(w, (size_t)rows * cols, 1.0f, &rng);
    for (int r = 0; r < rows; r++)  // rows of different magnitudes, and a row of zeros
        for (int k = 0; k < cols; k++) w[(size_t)r * cols + k] *= r == 2 ? 0.0f : ldexpf(1.0f, r % 7 - 3);
    fill_normal(x, (size_t)N * cols, 1.0f, &rng);
    fill_normal(b, (size_t)rows, 1.0f, &rng);
    void *mem = aligned_alloc(64, wmat_bytes(dt, (size_t)rows, cols));
    WMat wm;
    wmat_init_from_float(&wm, dt, (size_t)rows, cols, mem, w);
    ck_assert_int_eq(wm.ld, dt == W_Q8 ? (cols + 31) / 32 * 32 : dt == W_BF16 ? (cols + 1) / 2 * 2 : cols);  // q8: whole blocks; bf16: pairs
    ck_assert_int_eq(wm.grouped, 1);
    void *scratch = aligned_alloc(64, wmat_scratch_bytes(N, cols));
    float *got[2];
    for (int p = 0; p < 2; p++) {  // 0: the vector kernel where compiled in, 1: portable
        got[p] = malloc_check((size_t)N * rows * sizeof(float));
        const int old = wmat_use_portable(p);
        if (p == 0 && _i % nshapes == 0) printf("%s weights: kernel %s\n", weight_dtype_name(dt), wmat_kernel_name(dt));
        wmat_matmul(got[p], x, &wm, b, N, scratch);
        wmat_use_portable(old);
    }
    // other thread counts split the rows elsewhere: the same numbers, exactly
    float *again = malloc_check((size_t)N * rows * sizeof(float));
    const int threads = omp_get_max_threads();
    for (int T = 1; T <= 3; T += 2)
        for (int p = 0; p < 2; p++) {
            omp_set_num_threads(T);
            const int old = wmat_use_portable(p);
            wmat_matmul(again, x, &wm, b, N, scratch);
            wmat_use_portable(old);
            omp_set_num_threads(threads);
            ck_assert_msg(!memcmp(again, got[p], (size_t)N * rows * sizeof(float)), "%s %s: %d threads differ from %d",
                          weight_dtype_name(dt), p ? "portable" : "vector", T, threads);
        }
    free(again);
    // a view of rows from the middle (q8: from mid-group, as a layer's rows
    // of a whole tensor may start), with its part of the bias: its products
    // are those rows of the whole one's, exactly
    const int r0 = rows > 1 ? 1 + rows / 3 : 0, nv = rows - r0;
    const WMat view = wmat_rows(&wm, (size_t)r0, (size_t)nv);
    float *part = malloc_check((size_t)N * nv * sizeof(float));
    for (int p = 0; p < 2; p++) {
        const int old = wmat_use_portable(p);
        wmat_matmul(part, x, &view, b + r0, N, scratch);
        wmat_use_portable(old);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < nv; o++)
                ck_assert_msg(part[(size_t)n * nv + o] == got[p][(size_t)n * rows + r0 + o],
                              "%s %s view of rows [%d, %d): [%d, %d] %.9g, whole %.9g", weight_dtype_name(dt),
                              p ? "portable" : "vector", r0, rows, n, o, (double)part[(size_t)n * nv + o],
                              (double)got[p][(size_t)n * rows + r0 + o]);
    }
    free(part);
    double worst_a = 0, worst_b = 0;
    for (int o = 0; o < rows; o++) {
        wmat_row_to_float(&wm, (size_t)o, row);
        const float *wr = w + (size_t)o * cols;
        float dw = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * cols;
            double seen = b[o], exact = b[o], mag = 0, qbound = 0;
            for (int k = 0; k < cols; k++) {
                float dx;
                const float xs = act_as_seen(dt, xr, cols, k, &dx);
                if (dt == W_Q8 && k % 32 == 0) {  // the block's weight scale
                    float amax = 0.0f;
                    for (int i = k; i < k + 32 && i < cols; i++) amax = fmaxf(amax, fabsf(wr[i]));
                    dw = amax / 127.0f;
                }
                seen += (double)row[k] * xs, exact += (double)wr[k] * xr[k];
                mag += fabs((double)row[k] * xs);
                const double wx = fabs((double)wr[k] * xr[k]);
                qbound += dt == W_F32    ? 0.0
                          : dt == W_BF16 ? (0x1p-8 + 0x1p-18) * wx
                          : dt == W_F16  ? 0x1p-11 * wx
                                         : dw / 2.0 * fabs(xr[k]) + fabs(wr[k]) * dx / 2.0 + (double)dw * dx / 4.0;
            }
            const double sum_tol = cols * 0x1p-24 * mag + 1e-6 * fabs((double)b[o]) + 1e-30;
            for (int p = 0; p < 2; p++) {
                const double e = fabs(got[p][(size_t)n * rows + o] - seen);
                ck_assert_msg(e <= sum_tol, "%s %s (%d, %d, %d) [%d, %d]: %.9g vs float64 %.9g, error %.3g > %.3g",
                              weight_dtype_name(dt), p ? "portable" : "vector", N, rows, cols, n, o,
                              (double)got[p][(size_t)n * rows + o], seen, e, sum_tol);
                if (e / sum_tol > worst_a) worst_a = e / sum_tol;
            }
            ck_assert_msg(fabs((double)got[0][(size_t)n * rows + o] - got[1][(size_t)n * rows + o]) <= 2 * sum_tol,
                          "vector and portable differ");
            const double e = fabs(got[0][(size_t)n * rows + o] - exact), qtol = qbound + sum_tol;
            ck_assert_msg(e <= qtol, "%s (%d, %d, %d) [%d, %d]: %.9g vs float32 weights %.9g, error %.3g > bound %.3g",
                          weight_dtype_name(dt), N, rows, cols, n, o, (double)got[0][(size_t)n * rows + o], exact, e,
                          qtol);
            if (e / qtol > worst_b) worst_b = e / qtol;
        }
    }
    if (cols >= 512)
        printf("%s (N %d, %d x %d): worst error / bound: %.3f of the summation bound, %.3f of the rounding bound\n",
               weight_dtype_name(dt), N, rows, cols, worst_a, worst_b);
    free(got[0]), free(got[1]), free(scratch), free(mem), free(w), free(x), free(b), free(row);
}
END_TEST

// The stored forms: q8 rows padded with zeros to whole blocks (q + 128 =
// 128) and to a whole group of 16 rows (scale 0), a block of zeros with
// scale 0, exact values kept (small integers, the block's max), bf16
// rounding to nearest even; the layouts' byte counts; views of rows.
START_TEST(test_wmat_storage) {
    float src[3 * 40] = {[0] = 127.0f, [1] = -3.0f, [2] = 1.0f, [33] = 0.5f, [40] = 1.0f, [41] = 1.0f + 0x1p-8f};
    for (int k = 0; k < 40; k++) src[80 + k] = 1.0f;  // row 2: 40 ones, 24 of padding
    void *mem = aligned_alloc(64, wmat_bytes(W_Q8, 3, 40));
    WMat q;
    wmat_init_from_float(&q, W_Q8, 3, 40, mem, src);
    ck_assert_int_eq(q.ld, 64);
    ck_assert_uint_eq(wmat_bytes(W_Q8, 3, 40), 16 * 64 + 16 * 2 * 4);  // a group: 16 rows x 2 blocks, 2 x 16 scales
    ck_assert_uint_eq(wmat_row_bytes(W_Q8, 40), 64 + 8);
    const uint8_t *u = q.data;
    ck_assert_int_eq(u[0], 255);  // row 0, column 0, first in the group: 127 / (127 / 127) + 128
    ck_assert_int_eq(u[1], 125);  // column 1: -3 + 128
    ck_assert_int_eq(u[4 * 2], 255);  // row 2's first 4 bytes follow row 0's and row 1's
    ck_assert_float_eq(q.scale[0], 1.0f);            // block 0 of row 0
    ck_assert_float_eq(q.scale[16], 0.5f / 127.0f);  // block 1 of row 0: the 16 rows' scales of block 0 come first
    ck_assert_float_eq(q.scale[16 + 1], 0.0f);       // row 1, block 1: zeros
    int ones = 0, pad = 0, empty = 0;
    for (int k = 0; k < 16 * 64; k++) {  // a byte of row i sits at 4 i + (k % 4) in every 64
        const int row = k % 64 / 4;
        ones += row == 2 && u[k] == 255, pad += row == 2 && u[k] == 128, empty += row >= 3 && u[k] == 128;
    }
    ck_assert_int_eq(ones, 40);
    ck_assert_int_eq(pad, 24);
    ck_assert_int_eq(empty, 13 * 64);  // the 13 padding rows: zeros
    for (int i = 3 * 2; i < 16 * 2; i++) ck_assert_float_eq(q.scale[i % 2 * 16 + i / 2], 0.0f);
    float back[40];
    wmat_row_to_float(&q, 0, back);
    ck_assert_float_eq(back[0], 127.0f);
    ck_assert_float_eq(back[1], -3.0f);
    ck_assert_float_eq(back[33], 0.5f);
    for (int k = 0; k < 40; k++) ck_assert_float_eq(back[k], src[k]);  // every value kept: 1 and 0.5 are multiples of d
    WMat r1 = wmat_rows(&q, 1, 2);  // a view from mid-group starts at the group, one lane in
    ck_assert_ptr_eq(r1.data, q.data);
    ck_assert_ptr_eq(r1.scale, q.scale);
    ck_assert_int_eq(r1.lane0, 1);
    wmat_row_to_float(&r1, 1, back);
    for (int k = 0; k < 40; k++) ck_assert_float_eq(back[k], 1.0f);
    free(mem);
    WMat h;
    mem = aligned_alloc(64, wmat_bytes(W_BF16, 3, 40));
    wmat_init_from_float(&h, W_BF16, 3, 40, mem, src);
    wmat_row_to_float(&h, 1, back);
    ck_assert_float_eq(back[0], 1.0f);
    ck_assert_float_eq(back[1], 1.0f);  // 1 + 2^-8 is halfway: to even
    ck_assert_uint_eq(wmat_bytes(W_BF16, 3, 40), 16 * 40 * 2);  // a group of 16 rows
    const uint16_t *hb = h.data;  // pairs of columns, row i's at 2 i: (row 0 | row 1 | ...)
    ck_assert_uint_eq(hb[0], 0x42fe);                      // row 0, column 0: 127
    ck_assert_uint_eq(hb[1], 0xc040);                      // row 0, column 1: -3
    ck_assert_uint_eq(hb[2], 0x3f80);                      // row 1, column 0: 1
    ck_assert_uint_eq(hb[2 * 16 + 2 * 2 + 1], 0x3f80);     // row 2, column 3: 1 (the second pair)
    for (int i = 3 * 2; i < 16 * 2; i++) ck_assert_uint_eq(hb[i], 0);  // padding rows
    WMat h1 = wmat_rows(&h, 2, 1);
    ck_assert_ptr_eq(h1.data, h.data);
    ck_assert_int_eq(h1.lane0, 2);
    wmat_row_to_float(&h1, 0, back);
    for (int k = 0; k < 40; k++) ck_assert_float_eq(back[k], 1.0f);
    free(mem);
    mem = aligned_alloc(64, wmat_bytes(W_F16, 3, 40));  // f16: a column of 16 rows at a time
    wmat_init_from_float(&h, W_F16, 3, 40, mem, src);
    hb = h.data;
    ck_assert_uint_eq(hb[0], 0x57f0);   // row 0, column 0: 127
    ck_assert_uint_eq(hb[16], 0xc200);  // row 0, column 1: -3
    ck_assert_uint_eq(hb[1], 0x3c00);   // row 1, column 0: 1
    ck_assert_int_eq(h.ld, 40);
    free(mem);
    mem = aligned_alloc(64, wmat_bytes(W_F32, 3, 40));  // f32 converted: grouped like f16
    ck_assert_uint_eq(wmat_bytes(W_F32, 3, 40), 16 * 40 * 4);
    wmat_init_from_float(&h, W_F32, 3, 40, mem, src);
    const float *hf = h.data;
    ck_assert_float_eq(hf[0], 127.0f);
    ck_assert_float_eq(hf[16], -3.0f);
    ck_assert_float_eq(hf[16 + 1], 1.0f + 0x1p-8f);  // row 1, column 1, exact
    wmat_row_to_float(&h, 1, back);
    for (int k = 0; k < 40; k++) ck_assert_float_eq(back[k], src[40 + k]);
    free(mem);
    const WMat v = wmat_view(src, 3, 40);  // a view: row-major, as trained
    ck_assert_int_eq(v.grouped, 0);
    ck_assert_ptr_eq(wmat_rows(&v, 2, 1).data, src + 80);
    WeightDtype d;
    ck_assert_int_eq(weight_dtype_parse("q8", &d), 0);
    ck_assert_int_eq(d, W_Q8);
    ck_assert_int_eq(weight_dtype_parse("int8", &d), -1);
}
END_TEST

// The checkpoint's form of a converted matrix (wmat_to_raw): bf16 and f16
// row-major little-endian u16, q8 its scales (rows x blocks) then its q
// (rows x cols), no padding; read back (wmat_init_from_raw) it gives the
// very bytes wmat_init_from_float laid out, padding included. A matrix of
// 19 x 70 (rows past a group of 16, a last q8 block of 6 columns) from
// numbers with known forms, and the checks that refuse
// an infinite or NaN 16-bit number and a negative or NaN q8 scale.
START_TEST(test_wmat_raw_form) {
    const size_t R = 19;
    const int C = 70;
    float *src = malloc_check(R * C * sizeof(float));
    uint64_t rng = 9;
    fill_normal(src, R * C, 1.0f, &rng);
    src[0] = 127.0f, src[1] = -3.0f, src[C] = 1.0f;  // row 0: 127, -3; row 1: 1
    for (int k = 64; k < C; k++) src[18 * C + k] = 0.5f;  // row 18's last block: six halves
    for (int d = W_BF16; d <= W_Q8; d++) {
        const WeightDtype dt = (WeightDtype)d;
        const size_t bytes = wmat_bytes(dt, R, C), n = wmat_raw_bytes(dt, R, C);
        ck_assert_uint_eq(n, dt == W_Q8 ? R * 3 * 4 + R * C : R * C * 2);
        uint8_t *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes), *raw = malloc_check(n);
        memset(a, 0xAB, bytes), memset(b, 0xCD, bytes);  // only what both write is compared: all of it
        WMat wa, wb;
        wmat_init_from_float(&wa, dt, R, C, a, src);
        wmat_to_raw(&wa, raw);
        char err[256] = "";
        ck_assert_int_eq(wmat_raw_check(dt, R, C, raw, err, sizeof err), 0);
        if (dt == W_Q8) {
            ck_assert_float_eq(get_f32le(raw), 1.0f);                           // row 0, block 0: 127 / 127
            ck_assert_float_eq(get_f32le(raw + (18 * 3 + 2) * 4), 0.5f / 127);  // row 18, block 2
            const int8_t *q = (const int8_t *)(raw + R * 3 * 4);
            ck_assert_int_eq(q[0], 127);
            ck_assert_int_eq(q[1], -3);
            ck_assert_int_eq(q[18 * C + 69], 127);
        } else {
            ck_assert_uint_eq(get_u16le(raw), dt == W_BF16 ? 0x42fe : 0x57f0);      // 127
            ck_assert_uint_eq(get_u16le(raw + 2), dt == W_BF16 ? 0xc040 : 0xc200);  // -3
            ck_assert_uint_eq(get_u16le(raw + 2 * C), dt == W_BF16 ? 0x3f80 : 0x3c00);  // row 1: 1
        }
        wmat_init_from_raw(&wb, dt, R, C, b, raw);
        ck_assert_int_eq(wb.ld, wa.ld);
        // the data and (q8) the scales as laid out, padding rows and columns included
        const size_t stored = 32, data = stored * (size_t)wa.ld * (dt == W_Q8 ? 1 : 2);
        ck_assert_mem_eq(a, b, data);
        if (dt == W_Q8) ck_assert_mem_eq(wa.scale, wb.scale, stored * 3 * sizeof(float));
        // refusals
        if (dt == W_Q8) {
            put_f32le(raw + 7 * 4, -1.0f);
            ck_assert_int_eq(wmat_raw_check(dt, R, C, raw, err, sizeof err), -1);
            ck_assert_str_eq(err, "row 2, block 1 has scale -1 (want finite and >= 0)");
            put_f32le(raw + 7 * 4, NAN);
            ck_assert_int_eq(wmat_raw_check(dt, R, C, raw, err, sizeof err), -1);
        } else {
            put_u16le(raw + 2 * (C + 5), dt == W_BF16 ? 0x7f80 : 0x7c00);  // +inf
            ck_assert_int_eq(wmat_raw_check(dt, R, C, raw, err, sizeof err), -1);
            ck_assert_msg(strstr(err, "row 1, column 5 is not finite"), "%s", err);
            put_u16le(raw + 2 * (C + 5), dt == W_BF16 ? 0x7f7f : 0x7bff);  // the largest finite
            ck_assert_int_eq(wmat_raw_check(dt, R, C, raw, err, sizeof err), 0);
        }
        free(a), free(b), free(raw);
    }
    free(src);
}
END_TEST

// _i: dtype (f32, bf16, f16, q8) x attention (grouped rope GQA-2, MLA
// learned). Decode logits with converted weights against the unconverted
// float32 model's, within the stated tolerances (logits of random weights
// of std 0.2; f32's grouped rows change only the order of the sums);
// decode token by token equals chunked prefill of the same converted
// model; the converted model serves inference only, and saved and loaded
// (bf16, f16, q8) decodes the same logits.
START_TEST(test_decode_weight_dtypes) {
    const WeightDtype dt = conv_dtypes[_i % 4];
    const double tol = dt == W_F32 ? 1e-4 : dt == W_BF16 ? 0.15 : dt == W_F16 ? 0.02 : 0.3;
    const int B = 2, T = 20, V = 23, mla = _i >= 4;
    GPTConfig c = {.vocab_size = V, .block_size = 32, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 64,
                   .bias = 1, .pos = mla ? GPT_POS_LEARNED : GPT_POS_ROPE, .rope_theta = 100.0f};
    if (mla) c.n_kv_head = 4, c.kv_lora_rank = 24, c.latent_norm = 1;
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    randomize(&m, 77);
    int tok[2 * 20];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 5 + 1) % V;
    const size_t n = (size_t)B * T * V;
    float *ref = malloc_check(n * sizeof(float)), *got = malloc_check(n * sizeof(float));
    float *chunked = malloc_check(n * sizeof(float));
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 8, KV_F32), 0);
    decode_logits(&inf, tok, B, T, 1, ref);
    infer_free(&inf);
    const float *ln1w = m.params.ln1w;
    ck_assert_int_eq(gpt_set_weight_dtype(&m, dt), 0);
    ck_assert_int_eq(m.weight_dtype, dt);
    ck_assert_ptr_null(m.params.fcw);
    ck_assert_ptr_null(m.params.wte);
    ck_assert_ptr_nonnull(m.params.ln1w);
    ck_assert_ptr_ne(m.params.ln1w, ln1w);  // the rest moved to a smaller arena
    if (mla) ck_assert_ptr_nonnull(m.params.ukvw);  // read by the absorbed form in float32
    ck_assert_int_eq(gpt_set_weight_dtype(&m, dt == W_Q8 ? W_BF16 : W_Q8), -1);
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, B, T), -1);
    ck_assert_ptr_nonnull(strstr(m.error, "inference only"));
    char err[256], path[64];
    snprintf(path, sizeof path, "/tmp/gqa_test_conv_%d.bin", (int)getpid());
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 8, KV_F32), 0);
    decode_logits(&inf, tok, B, T, 1, got);
    infer_free(&inf);
    if (dt == W_F32) {  // float32 is saved as the model it was converted from, not regrouped
        ck_assert_int_eq(checkpoint_save(path, &m, "", 0, NULL, err, sizeof err), -1);
        ck_assert_int_eq(access(path, F_OK), -1);
    } else {  // saved (version 4) and loaded, the converted model decodes the same logits, bit for bit
        ck_assert_int_eq(checkpoint_save(path, &m, "", 0, NULL, err, sizeof err), 0);
        GPT m2;
        uint8_t *vb;
        size_t vl;
        ck_assert_msg(checkpoint_load(path, &m2, &vb, &vl, NULL, NULL, err, sizeof err) == 0, "%s", err);
        unlink(path);
        ck_assert_int_eq(m2.weight_dtype, dt);
        float *again = malloc_check(n * sizeof(float));
        ck_assert_int_eq(infer_init(&inf, &m2, B, T, 8, KV_F32), 0);
        decode_logits(&inf, tok, B, T, 1, again);
        infer_free(&inf);
        ck_assert_mem_eq(again, got, n * sizeof(float));
        free(again), free(vb);
        gpt_free(&m2);
    }
    ck_assert_int_eq(infer_init(&inf, &m, B, T, 16, KV_F32), 0);
    chunked_logits(&inf, tok, B, T, 16, chunked);  // 32 rows a call: the products' multi-row passes
    infer_free(&inf);
    const Diff d = diff_tensors(got, ref, n);
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    printf("%s weights, %s: decode logits (max |logit| %.2f) max abs error vs float32 %.3g (tolerance %.2g), "
           "normalised %.3g\n", weight_dtype_name(dt), mla ? "MLA" : "GQA-2", scale, d.max_abs, tol, d.norm_err);
    ck_assert_msg(d.max_abs <= tol && (d.max_abs > 0 || dt == W_F32), "max abs error %.3g", d.max_abs);
    ck_assert_tensor_close("chunked prefill vs decode", chunked, got, n, 1e-4);
    free(ref), free(got), free(chunked);
    gpt_free(&m);
}
END_TEST

// A weight beyond f16's range (65504) is refused for f16, naming it, and
// the model stays float32 and usable; bf16 (float32's range) takes it.
START_TEST(test_weight_dtype_f16_range) {
    GPTConfig c = {.vocab_size = 11, .block_size = 8, .n_layer = 1, .n_head = 2, .n_kv_head = 1, .n_embd = 8, .bias = 1};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    m.params.fcw[5] = -1e5f;
    ck_assert_int_eq(gpt_set_weight_dtype(&m, W_F16), -1);
    ck_assert_ptr_nonnull(strstr(m.error, "fcw[5] = -100000 is beyond f16's range"));
    ck_assert_int_eq(m.weight_dtype, W_F32);
    const int tok[4] = {1, 2, 3, 4};
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 1, 4), 0);
    ck_assert_int_eq(gpt_set_weight_dtype(&m, W_BF16), 0);
    gpt_free(&m);
}
END_TEST

// The grouped kernels' prefetch (wmat_prefetch_ahead): a thread reads
// blocks of G groups side by side, each group's bytes in order, then its
// next block. The prefetch at each load must point at the byte the same
// group reads dist bytes later (at most a group later), across the end of
// the block into the next block, not into the next group in memory.
START_TEST(test_wmat_prefetch_read_order) {
    const size_t gsizes[] = {512, 8192, 16384, 65536}, dists[] = {64, 4096, 16384, (size_t)1 << 20};
    const int Gs[] = {1, 2, 3, 5, 8};
    for (int a = 0; a < 4; a++)
        for (int g = 0; g < 5; g++)
            for (int e = 0; e < 4; e++) {
                const size_t gb = gsizes[a], dist = dists[e], d = dist < gb ? dist : gb;
                const int G = Gs[g];
                for (int k = 0; k < G; k++)
                    for (size_t pos = 0; pos < 2 * gb; pos += 64) {  // group k's bytes in blocks 0 and 1
                        const size_t off = pos % gb, at = pos / gb * G * gb + k * gb + off;
                        const size_t later = pos + d, want = later / gb * G * gb + k * gb + later % gb;
                        ck_assert_uint_eq(at + wmat_prefetch_ahead(off, gb, G, dist), want);
                    }
            }
}
END_TEST

// Weight bytes: f32 is 4 bytes a parameter (of wpe one row); bf16 and f16
// halve the matrices; q8 is 1 byte a weight and 4 a block of 32, rows
// padded to 64; LayerNorms and biases stay float32.
START_TEST(test_weight_bytes) {
    GPTConfig c = {.vocab_size = 65, .block_size = 64, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 64,
                   .bias = 1};
    ck_assert_double_eq(gpt_weight_bytes(&c, W_F32, 1),
                        4.0 * (double)(gpt_num_parameters(&c) - (size_t)(c.block_size - 1) * c.n_embd));
    ck_assert_double_eq(gpt_weight_bytes(&c, W_F32, 0), 4.0 * (double)gpt_num_parameters(&c));
    const double L = 2, C = 64, QKV = (4 + 2 * 2) * 16, mats = L * (QKV * C + C * C + 4 * C * C + C * 4 * C);
    const double small = (double)gpt_num_parameters(&c) - mats - 65 * C - 64 * C;  // LayerNorms and biases
    ck_assert_double_eq(gpt_weight_bytes(&c, W_BF16, 0), 2 * (mats + 65 * C + 64 * C) + 4 * small);
    ck_assert_double_eq(gpt_weight_bytes(&c, W_F16, 1), 2 * (mats + 65 * C + C) + 4 * small);
    // q8: a row of 64 is 64 + 2 x 4 bytes, a row of 256 is 256 + 8 x 4
    const double q8 = L * ((QKV + C + 4 * C) * 72 + C * 288) + (65 + 64) * 72 + 4 * small;
    ck_assert_double_eq(gpt_weight_bytes(&c, W_Q8, 0), q8);
}
END_TEST

// Mean cross-entropy (float64 sums) of `nwin` windows of T tokens of val,
// window w starting at w * stride, through the cached forward with every
// position's logits: the validation loss as inference computes it.
static double infer_val_loss(GPT *m, const int *val, int nwin, int T, int stride) {
    const int V = m->config.vocab_size, B = 8;
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, m, B, T, T, KV_F32), 0);
    int *tok = malloc_check((size_t)B * T * sizeof(int));
    double sum = 0;
    for (int w0 = 0; w0 < nwin; w0 += B) {
        for (int b = 0; b < B; b++) memcpy(tok + b * T, val + (size_t)(w0 + b) * stride, T * sizeof(int));
        ck_assert_int_eq(infer_forward(&inf, tok, T, 0, 1), 0);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T - 1; t++) {
                const float *z = inf.logits + ((size_t)b * T + t) * V;
                double mx = z[0], se = 0;
                for (int v = 1; v < V; v++) mx = fmax(mx, z[v]);
                for (int v = 0; v < V; v++) se += exp(z[v] - mx);
                sum += mx + log(se) - z[val[(size_t)(w0 + b) * stride + t + 1]];
            }
    }
    infer_free(&inf);
    free(tok);
    return sum / ((double)nwin * (T - 1));
}

// A model trained for the test: 2 layers, 4 query heads and 2 KV heads of
// 16, on the first 90% of Tiny Shakespeare (1000 AdamW steps of 16 x 64
// tokens); the rest is its validation text. On the validation loss of the
// cached forward, bf16 and f16 weights stay within 0.5% of float32 and q8
// within 1% (the bounds); and teacher-forced on float32's greedy
// text from "ROMEO:", each dtype's argmax agrees with float32's at >= 95%
// of 200 positions (where they differ, float32's own margin between its
// top two logits is printed).
START_TEST(test_trained_model_weight_dtypes) {
    uint8_t *text;
    size_t len;
    char err[256];
    ck_assert_int_eq(read_file("data/shakespeare_char/input.txt", SIZE_MAX, &text, &len, err, sizeof err), 0);
    Tokenizer tz;
    ck_assert_int_eq(tokenizer_build(&tz, (const char *)text, len, err, sizeof err), 0);
    int *ids = malloc_check(len * sizeof(int));
    size_t n;
    ck_assert_int_eq(tokenizer_encode(&tz, (const char *)text, len, ids, &n, err, sizeof err), 0);
    free(text);
    const size_t ntrain = n * 9 / 10;
    const int T = 64, B = 16, V = tz.vocab_size;
    GPTConfig c = {.vocab_size = V, .block_size = T, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 64,
                   .bias = 1};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 7), 0);
    AdamW opt;
    adamw_init(&opt, m.num_parameters, 0.9f, 0.99f, 1e-8f, 0.1f);
    int *x = malloc_check((size_t)B * T * sizeof(int)), *y = malloc_check((size_t)B * T * sizeof(int));
    uint64_t rng = 11;
    for (int step = 0; step < 1000; step++) {
        for (int b = 0; b < B; b++) {
            const size_t s = rng_u64(&rng) % (ntrain - T - 1);
            memcpy(x + b * T, ids + s, T * sizeof(int));
            memcpy(y + b * T, ids + s + 1, T * sizeof(int));
        }
        ck_assert_int_eq(gpt_forward_backward(&m, x, y, B, T, gpt_auto_shards(B)), 0);
        adamw_step(&opt, &m, 3e-3f);
    }
    const int *val = ids + ntrain, nwin = 64, stride = (int)((n - ntrain - T) / nwin);
    const double ref = infer_val_loss(&m, val, nwin, T, stride);
    // float32 greedy text from "ROMEO:" (teacher forcing below replays it)
    int seq[6 + 200];
    const char *prompt = "ROMEO:";
    size_t P;
    ck_assert_int_eq(tokenizer_encode(&tz, prompt, strlen(prompt), seq, &P, err, sizeof err), 0);
    const int steps = 200, total = (int)P + steps;
    float *ref_logits = malloc_check((size_t)total * V * sizeof(float)), *got = malloc_check((size_t)V * sizeof(float));
    Inference inf;
    ck_assert_int_eq(infer_init(&inf, &m, 1, T, T, KV_F32), 0);
    for (int t = 0; t < total - 1; t++) {  // one token at a time; past T, the context restarts (as sample crops)
        ck_assert_int_eq(infer_forward(&inf, &seq[t], 1, t % T, 0), 0);
        memcpy(ref_logits + (size_t)t * V, inf.logits, (size_t)V * sizeof(float));
        if (t + 1 >= (int)P) {
            int best = 0;
            for (int v = 1; v < V; v++) best = inf.logits[v] > inf.logits[best] ? v : best;
            seq[t + 1] = best;
        }
    }
    infer_free(&inf);
    printf("trained test model (2 x 4 heads x 16, 1000 steps): float32 val loss %.4f\n", ref);
    ck_assert(ref < 2.3);  // it learned something (uniform: log 65 = 4.17)
    const double bound[] = {[W_BF16] = 0.005, [W_F16] = 0.005, [W_Q8] = 0.01};
    for (int d = 0; d < 3; d++) {
        const WeightDtype dt = low_dtypes[d];
        GPT q;
        ck_assert_int_eq(gpt_init(&q, &c, 7), 0);
        memcpy(q.params_memory, m.params_memory, m.num_parameters * sizeof(float));
        ck_assert_int_eq(gpt_set_weight_dtype(&q, dt), 0);
        const double loss = infer_val_loss(&q, val, nwin, T, stride), rel = (loss - ref) / ref;
        ck_assert_int_eq(infer_init(&inf, &q, 1, T, T, KV_F32), 0);
        int agree = 0;
        for (int t = 0; t < total - 1; t++) {
            ck_assert_int_eq(infer_forward(&inf, &seq[t], 1, t % T, 0), 0);
            if (t < (int)P - 1) continue;  // the prompt
            memcpy(got, inf.logits, (size_t)V * sizeof(float));
            const float *r = ref_logits + (size_t)t * V;
            int a = 0, b2 = -1;  // got's argmax; float32's runner-up
            for (int v = 1; v < V; v++) a = got[v] > got[a] ? v : a;
            for (int v = 0; v < V; v++)
                if (v != seq[t + 1] && (b2 < 0 || r[v] > r[b2])) b2 = v;
            if (a == seq[t + 1]) agree++;
            else printf("  %s: position %d: argmax differs where float32's top two logits are %.4f apart\n",
                        weight_dtype_name(dt), t + 1, (double)(r[seq[t + 1]] - r[b2]));
        }
        infer_free(&inf);
        printf("%s weights: val loss %.4f (%+.3f%% of float32's; bound %.1f%%), greedy argmax agrees at %d of %d "
               "positions\n", weight_dtype_name(dt), loss, 100 * rel, 100 * bound[dt], agree, steps);
        ck_assert_msg(fabs(rel) <= bound[dt], "%s: val loss %.5f vs float32 %.5f", weight_dtype_name(dt), loss, ref);
        ck_assert_int_ge(agree, steps * 95 / 100);
        gpt_free(&q);
    }
    free(ref_logits), free(got), free(x), free(y), free(ids);
    adamw_free(&opt);
    tokenizer_free(&tz);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// samplers

START_TEST(test_sampler_candidate_sets) {
    // probabilities 0.5, 0.2, 0.15, 0.1, 0.05 as logits (ids shuffled)
    const float probs[5] = {0.1f, 0.5f, 0.05f, 0.2f, 0.15f};  // by id
    float logits[5];
    for (int i = 0; i < 5; i++) logits[i] = logf(probs[i]) + 3.0f;  // shift-invariant
    struct {
        int top_k;
        float top_p;
        int n;
        int ids[5];
    } cases[] = {
        {0, 1.0f, 5, {1, 3, 4, 0, 2}},  // everything, most likely first
        {2, 1.0f, 2, {1, 3}},           // top-k 2
        {0, 0.5f, 1, {1}},              // 0.5 reaches 0.5
        {0, 0.6f, 2, {1, 3}},           // 0.5 < 0.6 <= 0.7
        {0, 0.86f, 4, {1, 3, 4, 0}},    // 0.85 < 0.86 <= 0.95
        {3, 0.9f, 3, {1, 3, 4}},        // top-k first: its mass 0.85 never reaches 0.9
        {1, 1.0f, 1, {1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Sampler s;
        sampler_init(&s, 5, 1.0f, cases[c].top_k, cases[c].top_p, 1);
        int ids[5];
        float p[5];
        int n = sampler_candidates(&s, logits, ids, p);
        ck_assert_msg(n == cases[c].n, "case %zu: %d candidates, want %d", c, n, cases[c].n);
        float kept = 0;
        for (int i = 0; i < n; i++) kept += probs[cases[c].ids[i]];
        for (int i = 0; i < n; i++) {
            ck_assert_int_eq(ids[i], cases[c].ids[i]);
            ck_assert_float_eq_tol(p[i], probs[ids[i]] / kept, 1e-6);  // renormalised
        }
        // draws only ever return candidates
        for (int k = 0; k < 200; k++) {
            int id = sampler_sample(&s, logits), found = 0;
            for (int i = 0; i < n; i++) found |= ids[i] == id;
            ck_assert_msg(found, "case %zu: drew %d outside the candidate set", c, id);
        }
        sampler_free(&s);
    }
    // temperature 0 is argmax; low temperature sharpens toward it
    Sampler s;
    sampler_init(&s, 5, 0.0f, 0, 1.0f, 1);
    ck_assert_int_eq(sampler_sample(&s, logits), 1);
    sampler_free(&s);
}
END_TEST

START_TEST(test_sampler_frequencies) {
    // with top-k 2 the two candidates are drawn in proportion 0.5 : 0.2
    const float logits[4] = {logf(0.2f), logf(0.5f), logf(0.2f) - 1.0f, logf(0.1f)};
    Sampler s;
    sampler_init(&s, 4, 1.0f, 2, 1.0f, 7);
    int count[4] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) count[sampler_sample(&s, logits)]++;
    ck_assert_int_eq(count[2] + count[3], 0);
    double frac = (double)count[1] / n;  // expect 5/7 = 0.714, binomial sd 0.003
    ck_assert_msg(fabs(frac - 5.0 / 7.0) < 0.015, "frequency of the top token %.4f, want %.4f", frac, 5.0 / 7.0);
    sampler_free(&s);
}
END_TEST

// ----------------------------------------------------------------------------
// gqa sample end to end (stdout captured to a file)

// 2 layers, 4 heads, 2 KV heads, block 32, learned positions: a version-1
// checkpoint, written before the format had the position fields
#define TINY "tests/fixtures/tiny_gqa.bin"

static char *run_sample_ckpt(const char *ckpt, char **args, int nargs, int *rc) {
    char path[] = "/tmp/gqa_sample_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    char *argv[24] = {"gqa", "sample", "--ckpt", (char *)ckpt};
    for (int i = 0; i < nargs; i++) argv[4 + i] = args[i];
    *rc = cmd_sample(4 + nargs, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(fd);
    uint8_t *buf;
    size_t len;
    char err[256];
    ck_assert_int_eq(read_file(path, SIZE_MAX, &buf, &len, err, sizeof err), 0);
    unlink(path);
    char *s = malloc_check(len + 1);
    memcpy(s, buf, len);
    s[len] = '\0';
    free(buf);
    return s;
}

static char *run_sample(char **args, int nargs, int *rc) { return run_sample_ckpt(TINY, args, nargs, rc); }

START_TEST(test_sample_golden_greedy) {
    int rc;
    // the old format still loads, as the model it was: same greedy text as committed
    uint8_t *file;
    size_t flen;
    char ferr[256];
    ck_assert_int_eq(read_file(TINY, SIZE_MAX, &file, &flen, ferr, sizeof ferr), 0);
    ck_assert_uint_eq(get_u32le(file + 4), 1);  // version 1
    free(file);
    char *args[] = {"--temperature", "0", "--max_new_tokens", "200", "--prompt", "ROMEO:"};
    char *got = run_sample(args, 6, &rc);
    ck_assert_int_eq(rc, 0);
    uint8_t *want;
    size_t len;
    char err[256];
    ck_assert_int_eq(read_file("tests/fixtures/tiny_gqa_greedy.txt", SIZE_MAX, &want, &len, err, sizeof err), 0);
    ck_assert_uint_eq(strlen(got), len);
    ck_assert_mem_eq(got, want, len);
    // 200 new tokens past a 32-token context: the crop-and-re-prefill path ran
    ck_assert_uint_eq(len, strlen("ROMEO:") + 200 + 1);
    // top_k 1 is greedy too, at any temperature
    char *args2[] = {"--top_k", "1", "--max_new_tokens", "200", "--prompt", "ROMEO:"};
    char *got2 = run_sample(args2, 6, &rc);
    ck_assert_str_eq(got2, got);
    free(got), free(got2), free(want);
}
END_TEST

// gqa sample with RoPE, 120 tokens past a context of 16: every greedy token is
// the argmax of a full forward over the last block_size tokens at positions
// 0.. (the crop and re-prefill restart the positions at 0, as the forward of
// the cropped context does). A random rope model with the tiny fixture's
// vocabulary, GQA, written to a checkpoint and sampled through cmd_sample.
// _i = 1, 2: the same with MLA (kv_lora_rank 12), rope and learned: the
// absorbed decode of the latent cache against the unabsorbed full forward.
START_TEST(test_sample_rope_past_block_size) {
    GPT tiny, m;
    uint8_t *blob;
    size_t blob_len;
    char err[512], path[] = "/tmp/gqa_rope_XXXXXX";
    ck_assert_int_eq(checkpoint_load(TINY, &tiny, &blob, &blob_len, NULL, NULL, err, sizeof err), 0);
    GPTConfig c = {.vocab_size = tiny.config.vocab_size, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = 2,
                   .n_embd = 32, .bias = 1, .pos = _i == 2 ? GPT_POS_LEARNED : GPT_POS_ROPE, .rope_theta = 50.0f};
    if (_i > 0) c.n_kv_head = 4, c.kv_lora_rank = 12, c.rope_head_dim = _i == 1 ? 4 : 0, c.latent_norm = 1;
    ck_assert_int_eq(gpt_init(&m, &c, 3), 0);
    randomize(&m, 21);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(checkpoint_save(path, &m, blob, blob_len, NULL, err, sizeof err), 0);
    int rc;
    char *args[] = {"--temperature", "0", "--max_new_tokens", "120", "--prompt", "ROMEO:"};
    char *got = run_sample_ckpt(path, args, 6, &rc);
    ck_assert_int_eq(rc, 0);
    unlink(path);

    Tokenizer tok;
    ck_assert_uint_eq(tokenizer_parse(&tok, blob, blob_len, err, sizeof err), blob_len);
    enum { P = 6, N = 120, BS = 16 };
    int ids[P + N];
    size_t n;
    ck_assert_int_eq(tokenizer_encode(&tok, "ROMEO:", P, ids, &n, err, sizeof err), 0);
    char want[4 * (P + N) + 2] = "ROMEO:";
    size_t len = P;
    double min_margin = INFINITY;
    for (int i = 0; i < N; i++) {
        const int ctx = P + i < BS ? P + i : BS, *window = ids + P + i - ctx;
        ck_assert_int_eq(gpt_forward(&m, window, NULL, 1, ctx), 0);
        const float *lg = m.acts.logits + (size_t)(ctx - 1) * c.vocab_size;
        int best = 0;
        for (int v = 1; v < c.vocab_size; v++) best = lg[v] > lg[best] ? v : best;
        float second = -INFINITY;
        for (int v = 0; v < c.vocab_size; v++) second = v != best && lg[v] > second ? lg[v] : second;
        min_margin = lg[best] - second < min_margin ? lg[best] - second : min_margin;
        ids[P + i] = best;
        len += (size_t)tokenizer_decode(&tok, best, want + len);
    }
    want[len++] = '\n';
    want[len] = '\0';
    ck_assert_msg(min_margin > 1e-3, "a near tie (%.2g) would make the comparison fragile", min_margin);
    printf("%s%s sample, 120 tokens past block_size 16: == argmax of the cropped full forward (smallest margin %.3g)\n",
           _i ? "MLA " : "", gpt_pos_names[c.pos], min_margin);
    ck_assert_str_eq(got, want);
    free(got), free(blob);
    tokenizer_free(&tok);
    gpt_free(&tiny), gpt_free(&m);
}
END_TEST

START_TEST(test_sample_seeds_and_batches) {
    int rc;
    char *a1[] = {"--seed", "5", "--max_new_tokens", "60", "--num_samples", "3"};
    char *a2[] = {"--seed", "6", "--max_new_tokens", "60", "--num_samples", "3"};
    char *x = run_sample(a1, 6, &rc), *y = run_sample(a1, 6, &rc), *z = run_sample(a2, 6, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(x, y);   // same seed, same text
    ck_assert_str_ne(x, z);   // another seed, other text
    // three samples, each "\n" + 60 tokens, separated as nanoGPT prints them
    int seps = 0;
    for (char *p = x; (p = strstr(p, "---------------")); p++) seps++;
    ck_assert_int_eq(seps, 3);
    free(x), free(y), free(z);
}
END_TEST

START_TEST(test_sample_bad_prompt_exits) {
    // a character outside the vocabulary: message and exit status 1 (die)
    char *argv[] = {"gqa", "sample", "--ckpt", TINY, "--prompt", "h\xc3\xa9llo"};
    cmd_sample(6, argv);
}
END_TEST

static Suite *infer_suite(void) {
    Suite *s = suite_create("infer");
    TCase *tc = tcase_create("infer");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_decode_equals_full_forward, 0, 12);
    tcase_add_test(tc, test_infer_bounds);
    tcase_add_loop_test(tc, test_prefill_shared_equals_batched, 0, 4);
    tcase_add_loop_test(tc, test_decode_16bit_accuracy, 0, 4);
    tcase_add_test(tc, test_kv_dtype_conversions);
    tcase_add_loop_test(tc, test_grouped_kernel_vs_reference, 0, sizeof kernel_cases / sizeof kernel_cases[0]);
    tcase_add_test(tc, test_sampler_candidate_sets);
    suite_add_tcase(s, tc);

    TCase *mla = tcase_create("mla");
    tcase_set_timeout(mla, 120);
    tcase_add_loop_test(mla, test_mla_decode_equals_full_forward, 0, 16);
    tcase_add_loop_test(mla, test_mla_decode_16bit_accuracy, 0, 4);
    tcase_add_loop_test(mla, test_latent_kernel_vs_reference, 0, 4 * (int)(sizeof latent_cases / sizeof latent_cases[0]));
    tcase_add_test(mla, test_latent_cache_bytes);
    tcase_add_test(mla, test_latent_cache_broadcast);
    tcase_add_loop_test(mla, test_sample_rope_past_block_size, 1, 3);
    suite_add_tcase(s, mla);

    TCase *wt = tcase_create("weights");
    tcase_set_timeout(wt, 120);
    tcase_add_loop_test(wt, test_wmat_kernels_vs_float64, 0, 4 * (int)(sizeof wmat_shapes / sizeof wmat_shapes[0]));
    tcase_add_test(wt, test_wmat_storage);
    tcase_add_test(wt, test_wmat_raw_form);
    tcase_add_loop_test(wt, test_decode_weight_dtypes, 0, 8);
    tcase_add_test(wt, test_weight_bytes);
    tcase_add_test(wt, test_wmat_prefetch_read_order);
    tcase_add_test(wt, test_weight_dtype_f16_range);
    tcase_add_test(wt, test_trained_model_weight_dtypes);
    suite_add_tcase(s, wt);

    tc = tcase_create("sample");  // end to end, forked runs: slow on a loaded machine
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sampler_frequencies);
    tcase_add_test(tc, test_sample_golden_greedy);
    tcase_add_test(tc, test_sample_rope_past_block_size);
    tcase_add_test(tc, test_sample_seeds_and_batches);
    tcase_add_exit_test(tc, test_sample_bad_prompt_exits, 1);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(infer_suite()) == 0 ? 0 : 1; }
