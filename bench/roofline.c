/*
 * roofline.c: the machine's limits, measured in a child process of its own
 * (not the parent, which would then keep OpenBLAS and OpenMP thread pools,
 * spinning for a while after work, beside every measurement it forks): the
 * sgemm peak (the faster of OpenBLAS and our gemm()) and the memory read
 * bandwidth. Training is then also given as GFLOP/s and MFU against that
 * peak; decode as GB/s read, the fraction of the bandwidth, and the
 * fraction of its roofline: a decode step takes at least the larger of its
 * FMA time at the sgemm peak and its read time at the bandwidth (the model
 * of a step's bytes and FLOPs is bench_decode_step, at the end).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "../model/gemm.h"
#include "../util/util.h"
#include "bench.h"

#define ROOFLINE_LANES 64       // independent partial sums per thread
#define ROOFLINE_PREFETCH 2048  // bytes ahead of the second read kernel

static volatile float roofline_sink;  // keeps the results of the timed loops alive

// GB/s of one parallel streaming sum over buf; with prefetch, each 256-byte
// block also asks for the one ROOFLINE_PREFETCH bytes ahead, non-temporally.
static double roofline_read(const float *buf, size_t blocks, int prefetch) {
    float total = 0.0f;
    double t0 = now_seconds();
#pragma omp parallel reduction(+ : total)
    {
        // many partial sums, so the adds are not one dependent chain
        float acc[ROOFLINE_LANES] = {0};
#pragma omp for schedule(static)
        for (size_t i = 0; i < blocks; i++) {
            const float *p = buf + i * ROOFLINE_LANES;
            if (prefetch)  // one cache line (16 floats) at a time; 0, 0: read, no temporal locality
                for (int j = 0; j < ROOFLINE_LANES; j += 16)
                    __builtin_prefetch((const char *)(p + j) + ROOFLINE_PREFETCH, 0, 0);
            for (int j = 0; j < ROOFLINE_LANES; j++) acc[j] += p[j];
        }
        for (int j = 0; j < ROOFLINE_LANES; j++) total += acc[j];
    }
    double g = (double)blocks * ROOFLINE_LANES * sizeof(float) / (now_seconds() - t0) / 1e9;
    roofline_sink = total;
    return g;
}

// The read bandwidth with this process's threads: the best pass of two
// streaming sums (plain, and with a prefetch ahead), alternated, over a
// buffer much larger than the caches, after a warm-up pass.
static double read_bandwidth(void) {
    const size_t count = ROOFLINE_READ_BYTES / sizeof(float), blocks = count / ROOFLINE_LANES;
    float *buf = malloc_check(ROOFLINE_READ_BYTES);  // (a prefetch past its end does not fault)
    advise_huge_pages(buf, ROOFLINE_READ_BYTES);
    // first touch with the static schedule of the reads: each thread's pages
    // are its own (one NUMA node here, but the habit costs nothing)
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < blocks; i++)
        for (int j = 0; j < ROOFLINE_LANES; j++) buf[i * ROOFLINE_LANES + j] = 1.0f;
    double gbs = 0;
    for (int r = 0; r < 7; r++) {  // r = 0: warm-up
        double g = roofline_read(buf, blocks, r % 2);
        if (r > 0 && g > gbs) gbs = g;
    }
    free(buf);
    return gbs;
}

// The machine's limits with this process's threads. The sgemm peak is the
// faster of OpenBLAS's cblas_sgemm and our gemm() (where OpenBLAS runs an
// older kernel than the CPU has, its figure alone would not be the
// machine's).
void worker_roofline(void) {
    double ours, openblas;
    const double gflops = gemm_peak(ROOFLINE_GEMM_N, &ours, &openblas);
    const double gbs = read_bandwidth();
    printf("RESULT roofline %.3f %.3f %d %.3f %.3f\n", gflops, gbs, omp_get_max_threads(), ours, openblas);
}

// The read bandwidth alone, taken after each round of a decode row.
void worker_read(void) { printf("RESULT read %.3f\n", read_bandwidth()); }

// ----------------------------------------------------------------------------
// the roofline model of a decode step (bench.h states the formulas)

BenchStep bench_decode_step(const GPTConfig *c, int B, int ctx, size_t elem_bytes, WeightDtype wdt) {
    const double L = c->n_layer, NH = c->n_head, HS = (double)(c->n_embd / c->n_head);
    const double r = c->kv_lora_rank, dR = c->rope_head_dim, b = B, t = ctx;
    GPTLinear lin[GPT_NUM_LINEAR];
    const int nlin = gpt_linear_layers(c, lin);
    // MACs of one token through the linear layers of every block and the LM head (V, C);
    // absorbed MLA decode never runs ukv (r -> 2 NH HS): its weights enter through W_uk and W_uv below
    double macs = (double)c->vocab_size * c->n_embd;
    for (int i = 0; i < nlin; i++)
        if (lin[i].weight != PARAM_UKVW) macs += L * lin[i].in * lin[i].out;
    double attn;  // FLOPs of the attention of all layers for B tokens over ctx positions
    if (gpt_is_latent(c))
        attn = L * (2.0 * b * NH * t * ((r + dR) + r) + 2.0 * b * NH * HS * r * 2.0);
    else
        attn = L * 2.0 * b * NH * t * HS * 2.0;  // every query head over its KV head's keys and values
    // the MACs per 32-bit lane of the instruction the linear layers run on
    const double per_lane = wdt == W_BF16 ? 2.0 : wdt == W_Q8 ? 4.0 : 1.0;
    BenchStep s;
    s.flops = 2.0 * b * macs + attn;
    s.fma_flops = 2.0 * b * macs / per_lane + attn;
    s.bytes = gpt_weight_bytes(c, wdt, 1) + b * t * (double)gpt_kv_bytes_per_token(c, elem_bytes);
    return s;
}

double bench_roofline_seconds(BenchStep s, double peak_gflops, double read_gbs, const char **bound) {
    const double fma = s.fma_flops / (peak_gflops * 1e9), read = s.bytes / (read_gbs * 1e9);
    if (bound) *bound = isnan(fma) || isnan(read) ? NULL : fma > read ? "fma" : "read";
    return isnan(fma) || isnan(read) ? NAN : fma > read ? fma : read;
}
