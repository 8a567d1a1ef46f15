/*
 * train.h: the face of train/: the training configuration (one struct, one
 * option table for flags and config files), the LR schedule, and the
 * `gqa train` subcommand (data loading, AdamW steps, evaluation, logging,
 * checkpoints and resume).
 */
#ifndef GQA_TRAIN_H
#define GQA_TRAIN_H

#include "../model/gpt.h"
#include "../util/opts.h"

typedef struct {
    // I/O
    char data_dir[OPT_STR_MAX];   // train.bin, val.bin, vocab.bin from `gqa prepare`
    char out_dir[OPT_STR_MAX];    // ckpt.bin, best.bin, log.txt
    char init_from[OPT_STR_MAX];  // scratch | resume | path to a checkpoint (weights only)
    // model
    int n_layer, n_head, n_kv_head, n_embd, block_size, bias;
    float dropout;
    // optimisation
    int batch_size, max_iters, warmup_iters, lr_decay_iters, decay_lr;
    float learning_rate, min_lr, weight_decay, beta1, beta2, grad_clip;
    // evaluation and logging
    int eval_interval, eval_iters, log_interval;
    float peak_gflops;  // for MFU: the machine's sgemm peak
    // run
    int seed, threads;
    int shards;  // gpt_forward_backward's thread shards; 0: gpt_auto_shards
} TrainConfig;

// nanoGPT's CPU recipe on Tiny Shakespeare (cfg-s), GQA off (n_kv_head = n_head).
void train_config_defaults(TrainConfig *tc);
// The option table over tc's fields (n entries in *n). Static storage.
const Opt *train_config_opts(TrainConfig *tc, int *n);
// Parse [CONFIG_FILE] [--key=value ...]: file first, then flags override.
// Returns 0, 1 for --help, -1 with err.
int train_config_parse(TrainConfig *tc, int argc, char **argv, int start, char *err, size_t errlen);
// Cross-field checks (warmup <= decay, min_lr <= lr, ...). 0 or -1 with err.
int train_config_validate(const TrainConfig *tc, char *err, size_t errlen);

// The model config a training config describes, for a vocabulary of
// vocab_size (which comes from the data, not from the training config).
GPTConfig train_model_config(const TrainConfig *tc, int vocab_size);

// nanoGPT's estimate of training FLOPs per token (forward + backward) at
// sequence length T: 6 N + 12 L NH HS T, N the parameters without wpe. MFU
// is this times tok/s over the machine's peak (`gqa train`, `gqa bench`).
double train_flops_per_token(const GPTConfig *c, int T);

// Thread shards of a training pass over B sequences (gpt_forward_backward):
// tc->shards, or gpt_auto_shards(B) when it is 0; at most B.
int train_shards(const TrainConfig *tc, int B);

// Learning rate at step it: linear warmup, cosine decay to min_lr at
// lr_decay_iters, then min_lr (nanoGPT's get_lr).
float train_lr(const TrainConfig *tc, int it);

int cmd_train(int argc, char **argv);

#endif
