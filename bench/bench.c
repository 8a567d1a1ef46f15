/*
 * bench.c: `gqa bench`, tokens/sec and memory across n_kv_head settings.
 *
 * The parent expands the lists (n_kv_head x batch x ctx x kv_dtype) and runs
 * every measurement in a fresh child process (fork + exec of this binary),
 * so each peak-resident-memory figure belongs to one setting alone. Children
 * print one "RESULT ..." line on a pipe; the parent prints a Markdown table
 * (mean +- stddev over repeats, as llama-bench) and writes CSV. With --rounds
 * every measurement runs in several children, round-robin over the settings,
 * and the speed-up column compares medians of the pooled timings.
 *
 * Weights are random (seeded); timing does not depend on their values.
 * Training tok/s: forward + backward + AdamW at (batch_size, train block).
 * Prefill tok/s: one prompt of ctx tokens (chunks of 512), shared by the
 * batch: its cache is copied to every sequence, as `gqa sample` does.
 * Decode tok/s: decode_tokens steps with the cache already filled to ctx
 * (batch x steps / seconds; the LM head included, sampling not).
 * GEMM-only tok/s: the training step's linear-layer gemm() calls alone (see
 * worker_gemm), the most a step made of them could reach.
 * --measure picks any of training, GEMM-only and inference; what is skipped
 * prints as "-".
 *
 * The roofline: a child of its own first measures the machine's sgemm peak
 * (the faster of OpenBLAS and our gemm()) and memory read bandwidth (not the
 * parent, which would then keep OpenBLAS and OpenMP thread pools, spinning
 * for a while after work, beside every measurement it forks).
 * Training is then also given as GFLOP/s (nanoGPT's 6N + 12 L C T FLOPs per
 * token) and MFU against that peak; decode as GB/s read (all weights plus
 * the K and V of ctx positions per step) and the fraction of the bandwidth.
 * A second child measures the roofline again after the last row, so the
 * output brackets what the rows met on a host whose bandwidth drifts.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../infer/infer.h"
#include "../model/gemm.h"
#include "../model/gpt.h"
#include "../model/kvcache.h"
#include "../model/ops.h"
#include "../train/adamw.h"
#include "../train/train.h"
#include "../util/rng.h"
#include "../util/util.h"

#define MAX_LIST 16
#define MAX_REPEATS 64
#define MAX_ROUNDS 16

typedef struct {
    TrainConfig tc;  // shape (n_kv_head unused: see the list), batch_size, dropout, seed, threads
    int vocab_size, train_block_size, repeats, rounds, decode_tokens, train_steps, roofline;
    char n_kv_head[OPT_STR_MAX], ctx[OPT_STR_MAX], batch[OPT_STR_MAX], kv_dtype[OPT_STR_MAX], csv[OPT_STR_MAX];
    char measure[OPT_STR_MAX];  // a comma list of train, gemm, infer
    char worker[OPT_STR_MAX];   // internal: "train", "gemm", "infer" or "roofline" in a child
    char gemm[OPT_STR_MAX];     // the linear layers' backend: ours, openblas, alternate (gemm.h)
} BenchConfig;

// Parse "8,4,2,1" into ints. Returns the count, or -1 with err.
static int parse_int_list(const char *key, const char *s, int *out, int max, char *err, size_t errlen) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > (1 << 24) || (*end != ',' && *end != '\0')) {
            snprintf(err, errlen, "option '%s': '%s' is not a comma-separated list of positive integers", key, s);
            return -1;
        }
        if (n == max) {
            snprintf(err, errlen, "option '%s': more than %d values", key, max);
            return -1;
        }
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (n == 0) snprintf(err, errlen, "option '%s' is empty", key);
    return n > 0 ? n : -1;
}

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

// The shape of the training keys, with one n_kv_head of the list.
static GPTConfig model_config(const BenchConfig *bc, int n_kv_head) {
    GPTConfig c = train_model_config(&bc->tc, bc->vocab_size);
    c.n_kv_head = n_kv_head;
    return c;
}

// ----------------------------------------------------------------------------
// workers (run in a child process)

// The model of a training measurement, with random weights.
static void train_model(GPT *m, const BenchConfig *bc, int nkv) {
    GPTConfig c = model_config(bc, nkv);
    if (bc->train_block_size > c.block_size)
        die("train_block_size %d exceeds block_size %d", bc->train_block_size, c.block_size);
    if (gpt_init(m, &c, (uint64_t)bc->tc.seed) != 0) die("%s", m->error);
}

static void worker_train(const BenchConfig *bc, int nkv) {
    const int B = bc->tc.batch_size, T = bc->train_block_size;
    GPT m;
    train_model(&m, bc, nkv);
    const GPTConfig c = m.config;
    m.training = 1;
    AdamW opt;
    adamw_init(&opt, m.num_parameters, 0.9f, 0.99f, 1e-8f, 0.1f);
    int *x = malloc_check((size_t)B * T * sizeof(int)), *y = malloc_check((size_t)B * T * sizeof(int));
    uint64_t rng = 1;
    for (int i = 0; i < B * T; i++) x[i] = (int)(rng_u64(&rng) % c.vocab_size), y[i] = (int)(rng_u64(&rng) % c.vocab_size);
    const int shards = train_shards(&bc->tc, B);
    // --gemm=alternate: even steps on our GEMM, odd ones on OpenBLAS's, so
    // that both see the same state of a noisy machine; their forward+backward
    // times are summed apart (not the warm-up's: its first step pays for
    // first touches of the activations)
    const int alternate = !strcmp(bc->gemm, "alternate");
    double tps[MAX_REPEATS], fb[2] = {0, 0};
    int nfb[2] = {0, 0};
    for (int r = -1; r < bc->repeats; r++) {  // r = -1: warm-up
        double t0 = now_seconds();
        for (int s = 0; s < bc->train_steps; s++) {
            if (alternate) gemm_use_openblas(s & 1);
            const double f0 = now_seconds();
            if (gpt_forward_backward(&m, x, y, B, T, shards) != 0) die("%s", m.error);
            if (r >= 0) fb[s & 1] += now_seconds() - f0, nfb[s & 1]++;
            adamw_step(&opt, &m, 1e-4f);
        }
        if (r >= 0) tps[r] = (double)bc->train_steps * B * T / (now_seconds() - t0);
    }
    if (alternate && nfb[0] && nfb[1])
        fprintf(stderr, "gemm alternate, n_kv_head %d: forward+backward %.3f ms a step with ours, %.3f with "
                        "OpenBLAS: ours/OpenBLAS %.4f (%d + %d steps)\n",
                nkv, 1e3 * fb[0] / nfb[0], 1e3 * fb[1] / nfb[1], (fb[0] / nfb[0]) / (fb[1] / nfb[1]), nfb[0], nfb[1]);
    printf("RESULT train");
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    free(x), free(y);
    adamw_free(&opt);
    gpt_free(&m);
}

// The training step's linear-layer products and nothing else, as the step
// calls them: each shard on a thread of its own, per layer qkv, attention
// projection, fc and fc projection, then the tied LM head, forward and
// backward (input gradient and weight gradient), on buffers of the step's
// shapes and the model's weights, without biases; the shards join once a
// step, as the training pass does. Attention, LayerNorm, GELU, the loss and
// AdamW cost nothing here, so its tok/s is the most a step made of these
// gemm() calls could reach: the GEMM-only floor of the training figure.
static void worker_gemm(const BenchConfig *bc, int nkv) {
    const int B = bc->tc.batch_size, T = bc->train_block_size;
    GPT m;
    train_model(&m, bc, nkv);
    const GPTConfig c = m.config;
    const int L = c.n_layer, C = c.n_embd, V = c.vocab_size, QKV = (int)gpt_qkv_width(&c);
    const int shards = train_shards(&bc->tc, B);
    enum { NLIN = 4 };
    const int in[NLIN] = {C, C, C, 4 * C}, out[NLIN] = {QKV, C, 4 * C, C};
    double tps[MAX_REPEATS], t0 = 0.0;
    omp_set_max_active_levels(1);  // the kernels run single-threaded inside, as in the training pass
#pragma omp parallel num_threads(shards)
    {
        const int s = omp_get_thread_num(), N = (B * (s + 1) / shards - B * s / shards) * T;
        // every layer's inputs and outputs kept, as the step keeps its activations
        size_t layer = 0;
        for (int j = 0; j < NLIN; j++) layer += (size_t)N * (in[j] + out[j]);
        float *act = calloc_check((size_t)L * layer + (size_t)N * (C + V + 4 * C), sizeof(float));
        float *lnf = act + (size_t)L * layer, *logits = lnf + (size_t)N * C, *dinp = logits + (size_t)N * V;
        float *grads_memory = calloc_check(m.num_parameters, sizeof(float));
        ParameterTensors w = m.params, g;
        gpt_point_params(&g, grads_memory, m.param_sizes);
        const float *wl[NLIN] = {w.qkvw, w.attprojw, w.fcw, w.fcprojw};
        float *gl[NLIN] = {g.qkvw, g.attprojw, g.fcw, g.fcprojw};
        for (int r = -1; r < bc->repeats; r++) {  // r = -1: warm-up
#pragma omp barrier
#pragma omp master
            t0 = now_seconds();
            for (int step = 0; step < bc->train_steps; step++) {
                float *a = act;
                for (int l = 0; l < L; l++)
                    for (int j = 0; j < NLIN; a += (size_t)N * (in[j] + out[j]), j++)
                        matmul_forward(a + (size_t)N * in[j], a, wl[j] + (size_t)l * out[j] * in[j], NULL, N, in[j],
                                       out[j]);
                matmul_forward(logits, lnf, w.wte, NULL, N, C, V);
                matmul_backward(dinp, g.wte, NULL, logits, lnf, w.wte, N, C, V);
                for (int l = L - 1; l >= 0; l--)
                    for (int j = NLIN - 1; j >= 0; j--) {
                        a -= (size_t)N * (in[j] + out[j]);
                        const size_t o = (size_t)l * out[j] * in[j];
                        matmul_backward(dinp, gl[j] + o, NULL, a + (size_t)N * in[j], a, wl[j] + o, N, in[j], out[j]);
                    }
#pragma omp barrier
            }
#pragma omp master
            if (r >= 0) tps[r] = (double)bc->train_steps * B * T / (now_seconds() - t0);
        }
        free(grads_memory);
        free(act);
    }
    printf("RESULT gemm");
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    gpt_free(&m);
}

static void worker_infer(const BenchConfig *bc, int nkv, int B, int ctx, KVDtype dt) {
    GPTConfig c = model_config(bc, nkv);
    c.dropout = 0.0f;
    const int steps = bc->decode_tokens, max_T = ctx + steps;
    if (max_T > c.block_size) die("ctx %d + decode_tokens %d exceeds block_size %d", ctx, steps, c.block_size);
    GPT m;
    if (gpt_init(&m, &c, (uint64_t)bc->tc.seed) != 0) die("%s", m.error);
    Inference inf;
    const int chunk = ctx < 512 ? ctx : 512;
    if (infer_init(&inf, &m, B, max_T, chunk, dt) != 0) die("%s", inf.error);
    int *tok = malloc_check((size_t)B * chunk * sizeof(int));
    uint64_t rng = 2;
    for (int i = 0; i < B * chunk; i++) tok[i] = (int)(rng_u64(&rng) % c.vocab_size);
    // prefill: one prompt of ctx tokens shared by the batch (as gqa sample
    // does), so the cache is filled to ctx with real K/V for every sequence
    int *prompt = malloc_check((size_t)ctx * sizeof(int));
    for (int i = 0; i < ctx; i++) prompt[i] = (int)(rng_u64(&rng) % c.vocab_size);
    double t0 = now_seconds();
    if (infer_prefill_shared(&inf, prompt, ctx) != 0) die("%s", inf.error);
    double prefill = (double)ctx / (now_seconds() - t0);
    free(prompt);
    // decode: steps tokens at positions ctx.., repeated from ctx each time
    double tps[MAX_REPEATS];
    for (int r = -1; r < bc->repeats; r++) {
        t0 = now_seconds();
        for (int s = 0; s < steps; s++)
            if (infer_forward(&inf, tok, 1, ctx + s, 0) != 0) die("%s", inf.error);
        if (r >= 0) tps[r] = (double)B * steps / (now_seconds() - t0);
    }
    printf("RESULT infer %.3f %zu", prefill, inf.cache.bytes);
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    free(tok);
    infer_free(&inf);
    gpt_free(&m);
}

// The roofline's sizes are fixed and small enough to take well under 2 s.
#define ROOFLINE_GEMM_N 2048                      // (N, N) = (N, N) @ (N, N): 17.2 GFLOP a call
#define ROOFLINE_READ_BYTES ((size_t)512 << 20)   // far beyond the L3 (16-32 MiB here)
#define ROOFLINE_LANES 64                         // independent partial sums per thread
#define ROOFLINE_PREFETCH 2048                    // bytes ahead of the second read kernel

static volatile float roofline_sink;  // keeps the results of the timed loops alive

// GB/s of one parallel streaming sum over buf; with prefetch, each 256-byte
// block also asks for the one ROOFLINE_PREFETCH bytes ahead, non-temporally.
static double roofline_read(const float *buf, size_t blocks, int prefetch) {
    float total = 0.0f;
    double t0 = now_seconds();
#pragma omp parallel reduction(+ : total)
    {
        // many partial sums, so the adds are not one dependent chain
        float acc[ROOFLINE_LANES] = {0};
#pragma omp for schedule(static)
        for (size_t i = 0; i < blocks; i++) {
            const float *p = buf + i * ROOFLINE_LANES;
            if (prefetch)  // one cache line (16 floats) at a time; 0, 0: read, no temporal locality
                for (int j = 0; j < ROOFLINE_LANES; j += 16)
                    __builtin_prefetch((const char *)(p + j) + ROOFLINE_PREFETCH, 0, 0);
            for (int j = 0; j < ROOFLINE_LANES; j++) acc[j] += p[j];
        }
        for (int j = 0; j < ROOFLINE_LANES; j++) total += acc[j];
    }
    double g = (double)blocks * ROOFLINE_LANES * sizeof(float) / (now_seconds() - t0) / 1e9;
    roofline_sink = total;
    return g;
}

// The machine's limits with this process's threads. The sgemm peak is the
// faster of OpenBLAS's cblas_sgemm and our gemm() (on a Zen 5 host OpenBLAS
// 0.3.21's AVX2 kernel reaches ~60% of ours, so its figure alone would not
// be the machine's). The read bandwidth is the best pass of two streaming
// sums (plain, and with a prefetch ahead), alternated, over a buffer much
// larger than the caches, after a warm-up pass.
static void worker_roofline(void) {
    double ours, openblas;
    const double gflops = gemm_peak(ROOFLINE_GEMM_N, &ours, &openblas);

    const size_t count = ROOFLINE_READ_BYTES / sizeof(float), blocks = count / ROOFLINE_LANES;
    float *buf = malloc_check(ROOFLINE_READ_BYTES);  // (a prefetch past its end does not fault)
    advise_huge_pages(buf, ROOFLINE_READ_BYTES);
    // first touch with the static schedule of the reads: each thread's pages
    // are its own (one NUMA node here, but the habit costs nothing)
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < blocks; i++)
        for (int j = 0; j < ROOFLINE_LANES; j++) buf[i * ROOFLINE_LANES + j] = 1.0f;
    double gbs = 0;
    for (int r = 0; r < 7; r++) {  // r = 0: warm-up
        double g = roofline_read(buf, blocks, r % 2);
        if (r > 0 && g > gbs) gbs = g;
    }
    free(buf);
    printf("RESULT roofline %.3f %.3f %d %.3f %.3f\n", gflops, gbs, omp_get_max_threads(), ours, openblas);
}

// ----------------------------------------------------------------------------
// the parent: one child per measurement

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
// n_kv_head (batch 0 for both), or inference at one (n_kv_head, batch, ctx,
// kv_dtype). Its rounds pool their timings here.
typedef struct {
    int kv, gemm, batch, ctx;  // kv: index into the n_kv_head list
    KVDtype dt;
    double *tok;  // train, gemm or decode tok/s: repeats per round, rounds x repeats
    int ntok;
    double prefill[MAX_ROUNDS];  // one per round
    int nprefill;
    size_t rss;  // the largest peak RSS of its rounds
    int failed;  // a round failed: no more rounds, no row (training: "-")
} Job;

// Round `round` of one job in a child process of its own.
static void run_job(const BenchConfig *bc, int argc, char **argv, Job *jb, int kv, int round, int *failures) {
    char s_kv[16], s_b[16], s_c[16], line[4096], what[128];
    size_t rss;
    snprintf(s_kv, sizeof s_kv, "%d", kv);
    snprintf(s_b, sizeof s_b, "%d", jb->batch);
    snprintf(s_c, sizeof s_c, "%d", jb->ctx);
    const char *targs[] = {jb->gemm ? "--_worker=gemm" : "--_worker=train", "--n_kv_head", s_kv};
    const char *iargs[] = {"--_worker=infer", "--n_kv_head", s_kv, "--batch", s_b, "--ctx", s_c,
                           "--kv_dtype", kv_dtype_name(jb->dt)};
    if (jb->batch) snprintf(what, sizeof what, "n_kv_head %d, batch %d, ctx %d, %s", kv, jb->batch, jb->ctx,
                            kv_dtype_name(jb->dt));
    else snprintf(what, sizeof what, "n_kv_head %d: %s", kv, jb->gemm ? "training's GEMMs alone" : "training");
    if (bc->rounds > 1) fprintf(stderr, "bench: round %d/%d: %s ...\n", round + 1, bc->rounds, what);
    else fprintf(stderr, "bench: %s ...\n", what);
    const int ok = jb->batch ? run_child(argc, argv, iargs, 9, line, sizeof line, &rss) == 0
                             : run_child(argc, argv, targs, 3, line, sizeof line, &rss) == 0;
    if (!ok) {
        fprintf(stderr, "bench: measurement failed (%s)\n", what);
        jb->failed = 1;
        (*failures)++;
        return;
    }
    if (rss > jb->rss) jb->rss = rss;
    if (jb->batch) {
        double vals[2 + MAX_REPEATS];
        parse_doubles(line + strlen("infer"), vals, 2 + bc->repeats);
        jb->prefill[jb->nprefill++] = vals[0];
        memcpy(jb->tok + jb->ntok, vals + 2, (size_t)bc->repeats * sizeof(double));
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
    fprintf(stderr, "bench: %s (sgemm %d^3, %zu MiB read) ...\n", label, ROOFLINE_GEMM_N, ROOFLINE_READ_BYTES >> 20);
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

// ----------------------------------------------------------------------------
// one row of the table and the CSV; NAN marks what was not measured

typedef struct {
    int n_kv_head, batch, ctx;  // batch = ctx = 0: no inference measurement
    const char *kv_dtype;
    double train, train_sd, train_median, train_gflops, train_mfu;  // tok/s, GFLOP/s, fraction of peak
    double prefill, decode, decode_sd, decode_median;                // tok/s
    double decode_x;                    // median decode tok/s over that of the list's first n_kv_head
    double decode_gbs, decode_bw_frac;  // GB/s, fraction of bandwidth
    double kv_bytes, rss;
    size_t params;
    double gemm, train_gemm_frac;  // median GEMM-only tok/s; median train tok/s over it
} Row;

// Table cells: "-" for what was not measured.
static const char *cell_pm(char *buf, size_t len, int prec, double mean, double sd) {
    if (isnan(mean)) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.*f ± %.*f", prec, mean, prec, sd);
    return buf;
}

static const char *cell_num(char *buf, size_t len, int prec, double v) {
    if (isnan(v)) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.*f", prec, v);
    return buf;
}

static const char *cell_bytes(char *buf, size_t len, double v) {
    return isnan(v) ? (snprintf(buf, len, "-"), buf) : format_bytes(v, buf, len);
}

// "45.1 (22%)": a rate and its fraction of the roofline, when there is one.
static const char *cell_rate(char *buf, size_t len, double v, double frac) {
    if (isnan(v)) snprintf(buf, len, "-");
    else if (isnan(frac)) snprintf(buf, len, "%.1f", v);
    else snprintf(buf, len, "%.1f (%.0f%%)", v, 100.0 * frac);
    return buf;
}

static void print_row(const Row *r) {
    char c[11][64];
    if (r->batch) {
        snprintf(c[0], 64, "%d", r->batch);
        snprintf(c[1], 64, "%d", r->ctx);
    } else {
        strcpy(c[0], "-"), strcpy(c[1], "-");
    }
    printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %zu | %s | %s | %s |\n", r->n_kv_head, c[0], c[1],
           r->kv_dtype, cell_pm(c[2], 64, 0, r->train, r->train_sd), cell_num(c[3], 64, 0, r->prefill),
           cell_pm(c[4], 64, 1, r->decode, r->decode_sd), cell_num(c[9], 64, 2, r->decode_x),
           cell_bytes(c[5], 64, r->kv_bytes), cell_bytes(c[6], 64, r->rss), r->params,
           cell_rate(c[7], 64, r->train_gflops, r->train_mfu), cell_rate(c[8], 64, r->decode_gbs, r->decode_bw_frac),
           cell_rate(c[10], 64, r->gemm, r->train_gemm_frac));
    fflush(stdout);
}

// CSV fields: empty for what was not measured.
static void csv_field(FILE *f, const char *fmt, double v) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

static void csv_row(FILE *f, const Row *r) {
    fprintf(f, "%d", r->n_kv_head);
    if (r->batch) fprintf(f, ",%d,%d,%s", r->batch, r->ctx, r->kv_dtype);
    else fprintf(f, ",,,");
    csv_field(f, "%.3f", r->train);
    csv_field(f, "%.3f", r->train_sd);
    csv_field(f, "%.3f", r->prefill);
    csv_field(f, "%.3f", r->decode);
    csv_field(f, "%.3f", r->decode_sd);
    csv_field(f, "%.0f", r->kv_bytes);
    csv_field(f, "%.0f", r->rss);
    fprintf(f, ",%zu", r->params);
    csv_field(f, "%.3f", r->train_gflops);
    csv_field(f, "%.4f", r->train_mfu);
    csv_field(f, "%.3f", r->decode_gbs);
    csv_field(f, "%.4f", r->decode_bw_frac);
    csv_field(f, "%.3f", r->train_median);
    csv_field(f, "%.3f", r->decode_median);
    csv_field(f, "%.4f", r->decode_x);
    csv_field(f, "%.3f", r->gemm);
    csv_field(f, "%.4f", r->train_gemm_frac);
    fputc('\n', f);
}

int cmd_bench(int argc, char **argv) {
    BenchConfig bc;
    memset(&bc, 0, sizeof bc);
    train_config_defaults(&bc.tc);
    // cfg-d of DESIGN.md
    bc.vocab_size = 256, bc.tc.n_layer = 6, bc.tc.n_head = 8, bc.tc.n_embd = 512, bc.tc.block_size = 4096;
    bc.tc.batch_size = 8, bc.train_block_size = 256, bc.tc.bias = 1;
    bc.repeats = 3, bc.rounds = 1, bc.decode_tokens = 32, bc.train_steps = 5, bc.roofline = 1;
    strcpy(bc.n_kv_head, "8,4,2,1");
    strcpy(bc.ctx, "512,2048,4032");
    strcpy(bc.batch, "1,8");
    strcpy(bc.kv_dtype, "f32");
    strcpy(bc.measure, "train,infer");
    strcpy(bc.gemm, "ours");

    // the model and run keys of `gqa train`, so its config files work here,
    // then the bench's own (n_kv_head becomes a list)
    int ntrain;
    const Opt *topts = train_config_opts(&bc.tc, &ntrain);
    Opt opts[64];
    int n = 0;
    for (int i = 0; i < ntrain; i++)
        if (strcmp(topts[i].name, "n_kv_head") != 0) opts[n++] = topts[i];
    const Opt own[] = {
        {"n_kv_head", OPT_STRING, bc.n_kv_head, 0, 0, "comma-separated list of KV head counts"},
        {"ctx", OPT_STRING, bc.ctx, 0, 0, "context lengths for prefill and decode"},
        {"batch", OPT_STRING, bc.batch, 0, 0, "decode batch sizes"},
        {"kv_dtype", OPT_STRING, bc.kv_dtype, 0, 0, "KV cache element types: f32, bf16, f16"},
        {"vocab_size", OPT_INT, &bc.vocab_size, 1, 1 << 24, "vocabulary size (random weights)"},
        {"train_block_size", OPT_INT, &bc.train_block_size, 0, 1 << 20, "T of the training measurement (0: block_size)"},
        {"train_steps", OPT_INT, &bc.train_steps, 1, 1e6, "training steps per repeat"},
        {"decode_tokens", OPT_INT, &bc.decode_tokens, 1, 1e6, "decode steps per repeat"},
        {"repeats", OPT_INT, &bc.repeats, 1, MAX_REPEATS, "timed repeats in each measuring process"},
        {"rounds", OPT_INT, &bc.rounds, 1, MAX_ROUNDS,
         "processes per measurement, run round-robin over the settings (tok/s pooled over rounds x repeats)"},
        {"measure", OPT_STRING, bc.measure, 0, 0,
         "comma list of train, gemm (training's linear-layer GEMMs alone), infer; skipped columns are '-' "
         "in the table, empty in CSV"},
        {"roofline", OPT_BOOL, &bc.roofline, 0, 1,
         "first measure sgemm peak and memory read bandwidth (~1 s) for MFU and % of bandwidth"},
        {"csv", OPT_STRING, bc.csv, 0, 0, "also write the rows to this CSV file"},
        {"gemm", OPT_STRING, bc.gemm, 0, 0,
         "the linear layers' matrix products: ours, openblas, or alternate (training alternates the two step "
         "by step and prints their forward+backward times to stderr; the rest uses ours)"},
        {"_worker", OPT_STRING, bc.worker, 0, 0, "internal: run one measurement (train | gemm | infer | roofline)"},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) opts[n++] = own[i];

    char err[1024];
    const char *pos[1];
    int npos = 0;
    int rc = opts_parse_argv(opts, n, argc, argv, 2, pos, &npos, 1, err, sizeof err);
    if (rc == 1) {
        printf("usage: gqa bench [CONFIG_FILE] [--key=value ...]\n\n"
               "Measure training, prefill and decode tokens/sec, KV cache bytes and peak resident memory\n"
               "for every n_kv_head x batch x ctx x kv_dtype, each in a fresh process, with random weights.\n"
               "Defaults are cfg-d (vocab 256, 6 layers, 8 heads, n_embd 512, block 4096).\n"
               "With --roofline the machine's sgemm peak and memory read bandwidth are measured first;\n"
               "training is also given in GFLOP/s (6N + 12 L C T per token) with MFU against that peak,\n"
               "decode in GB/s read (4 bytes per parameter, one row of wpe, plus the K and V of ctx\n"
               "positions per step) with the fraction of the bandwidth (CSV: train_gflops, train_mfu,\n"
               "decode_gbs, decode_bw_frac; train_mfu and decode_bw_frac are fractions, not percent, empty\n"
               "without --roofline, and decode_bw_frac exceeds 1 when weights and cache fit in the caches);\n"
               "after the table a second reading is printed as 'roofline at the end'.\n"
               "Without infer in --measure there is one row per n_kv_head, without batch, ctx or kv_dtype.\n"
               "With --rounds R every measurement runs in R processes, round-robin over the settings (all\n"
               "once, then all again), so a slow spell of a shared machine falls on every setting alike;\n"
               "tok/s are then mean +- stddev over rounds x repeats. The column 'decode x n_kv_head G' is\n"
               "the median decode tok/s over that of the list's first n_kv_head G at the same batch, ctx\n"
               "and kv_dtype (CSV: decode_speedup, with train_tok_s_median and decode_tok_s_median).\n"
               "--measure=gemm times the training step's linear-layer products alone (each shard's gemm()\n"
               "calls, forward and backward, nothing else): the most a step of those calls could reach.\n"
               "Its column gives that tok/s and, with train, the median training tok/s as a percentage of\n"
               "it (CSV: gemm_tok_s_median, train_gemm_frac, a fraction).\n\n");
        opts_print_help(opts, n - 1, stdout);  // _worker is internal
        return 0;
    }
    if (rc == 0 && npos == 1 && (rc = opts_parse_file(opts, n, pos[0], err, sizeof err)) == 0)
        rc = opts_parse_argv(opts, n, argc, argv, 2, pos, &npos, 1, err, sizeof err);
    if (rc != 0) die("%s", err);
    if (bc.train_block_size == 0) bc.train_block_size = bc.tc.block_size;
    if (bc.tc.threads > 0) omp_set_num_threads(bc.tc.threads);

    if (strcmp(bc.gemm, "ours") && strcmp(bc.gemm, "openblas") && strcmp(bc.gemm, "alternate"))
        die("option 'gemm': '%s' is not ours, openblas or alternate", bc.gemm);
    gemm_use_openblas(!strcmp(bc.gemm, "openblas"));
    int do_train = 0, do_gemm = 0, do_infer = 0;
    {
        char tmp[OPT_STR_MAX];
        snprintf(tmp, sizeof tmp, "%s", bc.measure);
        for (char *tok = strtok(tmp, ","); tok; tok = strtok(NULL, ",")) {
            if (!strcmp(tok, "train")) do_train = 1;
            else if (!strcmp(tok, "gemm")) do_gemm = 1;
            else if (!strcmp(tok, "infer")) do_infer = 1;
            else die("option 'measure': '%s' is not a list of train, gemm, infer", bc.measure);
        }
        if (!do_train && !do_gemm && !do_infer) die("option 'measure' is empty: give train, gemm, infer or a list");
    }
    int kvs[MAX_LIST], ctxs[MAX_LIST], batches[MAX_LIST];
    int nk = parse_int_list("n_kv_head", bc.n_kv_head, kvs, MAX_LIST, err, sizeof err);
    int nc = nk < 0 ? -1 : parse_int_list("ctx", bc.ctx, ctxs, MAX_LIST, err, sizeof err);
    int nb = nc < 0 ? -1 : parse_int_list("batch", bc.batch, batches, MAX_LIST, err, sizeof err);
    if (nb < 0) die("%s", err);
    KVDtype dts[MAX_LIST];
    int nd = 0;
    {
        char tmp[OPT_STR_MAX];
        snprintf(tmp, sizeof tmp, "%s", bc.kv_dtype);
        for (char *tok = strtok(tmp, ","); tok; tok = strtok(NULL, ",")) {
            if (nd == MAX_LIST || kv_dtype_parse(tok, &dts[nd]) != 0)
                die("option 'kv_dtype': '%s' is not a list of f32, bf16, f16", bc.kv_dtype);
            nd++;
        }
        if (nd == 0) die("option 'kv_dtype' is empty");
    }
    for (int i = 0; i < nk; i++) {
        GPTConfig c = model_config(&bc, kvs[i]);
        if (gpt_config_validate(&c, err, sizeof err) != 0) die("%s", err);
    }
    for (int i = 0; do_infer && i < nc; i++)
        if (ctxs[i] + bc.decode_tokens > bc.tc.block_size)
            die("ctx %d + decode_tokens %d exceeds block_size %d", ctxs[i], bc.decode_tokens, bc.tc.block_size);

    // a child: one measurement, then out
    if (!strcmp(bc.worker, "train")) {
        worker_train(&bc, kvs[0]);
        return 0;
    }
    if (!strcmp(bc.worker, "gemm")) {
        worker_gemm(&bc, kvs[0]);
        return 0;
    }
    if (!strcmp(bc.worker, "infer")) {
        worker_infer(&bc, kvs[0], batches[0], ctxs[0], dts[0]);
        return 0;
    }
    if (!strcmp(bc.worker, "roofline")) {
        worker_roofline();
        return 0;
    }
    if (bc.worker[0]) die("option '_worker': '%s' is not train, gemm, infer or roofline", bc.worker);

    FILE *csv = NULL;
    if (bc.csv[0]) {
        csv = fopen(bc.csv, "w");
        if (!csv) die("cannot write '%s': %s", bc.csv, strerror(errno));
        fprintf(csv, "n_kv_head,batch,ctx,kv_dtype,train_tok_s,train_tok_s_sd,prefill_tok_s,decode_tok_s,"
                     "decode_tok_s_sd,kv_cache_bytes,peak_rss_bytes,params,"
                     "train_gflops,train_mfu,decode_gbs,decode_bw_frac,train_tok_s_median,decode_tok_s_median,"
                     "decode_speedup,gemm_tok_s_median,train_gemm_frac\n");
    }
    printf("gqa bench: vocab_size=%d n_layer=%d n_head=%d n_embd=%d block_size=%d bias=%d; training at batch %d x %d "
           "(%d shards); %d decode steps; %d repeats x %d rounds; %d threads; measure=%s\n",
           bc.vocab_size, bc.tc.n_layer, bc.tc.n_head, bc.tc.n_embd, bc.tc.block_size, bc.tc.bias, bc.tc.batch_size,
           bc.train_block_size, train_shards(&bc.tc, bc.tc.batch_size), bc.decode_tokens, bc.repeats,
           bc.rounds, omp_get_max_threads(), bc.measure);
    int failures = 0;
    double peak_gflops = NAN, read_gbs = NAN;  // the roofline
    if (bc.roofline) {
        failures += roofline(argc, argv, "roofline", &peak_gflops, &read_gbs);
    } else {
        printf("roofline: not measured (--roofline=false): no MFU, no fraction of bandwidth\n");
    }
    printf("\n| n_kv_head | batch | ctx | kv_dtype | train tok/s | prefill tok/s | decode tok/s | decode x n_kv_head %d "
           "| KV cache | peak RSS | params | train GFLOP/s (MFU) | decode GB/s (of read bw) | GEMM-only tok/s (train of it) "
           "|\n", kvs[0]);
    printf("|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);

    // The jobs in table order: per n_kv_head its training run, its GEMM-only
    // run, then its inference runs (batch x ctx x kv_dtype). Round r runs
    // every job once; the last round prints each row as soon as its job is done.
    const int n_own = do_train + do_gemm;  // the jobs without batch at the head of each group
    const int per_kv = n_own + (do_infer ? nb * nc * nd : 0), njobs = nk * per_kv;
    Job *jobs = calloc_check((size_t)njobs, sizeof(Job));
    for (int i = 0; i < nk; i++) {
        Job *jb = jobs + (size_t)i * per_kv;
        if (do_train) jb++->kv = i;
        if (do_gemm) jb->kv = i, jb++->gemm = 1;
        for (int j = 0; do_infer && j < nb; j++)
            for (int k = 0; k < nc; k++)
                for (int d = 0; d < nd; d++, jb++) jb->kv = i, jb->batch = batches[j], jb->ctx = ctxs[k], jb->dt = dts[d];
    }
    for (int i = 0; i < njobs; i++) jobs[i].tok = calloc_check((size_t)bc.rounds * bc.repeats, sizeof(double));
    for (int round = 0; round < bc.rounds; round++) {
        const int last = round == bc.rounds - 1;
        for (int ji = 0; ji < njobs; ji++) {
            Job *jb = jobs + ji;
            const int kv = kvs[jb->kv];
            if (!jb->failed) run_job(&bc, argc, argv, jb, kv, round, &failures);
            // the row: an inference job with its n_kv_head's training figures,
            // or without inference that n_kv_head's last job without batch
            const int row = jb->batch ? !jb->failed : !do_infer && ji % per_kv == n_own - 1;
            if (!last || !row) continue;
            GPTConfig c = model_config(&bc, kv);
            Row r = {.n_kv_head = kv, .kv_dtype = "-", .params = gpt_num_parameters(&c)};
            r.train = r.train_sd = r.train_median = r.train_gflops = r.train_mfu = NAN;
            r.prefill = r.decode = r.decode_sd = r.decode_median = r.decode_x = r.decode_gbs = r.decode_bw_frac = NAN;
            r.kv_bytes = r.rss = r.gemm = r.train_gemm_frac = NAN;
            const Job *tj = do_train ? jobs + (size_t)jb->kv * per_kv : NULL;
            const Job *gj = do_gemm ? jobs + (size_t)jb->kv * per_kv + do_train : NULL;
            if (tj && !tj->failed) {
                r.train = mean_of(tj->tok, tj->ntok), r.train_sd = sd_of(tj->tok, tj->ntok);
                r.train_median = median_of(tj->tok, tj->ntok);
                r.train_gflops = train_flops_per_token(&c, bc.train_block_size) * r.train / 1e9;
                r.train_mfu = r.train_gflops / peak_gflops;  // NAN without the roofline
            }
            if (gj && !gj->failed) {
                r.gemm = median_of(gj->tok, gj->ntok);
                r.train_gemm_frac = r.train_median / r.gemm;  // NAN without train
            }
            if (jb->batch) {
                r.batch = jb->batch, r.ctx = jb->ctx, r.kv_dtype = kv_dtype_name(jb->dt);
                r.prefill = median_of(jb->prefill, jb->nprefill);
                r.decode = mean_of(jb->tok, jb->ntok), r.decode_sd = sd_of(jb->tok, jb->ntok);
                r.decode_median = median_of(jb->tok, jb->ntok);
                const Job *ref = jobs + (ji - jb->kv * per_kv);  // the same setting at kvs[0]
                if (!ref->failed) r.decode_x = r.decode_median / median_of(ref->tok, ref->ntok);
                // the bytes a cache of exactly ctx positions needs
                const size_t kv_bytes = kvcache_bytes(&c, jb->batch, jb->ctx, kv_dtype_bytes(jb->dt));
                r.kv_bytes = (double)kv_bytes, r.rss = (double)jb->rss;
                // a decode step reads every weight once (of wpe one row) and
                // the K and V of ctx positions of every sequence; steps/s =
                // tok/s / batch
                size_t sizes[GPT_NUM_PARAM_TENSORS];
                gpt_param_sizes(&c, sizes);
                double step_bytes = 4.0 * (double)(r.params - sizes[1] + (size_t)c.n_embd) + (double)kv_bytes;
                r.decode_gbs = step_bytes * r.decode / jb->batch / 1e9;
                r.decode_bw_frac = r.decode_gbs / read_gbs;  // NAN without the roofline
            }
            print_row(&r);
            if (csv) csv_row(csv, &r);
        }
    }
    for (int i = 0; i < njobs; i++) free(jobs[i].tok);
    free(jobs);
    if (bc.roofline) {  // a shared host's bandwidth can move by half within a long run
        double g, b;
        printf("\n");
        failures += roofline(argc, argv, "roofline at the end (the percentages above are of the first)", &g, &b);
    }
    if (csv && fclose(csv) != 0) die("cannot write '%s': %s", bc.csv, strerror(errno));
    if (csv) fprintf(stderr, "bench: wrote %s\n", bc.csv);
    return failures ? 1 : 0;
}
