/*
 * cli.h: the subcommands of the gqa binary, and what they share: the model
 * shape options (declared once, with one set of ranges), the choice lists
 * of the library's enums, and output-path checks.
 *
 * Each subcommand parses its flags with an option table (opts.h), prints
 * its usage and resolved configuration, and calls the library (model/,
 * data/, train/, infer/, bench/), which holds no argument parsing or usage
 * text. A subcommand returns its exit status: 0, 1 on an error (one line on
 * stderr), 0 after --help.
 */
#ifndef GQA_CLI_H
#define GQA_CLI_H

#include "../model/gpt.h"
#include "opts.h"

int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mem(int argc, char **argv);
int cmd_info(int argc, char **argv);

// The model-shape options over c's fields, in one place: vocab_size,
// block_size, n_layer, n_head, n_kv_head, n_embd, bias, dropout, pos,
// rope_theta, kv_lora_rank, rope_head_dim, latent_norm. `names` is
// a comma list of those a subcommand takes, in the order it lists them;
// they are appended to out[*n] (which must have room) in group "model".
void cli_model_opts(GPTConfig *c, const char *names, Opt *out, int *n);
// The one description of each shape option, for a subcommand that takes
// one of them in another form (bench's and mem's n_kv_head list).
const Opt *cli_model_opt(const char *name);
// Fill in what the options leave to the shape: rope_head_dim 0 means
// head_size/2 (rounded down to even, at least 2) for MLA with rope (a value
// given for any other shape stays, and validation refuses it); latent_norm
// is 0 without a latent. Call after parsing, before validating.
void cli_model_resolve(GPTConfig *c);

// `gqa train`'s option table over tc's fields (static storage), and its
// parse of [CONFIG_FILE] [--key=value ...] (the file first, then the flags)
// with the cross-field checks: 0, 1 for --help, -1 with err.
struct TrainConfig;
const Opt *cli_train_opts(struct TrainConfig *tc, int *n);
int cli_train_parse(struct TrainConfig *tc, int argc, char **argv, char *err, size_t errlen);

// The KV cache element types (KVDtype order), NULL-terminated, for
// OPT_CHOICE options.
extern const char *const cli_kv_dtype_choices[];

// Fail early on an output path that cannot be written: before a long
// computation, create and remove `path`.tmp beside it (the file is written
// atomically later). Returns 0, or 1 after printing one error line.
int cli_check_output(const char *option, const char *path);

// "gqa 1.0.0 (gcc 12.2.0; OpenBLAS 0.3.21 ...; OpenMP 2 threads; MPI no)"
void cli_print_version(FILE *f);

#endif
