/*
 * cli.c: what the subcommands share (cli.h): the model-shape options, the
 * choice lists, output-path checks and the version line.
 */
#include "cli.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "../model/kvcache.h"
#include "../util/util.h"

#define GQA_VERSION "1.0.0"

const char *const cli_kv_dtype_choices[] = {"f32", "bf16", "f16", NULL};  // KVDtype order

// The shape options of every subcommand: one declaration, one set of ranges.
// ptr holds the field's offset in GPTConfig until cli_model_opts points it.
#define FIELD(f) ((void *)offsetof(GPTConfig, f))
static const Opt model_opts[] = {
    {"vocab_size", OPT_INT, FIELD(vocab_size), 1, 1 << 24, "vocabulary size V", NULL, 0, "model", NULL},
    {"block_size", OPT_INT, FIELD(block_size), 1, 1 << 24, "context length T: the longest sequence", NULL, 0,
     "model", NULL},
    {"n_layer", OPT_INT, FIELD(n_layer), 1, 1 << 16, "transformer blocks L", NULL, 0, "model", NULL},
    {"n_head", OPT_INT, FIELD(n_head), 1, 1 << 16, "query heads NH", NULL, 0, "model", NULL},
    {"n_kv_head", OPT_INT, FIELD(n_kv_head), 1, 1 << 16,
     "key/value heads NKV: n_head is MHA, 1 is MQA, between is GQA (n_head % n_kv_head == 0)", NULL, 0, "model", NULL},
    {"n_embd", OPT_INT, FIELD(n_embd), 1, 1 << 20, "embedding width C (n_embd % n_head == 0)", NULL, 0, "model", NULL},
    {"bias", OPT_BOOL, FIELD(bias), 0, 1, "biases in Linear and LayerNorm layers", NULL, 0, "model", NULL},
    {"dropout", OPT_FLOAT, FIELD(dropout), 0, 0.99, "dropout probability (training only)", NULL, 0, "model", NULL},
    {"pos", OPT_CHOICE, FIELD(pos), 0, 0,
     "positions: learned (a wpe table of block_size x n_embd parameters, GPT-2) or rope (rotary: q and k "
     "rotated by position, no parameters)",
     gpt_pos_names, 0, "model", NULL},
    {"rope_theta", OPT_FLOAT, FIELD(rope_theta), 0, 1e9,
     "RoPE base: dimension pair i of a head turns by position x rope_theta^(-2i/head_size) (used by pos=rope)",
     NULL, OPT_OPEN, "model", NULL},
    {"kv_lora_rank", OPT_INT, FIELD(kv_lora_rank), 0, 1 << 20,
     "MLA: width r of the latent cached per token and layer (0: grouped attention by n_kv_head; > 0: multi-head "
     "latent attention as DeepSeek-V2, every head its own K and V up-projected from the latent; needs n_kv_head = "
     "n_head)",
     NULL, 0, "model", NULL},
    {"rope_head_dim", OPT_INT, FIELD(rope_head_dim), 0, 1 << 16,
     "MLA with pos=rope: width dR of the decoupled rotary key shared by all heads and cached beside the latent, and "
     "of each query head's rotary part (0: head_size/2, as DeepSeek-V2)",
     NULL, 0, "model", NULL},
    {"latent_norm", OPT_BOOL, FIELD(latent_norm), 0, 1,
     "MLA: RMSNorm on the latent (DeepSeek-V2's kv_a_layernorm); models converted from MHA/GQA have none", NULL, 0,
     "model", NULL},
};
#undef FIELD

const Opt *cli_model_opt(const char *name) {
    for (size_t i = 0; i < sizeof model_opts / sizeof model_opts[0]; i++)
        if (!strcmp(model_opts[i].name, name)) return &model_opts[i];
    die("internal: no model option '%s'", name);
}

void cli_model_opts(GPTConfig *c, const char *names, Opt *out, int *n) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", names);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        Opt o = *cli_model_opt(tok);
        o.ptr = (char *)c + (size_t)o.ptr;
        out[(*n)++] = o;
    }
}

void cli_model_resolve(GPTConfig *c) {
    if (gpt_is_latent(c) && c->pos == GPT_POS_ROPE && c->rope_head_dim == 0 && c->n_head > 0) {
        const int half = c->n_embd / c->n_head / 2 / 2 * 2;  // head_size/2, rounded down to even
        c->rope_head_dim = half >= 2 ? half : 2;
    }
    if (!gpt_is_latent(c)) c->latent_norm = 0;  // no latent, no norm: as checkpoints spell it
}

int cli_check_output(const char *option, const char *path) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        error_message("--%s: path is too long", option);
        return 1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        error_message("--%s: cannot write '%s': %s (checked before starting)", option, path, strerror(errno));
        return 1;
    }
    fclose(f);
    unlink(tmp);
    return 0;
}

void cli_print_version(FILE *f) {
    const int par = openblas_get_parallel();
    const char *blas_threads = par == OPENBLAS_OPENMP ? "OpenMP build" : par == OPENBLAS_THREAD ? "pthread build"
                                                                                                 : "sequential";
#ifdef GQA_MPI
    const char *mpi = "yes";
#else
    const char *mpi = "no";
#endif
#ifdef __AVX512F__
    const char *simd = "AVX-512";
#else
    const char *simd = "no AVX-512 (portable kernels, OpenBLAS for the linear layers)";
#endif
    fprintf(f, "gqa %s\n", GQA_VERSION);
    fprintf(f, "kernels: %s\n", simd);
#if defined(__clang__)
    fprintf(f, "compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    fprintf(f, "compiler: gcc %s\n", __VERSION__);
#endif
    fprintf(f, "blas: %s (%s)\n", openblas_get_config(), blas_threads);
    fprintf(f, "openmp: %d threads (OMP_NUM_THREADS or all cores)\n", omp_get_max_threads());
    fprintf(f, "mpi: %s\n", mpi);
}
