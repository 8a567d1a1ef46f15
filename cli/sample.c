/*
 * sample.c: `gqa sample`, nanoGPT's sample.py over a KV cache (infer/). Loads a
 * checkpoint, prefills the prompt once for all num_samples sequences, then
 * decodes token by token, streaming text to stdout and stats to stderr.
 * Past block_size the context is cropped to the last block_size tokens and
 * re-prefilled, as nanoGPT crops idx_cond; the cache is never overrun.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../infer/infer.h"
#include "../model/checkpoint.h"
#include "../util/util.h"
#include "cli.h"

typedef struct {
    char ckpt[OPT_STR_MAX], prompt[OPT_STR_MAX], prompt_file[OPT_STR_MAX];
    int max_new_tokens, top_k, seed, num_samples, threads, kv_dtype, weight_dtype;
    float temperature, top_p;
} SampleConfig;

static void emit(const Tokenizer *tok, int id, FILE *f) {
    char buf[4];
    int n = tokenizer_decode(tok, id, buf);
    fwrite(buf, 1, (size_t)n, f);
}

int cmd_sample(int argc, char **argv) {
    SampleConfig sc = {.max_new_tokens = 500, .top_k = 200, .seed = 1337, .num_samples = 1, .threads = 0,
                       .temperature = 0.8f, .top_p = 1.0f, .kv_dtype = KV_F32, .weight_dtype = W_F32};
    strcpy(sc.prompt, "\n");
    const Opt opts[] = {
        {"ckpt", OPT_STRING, sc.ckpt, 0, 0, "checkpoint to sample from (ckpt.bin or best.bin)", NULL, OPT_REQUIRED,
         NULL, "PATH"},
        {"prompt", OPT_STRING, sc.prompt, 0, 0, "text to start from", NULL, 0, NULL, "TEXT"},
        {"prompt_file", OPT_STRING, sc.prompt_file, 0, 0, "read the prompt from this file instead", NULL, 0, NULL,
         "FILE"},
        {"max_new_tokens", OPT_INT, &sc.max_new_tokens, 1, 1e8, "tokens to generate per sample", NULL, 0, NULL, NULL},
        {"temperature", OPT_FLOAT, &sc.temperature, 0, 100, "softmax temperature; 0 is greedy", NULL, 0, NULL, NULL},
        {"top_k", OPT_INT, &sc.top_k, 0, 1 << 24, "keep only the k most likely tokens (0: all)", NULL, 0, NULL, NULL},
        {"top_p", OPT_FLOAT, &sc.top_p, 1e-6, 1, "nucleus: smallest set with this much probability", NULL, 0, NULL,
         NULL},
        {"seed", OPT_INT, &sc.seed, 0, 2147483647, "sampling seed", NULL, 0, NULL, NULL},
        {"num_samples", OPT_INT, &sc.num_samples, 1, 4096, "sequences, generated together as one batch", NULL, 0,
         NULL, NULL},
        {"kv_dtype", OPT_CHOICE, &sc.kv_dtype, 0, 0, "KV cache element type (16 bits: half the bytes)",
         cli_kv_dtype_choices, 0, NULL, NULL},
        {"weight_dtype", OPT_CHOICE, &sc.weight_dtype, 0, 0,
         "weights for inference, converted at load: bf16 and f16 half the bytes, q8 (int8, a scale per 32) 1.125 "
         "bytes a weight; LayerNorms and biases stay f32 (a checkpoint from `gqa convert --weight_dtype` is "
         "read in its own dtype)",
         weight_dtype_names, 0, NULL, NULL},
        {"threads", OPT_INT, &sc.threads, 0, 1024, "OpenMP threads (0: OMP_NUM_THREADS or all cores)", NULL, 0, NULL,
         NULL},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa sample --ckpt PATH [--prompt TEXT | --prompt_file FILE] [--key=value ...]\n"
        "\n"
        "Generate text from a checkpoint. Text goes to stdout, stats to stderr.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[1024];
    const KVDtype kv_dtype = (KVDtype)sc.kv_dtype;
    if (sc.threads > 0) omp_set_num_threads(sc.threads);

    GPT m;
    uint8_t *blob;
    size_t blob_len;
    if (checkpoint_load(sc.ckpt, &m, &blob, &blob_len, NULL, NULL, err, sizeof err) != 0) die("%s", err);
    const int converted_file = m.wmat_memory != NULL;  // from gqa convert --weight_dtype
    Tokenizer tok;
    char terr[512];
    if (tokenizer_parse(&tok, blob, blob_len, terr, sizeof terr) != blob_len) die("%s: %s", sc.ckpt, terr);
    free(blob);
    if (tok.vocab_size != m.config.vocab_size)
        die("%s: vocabulary has %d entries but the model's vocab_size is %d", sc.ckpt, tok.vocab_size,
            m.config.vocab_size);

    if (converted_file && sc.weight_dtype != W_F32 && sc.weight_dtype != (int)m.weight_dtype)
        die("%s: the weights are already %s (gqa convert --weight_dtype): --weight_dtype %s would convert them "
            "again; give it the float32 checkpoint", sc.ckpt, weight_dtype_name(m.weight_dtype),
            weight_dtype_name((WeightDtype)sc.weight_dtype));
    const WeightDtype weight_dtype = converted_file ? m.weight_dtype : (WeightDtype)sc.weight_dtype;
    if (gpt_set_weight_dtype(&m, weight_dtype) != 0) die("%s: %s", sc.ckpt, m.error);

    // the prompt
    uint8_t *ptext = (uint8_t *)sc.prompt;
    size_t plen = strlen(sc.prompt);
    if (sc.prompt_file[0] && read_file(sc.prompt_file, SIZE_MAX, &ptext, &plen, err, sizeof err) != 0) die("%s", err);
    if (plen == 0) die("the prompt is empty");
    int *prompt = malloc_check(plen * sizeof(int));
    size_t P;
    if (tokenizer_encode(&tok, (const char *)ptext, plen, prompt, &P, err, sizeof err) != 0) die("prompt: %s", err);
    if (ptext != (uint8_t *)sc.prompt) free(ptext);
    const int block = m.config.block_size;
    if (P > (size_t)block)
        die("the prompt is %zu tokens, longer than the model's context (block_size %d)", P, block);

    const int B = sc.num_samples, max_new = sc.max_new_tokens;
    const size_t total = P + (size_t)max_new;
    const int max_T = total < (size_t)block ? (int)total : block;
    Inference inf;
    if (infer_init(&inf, &m, B, max_T, max_T < 512 ? max_T : 512, kv_dtype) != 0) die("%s", inf.error);
    Sampler smp;
    sampler_init(&smp, m.config.vocab_size, sc.temperature, sc.top_k, sc.top_p, (uint64_t)sc.seed);

    int *seqs = malloc_check((size_t)B * total * sizeof(int));  // (B, total)
    for (int b = 0; b < B; b++) memcpy(seqs + (size_t)b * total, prompt, P * sizeof(int));
    int *batch_tokens = malloc_check((size_t)B * max_T * sizeof(int));
    const int stream = B == 1;
    if (stream) {
        for (size_t i = 0; i < P; i++) emit(&tok, prompt[i], stdout);
        fflush(stdout);
    }

    double t_prefill = now_seconds(), t_decode = 0.0;
    if (infer_prefill_shared(&inf, prompt, (int)P) != 0) die("%s", inf.error);
    t_prefill = now_seconds() - t_prefill;
    int decode_steps = 0, reprefills = 0;
    size_t len = P;
    for (int i = 0; i < max_new; i++) {
        for (int b = 0; b < B; b++) {
            int id = sampler_sample(&smp, inf.logits + (size_t)b * m.config.vocab_size);
            seqs[(size_t)b * total + len] = id;
            batch_tokens[b] = id;
            if (stream) {
                emit(&tok, id, stdout);
                fflush(stdout);
            }
        }
        len++;
        if (i == max_new - 1) break;
        double t0 = now_seconds();
        if (len <= (size_t)max_T) {  // room in the cache: one decode step at position len - 1
            if (infer_forward(&inf, batch_tokens, 1, (int)len - 1, 0) != 0) die("%s", inf.error);
        } else {  // crop to the last block_size tokens and re-prefill them (nanoGPT's idx_cond)
            for (int start = 0; start < max_T; start += inf.max_chunk) {
                int n = max_T - start < inf.max_chunk ? max_T - start : inf.max_chunk;
                for (int b = 0; b < B; b++)
                    memcpy(batch_tokens + (size_t)b * n, seqs + (size_t)b * total + (len - max_T) + start,
                           (size_t)n * sizeof(int));
                if (infer_forward(&inf, batch_tokens, n, start, 0) != 0) die("%s", inf.error);
            }
            reprefills++;
        }
        t_decode += now_seconds() - t0;
        decode_steps++;
    }
    if (stream) {
        fputc('\n', stdout);
    } else {
        for (int b = 0; b < B; b++) {
            for (size_t i = 0; i < len; i++) emit(&tok, seqs[(size_t)b * total + i], stdout);
            fputs("\n---------------\n", stdout);
        }
    }
    fflush(stdout);

    char b1[32], b2[32];
    fprintf(stderr, "prefill: %zu tokens in %.2f ms (%.0f tok/s), shared by %d sequence%s\n", P, t_prefill * 1e3,
            (double)P / (t_prefill > 0 ? t_prefill : 1e-9), B, B == 1 ? "" : "s");
    if (decode_steps > 0)
        fprintf(stderr, "decode: %d steps x %d sequence%s in %.3f s (%.1f tok/s%s)\n", decode_steps, B,
                B == 1 ? "" : "s", t_decode, (double)decode_steps * B / (t_decode > 0 ? t_decode : 1e-9),
                reprefills ? ", including re-prefills past block_size" : "");
    // what a position holds: a K and V per KV head, or MLA's latent and rope key
    char kind[96];
    if (gpt_is_latent(&m.config))
        snprintf(kind, sizeof kind, "MLA kv_lora_rank %d + rope_head_dim %d", m.config.kv_lora_rank,
                 m.config.rope_head_dim);
    else
        snprintf(kind, sizeof kind, "n_kv_head %d", m.config.n_kv_head);
    fprintf(stderr, "kv cache: %s (%zu bytes: %s, %d positions, %d sequence%s, %s)\n",
            format_bytes((double)inf.cache.bytes, b1, sizeof b1), inf.cache.bytes, kind, max_T, B,
            B == 1 ? "" : "s", kv_dtype_name(kv_dtype));
    const double wbytes = gpt_weight_bytes(&m.config, weight_dtype, 0);
    fprintf(stderr, "weights: %s (%.0f bytes, %s, kernel %s)\n", format_bytes(wbytes, b1, sizeof b1), wbytes,
            weight_dtype_name(weight_dtype), wmat_kernel_name(weight_dtype));
    // the kernel updates the peak lazily: it may lag the resident size now
    const size_t now = current_rss_bytes(), peak = peak_rss_bytes() > now ? peak_rss_bytes() : now;
    char b3[32];
    fprintf(stderr, "resident memory: %s now, %s at the peak (loading reads the %s checkpoint)\n",
            format_bytes((double)now, b3, sizeof b3), format_bytes((double)peak, b2, sizeof b2),
            converted_file ? weight_dtype_name(weight_dtype) : "float32");

    free(seqs), free(batch_tokens), free(prompt);
    sampler_free(&smp);
    infer_free(&inf);
    tokenizer_free(&tok);
    gpt_free(&m);
    return 0;
}
