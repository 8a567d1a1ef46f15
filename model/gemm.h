/*
 * gemm.h: the single-precision matrix product of the linear layers (ops.c's
 * matmul above the few-row decode path): our own AVX-512 kernel, or OpenBLAS.
 *
 * Why our own: a training shard multiplies (B*T, C) activations by (C, OC)
 * weights with C and OC of a few hundred, one product per thread, on operands
 * that the step has pushed out of L2. OpenBLAS packs both operands on every
 * call; this kernel packs only B, 64 columns at a time, reads A where it
 * lies, and adds the bias as it stores C.
 *
 * The attention's small per-head products stay with OpenBLAS (attention.c).
 */
#ifndef GQA_GEMM_H
#define GQA_GEMM_H

// C (M, N) = A B + bias + (accumulate ? C : 0), row-major C with leading
// dimension ldc >= N. Element (i, p) of A (M, K) is A[i * ars + p * aps] and
// element (p, j) of B (K, N) is B[p * brs + j * bcs]; one stride of each is
// 1, so either may be a transposed view. bias (N) may be NULL. Inside an
// OpenMP parallel region (a training shard) the product runs on the calling
// thread; outside one its column panels are split over the OpenMP threads.
void gemm(int M, int N, int K, const float *A, long ars, long aps, const float *B, long brs, long bcs,
          const float *bias, int accumulate, float *C, long ldc);

// Which backend gemm() uses: ours (0, the default where AVX-512 is compiled
// in) or OpenBLAS's cblas_sgemm (1). The environment variable
// GQA_GEMM=openblas selects OpenBLAS at start-up. Not thread-safe: set it
// outside parallel work. Returns the previous setting.
int gemm_use_openblas(int on);

// The machine's sgemm peak with this process's threads: GFLOP/s of the best
// of 3 timed (n, n, n) products after a warm-up, on our kernel (*ours) and
// on OpenBLAS (*openblas); returns the faster. Call outside parallel work.
double gemm_peak(int n, double *ours, double *openblas);

#endif
