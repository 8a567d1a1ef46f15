/*
 * convert.c: `gqa convert`, a checkpoint with another number of KV heads
 * (model/convert.h does the conversion).
 */
#include <stdlib.h>

#include "../model/checkpoint.h"
#include "../model/convert.h"
#include "../util/util.h"
#include "cli.h"

int cmd_convert(int argc, char **argv) {
    char in[OPT_STR_MAX] = "", out[OPT_STR_MAX] = "";
    int G = 0, seed = 1337, method = CONVERT_MEAN;
    Opt kv = *cli_model_opt("n_kv_head");
    kv.ptr = &G, kv.help = "key/value heads of the result (dividing n_head)", kv.flags = OPT_REQUIRED, kv.group = NULL;
    const Opt opts[] = {
        {"ckpt", OPT_STRING, in, 0, 0, "source checkpoint (ckpt.bin or best.bin)", NULL, OPT_REQUIRED, NULL, "PATH"},
        kv,
        {"out", OPT_STRING, out, 0, 0, "where to write the converted checkpoint", NULL, OPT_REQUIRED, NULL, "PATH"},
        {"method", OPT_CHOICE, &method, 0, 0,
         "mean, first or random reduce the KV heads (mean-pooling is the GQA paper's); repeat expands them",
         convert_method_names, 0, NULL, NULL},
        {"seed", OPT_INT, &seed, 0, 2147483647, "seed for --method random", NULL, 0, NULL, NULL},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa convert --ckpt IN --n_kv_head G --out OUT [--method mean|first|random|repeat]\n"
        "\n"
        "Change the number of KV heads of a checkpoint (MHA -> GQA/MQA by mean-pooling, as Ainslie et\n"
        "al. 2023). The result has no optimizer state: continue with `gqa train --init_from=OUT`.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[1024];
    GPT src, dst;
    uint8_t *vocab;
    size_t vocab_len;
    if (checkpoint_load(in, &src, &vocab, &vocab_len, NULL, NULL, err, sizeof err) != 0) die("%s", err);
    if (gpt_convert_kv_heads(&src, &dst, G, (ConvertMethod)method, (uint64_t)seed, err, sizeof err) != 0)
        die("%s: %s", in, err);
    if (checkpoint_save(out, &dst, vocab, vocab_len, NULL, err, sizeof err) != 0) die("%s", err);
    char b1[32], b2[32];
    printf("converted %s (n_kv_head %d) -> %s (n_kv_head %d, %s): parameters %zu -> %zu, "
           "KV cache per token %s -> %s\n",
           in, src.config.n_kv_head, out, G, convert_method_names[method], src.num_parameters, dst.num_parameters,
           format_bytes((double)gpt_kv_bytes_per_token(&src.config, 4), b1, sizeof b1),
           format_bytes((double)gpt_kv_bytes_per_token(&dst.config, 4), b2, sizeof b2));
    free(vocab);
    gpt_free(&src);
    gpt_free(&dst);
    return 0;
}
