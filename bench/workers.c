/*
 * workers.c: the measurements of `gqa bench`, each run in a child process
 * of its own (run.c): training steps, the training step's GEMMs alone, and
 * prefill + decode over a filled KV cache. Each prints one RESULT line.
 *
 * Training tok/s: forward + backward + AdamW at (train_batch_size,
 * train_block_size). GEMM-only tok/s: the training step's linear-layer
 * gemm() calls alone, the most a step made of them could reach. Prefill
 * tok/s: one prompt of ctx tokens (chunks of 512, fewer beyond batch 128:
 * bench_infer_chunk), shared by the batch: its cache is copied to every
 * sequence, as `gqa sample` does. Decode tok/s:
 * decode_tokens steps with the cache already filled to ctx (batch x steps /
 * seconds; the LM head included, sampling not).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/infer.h"
#include "../model/gemm.h"
#include "../model/ops.h"
#include "../train/adamw.h"
#include "../train/train.h"
#include "../util/rng.h"
#include "../util/util.h"
#include "bench.h"

int bench_num_settings(const BenchConfig *bc) { return bc->n_kv_head.n + bc->kv_lora_rank.n; }

GPTConfig bench_model_config(const BenchConfig *bc, int setting) {
    GPTConfig c = bc->model;
    if (setting < bc->n_kv_head.n) {  // grouped: MHA, GQA or MQA
        c.n_kv_head = bc->n_kv_head.v[setting];
        c.kv_lora_rank = c.rope_head_dim = 0;
    } else {  // MLA: every head its own K and V, up-projected from the cached latent
        c.n_kv_head = c.n_head;
        c.kv_lora_rank = bc->kv_lora_rank.v[setting - bc->n_kv_head.n];
    }
    return c;
}

const char *bench_attention_name(const GPTConfig *c, char *buf, size_t len) {
    if (gpt_is_latent(c)) snprintf(buf, len, "MLA-%d", c->kv_lora_rank);
    else if (c->n_kv_head == c->n_head) snprintf(buf, len, "MHA");
    else if (c->n_kv_head == 1) snprintf(buf, len, "MQA");
    else snprintf(buf, len, "GQA-%d", c->n_kv_head);
    return buf;
}

// The model of a training measurement, with random weights.
static void train_model(GPT *m, const BenchConfig *bc, int setting) {
    GPTConfig c = bench_model_config(bc, setting);
    if (bc->train_block_size > c.block_size)
        die("train_block_size %d exceeds block_size %d", bc->train_block_size, c.block_size);
    if (gpt_init(m, &c, (uint64_t)bc->seed) != 0) die("%s", m->error);
}

void worker_train(const BenchConfig *bc, int setting) {
    const int B = bc->train_batch_size, T = bc->train_block_size;
    GPT m;
    train_model(&m, bc, setting);
    const GPTConfig c = m.config;
    m.training = 1;
    AdamW opt;
    adamw_init(&opt, m.num_parameters, BENCH_ADAMW_BETA1, BENCH_ADAMW_BETA2, BENCH_ADAMW_EPS, BENCH_ADAMW_WEIGHT_DECAY);
    int *x = malloc_check((size_t)B * T * sizeof(int)), *y = malloc_check((size_t)B * T * sizeof(int));
    uint64_t rng = 1;
    for (int i = 0; i < B * T; i++) x[i] = (int)(rng_u64(&rng) % c.vocab_size), y[i] = (int)(rng_u64(&rng) % c.vocab_size);
    const int shards = train_shards(bc->shards, B);
    // --gemm=alternate: even steps on our GEMM, odd ones on OpenBLAS's, so
    // that both see the same state of a noisy machine; their forward+backward
    // times are summed apart (not the warm-up's: its first step pays for
    // first touches of the activations)
    const int alternate = bc->gemm == BENCH_GEMM_ALTERNATE;
    double tps[BENCH_MAX_REPEATS], fb[2] = {0, 0};
    int nfb[2] = {0, 0};
    for (int r = -1; r < bc->repeats; r++) {  // r = -1: warm-up
        double t0 = now_seconds();
        for (int s = 0; s < bc->train_steps; s++) {
            if (alternate) gemm_use_openblas(s & 1);
            const double f0 = now_seconds();
            if (gpt_forward_backward(&m, x, y, B, T, shards) != 0) die("%s", m.error);
            if (r >= 0) fb[s & 1] += now_seconds() - f0, nfb[s & 1]++;
            adamw_step(&opt, &m, BENCH_ADAMW_LR);
        }
        if (r >= 0) tps[r] = (double)bc->train_steps * B * T / (now_seconds() - t0);
    }
    char name[32];
    if (alternate && nfb[0] && nfb[1])
        fprintf(stderr, "gemm alternate, %s (n_kv_head %d): forward+backward %.3f ms a step with ours, %.3f with "
                        "OpenBLAS: ours/OpenBLAS %.4f (%d + %d steps)\n",
                bench_attention_name(&c, name, sizeof name), c.n_kv_head, 1e3 * fb[0] / nfb[0], 1e3 * fb[1] / nfb[1],
                (fb[0] / nfb[0]) / (fb[1] / nfb[1]), nfb[0], nfb[1]);
    printf("RESULT train");
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    free(x), free(y);
    adamw_free(&opt);
    gpt_free(&m);
}

// The training step's linear-layer products and nothing else, as the step
// calls them: each shard on a thread of its own, per layer qkv (MLA: q, dkv
// and ukv), attention projection, fc and fc projection, then the tied LM
// head, forward and backward (input gradient and weight gradient), on
// buffers of the step's shapes and the model's weights, without biases; the
// shards join once a step, as the training pass does. Attention, LayerNorm,
// GELU, the loss and AdamW cost nothing here, so its tok/s is the most a
// step made of these gemm() calls could reach: the GEMM-only floor of the
// training figure.
void worker_gemm(const BenchConfig *bc, int setting) {
    const int B = bc->train_batch_size, T = bc->train_block_size;
    GPT m;
    train_model(&m, bc, setting);
    const GPTConfig c = m.config;
    const int L = c.n_layer, C = c.n_embd, V = c.vocab_size;
    const int shards = train_shards(bc->shards, B);
    GPTLinear lin[GPT_NUM_LINEAR];
    const int NLIN = gpt_linear_layers(&c, lin);
    int in[GPT_NUM_LINEAR], out[GPT_NUM_LINEAR];
    size_t woff[GPT_NUM_LINEAR];  // where each layer's weight tensor starts in the arena
    for (int j = 0; j < NLIN; j++) {
        in[j] = lin[j].in, out[j] = lin[j].out, woff[j] = 0;
        for (int k = 0; k < lin[j].weight; k++) woff[j] += m.param_sizes[k];
    }
    double tps[BENCH_MAX_REPEATS], t0 = 0.0;
    omp_set_max_active_levels(1);  // the kernels run single-threaded inside, as in the training pass
#pragma omp parallel num_threads(shards)
    {
        const int s = omp_get_thread_num(), N = (B * (s + 1) / shards - B * s / shards) * T;
        // every layer's inputs and outputs kept, as the step keeps its activations
        size_t layer = 0;
        for (int j = 0; j < NLIN; j++) layer += (size_t)N * (in[j] + out[j]);
        float *act = calloc_check((size_t)L * layer + (size_t)N * (C + V + 4 * C), sizeof(float));
        float *lnf = act + (size_t)L * layer, *logits = lnf + (size_t)N * C, *dinp = logits + (size_t)N * V;
        float *grads_memory = calloc_check(m.num_parameters, sizeof(float));
        const ParameterTensors w = m.params;
        ParameterTensors g;
        gpt_point_params(&g, grads_memory, m.param_sizes);
        const float *wl[GPT_NUM_LINEAR];
        float *gl[GPT_NUM_LINEAR];
        for (int j = 0; j < NLIN; j++) wl[j] = m.params_memory + woff[j], gl[j] = grads_memory + woff[j];
        for (int r = -1; r < bc->repeats; r++) {  // r = -1: warm-up
#pragma omp barrier
#pragma omp master
            t0 = now_seconds();
            for (int step = 0; step < bc->train_steps; step++) {
                float *a = act;
                for (int l = 0; l < L; l++)
                    for (int j = 0; j < NLIN; a += (size_t)N * (in[j] + out[j]), j++)
                        matmul_forward(a + (size_t)N * in[j], a, wl[j] + (size_t)l * out[j] * in[j], NULL, N, in[j],
                                       out[j]);
                matmul_forward(logits, lnf, w.wte, NULL, N, C, V);
                matmul_backward(dinp, g.wte, NULL, logits, lnf, w.wte, N, C, V);
                for (int l = L - 1; l >= 0; l--)
                    for (int j = NLIN - 1; j >= 0; j--) {
                        a -= (size_t)N * (in[j] + out[j]);
                        const size_t o = (size_t)l * out[j] * in[j];
                        matmul_backward(dinp, gl[j] + o, NULL, a + (size_t)N * in[j], a, wl[j] + o, N, in[j], out[j]);
                    }
#pragma omp barrier
            }
#pragma omp master
            if (r >= 0) tps[r] = (double)bc->train_steps * B * T / (now_seconds() - t0);
        }
        free(grads_memory);
        free(act);
    }
    printf("RESULT gemm");
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    gpt_free(&m);
}

int bench_infer_chunk(int batch, int ctx) {
    int chunk = ctx < 512 ? ctx : 512;
    if ((long long)batch * chunk > BENCH_INFER_ROWS) chunk = BENCH_INFER_ROWS / batch;
    return chunk > 0 ? chunk : 1;
}

void worker_infer(const BenchConfig *bc, int setting, int B, int ctx, KVDtype dt, WeightDtype wdt) {
    GPTConfig c = bench_model_config(bc, setting);
    c.dropout = 0.0f;
    const int steps = bc->decode_tokens, max_T = ctx + steps;
    if (max_T > c.block_size) die("ctx %d + decode_tokens %d exceeds block_size %d", ctx, steps, c.block_size);
    GPT m;
    if (gpt_init(&m, &c, (uint64_t)bc->seed) != 0) die("%s", m.error);
    // inference weights: converted, their float32 copies freed; the peak
    // RSS the parent reads then starts from here, not from the float32 init
    if (gpt_set_weight_dtype(&m, wdt) != 0) die("%s", m.error);
    reset_peak_rss();
    Inference inf;
    const int chunk = bench_infer_chunk(B, ctx);
    if (infer_init(&inf, &m, B, max_T, chunk, dt) != 0) die("%s", inf.error);
    // the cache decode holds must be the one the setting defines (MLA: the latent and rope key per
    // position, not a K and V per head), or the timing would be of some other attention
    const size_t want = gpt_kv_bytes_per_token(&c, kv_dtype_bytes(dt)) * (size_t)B * (size_t)max_T;
    if (inf.cache.bytes != want) {
        char name[32];
        die("%s: decode allocated a KV cache of %zu bytes where this setting needs %zu (L x B x positions x "
            "per-token numbers x %zu bytes): this build's decode does not implement it",
            bench_attention_name(&c, name, sizeof name), inf.cache.bytes, want, kv_dtype_bytes(dt));
    }
    int *tok = malloc_check((size_t)B * chunk * sizeof(int));
    uint64_t rng = 2;
    for (int i = 0; i < B * chunk; i++) tok[i] = (int)(rng_u64(&rng) % c.vocab_size);
    // prefill: one prompt of ctx tokens shared by the batch (as gqa sample
    // does), so the cache is filled to ctx with real K/V for every sequence
    int *prompt = malloc_check((size_t)ctx * sizeof(int));
    for (int i = 0; i < ctx; i++) prompt[i] = (int)(rng_u64(&rng) % c.vocab_size);
    double t0 = now_seconds();
    if (infer_prefill_shared(&inf, prompt, ctx) != 0) die("%s", inf.error);
    double prefill = (double)ctx / (now_seconds() - t0);
    free(prompt);
    // decode: steps tokens at positions ctx.., repeated from ctx each time
    double tps[BENCH_MAX_REPEATS];
    for (int r = -1; r < bc->repeats; r++) {
        t0 = now_seconds();
        for (int s = 0; s < steps; s++)
            if (infer_forward(&inf, tok, 1, ctx + s, 0) != 0) die("%s", inf.error);
        if (r >= 0) tps[r] = (double)B * steps / (now_seconds() - t0);
    }
    printf("RESULT infer %.3f %zu", prefill, inf.cache.bytes);
    for (int r = 0; r < bc->repeats; r++) printf(" %.3f", tps[r]);
    printf("\n");
    free(tok);
    infer_free(&inf);
    gpt_free(&m);
}
