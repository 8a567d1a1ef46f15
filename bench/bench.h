/*
 * bench.h: `gqa bench`'s measurements, tokens/sec and memory across
 * attention settings (n_kv_head for MHA/GQA/MQA, kv_lora_rank for MLA),
 * batch sizes, contexts and KV-cache element types.
 *
 * The parent (run.c) expands the lists and runs every measurement in a
 * fresh child process (fork + exec of this binary with a hidden --_worker
 * flag), so each peak-resident-memory figure belongs to one setting alone.
 * A child (workers.c, roofline.c) prints one "RESULT ..." line on a pipe;
 * the parent prints a Markdown table and writes CSV (report.c). With
 * rounds > 1 every measurement runs in several children, round-robin over
 * the settings, and the speed-up column compares medians of the pooled
 * timings. Options and usage are cli/bench.c's.
 *
 * Weights are random (seeded); timing does not depend on their values.
 */
#ifndef GQA_BENCH_H
#define GQA_BENCH_H

#include <stddef.h>
#include <stdio.h>

#include "../model/gpt.h"
#include "../model/kvcache.h"

#define BENCH_LIST_MAX 16
#define BENCH_MAX_REPEATS 64
#define BENCH_MAX_ROUNDS 16

// The fixed AdamW of the training measurement (its hyperparameters do not
// change the time of a step).
#define BENCH_ADAMW_LR 1e-4f
#define BENCH_ADAMW_BETA1 0.9f
#define BENCH_ADAMW_BETA2 0.99f
#define BENCH_ADAMW_EPS 1e-8f
#define BENCH_ADAMW_WEIGHT_DECAY 0.1f

typedef struct {
    int n;
    int v[BENCH_LIST_MAX];
} BenchList;

// What a run measures, and what a child process measures.
enum { BENCH_TRAIN, BENCH_GEMM, BENCH_INFER };  // bit positions in BenchConfig.measure
typedef enum { WORKER_NONE, WORKER_TRAIN, WORKER_GEMM, WORKER_INFER, WORKER_ROOFLINE } BenchWorker;

// The linear layers' matrix products: our gemm(), OpenBLAS, or the two
// alternated step by step in the training measurement.
typedef enum { BENCH_GEMM_OURS, BENCH_GEMM_OPENBLAS, BENCH_GEMM_ALTERNATE } BenchGemm;

// The attention settings of a run, in table order: every n_kv_head of the
// list (grouped attention, kv_lora_rank 0), then every kv_lora_rank of its
// list (MLA, n_kv_head = n_head as MLA requires). Setting s is n_kv_head.v[s]
// for s < n_kv_head.n, else kv_lora_rank.v[s - n_kv_head.n].
typedef struct {
    GPTConfig model;        // shape and dropout; n_kv_head and kv_lora_rank come from the lists;
                            // rope_head_dim and latent_norm are those of the MLA settings
    BenchList n_kv_head;    // the grouped settings compared
    BenchList kv_lora_rank; // the MLA settings compared (may be empty)
    BenchList ctx;          // positions in the cache for prefill and decode
    BenchList batch_size;   // decode batch sizes
    BenchList kv_dtype;     // KVDtype values
    int measure;            // bits (1 << BENCH_TRAIN) | (1 << BENCH_GEMM) | (1 << BENCH_INFER)
    int train_batch_size;   // B of the training measurement
    int train_block_size;   // T of the training measurement (0: model.block_size)
    int train_steps;        // training steps per repeat
    int decode_tokens;      // decode steps per repeat
    int repeats, rounds;    // timed repeats per process; processes per measurement
    int roofline;           // measure the machine's sgemm peak and read bandwidth first (and last)
    int gemm;               // BenchGemm
    int seed, shards;       // weights; training shards (0: auto)
    char csv[512];          // also write the rows here ("" : no CSV)
} BenchConfig;

// The parent: every measurement in its own child (this binary with argv and
// the worker's flags appended), the table on stdout, the CSV written
// atomically at the end. Returns the exit status (1 if a measurement failed).
int bench_run(const BenchConfig *bc, int argc, char **argv);

// A child: one measurement of attention setting `setting` at the first value
// of the other lists, its RESULT line on stdout. Dies on an error.
void bench_worker(const BenchConfig *bc, BenchWorker w, int setting);

// The attention settings of a run (n_kv_head.n + kv_lora_rank.n), and the
// model of setting s: bc's shape with that n_kv_head (kv_lora_rank 0,
// rope_head_dim 0) or that kv_lora_rank (n_kv_head = n_head).
int bench_num_settings(const BenchConfig *bc);
GPTConfig bench_model_config(const BenchConfig *bc, int setting);
// The attention of a config as the table names it: "MHA", "GQA-4", "MQA",
// "MLA-128" (kv_lora_rank).
const char *bench_attention_name(const GPTConfig *c, char *buf, size_t len);

// ---- internal to bench/: the workers, the roofline and the report

void worker_train(const BenchConfig *bc, int setting);
void worker_gemm(const BenchConfig *bc, int setting);
void worker_infer(const BenchConfig *bc, int setting, int batch, int ctx, KVDtype dt);

// The roofline's sizes: fixed, and small enough to take well under 2 s.
#define ROOFLINE_GEMM_N 2048                     // (N, N) = (N, N) @ (N, N): 17.2 GFLOP a call
#define ROOFLINE_READ_BYTES ((size_t)512 << 20)  // far beyond the last-level cache
void worker_roofline(void);

// The work of one decode step of B sequences with ctx positions cached (the
// roofline's model of it, docs/benchmarks.md): the bytes read, every
// parameter once (4 bytes each, of wpe one row) plus B * ctx cached tokens
// of gpt_kv_bytes_per_token(c, elem_bytes), and the FLOPs, 2 per MAC: the
// linear layers and the tied LM head for B tokens, plus per layer
//   grouped: 2 * B * NH * ctx * HS * 2                 (scores, weighted sum)
//   MLA:     2 * B * NH * ctx * ((r + dR) + r)         (absorbed: scores over
//            the latent row, weighted sum of latents)
//          + 2 * B * NH * HS * r * 2                   (W_uk into the query, W_uv
//            out of the latent; the ukv layer itself is not run)
typedef struct {
    double bytes, flops;
} BenchStep;
BenchStep bench_decode_step(const GPTConfig *c, int B, int ctx, size_t elem_bytes);
// The roofline of such a step, in seconds: the larger of its FMA time at
// peak_gflops and its read time at read_gbs (NAN if either is NAN). *bound
// (may be NULL) is "fma" or "read", whichever is larger.
double bench_roofline_seconds(BenchStep s, double peak_gflops, double read_gbs, const char **bound);

// One row of the table and the CSV; NAN marks what was not measured.
typedef struct {
    int n_kv_head, batch, ctx;  // batch = ctx = 0: no inference measurement
    int kv_lora_rank, rope_head_dim;  // 0, 0: grouped attention
    char attention[32];               // bench_attention_name
    const char *kv_dtype;
    double train, train_sd, train_median, train_gflops, train_mfu;  // tok/s, GFLOP/s, fraction of peak
    double prefill, decode, decode_sd, decode_median;                // tok/s
    double decode_x;                    // median decode tok/s over that of the list's first n_kv_head
    double decode_gbs, decode_bw_frac;  // GB/s, fraction of bandwidth
    double kv_bytes, rss;
    size_t params;
    double gemm, train_gemm_frac;  // median GEMM-only tok/s; median train tok/s over it
    double step_bytes, step_flops;  // bench_decode_step of the row's decode shape
    double roofline_tok_s;          // batch / bench_roofline_seconds: the most decode tok/s the machine allows
    double roofline_frac;           // decode tok/s over it
    const char *bound;              // "fma" or "read": the side that sets the roofline (NULL: none)
} BenchRow;

void report_header(int first_n_kv_head);
void report_row(const BenchRow *r);
// The CSV's header line and one row, appended to a growing text (report.c).
void report_csv_header(FILE *f);
void report_csv_row(FILE *f, const BenchRow *r);

#endif
