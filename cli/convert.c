/*
 * convert.c: `gqa convert`, a checkpoint with another number of KV heads or
 * turned into multi-head latent attention (model/convert.h does the
 * conversion), or its weights in bf16, f16 or q8 for inference only.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/checkpoint.h"
#include "../model/convert.h"
#include "../util/util.h"
#include "cli.h"

int cmd_convert(int argc, char **argv) {
    char in[OPT_STR_MAX] = "", out[OPT_STR_MAX] = "";
    int G = 0, R = 0, seed = 1337, method = CONVERT_MEAN, wdt = 0;
    // weight_dtype_names with "none" for f32: the float32 checkpoint is the one trained
    static const char *const dtypes[] = {"none", "bf16", "f16", "q8", NULL};
    Opt kv = *cli_model_opt("n_kv_head");
    kv.ptr = &G, kv.min = 0, kv.group = NULL;
    kv.help = "key/value heads of the result, dividing n_head (0: not this conversion; give this or --kv_lora_rank)";
    Opt lr = *cli_model_opt("kv_lora_rank");
    lr.ptr = &R, lr.group = NULL;
    lr.help = "convert to multi-head latent attention (MLA) with a latent of this width per token and layer, at "
              "most 2 x n_kv_head x head_size of the source (its full rank: the same model); below it, the "
              "smallest singular directions of the K/V projection are dropped (0: not this conversion; give "
              "this or --n_kv_head)";
    const Opt opts[] = {
        {"ckpt", OPT_STRING, in, 0, 0, "source checkpoint (ckpt.bin or best.bin)", NULL, OPT_REQUIRED, NULL, "PATH"},
        kv,
        lr,
        {"out", OPT_STRING, out, 0, 0, "where to write the converted checkpoint", NULL, OPT_REQUIRED, NULL, "PATH"},
        {"method", OPT_CHOICE, &method, 0, 0,
         "with --n_kv_head: mean, first or random reduce the KV heads (mean-pooling is the GQA paper's); repeat "
         "expands them",
         convert_method_names, 0, NULL, NULL},
        {"seed", OPT_INT, &seed, 0, 2147483647, "seed for --method random", NULL, 0, NULL, NULL},
        {"weight_dtype", OPT_CHOICE, &wdt, 0, 0,
         "write the weights in this dtype, for inference only (gqa sample and info read the result; training "
         "and the other conversions do not): bf16 and f16 half the bytes, q8 (int8, a scale per 32) 1.125 "
         "bytes a weight; LayerNorms and biases stay f32 (none: not this conversion)",
         dtypes, 0, NULL, NULL},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa convert --ckpt IN --n_kv_head G --out OUT [--method mean|first|random|repeat]\n"
        "       gqa convert --ckpt IN --kv_lora_rank R --out OUT\n"
        "       gqa convert --ckpt IN --weight_dtype bf16|f16|q8 --out OUT\n"
        "\n"
        "Change the number of KV heads of a checkpoint (MHA -> GQA/MQA by mean-pooling, as Ainslie et\n"
        "al. 2023), or turn its attention into multi-head latent attention (MLA, DeepSeek-V2) by a\n"
        "truncated SVD of each layer's stacked K/V projection (as MHA2MLA and TransMLA): lossless at\n"
        "R = 2 x n_kv_head x head_size, the best rank-R approximation below it; the summary line gives\n"
        "its relative Frobenius error. MLA conversion needs pos=learned; the result has no latent norm.\n"
        "The result has no optimizer state: continue with `gqa train --init_from=OUT`. With --weight_dtype\n"
        "the result is a smaller checkpoint for inference only, its weights as `gqa sample --weight_dtype`\n"
        "would convert them at load.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    if ((G > 0) + (R > 0) + (wdt > 0) != 1) {
        error_message("give one of --n_kv_head G (grouped attention, G >= 1), --kv_lora_rank R (MLA, R >= 1) or "
                      "--weight_dtype bf16|f16|q8%s",
                      (G > 0) + (R > 0) + (wdt > 0) > 1 ? ", not more" : "");
        return 1;
    }
    if (cli_check_output("out", out) != 0) return 1;
    char err[1024];
    GPT src, dst;
    uint8_t *vocab;
    size_t vocab_len;
    if (checkpoint_load(in, &src, &vocab, &vocab_len, NULL, NULL, err, sizeof err) != 0) die("%s", err);
    if (src.wmat_memory)
        die("%s: the weights are %s, for inference only: convert needs a float32 checkpoint (ckpt.bin or best.bin)",
            in, weight_dtype_name(src.weight_dtype));
    if (wdt > 0) {
        char b1[32], b2[32];
        if (gpt_set_weight_dtype(&src, (WeightDtype)wdt) != 0) die("%s: %s", in, src.error);
        if (checkpoint_save(out, &src, vocab, vocab_len, NULL, err, sizeof err) != 0) die("%s", err);
        struct stat si, so;
        if (stat(in, &si) != 0 || stat(out, &so) != 0) die("%s: %s", out, strerror(errno));
        printf("converted %s (%s) -> %s (%s): %s weights, for inference only\n", in,
               format_bytes((double)si.st_size, b1, sizeof b1), out, format_bytes((double)so.st_size, b2, sizeof b2),
               weight_dtype_name(src.weight_dtype));
        free(vocab);
        gpt_free(&src);
        return 0;
    }
    ConvertLatentStats st;
    if (R > 0) {
        if (gpt_convert_to_latent(&src, &dst, R, &st, err, sizeof err) != 0) die("%s: %s", in, err);
        if (R > src.config.n_embd)
            fprintf(stderr, "note: kv_lora_rank %d > n_embd %d: a latent of x spans at most n_embd dimensions, so "
                            "the other %d are zero and stay zero in training; kv_lora_rank %d is already lossless\n",
                    R, src.config.n_embd, R - src.config.n_embd, src.config.n_embd);
    } else if (gpt_convert_kv_heads(&src, &dst, G, (ConvertMethod)method, (uint64_t)seed, err, sizeof err) != 0) {
        die("%s: %s", in, err);
    }
    if (checkpoint_save(out, &dst, vocab, vocab_len, NULL, err, sizeof err) != 0) die("%s", err);
    char b1[32], b2[32], what[64];
    if (R > 0) snprintf(what, sizeof what, "MLA, kv_lora_rank %d", R);
    else snprintf(what, sizeof what, "n_kv_head %d, %s", G, convert_method_names[method]);
    printf("converted %s (n_kv_head %d) -> %s (%s): parameters %zu -> %zu, KV cache per token %s -> %s", in,
           src.config.n_kv_head, out, what, src.num_parameters, dst.num_parameters,
           format_bytes((double)gpt_kv_bytes_per_token(&src.config, 4), b1, sizeof b1),
           format_bytes((double)gpt_kv_bytes_per_token(&dst.config, 4), b2, sizeof b2));
    if (R > 0)
        printf(", K/V projection at rank %d: relative Frobenius error %.4f over %d layers (worst: layer %d, %.4f)",
               R, st.kv_sq > 0 ? sqrt(st.discarded_sq / st.kv_sq) : 0.0, src.config.n_layer, st.worst_layer,
               st.worst_rel);
    printf("\n");
    free(vocab);
    gpt_free(&src);
    gpt_free(&dst);
    return 0;
}
