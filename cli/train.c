/*
 * train.c: `gqa train`: its options (flags and config files), usage and
 * resolved configuration; the run itself is train/train.c.
 */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "../train/train.h"
#include "../util/util.h"
#include "cli.h"

_Static_assert(TRAIN_PATH_MAX == OPT_STR_MAX, "train's path fields are OPT_STRING buffers");

#define MAX_TRAIN_OPTS 40

const Opt *cli_train_opts(TrainConfig *tc, int *n) {
    static Opt opts[MAX_TRAIN_OPTS];
    static char init_help[256];  // the keywords as train.h declares them
    snprintf(init_help, sizeof init_help,
             "%s; %s (out_dir/ckpt.bin, optimizer state included); or the PATH of a checkpoint to start from "
             "(weights only)",
             train_init_keywords[TRAIN_INIT_SCRATCH], train_init_keywords[TRAIN_INIT_RESUME]);
    int k = 0;
    cli_model_opts(&tc->model,
                   "n_layer,n_head,n_kv_head,n_embd,block_size,bias,pos,rope_theta,kv_lora_rank,rope_head_dim,"
                   "latent_norm,dropout",
                   opts, &k);
    const Opt table[] = {
        {"batch_size", OPT_INT, &tc->batch_size, 1, 1 << 20, "sequences per step (all MPI ranks together)", NULL, 0,
         "optimizer", NULL},
        {"learning_rate", OPT_FLOAT, &tc->learning_rate, 0, 10, "peak learning rate", NULL, 0, "optimizer", NULL},
        {"weight_decay", OPT_FLOAT, &tc->weight_decay, 0, 10, "AdamW decoupled weight decay (dim >= 2 tensors)",
         NULL, 0, "optimizer", NULL},
        {"beta1", OPT_FLOAT, &tc->beta1, 0, 0.999999, "AdamW beta1", NULL, 0, "optimizer", NULL},
        {"beta2", OPT_FLOAT, &tc->beta2, 0, 0.999999, "AdamW beta2", NULL, 0, "optimizer", NULL},
        {"grad_clip", OPT_FLOAT, &tc->grad_clip, 0, 1e9, "clip the global gradient norm to this (0: off)", NULL, 0,
         "optimizer", NULL},
        {"max_iters", OPT_INT, &tc->max_iters, 0, 1e9, "optimizer steps in total", NULL, 0, "schedule", NULL},
        {"decay_lr", OPT_BOOL, &tc->decay_lr, 0, 1, "warmup + cosine decay (else a constant learning_rate)", NULL, 0,
         "schedule", NULL},
        {"warmup_iters", OPT_INT, &tc->warmup_iters, 0, 1e9, "linear warmup steps", NULL, 0, "schedule", NULL},
        {"lr_decay_iters", OPT_INT, &tc->lr_decay_iters, 1, 1e9, "step where the cosine reaches min_lr", NULL, 0,
         "schedule", NULL},
        {"min_lr", OPT_FLOAT, &tc->min_lr, 0, 10, "learning rate at the end of the cosine decay", NULL, 0,
         "schedule", NULL},
        {"eval_interval", OPT_INT, &tc->eval_interval, 1, 1e9, "evaluate and checkpoint every N steps", NULL, 0,
         "evaluation", NULL},
        {"eval_iters", OPT_INT, &tc->eval_iters, 1, 1e9, "batches per split in an evaluation", NULL, 0,
         "evaluation", NULL},
        {"loss_on", OPT_CHOICE, &tc->loss_on, 0, 0,
         "targets the loss counts: all; answers (a recall task's answer positions alone, as Zoology trains); "
         "auto: answers on a recall task, else all",
         train_loss_on_names, 0, "evaluation", NULL},
        {"data_dir", OPT_STRING, tc->data_dir, 0, 0, "directory with train.bin, val.bin, vocab.bin (gqa prepare)",
         NULL, 0, "input and output", "DIR"},
        {"out_dir", OPT_STRING, tc->out_dir, 0, 0, "where ckpt.bin, best.bin and log.txt go (created)", NULL, 0,
         "input and output", "DIR"},
        {"init_from", OPT_STRING, tc->init_from, 0, 0, init_help, NULL, 0, "input and output", "WHAT"},
        {"log_interval", OPT_INT, &tc->log_interval, 1, 1e9, "print a training line every N steps", NULL, 0,
         "input and output", NULL},
        {"seed", OPT_INT, &tc->seed, 0, 2147483647, "random seed (weights, batches, dropout)", NULL, 0, "system",
         NULL},
        {"threads", OPT_INT, &tc->threads, 0, 1024, "OpenMP threads (0: OMP_NUM_THREADS or all cores)", NULL, 0,
         "system", NULL},
        {"shards", OPT_INT, &tc->shards, 0, 64,
         "threads that each train a slice of the batch (0: auto, the threads when the batch splits evenly; "
         "1: one pass with every kernel threaded)",
         NULL, 0, "system", NULL},
        {"peak_gflops", OPT_FLOAT, &tc->peak_gflops, 0, 1e9,
         "sgemm peak of this machine, for MFU (0: measure it at the start and print it)", NULL, 0, "system", NULL},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) opts[k++] = table[i];
    CHECK(k <= MAX_TRAIN_OPTS);
    *n = k;
    return opts;
}

int cli_train_parse(TrainConfig *tc, int argc, char **argv, char *err, size_t errlen) {
    int n;
    const Opt *opts = cli_train_opts(tc, &n);
    const int rc = opts_parse(opts, n, argc, argv, 1, err, errlen);
    if (rc != 0) return rc;
    cli_model_resolve(&tc->model);
    return train_config_validate(tc, err, errlen);
}

int cmd_train(int argc, char **argv) {
    Dist dist;
    dist_init(&dist, &argc, &argv);
    if (dist.rank != 0 && !freopen("/dev/null", "w", stdout)) die("cannot silence rank %d", dist.rank);
    TrainConfig tc;
    train_config_defaults(&tc);
    char err[1024];
    int rc = cli_train_parse(&tc, argc, argv, err, sizeof err);
    int nopts;
    const Opt *opts = cli_train_opts(&tc, &nopts);
    if (rc == 1) {
        printf("usage: gqa train [CONFIG_FILE] [--key=value ...]\n\n"
               "Train a GPT on token files from `gqa prepare`. CONFIG_FILE has `key = value` lines with the\n"
               "keys below; flags override it. Defaults are nanoGPT's CPU recipe (cfg-s).\n");
        opts_print_help(opts, nopts, stdout);
        dist_finalize();
        return 0;
    }
    if (rc != 0) die("%s", err);
    if (tc.threads > 0) omp_set_num_threads(tc.threads);

    Trainer t;
    trainer_init(&t, &tc, &dist);
    tc = t.tc;  // the shape of a checkpoint started from, for the listing
    printf("training configuration:\n");
    opts_print_values(opts, nopts, stdout);
    const int status = trainer_run(&t);
    trainer_free(&t);
    dist_finalize();
    return status;
}
