/*
 * roofline.c: the machine's limits, measured in a child process of its own
 * (not the parent, which would then keep OpenBLAS and OpenMP thread pools,
 * spinning for a while after work, beside every measurement it forks): the
 * sgemm peak (the faster of OpenBLAS and our gemm()) and the memory read
 * bandwidth. Training is then also given as GFLOP/s and MFU against that
 * peak; decode as GB/s read and the fraction of the bandwidth.
 */
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

// The machine's limits with this process's threads. The sgemm peak is the
// faster of OpenBLAS's cblas_sgemm and our gemm() (where OpenBLAS runs an
// older kernel than the CPU has, its figure alone would not be the
// machine's). The read bandwidth is the best pass of two streaming sums
// (plain, and with a prefetch ahead), alternated, over a buffer much larger
// than the caches, after a warm-up pass.
void worker_roofline(void) {
    double ours, openblas;
    const double gflops = gemm_peak(ROOFLINE_GEMM_N, &ours, &openblas);

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
    printf("RESULT roofline %.3f %.3f %d %.3f %.3f\n", gflops, gbs, omp_get_max_threads(), ours, openblas);
}
