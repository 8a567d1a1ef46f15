/*
 * infer.h: the face of infer/: prefill and decode over a KV cache
 * and the samplers. The `gqa sample` subcommand is cli/sample.c.
 *
 * One function does both phases: infer_forward runs Tn new tokens per
 * sequence at positions pos0..pos0+Tn-1, appends their K/V to the cache and
 * attends to everything cached before them. Prefill is Tn = prompt length
 * (in chunks), decode is Tn = 1. All sequences of a batch share positions
 * (they share the prompt), so weights are read once per step for all.
 *
 * Weights: float32, or the model's matrices converted for inference to
 * bf16, f16 or q8 (gpt_set_weight_dtype, model/weights.h); every linear
 * layer and the LM head then read them where they lie, prefill and decode
 * alike, and the embedding rows are converted back to float32 as read.
 *
 * Multi-head latent attention (MLA, gpt_is_latent): the cache holds one
 * latent row [c | kr] per position (kvcache.h) and attention runs in the
 * absorbed form (model/attention_latent.h): W_uk is folded into the query,
 * W_uv applied to the kernel's latent output, so K and V are never
 * materialised. Prefill uses the absorbed kernel too, not the unabsorbed
 * form training runs: one attention path and one cache format for both
 * phases (chunked prefill and decode then agree by construction), at a
 * price only at prefill: the absorbed scores and sum cost NH (2r + dR)
 * multiply-adds per (query, key) pair instead of NH (2 HS + dR), about 2x
 * the attention FLOPs at r = 2 HS, while the unabsorbed form would spend
 * NH 2 HS r per new key on up-projecting K and V instead.
 */
#ifndef GQA_INFER_H
#define GQA_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "../model/gpt.h"
#include "../model/kvcache.h"

typedef struct {
    GPT *model;       // borrowed
    KVCache cache;    // grouped (L, B, NKV, max_T, HS) K and V; MLA (L, B, max_T, r + dR) latent rows
    int batch, max_T, max_chunk;  // B, cache length, most new tokens per call
    // activations for up to N = B * max_chunk rows
    float *x, *ln, *mean, *rstd, *atty, *tmp, *fch;  // (N, C) but fch (N, 4C), mean and rstd (N)
    float *qkv;       // (N, QKV); MLA: the query projection (N, NH*D), D = HS + dR
    // MLA only (one float otherwise)
    float *ckv;       // (N, r + dR)  x W_dkv^T (+ b), its rope key rotated
    float *latent;    // (N, r)       the latent after its RMSNorm (latent_norm = 1)
    float *latent_rstd; // (N)
    float *qabs;      // (N, NH, r + dR)  absorbed queries [W_uk_h^T q_nope_h | rotated q_rope_h]
    float *olat;      // (N, NH, r)   the kernel's output, before W_uv
    float *logits;    // (B, V) last position, or (B, Tn, V) with all_logits
    float *att_scratch;
    size_t att_scratch_floats;
    // the weight matrices (gpt_weight, by PARAM_*) as of infer_init: convert
    // the model (gpt_set_weight_dtype) before it; and the activations in
    // their form for the products (wmat_scratch_bytes)
    WMat w[GPT_NUM_PARAM_TENSORS];
    void *wscratch;
    char error[256];
} Inference;

// Allocate the cache (elements of kv_dtype) for `batch` sequences of up to
// max_T (<= block_size) positions, and buffers for up to max_chunk new
// tokens per call.
int infer_init(Inference *inf, GPT *m, int batch, int max_T, int max_chunk, KVDtype kv_dtype);
void infer_free(Inference *inf);

// Run tokens (B, Tn) at positions pos0..pos0+Tn-1 (Tn <= max_chunk,
// pos0 + Tn <= max_T). Writes logits of the last position of each sequence
// to inf->logits (B, V), or of every position (B, Tn, V) when all_logits.
// Returns 0, or -1 with inf->error (bad token, out of bounds).
int infer_forward(Inference *inf, const int *tokens, int Tn, int pos0, int all_logits);

// Prefill one prompt of n tokens shared by every sequence of the batch: it
// runs once (sequence 0, in chunks), then its K/V are copied to the other
// sequences' caches and its last logits to every row. Equal to running
// infer_forward on B copies, at 1/B of the cost.
int infer_prefill_shared(Inference *inf, const int *prompt, int n);

// ----------------------------------------------------------------------------
// sampling

typedef struct {
    float temperature;  // 0: greedy (argmax)
    int top_k;          // keep the k most likely (0: all)
    float top_p;        // keep the smallest set with probability >= top_p (1: all)
    uint64_t rng;       // the sampler's own random state
    int vocab_size;
    float *probs;       // (V) scratch
    int *order;         // (V) scratch
    int *cand_ids;      // (V) candidates of the last draw
    float *cand_probs;  // (V)
} Sampler;

void sampler_init(Sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed);
void sampler_free(Sampler *s);
// Candidate set after temperature, top-k and top-p: writes ids (sorted by
// decreasing probability) and their renormalised probabilities; returns the
// count. Exposed for tests.
int sampler_candidates(Sampler *s, const float *logits, int *ids, float *probs);
// Sample one token id from logits (V).
int sampler_sample(Sampler *s, const float *logits);


#endif
