/*
 * info.c: `gqa info`, the parameter count and KV-cache bytes of a shape,
 * given by the shape options or read from a checkpoint (--ckpt): the
 * attention kind (MHA, GQA, MQA by n_kv_head; MLA by kv_lora_rank), the
 * positions, and the cache per token with its formula. An MLA cache is also
 * put as the grouped attention that would hold as much: GQA with
 * (kv_lora_rank + rope_head_dim) / (2 head_dim) KV heads, DeepSeek-V2's
 * "groups".
 */
#include <stdio.h>
#include <stdlib.h>

#include "../model/checkpoint.h"
#include "../util/util.h"
#include "cli.h"

#define INFO_MAX_OPTS 14  // the shape options and --ckpt
#define INFO_MODEL_OPTS \
    "vocab_size,block_size,n_layer,n_head,n_kv_head,n_embd,bias,pos,rope_theta,kv_lora_rank,rope_head_dim,latent_norm"

int cmd_info(int argc, char **argv) {
    GPTConfig c = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 6,
                   .n_embd = 384, .bias = 1, .dropout = 0.0f, .pos = GPT_POS_LEARNED,
                   .rope_theta = GPT_ROPE_THETA_DEFAULT, .latent_norm = 1};  // cfg-m
    char ckpt[OPT_STR_MAX] = "";
    Opt opts[INFO_MAX_OPTS];
    int nopts = 0;
    cli_model_opts(&c, INFO_MODEL_OPTS, opts, &nopts);
    opts[nopts++] = (Opt){"ckpt", OPT_STRING, ckpt, 0, 0,
                          "print the shape of this checkpoint instead of the options' (which it then refuses)",
                          NULL, 0, "input", "PATH"};
    static const char usage[] =
        "usage: gqa info [--key=value ...] | --ckpt PATH\n"
        "\n"
        "Print the parameter count and KV-cache size of a model shape (defaults: cfg-m), or of a\n"
        "checkpoint's: the attention kind (MHA, GQA, MQA; MLA with kv_lora_rank > 0) and the cache\n"
        "per token with its formula; for MLA also the GQA it equals in cache, (kv_lora_rank +\n"
        "rope_head_dim) / (2 x head_dim) KV heads ('groups', as DeepSeek-V2 counts them).\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[1024];
    if (ckpt[0]) {
        // the file is the shape: a shape option beside it would be ignored, so it is refused
        int seen[INFO_MAX_OPTS] = {0};
        if (opts_parse_argv(opts, nopts, argc, argv, 2, NULL, NULL, 0, seen, err, sizeof err) != 0) die("%s", err);
        for (int i = 0; i < nopts; i++)
            if (seen[i] && opts[i].ptr != ckpt) {
                error_message("--%s: with --ckpt the shape is the checkpoint's; give one or the other",
                              opts[i].name);
                return 1;
            }
        GPT m;
        uint8_t *vocab;
        size_t vocab_len;
        if (checkpoint_load(ckpt, &m, &vocab, &vocab_len, NULL, NULL, err, sizeof err) != 0) {
            error_message("%s", err);
            return 1;
        }
        c = m.config;
        printf("checkpoint: %s", ckpt);
        if (m.wmat_memory)
            printf(" (weights in %s, for inference only: gqa sample reads it, training does not)",
                   weight_dtype_name(m.weight_dtype));
        printf("\n");
        free(vocab);
        gpt_free(&m);
    } else if (c.rope_head_dim == 0) {
        cli_model_resolve(&c);  // MLA with rope: DeepSeek-V2's head_size/2; a given value is validated below
    }
    if (gpt_config_validate(&c, err, sizeof err) != 0) {
        error_message("%s", err);
        return 1;
    }

    const size_t params = gpt_num_parameters(&c);
    const size_t per_tok = gpt_kv_bytes_per_token(&c, sizeof(float));
    const int HS = c.n_embd / c.n_head, group = c.n_head / c.n_kv_head, mla = gpt_is_latent(&c);
    const int r = c.kv_lora_rank, dR = c.rope_head_dim;
    const char *kind = mla ? "MLA" : c.n_kv_head == c.n_head ? "MHA" : c.n_kv_head == 1 ? "MQA" : "GQA";
    GPTConfig mha = c;
    mha.n_kv_head = c.n_head, mha.kv_lora_rank = mha.rope_head_dim = 0;
    const size_t mha_tok = gpt_kv_bytes_per_token(&mha, sizeof(float));
    char b1[32], b2[32], b3[32];
    printf("model: n_layer=%d n_head=%d n_kv_head=%d n_embd=%d vocab_size=%d block_size=%d bias=%d pos=%s", c.n_layer,
           c.n_head, c.n_kv_head, c.n_embd, c.vocab_size, c.block_size, c.bias, gpt_pos_names[c.pos]);
    if (mla) printf(" kv_lora_rank=%d rope_head_dim=%d latent_norm=%d", r, dR, c.latent_norm);
    printf("\n");
    if (mla)
        printf("attention: MLA, head_dim %d, %d query heads, each with its own K and V up-projected from one cached "
               "latent of kv_lora_rank %d (%s); query/key heads %d + rope_head_dim %d = %d wide\n",
               HS, c.n_head, r, c.latent_norm ? "RMSNorm" : "no norm", HS, dR, HS + dR);
    else
        printf("attention: %s, head_dim %d, %d query head%s per KV head\n", kind, HS, group, group == 1 ? "" : "s");
    if (c.pos == GPT_POS_ROPE && mla)
        printf("positions: rope, rope_theta %g: the decoupled rope_head_dim %d parts of q and k rotated by "
               "position (one rope key shared by all heads), no wpe parameters\n",
               (double)c.rope_theta, dR);
    else if (c.pos == GPT_POS_ROPE)
        printf("positions: rope, rope_theta %g: q and k rotated by position, no wpe parameters\n",
               (double)c.rope_theta);
    else
        printf("positions: learned, wpe of %d x %d = %zu parameters\n", c.block_size, c.n_embd,
               (size_t)c.block_size * c.n_embd);
    printf("parameters: %zu (%s as float32)\n", params, format_bytes((double)params * 4, b1, sizeof b1));
    // what --weight_dtype of sample and bench would hold: the matrices converted, the rest float32
    printf("weights for inference:");
    for (int d = 0; d < W_NUM_DTYPES; d++)
        printf("%s %s %s", d ? "," : "", weight_dtype_names[d],
               format_bytes(gpt_weight_bytes(&c, (WeightDtype)d, 0), b1, sizeof b1));
    printf(" (--weight_dtype of sample and bench; LayerNorms and biases stay f32)\n");
    if (mla) {
        printf("kv cache per token: %zu bytes float32 (n_layer * (kv_lora_rank + rope_head_dim) * 4 = %d * (%d + %d) "
               "* 4)\n", per_tok, c.n_layer, r, dR);
        printf("kv cache as GQA: equal to GQA with %g groups (KV heads: (kv_lora_rank + rope_head_dim) / "
               "(2 * head_dim) = %d / %d)\n", (double)(r + dR) / (2.0 * HS), r + dR, 2 * HS);
    } else {
        printf("kv cache per token: %zu bytes float32 (2 * n_layer * n_kv_head * head_dim * 4)\n", per_tok);
    }
    printf("kv cache per sequence at block_size %d: %zu bytes (%s); MHA would need %s\n", c.block_size,
           per_tok * c.block_size, format_bytes((double)per_tok * c.block_size, b2, sizeof b2),
           format_bytes((double)mha_tok * c.block_size, b3, sizeof b3));
    return 0;
}
