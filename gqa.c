/*
 * gqa.c: the one binary. Finds the subcommand and hands over; each
 * subcommand (cli/) parses its own flags and calls the library.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} Command;

static const Command commands[] = {
    {"prepare", cmd_prepare, "tokenize a UTF-8 text, or generate the associative-recall task, into train.bin, val.bin, vocab.bin"},
    {"train", cmd_train, "train a model (AdamW, evaluation, checkpoints, resume)"},
    {"sample", cmd_sample, "generate text from a checkpoint (KV cache, top-k/top-p)"},
    {"convert", cmd_convert, "change n_kv_head of a checkpoint (mean-pool MHA -> GQA/MQA, or repeat)"},
    {"bench", cmd_bench, "tokens/sec and memory across attention settings, batch size and context"},
    {"mem", cmd_mem, "analytical memory: parameters and KV cache, MHA vs GQA/MQA/MLA, any size"},
    {"info", cmd_info, "parameter count and KV-cache bytes of a model shape"},
};

static void usage(FILE *f) {
    fprintf(f, "gqa: a GPT with grouped-query attention, in C\n\n"
               "usage: gqa <command> [--key=value ...]\n"
               "       gqa --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`gqa <command> --help` lists a command's options and defaults.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        cli_print_version(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc, argv);
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
