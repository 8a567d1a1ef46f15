/*
 * team.h: loops split over the OpenMP threads, and a way to run many of
 * them in a row without opening an OpenMP region for each.
 *
 * A decode step of cfg-d is about 70 short loops. Opened one by one, each
 * `#pragma omp parallel for` costs libgomp a start and an end barrier, and
 * the last thread to reach a barrier makes a futex system call; an
 * `if (0)` region still makes a team of one and its barrier. On this
 * project's virtual machines that is 3.3 and 1.3 us a region, against a
 * batch-1 step of 0.3-0.5 ms. team_run opens one region for a whole step:
 * its calling thread runs the step and hands each team_for loop to the
 * other threads, which wait for it spinning on a counter.
 */
#ifndef GQA_TEAM_H
#define GQA_TEAM_H

// A loop body over iterations i = begin, begin + step, ... < end.
typedef void (*TeamFn)(void *ctx, long begin, long end, long step);

// fn over [0, n): with `parallel` false, on the calling thread, as one
// call fn(ctx, 0, n, 1); else each thread takes the share that
// schedule(static) would give it, a contiguous range (the same split for
// the same thread count, so results do not depend on timing). Inside
// team_run the step's threads take the shares; elsewhere an OpenMP region
// of its own does, or the calling thread alone if it is already in a
// parallel region (a nested team_for from a loop body, training's shards)
// or there is one thread.
void team_for(long n, int parallel, TeamFn fn, void *ctx);

// team_for with schedule(static, 1)'s shares: thread t takes t, t + T, ...
// (T threads), for loops whose later iterations cost more.
void team_for_cyclic(long n, int parallel, TeamFn fn, void *ctx);

// step(ctx) on the calling thread, while the other OpenMP threads wait to
// take their shares of its team_for loops; returns when step returns. With
// one thread, more threads than processors (spinning threads would take
// the processors from the step), or when already inside a parallel region
// or a team_run, it is step(ctx) and team_for opens regions as usual.
void team_run(void (*step)(void *), void *ctx);

#endif
