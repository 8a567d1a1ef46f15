/*
 * info.c: `gqa info`, the parameter count and KV-cache bytes of a shape.
 */
#include <stdio.h>

#include "../util/util.h"
#include "cli.h"

int cmd_info(int argc, char **argv) {
    GPTConfig c = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 6,
                   .n_embd = 384, .bias = 1, .dropout = 0.0f, .pos = GPT_POS_LEARNED,
                   .rope_theta = GPT_ROPE_THETA_DEFAULT};  // cfg-m
    Opt opts[10];
    int nopts = 0;
    cli_model_opts(&c, "vocab_size,block_size,n_layer,n_head,n_kv_head,n_embd,bias,pos,rope_theta", opts, &nopts);
    static const char usage[] =
        "usage: gqa info [--key=value ...]\n"
        "\n"
        "Print the parameter count and KV-cache size of a model shape (defaults: cfg-m).\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[512];
    if (gpt_config_validate(&c, err, sizeof err) != 0) {
        error_message("%s", err);
        return 1;
    }

    size_t params = gpt_num_parameters(&c);
    size_t per_tok = gpt_kv_bytes_per_token(&c, sizeof(float));
    const int HS = c.n_embd / c.n_head, group = c.n_head / c.n_kv_head;
    const char *kind = c.n_kv_head == c.n_head ? "MHA" : c.n_kv_head == 1 ? "MQA" : "GQA";
    char b1[32], b2[32], b3[32];
    printf("model: n_layer=%d n_head=%d n_kv_head=%d n_embd=%d vocab_size=%d block_size=%d bias=%d pos=%s\n",
           c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.vocab_size, c.block_size, c.bias, gpt_pos_names[c.pos]);
    printf("attention: %s, head_dim %d, %d query head%s per KV head\n", kind, HS, group, group == 1 ? "" : "s");
    if (c.pos == GPT_POS_ROPE)
        printf("positions: rope, rope_theta %g: q and k rotated by position, no wpe parameters\n",
               (double)c.rope_theta);
    else
        printf("positions: learned, wpe of %d x %d = %zu parameters\n", c.block_size, c.n_embd,
               (size_t)c.block_size * c.n_embd);
    printf("parameters: %zu (%s as float32)\n", params, format_bytes((double)params * 4, b1, sizeof b1));
    printf("kv cache per token: %zu bytes float32 (2 * n_layer * n_kv_head * head_dim * 4)\n", per_tok);
    printf("kv cache per sequence at block_size %d: %zu bytes (%s); MHA would need %s\n", c.block_size,
           per_tok * c.block_size, format_bytes((double)per_tok * c.block_size, b2, sizeof b2),
           format_bytes((double)per_tok * c.block_size * group, b3, sizeof b3));
    return 0;
}
