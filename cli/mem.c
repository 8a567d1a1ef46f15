/*
 * mem.c: `gqa mem`, the analytical memory calculator: parameters and KV
 * cache for any shape, MHA against the chosen n_kv_head settings side by
 * side, with no allocation, so it answers for models far too large to run
 * here.
 *
 * KV cache = 2 (K and V) * n_layer * n_kv_head * head_dim * ctx *
 * batch_size * bytes per element. Parameters are those of gqa.c's GPT-2
 * block (fused QKV with n_head + 2 n_kv_head heads, 4x MLP, tied head).
 * Sizes print in decimal units (MB, GB: the figures papers quote) with the
 * binary ones beside them.
 */
#include <stdlib.h>
#include <string.h>

#include "../model/kvcache.h"
#include "../util/util.h"
#include "cli.h"

static const char *decimal(double bytes, char *buf, size_t len) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (bytes >= 1000.0 && u < 5) bytes /= 1000.0, u++;
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

// The CSV of KV bytes per context length (256, 512, .. up to ctx).
typedef struct {
    const GPTConfig *c;
    const OptList *kvs;
    int show_mha, ctx, batch_size;
    size_t elem;
} MemCsv;

static int write_csv(FILE *f, void *ctx) {
    const MemCsv *m = ctx;
    fprintf(f, "n_kv_head,ctx,kv_cache_bytes\n");
    for (int i = -m->show_mha; i < m->kvs->n; i++) {
        GPTConfig ci = *m->c;
        ci.n_kv_head = i < 0 ? m->c->n_head : m->kvs->v[i];
        for (long t = 256; t <= m->ctx; t *= 2)
            fprintf(f, "%d,%ld,%.0f\n", ci.n_kv_head, t,
                    (double)gpt_kv_bytes_per_token(&ci, m->elem) * (double)t * m->batch_size);
    }
    return ferror(f) ? -1 : 0;
}

int cmd_mem(int argc, char **argv) {
    // a Llama-2-7B-like shape with 8 KV heads
    GPTConfig c = {.vocab_size = 50257, .block_size = 4096, .n_layer = 32, .n_head = 32, .n_kv_head = 8,
                   .n_embd = 4096, .bias = 0, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    int batch_size = 1, ctx = 4096, kv_dtype = KV_F16, weight_dtype = KV_F16;
    OptList kvs = {1, {8}};
    char csv[OPT_STR_MAX] = "";
    Opt opts[16];
    int nopts = 0;
    cli_model_opts(&c, "n_layer,n_head", opts, &nopts);
    Opt kv = *cli_model_opt("n_kv_head");
    kv.type = OPT_INT_LIST, kv.ptr = &kvs;
    kv.help = "key/value heads NKV to compare with MHA (n_head): a comma list, e.g. 8,1";
    opts[nopts++] = kv;
    cli_model_opts(&c, "n_embd,block_size,vocab_size,bias,pos,rope_theta", opts, &nopts);
    const Opt own[] = {
        {"ctx", OPT_INT, &ctx, 1, 1 << 24, "positions held in the KV cache per sequence", NULL, 0, "cache", NULL},
        {"batch_size", OPT_INT, &batch_size, 1, 1 << 20, "sequences in the cache", NULL, 0, "cache", NULL},
        {"kv_dtype", OPT_CHOICE, &kv_dtype, 0, 0, "KV cache element type", cli_kv_dtype_choices, 0, "cache", NULL},
        {"weight_dtype", OPT_CHOICE, &weight_dtype, 0, 0, "parameter element type", cli_kv_dtype_choices, 0, "cache",
         NULL},
        {"csv", OPT_STRING, csv, 0, 0, "write KV bytes per context length (256, 512, .. ctx) to this CSV file",
         NULL, 0, "output", "FILE"},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) opts[nopts++] = own[i];
    static const char usage[] =
        "usage: gqa mem [--n_layer L --n_head H --n_kv_head G,.. --n_embd C --ctx T --batch_size B ...]\n"
        "\n"
        "Analytical memory of parameters and KV cache, MHA vs GQA/MQA, for any size (nothing is\n"
        "allocated). Defaults: a Llama-2-7B-like shape with 8 KV heads, 16-bit weights and cache.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    if (csv[0] && cli_check_output("csv", csv) != 0) return 1;
    char err[512];
    const size_t elem = kv_dtype_bytes((KVDtype)kv_dtype), welem = kv_dtype_bytes((KVDtype)weight_dtype);
    for (int i = 0; i < kvs.n; i++) {
        GPTConfig ci = c;
        ci.n_kv_head = kvs.v[i];
        if (gpt_config_validate(&ci, err, sizeof err) != 0) {
            error_message("%s", err);
            return 1;
        }
    }

    const int HS = c.n_embd / c.n_head;
    GPTConfig mha = c;
    mha.n_kv_head = c.n_head;
    const double seq = (double)ctx * batch_size;
    const double mha_tok = (double)gpt_kv_bytes_per_token(&mha, elem), mha_kv = mha_tok * seq;
    char b2[32], b3[32], b4[32], b5[32], b6[32];
    printf("shape: n_layer %d, n_head %d, head_dim %d, n_embd %d, pos %s; ctx %d x batch_size %d; kv_dtype %s "
           "(%zu bytes), weight_dtype %s (%zu bytes)\n\n",
           c.n_layer, c.n_head, HS, c.n_embd, gpt_pos_names[c.pos], ctx, batch_size, cli_kv_dtype_choices[kv_dtype], elem,
           cli_kv_dtype_choices[weight_dtype], welem);
    printf("| n_kv_head | attention | KV per token | KV cache | MHA / this | saved vs MHA | parameters | params + KV |\n");
    printf("|---:|:---|---:|---:|---:|---:|---:|---:|\n");
    int show_mha = 1;
    for (int i = 0; i < kvs.n; i++) show_mha &= kvs.v[i] != c.n_head;
    for (int i = -show_mha; i < kvs.n; i++) {
        GPTConfig ci = c;
        ci.n_kv_head = i < 0 ? c.n_head : kvs.v[i];
        const double tok = (double)gpt_kv_bytes_per_token(&ci, elem), kv_bytes = tok * seq;
        const double params = (double)gpt_num_parameters(&ci), pbytes = params * welem;
        const char *kind = ci.n_kv_head == c.n_head ? "MHA" : ci.n_kv_head == 1 ? "MQA" : "GQA";
        printf("| %d | %s | %.2f MB (%.0f B) | %s (%s) | %.2fx | %s | %.0f (%s) | %s |\n", ci.n_kv_head, kind,
               tok / 1e6, tok, decimal(kv_bytes, b2, sizeof b2), format_bytes(kv_bytes, b3, sizeof b3),
               mha_kv / kv_bytes, decimal(mha_kv - kv_bytes, b4, sizeof b4), params, decimal(pbytes, b5, sizeof b5),
               decimal(pbytes + kv_bytes, b6, sizeof b6));
    }
    if (csv[0]) {
        MemCsv m = {.c = &c, .kvs = &kvs, .show_mha = show_mha, .ctx = ctx, .batch_size = batch_size, .elem = elem};
        if (write_atomic(csv, write_csv, &m, err, sizeof err) != 0) {
            error_message("%s", err);
            return 1;
        }
        fprintf(stderr, "wrote %s\n", csv);
    }
    return 0;
}
