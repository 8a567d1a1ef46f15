/*
 * gpt.c: config validation, arenas, initialisation, forward and backward of
 * the GQA GPT (see gpt.h). The layer kernels are in ops.c and attention.c;
 * this file wires them into the network and owns all memory.
 */
#include "gpt.h"

#include <limits.h>
#include <math.h>
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../util/rng.h"
#include "../util/util.h"
#include "attention.h"
#include "ops.h"
#include "rope.h"

const char *const gpt_pos_names[] = {"learned", "rope", NULL};  // GPTPos order

const char *const gpt_param_names[GPT_NUM_PARAM_TENSORS] = {
    [PARAM_WTE] = "wte",           [PARAM_WPE] = "wpe",         [PARAM_LN1W] = "ln1w",       [PARAM_LN1B] = "ln1b",
    [PARAM_QKVW] = "qkvw",         [PARAM_QKVB] = "qkvb",       [PARAM_DKVW] = "dkvw",       [PARAM_DKVB] = "dkvb",
    [PARAM_KVNW] = "kvnw",         [PARAM_UKVW] = "ukvw",       [PARAM_UKVB] = "ukvb",       [PARAM_ATTPROJW] = "attprojw",
    [PARAM_ATTPROJB] = "attprojb", [PARAM_LN2W] = "ln2w",       [PARAM_LN2B] = "ln2b",       [PARAM_FCW] = "fcw",
    [PARAM_FCB] = "fcb",           [PARAM_FCPROJW] = "fcprojw", [PARAM_FCPROJB] = "fcprojb", [PARAM_LNFW] = "lnfw",
    [PARAM_LNFB] = "lnfb"};

// Upper bound for any one dimension: keeps int index arithmetic in kernels
// far from overflow; products are checked in size_t separately.
#define GPT_DIM_MAX (1 << 24)

// ----------------------------------------------------------------------------
// config

int gpt_config_validate(const GPTConfig *c, char *err, size_t errlen) {
    struct { const char *name; int value; } dims[] = {
        {"vocab_size", c->vocab_size}, {"block_size", c->block_size}, {"n_layer", c->n_layer},
        {"n_head", c->n_head}, {"n_embd", c->n_embd}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        if (dims[i].value <= 0 || dims[i].value > GPT_DIM_MAX) {
            snprintf(err, errlen, "%s must be in [1, %d], got %d", dims[i].name, GPT_DIM_MAX, dims[i].value);
            return -1;
        }
    }
    if (c->n_kv_head < 1 || c->n_kv_head > c->n_head) {
        snprintf(err, errlen, "n_kv_head must be in [1, n_head=%d], got %d", c->n_head, c->n_kv_head);
        return -1;
    }
    if (c->n_head % c->n_kv_head != 0) {
        snprintf(err, errlen, "n_head %d is not divisible by n_kv_head %d (each KV head serves n_head/n_kv_head query heads)",
                 c->n_head, c->n_kv_head);
        return -1;
    }
    if (c->n_embd % c->n_head != 0) {
        snprintf(err, errlen, "n_embd %d is not divisible by n_head %d", c->n_embd, c->n_head);
        return -1;
    }
    if (c->bias != 0 && c->bias != 1) {
        snprintf(err, errlen, "bias must be 0 or 1, got %d", c->bias);
        return -1;
    }
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) {
        snprintf(err, errlen, "dropout must be in [0, 1), got %g", (double)c->dropout);
        return -1;
    }
    if (c->pos != GPT_POS_LEARNED && c->pos != GPT_POS_ROPE) {
        snprintf(err, errlen, "pos must be %d (%s) or %d (%s), got %d", GPT_POS_LEARNED, gpt_pos_names[GPT_POS_LEARNED],
                 GPT_POS_ROPE, gpt_pos_names[GPT_POS_ROPE], c->pos);
        return -1;
    }
    if (c->kv_lora_rank < 0 || c->kv_lora_rank > GPT_DIM_MAX) {
        snprintf(err, errlen, "kv_lora_rank must be in [0, %d] (0: grouped attention), got %d", GPT_DIM_MAX,
                 c->kv_lora_rank);
        return -1;
    }
    if (c->latent_norm != 0 && c->latent_norm != 1) {
        snprintf(err, errlen, "latent_norm must be 0 or 1, got %d", c->latent_norm);
        return -1;
    }
    if (gpt_is_latent(c) && c->n_kv_head != c->n_head) {
        snprintf(err, errlen, "MLA (kv_lora_rank %d) gives every query head its own K and V: n_kv_head must equal "
                 "n_head=%d, got %d", c->kv_lora_rank, c->n_head, c->n_kv_head);
        return -1;
    }
    const int mla_rope = gpt_is_latent(c) && c->pos == GPT_POS_ROPE;
    if (!mla_rope && c->rope_head_dim != 0) {
        snprintf(err, errlen, "rope_head_dim is MLA's decoupled rotary part (kv_lora_rank > 0 with pos=rope); "
                 "it must be 0 here, got %d", c->rope_head_dim);
        return -1;
    }
    if (mla_rope && (c->rope_head_dim < 2 || c->rope_head_dim > GPT_DIM_MAX || c->rope_head_dim % 2 != 0)) {
        snprintf(err, errlen, "MLA with pos=rope needs an even rope_head_dim >= 2 (the decoupled rotary part; "
                 "DeepSeek-V2 uses head_size/2), got %d", c->rope_head_dim);
        return -1;
    }
    if (c->pos == GPT_POS_ROPE && !gpt_is_latent(c) && (c->n_embd / c->n_head) % 2 != 0) {
        snprintf(err, errlen, "pos=rope rotates pairs of dimensions: the head size n_embd/n_head = %d must be even",
                 c->n_embd / c->n_head);
        return -1;
    }
    if (c->pos == GPT_POS_ROPE && !(isfinite(c->rope_theta) && c->rope_theta > 0.0f)) {
        snprintf(err, errlen, "rope_theta must be a finite number > 0, got %g", (double)c->rope_theta);
        return -1;
    }
    if (gpt_num_parameters(c) == 0) {
        snprintf(err, errlen, "the parameter count of this config overflows size_t");
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// parameters

int gpt_linear_layers(const GPTConfig *c, GPTLinear out[GPT_NUM_LINEAR]) {
    const int C = c->n_embd, r = c->kv_lora_rank, W = r + c->rope_head_dim, NH = c->n_head, HS = C / NH;
    int n = 0;
    if (gpt_is_latent(c)) {
        out[n++] = (GPTLinear){"q", PARAM_QKVW, PARAM_QKVB, C, (int)gpt_qkvw_rows(c)};
        out[n++] = (GPTLinear){"dkv", PARAM_DKVW, PARAM_DKVB, C, W};
        out[n++] = (GPTLinear){"ukv", PARAM_UKVW, PARAM_UKVB, r, 2 * NH * HS};
    } else {
        out[n++] = (GPTLinear){"qkv", PARAM_QKVW, PARAM_QKVB, C, (int)gpt_qkv_width(c)};
    }
    out[n++] = (GPTLinear){"attproj", PARAM_ATTPROJW, PARAM_ATTPROJB, C, C};
    out[n++] = (GPTLinear){"fc", PARAM_FCW, PARAM_FCB, C, 4 * C};
    out[n++] = (GPTLinear){"fcproj", PARAM_FCPROJW, PARAM_FCPROJB, 4 * C, C};
    return n;
}

void gpt_param_sizes(const GPTConfig *c, size_t s[GPT_NUM_PARAM_TENSORS]) {
    size_t V = c->vocab_size, maxT = c->block_size, L = c->n_layer, C = c->n_embd;
    size_t bias = c->bias ? 1 : 0;
    s[PARAM_WTE] = V * C;
    s[PARAM_WPE] = c->pos == GPT_POS_ROPE ? 0 : maxT * C;  // rope: no wpe (its slot stays, empty)
    s[PARAM_LN1W] = L * C;
    s[PARAM_LN1B] = bias * L * C;
    s[PARAM_LN2W] = L * C;
    s[PARAM_LN2B] = bias * L * C;
    s[PARAM_LNFW] = C;
    s[PARAM_LNFB] = bias * C;
    s[PARAM_KVNW] = gpt_is_latent(c) && c->latent_norm ? L * (size_t)c->kv_lora_rank : 0;
    // the Linear layers: weights (L, out, in), biases (L, out); MLA's are empty unless latent
    s[PARAM_DKVW] = s[PARAM_DKVB] = s[PARAM_UKVW] = s[PARAM_UKVB] = 0;
    GPTLinear lin[GPT_NUM_LINEAR];
    const int nlin = gpt_linear_layers(c, lin);
    for (int i = 0; i < nlin; i++) {
        s[lin[i].weight] = L * (size_t)lin[i].out * (size_t)lin[i].in;
        s[lin[i].bias] = bias * L * (size_t)lin[i].out;
    }
}

int gpt_param_decays(int i) {
    // wte, wpe and the Linear weights: the tensors of dim >= 2 (nanoGPT)
    return i == PARAM_WTE || i == PARAM_WPE || i == PARAM_QKVW || i == PARAM_DKVW || i == PARAM_UKVW ||
           i == PARAM_ATTPROJW || i == PARAM_FCW || i == PARAM_FCPROJW;
}

size_t gpt_num_parameters(const GPTConfig *c) {
    // Dims are bounded by GPT_DIM_MAX (2^24), so each product of three is
    // below 2^72 only in theory: check with doubles first, then sum exactly.
    if (c->n_head <= 0 || c->n_kv_head <= 0 || c->n_embd <= 0) return 0;
    double C = c->n_embd, L = c->n_layer, V = c->vocab_size, T = c->block_size;
    double r = c->kv_lora_rank, D = (double)c->n_embd + (double)c->n_head * c->rope_head_dim;
    double approx = V * C + T * C + L * (12.0 * C * C + 12.0 * C + (r + 2) * (D + 3 * C)) + 2 * C;
    if (approx > 1e18) return 0;
    size_t s[GPT_NUM_PARAM_TENSORS], n = 0;
    gpt_param_sizes(c, s);
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) n += s[i];
    return n;
}

// The field of tensor PARAM_* i.
static float **param_slot(ParameterTensors *p, int i) {
    float **slots[GPT_NUM_PARAM_TENSORS] = {
        [PARAM_WTE] = &p->wte,         [PARAM_WPE] = &p->wpe,           [PARAM_LN1W] = &p->ln1w,
        [PARAM_LN1B] = &p->ln1b,       [PARAM_QKVW] = &p->qkvw,         [PARAM_QKVB] = &p->qkvb,
        [PARAM_DKVW] = &p->dkvw,       [PARAM_DKVB] = &p->dkvb,         [PARAM_KVNW] = &p->kvnw,
        [PARAM_UKVW] = &p->ukvw,       [PARAM_UKVB] = &p->ukvb,
        [PARAM_ATTPROJW] = &p->attprojw, [PARAM_ATTPROJB] = &p->attprojb, [PARAM_LN2W] = &p->ln2w,
        [PARAM_LN2B] = &p->ln2b,       [PARAM_FCW] = &p->fcw,           [PARAM_FCB] = &p->fcb,
        [PARAM_FCPROJW] = &p->fcprojw, [PARAM_FCPROJB] = &p->fcprojb,   [PARAM_LNFW] = &p->lnfw,
        [PARAM_LNFB] = &p->lnfb};
    return slots[i];
}

void gpt_point_params(ParameterTensors *p, float *memory, const size_t sizes[GPT_NUM_PARAM_TENSORS]) {
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        *param_slot(p, i) = memory;
        memory += sizes[i];
    }
}

// ----------------------------------------------------------------------------
// weights for inference

int gpt_weight_converts(const GPTConfig *c, int param, size_t *rows, int *cols) {
    size_t s[GPT_NUM_PARAM_TENSORS];
    gpt_param_sizes(c, s);
    if (s[param] == 0) return 0;
    if (param == PARAM_WTE || param == PARAM_WPE) {
        *rows = s[param] / (size_t)c->n_embd, *cols = c->n_embd;
        return 1;
    }
    GPTLinear lin[GPT_NUM_LINEAR];
    const int n = gpt_linear_layers(c, lin);
    for (int i = 0; i < n; i++)
        if (lin[i].weight == param && param != PARAM_UKVW) {
            *rows = (size_t)c->n_layer * (size_t)lin[i].out, *cols = lin[i].in;
            return 1;
        }
    return 0;
}

// Where a model's weights of dtype dt lie: the converted matrices at off[]
// in a block of `total` bytes, the other tensors (keep[] floats each) in an
// arena of nkeep floats.
typedef struct {
    size_t rows[GPT_NUM_PARAM_TENSORS], off[GPT_NUM_PARAM_TENSORS], keep[GPT_NUM_PARAM_TENSORS], total, nkeep;
    int cols[GPT_NUM_PARAM_TENSORS], conv[GPT_NUM_PARAM_TENSORS];
} WeightLayout;

static void weight_layout(const GPTConfig *c, WeightDtype dt, WeightLayout *L) {
    size_t sizes[GPT_NUM_PARAM_TENSORS];
    gpt_param_sizes(c, sizes);
    L->total = L->nkeep = 0;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        L->conv[i] = gpt_weight_converts(c, i, &L->rows[i], &L->cols[i]);
        L->off[i] = L->total;
        if (L->conv[i]) L->total += wmat_bytes(dt, L->rows[i], L->cols[i]);
        L->keep[i] = L->conv[i] ? 0 : sizes[i];
        L->nkeep += L->keep[i];
    }
}

// The converted matrices' block of a layout (huge pages advised), or NULL
// with m->error.
static void *alloc_wmats(GPT *m, WeightDtype dt, const WeightLayout *L) {
    void *wm = aligned_alloc(64, L->total ? (L->total + 63) / 64 * 64 : 64);
    if (!wm) {
        char b[32];
        snprintf(m->error, sizeof m->error, "cannot allocate the %s weights (%s)", weight_dtype_name(dt),
                 format_bytes((double)L->total, b, sizeof b));
        return NULL;
    }
    advise_huge_pages(wm, L->total);
    return wm;
}

int gpt_set_weight_dtype(GPT *m, WeightDtype dt) {
    const GPTConfig *c = &m->config;
    if (m->wmat_memory) {
        if (dt == m->weight_dtype) return 0;
        snprintf(m->error, sizeof m->error, "the weights are already %s", weight_dtype_name(m->weight_dtype));
        return -1;
    }
    WeightLayout L;
    weight_layout(c, dt, &L);
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        const float *t = *param_slot(&m->params, i);
        for (size_t j = 0; dt == W_F16 && L.conv[i] && j < L.rows[i] * (size_t)L.cols[i]; j++)
            if (fabsf(t[j]) > 65504.0f) {  // the largest half: beyond it f16 holds infinity
                snprintf(m->error, sizeof m->error, "%s[%zu] = %g is beyond f16's range (65504): use bf16",
                         gpt_param_names[i], j, (double)t[j]);
                return -1;
            }
    }
    void *wm = alloc_wmats(m, dt, &L);
    float *rest = wm ? malloc((L.nkeep ? L.nkeep : 1) * sizeof(float)) : NULL;
    if (!rest) {
        if (wm) snprintf(m->error, sizeof m->error, "cannot allocate %zu float32 parameters", L.nkeep);
        free(wm);
        return -1;
    }
    ParameterTensors old = m->params;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++)
        if (L.conv[i])
            wmat_init_from_float(&m->wmats[i], dt, L.rows[i], L.cols[i], (char *)wm + L.off[i], *param_slot(&old, i));
    gpt_point_params(&m->params, rest, L.keep);
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        float **slot = param_slot(&m->params, i);
        if (L.conv[i]) *slot = NULL;
        else memcpy(*slot, *param_slot(&old, i), L.keep[i] * sizeof(float));
    }
    free(m->params_memory);
    m->params_memory = rest;
    m->wmat_memory = wm;
    m->weight_dtype = dt;
    return 0;
}

WMat gpt_weight(const GPT *m, int param) {
    if (m->wmat_memory && m->wmats[param].data) return m->wmats[param];
    size_t rows = m->param_sizes[param];
    int cols = 1;
    if (!gpt_weight_converts(&m->config, param, &rows, &cols) && param == PARAM_UKVW && rows > 0)
        cols = m->config.kv_lora_rank, rows = m->param_sizes[param] / (size_t)cols;
    ParameterTensors p = m->params;
    return wmat_view(*param_slot(&p, param), rows, cols);
}

double gpt_weight_bytes(const GPTConfig *c, WeightDtype dt, int decode) {
    size_t s[GPT_NUM_PARAM_TENSORS];
    gpt_param_sizes(c, s);
    double bytes = 0;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        size_t rows;
        int cols;
        if (gpt_weight_converts(c, i, &rows, &cols)) {
            if (decode && i == PARAM_WPE) rows = 1;  // the step's position
            bytes += (double)rows * (double)wmat_row_bytes(dt, cols);
        } else {
            bytes += 4.0 * (double)s[i];
        }
    }
    return bytes;
}

size_t gpt_kv_bytes_per_token(const GPTConfig *c, size_t elem_bytes) {
    return (size_t)c->n_layer * gpt_kv_per_token_layer(c) * elem_bytes;
}

// gpt_init and gpt_init_converted: the config, the rope tables and a
// float32 arena of `floats` (not initialised).
static int gpt_alloc(GPT *m, const GPTConfig *c, uint64_t seed, size_t floats) {
    memset(m, 0, sizeof *m);
    if (gpt_config_validate(c, m->error, sizeof m->error) != 0) return -1;
    m->config = *c;
    m->mean_loss = -1.0f;
    m->rng_state = rng_mix64(seed ^ 0xD1CEull);
    gpt_param_sizes(c, m->param_sizes);
    m->num_parameters = gpt_num_parameters(c);
    m->params_memory = malloc((floats ? floats : 1) * sizeof(float));
    if (!m->params_memory) {
        char b[32];
        snprintf(m->error, sizeof m->error, "cannot allocate %zu parameters (%s)", floats,
                 format_bytes((double)floats * sizeof(float), b, sizeof b));
        return -1;
    }
    advise_huge_pages(m->params_memory, floats * sizeof(float));
    if (c->pos == GPT_POS_ROPE) {  // the rotation tables, once for the model's life
        const int dim = gpt_rope_dim(c);  // HS, or MLA's rope_head_dim
        const size_t n = (size_t)c->block_size * (size_t)(dim / 2);
        m->rope_memory = malloc(2 * n * sizeof(float));
        if (!m->rope_memory) {
            snprintf(m->error, sizeof m->error, "cannot allocate the rope tables (2 x %zu floats)", n);
            free(m->params_memory);
            m->params_memory = NULL;
            return -1;
        }
        rope_tables(m->rope_memory, m->rope_memory + n, c->block_size, dim, (double)c->rope_theta);
        m->rope_cos = m->rope_memory;
        m->rope_sin = m->rope_memory + n;
    }
    return 0;
}

int gpt_init_converted(GPT *m, const GPTConfig *c, WeightDtype dt, const uint8_t *const raw[GPT_NUM_PARAM_TENSORS]) {
    CHECK(dt != W_F32);
    WeightLayout L;
    weight_layout(c, dt, &L);
    if (gpt_alloc(m, c, 0, L.nkeep) != 0) return -1;
    void *wm = alloc_wmats(m, dt, &L);
    if (!wm) {
        char e[sizeof m->error];
        memcpy(e, m->error, sizeof e);
        gpt_free(m);
        memcpy(m->error, e, sizeof e);
        return -1;
    }
    gpt_point_params(&m->params, m->params_memory, L.keep);
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        float **slot = param_slot(&m->params, i);
        if (L.conv[i]) {
            wmat_init_from_raw(&m->wmats[i], dt, L.rows[i], L.cols[i], (char *)wm + L.off[i], raw[i]);
            *slot = NULL;
        } else {
            f32s_from_le(*slot, raw[i], L.keep[i]);
        }
    }
    m->wmat_memory = wm;
    m->weight_dtype = dt;
    return 0;
}

int gpt_init(GPT *m, const GPTConfig *c, uint64_t seed) {
    if (gpt_alloc(m, c, seed, gpt_num_parameters(c)) != 0) return -1;
    gpt_point_params(&m->params, m->params_memory, m->param_sizes);

    // GPT-2 / nanoGPT init
    uint64_t rng = seed;
    const float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * c->n_layer);
    float *mem = m->params_memory;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        size_t n = m->param_sizes[i];
        int is_ln_weight = (i == PARAM_LN1W || i == PARAM_LN2W || i == PARAM_LNFW || i == PARAM_KVNW);
        int is_proj = (i == PARAM_ATTPROJW || i == PARAM_FCPROJW);  // into the residual stream
        for (size_t j = 0; j < n; j++) {
            if (is_ln_weight) mem[j] = 1.0f;
            else if (gpt_param_decays(i)) mem[j] = (is_proj ? proj_std : std) * rng_normal(&rng);
            else mem[j] = 0.0f;  // biases
        }
        mem += n;
    }
    return 0;
}

void gpt_free(GPT *m) {
    free(m->params_memory);
    free(m->wmat_memory);
    free(m->rope_memory);
    free(m->grads_memory);
    free(m->acts_memory);
    free(m->scratch);
    for (int i = 0; i < m->n_shards; i++) gpt_free(&m->shards[i]);  // their params_memory is NULL
    free(m->shards);
    memset(m, 0, sizeof *m);
}

// ----------------------------------------------------------------------------
// activations

// Floats per row of MLA's scratch (0 for grouped attention): the query
// projection (NH*D), the up-projected keys and values (2*NH*HS), and in the
// backward the latent's gradient (r) and that of x W_dkv^T (r + dR).
static size_t latent_scratch_row(const GPTConfig *c) {
    if (!gpt_is_latent(c)) return 0;
    const size_t C = c->n_embd, r = c->kv_lora_rank, W = r + c->rope_head_dim;
    return gpt_qkvw_rows(c) + 2 * C + r + W;
}

// Backward scratch layout: dresidual, dC1, dC2 (BT, C); d4C1, d4C2 (BT, 4C);
// dqkv (BT, QKV); MLA's (BT, latent_scratch_row); then attention scratch
// (2 T T + max(D, HS) T per thread). The forward borrows dC1 and MLA's part.
static size_t scratch_floats(const GPTConfig *c, size_t BT, int T, int threads) {
    size_t C = c->n_embd, QKV = gpt_qkv_width(c);
    return BT * (3 * C + 8 * C + QKV + latent_scratch_row(c)) + attention_scratch_floats(T, gpt_qk_head_size(c), threads);
}

// Where MLA's scratch starts (see scratch_floats), for a capacity of BTc rows.
static float *latent_scratch(const GPT *m, size_t BTc) {
    return m->scratch + BTc * (11 * (size_t)m->config.n_embd + gpt_qkv_width(&m->config));
}

static void act_sizes(const GPTConfig *c, size_t BT, size_t BTT, size_t s[GPT_NUM_ACT_TENSORS]) {
    size_t L = c->n_layer, C = c->n_embd, V = c->vocab_size, NH = c->n_head;
    size_t QKV = gpt_qkv_width(c), r = c->kv_lora_rank, W = r + c->rope_head_dim;
    size_t sizes[GPT_NUM_ACT_TENSORS] = {
        BT * C,                                  // encoded
        L * BT * C, L * BT, L * BT,              // ln1, ln1_mean, ln1_rstd
        L * BT * QKV,                            // qkv
        L * BT * W, L * BT * r,                  // ckv, latent (MLA; empty otherwise)
        c->latent_norm && r ? L * BT : 0,        // latent_rstd
        L * NH * BTT,                            // att
        L * BT * C, L * BT * C,                  // atty, residual2
        L * BT * C, L * BT, L * BT,              // ln2, ln2_mean, ln2_rstd
        L * BT * 4 * C, L * BT * 4 * C,          // fch, fch_gelu
        L * BT * C,                              // residual3
        BT * C, BT, BT,                          // lnf, lnf_mean, lnf_rstd
        BT * V, BT * V, BT};                     // logits, probs, losses
    memcpy(s, sizes, sizeof sizes);
}

// Make sure activations and scratch fit (B, T). Returns -1 (m->error) on OOM.
static int ensure_activations(GPT *m, int B, int T) {
    size_t BT = (size_t)B * T, BTT = BT * (size_t)T;
    int threads = omp_get_max_threads();
    if (m->acts_memory && BT <= m->acts_BT && BTT <= m->acts_BTT && T <= m->T_cap && threads <= m->threads_cap)
        return 0;
    // grow to at least the old capacity in each direction
    if (m->acts_memory) {
        BT = BT > m->acts_BT ? BT : m->acts_BT;
        BTT = BTT > m->acts_BTT ? BTT : m->acts_BTT;
        T = T > m->T_cap ? T : m->T_cap;
        threads = threads > m->threads_cap ? threads : m->threads_cap;
    }
    free(m->acts_memory);
    free(m->scratch);
    m->acts_memory = m->scratch = NULL;
    m->acts_BT = m->acts_BTT = 0;

    size_t s[GPT_NUM_ACT_TENSORS], total = 0;
    act_sizes(&m->config, BT, BTT, s);
    for (int i = 0; i < GPT_NUM_ACT_TENSORS; i++) total += s[i];
    size_t nscratch = scratch_floats(&m->config, BT, T, threads);
    m->acts_memory = malloc(total * sizeof(float));
    m->scratch = malloc(nscratch * sizeof(float));
    if (!m->acts_memory || !m->scratch) {
        char b[32];
        snprintf(m->error, sizeof m->error, "cannot allocate activations for B=%d T=%d (%s)", B, T,
                 format_bytes((double)(total + nscratch) * sizeof(float), b, sizeof b));
        free(m->acts_memory);
        free(m->scratch);
        m->acts_memory = m->scratch = NULL;
        return -1;
    }
    float **ptrs[GPT_NUM_ACT_TENSORS] = {
        &m->acts.encoded, &m->acts.ln1, &m->acts.ln1_mean, &m->acts.ln1_rstd, &m->acts.qkv,
        &m->acts.ckv, &m->acts.latent, &m->acts.latent_rstd, &m->acts.att, &m->acts.atty, &m->acts.residual2, &m->acts.ln2, &m->acts.ln2_mean,
        &m->acts.ln2_rstd, &m->acts.fch, &m->acts.fch_gelu, &m->acts.residual3, &m->acts.lnf,
        &m->acts.lnf_mean, &m->acts.lnf_rstd, &m->acts.logits, &m->acts.probs, &m->acts.losses};
    float *p = m->acts_memory;
    for (int i = 0; i < GPT_NUM_ACT_TENSORS; i++) {
        *ptrs[i] = p;
        p += s[i];
    }
    m->acts_BT = BT;
    m->acts_BTT = BTT;
    m->T_cap = T;
    m->threads_cap = threads;
    return 0;
}

int gpt_validate_tokens(const GPTConfig *c, const int *tokens, size_t n, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            snprintf(err, errlen, "token id %d at position %zu is out of range [0, vocab_size=%d)", tokens[i], i,
                     c->vocab_size);
            return -1;
        }
    }
    return 0;
}

int gpt_validate_targets(const GPTConfig *c, const int *targets, size_t n, size_t *counted, char *err,
                         size_t errlen) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (targets[i] == GPT_IGNORE) continue;
        if (targets[i] < 0 || targets[i] >= c->vocab_size) {
            snprintf(err, errlen, "target token id %d at position %zu is out of range [0, vocab_size=%d)", targets[i],
                     i, c->vocab_size);
            return -1;
        }
        k++;
    }
    *counted = k;
    return 0;
}

// Dropout key of one site: layer l (L for the embedding), site s in 0..3.
static uint64_t site_key(const GPT *m, int l, int s) {
    return rng_mix64(m->dropout_key + (uint64_t)(l * 4 + s) * 0x632BE59BD9B4E019ull);
}

// Where this model's (B, T) rows start in the dropout index space of the
// whole batch (see batch_offset): in the (N, C) tensors and in attention's
// (B, NH, T, T) probabilities. The forward and the backward must agree.
static void dropout_offsets(const GPT *m, int T, size_t *i0C, size_t *i0att) {
    *i0C = (size_t)m->batch_offset * T * m->config.n_embd;
    *i0att = (size_t)m->batch_offset * m->config.n_head * T * T;
}

// ----------------------------------------------------------------------------
// MLA: the latent projections around the attention (training, unabsorbed)

// Layer l's MLA q/k/v rows (B*T, QKV) from x = LN1 output (B*T, C): the
// query projection (its rope parts rotated), ckv = x W_dkv^T (+ b) with the
// rope key rotated, the latent = norm(ckv[:, :r]), keys and values
// up-projected from it, each key head ending in the shared rope key. The
// backward needs ckv, latent and latent_rstd, kept in the activations.
static void latent_qkv_forward(GPT *m, int l, const float *x, float *qkv, float *ckv, float *latent,
                               float *latent_rstd, int B, int T, float *scr) {
    const GPTConfig *c = &m->config;
    const ParameterTensors w = m->params;
    const int C = c->n_embd, NH = c->n_head, HS = C / NH, r = c->kv_lora_rank, dR = c->rope_head_dim;
    const int D = HS + dR, W = r + dR, NQ = NH * D, NKV2 = 2 * NH * HS, QKV = (int)gpt_qkv_width(c), N = B * T;
    float *q = scr, *kv = scr + (size_t)N * NQ;  // (N, NQ), (N, 2*NH*HS)
    matmul_forward(q, x, w.qkvw + (size_t)l * NQ * C, c->bias ? w.qkvb + (size_t)l * NQ : NULL, N, C, NQ);
    matmul_forward(ckv, x, w.dkvw + (size_t)l * W * C, c->bias ? w.dkvb + (size_t)l * W : NULL, N, C, W);
    if (dR) {  // decoupled rope: each query head's last dR numbers, and the one shared key
        rope_rotate_rows(q + HS, B, T, NQ, 0, NH, D, dR, m->rope_cos, m->rope_sin, 0);
        rope_rotate_rows(ckv + r, B, T, W, 0, 1, dR, dR, m->rope_cos, m->rope_sin, 0);
    }
    if (c->latent_norm) {
        rmsnorm_forward(latent, latent_rstd, ckv, W, w.kvnw + (size_t)l * r, GPT_LATENT_NORM_EPS, N, r);
    } else {
        for (int n = 0; n < N; n++) memcpy(latent + (size_t)n * r, ckv + (size_t)n * W, (size_t)r * sizeof(float));
    }
    matmul_forward(kv, latent, w.ukvw + (size_t)l * NKV2 * r, c->bias ? w.ukvb + (size_t)l * NKV2 : NULL, N, r, NKV2);
    // rows [q heads (D) | k heads (D) = [k_nope_h | rope key] | v heads (HS)]
    for (int n = 0; n < N; n++) {
        float *row = qkv + (size_t)n * QKV;
        const float *kvn = kv + (size_t)n * NKV2;
        memcpy(row, q + (size_t)n * NQ, (size_t)NQ * sizeof(float));
        for (int h = 0; h < NH; h++) {
            memcpy(row + NQ + h * D, kvn + h * HS, (size_t)HS * sizeof(float));
            memcpy(row + NQ + h * D + HS, ckv + (size_t)n * W + r, (size_t)dR * sizeof(float));
        }
        memcpy(row + 2 * NQ, kvn + NH * HS, (size_t)NH * HS * sizeof(float));
    }
}

// Its backward: from dqkv (B*T, QKV), accumulate the gradients of qkvw,
// dkvw, kvnw, ukvw (and biases) and write dx (B*T, C) (overwritten); dtmp
// (B*T, C) is scratch.
static void latent_qkv_backward(GPT *m, int l, const float *x, const float *ckv, const float *latent,
                                const float *latent_rstd, float *dqkv, float *dx, float *dtmp, int B, int T,
                                float *scr) {
    const GPTConfig *c = &m->config;
    const ParameterTensors w = m->params, g = m->grads;
    const int C = c->n_embd, NH = c->n_head, HS = C / NH, r = c->kv_lora_rank, dR = c->rope_head_dim;
    const int D = HS + dR, W = r + dR, NQ = NH * D, NKV2 = 2 * NH * HS, QKV = (int)gpt_qkv_width(c), N = B * T;
    float *dq = scr, *dkv = dq + (size_t)N * NQ, *dlatent = dkv + (size_t)N * NKV2, *dckv = dlatent + (size_t)N * r;
    for (int n = 0; n < N; n++) {
        const float *row = dqkv + (size_t)n * QKV;
        float *dkvn = dkv + (size_t)n * NKV2, *dkr = dckv + (size_t)n * W + r;
        memcpy(dq + (size_t)n * NQ, row, (size_t)NQ * sizeof(float));
        memset(dkr, 0, (size_t)dR * sizeof(float));
        for (int h = 0; h < NH; h++) {
            memcpy(dkvn + h * HS, row + NQ + h * D, (size_t)HS * sizeof(float));
            // the rope key is shared by every head: its gradient is the sum over heads
            for (int i = 0; i < dR; i++) dkr[i] += row[NQ + h * D + HS + i];
        }
        memcpy(dkvn + NH * HS, row + 2 * NQ, (size_t)NH * HS * sizeof(float));
    }
    if (dR) {  // through the rotations: the inverse rotation of the gradients
        rope_rotate_rows(dq + HS, B, T, NQ, 0, NH, D, dR, m->rope_cos, m->rope_sin, 1);
        rope_rotate_rows(dckv + r, B, T, W, 0, 1, dR, dR, m->rope_cos, m->rope_sin, 1);
    }
    // kv = latent ukvw^T + ukvb
    matmul_backward(dlatent, g.ukvw + (size_t)l * NKV2 * r, c->bias ? g.ukvb + (size_t)l * NKV2 : NULL, dkv, latent,
                    w.ukvw + (size_t)l * NKV2 * r, N, r, NKV2);
    // latent = norm(ckv[:, :r])
    for (int n = 0; n < N; n++) {
        float *d = dckv + (size_t)n * W;
        if (c->latent_norm) memset(d, 0, (size_t)r * sizeof(float));
        else memcpy(d, dlatent + (size_t)n * r, (size_t)r * sizeof(float));
    }
    if (c->latent_norm)
        rmsnorm_backward(dckv, g.kvnw + (size_t)l * r, dlatent, ckv, W, w.kvnw + (size_t)l * r, latent_rstd, N, r);
    // ckv = x dkvw^T + dkvb ; q = x qkvw^T + qkvb: x feeds both, so dx is their sum
    matmul_backward(dx, g.dkvw + (size_t)l * W * C, c->bias ? g.dkvb + (size_t)l * W : NULL, dckv, x,
                    w.dkvw + (size_t)l * W * C, N, C, W);
    matmul_backward(dtmp, g.qkvw + (size_t)l * NQ * C, c->bias ? g.qkvb + (size_t)l * NQ : NULL, dq, x,
                    w.qkvw + (size_t)l * NQ * C, N, C, NQ);
    residual_forward(dx, dx, dtmp, (size_t)N * C);
}

// ----------------------------------------------------------------------------
// forward

int gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T) {
    const GPTConfig *c = &m->config;
    if (m->wmat_memory) {
        snprintf(m->error, sizeof m->error, "the model's weights are converted (%s) for inference only: training "
                 "and gpt_forward need the float32 weights as trained", weight_dtype_name(m->weight_dtype));
        return -1;
    }
    if (B <= 0 || T <= 0) {
        snprintf(m->error, sizeof m->error, "batch B=%d and time T=%d must be positive", B, T);
        return -1;
    }
    if (T > c->block_size) {
        snprintf(m->error, sizeof m->error, "sequence length T=%d exceeds block_size=%d", T, c->block_size);
        return -1;
    }
    if ((size_t)B * T > (size_t)INT_MAX / 4) {
        snprintf(m->error, sizeof m->error, "B*T = %zu rows is too many", (size_t)B * T);
        return -1;
    }
    if (gpt_validate_tokens(c, inputs, (size_t)B * T, m->error, sizeof m->error) != 0) return -1;
    size_t counted = 0;
    if (targets && gpt_validate_targets(c, targets, (size_t)B * T, &counted, m->error, sizeof m->error) != 0)
        return -1;
    if (ensure_activations(m, B, T) != 0) return -1;

    const int L = c->n_layer, NH = c->n_head, NKV = c->n_kv_head, C = c->n_embd, V = c->vocab_size;
    const int HS = C / NH, D = gpt_qk_head_size(c), QKV = (int)gpt_qkv_width(c), N = B * T;
    const int mla = gpt_is_latent(c), r = c->kv_lora_rank, W = r + c->rope_head_dim;
    const size_t BTc = m->acts_BT;  // per-layer stride of activations is by capacity
    const float p = (m->training && c->dropout > 0.0f) ? c->dropout : 0.0f;
    if (p > 0.0f) m->dropout_key = rng_u64(&m->rng_state);
    m->B = B;
    m->T = T;
    m->inputs = inputs;
    m->targets = targets;
    m->n_counted = counted;

    ParameterTensors w = m->params;
    ActivationTensors a = m->acts;
    float *tmp = m->scratch + BTc * C;  // dC1 of the backward scratch: projections land here
    float *mla_scratch = latent_scratch(m, BTc);
    float *att_scratch = mla_scratch + BTc * latent_scratch_row(c);

    const int rope = c->pos == GPT_POS_ROPE;
    encoder_forward(a.encoded, inputs, w.wte, rope ? NULL : w.wpe, B, T, C);
    size_t i0C, i0att;
    dropout_offsets(m, T, &i0C, &i0att);
    dropout_forward(a.encoded, (size_t)N * C, p, site_key(m, L, 0), i0C);
    for (int l = 0; l < L; l++) {
        const float *residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTc * C;
        float *ln1 = a.ln1 + l * BTc * C, *ln1_mean = a.ln1_mean + l * BTc, *ln1_rstd = a.ln1_rstd + l * BTc;
        float *qkv = a.qkv + l * BTc * QKV, *att = a.att + l * (size_t)NH * m->acts_BTT;
        float *ckv = a.ckv + l * BTc * W, *latent = a.latent + l * BTc * r;
        float *latent_rstd = c->latent_norm ? a.latent_rstd + l * BTc : NULL;
        float *atty = a.atty + l * BTc * C, *residual2 = a.residual2 + l * BTc * C;
        float *ln2 = a.ln2 + l * BTc * C, *ln2_mean = a.ln2_mean + l * BTc, *ln2_rstd = a.ln2_rstd + l * BTc;
        float *fch = a.fch + l * BTc * 4 * C, *fch_gelu = a.fch_gelu + l * BTc * 4 * C;
        float *residual3 = a.residual3 + l * BTc * C;

        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, w.ln1w + l * C, c->bias ? w.ln1b + l * C : NULL, N, C);
        if (mla) {
            latent_qkv_forward(m, l, ln1, qkv, ckv, latent, latent_rstd, B, T, mla_scratch);
        } else {
            matmul_forward(qkv, ln1, w.qkvw + (size_t)l * QKV * C, c->bias ? w.qkvb + (size_t)l * QKV : NULL, N, C,
                           QKV);
            // rope: q and k rotated in place; the backward needs only the rotated ones
            if (rope) rope_rotate(qkv, B, T, 0, NH, NKV, HS, m->rope_cos, m->rope_sin, 0);
        }
        attention_forward(atty, att, qkv, B, T, NH, NKV, D, HS, p, site_key(m, l, 1), i0att, att_scratch);
        matmul_forward(tmp, atty, w.attprojw + (size_t)l * C * C, c->bias ? w.attprojb + l * C : NULL, N, C, C);
        dropout_forward(tmp, (size_t)N * C, p, site_key(m, l, 2), i0C);
        residual_forward(residual2, residual, tmp, (size_t)N * C);
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, w.ln2w + l * C, c->bias ? w.ln2b + l * C : NULL, N, C);
        matmul_forward(fch, ln2, w.fcw + (size_t)l * 4 * C * C, c->bias ? w.fcb + (size_t)l * 4 * C : NULL, N, C, 4 * C);
        gelu_forward_train(fch_gelu, fch, fch, (size_t)N * 4 * C);  // fch becomes gelu'(fch)
        matmul_forward(tmp, fch_gelu, w.fcprojw + (size_t)l * C * 4 * C, c->bias ? w.fcprojb + l * C : NULL, N, 4 * C, C);
        dropout_forward(tmp, (size_t)N * C, p, site_key(m, l, 3), i0C);
        residual_forward(residual3, residual2, tmp, (size_t)N * C);
    }
    const float *xL = a.residual3 + (size_t)(L - 1) * BTc * C;
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, xL, w.lnfw, c->bias ? w.lnfb : NULL, N, C);
    matmul_forward(a.logits, a.lnf, w.wte, NULL, N, C, V);  // tied LM head

    m->mean_loss = -1.0f;
    if (targets) {
        crossentropy_forward(a.probs, a.losses, a.logits, targets, N, V);
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += a.losses[i];  // ignored targets add 0
        m->mean_loss = counted ? (float)(sum / (double)counted) : 0.0f;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// backward

void gpt_zero_grad(GPT *m) {
    if (!m->grads_memory) {
        m->grads_memory = calloc_check(m->num_parameters, sizeof(float));
        gpt_point_params(&m->grads, m->grads_memory, m->param_sizes);
        return;
    }
    memset(m->grads_memory, 0, m->num_parameters * sizeof(float));
}

void gpt_backward(GPT *m) {
    CHECK(m->targets != NULL);  // needs a forward with targets
    if (!m->grads_memory) gpt_zero_grad(m);
    const GPTConfig *c = &m->config;
    const int L = c->n_layer, NH = c->n_head, NKV = c->n_kv_head, C = c->n_embd, V = c->vocab_size;
    const int B = m->B, T = m->T, HS = C / NH, D = gpt_qk_head_size(c), QKV = (int)gpt_qkv_width(c), N = B * T;
    const int mla = gpt_is_latent(c), r = c->kv_lora_rank, W = r + c->rope_head_dim;
    const size_t BTc = m->acts_BT, nC = (size_t)N * C, n4C = nC * 4;
    const float p = (m->training && c->dropout > 0.0f) ? c->dropout : 0.0f;
    size_t i0C, i0att;
    dropout_offsets(m, T, &i0C, &i0att);

    ParameterTensors w = m->params, g = m->grads;
    ActivationTensors a = m->acts;
    float *dresidual = m->scratch, *dC1 = dresidual + BTc * C, *dC2 = dC1 + BTc * C;
    float *d4C1 = dC2 + BTc * C, *d4C2 = d4C1 + BTc * 4 * C, *dqkv = d4C2 + BTc * 4 * C;
    float *mla_scratch = latent_scratch(m, BTc), *att_scratch = mla_scratch + BTc * latent_scratch_row(c);

    // loss = mean over the counted rows of -log p[target] (ignored rows: 0)
    float *dlogits = a.probs;  // in place
    crossentropy_backward(dlogits, a.probs, m->targets, m->n_counted ? 1.0f / (float)m->n_counted : 0.0f, N, V);
    // logits = lnf wte^T ; lnf = LNf(xL)
    matmul_backward(dC1, g.wte, NULL, dlogits, a.lnf, w.wte, N, C, V);
    memset(dresidual, 0, nC * sizeof(float));
    const float *xL = a.residual3 + (size_t)(L - 1) * BTc * C;
    layernorm_backward(dresidual, g.lnfw, c->bias ? g.lnfb : NULL, dC1, xL, w.lnfw, a.lnf_mean, a.lnf_rstd, N, C);

    for (int l = L - 1; l >= 0; l--) {
        const float *residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTc * C;
        const float *ln1 = a.ln1 + l * BTc * C, *ln1_mean = a.ln1_mean + l * BTc, *ln1_rstd = a.ln1_rstd + l * BTc;
        const float *qkv = a.qkv + l * BTc * QKV, *att = a.att + l * (size_t)NH * m->acts_BTT;
        const float *ckv = a.ckv + l * BTc * W, *latent = a.latent + l * BTc * r;
        const float *latent_rstd = c->latent_norm ? a.latent_rstd + l * BTc : NULL;
        const float *atty = a.atty + l * BTc * C, *residual2 = a.residual2 + l * BTc * C;
        const float *ln2 = a.ln2 + l * BTc * C, *ln2_mean = a.ln2_mean + l * BTc, *ln2_rstd = a.ln2_rstd + l * BTc;
        const float *fch = a.fch + l * BTc * 4 * C, *fch_gelu = a.fch_gelu + l * BTc * 4 * C;
        // dresidual holds d residual3 here.

        // residual3 = residual2 + drop(fch_gelu fcprojw^T + fcprojb)
        const float *dproj = dresidual;
        if (p > 0.0f) {
            memcpy(dC1, dresidual, nC * sizeof(float));
            dropout_backward(dC1, nC, p, site_key(m, l, 3), i0C);
            dproj = dC1;
        }
        matmul_backward(d4C1, g.fcprojw + (size_t)l * C * 4 * C, c->bias ? g.fcprojb + l * C : NULL, dproj, fch_gelu,
                        w.fcprojw + (size_t)l * C * 4 * C, N, 4 * C, C);
        // fch_gelu = gelu(fch), and the forward left gelu'(fch) in fch
        gelu_backward_local(d4C2, fch, d4C1, n4C);
        // fch = ln2 fcw^T + fcb
        matmul_backward(dC2, g.fcw + (size_t)l * 4 * C * C, c->bias ? g.fcb + (size_t)l * 4 * C : NULL, d4C2, ln2,
                        w.fcw + (size_t)l * 4 * C * C, N, C, 4 * C);
        // ln2 = LN2(residual2); dresidual becomes d residual2 (identity path + LN path)
        layernorm_backward(dresidual, g.ln2w + l * C, c->bias ? g.ln2b + l * C : NULL, dC2, residual2, w.ln2w + l * C,
                           ln2_mean, ln2_rstd, N, C);

        // residual2 = residual + drop(atty attprojw^T + attprojb)
        dproj = dresidual;
        if (p > 0.0f) {
            memcpy(dC1, dresidual, nC * sizeof(float));
            dropout_backward(dC1, nC, p, site_key(m, l, 2), i0C);
            dproj = dC1;
        }
        matmul_backward(dC2, g.attprojw + (size_t)l * C * C, c->bias ? g.attprojb + l * C : NULL, dproj, atty,
                        w.attprojw + (size_t)l * C * C, N, C, C);
        // atty = attention(qkv): dK, dV summed over each KV head's group
        memset(dqkv, 0, (size_t)N * QKV * sizeof(float));
        attention_backward(dqkv, dC2, qkv, att, B, T, NH, NKV, D, HS, p, site_key(m, l, 1), i0att, att_scratch);
        if (mla) {  // qkv = the latent projections of ln1 (dC2 is free again: scratch)
            latent_qkv_backward(m, l, ln1, ckv, latent, latent_rstd, dqkv, dC1, dC2, B, T, mla_scratch);
        } else {
            // rope: q = R_t q0, so dq0 = R_t^T dq, the inverse rotation (k likewise)
            if (c->pos == GPT_POS_ROPE) rope_rotate(dqkv, B, T, 0, NH, NKV, HS, m->rope_cos, m->rope_sin, 1);
            // qkv = ln1 qkvw^T + qkvb
            matmul_backward(dC1, g.qkvw + (size_t)l * QKV * C, c->bias ? g.qkvb + (size_t)l * QKV : NULL, dqkv, ln1,
                            w.qkvw + (size_t)l * QKV * C, N, C, QKV);
        }
        // ln1 = LN1(residual); dresidual becomes d residual
        layernorm_backward(dresidual, g.ln1w + l * C, c->bias ? g.ln1b + l * C : NULL, dC1, residual, w.ln1w + l * C,
                           ln1_mean, ln1_rstd, N, C);
    }
    // encoded = drop(wte[tok] + wpe[t]) (no wpe with rope)
    dropout_backward(dresidual, nC, p, site_key(m, L, 0), i0C);
    encoder_backward(g.wte, c->pos == GPT_POS_ROPE ? NULL : g.wpe, dresidual, m->inputs, B, T, C);
}

// ----------------------------------------------------------------------------
// training pass, optionally sharded over threads

// Make m->shards hold at least n - 1 replicas of m: same config, parameters
// borrowed (params_memory stays NULL, so gpt_free leaves them alone).
static int ensure_shards(GPT *m, int n) {
    if (m->n_shards >= n - 1) return 0;
    GPT *s = realloc(m->shards, (size_t)(n - 1) * sizeof *s);
    if (!s) {
        snprintf(m->error, sizeof m->error, "cannot allocate %d training shards", n);
        return -1;
    }
    m->shards = s;
    for (int i = m->n_shards; i < n - 1; i++) {
        GPT *r = &s[i];
        memset(r, 0, sizeof *r);
        r->config = m->config;
        memcpy(r->param_sizes, m->param_sizes, sizeof r->param_sizes);
        r->num_parameters = m->num_parameters;
        r->rope_cos = m->rope_cos, r->rope_sin = m->rope_sin;  // borrowed, as the parameters
        r->mean_loss = -1.0f;
    }
    m->n_shards = n - 1;
    return 0;
}

// The forward of (B, T) with targets and, with backward = 1, the gradient
// of its mean loss (overwritten): one shard's, or the whole unsharded pass.
static int one_pass(GPT *m, const int *inputs, const int *targets, int B, int T, int backward) {
    if (gpt_forward(m, inputs, targets, B, T) != 0) return -1;
    if (backward) {
        gpt_zero_grad(m);
        gpt_backward(m);
    }
    return 0;
}

// The forward (and with backward = 1 the backward) of (B, T) with targets,
// over `shards` threads: gpt_forward_backward and gpt_loss.
static int sharded_pass(GPT *m, const int *inputs, const int *targets, int B, int T, int shards, int backward) {
    enum { MAX_SHARDS = 64 };
    if (!targets) {
        snprintf(m->error, sizeof m->error, "a loss needs targets");
        return -1;
    }
    if (shards > B) shards = B;
    if (shards > MAX_SHARDS) shards = MAX_SHARDS;
    if (shards <= 1) return one_pass(m, inputs, targets, B, T, backward);
    // whole-batch checks first, so that messages name positions in the batch
    if (T <= 0 || (size_t)B * T > (size_t)INT_MAX / 4) {
        snprintf(m->error, sizeof m->error, "time T=%d must be positive and B*T=%zu not too large", T, (size_t)B * T);
        return -1;
    }
    if (gpt_validate_tokens(&m->config, inputs, (size_t)B * T, m->error, sizeof m->error) != 0) return -1;
    size_t counted;
    if (gpt_validate_targets(&m->config, targets, (size_t)B * T, &counted, m->error, sizeof m->error) != 0) return -1;
    if (ensure_shards(m, shards) != 0) return -1;

    // Shard s runs sequences [b0[s], b0[s+1]). Every shard starts from m's RNG
    // state, so each draws the dropout key m draws: the masks of one unsharded
    // pass. The kernels' own parallel regions nest inside, so they run on one
    // thread (and OpenBLAS's OpenMP build runs single-threaded in a region).
    int b0[MAX_SHARDS + 1], rc[MAX_SHARDS];
    for (int s = 0; s <= shards; s++) b0[s] = (int)((long)B * s / shards);
    const uint64_t rng_state = m->rng_state;
    const int base = m->batch_offset;  // where this batch starts in a larger one (MPI)
    omp_set_max_active_levels(1);
#pragma omp parallel for num_threads(shards) schedule(static, 1)
    for (int s = 0; s < shards; s++) {
        GPT *r = s == 0 ? m : &m->shards[s - 1];
        r->params = m->params;
        r->training = m->training;
        r->rng_state = rng_state;
        r->batch_offset = base + b0[s];
        rc[s] = one_pass(r, inputs + (size_t)b0[s] * T, targets + (size_t)b0[s] * T, b0[s + 1] - b0[s], T, backward);
    }
    for (int s = 0; s < shards; s++) {
        if (rc[s] != 0) {
            if (s > 0) memcpy(m->error, m->shards[s - 1].error, sizeof m->error);
            return -1;
        }
    }
    // each shard holds its own mean loss (and its gradient): weight by the
    // targets each counted (its rows, when none is ignored)
    float wgt[MAX_SHARDS];
    const float *gs[MAX_SHARDS];
    double loss = 0.0;
    for (int s = 0; s < shards; s++) {
        const GPT *r = s == 0 ? m : &m->shards[s - 1];
        wgt[s] = counted ? (float)((double)r->n_counted / (double)counted) : 0.0f;
        gs[s] = r->grads_memory;
        loss += (double)r->mean_loss * wgt[s];
    }
    m->mean_loss = (float)loss;
    m->n_counted = counted;
    if (!backward) return 0;
    float *g = m->grads_memory;
    const size_t np = m->num_parameters;
#pragma omp parallel
    {  // shard by shard, each a vector axpy; equal static splits: no barriers needed
#pragma omp for schedule(static) nowait
        for (size_t i = 0; i < np; i++) g[i] *= wgt[0];
        for (int s = 1; s < shards; s++) {
            const float *gr = gs[s], ws = wgt[s];
#pragma omp for schedule(static) nowait
            for (size_t i = 0; i < np; i++) g[i] += gr[i] * ws;
        }
    }
    return 0;
}

int gpt_forward_backward(GPT *m, const int *inputs, const int *targets, int B, int T, int shards) {
    return sharded_pass(m, inputs, targets, B, T, shards, 1);
}

int gpt_loss(GPT *m, const int *inputs, const int *targets, int B, int T, int shards) {
    return sharded_pass(m, inputs, targets, B, T, shards, 0);
}

int gpt_auto_shards(int B) {
    const int n = omp_get_max_threads();
    if (n <= 1 || openblas_get_parallel() != OPENBLAS_OPENMP) return 1;
    return B % n == 0 || B >= 4 * n ? n : 1;
}
