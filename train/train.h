/*
 * train.h: the face of train/: the training configuration, the LR
 * schedule, and the training run (data loading, AdamW steps, evaluation,
 * logging, checkpoints and resume) that `gqa train` (cli/train.c) drives.
 */
#ifndef GQA_TRAIN_H
#define GQA_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "../data/recall.h"
#include "../data/tokenizer.h"
#include "../data/tokens.h"
#include "../model/gpt.h"
#include "adamw.h"
#include "dist.h"

#define TRAIN_PATH_MAX 512  // bytes of a path field, NUL included

typedef struct TrainConfig {
    // I/O
    char data_dir[TRAIN_PATH_MAX];   // train.bin, val.bin, vocab.bin from `gqa prepare`
    char out_dir[TRAIN_PATH_MAX];    // ckpt.bin, best.bin, log.txt
    char init_from[TRAIN_PATH_MAX];  // scratch | resume | path to a checkpoint (weights only)
    // the model: its shape and dropout; vocab_size comes from the data
    // (0 here), and a checkpoint's shape replaces this one on a resume
    GPTConfig model;
    // optimisation
    int batch_size, max_iters, warmup_iters, lr_decay_iters, decay_lr;
    float learning_rate, min_lr, weight_decay, beta1, beta2, grad_clip;
    // evaluation and logging
    int eval_interval, eval_iters, log_interval;
    float peak_gflops;  // for MFU: the machine's sgemm peak
    // run
    int seed, threads;
    int shards;  // gpt_forward_backward's thread shards; 0: gpt_auto_shards
    int loss_on;  // TRAIN_LOSS_*: which targets the loss counts
} TrainConfig;

// Which targets the training and evaluation loss counts: auto is answers
// on a recall task (as Zoology trains MQAR) and all on text; answers needs a
// recall task (the other targets are GPT_IGNORE).
enum { TRAIN_LOSS_AUTO, TRAIN_LOSS_ALL, TRAIN_LOSS_ANSWERS };
extern const char *const train_loss_on_names[];  // "auto", "all", "answers", NULL

// The keywords of init_from besides a checkpoint's path, and their order.
enum { TRAIN_INIT_SCRATCH, TRAIN_INIT_RESUME };
extern const char *const train_init_keywords[];  // "scratch", "resume", NULL

// nanoGPT's CPU recipe on Tiny Shakespeare (cfg-s), GQA off (n_kv_head = n_head).
void train_config_defaults(TrainConfig *tc);
// Cross-field checks (warmup <= decay, min_lr <= lr, ...). 0 or -1 with err.
int train_config_validate(const TrainConfig *tc, char *err, size_t errlen);

// nanoGPT's estimate of training FLOPs per token (forward + backward) at
// sequence length T: 6 N + 12 L NH HS T, N the parameters without wpe (with
// pos = rope there is none, and the rotation of q and k is not counted). MFU
// is this times tok/s over the machine's peak (`gqa train`, `gqa bench`).
double train_flops_per_token(const GPTConfig *c, int T);

// Thread shards of a training pass over B sequences (gpt_forward_backward):
// `shards`, or gpt_auto_shards(B) when it is 0; at most B.
int train_shards(int shards, int B);

// Learning rate at step it: linear warmup, cosine decay to min_lr at
// lr_decay_iters, then min_lr (nanoGPT's get_lr).
float train_lr(const TrainConfig *tc, int it);

// One training run: set up by trainer_init (data, vocabulary, model and
// optimizer by init_from; out_dir created), then trainer_run until max_iters
// or a signal. Rank 0 alone prints, logs and writes files.
typedef struct {
    TrainConfig tc;  // a copy; on a resume or init from a checkpoint, its shape
    Dist dist;
    GPT model;
    AdamW opt;
    Tokenizer tok;
    uint8_t *vocab_blob;  // serialised tokenizer, stored in checkpoints
    size_t vocab_len;
    TokenFile train, val;
    // DIR/recall.bin present: windows start at sequence boundaries and each
    // evaluation also scores the answers (data/recall.h)
    int recall;
    RecallTask task;
    int answers_only;  // the loss counts the answers alone (loss_on resolved)
    uint64_t data_rng;
    int step;
    float best_val_loss;
    FILE *log;
    char ckpt_path[TRAIN_PATH_MAX + 16], best_path[TRAIN_PATH_MAX + 16];
} Trainer;

// Dies with one line on bad data, a missing checkpoint or a shape mismatch.
// dist is the already initialised MPI context (dist_init).
void trainer_init(Trainer *t, const TrainConfig *tc, const Dist *dist);
// Train to max_iters (evaluating and checkpointing every eval_interval) or
// until SIGINT/SIGTERM (the state is saved). Returns the exit status: 0, or
// 1 when the loss or the gradient norm stopped being finite.
int trainer_run(Trainer *t);
void trainer_free(Trainer *t);

#endif
