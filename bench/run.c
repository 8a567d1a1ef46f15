/*
 * run.c: `gqa bench`'s parent: the jobs (one per setting) run round-robin,
 * each round of each in a child process of its own, the roofline before and
 * after, and the rows built from the pooled timings.
 *
 * With roofline, a child measures the machine's sgemm peak and read
 * bandwidth first; training is then also given as GFLOP/s (nanoGPT's 6N +
 * 12 L C T FLOPs per token) and MFU against that peak, decode as GB/s read
 * (all weights plus the cache of ctx positions per step), the fraction of
 * the bandwidth, and the fraction of the step's roofline, the larger of its
 * FMA time at the peak and its read time at the bandwidth
 * (bench_decode_step). A second child measures the roofline again after the
 * last row, so the output brackets what the rows met on a host whose
 * bandwidth drifts.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../train/train.h"
#include "../util/util.h"
#include "bench.h"

// ----------------------------------------------------------------------------
// statistics of the pooled timings

static double mean_of(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return n ? s / n : 0;
}

static double sd_of(const double *x, int n) {
    if (n < 2) return 0;
    double m = mean_of(x, n), s = 0;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}

// The median (sorts x).
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(double *x, int n) {
    if (n == 0) return NAN;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// ----------------------------------------------------------------------------
// capacity at a memory budget

const char *const bench_budget_names[] = {"", "fits", "does_not_fit", "exceeds_memory"};

#define BENCH_SIZE_MAX ((size_t)1 << 62)

int bench_parse_size(const char *s, size_t *bytes, char *err, size_t errlen) {
    static const struct {
        const char *name;
        unsigned long long unit;
    } units[] = {{"", 1},          {"b", 1},           {"kb", 1000ull},    {"mb", 1000000ull},
                 {"gb", 1000000000ull}, {"tb", 1000000000000ull}, {"kib", 1ull << 10}, {"mib", 1ull << 20},
                 {"gib", 1ull << 30},   {"tib", 1ull << 40}};
    const char *hint = "give bytes or a number with a unit: B, kB, MB, GB, TB (1000s), KiB, MiB, GiB, TiB (1024s), "
                       "e.g. 512MiB or 1.5GB";
    // digits [. digits] unit, nothing else (no sign, no spaces, no exponent)
    const char *p = s;
    unsigned __int128 whole = 0, frac = 0, scale = 1;
    int ndigits = 0, nfrac = 0;
    for (; *p >= '0' && *p <= '9'; p++, ndigits++) {
        whole = whole * 10 + (unsigned)(*p - '0');
        if (whole > BENCH_SIZE_MAX) goto too_large;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nfrac++)
            if (nfrac < 18) frac = frac * 10 + (unsigned)(*p - '0'), scale *= 10;  // digits beyond: below a byte
        if (nfrac == 0) goto not_size;
    }
    if (ndigits == 0) goto not_size;
    char unit[8];
    size_t n = strlen(p);
    if (n >= sizeof unit) goto not_size;
    for (size_t i = 0; i <= n; i++) unit[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] - 'A' + 'a' : p[i]);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strcmp(unit, units[u].name) != 0) continue;
        if (nfrac && units[u].unit == 1) {
            snprintf(err, errlen, "kv_budget '%s': a number of bytes is whole; %s", s, hint);
            return -1;
        }
        const unsigned __int128 v = whole * units[u].unit + frac * units[u].unit / scale;
        if (v > BENCH_SIZE_MAX) goto too_large;
        if (v == 0) {
            snprintf(err, errlen, "kv_budget '%s' is zero bytes: give a budget of at least one byte", s);
            return -1;
        }
        *bytes = (size_t)v;
        return 0;
    }
not_size:
    snprintf(err, errlen, "kv_budget '%s' is not a size: %s", s, hint);
    return -1;
too_large:
    snprintf(err, errlen, "kv_budget '%s' is too large (at most 2^62 bytes, 4 EiB)", s);
    return -1;
}

int bench_budget_batch(const GPTConfig *c, int cache_len, size_t elem, size_t budget, int *capped) {
    if (capped) *capped = 0;
    CHECK(cache_len >= 1 && elem >= 1);
    // one sequence's cache; a length whose bytes would not fit in a size_t fits no budget
    const double want = (double)kvcache_bytes(c, 1, 1, elem) * cache_len;
    if (want > (double)BENCH_SIZE_MAX) return 0;
    const size_t per_seq = kvcache_bytes(c, 1, cache_len, elem);
    size_t b = budget / per_seq;  // kvcache_bytes is per_seq x B exactly
    if (b > BENCH_BUDGET_BATCH_MAX) {
        b = BENCH_BUDGET_BATCH_MAX;
        if (capped) *capped = 1;
    }
    CHECK(kvcache_bytes(c, (int)b, cache_len, elem) <= budget);
    return (int)b;
}

int bench_budget_max_ctx(const GPTConfig *c, size_t elem, size_t budget, int *capped) {
    if (capped) *capped = 0;
    CHECK(elem >= 1);
    const size_t per_pos = kvcache_bytes(c, 1, 1, elem);
    size_t t = budget / per_pos;
    if (t > (size_t)c->block_size) {
        t = (size_t)c->block_size;
        if (capped) *capped = 1;
    }
    return (int)t;
}

// The memory the machine offers a new process now: MemAvailable of
// /proc/meminfo (NAN where there is none).
static double mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return NAN;
    char line[256];
    double kib = NAN;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024.0;
}

// What a decode measurement of B sequences with a cache of max_T positions
// allocates: the weights, the cache, and infer_init's buffers of B x chunk
// rows (its attention scratch left out; pages are touched by B rows, or one
// chunk, at a time, so this is an upper bound on what it uses).
static double infer_need_bytes(const GPTConfig *c, int B, int ctx, int max_T, size_t elem, WeightDtype wdt) {
    const double N = (double)B * bench_infer_chunk(B, ctx), C = c->n_embd, NH = c->n_head;
    const double r = c->kv_lora_rank, W = r + c->rope_head_dim, mla = gpt_is_latent(c) ? 1 : 0;
    const double row = 8 * C + 2 + gpt_qkvw_rows(c) + c->vocab_size + mla * (W + r + 1 + NH * W + NH * r);
    return gpt_weight_bytes(c, wdt, 0) + (double)kvcache_bytes(c, B, max_T, elem) + 4.0 * N * row;
}

// ----------------------------------------------------------------------------
// one child per measurement

// Run this binary with argv + extra flags; collect its RESULT line into
// `line` and its peak RSS. Returns 0, or -1 if the child failed.
static int run_child(int argc, char **argv, const char **extra, int nextra, char *line, size_t len,
                     size_t *peak_rss) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char **av = calloc_check((size_t)argc + nextra + 1, sizeof(char *));
        for (int i = 0; i < argc; i++) av[i] = argv[i];
        for (int i = 0; i < nextra; i++) av[argc + i] = (char *)extra[i];
        execv("/proc/self/exe", av);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    line[0] = '\0';
    char buf[4096];
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "RESULT ", 7)) snprintf(line, len, "%s", buf + 7);
    fclose(f);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) die("wait4: %s", strerror(errno));
    *peak_rss = (size_t)ru.ru_maxrss * 1024;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && line[0] ? 0 : -1;
}

static void parse_doubles(const char *s, double *out, int n) {
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(s, &end);
        s = end;
    }
}

// One measurement: training or its GEMM-only floor (gemm = 1) at one
// attention setting (batch 0 for both), or inference at one (setting, batch,
// ctx, kv_dtype, weight_dtype). Its rounds pool their timings here.
typedef struct {
    int kv, gemm, batch, ctx;  // kv: the attention setting (bench_model_config); ctx > 0: inference
    KVDtype dt;
    WeightDtype wdt;
    BenchBudget budget;        // with --kv_budget: what set batch; NO_FIT and NO_MEMORY jobs do not run
    int budget_batch, budget_batch_capped;  // the budget's batch (batch, unless it is 0 or exceeds memory)
    double need;                            // the decode measurement's memory (infer_need_bytes)
    double *tok;  // train, gemm or decode tok/s: repeats per round, rounds x repeats
    int ntok;
    double prefill[BENCH_MAX_ROUNDS];  // one per round
    int nprefill;
    double read[BENCH_MAX_ROUNDS];  // with the roofline: the read bandwidth after each round (worker_read)
    int nread;
    size_t rss;  // the largest peak RSS of its rounds
    int failed;  // a round failed: no more rounds, no row (training: "-")
} Job;

// "n_kv_head 4" or "kv_lora_rank 64": the setting of a config, for progress lines.
static const char *setting_name(const GPTConfig *c, char *buf, size_t len) {
    if (gpt_is_latent(c)) snprintf(buf, len, "kv_lora_rank %d", c->kv_lora_rank);
    else snprintf(buf, len, "n_kv_head %d", c->n_kv_head);
    return buf;
}

// Round `round` of one job in a child process of its own.
static void run_job(const BenchConfig *bc, int argc, char **argv, Job *jb, int round, int *failures) {
    char s_set[32], s_b[16], s_c[16], line[4096], what[160], name[48];
    size_t rss;
    const GPTConfig c = bench_model_config(bc, jb->kv);
    setting_name(&c, name, sizeof name);
    snprintf(s_set, sizeof s_set, "--_setting=%d", jb->kv);
    snprintf(s_b, sizeof s_b, "%d", jb->batch);
    snprintf(s_c, sizeof s_c, "%d", jb->ctx);
    const char *targs[] = {jb->gemm ? "--_worker=gemm" : "--_worker=train", s_set};
    const char *iargs[] = {"--_worker=infer", s_set, "--batch_size", s_b, "--ctx", s_c, "--kv_dtype",
                           kv_dtype_name(jb->dt), "--weight_dtype", weight_dtype_name(jb->wdt)};
    if (jb->ctx) snprintf(what, sizeof what, "%s, batch %d, ctx %d, %s cache, %s weights", name, jb->batch, jb->ctx,
                          kv_dtype_name(jb->dt), weight_dtype_name(jb->wdt));
    else snprintf(what, sizeof what, "%s: %s", name, jb->gemm ? "training's GEMMs alone" : "training");
    if (bc->rounds > 1) fprintf(stderr, "bench: round %d/%d: %s ...\n", round + 1, bc->rounds, what);
    else fprintf(stderr, "bench: %s ...\n", what);
    const int ok = jb->ctx ? run_child(argc, argv, iargs, 10, line, sizeof line, &rss) == 0
                           : run_child(argc, argv, targs, 2, line, sizeof line, &rss) == 0;
    if (!ok) {
        fprintf(stderr, "bench: measurement failed (%s)\n", what);
        jb->failed = 1;
        (*failures)++;
        return;
    }
    if (rss > jb->rss) jb->rss = rss;
    if (jb->ctx) {
        double vals[2 + BENCH_MAX_REPEATS];
        parse_doubles(line + strlen("infer"), vals, 2 + bc->repeats);
        jb->prefill[jb->nprefill++] = vals[0];
        memcpy(jb->tok + jb->ntok, vals + 2, (size_t)bc->repeats * sizeof(double));
        if (bc->roofline) {  // the bandwidth of this moment, for this row's fraction of it
            const char *rargs[] = {"--_worker=read"};
            double gbs;
            if (run_child(argc, argv, rargs, 1, line, sizeof line, &rss) == 0 && sscanf(line, "read %lf", &gbs) == 1) {
                jb->read[jb->nread++] = gbs;
                fprintf(stderr, "bench: read bandwidth now %.3f GB/s\n", gbs);
            } else {
                fprintf(stderr, "bench: read bandwidth measurement failed (after %s)\n", what);
                (*failures)++;
            }
        }
    } else {
        parse_doubles(line + strlen(jb->gemm ? "gemm" : "train"), jb->tok + jb->ntok, bc->repeats);
    }
    jb->ntok += bc->repeats;
}

// The roofline in a child: prints "LABEL: sgemm peak ..." and sets the two
// figures, or NAN and returns 1 if the measurement failed.
static int roofline(int argc, char **argv, const char *label, double *gflops, double *gbs) {
    char line[4096];
    size_t rss;
    int threads = 0;
    double ours, openblas;
    const char *rargs[] = {"--_worker=roofline"};
    fprintf(stderr, "bench: %s (sgemm %d^3, %zu MiB read) ...\n", label, ROOFLINE_GEMM_N,
            (size_t)ROOFLINE_READ_BYTES >> 20);
    if (run_child(argc, argv, rargs, 1, line, sizeof line, &rss) != 0 ||
        sscanf(line, "roofline %lf %lf %d %lf %lf", gflops, gbs, &threads, &ours, &openblas) != 5) {
        fprintf(stderr, "bench: roofline measurement failed\n");
        *gflops = *gbs = NAN;
        return 1;
    }
    printf("%s: sgemm peak %.1f GFLOP/s (gqa.c gemm %.1f, OpenBLAS %.1f), memory read %.1f GB/s (measured, %d "
           "threads)\n",
           label, *gflops, ours, openblas, *gbs, threads);
    return 0;
}

// A budget job: its batch, the budget's, and whether it runs: not when not
// one sequence fits, nor when the measurement would need more than 90% of
// the memory available (the batch is then 0: no row claims a measurement).
static void budget_job(const BenchConfig *bc, Job *jb, double mem_available) {
    const GPTConfig c = bench_model_config(bc, jb->kv);
    const size_t elem = kv_dtype_bytes(jb->dt);
    const int max_T = jb->ctx + bc->decode_tokens;  // the cache worker_infer allocates
    jb->budget_batch = bench_budget_batch(&c, max_T, elem, bc->kv_budget, &jb->budget_batch_capped);
    jb->batch = jb->budget_batch;
    jb->budget = BUDGET_FITS;
    if (jb->budget_batch == 0) {
        jb->budget = BUDGET_NO_FIT;
        return;
    }
    jb->need = infer_need_bytes(&c, jb->budget_batch, jb->ctx, max_T, elem, jb->wdt);
    if (!isnan(mem_available) && jb->need > 0.9 * mem_available) jb->budget = BUDGET_NO_MEMORY, jb->batch = 0;
}

// ----------------------------------------------------------------------------
// the run

int bench_run(const BenchConfig *bc, int argc, char **argv) {
    // the CSV grows in memory and is written atomically at the end
    char *csv_text = NULL;
    size_t csv_len = 0;
    FILE *csv = NULL;
    if (bc->csv[0]) {
        csv = open_memstream(&csv_text, &csv_len);
        if (!csv) die("open_memstream: %s", strerror(errno));
        report_csv_header(csv);
    }
    const int do_train = (bc->measure >> BENCH_TRAIN) & 1, do_gemm = (bc->measure >> BENCH_GEMM) & 1;
    const int do_infer = (bc->measure >> BENCH_INFER) & 1;
    // with a budget one batch per (setting, ctx, kv_dtype, weight_dtype), the budget's
    const int nk = bench_num_settings(bc), nb = bc->kv_budget ? 1 : bc->batch_size.n, nc = bc->ctx.n;
    const int nd = bc->kv_dtype.n, nw = bc->weight_dtype.n;
    char measure[32];
    snprintf(measure, sizeof measure, "%s%s%s", do_train ? ",train" : "", do_gemm ? ",gemm" : "",
             do_infer ? ",infer" : "");
    char pos[64], mla[64] = "";
    snprintf(pos, sizeof pos, bc->model.pos == GPT_POS_ROPE ? "%s rope_theta=%g" : "%s", gpt_pos_names[bc->model.pos],
             (double)bc->model.rope_theta);
    if (bc->kv_lora_rank.n)  // what the MLA settings share
        snprintf(mla, sizeof mla, " rope_head_dim=%d latent_norm=%d", bc->model.rope_head_dim, bc->model.latent_norm);
    printf("gqa bench: vocab_size=%d n_layer=%d n_head=%d n_embd=%d block_size=%d bias=%d pos=%s%s; training at batch "
           "%d x %d (%d shards); %d decode steps; %d repeats x %d rounds; %d threads; measure=%s\n",
           bc->model.vocab_size, bc->model.n_layer, bc->model.n_head, bc->model.n_embd, bc->model.block_size,
           bc->model.bias, pos, mla, bc->train_batch_size, bc->train_block_size,
           train_shards(bc->shards, bc->train_batch_size), bc->decode_tokens, bc->repeats, bc->rounds,
           omp_get_max_threads(), measure + 1);
    int failures = 0;
    double peak_gflops = NAN, read_gbs = NAN;  // the roofline
    if (bc->roofline) {
        failures += roofline(argc, argv, "roofline", &peak_gflops, &read_gbs);
    } else {
        printf("roofline: not measured (--roofline=false): no MFU, no fraction of bandwidth\n");
    }
    const double mem_available = mem_available_bytes();
    if (bc->kv_budget && do_infer) {
        char b[32], m[32];
        format_bytes((double)bc->kv_budget, b, sizeof b);
        if (isnan(mem_available)) snprintf(m, sizeof m, "unknown");
        else format_bytes(mem_available, m, sizeof m);
        printf("kv_budget=%s (%zu bytes): each row's batch is the largest whose KV cache of ctx + decode_tokens (%d) "
               "positions per sequence fits it (at most %d; --batch_size unused); rows whose cache, weights and "
               "buffers exceed 90%% of the memory available now (%s) are not run\n",
               b, bc->kv_budget, bc->decode_tokens, BENCH_BUDGET_BATCH_MAX, m);
    }
    report_header(bc->n_kv_head.v[0], bc->kv_budget && do_infer);

    // The jobs in table order: per attention setting its training run, its
    // GEMM-only run, then its inference runs (batch x ctx x kv_dtype x
    // weight_dtype). Round r
    // runs every job once; the last round prints each row as soon as its job
    // is done.
    const int n_own = do_train + do_gemm;  // the jobs without batch at the head of each group
    const int per_kv = n_own + (do_infer ? nb * nc * nd * nw : 0), njobs = nk * per_kv;
    Job *jobs = calloc_check((size_t)njobs, sizeof(Job));
    for (int i = 0; i < nk; i++) {
        Job *jb = jobs + (size_t)i * per_kv;
        if (do_train) jb++->kv = i;
        if (do_gemm) jb->kv = i, jb++->gemm = 1;
        for (int j = 0; do_infer && j < nb; j++)
            for (int k = 0; k < nc; k++)
                for (int d = 0; d < nd; d++)
                    for (int e = 0; e < nw; e++, jb++) {
                        jb->kv = i, jb->batch = bc->batch_size.v[j], jb->ctx = bc->ctx.v[k];
                        jb->dt = (KVDtype)bc->kv_dtype.v[d], jb->wdt = (WeightDtype)bc->weight_dtype.v[e];
                        if (bc->kv_budget) budget_job(bc, jb, mem_available);
                    }
    }
    for (int i = 0; i < njobs; i++) jobs[i].tok = calloc_check((size_t)bc->rounds * bc->repeats, sizeof(double));
    for (int round = 0; round < bc->rounds; round++) {
        const int last = round == bc->rounds - 1;
        for (int ji = 0; ji < njobs; ji++) {
            Job *jb = jobs + ji;
            const int skip = jb->budget == BUDGET_NO_FIT || jb->budget == BUDGET_NO_MEMORY;  // a row, no run
            if (!jb->failed && !skip) run_job(bc, argc, argv, jb, round, &failures);
            // the row: an inference job with its setting's training figures,
            // or without inference that setting's last job without batch
            const int row = jb->ctx ? !jb->failed : !do_infer && ji % per_kv == n_own - 1;
            if (!last || !row) continue;
            GPTConfig c = bench_model_config(bc, jb->kv);
            BenchRow r = {.n_kv_head = c.n_kv_head, .kv_lora_rank = c.kv_lora_rank, .rope_head_dim = c.rope_head_dim,
                          .kv_dtype = "-", .weight_dtype = "-", .params = gpt_num_parameters(&c)};
            bench_attention_name(&c, r.attention, sizeof r.attention);
            r.train = r.train_sd = r.train_median = r.train_gflops = r.train_mfu = NAN;
            r.prefill = r.decode = r.decode_sd = r.decode_median = r.decode_x = r.decode_gbs = r.decode_bw_frac = NAN;
            r.kv_bytes = r.rss = r.gemm = r.train_gemm_frac = r.weight_bytes = NAN;
            r.step_bytes = r.step_flops = r.step_fma_flops = r.read_gbs = r.roofline_tok_s = r.roofline_frac = NAN;
            const Job *tj = do_train ? jobs + (size_t)jb->kv * per_kv : NULL;
            const Job *gj = do_gemm ? jobs + (size_t)jb->kv * per_kv + do_train : NULL;
            if (tj && !tj->failed) {
                r.train = mean_of(tj->tok, tj->ntok), r.train_sd = sd_of(tj->tok, tj->ntok);
                r.train_median = median_of(tj->tok, tj->ntok);
                r.train_gflops = train_flops_per_token(&c, bc->train_block_size) * r.train / 1e9;
                r.train_mfu = r.train_gflops / peak_gflops;  // NAN without the roofline
            }
            if (gj && !gj->failed) {
                r.gemm = median_of(gj->tok, gj->ntok);
                r.train_gemm_frac = r.train_median / r.gemm;  // NAN without train
            }
            if (jb->ctx && bc->kv_budget) {
                const size_t elem = kv_dtype_bytes(jb->dt);
                r.kv_budget = bc->kv_budget, r.budget = jb->budget;
                r.budget_batch = jb->budget_batch, r.budget_batch_capped = jb->budget_batch_capped;
                r.budget_kv_bytes = (double)kvcache_bytes(&c, jb->budget_batch, jb->ctx + bc->decode_tokens, elem);
                r.budget_seq_bytes = (double)kvcache_bytes(&c, 1, 1, elem) * (jb->ctx + bc->decode_tokens);
                r.budget_need_bytes = jb->need, r.mem_available = mem_available;
                r.budget_max_ctx = bench_budget_max_ctx(&c, elem, bc->kv_budget, &r.budget_max_ctx_capped);
            }
            if (jb->ctx) {  // a budget row not run has these, too
                r.ctx = jb->ctx, r.kv_dtype = kv_dtype_name(jb->dt), r.weight_dtype = weight_dtype_name(jb->wdt);
                r.weight_bytes = gpt_weight_bytes(&c, jb->wdt, 0);
            }
            if (jb->ctx && jb->batch) {
                r.batch = jb->batch;
                r.prefill = median_of(jb->prefill, jb->nprefill);
                r.decode = mean_of(jb->tok, jb->ntok), r.decode_sd = sd_of(jb->tok, jb->ntok);
                r.decode_median = median_of(jb->tok, jb->ntok);
                const Job *ref = jobs + (ji - jb->kv * per_kv);  // the same batch, ctx, dtypes at setting 0
                if (!ref->failed && ref->ntok) r.decode_x = r.decode_median / median_of(ref->tok, ref->ntok);
                // the bytes a cache of exactly ctx positions needs
                const size_t elem = kv_dtype_bytes(jb->dt);
                r.kv_bytes = (double)gpt_kv_bytes_per_token(&c, elem) * jb->batch * jb->ctx, r.rss = (double)jb->rss;
                // a decode step reads every weight once in its dtype (of wpe one row; none
                // with rope) and the cache of ctx positions of every sequence, and does the
                // FLOPs of bench_decode_step; steps/s = tok/s / batch
                const BenchStep step = bench_decode_step(&c, jb->batch, jb->ctx, elem, jb->wdt);
                r.step_bytes = step.bytes, r.step_flops = step.flops, r.step_fma_flops = step.fma_flops;
                r.decode_gbs = step.bytes * r.decode / jb->batch / 1e9;
                // the bandwidth beside this row's rounds (the first reading if those failed)
                r.read_gbs = jb->nread ? median_of(jb->read, jb->nread) : read_gbs;
                r.decode_bw_frac = r.decode_gbs / r.read_gbs;  // NAN without the roofline
                // the roofline: a step takes at least max(FMA time at the peak, read time at the bandwidth)
                r.roofline_tok_s = jb->batch / bench_roofline_seconds(step, peak_gflops, r.read_gbs, &r.bound);
                r.roofline_frac = r.decode / r.roofline_tok_s;
            }
            report_row(&r);
            if (csv) report_csv_row(csv, &r);
        }
    }
    for (int i = 0; i < njobs; i++) free(jobs[i].tok);
    free(jobs);
    if (bc->roofline) {  // a shared host's bandwidth can move by half within a long run
        double g, b;
        printf("\n");
        failures += roofline(argc, argv, "roofline at the end", &g, &b);
    }
    if (csv) {
        char err[1024];
        if (fclose(csv) != 0) die("open_memstream: %s", strerror(errno));
        if (write_file_atomic(bc->csv, csv_text, csv_len, err, sizeof err) != 0) die("%s", err);
        free(csv_text);
        fprintf(stderr, "bench: wrote %s\n", bc->csv);
    }
    return failures ? 1 : 0;
}

void bench_worker(const BenchConfig *bc, BenchWorker w, int setting) {
    switch (w) {
    case WORKER_TRAIN: worker_train(bc, setting); break;
    case WORKER_GEMM: worker_gemm(bc, setting); break;
    case WORKER_INFER:
        worker_infer(bc, setting, bc->batch_size.v[0], bc->ctx.v[0], (KVDtype)bc->kv_dtype.v[0],
                     (WeightDtype)bc->weight_dtype.v[0]);
        break;
    case WORKER_ROOFLINE: worker_roofline(); break;
    case WORKER_READ: worker_read(); break;
    case WORKER_NONE: break;
    }
}
