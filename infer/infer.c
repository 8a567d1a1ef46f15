/*
 * infer.c: the cached forward (prefill and decode) and the samplers. The
 * layer kernels are model/ops.h; attention over the cache is
 * model/attention_cached.h's grouped kernel, or for MLA the absorbed latent
 * kernel of model/attention_latent.h (see infer.h for why prefill uses it
 * too). Nothing here allocates per token. With pos = rope the new tokens'
 * queries and keys (MLA: the rope parts of the queries and the shared rope
 * key) are rotated by their absolute positions (pos0 + t) before the keys
 * are stored, so the cache holds rotated keys and the kernels are the same
 * for both schemes.
 */
#include "infer.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../model/attention_cached.h"
#include "../model/attention_latent.h"
#include "../model/gemm.h"
#include "../model/ops.h"
#include "../model/rope.h"
#include "../util/rng.h"
#include "../util/team.h"
#include "../util/util.h"

// ----------------------------------------------------------------------------
// cached forward

int infer_init(Inference *inf, GPT *m, int batch, int max_T, int max_chunk, KVDtype kv_dtype) {
    memset(inf, 0, sizeof *inf);
    const GPTConfig *c = &m->config;
    if (max_T > c->block_size) max_T = c->block_size;
    if (max_chunk > max_T) max_chunk = max_T;
    inf->model = m, inf->batch = batch, inf->max_T = max_T, inf->max_chunk = max_chunk;
    if (kvcache_init(&inf->cache, c, batch, max_T, kv_dtype, inf->error, sizeof inf->error) != 0) return -1;
    const size_t N = (size_t)batch * max_chunk, C = c->n_embd, NH = c->n_head;
    const size_t QKV = gpt_qkvw_rows(c), mla = gpt_is_latent(c) ? 1 : 0;  // MLA: the query projection only
    const size_t r = c->kv_lora_rank, W = r + c->rope_head_dim;
    const int threads = omp_get_max_threads();
    inf->att_scratch_floats = mla ? attention_latent_scratch_floats(&inf->cache, c->n_head, max_chunk, max_T, threads)
                                  : attention_cached_scratch_floats(&inf->cache, c->n_head, max_chunk, max_T, threads);
    size_t sizes[] = {N * C, N * C, N, N, N * QKV, N * C, N * C, N * 4 * C,
                      mla * N * W, mla * N * r, mla * N, mla * N * NH * W, mla * N * NH * r,
                      N * c->vocab_size, inf->att_scratch_floats};
    float **ptrs[] = {&inf->x, &inf->ln, &inf->mean, &inf->rstd, &inf->qkv, &inf->atty, &inf->tmp, &inf->fch,
                      &inf->ckv, &inf->latent, &inf->latent_rstd, &inf->qabs, &inf->olat,
                      &inf->logits, &inf->att_scratch};
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) inf->w[i] = gpt_weight(m, i);
    inf->wscratch = aligned_alloc(64, wmat_scratch_bytes((int)N, 4 * (int)C));
    if (!inf->wscratch) {
        snprintf(inf->error, sizeof inf->error, "cannot allocate inference buffers for batch %d x %d tokens", batch,
                 max_chunk);
        infer_free(inf);
        return -1;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        // on cache lines: small buffers come from the heap, and where their
        // rows start would otherwise depend on what was allocated before
        // (at least one line, so that every pointer is a real allocation)
        *ptrs[i] = aligned_alloc(64, sizes[i] ? (sizes[i] * sizeof(float) + 63) / 64 * 64 : 64);
        if (!*ptrs[i]) {
            snprintf(inf->error, sizeof inf->error, "cannot allocate inference buffers for batch %d x %d tokens", batch,
                     max_chunk);
            infer_free(inf);
            return -1;
        }
    }
    return 0;
}

void infer_free(Inference *inf) {
    kvcache_free(&inf->cache);
    free(inf->wscratch);
    inf->wscratch = NULL;
    float **bufs[] = {&inf->x, &inf->ln, &inf->mean, &inf->rstd, &inf->qkv, &inf->atty, &inf->tmp, &inf->fch,
                      &inf->ckv, &inf->latent, &inf->latent_rstd, &inf->qabs, &inf->olat, &inf->logits,
                      &inf->att_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
}

// out (N, out) = inp (N, in) @ W_l^T + b: layer l of the linear layer whose
// weight is tensor `param` ((L x out, in) as a matrix), in its dtype.
static void linear(Inference *inf, float *out, const float *inp, int param, int l, const float *b, int N) {
    const WMat *w = &inf->w[param];
    const size_t rows = w->rows / (size_t)inf->model->config.n_layer;
    const WMat wl = wmat_rows(w, (size_t)l * rows, rows);
    wmat_matmul(out, inp, &wl, b, N, inf->wscratch);
}

// x (B, Tn, C) = wte[tokens] (+ wpe[pos0 + t] with learned positions), the
// rows converted from the weights' dtype; row n of tmp holds wpe's.
static void embed(Inference *inf, float *x, const int *tokens, int B, int Tn, int pos0) {
    const int C = inf->model->config.n_embd, learned = inf->model->config.pos == GPT_POS_LEARNED;
    for (int n = 0; n < B * Tn; n++) {
        float *xr = x + (size_t)n * C, *pr = inf->tmp + (size_t)n * C;
        wmat_row_to_float(&inf->w[PARAM_WTE], (size_t)tokens[n], xr);
        if (!learned) continue;
        wmat_row_to_float(&inf->w[PARAM_WPE], (size_t)(pos0 + n % Tn), pr);
        for (int i = 0; i < C; i++) xr[i] += pr[i];
    }
}

typedef struct {
    Inference *inf;
    const float *q, *ukvw, *ukvb;
    int N;
} HeadArgs;

// The absorbed queries of heads [begin, end): qabs_h = [q_nope_h W_uk_h | q_rope_h].
static void absorb_queries(void *ctx, long begin, long end, long step) {
    const HeadArgs *a = ctx;
    const GPTConfig *c = &a->inf->model->config;
    const int NH = c->n_head, HS = c->n_embd / NH, r = c->kv_lora_rank, dR = c->rope_head_dim;
    const int D = HS + dR, W = r + dR, NQ = NH * D;
    float *qabs = a->inf->qabs;
    for (long h = begin; h < end; h += step) {
        gemm(a->N, r, HS, a->q + (size_t)h * D, NQ, 1, a->ukvw + (size_t)h * HS * r, r, 1, NULL, 0,
             qabs + (size_t)h * W, (long)NH * W);
        for (int n = 0; n < a->N && dR; n++)
            memcpy(qabs + ((size_t)n * NH + h) * W + r, a->q + (size_t)n * NQ + h * D + HS, (size_t)dR * sizeof(float));
    }
}

// o_h = olat_h W_uv_h^T + b_uv_h for heads [begin, end): W_uv_h (HS, r)
// read as the (r, HS) operand.
static void latent_outputs(void *ctx, long begin, long end, long step) {
    const HeadArgs *a = ctx;
    const GPTConfig *c = &a->inf->model->config;
    const int NH = c->n_head, C = c->n_embd, HS = C / NH, r = c->kv_lora_rank;
    for (long h = begin; h < end; h += step)
        gemm(a->N, HS, r, a->inf->olat + (size_t)h * r, (long)NH * r, 1, a->ukvw + ((size_t)NH + h) * HS * r, 1, r,
             a->ukvb ? a->ukvb + (size_t)(NH + h) * HS : NULL, 0, a->inf->atty + (size_t)h * HS, C);
}

// MLA attention of layer l for the new tokens (B, Tn) at positions pos0..,
// from inf->ln (N, C) to inf->atty (N, C), in the absorbed form:
//   q    = x qkvw^T (+ b)                          (N, NH*D), head h [nope HS | rope dR]
//   ckv  = x dkvw^T (+ b)                          (N, W), [latent r | rope key dR]
//   c    = RMSNorm(ckv[:, :r]) * kvnw (latent_norm; else ckv[:, :r])
//   rope: each query head's rope part and the rope key turned by position pos0 + t
//   cache row = [c | kr]
//   qabs_h = [q_nope_h W_uk_h | q_rope_h]            W_uk_h the (HS, r) rows h of ukvw
//   olat_h = attention_latent(qabs_h, cache)        (r)
//   o_h    = olat_h W_uv_h^T + b_uv_h               (HS), into atty's head h columns
// The key bias b_uk_h would add q_nope_h . b_uk_h to every score of query
// row (t, h), the same for every cached position: the softmax ignores it, so
// the absorbed form drops it. The value bias passes through (the weights sum
// to 1) and is added after W_uv.
static void latent_attention(Inference *inf, int l, int B, int Tn, int pos0) {
    GPT *m = inf->model;
    const GPTConfig *c = &m->config;
    const ParameterTensors w = m->params;
    const int C = c->n_embd, NH = c->n_head, HS = C / NH, r = c->kv_lora_rank, dR = c->rope_head_dim;
    const int D = HS + dR, W = r + dR, NQ = NH * D, N = B * Tn;
    const float *ukvw = w.ukvw + (size_t)l * 2 * NH * HS * r;  // (2 NH HS, r): W_uk heads, then W_uv heads
    const float *ukvb = c->bias ? w.ukvb + (size_t)l * 2 * NH * HS : NULL;
    float *q = inf->qkv, *ckv = inf->ckv;
    linear(inf, q, inf->ln, PARAM_QKVW, l, c->bias ? w.qkvb + (size_t)l * NQ : NULL, N);
    linear(inf, ckv, inf->ln, PARAM_DKVW, l, c->bias ? w.dkvb + (size_t)l * W : NULL, N);
    const float *lat = ckv;
    int ldc = W;
    if (c->latent_norm) {
        rmsnorm_forward(inf->latent, inf->latent_rstd, ckv, W, w.kvnw + (size_t)l * r, GPT_LATENT_NORM_EPS, N, r);
        lat = inf->latent, ldc = r;
    }
    if (dR) {
        rope_rotate_rows(q + HS, B, Tn, NQ, pos0, NH, D, dR, m->rope_cos, m->rope_sin, 0);
        rope_rotate_rows(ckv + r, B, Tn, W, pos0, 1, dR, dR, m->rope_cos, m->rope_sin, 0);
    }
    kvcache_store_latent(&inf->cache, l, lat, ldc, ckv + r, W, B, Tn, pos0);
    HeadArgs a = {inf, q, ukvw, ukvb, N};
    team_for(NH, 1, absorb_queries, &a);  // each head's product on one thread
    attention_latent(inf->olat, inf->qabs, &inf->cache, l, B, Tn, pos0, NH, inf->att_scratch, inf->att_scratch_floats);
    team_for(NH, 1, latent_outputs, &a);
}

typedef struct {
    Inference *inf;
    const int *tokens;
    int B, Tn, pos0, all_logits;
} Forward;

// The forward of checked arguments.
static void forward_step(void *ctx) {
    const Forward *f = ctx;
    Inference *inf = f->inf;
    const int *tokens = f->tokens;
    const int B = f->B, Tn = f->Tn, pos0 = f->pos0, all_logits = f->all_logits;
    GPT *m = inf->model;
    const GPTConfig *c = &m->config;
    const int L = c->n_layer, NH = c->n_head, NKV = c->n_kv_head, C = c->n_embd;
    const int QKV = (int)gpt_qkv_width(c), N = B * Tn;
    const ParameterTensors w = m->params;
    float *x = inf->x;

    const int rope = c->pos == GPT_POS_ROPE;
    embed(inf, x, tokens, B, Tn, pos0);
    for (int l = 0; l < L; l++) {
        layernorm_forward(inf->ln, inf->mean, inf->rstd, x, w.ln1w + l * C, c->bias ? w.ln1b + l * C : NULL, N, C);
        if (gpt_is_latent(c)) {
            latent_attention(inf, l, B, Tn, pos0);
        } else {
            linear(inf, inf->qkv, inf->ln, PARAM_QKVW, l, c->bias ? w.qkvb + (size_t)l * QKV : NULL, N);
            // rope: q and k turned by their absolute positions, so keys enter the cache rotated
            // (attention_cached stores them)
            if (rope) rope_rotate(inf->qkv, B, Tn, pos0, NH, NKV, C / NH, m->rope_cos, m->rope_sin, 0);
            attention_cached(inf->atty, inf->qkv, &inf->cache, l, B, Tn, pos0, NH, inf->att_scratch,
                             inf->att_scratch_floats);
        }
        linear(inf, inf->tmp, inf->atty, PARAM_ATTPROJW, l, c->bias ? w.attprojb + l * C : NULL, N);
        residual_forward(x, x, inf->tmp, (size_t)N * C);
        layernorm_forward(inf->ln, inf->mean, inf->rstd, x, w.ln2w + l * C, c->bias ? w.ln2b + l * C : NULL, N, C);
        linear(inf, inf->fch, inf->ln, PARAM_FCW, l, c->bias ? w.fcb + (size_t)l * 4 * C : NULL, N);
        gelu_forward(inf->fch, inf->fch, (size_t)N * 4 * C);
        linear(inf, inf->tmp, inf->fch, PARAM_FCPROJW, l, c->bias ? w.fcprojb + l * C : NULL, N);
        residual_forward(x, x, inf->tmp, (size_t)N * C);
    }
    if (all_logits) {
        layernorm_forward(inf->ln, inf->mean, inf->rstd, x, w.lnfw, c->bias ? w.lnfb : NULL, N, C);
        wmat_matmul(inf->logits, inf->ln, &inf->w[PARAM_WTE], NULL, N, inf->wscratch);
    } else {
        // only each sequence's last position feeds the LM head
        for (int b = 0; b < B; b++)
            memcpy(inf->tmp + (size_t)b * C, x + ((size_t)b * Tn + Tn - 1) * C, C * sizeof(float));
        layernorm_forward(inf->ln, inf->mean, inf->rstd, inf->tmp, w.lnfw, c->bias ? w.lnfb : NULL, B, C);
        wmat_matmul(inf->logits, inf->ln, &inf->w[PARAM_WTE], NULL, B, inf->wscratch);
    }
}

// Rows of a forward up to which its loops share one OpenMP region
// (team_run): a decode step's, whose loops are short. Longer ones (prefill)
// open a region per loop, so that loops not written for a team (OpenBLAS's
// sgemm without AVX-512) still use every thread.
#define FORWARD_TEAM_ROWS 16

// The forward over the first B sequences of the batch.
static int forward_rows(Inference *inf, const int *tokens, int B, int Tn, int pos0, int all_logits) {
    if (Tn < 1 || Tn > inf->max_chunk || pos0 < 0 || pos0 + Tn > inf->max_T) {
        snprintf(inf->error, sizeof inf->error, "positions [%d, %d) do not fit (chunk %d, cache %d)", pos0, pos0 + Tn,
                 inf->max_chunk, inf->max_T);
        return -1;
    }
    const int N = B * Tn;
    if (gpt_validate_tokens(&inf->model->config, tokens, (size_t)N, inf->error, sizeof inf->error) != 0) return -1;
    Forward f = {inf, tokens, B, Tn, pos0, all_logits};
    if (N <= FORWARD_TEAM_ROWS) team_run(forward_step, &f);
    else forward_step(&f);
    return 0;
}

int infer_forward(Inference *inf, const int *tokens, int Tn, int pos0, int all_logits) {
    return forward_rows(inf, tokens, inf->batch, Tn, pos0, all_logits);
}

int infer_prefill_shared(Inference *inf, const int *prompt, int n) {
    for (int start = 0; start < n; start += inf->max_chunk) {
        int k = n - start < inf->max_chunk ? n - start : inf->max_chunk;
        if (forward_rows(inf, prompt + start, 1, k, start, 0) != 0) return -1;
    }
    kvcache_broadcast(&inf->cache, n);
    const size_t V = (size_t)inf->model->config.vocab_size;
    for (int b = 1; b < inf->batch; b++) memcpy(inf->logits + b * V, inf->logits, V * sizeof(float));
    return 0;
}

// ----------------------------------------------------------------------------
// sampling

void sampler_init(Sampler *s, int vocab_size, float temperature, int top_k, float top_p, uint64_t seed) {
    s->temperature = temperature, s->top_k = top_k, s->top_p = top_p;
    s->rng = rng_mix64(seed);
    s->vocab_size = vocab_size;
    s->probs = malloc_check((size_t)vocab_size * sizeof(float));
    s->order = malloc_check((size_t)vocab_size * sizeof(int));
    s->cand_ids = malloc_check((size_t)vocab_size * sizeof(int));
    s->cand_probs = malloc_check((size_t)vocab_size * sizeof(float));
}

void sampler_free(Sampler *s) {
    free(s->probs);
    free(s->order);
    free(s->cand_ids);
    free(s->cand_probs);
}

static const float *sort_probs;  // qsort has no context argument
static int by_prob_desc(const void *a, const void *b) {
    float pa = sort_probs[*(const int *)a], pb = sort_probs[*(const int *)b];
    if (pa != pb) return pa < pb ? 1 : -1;
    return *(const int *)a - *(const int *)b;  // ties: lower id first (deterministic)
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int sampler_candidates(Sampler *s, const float *logits, int *ids, float *probs) {
    const int V = s->vocab_size;
    if (s->temperature <= 0.0f) {  // greedy: one candidate
        ids[0] = argmax(logits, V);
        probs[0] = 1.0f;
        return 1;
    }
    float mx = logits[argmax(logits, V)], sum = 0.0f;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - mx) / s->temperature);
        sum += s->probs[i];
        s->order[i] = i;
    }
    for (int i = 0; i < V; i++) s->probs[i] /= sum;
    sort_probs = s->probs;
    qsort(s->order, (size_t)V, sizeof(int), by_prob_desc);
    int n = (s->top_k > 0 && s->top_k < V) ? s->top_k : V;
    if (s->top_p < 1.0f) {
        // smallest prefix whose mass reaches top_p (within the top-k set)
        float mass = 0.0f;
        for (int i = 0; i < n; i++) {
            mass += s->probs[s->order[i]];
            if (mass >= s->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    float kept = 0.0f;
    for (int i = 0; i < n; i++) kept += s->probs[s->order[i]];
    for (int i = 0; i < n; i++) {
        ids[i] = s->order[i];
        probs[i] = s->probs[s->order[i]] / kept;
    }
    return n;
}

int sampler_sample(Sampler *s, const float *logits) {
    if (s->temperature <= 0.0f) return argmax(logits, s->vocab_size);
    int *ids = s->cand_ids;
    float *p = s->cand_probs;
    int n = sampler_candidates(s, logits, ids, p);
    float u = rng_uniform(&s->rng), cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += p[i];
        if (u < cdf) return ids[i];
    }
    return ids[n - 1];  // round-off: u beyond the summed mass
}
