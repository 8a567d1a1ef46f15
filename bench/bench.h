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
typedef enum { WORKER_NONE, WORKER_TRAIN, WORKER_GEMM, WORKER_INFER, WORKER_ROOFLINE, WORKER_READ } BenchWorker;

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
    BenchList weight_dtype; // WeightDtype values: the decode rows' weights (converted after init)
    int measure;            // bits (1 << BENCH_TRAIN) | (1 << BENCH_GEMM) | (1 << BENCH_INFER)
    int train_batch_size;   // B of the training measurement
    int train_block_size;   // T of the training measurement (0: model.block_size)
    int train_steps;        // training steps per repeat
    int decode_tokens;      // decode steps per repeat
    int repeats, rounds;    // timed repeats per process; processes per measurement
    int roofline;           // measure the machine's sgemm peak and read bandwidth first (and last)
    int gemm;               // BenchGemm
    int seed, shards;       // weights; training shards (0: auto)
    size_t kv_budget;       // bytes of KV cache per inference row (0: no budget; the batch_size list instead)
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

// ---- capacity at a memory budget (--kv_budget)
//
// With a budget every inference row runs at the largest batch whose whole
// cache fits it: the cache the decode measurement allocates, ctx +
// decode_tokens positions per sequence, of exactly kvcache_bytes bytes.

// The batch is capped here: with a tiny model and a large budget it could
// otherwise run to billions of sequences.
#define BENCH_BUDGET_BATCH_MAX (1 << 20)

// Parse a size: a whole number of bytes ("1048576", "1048576B"), or a
// decimal number and a unit, SI (kB, MB, GB, TB: powers of 1000) or binary
// (KiB, MiB, GiB, TiB: powers of 1024), case-insensitive ("512MiB", "1.5GB",
// "2gib"); a prefix without its B ("2G") is refused as ambiguous. Fractions
// of a byte are dropped (1.0001kB = 1000). Returns 0, or -1 with err filled
// (one line naming the text) when it is empty, not such a size, zero, or
// above 2^62 bytes.
int bench_parse_size(const char *s, size_t *bytes, char *err, size_t errlen);

// The largest batch B with kvcache_bytes(c, B, cache_len, elem) <= budget
// (0: not even one sequence fits), at most BENCH_BUDGET_BATCH_MAX; *capped
// (may be NULL) is 1 when the cap, not the budget, set it.
int bench_budget_batch(const GPTConfig *c, int cache_len, size_t elem, size_t budget, int *capped);
// The longest cache of one sequence within the budget: the largest T with
// kvcache_bytes(c, 1, T, elem) <= budget (0: not one position fits), at most
// block_size; *capped (may be NULL) is 1 when block_size set it.
int bench_budget_max_ctx(const GPTConfig *c, size_t elem, size_t budget, int *capped);

// What set a budget row's batch.
typedef enum {
    BUDGET_NONE,        // no budget: the batch is the batch_size list's
    BUDGET_FITS,        // the budget's batch, measured
    BUDGET_NO_FIT,      // not one sequence of cache_len positions fits: no measurement
    BUDGET_NO_MEMORY,   // the batch fits the budget but not this machine's memory: no measurement
} BenchBudget;
extern const char *const bench_budget_names[];  // "", "fits", "does_not_fit", "exceeds_memory"

// ---- internal to bench/: the workers, the roofline and the report

// Decode rows allocate buffers for batch x chunk new tokens (infer_init)
// while prefill runs one sequence in chunks: the chunk is min(ctx, 512),
// lowered at large batches so that batch x chunk stays within
// BENCH_INFER_ROWS (65536) rows.
#define BENCH_INFER_ROWS 65536
int bench_infer_chunk(int batch, int ctx);

void worker_train(const BenchConfig *bc, int setting);
void worker_gemm(const BenchConfig *bc, int setting);
void worker_infer(const BenchConfig *bc, int setting, int batch, int ctx, KVDtype dt, WeightDtype wdt);

// The roofline's sizes: fixed, and small enough to take well under 2 s.
#define ROOFLINE_GEMM_N 2048                     // (N, N) = (N, N) @ (N, N): 17.2 GFLOP a call
#define ROOFLINE_READ_BYTES ((size_t)512 << 20)  // far beyond the last-level cache
void worker_roofline(void);
// The read bandwidth alone ("RESULT read GBS"): with the roofline on, after
// every round of every decode row, so that each row is compared with the
// bandwidth of its own moments on a host whose bandwidth drifts.
void worker_read(void);

// The work of one decode step of B sequences with ctx positions cached (the
// roofline's model of it, docs/benchmarks.md): the bytes read, every
// weight once (gpt_weight_bytes(c, wdt, 1): of wpe one row) plus B * ctx
// cached tokens of gpt_kv_bytes_per_token(c, elem_bytes), and the FLOPs, 2 per MAC: the
// linear layers and the tied LM head for B tokens, plus per layer
//   grouped: 2 * B * NH * ctx * HS * 2                 (scores, weighted sum)
//   MLA:     2 * B * NH * ctx * ((r + dR) + r)         (absorbed: scores over
//            the latent row, weighted sum of latents)
//          + 2 * B * NH * HS * r * 2                   (W_uk into the query, W_uv
//            out of the latent; the ukv layer itself is not run)
// fma_flops is what the FMA side of the roofline charges: the same, but
// with the linear layers' and LM head's FLOPs halved for bf16 weights and
// quartered for q8, whose dot-product instructions (vdpbf16ps, vpdpbusd)
// do 2 and 4 multiply-adds per 32-bit lane where an FMA does one.
typedef struct {
    double bytes, flops, fma_flops;
} BenchStep;
BenchStep bench_decode_step(const GPTConfig *c, int B, int ctx, size_t elem_bytes, WeightDtype wdt);
// The roofline of such a step, in seconds: the larger of its FMA time
// (fma_flops) at peak_gflops and its read time at read_gbs (NAN if either is NAN). *bound
// (may be NULL) is "fma" or "read", whichever is larger.
double bench_roofline_seconds(BenchStep s, double peak_gflops, double read_gbs, const char **bound);

// One row of the table and the CSV; NAN marks what was not measured.
typedef struct {
    int n_kv_head, batch, ctx;  // batch = ctx = 0: no inference measurement
    int kv_lora_rank, rope_head_dim;  // 0, 0: grouped attention
    char attention[32];               // bench_attention_name
    const char *kv_dtype;
    const char *weight_dtype;           // "-": no inference measurement
    double weight_bytes;                // the weights in memory (gpt_weight_bytes), NAN without inference
    double train, train_sd, train_median, train_gflops, train_mfu;  // tok/s, GFLOP/s, fraction of peak
    double prefill, decode, decode_sd, decode_median;                // tok/s
    double decode_x;                    // median decode tok/s over that of the list's first n_kv_head
    double decode_gbs, decode_bw_frac;  // GB/s, fraction of bandwidth
    double kv_bytes, rss;
    size_t params;
    double gemm, train_gemm_frac;  // median GEMM-only tok/s; median train tok/s over it
    double step_bytes, step_flops, step_fma_flops;  // bench_decode_step of the row's decode shape
    double read_gbs;                // the bandwidth the row is compared with (the median of its rounds' readings)
    double roofline_tok_s;          // batch / bench_roofline_seconds: the most decode tok/s the machine allows
    double roofline_frac;           // decode tok/s over it
    const char *bound;              // "fma" or "read": the side that sets the roofline (NULL: none)
    // --kv_budget (kv_budget 0: none, the rest unset)
    size_t kv_budget;               // bytes
    BenchBudget budget;             // what set the batch (batch 0 unless BUDGET_FITS)
    int budget_batch;               // the largest batch within the budget (0: does not fit)
    int budget_batch_capped;        // 1: BENCH_BUDGET_BATCH_MAX set it
    double budget_kv_bytes;         // exact bytes of budget_batch x (ctx + decode_tokens) positions
    double budget_seq_bytes;        // exact bytes of one sequence's (ctx + decode_tokens) positions
    double budget_need_bytes;       // BUDGET_NO_MEMORY: the cache, weights and buffers the run would need
    double mem_available;           // BUDGET_NO_MEMORY: MemAvailable at the start
    int budget_max_ctx;             // the longest cache of one sequence within the budget
    int budget_max_ctx_capped;      // 1: block_size set it
} BenchRow;

// with_budget: the table's two budget columns
void report_header(int first_n_kv_head, int with_budget);
void report_row(const BenchRow *r);
// The CSV's header line and one row, appended to a growing text (report.c).
void report_csv_header(FILE *f);
void report_csv_row(FILE *f, const BenchRow *r);

#endif
