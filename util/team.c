/*
 * team.c: team_for and team_run (see team.h).
 *
 * Inside team_run the lead thread posts a loop by storing its body and
 * bumping `job`; the others spin until they see the bump, run their share
 * and count themselves in `done`, which the lead waits for after its own
 * share. The lead posts the next loop only after every share of this one
 * is done, so one set of fields suffices. The step's end is a last bump
 * with `stop` set.
 */
#include "team.h"

#include <omp.h>
#include <sched.h>
#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define spin_pause() _mm_pause()
#else
#define spin_pause() ((void)0)
#endif

// Spins between yields of the processor: a waiting thread gives it up now
// and then, so that a step still ends (slowly) where threads share
// processors after all, e.g. under valgrind.
#define TEAM_SPINS 4096

static struct {
    atomic_ulong job;  // one bump per posted loop, and one for the end of the step
    atomic_int done;   // threads other than the lead that finished the posted loop
    TeamFn fn;
    void *ctx;
    long n;
    int cyclic, threads, stop;
} team;

// 1 on team_run's thread while its step runs and it is not inside a loop.
static _Thread_local int team_lead;

static void wait_spin(int *spins) {
    if (++*spins < TEAM_SPINS) {
        spin_pause();
        return;
    }
    *spins = 0;
    sched_yield();
}

// Thread t's share of [0, n) among T threads.
static void run_share(TeamFn fn, void *ctx, long n, int cyclic, int t, int T) {
    if (cyclic) {
        if (t < n) fn(ctx, t, n, T);
        return;
    }
    const long q = n / T, r = n % T, begin = t * q + (t < r ? t : r), end = begin + q + (t < r);
    if (begin < end) fn(ctx, begin, end, 1);
}

static void team_loop(long n, int parallel, int cyclic, TeamFn fn, void *ctx) {
    if (n <= 0) return;
    if (parallel && team_lead && team.threads > 1) {
        team.fn = fn, team.ctx = ctx, team.n = n, team.cyclic = cyclic;
        atomic_store_explicit(&team.done, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&team.job, 1, memory_order_release);  // publishes the fields above
        team_lead = 0;  // a team_for inside fn runs on this thread alone
        run_share(fn, ctx, n, cyclic, 0, team.threads);
        team_lead = 1;
        for (int spins = 0; atomic_load_explicit(&team.done, memory_order_acquire) < team.threads - 1;)
            wait_spin(&spins);
        return;
    }
    if (!parallel || omp_in_parallel() || omp_get_max_threads() < 2) {
        fn(ctx, 0, n, 1);
        return;
    }
#pragma omp parallel
    run_share(fn, ctx, n, cyclic, omp_get_thread_num(), omp_get_num_threads());
}

void team_for(long n, int parallel, TeamFn fn, void *ctx) { team_loop(n, parallel, 0, fn, ctx); }

void team_for_cyclic(long n, int parallel, TeamFn fn, void *ctx) { team_loop(n, parallel, 1, fn, ctx); }

void team_run(void (*step)(void *), void *ctx) {
    const int T = omp_get_max_threads();
    if (team_lead || omp_in_parallel() || T < 2 || T > omp_get_num_procs()) {
        step(ctx);
        return;
    }
    const unsigned long job0 = atomic_load(&team.job);
    team.stop = 0;
#pragma omp parallel num_threads(T)
    {
        if (omp_get_thread_num() == 0) {
            team.threads = omp_get_num_threads();
            team_lead = 1;
            step(ctx);
            team_lead = 0;
            team.stop = 1;
            atomic_fetch_add_explicit(&team.job, 1, memory_order_release);
        } else {
            for (unsigned long seen = job0;; seen++) {
                for (int spins = 0; atomic_load_explicit(&team.job, memory_order_acquire) == seen;) wait_spin(&spins);
                if (team.stop) break;
                run_share(team.fn, team.ctx, team.n, team.cyclic, omp_get_thread_num(), team.threads);
                atomic_fetch_add_explicit(&team.done, 1, memory_order_release);
            }
        }
    }
}
