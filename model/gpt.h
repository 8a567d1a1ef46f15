/*
 * gpt.h: the GPT-2 shaped decoder with grouped-query attention, the face of
 * model/. Config, parameter/gradient/activation arenas, forward (logits and
 * mean cross-entropy) and hand-written backward.
 *
 * Network: x = wte[tok] + wpe[t]; L x { x += attn(LN1(x)); x += mlp(LN2(x)) };
 * logits = LNf(x) wte^T (tied head). Attention has NH query heads and NKV
 * key/value heads; query head h reads KV head h / (NH / NKV). NKV == NH is
 * MHA, NKV == 1 is MQA: one code path. With bias = 0 there are no biases in
 * Linear or LayerNorm layers (nanoGPT bias=False); bias = 1 is GPT-2.
 *
 * Positions (config.pos): learned (GPT-2, the default) adds the row t of
 * the parameter wpe to the embedding; rope has no wpe (x = wte[tok]) and
 * instead rotates every query and key head vector by its position right
 * after the q/k/v projection, before the scores (values are not rotated):
 * rotary embeddings in the GPT-NeoX / Llama "rotate half" convention, pair
 * (i, i + HS/2) turned by the angle t * rope_theta^(-2i/HS) (model/rope.h).
 * In training the rotation works in place on the projection, and the
 * backward inverse-rotates dq and dk; at inference keys enter the KV cache
 * already rotated, by their absolute position.
 *
 * Attention kinds (config.kv_lora_rank): 0 is grouped attention, above;
 * r > 0 is multi-head latent attention (MLA, DeepSeek-V2): every head has
 * its own K and V, up-projected from one cached latent of width r per token,
 * c = norm(x W_dkv) (RMSNorm when latent_norm = 1): K_h = c W_uk_h, V_h =
 * c W_uv_h. With pos = rope, MLA rotates only a decoupled part: a key of
 * rope_head_dim dR shared by all heads (x W_kr, rotated) and a per-head
 * query part of dR, concatenated to the unrotated ("nope") head vectors, so
 * a query/key head is D = HS + dR wide and scores are scaled by 1/sqrt(D).
 * Training runs the unabsorbed form (K and V materialised, the grouped
 * attention kernel with NKV = NH); decode runs the absorbed form over the
 * latent cache (model/attention_latent.h).
 *
 * This module knows nothing of training loops, token files or sampling.
 */
#ifndef GQA_GPT_H
#define GQA_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "weights.h"

// Position schemes (GPTConfig.pos), and their names in that order
// (NULL-terminated): the one spelling of config files, flags and logs.
typedef enum { GPT_POS_LEARNED = 0, GPT_POS_ROPE = 1 } GPTPos;
extern const char *const gpt_pos_names[];
#define GPT_ROPE_THETA_DEFAULT 10000.0f

typedef struct {
    int vocab_size;  // V
    int block_size;  // maxT: longest sequence (rows of wpe; of the rope tables)
    int n_layer;     // L
    int n_head;      // NH: query heads
    int n_kv_head;   // NKV: key/value heads, 1 <= NKV <= NH, NH % NKV == 0
    int n_embd;      // C, C % NH == 0, HS = C / NH
    int bias;        // 1: Linear and LayerNorm biases; 0: none
    float dropout;   // p in [0, 1): embedding, attention and residual dropout
    int pos;           // GPTPos: learned (wpe) or rope
    float rope_theta;  // rope's base theta (> 0, finite; GPT_ROPE_THETA_DEFAULT); unused by learned
    int kv_lora_rank;  // r: 0 = grouped attention (by n_kv_head); > 0 = MLA with a latent of r (n_kv_head = n_head)
    int rope_head_dim; // dR: MLA's decoupled rotary part (pos = rope: even, >= 2); 0 otherwise
    int latent_norm;   // MLA: 1 = RMSNorm of the latent (DeepSeek-V2), 0 = none (converted models)
} GPTConfig;

// RMSNorm epsilon of the MLA latent.
#define GPT_LATENT_NORM_EPS 1e-6f

static inline int gpt_is_latent(const GPTConfig *c) { return c->kv_lora_rank > 0; }
// Width of a query/key head: HS, or HS + rope_head_dim with MLA.
static inline int gpt_qk_head_size(const GPTConfig *c) { return c->n_embd / c->n_head + c->rope_head_dim; }
// Width of the vector the rotation turns: HS (grouped), rope_head_dim (MLA).
static inline int gpt_rope_dim(const GPTConfig *c) {
    return gpt_is_latent(c) ? c->rope_head_dim : c->n_embd / c->n_head;
}

// Returns 0 if the config is valid, else -1 with a message naming the values.
// With pos = rope the rotated width must be even and rope_theta finite and
// > 0; MLA needs n_kv_head = n_head and rope_head_dim > 0 exactly with rope.
int gpt_config_validate(const GPTConfig *c, char *err, size_t errlen);

// Parameters (and, with the same layout, gradients): views into one arena.
// A Linear weight is (OC, C) as in PyTorch: out = in @ w^T.
// The parameter tensors by name, in arena order (the fields below, in turn).
enum {
    PARAM_WTE,
    PARAM_WPE,
    PARAM_LN1W,
    PARAM_LN1B,
    PARAM_QKVW,
    PARAM_QKVB,
    PARAM_DKVW,
    PARAM_DKVB,
    PARAM_KVNW,
    PARAM_UKVW,
    PARAM_UKVB,
    PARAM_ATTPROJW,
    PARAM_ATTPROJB,
    PARAM_LN2W,
    PARAM_LN2B,
    PARAM_FCW,
    PARAM_FCB,
    PARAM_FCPROJW,
    PARAM_FCPROJB,
    PARAM_LNFW,
    PARAM_LNFB,
    GPT_NUM_PARAM_TENSORS
};
typedef struct {
    float *wte;       // (V, C)  token embedding, also the LM head
    float *wpe;       // (maxT, C)       empty when pos = rope
    float *ln1w;      // (L, C)
    float *ln1b;      // (L, C)        empty when bias = 0
    float *qkvw;      // (L, QKV, C)   QKV = (NH + 2*NKV) * HS, rows [q | k | v];
                      //               MLA: the query only, (L, NH*D, C), head h rows [nope HS | rope dR]
    float *qkvb;      // (L, QKV)      MLA: (L, NH*D)
    float *dkvw;      // (L, r + dR, C) MLA: rows [latent down-projection W_dkv (r) | rope key W_kr (dR)]
    float *dkvb;      // (L, r + dR)
    float *kvnw;      // (L, r)        MLA latent RMSNorm weight; empty when latent_norm = 0
    float *ukvw;      // (L, 2*NH*HS, r) MLA: rows [W_uk of heads 0..NH-1 | W_uv of heads 0..NH-1]
    float *ukvb;      // (L, 2*NH*HS)
    float *attprojw;  // (L, C, C)
    float *attprojb;  // (L, C)
    float *ln2w;      // (L, C)
    float *ln2b;      // (L, C)
    float *fcw;       // (L, 4C, C)
    float *fcb;       // (L, 4C)
    float *fcprojw;   // (L, C, 4C)
    float *fcprojb;   // (L, C)
    float *lnfw;      // (C)
    float *lnfb;      // (C)
} ParameterTensors;

// What every parameter tensor is called, in arena order.
extern const char *const gpt_param_names[GPT_NUM_PARAM_TENSORS];

// Activations for a (B, T) forward, kept for backward. One arena.
#define GPT_NUM_ACT_TENSORS 23
typedef struct {
    float *encoded;    // (B, T, C)   embedding (after dropout)
    float *ln1;        // (L, B, T, C)
    float *ln1_mean;   // (L, B, T)
    float *ln1_rstd;   // (L, B, T)
    float *qkv;        // (L, B, T, QKV)  MLA: (L, B, T, NH*D + NH*D + NH*HS) [q | k | v] heads
    float *ckv;        // (L, B, T, r + dR) MLA: x W_dkv^T (+ b), its rope part rotated
    float *latent;     // (L, B, T, r)    MLA: the latent after its norm (what decode caches)
    float *latent_rstd;// (L, B, T)       MLA: 1 / rms of the latent (latent_norm = 1)
    float *att;        // (L, B, NH, T, T)  softmax probabilities
    float *atty;       // (L, B, T, C)  attention output, heads side by side
    float *residual2;  // (L, B, T, C)  x + attn
    float *ln2;        // (L, B, T, C)
    float *ln2_mean;   // (L, B, T)
    float *ln2_rstd;   // (L, B, T)
    float *fch;        // (L, B, T, 4C): the fc output, then (after the GELU) its derivative gelu'(fch)
    float *fch_gelu;   // (L, B, T, 4C)
    float *residual3;  // (L, B, T, C)  x + attn + mlp
    float *lnf;        // (B, T, C)
    float *lnf_mean;   // (B, T)
    float *lnf_rstd;   // (B, T)
    float *logits;     // (B, T, V)
    float *probs;      // (B, T, V)   softmax; becomes dlogits in backward
    float *losses;     // (B, T)
} ActivationTensors;

typedef struct GPT {
    GPTConfig config;
    // pos = rope: cos and sin of every (position, pair), (block_size, HS/2)
    // each (model/rope.h), computed once by gpt_init (double, then float);
    // NULL with pos = learned. rope_memory owns them (NULL in shards).
    const float *rope_cos, *rope_sin;
    float *rope_memory;
    // parameters
    ParameterTensors params;
    size_t param_sizes[GPT_NUM_PARAM_TENSORS];
    float *params_memory;
    size_t num_parameters;
    // gradients (allocated by the first gpt_zero_grad / gpt_backward)
    ParameterTensors grads;
    float *grads_memory;
    // activations, sized for the largest (B, T) seen so far
    ActivationTensors acts;
    float *acts_memory;
    size_t acts_BT, acts_BTT;  // capacity: B*T rows and B*T*T attention entries
    int T_cap, threads_cap;    // capacity of the attention scratch
    // backward scratch: residual gradient, per-op gradients, attention scratch
    float *scratch;
    int B, T;          // shape of the last forward
    const int *inputs, *targets;  // of the last forward (borrowed, must outlive backward)
    float mean_loss;   // of the last forward; -1 when it had no targets
    size_t n_counted;  // its targets that are not GPT_IGNORE: the mean's denominator
    // dropout: on when training = 1 and config.dropout > 0
    int training;
    uint64_t rng_state;    // advances once per training forward
    uint64_t dropout_key;  // the masks of the last forward; backward regenerates them
    // Where this model's sequences start in the whole batch, for the dropout
    // mask indices: an MPI rank sets rank x its batch; 0 for one process.
    // gpt_forward_backward adds each thread shard's own start to it.
    int batch_offset;
    // gpt_forward_backward's thread shards 1..n_shards: parameters shared,
    // their own activations and gradients (shard 0 is the model itself)
    struct GPT *shards;
    int n_shards;
    // Inference weights (model/weights.h). Unconverted (wmat_memory NULL,
    // weight_dtype f32): the products read params as they lie. Otherwise
    // gpt_set_weight_dtype has converted wte, wpe and the linear weights
    // (not MLA's ukvw) into wmats of weight_dtype (f32 too: rows grouped for
    // the decode kernels), in wmat_memory, and freed their float32 copies:
    // params then holds the rest (LayerNorms, biases, kvnw, ukvw), the
    // converted tensors' pointers are NULL, and the model serves inference
    // only (gpt_forward and checkpoint_save refuse it).
    WeightDtype weight_dtype;
    WMat wmats[GPT_NUM_PARAM_TENSORS];  // by PARAM_*; unset for the tensors not converted
    void *wmat_memory;
    char error[256];       // message of the last failed call
} GPT;

// Allocate the parameter arena and initialise weights as GPT-2 / nanoGPT:
// normal(0, 0.02), residual projections normal(0, 0.02/sqrt(2L)), biases 0,
// LayerNorm weight 1. Returns -1 (message in m->error) on a bad config or if
// the parameters do not fit in memory.
int gpt_init(GPT *m, const GPTConfig *c, uint64_t seed);
void gpt_free(GPT *m);

// Parameter count of a config (no allocation); 0 if it overflows size_t.
size_t gpt_num_parameters(const GPTConfig *c);
// Sizes of each parameter tensor, in arena order (indexed by PARAM_*).
void gpt_param_sizes(const GPTConfig *c, size_t sizes[GPT_NUM_PARAM_TENSORS]);
// Does AdamW decay tensor PARAM_*? (weights of dim >= 2: matrices and embeddings)
int gpt_param_decays(int tensor_index);
// Point a ParameterTensors at an arena laid out as gpt_param_sizes.
void gpt_point_params(ParameterTensors *p, float *memory, const size_t sizes[GPT_NUM_PARAM_TENSORS]);

// The Linear layers of every block, in forward order: grouped: qkv (C ->
// QKV), attproj (C -> C), fc (C -> 4C), fcproj (4C -> C); MLA: q (C -> NH*D),
// dkv (C -> r + dR), ukv (r -> 2*NH*HS), then attproj, fc, fcproj. A layer's
// weight is the tensor PARAM_* `weight`, (L, out, in): block l's (out, in)
// matrix, out = x @ w^T; its bias is `bias`, (L, out), empty when
// config.bias = 0. The tied LM head (wte) is not among them. Returns the count.
#define GPT_NUM_LINEAR 6
typedef struct {
    const char *name;  // "qkv", "attproj", "fc", "fcproj"; MLA "q", "dkv", "ukv"
    int weight, bias;  // PARAM_* of the weight and of the bias
    int in, out;       // features
} GPTLinear;
int gpt_linear_layers(const GPTConfig *c, GPTLinear out[GPT_NUM_LINEAR]);

// ---- weights for inference

// Is tensor PARAM_* one that gpt_set_weight_dtype converts (wte, wpe, the
// linear layers' weights but MLA's ukvw)? Then *rows, *cols is its shape as
// a matrix (rows: V, block_size, or L x out; cols: C, or the layer's in).
int gpt_weight_converts(const GPTConfig *c, int param, size_t *rows, int *cols);
// Convert the model's matrices to dtype for inference and free their
// float32 copies (see GPT.weight_dtype); f32 regroups the rows. Once only
// (again with the same dtype: nothing to do). Returns 0, or -1 with
// m->error (out of memory; already converted to another dtype).
int gpt_set_weight_dtype(GPT *m, WeightDtype dt);
// A model for inference built from weights already in dtype (bf16, f16 or
// q8), as gpt_set_weight_dtype leaves one, without a float32 copy: raw[i]
// is tensor PARAM_i in an inference checkpoint's form (checked before):
// wmat_raw_check's for the converted ones, little-endian float32 for the
// others. Returns 0, or -1 with m->error (out of memory; a bad config).
int gpt_init_converted(GPT *m, const GPTConfig *c, WeightDtype dt, const uint8_t *const raw[GPT_NUM_PARAM_TENSORS]);
// Tensor PARAM_* as a matrix: converted, or a view of the float32 tensor.
WMat gpt_weight(const GPT *m, int param);
// Bytes of the weights with matrices of dtype (the other tensors float32):
// all of them (decode = 0), or what one decode step reads (decode = 1):
// every parameter once (the tied wte counted once), but of wpe only the row
// of the step's position (with rope there is no wpe; the rope tables are not
// parameters); MLA's ukvw is not run by the absorbed decode but its weights
// are read through W_uk and W_uv. Rows of q8 count their padding and scales
// (wmat_row_bytes). f32: 4 x (gpt_num_parameters - (block_size - 1) C).
double gpt_weight_bytes(const GPTConfig *c, WeightDtype dt, int decode);

// Width of a row of the attention's q/k/v activations: the query heads, then
// the key heads, then the value heads. Grouped: the fused projection's
// output, QKV = (NH + 2 NKV) HS. MLA: NH*D + NH*D + NH*HS (keys and values
// up-projected from the latent, each key head ending in the shared rope key).
static inline size_t gpt_qkv_width(const GPTConfig *c) {
    const size_t HS = (size_t)(c->n_embd / c->n_head), D = (size_t)gpt_qk_head_size(c);
    if (gpt_is_latent(c)) return (size_t)c->n_head * (2 * D + HS);
    return ((size_t)c->n_head + 2 * (size_t)c->n_kv_head) * HS;
}
// Rows of the query (MLA) or fused q/k/v (grouped) projection weight qkvw.
static inline size_t gpt_qkvw_rows(const GPTConfig *c) {
    return gpt_is_latent(c) ? (size_t)c->n_head * (size_t)gpt_qk_head_size(c) : gpt_qkv_width(c);
}

// KV-cache numbers per token per layer: grouped 2 * NKV * HS (a key and a
// value per KV head); MLA r + dR (the latent and the rope key).
static inline size_t gpt_kv_per_token_layer(const GPTConfig *c) {
    if (gpt_is_latent(c)) return (size_t)c->kv_lora_rank + (size_t)c->rope_head_dim;
    return 2 * (size_t)c->n_kv_head * (size_t)(c->n_embd / c->n_head);
}
// KV-cache bytes per token of one sequence: L * gpt_kv_per_token_layer * elem_bytes.
size_t gpt_kv_bytes_per_token(const GPTConfig *c, size_t elem_bytes);

// Check token ids are in [0, V). Returns 0 or -1 with a message naming the
// position and value.
int gpt_validate_tokens(const GPTConfig *c, const int *tokens, size_t n, char *err, size_t errlen);
// A target that adds nothing to the loss (PyTorch's ignore_index; nanoGPT's
// -1): the mean loss is over the other targets, and is 0 when there are none.
#define GPT_IGNORE (-1)
// Targets: token ids in [0, V) or GPT_IGNORE; *counted = how many are not
// ignored. Returns 0 or -1 as gpt_validate_tokens.
int gpt_validate_targets(const GPTConfig *c, const int *targets, size_t n, size_t *counted, char *err, size_t errlen);

// Forward over inputs (B, T). With targets (B, T), also the mean loss.
// Returns 0, or -1 with m->error set (bad token, T > block_size, no memory).
int gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T);
// Set all gradients to 0 (allocating them on first use).
void gpt_zero_grad(GPT *m);
// Accumulate (+=) the gradient of the last forward's mean loss into m->grads.
// Requires a forward with targets.
void gpt_backward(GPT *m);

// One training pass: forward with targets, then m->grads = the gradient of
// the mean loss (overwritten) and m->mean_loss. With shards > 1 the batch is
// cut into that many runs of whole sequences, one OpenMP thread each, every
// shard with its own activations and gradients and single-threaded kernels;
// the gradients are then summed, weighted by the targets each counted.
// Dropout masks are those of the unsharded pass, so only the order of float
// sums differs. Afterwards m's activations hold shard 0's sequences only.
// Returns 0 or -1 (m->error).
int gpt_forward_backward(GPT *m, const int *inputs, const int *targets, int B, int T, int shards);
// The forward half of it: m->mean_loss of (B, T) with targets, sharded the
// same way (evaluation; m's activations stay sized for one shard).
int gpt_loss(GPT *m, const int *inputs, const int *targets, int B, int T, int shards);
// Shards for gpt_forward_backward of a batch of B: the OpenMP threads when B
// splits evenly over them (or B >= 4 x threads, where the uneven split costs
// little), else 1. Shards rather than threaded kernels: each thread runs
// whole sequences through single-threaded kernels, with no fork/join inside
// every op. Always 1 unless OpenBLAS is the OpenMP build: the pthread build
// would run its own threads inside each shard.
int gpt_auto_shards(int B);

#endif
