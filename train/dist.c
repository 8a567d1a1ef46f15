/*
 * dist.c: the MPI calls of dist.h, and their single-process stand-ins.
 */
#include "dist.h"

#include <limits.h>
#include <stdlib.h>

#include "../util/util.h"

#ifdef GQA_MPI
#include <mpi.h>

void dist_init(Dist *d, int *argc, char ***argv) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    d->allreduce_seconds = 0.0;
}

void dist_finalize(void) {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

void dist_mean_floats(Dist *d, float *buf, size_t n) {
    if (d->world == 1) return;
    double t0 = now_seconds();
    for (size_t off = 0; off < n; off += INT_MAX / 2) {  // MPI counts are int
        size_t k = n - off < (size_t)INT_MAX / 2 ? n - off : (size_t)INT_MAX / 2;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    const float inv = 1.0f / (float)d->world;
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
    d->allreduce_seconds += now_seconds() - t0;
}

double dist_sum(const Dist *d, double x) {
    if (d->world == 1) return x;
    double y;
    MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return y;
}

int dist_max_int(const Dist *d, int x) {
    if (d->world == 1) return x;
    int y;
    MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return y;
}

void dist_abort(int code) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (ready) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

#else  // one process

void dist_init(Dist *d, int *argc, char ***argv) {
    (void)argc, (void)argv;
    d->rank = 0, d->world = 1, d->allreduce_seconds = 0.0;
}
void dist_finalize(void) {}
void dist_mean_floats(Dist *d, float *buf, size_t n) { (void)d, (void)buf, (void)n; }
double dist_sum(const Dist *d, double x) { (void)d; return x; }
int dist_max_int(const Dist *d, int x) { (void)d; return x; }
void dist_abort(int code) { exit(code); }

#endif
