/*
 * bench_llama.c: llama.cpp's decode tokens/sec on a GGUF model, measured as
 * `gqa bench` measures gqa.c's, for scripts/bench_vs_llama.sh. It links the
 * llama.cpp library that the npm package node-llama-cpp ships prebuilt (the
 * package's own JavaScript adds milliseconds per call on 2 cores, so it is
 * not used for timing). Not part of gqa.c's build.
 *
 * Every one of B sequences gets its own prompt of ctx random tokens (in its
 * own cache stream: llama.cpp's non-unified cache, as gqa.c keeps one cache
 * per sequence); then decode_tokens steps, each one llama_decode of B new
 * tokens (one per sequence, every one with logits), timed; a warm-up round
 * first, and every round starts again from the prompt. Prints
 *   llama.cpp batch B ctx N: tok/s R1 R2 ...
 * With --greedy N --prompt_ids a,b,c it prints the N greedy token ids after
 * that prompt instead (to check an export against gqa.c's greedy text).
 *
 *   bench_llama MODEL.gguf BACKEND_DIR [--batch 1] [--ctx 512] [--decode_tokens 64]
 *       [--repeats 3] [--threads 2] [--vocab 256] [--greedy N --prompt_ids LIST]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static bool silent_progress(float progress, void *user) {
    (void)progress, (void)user;
    return true;
}

static void decode_or_die(struct llama_context *ctx, struct llama_batch b) {
    if (llama_decode(ctx, b) != 0) {
        fprintf(stderr, "error: llama_decode failed\n");
        exit(1);
    }
}

static void add(struct llama_batch *b, llama_token t, llama_pos pos, llama_seq_id s, int logits) {
    b->token[b->n_tokens] = t, b->pos[b->n_tokens] = pos, b->n_seq_id[b->n_tokens] = 1;
    b->seq_id[b->n_tokens][0] = s, b->logits[b->n_tokens] = (int8_t)logits;
    b->n_tokens++;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_llama MODEL.gguf BACKEND_DIR [--batch B] [--ctx N] [--decode_tokens K] "
                        "[--repeats R] [--threads T] [--vocab V] [--greedy N --prompt_ids LIST]\n");
        return 1;
    }
    int B = 1, N = 512, K = 64, R = 3, T = 2, V = 256, greedy = 0;
    const char *prompt_ids = "";
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--batch")) B = atoi(v);
        else if (!strcmp(k, "--ctx")) N = atoi(v);
        else if (!strcmp(k, "--decode_tokens")) K = atoi(v);
        else if (!strcmp(k, "--repeats")) R = atoi(v);
        else if (!strcmp(k, "--threads")) T = atoi(v);
        else if (!strcmp(k, "--vocab")) V = atoi(v);
        else if (!strcmp(k, "--greedy")) greedy = atoi(v);
        else if (!strcmp(k, "--prompt_ids")) prompt_ids = v;
        else {
            fprintf(stderr, "error: unknown option %s\n", k);
            return 1;
        }
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[2]);  // the CPU backend variants of the package
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.progress_callback = silent_progress;  // no dots on stderr
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "error: cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    const int per_seq = greedy ? 256 : N + K + 16;
    cp.n_ctx = (uint32_t)(B * ((per_seq + 255) / 256 * 256));
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_seq_max = (uint32_t)B;
    cp.n_threads = cp.n_threads_batch = T;
    cp.kv_unified = false;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "error: cannot create a context of %u positions\n", cp.n_ctx);
        return 1;
    }
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch b = llama_batch_init(512 > B ? 512 : B, 0, 1);

    if (greedy) {  // the prompt, then greedy tokens one at a time
        int pos = 0, next = -1;
        for (const char *p = prompt_ids; *p;) {
            b.n_tokens = 0;
            add(&b, (llama_token)strtol(p, (char **)&p, 10), pos++, 0, 1);
            if (*p == ',') p++;
            decode_or_die(ctx, b);
        }
        for (int i = 0; i < greedy; i++) {
            const float *z = llama_get_logits_ith(ctx, -1);
            next = 0;
            for (int v = 1; v < nv; v++) next = z[v] > z[next] ? v : next;
            printf("%s%d", i ? "," : "", next);
            b.n_tokens = 0;
            add(&b, next, pos++, 0, 1);
            decode_or_die(ctx, b);
        }
        printf("\n");
        return 0;
    }

    unsigned rng = 12345;
    for (int s = 0; s < B; s++)  // each sequence's prompt, in chunks of 512
        for (int p0 = 0; p0 < N; p0 += 512) {
            b.n_tokens = 0;
            for (int p = p0; p < N && p < p0 + 512; p++) add(&b, (llama_token)((rng = rng * 1103515245u + 12345u) >> 8) % V, p, s, p == N - 1);
            decode_or_die(ctx, b);
        }
    llama_memory_t mem = llama_get_memory(ctx);
    printf("llama.cpp batch %d ctx %d: tok/s", B, N);
    for (int r = -1; r < R; r++) {  // r = -1: warm-up
        for (int s = 0; s < B; s++) llama_memory_seq_rm(mem, s, N, -1);
        const double t0 = now();
        for (int k = 0; k < K; k++) {
            b.n_tokens = 0;
            for (int s = 0; s < B; s++) add(&b, (llama_token)((k * 31 + s * 7) % V), N + k, s, 1);
            decode_or_die(ctx, b);
        }
        const double dt = now() - t0;
        if (r >= 0) printf(" %.1f", (double)B * K / dt);
    }
    printf("\n");
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
