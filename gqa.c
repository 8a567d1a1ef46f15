/*
 * gqa.c: the one binary. Parses the subcommand and hands over; each
 * subcommand parses its own flags (util/opts.h) and lives with its module.
 */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "data/prepare.h"
#include "model/convert.h"
#include "model/gpt.h"
#include "infer/infer.h"
#include "train/train.h"
#include "util/opts.h"
#include "util/util.h"

// ----------------------------------------------------------------------------
// gqa info: parameter count and KV-cache bytes of a shape

static int cmd_info(int argc, char **argv) {
    GPTConfig c = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 6,
                   .n_embd = 384, .bias = 1, .dropout = 0.0f};
    const Opt opts[] = {
        {"vocab_size", OPT_INT, &c.vocab_size, 1, 1 << 24, "vocabulary size V"},
        {"block_size", OPT_INT, &c.block_size, 1, 1 << 24, "context length T"},
        {"n_layer", OPT_INT, &c.n_layer, 1, 1 << 24, "transformer blocks L"},
        {"n_head", OPT_INT, &c.n_head, 1, 1 << 24, "query heads NH"},
        {"n_kv_head", OPT_INT, &c.n_kv_head, 1, 1 << 24, "key/value heads NKV (NH % NKV == 0)"},
        {"n_embd", OPT_INT, &c.n_embd, 1, 1 << 24, "embedding width C (C % NH == 0)"},
        {"bias", OPT_BOOL, &c.bias, 0, 1, "biases in Linear and LayerNorm"},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa info [--key=value ...]\n"
        "\n"
        "Print the parameter count and KV-cache size of a model shape.\n"
        "\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[512];
    if (gpt_config_validate(&c, err, sizeof err) != 0) die("%s", err);

    size_t params = gpt_num_parameters(&c);
    size_t per_tok = gpt_kv_bytes_per_token(&c, sizeof(float));
    const int HS = c.n_embd / c.n_head, group = c.n_head / c.n_kv_head;
    const char *kind = c.n_kv_head == c.n_head ? "MHA" : c.n_kv_head == 1 ? "MQA" : "GQA";
    char b1[32], b2[32], b3[32];
    printf("model: n_layer=%d n_head=%d n_kv_head=%d n_embd=%d vocab_size=%d block_size=%d bias=%d\n", c.n_layer,
           c.n_head, c.n_kv_head, c.n_embd, c.vocab_size, c.block_size, c.bias);
    printf("attention: %s, head_dim %d, %d query head%s per KV head\n", kind, HS, group, group == 1 ? "" : "s");
    printf("parameters: %zu (%s as float32)\n", params, format_bytes((double)params * 4, b1, sizeof b1));
    printf("kv cache per token: %zu bytes float32 (2 * n_layer * n_kv_head * head_dim * 4)\n", per_tok);
    printf("kv cache per sequence at block_size %d: %zu bytes (%s); MHA would need %s\n", c.block_size,
           per_tok * c.block_size, format_bytes((double)per_tok * c.block_size, b2, sizeof b2),
           format_bytes((double)per_tok * c.block_size * group, b3, sizeof b3));
    return 0;
}

// ----------------------------------------------------------------------------
// dispatch

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} Command;

static const Command commands[] = {
    {"prepare", cmd_prepare, "tokenize a UTF-8 text into train.bin, val.bin and vocab.bin"},
    {"train", cmd_train, "train a model (AdamW, eval, checkpoints, resume)"},
    {"sample", cmd_sample, "generate text from a checkpoint (KV cache, top-k/top-p)"},
    {"convert", cmd_convert, "change n_kv_head of a checkpoint (mean-pool MHA -> GQA/MQA, or repeat)"},
    {"bench", cmd_bench, "tokens/sec and memory across n_kv_head, batch and context"},
    {"mem", cmd_mem, "analytical memory: parameters and KV cache, MHA vs GQA, any size"},
    {"info", cmd_info, "parameter count and KV-cache bytes of a model shape"},
};

static void usage(FILE *f) {
    fprintf(f, "gqa: a GPT with grouped-query attention, in C\n\nusage: gqa <command> [--key=value ...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`gqa <command> --help` lists a command's options and defaults.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc, argv);
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
