/*
 * dist.h: data-parallel training over MPI, or a single process when built
 * without it (make MPI=1 defines GQA_MPI and links OpenMPI through mpicc).
 *
 * Every rank samples the same global batch (the batch RNG is identical on
 * all ranks) and runs its own contiguous shard of batch_size / world rows;
 * gradients are averaged with one MPI_Allreduce over the gradient arena, so
 * every rank applies the same AdamW step. Rank 0 alone prints, logs and
 * writes checkpoints.
 */
#ifndef GQA_DIST_H
#define GQA_DIST_H

#include <stddef.h>

typedef struct {
    int rank, world;           // this process and how many there are
    double allreduce_seconds;  // time spent in gradient allreduces
} Dist;

// MPI_Init (once) and the communicator's rank/size; {0, 1} without MPI.
void dist_init(Dist *d, int *argc, char ***argv);
void dist_finalize(void);
// buf (n floats) = mean over ranks, in place; timed into allreduce_seconds.
void dist_mean_floats(Dist *d, float *buf, size_t n);
// Sum of x over ranks; max of x over ranks.
double dist_sum(const Dist *d, double x);
int dist_max_int(const Dist *d, int x);
// Stop every rank (MPI_Abort) after an error on one of them.
void dist_abort(int code);

#endif
