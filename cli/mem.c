/*
 * mem.c: `gqa mem`, the analytical memory calculator: parameters and KV
 * cache for any shape, MHA against the chosen n_kv_head settings and MLA
 * kv_lora_rank settings side by side, with no allocation, so it answers for
 * models far too large to run here.
 *
 * KV cache = per-token bytes * ctx * batch_size, per token (the model's
 * gpt_kv_bytes_per_token): grouped 2 (K and V) * n_layer * n_kv_head *
 * head_dim * elem, MLA n_layer * (kv_lora_rank + rope_head_dim) * elem,
 * which is the grouped figure at n_kv_head = (r + dR) / (2 head_dim): the
 * "as GQA groups" column (DeepSeek-V2's Table 1 compares MLA with GQA of
 * that many groups). Parameters are those of gqa.c's GPT-2 block (fused
 * QKV with n_head + 2 n_kv_head heads, or MLA's q, down- and
 * up-projections; 4x MLP, tied head). Sizes print in decimal units (MB, GB:
 * the figures papers quote) with the binary ones beside them.
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

// The rows of the table and the CSV, in order: MHA (unless the list has
// it), every n_kv_head of the list, then every kv_lora_rank (MLA, with
// n_kv_head = n_head as it requires, and the run's rope_head_dim).
#define MEM_ROWS_MAX (1 + 2 * OPT_LIST_MAX)

// "MHA", "GQA", "MQA" or "MLA (r 512, dR 64)".
static const char *attention_name(const GPTConfig *c, char *buf, size_t len) {
    if (gpt_is_latent(c)) snprintf(buf, len, "MLA (r %d, dR %d)", c->kv_lora_rank, c->rope_head_dim);
    else snprintf(buf, len, "%s", c->n_kv_head == c->n_head ? "MHA" : c->n_kv_head == 1 ? "MQA" : "GQA");
    return buf;
}

// The KV heads of the grouped attention whose cache per token is c's:
// n_kv_head, or (r + dR) / (2 head_dim) for MLA (may be fractional).
static double as_gqa_groups(const GPTConfig *c) {
    const double HS = c->n_embd / c->n_head;
    return gpt_is_latent(c) ? (c->kv_lora_rank + c->rope_head_dim) / (2.0 * HS) : c->n_kv_head;
}

// The CSV of KV bytes per context length (256, 512, .. up to ctx), a block
// of lines per row; the columns after kv_cache_bytes came later (readers
// by position keep working).
typedef struct {
    const GPTConfig *rows;
    int nrows, ctx, batch_size;
    size_t elem;
} MemCsv;

static int write_csv(FILE *f, void *ctx) {
    const MemCsv *m = ctx;
    fprintf(f, "n_kv_head,ctx,kv_cache_bytes,kv_lora_rank,rope_head_dim\n");
    for (int i = 0; i < m->nrows; i++) {
        const GPTConfig *ci = &m->rows[i];
        for (long t = 256; t <= m->ctx; t *= 2)
            fprintf(f, "%d,%ld,%.0f,%d,%d\n", ci->n_kv_head, t,
                    (double)gpt_kv_bytes_per_token(ci, m->elem) * (double)t * m->batch_size, ci->kv_lora_rank,
                    ci->rope_head_dim);
    }
    return ferror(f) ? -1 : 0;
}

int cmd_mem(int argc, char **argv) {
    // a Llama-2-7B-like shape with 8 KV heads
    GPTConfig c = {.vocab_size = 50257, .block_size = 4096, .n_layer = 32, .n_head = 32, .n_kv_head = 8,
                   .n_embd = 4096, .bias = 0, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT,
                   .latent_norm = 1};
    int batch_size = 1, ctx = 4096, kv_dtype = KV_F16, weight_dtype = W_F16;
    OptList kvs = {1, {8}}, ranks = {0, {0}};
    char csv[OPT_STR_MAX] = "";
    Opt opts[20];
    int nopts = 0;
    cli_model_opts(&c, "n_layer,n_head", opts, &nopts);
    Opt kv = *cli_model_opt("n_kv_head");
    kv.type = OPT_INT_LIST, kv.ptr = &kvs;
    kv.help = "key/value heads NKV to compare with MHA (n_head): a comma list, e.g. 8,1";
    opts[nopts++] = kv;
    Opt rank = *cli_model_opt("kv_lora_rank");
    rank.type = OPT_INT_LIST, rank.ptr = &ranks, rank.min = 1;
    rank.help = "MLA rows after the n_kv_head ones: latent widths r, a comma list, e.g. 512 (each row has "
                "n_kv_head = n_head; none: no MLA rows)";
    opts[nopts++] = rank;
    cli_model_opts(&c, "n_embd,block_size,vocab_size,bias,pos,rope_theta,rope_head_dim,latent_norm", opts, &nopts);
    const Opt own[] = {
        {"ctx", OPT_INT, &ctx, 1, 1 << 24, "positions held in the KV cache per sequence", NULL, 0, "cache", NULL},
        {"batch_size", OPT_INT, &batch_size, 1, 1 << 20, "sequences in the cache", NULL, 0, "cache", NULL},
        {"kv_dtype", OPT_CHOICE, &kv_dtype, 0, 0, "KV cache element type", cli_kv_dtype_choices, 0, "cache", NULL},
        {"weight_dtype", OPT_CHOICE, &weight_dtype, 0, 0,
         "weight element type (the matrices; LayerNorms and biases stay f32): q8 is int8 with a float scale per 32",
         weight_dtype_names, 0, "cache", NULL},
        {"csv", OPT_STRING, csv, 0, 0, "write KV bytes per context length (256, 512, .. ctx) to this CSV file",
         NULL, 0, "output", "FILE"},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) opts[nopts++] = own[i];
    static const char usage[] =
        "usage: gqa mem [--n_layer L --n_head H --n_kv_head G,.. --kv_lora_rank R,.. --n_embd C --ctx T ...]\n"
        "\n"
        "Analytical memory of parameters and KV cache, MHA vs GQA/MQA and MLA, for any size (nothing\n"
        "is allocated). Defaults: a Llama-2-7B-like shape with 8 KV heads, 16-bit weights and cache.\n"
        "One row per setting: MHA, each n_kv_head, then each kv_lora_rank (MLA caches n_layer x\n"
        "(kv_lora_rank + rope_head_dim) numbers per token; 'as GQA groups' is the n_kv_head of the\n"
        "grouped attention with the same cache, (r + dR) / (2 x head_dim) for MLA). The head size is\n"
        "n_embd / n_head: DeepSeek-V2's attention (60 layers, 128 heads of 128, r 512, dR 64) is\n"
        "--n_layer 60 --n_head 128 --n_embd 16384 --n_kv_head 128,8,1 --kv_lora_rank 512\n"
        "--rope_head_dim 64 --pos rope.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    if (csv[0] && cli_check_output("csv", csv) != 0) return 1;
    char err[512];
    const size_t elem = kv_dtype_bytes((KVDtype)kv_dtype);
    const WeightDtype wdt = (WeightDtype)weight_dtype;

    // the rows' configs, each validated: one line for the first that is not a model
    GPTConfig rows[MEM_ROWS_MAX];
    int nrows = 0, show_mha = 1;
    for (int i = 0; i < kvs.n; i++) show_mha &= kvs.v[i] != c.n_head;
    if (ranks.n == 0 && c.rope_head_dim != 0) {
        error_message("rope_head_dim %d is for the MLA rows, and there are none: give --kv_lora_rank too",
                      c.rope_head_dim);
        return 1;
    }
    for (int i = -show_mha; i < kvs.n + ranks.n; i++) {
        GPTConfig ci = c;
        if (i < kvs.n) {  // grouped: MHA (i < 0), then the n_kv_head list
            ci.n_kv_head = i < 0 ? c.n_head : kvs.v[i];
            ci.kv_lora_rank = ci.rope_head_dim = 0;
        } else {  // MLA: every head its own K and V, up-projected from the cached latent
            ci.n_kv_head = c.n_head;
            ci.kv_lora_rank = ranks.v[i - kvs.n];
            if (ci.rope_head_dim == 0) cli_model_resolve(&ci);  // DeepSeek-V2's head_size/2 with rope
        }
        if (gpt_config_validate(&ci, err, sizeof err) != 0) {
            if (gpt_is_latent(&ci)) error_message("kv_lora_rank %d: %s", ci.kv_lora_rank, err);
            else error_message("%s", err);
            return 1;
        }
        rows[nrows++] = ci;
    }

    const int HS = c.n_embd / c.n_head;
    GPTConfig mha = c;
    mha.n_kv_head = c.n_head, mha.kv_lora_rank = mha.rope_head_dim = 0;
    const double seq = (double)ctx * batch_size;
    const double mha_tok = (double)gpt_kv_bytes_per_token(&mha, elem), mha_kv = mha_tok * seq;
    char b1[48], b2[32], b3[32], b4[32], b5[32], b6[32], mla[96] = "";
    if (ranks.n)
        snprintf(mla, sizeof mla, "; MLA rope_head_dim %d, latent_norm %d", rows[nrows - 1].rope_head_dim,
                 c.latent_norm);
    printf("shape: n_layer %d, n_head %d, head_dim %d, n_embd %d, pos %s%s; ctx %d x batch_size %d; kv_dtype %s "
           "(%zu bytes), weight_dtype %s (%s bytes a weight; LayerNorms and biases f32)\n\n",
           c.n_layer, c.n_head, HS, c.n_embd, gpt_pos_names[c.pos], mla, ctx, batch_size,
           cli_kv_dtype_choices[kv_dtype], elem, weight_dtype_name(wdt),
           wdt == W_F32 ? "4" : wdt == W_Q8 ? "1.125" : "2");
    printf("| n_kv_head | attention | KV per token | KV cache | MHA / this | saved vs MHA | parameters | params + KV "
           "| as GQA groups |\n");
    printf("|---:|:---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nrows; i++) {
        const GPTConfig *ci = &rows[i];
        const double tok = (double)gpt_kv_bytes_per_token(ci, elem), kv_bytes = tok * seq;
        const double params = (double)gpt_num_parameters(ci), pbytes = gpt_weight_bytes(ci, wdt, 0);
        printf("| %d | %s | %.2f MB (%.0f B) | %s (%s) | %.2fx | %s | %.0f (%s) | %s | %g |\n", ci->n_kv_head,
               attention_name(ci, b1, sizeof b1), tok / 1e6, tok, decimal(kv_bytes, b2, sizeof b2),
               format_bytes(kv_bytes, b3, sizeof b3), mha_kv / kv_bytes, decimal(mha_kv - kv_bytes, b4, sizeof b4),
               params, decimal(pbytes, b5, sizeof b5), decimal(pbytes + kv_bytes, b6, sizeof b6),
               as_gqa_groups(ci));
    }
    if (ranks.n)
        printf("\nMLA caches n_layer x (kv_lora_rank + rope_head_dim) numbers per token, %d x (r + %d) here: as "
               "much as GQA with (r + %d) / (2 x head_dim %d) KV heads ('as GQA groups', DeepSeek-V2's Table 1).\n",
               c.n_layer, rows[nrows - 1].rope_head_dim, rows[nrows - 1].rope_head_dim, HS);
    if (csv[0]) {
        MemCsv m = {.rows = rows, .nrows = nrows, .ctx = ctx, .batch_size = batch_size, .elem = elem};
        if (write_atomic(csv, write_csv, &m, err, sizeof err) != 0) {
            error_message("%s", err);
            return 1;
        }
        fprintf(stderr, "wrote %s\n", csv);
    }
    return 0;
}
