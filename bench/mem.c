/*
 * mem.c: `gqa mem`, the analytical memory calculator: parameters and KV
 * cache for any shape, MHA against the chosen n_kv_head side by side, with
 * no allocation, so it answers for models far too large to run here.
 *
 * KV cache = 2 (K and V) * n_layer * n_kv_head * head_dim * block_size *
 * batch_size * bytes per element. Parameters are those of gqa.c's GPT-2
 * block (fused QKV with n_head + 2 n_kv_head heads, 4x MLP, tied head).
 * Sizes print in decimal units (MB, GB: the figures papers quote) with the
 * binary ones beside them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../model/gpt.h"
#include "../util/opts.h"
#include "../util/util.h"
#include "bench.h"

#define MAX_G 32

static const char *decimal(double bytes, char *buf, size_t len) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (bytes >= 1000.0 && u < 5) bytes /= 1000.0, u++;
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

int cmd_mem(int argc, char **argv) {
    GPTConfig c = {.vocab_size = 50257, .block_size = 4096, .n_layer = 32, .n_head = 32, .n_kv_head = 8,
                   .n_embd = 4096, .bias = 0};
    int batch_size = 1;
    char dtype[OPT_STR_MAX] = "f16", list[OPT_STR_MAX] = "", csv[OPT_STR_MAX] = "";
    const Opt opts[] = {
        {"n_layer", OPT_INT, &c.n_layer, 1, 1 << 24, "transformer blocks"},
        {"n_head", OPT_INT, &c.n_head, 1, 1 << 24, "query heads"},
        {"n_kv_head", OPT_INT, &c.n_kv_head, 1, 1 << 24, "key/value heads to compare with MHA"},
        {"n_embd", OPT_INT, &c.n_embd, 1, 1 << 24, "embedding width (head_dim = n_embd / n_head)"},
        {"block_size", OPT_INT, &c.block_size, 1, 1 << 30, "context length held in the cache"},
        {"batch_size", OPT_INT, &batch_size, 1, 1 << 24, "sequences"},
        {"vocab_size", OPT_INT, &c.vocab_size, 1, 1 << 24, "vocabulary (parameters only)"},
        {"bias", OPT_BOOL, &c.bias, 0, 1, "biases (parameters only)"},
        {"dtype", OPT_STRING, dtype, 0, 0, "element type of weights and cache: f32 | bf16 | f16"},
        {"n_kv_head_list", OPT_STRING, list, 0, 0, "compare several, e.g. 64,8,1 (overrides n_kv_head)"},
        {"csv", OPT_STRING, csv, 0, 0, "write KV bytes per context length (256 .. block_size, x2) to this CSV"},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa mem --n_layer L --n_head H --n_kv_head G --n_embd C --block_size T --batch_size B "
        "--dtype f32|bf16|f16\n"
        "\n"
        "Analytical memory of parameters and KV cache, MHA vs GQA, for any size.\n"
        "\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[512];
    size_t elem = !strcmp(dtype, "f32") ? 4 : (!strcmp(dtype, "bf16") || !strcmp(dtype, "f16")) ? 2 : 0;
    if (!elem) die("option 'dtype': '%s' is not f32, bf16 or f16", dtype);
    int gs[MAX_G], ng = 0;
    if (list[0]) {
        for (char *p = list; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || (*end != ',' && *end != '\0') || v < 1 || v > (1 << 24) || ng == MAX_G)
                die("option 'n_kv_head_list': '%s' is not a list of up to %d positive integers", list, MAX_G);
            gs[ng++] = (int)v;
            p = *end ? end + 1 : end;
        }
    } else {
        gs[ng++] = c.n_kv_head;
    }
    for (int i = 0; i < ng; i++) {
        GPTConfig ci = c;
        ci.n_kv_head = gs[i];
        if (gpt_config_validate(&ci, err, sizeof err) != 0) die("%s", err);
    }

    const int HS = c.n_embd / c.n_head;
    GPTConfig mha = c;
    mha.n_kv_head = c.n_head;
    const double seq = (double)c.block_size * batch_size;
    const double mha_tok = (double)gpt_kv_bytes_per_token(&mha, elem), mha_kv = mha_tok * seq;
    char b2[32], b3[32], b4[32], b5[32], b6[32];
    printf("shape: n_layer %d, n_head %d, head_dim %d, n_embd %d; block_size %d x batch_size %d; %s (%zu bytes)\n\n",
           c.n_layer, c.n_head, HS, c.n_embd, c.block_size, batch_size, dtype, elem);
    printf("| n_kv_head | attention | KV per token | KV cache | MHA / this | saved vs MHA | parameters | params + KV |\n");
    printf("|---:|:---|---:|---:|---:|---:|---:|---:|\n");
    int show_mha = 1;
    for (int i = 0; i < ng; i++) show_mha &= gs[i] != c.n_head;
    for (int i = -show_mha; i < ng; i++) {
        GPTConfig ci = c;
        ci.n_kv_head = i < 0 ? c.n_head : gs[i];
        const double tok = (double)gpt_kv_bytes_per_token(&ci, elem), kv = tok * seq;
        const double params = (double)gpt_num_parameters(&ci), pbytes = params * elem;
        const char *kind = ci.n_kv_head == c.n_head ? "MHA" : ci.n_kv_head == 1 ? "MQA" : "GQA";
        printf("| %d | %s | %.2f MB (%.0f B) | %s (%s) | %.2fx | %s | %.0f (%s) | %s |\n", ci.n_kv_head, kind,
               tok / 1e6, tok, decimal(kv, b2, sizeof b2), format_bytes(kv, b3, sizeof b3), mha_kv / kv,
               decimal(mha_kv - kv, b4, sizeof b4), params, decimal(pbytes, b5, sizeof b5),
               decimal(pbytes + kv, b6, sizeof b6));
    }
    if (csv[0]) {
        FILE *f = fopen(csv, "w");
        if (!f) die("cannot write '%s': %s", csv, strerror(errno));
        fprintf(f, "n_kv_head,ctx,kv_cache_bytes\n");
        for (int i = -show_mha; i < ng; i++) {
            GPTConfig ci = c;
            ci.n_kv_head = i < 0 ? c.n_head : gs[i];
            for (long t = 256; t <= c.block_size; t *= 2)
                fprintf(f, "%d,%ld,%.0f\n", ci.n_kv_head, t,
                        (double)gpt_kv_bytes_per_token(&ci, elem) * (double)t * batch_size);
        }
        if (fclose(f) != 0) die("cannot write '%s': %s", csv, strerror(errno));
        fprintf(stderr, "wrote %s\n", csv);
    }
    return 0;
}
