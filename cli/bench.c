/*
 * bench.c: `gqa bench`: its options, usage and checks; the measurements
 * are bench/'s (bench.h).
 */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "../bench/bench.h"
#include "../model/attention_latent.h"
#include "../model/gemm.h"
#include "../util/util.h"
#include "cli.h"

static const char *const measure_choices[] = {"train", "gemm", "infer", NULL};  // BENCH_TRAIN.. order
static const char *const gemm_choices[] = {"ours", "openblas", "alternate", NULL};  // BenchGemm order
// BenchWorker order
static const char *const worker_choices[] = {"none", "train", "gemm", "infer", "roofline", "read", NULL};

static void list_copy(BenchList *to, const OptList *from) {
    to->n = from->n;
    memcpy(to->v, from->v, sizeof to->v);
}

int cmd_bench(int argc, char **argv) {
    BenchConfig bc;
    memset(&bc, 0, sizeof bc);
    // cfg-d (docs/design.md): the cache outweighs the weights at long context
    bc.model = (GPTConfig){.vocab_size = 256, .block_size = 4096, .n_layer = 6, .n_head = 8, .n_kv_head = 8,
                           .n_embd = 512, .bias = 1, .dropout = 0.0f, .pos = GPT_POS_LEARNED,
                           .rope_theta = GPT_ROPE_THETA_DEFAULT, .latent_norm = 1};
    bc.train_batch_size = 8, bc.train_block_size = 256, bc.train_steps = 5, bc.decode_tokens = 32;
    bc.repeats = 3, bc.rounds = 1, bc.roofline = 1, bc.gemm = BENCH_GEMM_OURS, bc.seed = 1337;
    OptList kvs = {4, {8, 4, 2, 1}}, ranks = {0, {0}};  // the attention settings: no MLA unless asked
    OptList ctxs = {3, {512, 2048, 4032}}, batches = {2, {1, 8}}, dts = {1, {KV_F32}}, wdts = {1, {W_F32}};
    OptList measure = {2, {BENCH_TRAIN, BENCH_INFER}};
    int threads = 0, worker = WORKER_NONE, setting = 0, mla_passes = 1;
    char kv_budget[OPT_STR_MAX] = "";

    Opt opts[40];
    int n = 0;
    cli_model_opts(&bc.model, "vocab_size,block_size,n_layer,n_head", opts, &n);
    Opt kv = *cli_model_opt("n_kv_head");
    kv.type = OPT_INT_LIST, kv.ptr = &kvs;
    kv.help = "key/value heads NKV to compare, a comma list (each divides n_head)";
    opts[n++] = kv;
    Opt rank = *cli_model_opt("kv_lora_rank");
    rank.type = OPT_INT_LIST, rank.ptr = &ranks, rank.min = 1;
    rank.help = "MLA settings to compare after the n_kv_head ones: latent widths r, a comma list (each row has "
                "n_kv_head = n_head; none: no MLA rows)";
    opts[n++] = rank;
    cli_model_opts(&bc.model, "n_embd,bias,pos,rope_theta,rope_head_dim,latent_norm,dropout", opts, &n);
    const Opt own[] = {
        {"measure", OPT_CHOICE_LIST, &measure, 0, 0,
         "what to measure: train (forward + backward + AdamW), gemm (the training step's linear-layer "
         "products alone), infer (prefill and decode); skipped columns are '-' in the table, empty in CSV",
         measure_choices, 0, "measurements", NULL},
        {"batch_size", OPT_INT_LIST, &batches, 1, 1 << 20, "decode batch sizes (unused with --kv_budget)", NULL, 0,
         "measurements", NULL},
        {"kv_budget", OPT_STRING, kv_budget, 0, 0,
         "capacity at a memory budget: every decode row at the largest batch whose KV cache of ctx + decode_tokens "
         "positions per sequence fits SIZE (bytes, or with a unit: 512MiB, 2GiB, 1.5GB; at most 2^20 sequences), "
         "and the longest context at batch 1 (at most block_size); empty: the batch_size list",
         NULL, 0, "measurements", "SIZE"},
        {"ctx", OPT_INT_LIST, &ctxs, 1, 1 << 24, "positions in the KV cache for prefill and decode", NULL, 0,
         "measurements", NULL},
        {"kv_dtype", OPT_CHOICE_LIST, &dts, 0, 0, "KV cache element types", cli_kv_dtype_choices, 0,
         "measurements", NULL},
        {"weight_dtype", OPT_CHOICE_LIST, &wdts, 0, 0,
         "decode rows' weights: f32, or converted after init to bf16, f16 or q8 (LayerNorms and biases stay f32)",
         weight_dtype_names, 0, "measurements", NULL},
        {"decode_tokens", OPT_INT, &bc.decode_tokens, 1, 1e6, "decode steps per repeat", NULL, 0, "measurements",
         NULL},
        {"train_batch_size", OPT_INT, &bc.train_batch_size, 1, 1 << 20, "sequences per training step", NULL, 0,
         "measurements", NULL},
        {"train_block_size", OPT_INT, &bc.train_block_size, 0, 1 << 24,
         "sequence length of the training measurement (0: block_size)", NULL, 0, "measurements", NULL},
        {"train_steps", OPT_INT, &bc.train_steps, 1, 1e6, "training steps per repeat", NULL, 0, "measurements",
         NULL},
        {"repeats", OPT_INT, &bc.repeats, 1, BENCH_MAX_REPEATS, "timed repeats in each measuring process", NULL, 0,
         "method", NULL},
        {"rounds", OPT_INT, &bc.rounds, 1, BENCH_MAX_ROUNDS,
         "processes per measurement, run round-robin over the settings (tok/s pooled over rounds x repeats)",
         NULL, 0, "method", NULL},
        {"roofline", OPT_BOOL, &bc.roofline, 0, 1,
         "first measure the sgemm peak and memory read bandwidth (~1 s) for MFU and % of bandwidth", NULL, 0,
         "method", NULL},
        {"mla_passes", OPT_INT, &mla_passes, 1, 2,
         "MLA decode: passes over the latent cache per step; 1 scores a tile and adds it to the weighted sum while "
         "it is in cache, 2 scores every position first and reads the cache again for the sum (to compare)",
         NULL, 0, "method", NULL},
        {"gemm", OPT_CHOICE, &bc.gemm, 0, 0,
         "the linear layers' matrix products: ours, openblas, or alternate (training alternates the two step by "
         "step and prints their forward+backward times to stderr; the rest uses ours)",
         gemm_choices, 0, "method", NULL},
        {"csv", OPT_STRING, bc.csv, 0, 0, "also write the rows to this CSV file", NULL, 0, "output", "FILE"},
        {"seed", OPT_INT, &bc.seed, 0, 2147483647, "seed of the random weights", NULL, 0, "system", NULL},
        {"threads", OPT_INT, &threads, 0, 1024, "OpenMP threads (0: OMP_NUM_THREADS or all cores)", NULL, 0,
         "system", NULL},
        {"shards", OPT_INT, &bc.shards, 0, 64, "training thread shards, as gqa train's (0: auto)", NULL, 0,
         "system", NULL},
        {"_worker", OPT_CHOICE, &worker, 0, 0, "internal: run one measurement", worker_choices, OPT_HIDDEN, NULL,
         NULL},
        {"_setting", OPT_INT, &setting, 0, 2 * BENCH_LIST_MAX - 1,
         "internal: the worker's attention setting (n_kv_head list, then kv_lora_rank list)", NULL, OPT_HIDDEN,
         NULL, NULL},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) opts[n++] = own[i];

    char usage[8192];
    snprintf(usage, sizeof usage,
             "usage: gqa bench [CONFIG_FILE] [--key=value ...]\n\n"
             "Measure training, prefill and decode tokens/sec, KV cache bytes and peak resident memory\n"
             "for every attention setting x batch_size x ctx x kv_dtype, each in a fresh process, with\n"
             "random weights. The settings are the n_kv_head list (MHA, GQA, MQA), then the kv_lora_rank\n"
             "list (MLA, DeepSeek-V2's latent attention, every row with n_kv_head = n_head).\n"
             "Defaults are cfg-d (vocab 256, 6 layers, 8 heads, n_embd 512, block 4096).\n\n"
             "Training runs AdamW with fixed hyperparameters (lr %g, beta1 %g, beta2 %g, eps %g,\n"
             "weight_decay %g); they do not change the time of a step.\n"
             "With --roofline the machine's sgemm peak and memory read bandwidth are measured first;\n"
             "training is also given in GFLOP/s (6N + 12 L C T per token) with MFU against that peak,\n"
             "decode in GB/s read (every weight once in its dtype, of wpe one row, plus the cache of ctx\n"
             "positions per step) with its fraction of the read bandwidth. The bandwidth is measured\n"
             "again after every round of every decode row, and each row is compared with the median of\n"
             "its own readings, so that a host whose bandwidth drifts does not favour the rows run at its\n"
             "slow moments (CSV: train_gflops, train_mfu, decode_gbs, decode_bw_frac, read_gbs;\n"
             "train_mfu and decode_bw_frac are fractions, not percent, empty without --roofline, and\n"
             "decode_bw_frac exceeds 1 when weights and cache fit in the caches); after the table a\n"
             "last reading of both is printed as 'roofline at the end'.\n"
             "Decode is also given as a fraction of its roofline: a step takes at least the larger of its\n"
             "FLOPs at the sgemm peak (fma) and its bytes at the read bandwidth (read); FLOPs are the\n"
             "linear layers and LM head for batch tokens plus the attention over ctx positions, absorbed\n"
             "for MLA, the linear ones halved with bf16 weights and quartered with q8, whose dot products\n"
             "do 2 and 4 multiply-adds per lane where an FMA does one (CSV: decode_step_bytes,\n"
             "decode_step_flops, decode_step_fma_flops, decode_roofline_tok_s, decode_roofline_frac,\n"
             "decode_bound; docs/benchmarks.md gives the formulas).\n"
             "Without infer in --measure there is one row per setting, without batch, ctx or kv_dtype.\n"
             "With --rounds R every measurement runs in R processes, round-robin over the settings (all\n"
             "once, then all again), so a slow spell of a shared machine falls on every setting alike;\n"
             "tok/s are then mean +- stddev over rounds x repeats. The column 'decode x n_kv_head G' is\n"
             "the median decode tok/s over that of the first setting (the first n_kv_head G) at the same\n"
             "batch, ctx and kv_dtype (CSV: decode_speedup, with train_tok_s_median and\n"
             "decode_tok_s_median). CSV columns kv_lora_rank, rope_head_dim (0 for grouped rows) and\n"
             "attention (MHA, GQA-4, MQA, MLA-128) name the setting.\n"
             "--measure=gemm times the training step's linear-layer products alone (each shard's gemm()\n"
             "calls, forward and backward, nothing else): the most a step of those calls could reach.\n"
             "Its column gives that tok/s and, with train, the median training tok/s as a percentage of\n"
             "it (CSV: gemm_tok_s_median, train_gemm_frac, a fraction).\n"
             "--kv_budget SIZE asks what a memory budget holds: per setting, ctx and kv_dtype one decode row\n"
             "at the largest batch whose exact KV cache (the one the decode run allocates: ctx +\n"
             "decode_tokens positions per sequence) is at most SIZE, so 'decode tok/s' is the aggregate\n"
             "throughput at the budget and 'decode x' compares it between settings. A setting that cannot\n"
             "hold one sequence gets a 'does not fit' row and no measurement; one whose cache, weights and\n"
             "buffers would take over 90%% of the memory available is not run either ('exceeds memory').\n"
             "Two more columns: that batch with its cache bytes, and the longest context one sequence's\n"
             "cache holds within SIZE, at most block_size (CSV: kv_budget_bytes, budget_batch,\n"
             "budget_max_ctx_batch1, budget_status (fits, does_not_fit, exceeds_memory), budget_kv_bytes,\n"
             "budget_seq_bytes (one sequence), budget_batch_capped, budget_max_ctx_capped).\n",
             (double)BENCH_ADAMW_LR, (double)BENCH_ADAMW_BETA1, (double)BENCH_ADAMW_BETA2, (double)BENCH_ADAMW_EPS,
             (double)BENCH_ADAMW_WEIGHT_DECAY);
    const int rc = opts_parse_command(opts, n, argc, argv, usage, 1);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    list_copy(&bc.n_kv_head, &kvs), list_copy(&bc.kv_lora_rank, &ranks);
    list_copy(&bc.ctx, &ctxs), list_copy(&bc.batch_size, &batches);
    list_copy(&bc.kv_dtype, &dts);
    list_copy(&bc.weight_dtype, &wdts);
    for (int i = 0; i < measure.n; i++) bc.measure |= 1 << measure.v[i];
    if (kv_budget[0]) {
        char err[512];
        if (bench_parse_size(kv_budget, &bc.kv_budget, err, sizeof err) != 0) die("%s", err);
        if (!((bc.measure >> BENCH_INFER) & 1)) die("kv_budget sizes the decode rows: give infer in --measure too");
    }
    if (bc.train_block_size == 0) bc.train_block_size = bc.model.block_size;
    if (threads > 0) omp_set_num_threads(threads);
    gemm_use_openblas(bc.gemm == BENCH_GEMM_OPENBLAS);
    attention_latent_set_passes(mla_passes);  // the children parse the same flag

    // the MLA settings share rope_head_dim: given, or DeepSeek-V2's head_size/2 with rope
    if (bc.kv_lora_rank.n == 0 && bc.model.rope_head_dim != 0)
        die("rope_head_dim %d is for the MLA settings, and there are none: give --kv_lora_rank too",
            bc.model.rope_head_dim);
    if (bc.kv_lora_rank.n && bc.model.rope_head_dim == 0) {
        GPTConfig c = bench_model_config(&bc, bc.n_kv_head.n);
        cli_model_resolve(&c);
        bc.model.rope_head_dim = c.rope_head_dim;
    }
    char err[512];
    for (int i = 0; i < bench_num_settings(&bc); i++) {
        GPTConfig c = bench_model_config(&bc, i);
        if (gpt_config_validate(&c, err, sizeof err) != 0) {
            if (gpt_is_latent(&c)) die("kv_lora_rank %d: %s", c.kv_lora_rank, err);
            die("%s", err);
        }
    }
    for (int i = 0; (bc.measure >> BENCH_INFER) & 1 && i < bc.ctx.n; i++)
        if (bc.ctx.v[i] + bc.decode_tokens > bc.model.block_size)
            die("ctx %d + decode_tokens %d exceeds block_size %d", bc.ctx.v[i], bc.decode_tokens,
                bc.model.block_size);
    if ((bc.measure & (1 << BENCH_TRAIN | 1 << BENCH_GEMM)) && bc.train_block_size > bc.model.block_size)
        die("train_block_size %d exceeds block_size %d", bc.train_block_size, bc.model.block_size);

    if (worker != WORKER_NONE) {  // a child: one measurement, then out
        if (setting >= bench_num_settings(&bc)) die("internal: --_setting %d: there are %d settings", setting,
                                                     bench_num_settings(&bc));
        bench_worker(&bc, (BenchWorker)worker, setting);
        return 0;
    }
    if (bc.csv[0] && cli_check_output("csv", bc.csv) != 0) return 1;
    return bench_run(&bc, argc, argv);
}
