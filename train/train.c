/*
 * train.c: the training run behind `gqa train`, nanoGPT's train.py in C.
 * Random (B, T) windows of the token file, forward/backward, gradient
 * clipping, AdamW with warmup and cosine decay, periodic evaluation on fixed
 * batches, logging, checkpoints (ckpt.bin: full state for an exact resume;
 * best.bin: best model) and a clean stop on SIGINT/SIGTERM. Options and
 * usage are cli/train.c's.
 */
#include "train.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../model/checkpoint.h"
#include "../model/gemm.h"
#include "../util/rng.h"
#include "../util/util.h"

// The size of the product that measures the sgemm peak for MFU when
// peak_gflops is 0: small enough to take milliseconds; its panels stay in
// L2, so it reads above the 2048^3 of `gqa bench`'s roofline and the MFU
// it gives is the lower of the two.
#define TRAIN_PEAK_N 512

const char *const train_init_keywords[] = {"scratch", "resume", NULL};
const char *const train_loss_on_names[] = {"auto", "all", "answers", NULL};

// ----------------------------------------------------------------------------
// configuration

void train_config_defaults(TrainConfig *tc) {
    memset(tc, 0, sizeof *tc);
    strcpy(tc->data_dir, "data/shakespeare_char");
    strcpy(tc->out_dir, "out");
    strcpy(tc->init_from, "scratch");
    tc->model = (GPTConfig){.vocab_size = 0, .block_size = 64, .n_layer = 4, .n_head = 4, .n_kv_head = 4,
                            .n_embd = 128, .bias = 1, .dropout = 0.0f, .pos = GPT_POS_LEARNED,
                            .rope_theta = GPT_ROPE_THETA_DEFAULT, .latent_norm = 1};
    tc->batch_size = 12, tc->max_iters = 2000, tc->warmup_iters = 100, tc->lr_decay_iters = 2000;
    tc->decay_lr = 1;
    tc->learning_rate = 1e-3f, tc->min_lr = 1e-4f, tc->weight_decay = 0.1f;
    tc->beta1 = 0.9f, tc->beta2 = 0.99f, tc->grad_clip = 1.0f;
    tc->eval_interval = 250, tc->eval_iters = 200, tc->log_interval = 10;
    tc->peak_gflops = 0.0f;  // measured at the start of the run
    tc->seed = 1337, tc->threads = 0, tc->shards = 0;
    tc->loss_on = TRAIN_LOSS_AUTO;
}

int train_config_validate(const TrainConfig *tc, char *err, size_t errlen) {
    if (tc->data_dir[0] == '\0') {
        snprintf(err, errlen, "data_dir is empty: give the directory written by `gqa prepare`");
        return -1;
    }
    if (tc->out_dir[0] == '\0') {
        snprintf(err, errlen, "out_dir is empty");
        return -1;
    }
    if (tc->min_lr > tc->learning_rate) {
        snprintf(err, errlen, "min_lr %g is larger than learning_rate %g", (double)tc->min_lr, (double)tc->learning_rate);
        return -1;
    }
    if (tc->decay_lr && tc->warmup_iters > tc->lr_decay_iters) {
        snprintf(err, errlen, "warmup_iters %d is larger than lr_decay_iters %d", tc->warmup_iters, tc->lr_decay_iters);
        return -1;
    }
    return 0;
}

int train_shards(int shards, int B) {
    const int s = shards > 0 ? shards : gpt_auto_shards(B);
    return s < B ? s : B;  // as gpt_forward_backward would clamp it
}

double train_flops_per_token(const GPTConfig *c, int T) {
    size_t sizes[GPT_NUM_PARAM_TENSORS];
    gpt_param_sizes(c, sizes);
    // wpe, (maxT, C), is a lookup, no matmul. Attention: nanoGPT's 12 L C T is 6 L T NH (HS + HS), scores
    // with query/key heads HS wide and the weighted sum of values HS wide; MLA's query/key heads are
    // D = HS + rope_head_dim wide (n_embd = NH * HS).
    const double NH = c->n_head, HS = c->n_embd / c->n_head, D = gpt_qk_head_size(c);
    return 6.0 * (double)(gpt_num_parameters(c) - sizes[PARAM_WPE]) + 6.0 * c->n_layer * NH * (D + HS) * (double)T;
}

float train_lr(const TrainConfig *tc, int it) {
    if (!tc->decay_lr) return tc->learning_rate;
    if (it < tc->warmup_iters) return tc->learning_rate * (float)(it + 1) / (float)(tc->warmup_iters + 1);
    if (it > tc->lr_decay_iters) return tc->min_lr;
    double ratio = tc->lr_decay_iters == tc->warmup_iters
                       ? 1.0
                       : (double)(it - tc->warmup_iters) / (double)(tc->lr_decay_iters - tc->warmup_iters);
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return (float)(tc->min_lr + coeff * (tc->learning_rate - tc->min_lr));
}

// ----------------------------------------------------------------------------
// data: random windows of a token file

// Fill x, y (B, T) with B random windows: y is x shifted by one token. A
// window starts anywhere in [0, count - T), or with a recall task at a
// sequence boundary, s * seq_len <= count - T - 1, so that every answer in
// it comes after its pairs (any T then works). With a task, masks (B, T)
// gets the windows' answer masks (recall_window_mask), and with answers_only
// every target but the answers is GPT_IGNORE.
static void get_batch(const TokenFile *tf, const RecallTask *task, int answers_only, int B, int T, uint64_t *rng,
                      int *x, int *y, uint8_t *masks) {
    const size_t S = task ? (size_t)task->seq_len : 1;
    const uint64_t span = (uint64_t)((tf->count - (size_t)T - 1) / S + 1);  // starts 0, S, .., (span - 1) S
    for (int b = 0; b < B; b++) {
        size_t start = (size_t)(rng_u64(rng) % span) * S;
        int *yb = y + (size_t)b * T;
        memcpy(x + (size_t)b * T, tf->tokens + start, (size_t)T * sizeof(int));
        memcpy(yb, tf->tokens + start + 1, (size_t)T * sizeof(int));
        if (!task) continue;
        uint8_t *mb = masks + (size_t)b * T;
        recall_window_mask(task, start, T, mb);
        for (int i = 0; i < T && answers_only; i++)
            if (!mb[i]) yb[i] = GPT_IGNORE;
    }
}

typedef struct {
    float loss;
    double accuracy;  // on the answers of a recall task; NAN without one
} Estimate;

// Answers scored and hit in the last gpt_loss over the Bl rows at y (its
// targets): the logits are in the activations of the model and of its
// thread shards, each holding a run of whole rows. masks (Bl, T).
static void score_answers(const GPT *m, const int *y, const uint8_t *masks, int Bl, int T, double *answers,
                          double *hits, int *preds) {
    const int V = m->config.vocab_size;
    int rows = 0;
    for (int s = 0; rows < Bl; s++) {
        CHECK(s <= m->n_shards);
        const GPT *r = s == 0 ? m : &m->shards[s - 1];
        CHECK(r->targets == y + (size_t)rows * T && r->T == T && r->B >= 1 && rows + r->B <= Bl);
        const size_t n = (size_t)r->B * T;
        recall_argmax(r->acts.logits, n, V, preds);
        size_t correct;
        *answers += (double)recall_score(preds, y + (size_t)rows * T, masks + (size_t)rows * T, n, &correct);
        *hits += (double)correct;
        rows += r->B;
    }
}

// Mean loss over eval_iters fixed batches of one split (same batches at
// every evaluation, so curves are comparable and training RNG is untouched),
// and with a recall task the accuracy on answer positions.
// With several ranks each evaluates its shard of every batch.
static Estimate estimate_loss(GPT *m, const Dist *d, const TokenFile *tf, const RecallTask *task, int answers_only,
                              const TrainConfig *tc, uint64_t split_key, int shards, int *x, int *y) {
    int was_training = m->training;
    m->training = 0;
    uint64_t rng = rng_mix64((uint64_t)tc->seed ^ split_key);
    const int T = tc->model.block_size, B = tc->batch_size, Bl = B / d->world;
    const size_t shard = (size_t)d->rank * Bl * T;
    uint8_t *masks = task ? malloc_check((size_t)B * T) : NULL;
    int *preds = task ? malloc_check((size_t)Bl * T * sizeof(int)) : NULL;
    double sum = 0.0, answers = 0.0, hits = 0.0;
    for (int i = 0; i < tc->eval_iters; i++) {
        get_batch(tf, task, answers_only, B, T, &rng, x, y, masks);
        if (gpt_loss(m, x + shard, y + shard, Bl, T, shards) != 0) die("%s", m->error);
        sum += m->mean_loss;
        if (task) score_answers(m, y + shard, masks + shard, Bl, T, &answers, &hits, preds);
    }
    m->training = was_training;
    free(masks), free(preds);
    Estimate e = {(float)(dist_sum(d, sum) / d->world / tc->eval_iters), NAN};
    if (task) e.accuracy = dist_sum(d, hits) / dist_sum(d, answers);
    return e;
}

// ----------------------------------------------------------------------------
// signals: finish the step, save, exit 0

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) { stop_requested = sig; }

// ----------------------------------------------------------------------------
// the run

static void path_join(char *out, size_t len, const char *dir, const char *name) {
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) die("path too long: %s/%s", dir, name);
}

static int save_checkpoint(Trainer *r, const char *path, int with_state, char *err, size_t errlen) {
    if (r->dist.rank != 0) return 0;
    TrainState ts = {.step = r->step, .adam_t = r->opt.t, .best_val_loss = r->best_val_loss,
                     .data_rng = r->data_rng, .model_rng = r->model.rng_state,
                     .adam_m = r->opt.m, .adam_v = r->opt.v};
    return checkpoint_save(path, &r->model, r->vocab_blob, r->vocab_len, with_state ? &ts : NULL, err, errlen);
}

static void log_line(Trainer *r, const char *fmt, ...) GQA_PRINTF(2, 3);
static void log_line(Trainer *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
}

// Load data, vocabulary, model and optimizer according to init_from.
void trainer_init(Trainer *r, const TrainConfig *config, const Dist *dist) {
    memset(r, 0, sizeof *r);
    r->tc = *config;
    r->dist = *dist;
    TrainConfig *tc = &r->tc;
    char err[1024], path[TRAIN_PATH_MAX + 16];
    path_join(path, sizeof path, tc->data_dir, "vocab.bin");
    if (tokenizer_load(&r->tok, path, err, sizeof err) != 0) die("%s (run `gqa prepare` first)", err);
    int V = r->tok.vocab_size;
    path_join(path, sizeof path, tc->data_dir, "train.bin");
    if (tokens_read(path, V, &r->train, err, sizeof err) != 0) die("%s", err);
    path_join(path, sizeof path, tc->data_dir, "val.bin");
    if (tokens_read(path, V, &r->val, err, sizeof err) != 0) die("%s", err);
    path_join(path, sizeof path, tc->data_dir, "recall.bin");
    if (access(path, F_OK) == 0) {  // a recall task: its layout must be the token files'
        if (recall_read(path, &r->task, err, sizeof err) != 0) die("%s", err);
        const RecallTask *k = &r->task;
        if (k->vocab_size != V)
            die("%s: vocab_size %d, but %s/vocab.bin has %d (files from different `gqa prepare` runs?)", path,
                k->vocab_size, tc->data_dir, V);
        const TokenFile *split[2] = {&r->train, &r->val};
        const uint64_t n_seq[2] = {k->num_train, k->num_val};
        for (int i = 0; i < 2; i++) {
            const char *name = i ? "val.bin" : "train.bin";
            if (split[i]->count != n_seq[i] * (uint64_t)k->seq_len)
                die("%s: %s has %zu tokens, but %s says %" PRIu64 " sequences of %d (files from different "
                    "`gqa prepare` runs?)",
                    tc->data_dir, name, split[i]->count, path, n_seq[i], k->seq_len);
            if (recall_check_tokens(k, split[i]->tokens, split[i]->count, err, sizeof err) != 0)
                die("%s/%s is not in the layout of %s: %s (re-run `gqa prepare --task recall`)", tc->data_dir,
                    name, path, err);
        }
        r->recall = 1;
    }
    if (tc->loss_on == TRAIN_LOSS_ANSWERS && !r->recall)
        die("loss_on answers needs a recall task, and %s has no recall.bin (use loss_on all, or `gqa prepare "
            "--task recall`)",
            tc->data_dir);
    r->answers_only = r->recall && tc->loss_on != TRAIN_LOSS_ALL;

    FILE *mf = open_memstream((char **)&r->vocab_blob, &r->vocab_len);
    if (!mf) die("open_memstream: %s", strerror(errno));
    tokenizer_write(&r->tok, mf);
    fclose(mf);

    if (r->dist.rank == 0 && make_dirs(tc->out_dir, err, sizeof err) != 0) die("out_dir: %s", err);
    path_join(r->ckpt_path, sizeof r->ckpt_path, tc->out_dir, "ckpt.bin");
    path_join(r->best_path, sizeof r->best_path, tc->out_dir, "best.bin");
    r->step = 0;
    r->best_val_loss = INFINITY;
    r->data_rng = rng_mix64((uint64_t)tc->seed ^ 0xBA7C4ull);

    const int resume = !strcmp(tc->init_from, train_init_keywords[TRAIN_INIT_RESUME]);
    if (!strcmp(tc->init_from, train_init_keywords[TRAIN_INIT_SCRATCH])) {
        GPTConfig c = tc->model;
        c.vocab_size = V;
        if (gpt_init(&r->model, &c, (uint64_t)tc->seed) != 0) die("%s", r->model.error);
        adamw_init(&r->opt, r->model.num_parameters, tc->beta1, tc->beta2, 1e-8f, tc->weight_decay);
    } else {
        const char *src = resume ? r->ckpt_path : tc->init_from;
        if (access(src, F_OK) != 0) {
            const char *scratch = train_init_keywords[TRAIN_INIT_SCRATCH];
            if (resume)
                die("--init_from=%s: there is no %s to resume from (train with --init_from=%s first, or give "
                    "--out_dir of an earlier run)",
                    tc->init_from, src, scratch);
            die("--init_from=%s: no such checkpoint (give %s, %s, or the path of a ckpt.bin or best.bin)", src,
                scratch, train_init_keywords[TRAIN_INIT_RESUME]);
        }
        uint8_t *blob;
        size_t blob_len;
        TrainState ts;
        int has_ts = 0;
        if (checkpoint_load(src, &r->model, &blob, &blob_len, &ts, &has_ts, err, sizeof err) != 0) die("%s", err);
        if (r->model.wmat_memory)
            die("%s: the weights are %s, for inference only (gqa convert --weight_dtype): training needs the float32 "
                "checkpoint it was converted from", src, weight_dtype_name(r->model.weight_dtype));
        if (blob_len != r->vocab_len || memcmp(blob, r->vocab_blob, blob_len) != 0)
            die("%s: its vocabulary differs from %s/vocab.bin (trained on other data?)", src, tc->data_dir);
        free(blob);
        GPTConfig *c = &r->model.config;
        const GPTConfig *want = &tc->model;
        if (c->n_layer != want->n_layer || c->n_head != want->n_head || c->n_kv_head != want->n_kv_head ||
            c->n_embd != want->n_embd || c->block_size != want->block_size || c->bias != want->bias ||
            c->pos != want->pos || (c->pos == GPT_POS_ROPE && c->rope_theta != want->rope_theta) ||
            c->kv_lora_rank != want->kv_lora_rank || c->rope_head_dim != want->rope_head_dim ||
            (gpt_is_latent(c) && c->latent_norm != want->latent_norm))
            fprintf(stderr, "note: model shape taken from %s (n_layer=%d n_head=%d n_kv_head=%d n_embd=%d "
                            "block_size=%d bias=%d pos=%s rope_theta=%g kv_lora_rank=%d rope_head_dim=%d "
                            "latent_norm=%d)\n",
                    src, c->n_layer, c->n_head, c->n_kv_head, c->n_embd, c->block_size, c->bias,
                    gpt_pos_names[c->pos], (double)c->rope_theta, c->kv_lora_rank, c->rope_head_dim,
                    c->latent_norm);
        c->dropout = tc->model.dropout;  // dropout is a training choice, not part of the shape
        tc->model = *c;
        adamw_init(&r->opt, r->model.num_parameters, tc->beta1, tc->beta2, 1e-8f, tc->weight_decay);
        if (resume) {
            if (!has_ts) die("%s has no training state to resume (written as a model-only checkpoint)", src);
            memcpy(r->opt.m, ts.adam_m, r->model.num_parameters * sizeof(float));
            memcpy(r->opt.v, ts.adam_v, r->model.num_parameters * sizeof(float));
            r->opt.t = ts.adam_t;
            r->step = ts.step;
            r->best_val_loss = ts.best_val_loss;
            r->data_rng = ts.data_rng;
            r->model.rng_state = ts.model_rng;
        } else {
            r->model.rng_state = rng_mix64((uint64_t)tc->seed ^ 0xD1CEull);
        }
        if (has_ts) train_state_free(&ts);
    }
    tc->model.vocab_size = V;
    const int T = tc->model.block_size;
    if ((size_t)T + 1 > r->val.count || (size_t)T + 1 > r->train.count)
        die("block_size %d needs at least %d tokens per split; train has %zu, val has %zu", T, T + 1,
            r->train.count, r->val.count);
    if (r->recall && T < 2 * r->task.num_pairs + 1)
        die("block_size %d holds no answer of the recall task: the first is target %d of a window (after %d "
            "pairs); use block_size = seq_len = %d",
            T, 2 * r->task.num_pairs, r->task.num_pairs, r->task.seq_len);
    r->model.training = 1;
    if (tc->batch_size % r->dist.world != 0)
        die("batch_size %d is the global batch and must be divisible by the %d MPI ranks", tc->batch_size,
            r->dist.world);

    path_join(path, sizeof path, tc->out_dir, "log.txt");
    r->log = fopen(r->dist.rank == 0 ? path : "/dev/null", "a");
    if (!r->log) die("cannot open log file '%s': %s", path, strerror(errno));
    log_line(r, "# run time=%ld n_layer=%d n_head=%d n_kv_head=%d n_embd=%d block_size=%d batch_size=%d dropout=%g "
                "bias=%d pos=%s rope_theta=%g kv_lora_rank=%d rope_head_dim=%d latent_norm=%d init_from=%s "
                "start_step=%d loss_on=%s\n",
             (long)time(NULL), tc->model.n_layer, tc->model.n_head, tc->model.n_kv_head, tc->model.n_embd, T,
             tc->batch_size, (double)tc->model.dropout, tc->model.bias, gpt_pos_names[tc->model.pos],
             (double)tc->model.rope_theta, tc->model.kv_lora_rank, tc->model.rope_head_dim, tc->model.latent_norm,
             tc->init_from, r->step, r->answers_only ? "answers" : "all");
}

static void progress(const Trainer *r, double elapsed, int start) {
    if (r->dist.rank != 0 || !isatty(STDERR_FILENO)) return;
    const int width = 30, total = r->tc.max_iters;
    int done = r->step, filled = total ? (int)((double)done / total * width) : width;
    double eta = done > start ? elapsed / (done - start) * (total - done) : 0.0;
    fprintf(stderr, "\r[");
    for (int i = 0; i < width; i++) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %d/%d eta %dm%02ds\033[K", done, total, (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

static void clear_progress(void) {
    if (isatty(STDERR_FILENO)) fprintf(stderr, "\r\033[K");
}

int trainer_run(Trainer *r) {
    GPT *m = &r->model;
    const TrainConfig *tc = &r->tc;
    const int B = tc->batch_size, T = tc->model.block_size;
    char err[1024];
    const int shards = train_shards(tc->shards, B / r->dist.world);
    m->batch_offset = r->dist.rank * (B / r->dist.world);  // this rank's rows draw the one-process dropout masks
    printf("vocab_size = %d, parameters = %zu, threads = %d, ranks = %d (%d sequences each), shards = %d\n",
           m->config.vocab_size, m->num_parameters, omp_get_max_threads(), r->dist.world, B / r->dist.world, shards);
    const RecallTask *task = r->recall ? &r->task : NULL;
    if (task)
        printf("recall task: %d pairs, %d queries per sequence of %d tokens; windows of %d start at sequence "
               "boundaries; loss on %s; accuracy on the answers (chance 1/%d)\n",
               task->num_pairs, task->num_queries, task->seq_len, T,
               r->answers_only ? "the answers alone" : "every target", task->vocab_size / 2);
    if (r->step > 0) printf("resuming from %s at step %d\n", r->ckpt_path, r->step);

    int *x = malloc_check((size_t)B * T * sizeof(int)), *y = malloc_check((size_t)B * T * sizeof(int));
    uint8_t *masks = task ? malloc_check((size_t)B * T) : NULL;  // the training batch's answers
    const double flops_per_token = train_flops_per_token(&m->config, T);
    double peak_gflops = tc->peak_gflops;
    if (peak_gflops <= 0) {  // a few ms: the faster of our gemm() and OpenBLAS on this machine, now
        double ours, openblas;
        peak_gflops = gemm_peak(TRAIN_PEAK_N, &ours, &openblas);
        printf("mfu: against a measured sgemm peak of %.1f GFLOP/s (%d^3: gqa.c gemm %.1f, OpenBLAS %.1f; "
               "--peak_gflops sets it)\n",
               peak_gflops, TRAIN_PEAK_N, ours, openblas);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    // fault injection for tests: poison one weight before this step's forward
    const char *nan_env = getenv("GQA_FAULT_NAN_AT_STEP");
    const int nan_step = nan_env ? atoi(nan_env) : -1;
    const int start = r->step;
    const double t_start = now_seconds();
    int exit_code = 0;
    for (;;) {
        // evaluate (and checkpoint) every eval_interval steps and at the end
        int at_end = r->step >= tc->max_iters;
        if ((r->step % tc->eval_interval == 0 && !(r->step == start && start > 0)) || at_end) {
            clear_progress();
            const int ans = r->answers_only;
            const Estimate te = estimate_loss(m, &r->dist, &r->train, task, ans, tc, 0x7A41ull, shards, x, y);
            const Estimate ve = estimate_loss(m, &r->dist, &r->val, task, ans, tc, 0x7A42ull, shards, x, y);
            const float tl = te.loss, vl = ve.loss;
            if (task) {  // the accuracy fields go at the end: parsers of the loss fields keep working
                printf("step %d: train loss %.4f, val loss %.4f, train acc %.4f, val acc %.4f\n", r->step, tl, vl,
                       te.accuracy, ve.accuracy);
                log_line(r, "eval %d train %.6f val %.6f train_acc %.6f val_acc %.6f\n", r->step, tl, vl,
                         te.accuracy, ve.accuracy);
            } else {
                printf("step %d: train loss %.4f, val loss %.4f\n", r->step, tl, vl);
                log_line(r, "eval %d train %.6f val %.6f\n", r->step, tl, vl);
            }
            fflush(stdout);
            if (r->step > start || at_end) {
                if (vl < r->best_val_loss) {
                    r->best_val_loss = vl;
                    if (save_checkpoint(r, r->best_path, 0, err, sizeof err) != 0) die("%s", err);
                }
                if (save_checkpoint(r, r->ckpt_path, 1, err, sizeof err) != 0) die("%s", err);
            }
        }
        if (at_end) break;

        double t0 = now_seconds();
        float lr = train_lr(tc, r->step);
        // every rank draws the same global batch and runs its own rows
        get_batch(&r->train, task, r->answers_only, B, T, &r->data_rng, x, y, masks);
        if (r->step == nan_step) m->params.wte[0] = NAN;
        const size_t shard = (size_t)r->dist.rank * (B / r->dist.world) * T;
        if (gpt_forward_backward(m, x + shard, y + shard, B / r->dist.world, T, shards) != 0) die("%s", m->error);
        // the data-parallel step: ranks count alike (with answers_only too, as
        // every window starts at a sequence boundary and holds the same answers)
        dist_mean_floats(&r->dist, m->grads_memory, m->num_parameters);
        const float loss = (float)(dist_sum(&r->dist, m->mean_loss) / r->dist.world);
        float norm = grad_global_norm(m);
        if (!isfinite(loss) || !isfinite(norm)) {
            clear_progress();
            float bad_value = isfinite(loss) ? norm : loss;
            fprintf(stderr, "error: %s is %s at step %d; stopping without saving. The last good state is %s.\n"
                            "Try a lower learning_rate or a smaller grad_clip.\n",
                    isfinite(loss) ? "the gradient norm" : "the loss",
                    isnan(bad_value) ? "nan" : bad_value > 0 ? "inf" : "-inf", r->step, r->ckpt_path);
            exit_code = 1;
            break;
        }
        if (tc->grad_clip > 0.0f && norm > tc->grad_clip) grads_scale(m, tc->grad_clip / norm);
        adamw_step(&r->opt, m, lr);
        r->step++;
        double dt = now_seconds() - t0;

        if ((r->step - 1) % tc->log_interval == 0) {
            clear_progress();
            double tok_s = B * T / dt;
            printf("iter %d: loss %.4f, lr %.3e, norm %.4f, time %.2f ms, tok/s %.0f, mfu %.2f%%\n", r->step - 1,
                   loss, lr, norm, dt * 1e3, tok_s, 100.0 * flops_per_token * tok_s / (peak_gflops * 1e9));
            fflush(stdout);
            log_line(r, "iter %d loss %.9g lr %.6e norm %.6f ms %.3f\n", r->step - 1, loss, lr, norm, dt * 1e3);
        }
        progress(r, now_seconds() - t_start, start);
        if (dist_max_int(&r->dist, (int)stop_requested)) {  // all ranks stop at the same step
            clear_progress();
            if (save_checkpoint(r, r->ckpt_path, 1, err, sizeof err) != 0) die("%s", err);
            printf("stopped by signal %d after step %d; state saved to %s\n"
                   "resume with: gqa train ... --out_dir=%s --init_from=resume\n",
                   (int)(stop_requested ? stop_requested : SIGTERM), r->step, r->ckpt_path, tc->out_dir);
            break;
        }
    }
    clear_progress();
    double total = now_seconds() - t_start;
    if (exit_code == 0)
        printf("done: %d steps in %.1f s (%.0f tok/s), best val loss %.4f, checkpoints in %s\n", r->step - start, total,
               (double)(r->step - start) * B * T / (total > 0 ? total : 1), r->best_val_loss, tc->out_dir);

    if (exit_code == 0 && r->dist.world > 1)
        printf("allreduce: %.2f s of %.1f s (%.1f%%) on rank 0, %d ranks\n", r->dist.allreduce_seconds, total,
               100.0 * r->dist.allreduce_seconds / (total > 0 ? total : 1), r->dist.world);
    free(x), free(y), free(masks);
    return exit_code;
}

void trainer_free(Trainer *r) {
    if (r->log) fclose(r->log);
    free(r->vocab_blob);
    tokens_free(&r->train);
    tokens_free(&r->val);
    tokenizer_free(&r->tok);
    adamw_free(&r->opt);
    gpt_free(&r->model);
}
