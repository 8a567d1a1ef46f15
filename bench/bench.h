/*
 * bench.h: the kv-head comparisons: `gqa bench` (measured, bench.c) and
 * `gqa mem` (estimated, mem.c).
 */
#ifndef GQA_BENCH_H
#define GQA_BENCH_H

int cmd_bench(int argc, char **argv);
// `gqa mem`: the analytical memory calculator (mem.c).
int cmd_mem(int argc, char **argv);

#endif
