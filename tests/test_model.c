/*
 * test_model.c: the GPT against an independent reference and invariants.
 *
 * - PyTorch fixtures (scripts/ref_gpt.py, float64): logits, loss, every
 *   parameter gradient and 5 AdamW steps, for n_kv_head 4, 2, 1 (n_head 4)
 *   with biases and n_kv_head 2 without, learned positions; and n_kv_head
 *   4, 2, 1 with RoPE (no wpe), at the same tolerances.
 * - Central finite differences of the attention kernel (MHA, GQA, MQA, with
 *   and without attention dropout, and through the RoPE rotation) and of the
 *   whole model with dropout (learned positions and rope).
 * - RoPE: the rotate-half convention and tables against the formula, and
 *   scores unchanged when every position shifts by a constant.
 * - GQA equals the MHA model made by repeating each KV head for its group.
 * - Bad configs, tokens and lengths are rejected with the expected message.
 */
#include <omp.h>
#include <string.h>

#include "../bench/bench.h"
#include "../model/attention.h"
#include "../model/gemm.h"
#include "../model/convert.h"
#include "../model/kvcache.h"
#include "../model/ops.h"
#include "../model/gpt.h"
#include "../model/rope.h"
#include "../train/adamw.h"
#include "../util/team.h"
#include "../util/util.h"
#include "testutil.h"

// ----------------------------------------------------------------------------
// PyTorch fixtures (format in scripts/ref_gpt.py)

typedef struct {
    GPTConfig c;
    int B, T, steps;
    float lr, beta1, beta2, eps, weight_decay;
    size_t P;
    float *params, *logits, *grads, *step_losses, loss;
    int *inputs, *targets;
} Fixture;

static void fixture_load(Fixture *fx, const char *path) {
    FILE *f = fopen_check(path, "rb");
    char magic[4];
    unsigned version;
    int h[10];
    float hp[5];
    fread_check(magic, 1, 4, f);
    fread_check(&version, 4, 1, f);
    ck_assert_msg(memcmp(magic, "GQAF", 4) == 0 && version >= 1 && version <= 3, "%s: not a fixture", path);
    fread_check(h, 4, 10, f);
    fread_check(hp, 4, 5, f);
    fx->c = (GPTConfig){.vocab_size = h[0], .block_size = h[1], .n_layer = h[2], .n_head = h[3],
                        .n_kv_head = h[4], .n_embd = h[5], .bias = h[6], .dropout = 0.0f,
                        .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    if (version >= 2) {  // the position scheme (version 1: learned)
        fread_check(&fx->c.pos, 4, 1, f);
        fread_check(&fx->c.rope_theta, 4, 1, f);
    }
    if (version >= 3) {  // the attention kind (before: grouped)
        fread_check(&fx->c.kv_lora_rank, 4, 1, f);
        fread_check(&fx->c.rope_head_dim, 4, 1, f);
        fread_check(&fx->c.latent_norm, 4, 1, f);
    }
    fx->B = h[7], fx->T = h[8], fx->steps = h[9];
    fx->lr = hp[0], fx->beta1 = hp[1], fx->beta2 = hp[2], fx->eps = hp[3], fx->weight_decay = hp[4];
    fx->P = gpt_num_parameters(&fx->c);
    size_t BT = (size_t)fx->B * fx->T, V = fx->c.vocab_size;
    fx->params = malloc_check(fx->P * 4);
    fx->grads = malloc_check(fx->P * 4);
    fx->logits = malloc_check(BT * V * 4);
    fx->inputs = malloc_check(BT * 4);
    fx->targets = malloc_check(BT * 4);
    fx->step_losses = malloc_check((size_t)(fx->steps + 1) * 4);
    fread_check(fx->params, 4, fx->P, f);
    fread_check(fx->inputs, 4, BT, f);
    fread_check(fx->targets, 4, BT, f);
    fread_check(fx->logits, 4, BT * V, f);
    fread_check(&fx->loss, 4, 1, f);
    fread_check(fx->grads, 4, fx->P, f);
    fread_check(fx->step_losses, 4, (size_t)fx->steps + 1, f);
    ck_assert_msg(fgetc(f) == EOF, "%s: trailing bytes (parameter layout differs?)", path);
    fclose(f);
}

static void fixture_free(Fixture *fx) {
    free(fx->params), free(fx->grads), free(fx->logits), free(fx->inputs), free(fx->targets), free(fx->step_losses);
}

static const char *fixture_paths[] = {"tests/fixtures/gpt_nkv4.bin",      "tests/fixtures/gpt_nkv2.bin",
                                      "tests/fixtures/gpt_nkv1.bin",      "tests/fixtures/gpt_nkv2_nobias.bin",
                                      "tests/fixtures/gpt_rope_nkv4.bin", "tests/fixtures/gpt_rope_nkv2.bin",
                                      "tests/fixtures/gpt_rope_nkv1.bin", "tests/fixtures/gpt_mla_r8.bin",
                                      "tests/fixtures/gpt_mla_r64_nonorm.bin", "tests/fixtures/gpt_mla_rope.bin"};
#define N_FIXTURES (int)(sizeof fixture_paths / sizeof fixture_paths[0])

// Tolerances against the float64 reference. Measured float32 errors: logits
// <= 2e-6, loss rel <= 1e-7, gradients <= 1.5e-7 (max abs): ~5-10x headroom.
// AdamW divides by sqrt(v), so gradients near zero make float32 round-off
// into full-size steps; the 5-step losses drift up to 1.6e-5 relative.
#define TOL_LOGITS 1e-5
#define TOL_LOSS_REL 1e-6
#define TOL_GRAD 1e-6
#define TOL_STEP_LOSS_REL 1e-4

START_TEST(test_pytorch_forward_backward) {
    Fixture fx;
    fixture_load(&fx, fixture_paths[_i]);
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &fx.c, 0), 0);
    ck_assert_uint_eq(m.num_parameters, fx.P);
    memcpy(m.params_memory, fx.params, fx.P * 4);
    ck_assert_int_eq(gpt_forward(&m, fx.inputs, fx.targets, fx.B, fx.T), 0);
    size_t n_logits = (size_t)fx.B * fx.T * fx.c.vocab_size;
    ck_assert_tensor_close("logits", m.acts.logits, fx.logits, n_logits, TOL_LOGITS);
    ck_assert_msg(fabsf(m.mean_loss - fx.loss) <= TOL_LOSS_REL * fx.loss, "loss %.7f, want %.7f", m.mean_loss,
                  fx.loss);
    gpt_zero_grad(&m);
    gpt_backward(&m);
    size_t off = 0;
    double worst_grad = 0;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s grad (n_kv_head %d)", gpt_param_names[i], fx.c.n_kv_head);
        ck_assert_tensor_close(name, m.grads_memory + off, fx.grads + off, m.param_sizes[i], TOL_GRAD);
        Diff d = diff_tensors(m.grads_memory + off, fx.grads + off, m.param_sizes[i]);
        if (d.max_abs > worst_grad) worst_grad = d.max_abs;
        off += m.param_sizes[i];
    }
    ck_assert_int_eq(fx.c.pos == GPT_POS_ROPE, strstr(fixture_paths[_i], "rope") != NULL);
    printf("%s: logits max abs err %.2g, loss rel err %.2g, worst gradient max abs err %.2g\n", fixture_paths[_i],
           diff_tensors(m.acts.logits, fx.logits, n_logits).max_abs, fabs(m.mean_loss - fx.loss) / fx.loss,
           worst_grad);
    gpt_free(&m);
    fixture_free(&fx);
}
END_TEST

START_TEST(test_pytorch_adamw_steps) {
    Fixture fx;
    fixture_load(&fx, fixture_paths[_i]);
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &fx.c, 0), 0);
    memcpy(m.params_memory, fx.params, fx.P * 4);
    AdamW opt;
    adamw_init(&opt, m.num_parameters, fx.beta1, fx.beta2, fx.eps, fx.weight_decay);
    double worst = 0;
    for (int s = 0; s <= fx.steps; s++) {
        ck_assert_int_eq(gpt_forward(&m, fx.inputs, fx.targets, fx.B, fx.T), 0);
        float want = fx.step_losses[s];
        if (fabs(m.mean_loss - want) / want > worst) worst = fabs(m.mean_loss - want) / want;
        ck_assert_msg(fabsf(m.mean_loss - want) <= TOL_STEP_LOSS_REL * want, "step %d: loss %.7f, want %.7f", s,
                      m.mean_loss, want);
        gpt_zero_grad(&m);
        gpt_backward(&m);
        adamw_step(&opt, &m, fx.lr);
    }
    printf("%s: %d AdamW steps, worst loss rel err %.2g\n", fixture_paths[_i], fx.steps, worst);
    adamw_free(&opt);
    gpt_free(&m);
    fixture_free(&fx);
}
END_TEST

// ----------------------------------------------------------------------------
// finite differences of the attention kernel

// One finite-difference check of the attention kernel: its shape, random qkv
// and dout, the forward's buffers, and the analytic gradient dqkv.
typedef struct {
    int B, T, NH, NKV, HS;
    float p;
    size_t nqkv;
    float *qkv, *dqkv, *dout, *out, *att, *scratch;
    // with rope: q and k rotated (tables (T, HS/2)) into rot before the kernel
    float *rope_cos, *rope_sin, *rot;
} AttnFD;

// f(qkv) = sum(out * dout), accumulated in double so that round-off stays
// ~1e-6: with h = 1e-2 the central difference then has error ~1e-4 from
// round-off and O(h^2) ~ 1e-4 from truncation, hence the tolerance of 1e-3.
static double attn_objective(AttnFD *f) {
    const float *in = f->qkv;
    if (f->rot) {  // as gpt_forward: rotate the projection, then attend
        memcpy(f->rot, f->qkv, f->nqkv * 4);
        rope_rotate(f->rot, f->B, f->T, 0, f->NH, f->NKV, f->HS, f->rope_cos, f->rope_sin, 0);
        in = f->rot;
    }
    attention_forward(f->out, f->att, in, f->B, f->T, f->NH, f->NKV, f->HS, f->HS, f->p, 1234, 0, f->scratch);
    double sum = 0;
    for (size_t i = 0; i < (size_t)f->B * f->T * f->NH * f->HS; i++) sum += (double)f->out[i] * f->dout[i];
    return sum;
}

// Central difference of attn_objective in qkv[i] (restored afterwards).
static double attn_numeric_grad(AttnFD *f, size_t i) {
    const float h = 1e-2f, x = f->qkv[i];
    f->qkv[i] = x + h;
    double fp = attn_objective(f);
    f->qkv[i] = x - h;
    double fm = attn_objective(f);
    f->qkv[i] = x;
    return (fp - fm) / (2.0 * ((double)(x + h) - (double)x));
}

// Allocate, draw qkv and dout from *rng, run the forward and the backward
// (with rope_theta > 0, through the rotation as gpt_forward/gpt_backward).
static void attn_fd_init(AttnFD *f, int B, int T, int NH, int NKV, int HS, float p, double rope_theta,
                         uint64_t *rng) {
    *f = (AttnFD){.B = B, .T = T, .NH = NH, .NKV = NKV, .HS = HS, .p = p};
    f->nqkv = (size_t)B * T * (NH + 2 * NKV) * HS;
    const size_t nout = (size_t)B * T * NH * HS;
    f->qkv = malloc_check(f->nqkv * 4), f->dqkv = calloc_check(f->nqkv, 4), f->dout = malloc_check(nout * 4);
    f->out = malloc_check(nout * 4), f->att = malloc_check((size_t)B * NH * T * T * 4);
    f->scratch = malloc_check(attention_scratch_floats(T, HS, omp_get_max_threads()) * 4);
    fill_normal(f->qkv, f->nqkv, 1.0f, rng);
    fill_normal(f->dout, nout, 1.0f, rng);
    if (rope_theta > 0) {
        f->rope_cos = malloc_check((size_t)T * HS / 2 * 4), f->rope_sin = malloc_check((size_t)T * HS / 2 * 4);
        f->rot = malloc_check(f->nqkv * 4);
        rope_tables(f->rope_cos, f->rope_sin, T, HS, rope_theta);
    }
    attn_objective(f);
    attention_backward(f->dqkv, f->dout, f->rot ? f->rot : f->qkv, f->att, B, T, NH, NKV, HS, HS, p, 1234, 0, f->scratch);
    if (f->rot) rope_rotate(f->dqkv, B, T, 0, NH, NKV, HS, f->rope_cos, f->rope_sin, 1);
}

static void attn_fd_free(AttnFD *f) {
    free(f->qkv), free(f->dqkv), free(f->dout), free(f->out), free(f->att), free(f->scratch);
    free(f->rope_cos), free(f->rope_sin), free(f->rot);
}

static const int fd_nkv[] = {4, 2, 1};

START_TEST(test_attention_finite_differences) {
    const int NKV = fd_nkv[_i % 3];
    const float p = _i < 3 ? 0.0f : 0.25f;
    uint64_t rng = 42 + _i;
    AttnFD f;
    attn_fd_init(&f, 2, 5, 4, NKV, 3, p, 0.0, &rng);
    for (size_t i = 0; i < f.nqkv; i++) {
        double num = attn_numeric_grad(&f, i);
        double err = fabs(num - f.dqkv[i]);
        ck_assert_msg(err <= 1e-3, "n_kv_head %d p %.2f: d qkv[%zu] analytic %.6f, numeric %.6f", NKV, p, i,
                      f.dqkv[i], num);
    }
    // the gradient must be non-trivial for the test to mean anything
    double norm = 0;
    for (size_t i = 0; i < f.nqkv; i++) norm += (double)f.dqkv[i] * f.dqkv[i];
    ck_assert(norm > 1.0);
    attn_fd_free(&f);
}
END_TEST

// A context of several causal row blocks (150 = 9 x 16 + 6 rows, each block
// multiplied with the keys up to its end only): finite differences of 200
// sampled qkv entries (queries, keys and values of early and late positions),
// GQA, without and with attention dropout.
START_TEST(test_attention_row_blocks_finite_differences) {
    const int T = 150, NH = 4, NKV = 2, HS = 4, QKV = (NH + 2 * NKV) * HS;
    const float p = _i ? 0.2f : 0.0f;
    uint64_t rng = 77 + _i;
    AttnFD f;
    attn_fd_init(&f, 1, T, NH, NKV, HS, p, 0.0, &rng);
    double worst = 0;
    for (int s = 0; s < 200; s++) {
        const size_t i = (size_t)(rng_u64(&rng) % f.nqkv);
        double num = attn_numeric_grad(&f, i);
        double err = fabs(num - f.dqkv[i]);
        worst = err > worst ? err : worst;
        ck_assert_msg(err <= 2e-3, "T %d p %.2f: d qkv[%zu] (t %zu) analytic %.6f, numeric %.6f", T, p, i, i / QKV,
                      f.dqkv[i], num);
    }
    printf("attention row blocks, T %d, dropout %.1f: worst finite-difference error %.1e of 200 entries\n", T, p, worst);
    attn_fd_free(&f);
}
END_TEST

// Attention with RoPE (q and k rotated first, the gradient inverse-rotated
// after the kernel's backward): MHA, GQA, MQA, without and with dropout.
// T = 9 positions and a small theta (100), so every pair of HS = 6 turns by
// a sizeable angle; two theta = 10000 cases as the default.
START_TEST(test_attention_rope_finite_differences) {
    const int NKV = fd_nkv[_i % 3];
    const float p = _i >= 3 && _i < 6 ? 0.25f : 0.0f;
    const double theta = _i < 6 ? 100.0 : 10000.0;
    uint64_t rng = 142 + _i;
    AttnFD f;
    attn_fd_init(&f, 2, 9, 4, NKV, 6, p, theta, &rng);
    double worst = 0;
    for (size_t i = 0; i < f.nqkv; i++) {
        double num = attn_numeric_grad(&f, i);
        double err = fabs(num - f.dqkv[i]);
        worst = err > worst ? err : worst;
        ck_assert_msg(err <= 1e-3, "rope theta %g n_kv_head %d p %.2f: d qkv[%zu] analytic %.6f, numeric %.6f", theta,
                      NKV, p, i, f.dqkv[i], num);
    }
    double norm = 0;
    for (size_t i = 0; i < f.nqkv; i++) norm += (double)f.dqkv[i] * f.dqkv[i];
    ck_assert(norm > 1.0);
    printf("attention with rope (theta %g), n_kv_head %d, dropout %.2f: worst finite-difference error %.1e\n", theta,
           NKV, p, worst);
    attn_fd_free(&f);
}
END_TEST

// ----------------------------------------------------------------------------
// RoPE: the convention, the tables, and the relative-position property

START_TEST(test_rope_convention) {
    enum { T = 50, HS = 10, H = HS / 2 };
    const double theta = 10000.0;
    float cos_t[T * H], sin_t[T * H];
    rope_tables(cos_t, sin_t, T, HS, theta);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < H; i++) {  // t * theta^(-2i/HS), rounded once to float
            const double a = t * pow(theta, -2.0 * i / HS);
            ck_assert_float_eq(cos_t[t * H + i], (float)cos(a));
            ck_assert_float_eq(sin_t[t * H + i], (float)sin(a));
        }
    // one row of 2 query heads, 1 key head, 1 value head; position pos0 = 37
    const int NH = 2, NKV = 1, QKV = (NH + 2 * NKV) * HS, t = 37;
    float x[40], y[40];
    uint64_t rng = 5;
    fill_normal(x, QKV, 1.0f, &rng);
    memcpy(y, x, sizeof x);
    rope_rotate(y, 1, 1, t, NH, NKV, HS, cos_t, sin_t, 0);
    for (int h = 0; h < NH + NKV; h++)  // q and k heads: pair (i, i + HS/2) turned by t theta^(-2i/HS)
        for (int i = 0; i < H; i++) {
            const double a = t * pow(theta, -2.0 * i / HS), x1 = x[h * HS + i], x2 = x[h * HS + H + i];
            ck_assert_double_eq_tol(y[h * HS + i], x1 * cos(a) - x2 * sin(a), 1e-6);
            ck_assert_double_eq_tol(y[h * HS + H + i], x2 * cos(a) + x1 * sin(a), 1e-6);
        }
    ck_assert_mem_eq(y + (NH + NKV) * HS, x + (NH + NKV) * HS, HS * sizeof(float));  // values untouched
    // the unit vector e_0 at position t: cos t e_0 + sin t e_{HS/2} (frequency 1)
    float e[40] = {0};
    e[0] = 1.0f;
    rope_rotate(e, 1, 1, t, NH, NKV, HS, cos_t, sin_t, 0);
    ck_assert_float_eq(e[0], (float)cos(37.0));
    ck_assert_float_eq(e[H], (float)sin(37.0));
    // the inverse undoes it (to rounding) and position 0 is the identity
    rope_rotate(y, 1, 1, t, NH, NKV, HS, cos_t, sin_t, 1);
    ck_assert_tensor_close("inverse rotation", y, x, QKV, 1e-6);
    memcpy(y, x, sizeof x);
    rope_rotate(y, 1, 1, 0, NH, NKV, HS, cos_t, sin_t, 0);
    ck_assert_mem_eq(y, x, QKV * sizeof(float));
}
END_TEST

// Shifting every position by s leaves every score q_t . k_j unchanged: a
// rotary model sees relative positions only. GQA rows (4 query heads, 2 KV
// heads of 16), 12 positions, shifted by up to block_size - 12 = 4084.
START_TEST(test_rope_shift_invariance) {
    enum { maxT = 4096, T = 12, NH = 4, NKV = 2, HS = 16, QKV = (NH + 2 * NKV) * HS };
    float *cos_t = malloc_check((size_t)maxT * HS / 2 * 4), *sin_t = malloc_check((size_t)maxT * HS / 2 * 4);
    rope_tables(cos_t, sin_t, maxT, HS, GPT_ROPE_THETA_DEFAULT);
    static float x[T * QKV], a[T * QKV], b[T * QKV];
    uint64_t rng = 17;
    fill_normal(x, T * QKV, 1.0f, &rng);
    const int shifts[] = {1, 5, 100, 1000, maxT - T};
    double worst = 0, worst_rel = 0;
    memcpy(a, x, sizeof x);
    rope_rotate(a, 1, T, 0, NH, NKV, HS, cos_t, sin_t, 0);
    for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) {
        memcpy(b, x, sizeof x);
        rope_rotate(b, 1, T, shifts[k], NH, NKV, HS, cos_t, sin_t, 0);
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++)
                for (int j = 0; j < T; j++) {  // query head h at t, its KV head h / 2 at j
                    const float *qa = a + t * QKV + h * HS, *ka = a + j * QKV + (NH + h / 2) * HS;
                    const float *qb = b + t * QKV + h * HS, *kb = b + j * QKV + (NH + h / 2) * HS;
                    double sa = 0, sb = 0, nq = 0, nk = 0;
                    for (int d = 0; d < HS; d++)
                        sa += (double)qa[d] * ka[d], sb += (double)qb[d] * kb[d], nq += (double)qa[d] * qa[d],
                            nk += (double)ka[d] * ka[d];
                    const double e = fabs(sa - sb), rel = e / sqrt(nq * nk);
                    worst = e > worst ? e : worst, worst_rel = rel > worst_rel ? rel : worst_rel;
                    // float tables and rotations: each number within a few ulps
                    ck_assert_msg(rel <= 1e-6, "shift %d, head %d, t %d, j %d: score %.7f vs %.7f", shifts[k], h, t,
                                  j, sa, sb);
                }
    }
    printf("rope: shifting all positions by up to %d changes scores by at most %.2g (%.2g of |q| |k|)\n",
           maxT - T, worst, worst_rel);
    // the scores do depend on the relative position: shifting the keys alone moves them
    memcpy(b, x, sizeof x);
    rope_rotate(b, 1, T, 3, NH, NKV, HS, cos_t, sin_t, 0);
    double moved = 0;
    for (int d = 0; d < HS; d++) moved += (double)a[QKV + d] * a[NH * HS + d] - (double)a[QKV + d] * b[NH * HS + d];
    ck_assert_msg(fabs(moved) > 1e-2, "score of q_1 . k_0 vs q_1 . k_3: difference %.3g", moved);
    free(cos_t), free(sin_t);
}
END_TEST

// ----------------------------------------------------------------------------
// finite differences of the whole model, with dropout on

static void randomize_params(GPT *m, uint64_t seed, float std) {
    uint64_t rng = seed;
    float *p = m->params_memory;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        int ln_weight = (i == PARAM_LN1W || i == PARAM_LN2W || i == PARAM_LNFW || i == PARAM_KVNW);
        for (size_t j = 0; j < m->param_sizes[i]; j++) p[j] = (ln_weight ? 1.0f : 0.0f) + std * rng_normal(&rng);
        p += m->param_sizes[i];
    }
}

// _i: 0 learned, 1 rope with GQA, 2 rope with MQA; MLA: 3 learned with the
// latent norm, 4 rope (decoupled part of 4) with the norm, 5 learned without
// the norm and biases. Odd _i ignore every third target (GPT_IGNORE).
START_TEST(test_model_finite_differences_dropout) {
    GPTConfig c = {.vocab_size = 11, .block_size = 6, .n_layer = 2, .n_head = 4, .n_kv_head = _i == 2 ? 1 : 2,
                   .n_embd = 16, .bias = 1, .dropout = 0.2f, .pos = _i == 1 || _i == 2 ? GPT_POS_ROPE : GPT_POS_LEARNED,
                   .rope_theta = 100.0f};
    if (_i >= 3) {
        c.n_kv_head = c.n_head, c.kv_lora_rank = 6, c.latent_norm = _i != 5, c.bias = _i != 5;
        if (_i == 4) c.pos = GPT_POS_ROPE, c.rope_head_dim = 4;
    }
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 7), 0);
    randomize_params(&m, 8, 0.3f);
    m.training = 1;
    const int B = 2, T = 6;
    int inputs[12], targets[12];
    for (int i = 0; i < B * T; i++) inputs[i] = (i * 7 + 3) % 11, targets[i] = (i * 5 + 1) % 11;
    if (_i % 2 == 1)
        for (int i = 0; i < B * T; i += 3) targets[i] = GPT_IGNORE;
    const uint64_t rng0 = m.rng_state;
    ck_assert_int_eq(gpt_forward(&m, inputs, targets, B, T), 0);
    gpt_zero_grad(&m);
    gpt_backward(&m);
    // probe a few entries of every tensor; the masks repeat because the
    // dropout RNG is rewound before each forward
    uint64_t pick = 99;
    size_t off = 0;
    const float h = 1e-2f;
    for (int t = 0; t < GPT_NUM_PARAM_TENSORS; t++) {
        for (int k = 0; k < 6 && m.param_sizes[t] > 0; k++) {  // (rope: wpe is empty)
            size_t i = off + rng_u64(&pick) % m.param_sizes[t];
            float x = m.params_memory[i];
            m.params_memory[i] = x + h;
            m.rng_state = rng0;
            gpt_forward(&m, inputs, targets, B, T);
            double fp = m.mean_loss;
            m.params_memory[i] = x - h;
            m.rng_state = rng0;
            gpt_forward(&m, inputs, targets, B, T);
            double fm = m.mean_loss;
            m.params_memory[i] = x;
            double num = (fp - fm) / (2.0 * h), ana = m.grads_memory[i];
            // float32 loss: round-off ~3e-6 / 2h = 1.5e-4, plus O(h^2) curvature
            ck_assert_msg(fabs(num - ana) <= 5e-4 + 2e-2 * fabs(ana),
                          "pos %s, kv_lora_rank %d: %s[%zu]: analytic %.6f, numeric %.6f", gpt_pos_names[c.pos],
                          c.kv_lora_rank, gpt_param_names[t], i - off, ana, num);
        }
        off += m.param_sizes[t];
    }
    gpt_free(&m);
}
END_TEST

// Ignored targets: the mean loss is over the others (against the per-row
// losses of the pass without ignores), and with all ignored it is 0 with a
// zero gradient.
START_TEST(test_ignored_targets) {
    GPTConfig c = {.vocab_size = 13, .block_size = 8, .n_layer = 1, .n_head = 2, .n_kv_head = 1, .n_embd = 8,
                   .bias = 1};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 5), 0);
    enum { B = 2, T = 8 };
    int in[B * T], tg[B * T], some[B * T], none[B * T];
    for (int i = 0; i < B * T; i++) {
        in[i] = (i * 5 + 2) % 13, tg[i] = (i * 3 + 1) % 13;
        some[i] = i % 4 == 1 || i == 14 ? tg[i] : GPT_IGNORE, none[i] = GPT_IGNORE;
    }
    ck_assert_int_eq(gpt_forward(&m, in, tg, B, T), 0);
    ck_assert_uint_eq(m.n_counted, B * T);
    double want = 0.0;
    for (int i = 0; i < B * T; i++) want += some[i] != GPT_IGNORE ? m.acts.losses[i] / 5.0 : 0.0;
    ck_assert_int_eq(gpt_forward(&m, in, some, B, T), 0);
    ck_assert_uint_eq(m.n_counted, 5);
    ck_assert_msg(fabs(m.mean_loss - want) <= 1e-6 * want, "loss %.7f, want %.7f", m.mean_loss, want);
    ck_assert_int_eq(gpt_forward_backward(&m, in, none, B, T, 2), 0);
    ck_assert_uint_eq(m.n_counted, 0);
    ck_assert_float_eq(m.mean_loss, 0.0f);
    for (size_t i = 0; i < m.num_parameters; i++) ck_assert_float_eq(m.grads_memory[i], 0.0f);
    none[3] = -2;  // only -1 means ignored
    ck_assert_int_eq(gpt_forward(&m, in, none, B, T), -1);
    ck_assert_str_eq(m.error, "target token id -2 at position 3 is out of range [0, vocab_size=13)");
    gpt_free(&m);
}
END_TEST

START_TEST(test_dropout_only_in_training) {
    GPTConfig c = {.vocab_size = 13, .block_size = 8, .n_layer = 1, .n_head = 2, .n_kv_head = 1, .n_embd = 8,
                   .bias = 0, .dropout = 0.5f};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    int tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    gpt_forward(&m, tok, tok, 1, 8);
    float eval1 = m.mean_loss;
    gpt_forward(&m, tok, tok, 1, 8);
    ck_assert_float_eq(eval1, m.mean_loss);  // eval: no dropout, same result
    m.training = 1;
    gpt_forward(&m, tok, tok, 1, 8);
    float train1 = m.mean_loss;
    gpt_forward(&m, tok, tok, 1, 8);
    ck_assert(train1 != eval1 && m.mean_loss != train1);  // fresh masks every step
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// invariant: a training pass sharded over threads == one pass over the batch

static const int shard_counts[] = {2, 3, 5, 8, 3, 2};  // 8 > B: clamped to 5; then rope, then MLA with rope

START_TEST(test_sharded_pass_equals_one_pass) {
    const int shards = shard_counts[_i];
    // T = 70 crosses a causal row block; dropout on, so every mask must match
    GPTConfig c = {.vocab_size = 11, .block_size = 70, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 16,
                   .bias = 1, .dropout = 0.2f, .pos = _i == 4 ? GPT_POS_ROPE : GPT_POS_LEARNED,
                   .rope_theta = GPT_ROPE_THETA_DEFAULT};
    if (_i == 5) c.pos = GPT_POS_ROPE, c.n_kv_head = 4, c.kv_lora_rank = 8, c.rope_head_dim = 2, c.latent_norm = 1;
    GPT one, sh;
    ck_assert_int_eq(gpt_init(&one, &c, 3), 0);
    ck_assert_int_eq(gpt_init(&sh, &c, 3), 0);
    randomize_params(&one, 4, 0.2f);
    randomize_params(&sh, 4, 0.2f);
    one.training = sh.training = 1;
    enum { B = 5, T = 70 };
    int in[B * T], tg[B * T];
    uint64_t rng = 9;
    for (int step = 0; step < 2; step++) {  // the second step reuses the shards
        for (int i = 0; i < B * T; i++) in[i] = (int)(rng_u64(&rng) % 11), tg[i] = (int)(rng_u64(&rng) % 11);
        // the first step ignores targets unevenly: all but 3 of sequence 1, a third of the rest
        for (int i = 0; i < B * T && step == 0; i++)
            if ((i / T == 1 && i % T > 2) || rng_u64(&rng) % 3 == 0) tg[i] = GPT_IGNORE;
        ck_assert_int_eq(gpt_forward_backward(&one, in, tg, B, T, 1), 0);
        ck_assert_int_eq(gpt_forward_backward(&sh, in, tg, B, T, shards), 0);
        ck_assert_uint_eq(one.rng_state, sh.rng_state);  // one dropout key drawn per pass
        ck_assert_msg(fabsf(one.mean_loss - sh.mean_loss) <= 1e-5f * fabsf(one.mean_loss), "loss %.7f vs %.7f",
                      one.mean_loss, sh.mean_loss);
        double worst = 0.0, gmax = 0.0;
        size_t at = 0;
        for (size_t i = 0; i < one.num_parameters; i++) {
            double d = fabs((double)one.grads_memory[i] - sh.grads_memory[i]);
            if (d > worst) worst = d, at = i;
            if (fabs(one.grads_memory[i]) > gmax) gmax = fabs(one.grads_memory[i]);
        }
        ck_assert_msg(gmax > 1e-3 && worst <= 1e-5 * gmax,
                      "step %d, %d shards: gradient %zu differs by %.3g (max |g| %.3g)", step, shards, at, worst, gmax);
        // a step of SGD, so the next pass sees new weights
        for (size_t i = 0; i < one.num_parameters; i++) {
            one.params_memory[i] -= 0.1f * one.grads_memory[i];
            sh.params_memory[i] -= 0.1f * one.grads_memory[i];
        }
    }
    // a batch split over processes (MPI): the tail at its batch_offset, itself
    // sharded, draws the whole batch's masks, so head + tail = one pass
    const uint64_t st = one.rng_state;
    ck_assert_int_eq(gpt_loss(&one, in, tg, B, T, 1), 0);  // training: dropout on
    const double full = one.mean_loss;
    sh.rng_state = st;
    ck_assert_int_eq(gpt_loss(&sh, in, tg, 2, T, 1), 0);
    double parts = 2.0 * sh.mean_loss;
    sh.rng_state = st;
    sh.batch_offset = 2;
    ck_assert_int_eq(gpt_loss(&sh, in + 2 * T, tg + 2 * T, 3, T, shards), 0);
    ck_assert_int_eq(sh.batch_offset, 2);
    sh.batch_offset = 0;
    parts += 3.0 * sh.mean_loss;
    ck_assert_msg(fabs(full - parts / B) <= 1e-5 * full, "split batch: %.7f vs %.7f", full, parts / B);
    // evaluation: the forward alone, sharded, gives the one-pass loss
    one.training = sh.training = 0;
    ck_assert_int_eq(gpt_loss(&one, in, tg, B, T, 1), 0);
    ck_assert_int_eq(gpt_loss(&sh, in, tg, B, T, shards), 0);
    ck_assert_msg(fabsf(one.mean_loss - sh.mean_loss) <= 1e-5f * fabsf(one.mean_loss), "eval loss %.7f vs %.7f",
                  one.mean_loss, sh.mean_loss);
    // errors name positions in the whole batch
    in[4 * T + 3] = 11;
    ck_assert_int_eq(gpt_forward_backward(&sh, in, tg, B, T, shards), -1);
    ck_assert_str_eq(sh.error, "token id 11 at position 283 is out of range [0, vocab_size=11)");
    in[4 * T + 3] = 0;
    tg[3 * T] = -2;
    ck_assert_int_eq(gpt_forward_backward(&sh, in, tg, B, T, shards), -1);
    ck_assert_str_eq(sh.error, "target token id -2 at position 210 is out of range [0, vocab_size=11)");
    ck_assert_int_eq(gpt_forward_backward(&sh, in, NULL, B, T, shards), -1);
    ck_assert_str_eq(sh.error, "a loss needs targets");
    gpt_free(&one);
    gpt_free(&sh);
}
END_TEST

// ----------------------------------------------------------------------------
// invariant: GQA == MHA with each KV head repeated over its group

// Expand a GQA model's K/V projection rows (and biases) to one per query head.
static void expand_kv_heads(GPT *mha, const GPT *gqa) {
    const GPTConfig *c = &gqa->config;
    const int L = c->n_layer, NH = c->n_head, NKV = c->n_kv_head, C = c->n_embd, HS = C / NH, group = NH / NKV;
    const int QKVg = (NH + 2 * NKV) * HS, QKVm = 3 * NH * HS;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        if (i == PARAM_QKVW || i == PARAM_QKVB) continue;
        float *dst = mha->params_memory, *src = gqa->params_memory;
        for (int j = 0; j < i; j++) dst += mha->param_sizes[j], src += gqa->param_sizes[j];
        memcpy(dst, src, gqa->param_sizes[i] * 4);
    }
    for (int l = 0; l < L; l++) {
        for (int row = 0; row < QKVm; row++) {
            int src_row;
            if (row < NH * HS) src_row = row;  // q rows unchanged
            else {
                int part = (row - NH * HS) / (NH * HS);  // 0: k, 1: v
                int within = (row - NH * HS) % (NH * HS), h = within / HS, d = within % HS;
                src_row = NH * HS + part * NKV * HS + (h / group) * HS + d;
            }
            memcpy(mha->params.qkvw + ((size_t)l * QKVm + row) * C, gqa->params.qkvw + ((size_t)l * QKVg + src_row) * C,
                   C * 4);
            if (c->bias) mha->params.qkvb[l * QKVm + row] = gqa->params.qkvb[l * QKVg + src_row];
        }
    }
}

// _i: 2 or 1 KV heads, with learned positions (_i < 2) or rope
START_TEST(test_gqa_equals_expanded_mha) {
    const int nkv = _i % 2 == 0 ? 2 : 1;
    GPTConfig cg = {.vocab_size = 17, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = nkv, .n_embd = 32,
                    .bias = 1, .dropout = 0.0f, .pos = _i < 2 ? GPT_POS_LEARNED : GPT_POS_ROPE,
                    .rope_theta = 1000.0f};
    GPTConfig cm = cg;
    cm.n_kv_head = cg.n_head;
    GPT g, m;
    ck_assert_int_eq(gpt_init(&g, &cg, 5), 0);
    ck_assert_int_eq(gpt_init(&m, &cm, 6), 0);
    randomize_params(&g, 77, 0.2f);
    expand_kv_heads(&m, &g);
    int tok[2 * 16];
    for (int i = 0; i < 32; i++) tok[i] = (i * 11 + 5) % 17;
    ck_assert_int_eq(gpt_forward(&g, tok, NULL, 2, 16), 0);
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 2, 16), 0);
    ck_assert_tensor_close("GQA vs expanded MHA logits", g.acts.logits, m.acts.logits, (size_t)2 * 16 * 17, 1e-5);
    gpt_free(&g);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// matmul: the few-row path (decode) and the sgemm path against a plain loop

START_TEST(test_matmul_paths) {
    // every row count of the register-blocked path (1..16: blocks of 16 / n
    // weight rows, 24 / n from 5 rows, chunks of rows), then sgemm; C not a
    // multiple of 16 and OC not a multiple of any block: tails everywhere
    const int Ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 40}, C = 37, OC = 11;
    uint64_t rng = 3;
    float w[11 * 37], b[11], x[40 * 37], out[40 * 11], ref[40 * 11];
    fill_normal(w, sizeof w / 4, 1.0f, &rng);
    fill_normal(b, 11, 1.0f, &rng);
    fill_normal(x, sizeof x / 4, 1.0f, &rng);
    for (size_t i = 0; i < sizeof Ns / sizeof Ns[0]; i++) {
        const int N = Ns[i];
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double acc = b[o];
                for (int k = 0; k < C; k++) acc += (double)w[o * C + k] * x[n * C + k];
                ref[n * OC + o] = (float)acc;
            }
        matmul_forward(out, x, w, b, N, C, OC);
        char name[32];
        snprintf(name, sizeof name, "matmul N=%d", N);
        ck_assert_tensor_close(name, out, ref, (size_t)N * OC, 1e-4);
    }
}
END_TEST

// The backward's products against double loops: dinp overwritten, dw and db
// accumulated onto what they held; shapes from tiny to past 512 in each dim.
static const int mmb_shapes[][3] = {{37, 13, 11}, {384, 128, 192}, {45, 70, 33}, {600, 20, 9}, {40, 530, 7},
                                    {30, 16, 600}};  // N, C, OC
START_TEST(test_matmul_backward_vs_double) {
    const int N = mmb_shapes[_i][0], C = mmb_shapes[_i][1], OC = mmb_shapes[_i][2];
    uint64_t rng = 11 + (uint64_t)_i;
    float *w = malloc((size_t)OC * C * 4), *x = malloc((size_t)N * C * 4), *dout = malloc((size_t)N * OC * 4);
    float *dinp = malloc((size_t)N * C * 4), *dw = malloc((size_t)OC * C * 4), *db = malloc((size_t)OC * 4);
    float *rinp = malloc((size_t)N * C * 4), *rw = malloc((size_t)OC * C * 4), *rb = malloc((size_t)OC * 4);
    fill_normal(w, (size_t)OC * C, 1.0f, &rng);
    fill_normal(x, (size_t)N * C, 1.0f, &rng);
    fill_normal(dout, (size_t)N * OC, 1.0f, &rng);
    fill_normal(dinp, (size_t)N * C, 1.0f, &rng);  // garbage: must be overwritten
    fill_normal(dw, (size_t)OC * C, 1.0f, &rng);   // must be added to
    fill_normal(db, OC, 1.0f, &rng);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double acc = 0;
            for (int o = 0; o < OC; o++) acc += (double)dout[(size_t)n * OC + o] * w[(size_t)o * C + c];
            rinp[(size_t)n * C + c] = (float)acc;
        }
    for (int o = 0; o < OC; o++) {
        double sb = db[o];
        for (int n = 0; n < N; n++) sb += dout[(size_t)n * OC + o];
        rb[o] = (float)sb;
        for (int c = 0; c < C; c++) {
            double acc = dw[(size_t)o * C + c];
            for (int n = 0; n < N; n++) acc += (double)dout[(size_t)n * OC + o] * x[(size_t)n * C + c];
            rw[(size_t)o * C + c] = (float)acc;
        }
    }
    matmul_backward(dinp, dw, db, dout, x, w, N, C, OC);
    // float sums of up to 600 products of N(0,1) numbers: ~1e-5 relative
    ck_assert_tensor_close("dinp", dinp, rinp, (size_t)N * C, 1e-3);
    ck_assert_tensor_close("dw", dw, rw, (size_t)OC * C, 1e-3);
    ck_assert_tensor_close("db", db, rb, OC, 1e-3);
    free(w), free(x), free(dout), free(dinp), free(dw), free(db), free(rinp), free(rw), free(rb);
}
END_TEST

// gemm (gemm.h) against a double loop, with both backends: every layout of
// A and B (normal or a transposed view), bias or not, overwrite or
// accumulate, on shapes with row tails (M % 6), column tails (N % 64, N % 16,
// N < 16) and K past one block of 256; called outside a parallel region (the
// column panels split over threads) and inside one (each thread its own
// product, as the training shards do).
static const int gemm_shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {6, 64, 256}, {13, 65, 257}, {384, 128, 128},
                                     {7, 130, 600}, {50, 15, 33}};  // M, N, K
START_TEST(test_gemm_vs_double) {
    const int M = gemm_shapes[_i][0], N = gemm_shapes[_i][1], K = gemm_shapes[_i][2], ldc = N + 3;
    uint64_t rng = 500 + (uint64_t)_i;
    float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *bias = malloc((size_t)N * 4);
    float *C0 = malloc((size_t)M * ldc * 4), *C = malloc((size_t)M * ldc * 4), *ref = malloc((size_t)M * N * 4);
    float *got = malloc((size_t)M * N * 4);
    fill_normal(A, (size_t)M * K, 1.0f, &rng);
    fill_normal(B, (size_t)K * N, 1.0f, &rng);
    fill_normal(bias, N, 1.0f, &rng);
    fill_normal(C0, (size_t)M * ldc, 1.0f, &rng);
    for (int backend = 0; backend < 2; backend++) {
        const int old = gemm_use_openblas(backend);
        for (int layout = 0; layout < 16; layout++) {
            const int ta = layout & 1, tb = (layout >> 1) & 1, with_bias = (layout >> 2) & 1, acc = (layout >> 3) & 1;
            // the same numbers, stored as A (M, K) or as A^T (K, M); B likewise
            const long ars = ta ? 1 : K, aps = ta ? M : 1, brs = tb ? 1 : N, bcs = tb ? K : 1;
            float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)K * N * 4);
            for (int i = 0; i < M; i++)
                for (int p = 0; p < K; p++) a[i * ars + p * aps] = A[(size_t)i * K + p];
            for (int p = 0; p < K; p++)
                for (int j = 0; j < N; j++) b[p * brs + j * bcs] = B[(size_t)p * N + j];
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double sum = (acc ? C0[(size_t)i * ldc + j] : 0.0) + (with_bias ? bias[j] : 0.0);
                    for (int p = 0; p < K; p++) sum += (double)A[(size_t)i * K + p] * B[(size_t)p * N + j];
                    ref[(size_t)i * N + j] = (float)sum;
                }
            for (int region = 0; region < 2; region++) {
                memcpy(C, C0, (size_t)M * ldc * 4);
                if (region) {
#pragma omp parallel num_threads(2)
                    {  // thread t computes rows [t M / 2, (t + 1) M / 2)
                        const int t = omp_get_thread_num(), i0 = M * t / 2, i1 = M * (t + 1) / 2;
                        gemm(i1 - i0, N, K, a + i0 * ars, ars, aps, b, brs, bcs, with_bias ? bias : NULL, acc,
                             C + (size_t)i0 * ldc, ldc);
                    }
                } else {
                    gemm(M, N, K, a, ars, aps, b, brs, bcs, with_bias ? bias : NULL, acc, C, ldc);
                }
                for (int i = 0; i < M; i++) {
                    memcpy(got + (size_t)i * N, C + (size_t)i * ldc, (size_t)N * 4);
                    for (int j = N; j < ldc; j++)  // past N, C is never written
                        ck_assert_msg(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j], "gemm wrote C[%d][%d]", i, j);
                }
                char name[96];
                snprintf(name, sizeof name, "gemm %s %dx%dx%d ta %d tb %d bias %d acc %d region %d",
                         backend ? "openblas" : "ours", M, N, K, ta, tb, with_bias, acc, region);
                // float sums of up to 600 products of N(0,1) numbers: ~1e-5 relative
                ck_assert_tensor_close(name, got, ref, (size_t)M * N, 2e-3);
            }
            free(a), free(b);
        }
        gemm_use_openblas(old);
    }
    free(A), free(B), free(bias), free(C0), free(C), free(ref), free(got);
}
END_TEST

// GELU (vectorised tanh) against the formula in double, over a range that
// covers tanh's saturation and a length with a vector tail: the training
// forward's values and derivative (written over its input, as gpt_forward
// does), the backward as a product, and gelu_forward's values bit for bit
START_TEST(test_gelu_vs_double) {
    enum { n = 1003 };
    static float x[n], d[n], y[n], y0[n], dy[n], dx[n];
    // dx starts at 0.5: the backward must overwrite it, not add to it
    for (int i = 0; i < n; i++) x[i] = -12.0f + 24.0f * i / (n - 1), dy[i] = 1.0f + 0.001f * i, dx[i] = 0.5f;
    x[500] = 1e-7f, x[501] = -3e-4f;
    memcpy(d, x, sizeof x);
    gelu_forward_train(y, d, d, n);  // in place: d = gelu'(x)
    gelu_backward_local(dx, d, dy, n);
    double max_f = 0, max_b = 0;
    for (int i = 0; i < n; i++) {
        const double v = x[i], s = sqrt(2.0 / M_PI), u = s * (v + 0.044715 * v * v * v), th = tanh(u);
        const double f = 0.5 * v * (1 + th);
        const double g = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * s * (1 + 3 * 0.044715 * v * v);
        max_f = fmax(max_f, fabs(y[i] - f) / (1 + fabs(f)));
        max_b = fmax(max_b, fabs(dx[i] - g * dy[i]) / (1 + fabs(g * dy[i])));
    }
    ck_assert_msg(max_f < 1e-6, "gelu forward: max error %g", max_f);
    ck_assert_msg(max_b < 3e-6, "gelu backward: max error %g", max_b);  // float terms: ~1e-6
    gelu_forward(y0, x, n);
    ck_assert_int_eq(memcmp(y0, y, sizeof y), 0);
}
END_TEST

// ----------------------------------------------------------------------------
// KV-head conversion (gqa convert)

static void logits_of(GPT *m, const int *tok, int B, int T) { ck_assert_int_eq(gpt_forward(m, tok, NULL, B, T), 0); }

// _i: GPTPos; with rope the scheme and theta are carried through every conversion
START_TEST(test_convert_mean_lossless_and_round_trip) {
    // a GQA model (2 KV heads of 4 query heads) -> MHA by repeat: identical
    // heads within each group, same logits; -> back by mean: the same model
    GPTConfig c = {.vocab_size = 17, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 32,
                   .bias = 1, .pos = _i, .rope_theta = 300.0f};
    GPT g, mha, back, mqa_a, mqa_b;
    char err[256];
    ck_assert_int_eq(gpt_init(&g, &c, 5), 0);
    randomize_params(&g, 91, 0.2f);
    ck_assert_int_eq(gpt_convert_kv_heads(&g, &mha, 4, CONVERT_REPEAT, 0, err, sizeof err), 0);
    ck_assert_int_eq(mha.config.n_kv_head, 4);
    int tok[2 * 16];
    for (int i = 0; i < 32; i++) tok[i] = (i * 5 + 2) % 17;
    logits_of(&g, tok, 2, 16);
    logits_of(&mha, tok, 2, 16);
    ck_assert_tensor_close("repeat: MHA vs GQA logits", mha.acts.logits, g.acts.logits, (size_t)2 * 16 * 17, 1e-5);
    // mean over identical heads is exact: the round trip gives the same bits
    ck_assert_int_eq(gpt_convert_kv_heads(&mha, &back, 2, CONVERT_MEAN, 0, err, sizeof err), 0);
    ck_assert_uint_eq(back.num_parameters, g.num_parameters);
    ck_assert_mem_eq(back.params_memory, g.params_memory, g.num_parameters * sizeof(float));
    // mean to MQA from the expanded model equals mean to MQA from the GQA one
    ck_assert_int_eq(gpt_convert_kv_heads(&mha, &mqa_a, 1, CONVERT_MEAN, 0, err, sizeof err), 0);
    ck_assert_int_eq(gpt_convert_kv_heads(&g, &mqa_b, 1, CONVERT_MEAN, 0, err, sizeof err), 0);
    ck_assert_tensor_close("MQA by two routes", mqa_a.params_memory, mqa_b.params_memory, mqa_a.num_parameters, 1e-7);
    const GPT *all[] = {&mha, &back, &mqa_a, &mqa_b};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(all[i]->config.pos, c.pos);
        ck_assert_float_eq(all[i]->config.rope_theta, c.rope_theta);
        ck_assert_uint_eq(all[i]->param_sizes[PARAM_WPE], g.param_sizes[PARAM_WPE]);
        ck_assert(_i == GPT_POS_ROPE ? all[i]->rope_cos != NULL : all[i]->rope_cos == NULL);
    }
    // and its KV cache is exactly 1/4 of the MHA one
    ck_assert_uint_eq(gpt_kv_bytes_per_token(&mqa_a.config, 4) * 4, gpt_kv_bytes_per_token(&mha.config, 4));
    ck_assert_uint_eq(kvcache_bytes(&mqa_a.config, 3, 16, 4), 2u * 2 * 1 * 8 * 16 * 3 * 4);
    gpt_free(&g), gpt_free(&mha), gpt_free(&back), gpt_free(&mqa_a), gpt_free(&mqa_b);
}
END_TEST

START_TEST(test_convert_methods_and_errors) {
    GPTConfig c = {.vocab_size = 11, .block_size = 8, .n_layer = 1, .n_head = 6, .n_kv_head = 6, .n_embd = 12,
                   .bias = 0};
    GPT m, out;
    char err[256];
    ck_assert_int_eq(gpt_init(&m, &c, 3), 0);
    randomize_params(&m, 4, 0.3f);
    const int HS = 2, C = 12;
    // mean to 3 heads: K row d of head j is the mean of source heads 2j, 2j+1
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &out, 3, CONVERT_MEAN, 0, err, sizeof err), 0);
    const float *ks = m.params.qkvw + (size_t)6 * HS * C, *kd = out.params.qkvw + (size_t)6 * HS * C;
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < HS * C; k++)
            ck_assert_float_eq_tol(kd[j * HS * C + k], 0.5f * (ks[2 * j * HS * C + k] + ks[(2 * j + 1) * HS * C + k]), 1e-7);
    // the V rows follow the K rows of the new layout
    const float *vs = ks + (size_t)6 * HS * C, *vd = kd + (size_t)3 * HS * C;
    ck_assert_float_eq_tol(vd[0], 0.5f * (vs[0] + vs[HS * C]), 1e-7);
    gpt_free(&out);
    // first keeps head 2j
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &out, 2, CONVERT_FIRST, 0, err, sizeof err), 0);
    ck_assert_mem_eq(kd = out.params.qkvw + (size_t)6 * HS * C, ks, HS * C * sizeof(float));
    ck_assert_mem_eq(kd + HS * C, ks + 3 * HS * C, HS * C * sizeof(float));
    gpt_free(&out);
    // random re-initialises K and V but keeps Q and everything else
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &out, 1, CONVERT_RANDOM, 9, err, sizeof err), 0);
    ck_assert_mem_eq(out.params.qkvw, m.params.qkvw, (size_t)6 * HS * C * sizeof(float));
    ck_assert_mem_eq(out.params.fcw, m.params.fcw, m.param_sizes[PARAM_FCW] * sizeof(float));
    ck_assert(memcmp(out.params.qkvw + 6 * HS * C, ks, HS * C * sizeof(float)) != 0);
    gpt_free(&out);
    // rejections
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &out, 4, CONVERT_MEAN, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "n_kv_head 4 must divide n_head 6");
    GPT small;
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &small, 2, CONVERT_MEAN, 0, err, sizeof err), 0);
    ck_assert_int_eq(gpt_convert_kv_heads(&small, &out, 3, CONVERT_MEAN, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "n_kv_head 3 is larger than the source's 2 (use --method repeat to expand)");
    ck_assert_int_eq(gpt_convert_kv_heads(&small, &out, 3, CONVERT_REPEAT, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "--method repeat expands: n_kv_head 3 must be a multiple of the source's 2");
    ck_assert_int_eq(gpt_convert_kv_heads(&m, &out, 7, CONVERT_MEAN, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "n_kv_head 7 must divide n_head 6");
    gpt_free(&small);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// grouped -> latent attention (gqa convert --kv_lora_rank)

// Layer l's stacked K/V projection of a grouped model expanded to the NH query
// heads, in double: M (2*NH*HS, C), rows [K of heads 0..NH-1 | V of heads
// 0..NH-1], head h a copy of KV head h / group (written here from the
// source's layout, independently of convert.c).
static double *kv_stack_expanded(const GPT *g, int l) {
    const GPTConfig *c = &g->config;
    const int NH = c->n_head, NKV = c->n_kv_head, C = c->n_embd, HS = C / NH, group = NH / NKV;
    const float *w = g->params.qkvw + (size_t)l * (NH + 2 * NKV) * HS * C;
    double *M = malloc_check((size_t)2 * NH * HS * C * sizeof(double));
    for (int part = 0; part < 2; part++)
        for (int h = 0; h < NH; h++)
            for (int d = 0; d < HS; d++)
                for (int k = 0; k < C; k++)
                    M[((size_t)part * NH * HS + (size_t)h * HS + d) * C + k] =
                        w[((size_t)(NH + part * NKV + h / group) * HS + d) * C + k];
    return M;
}

static double frobenius_sq(const double *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * a[i];
    return s;
}

// The largest singular value of A (m, n) by power iteration on A^T A, double.
static double power_iteration_sigma1(const double *a, int m, int n) {
    double *x = malloc_check((size_t)n * sizeof(double)), *y = malloc_check((size_t)m * sizeof(double)), lambda = 0;
    for (int k = 0; k < n; k++) x[k] = 1.0 + 0.01 * k;
    for (int it = 0; it < 3000; it++) {
        for (int i = 0; i < m; i++) {
            y[i] = 0;
            for (int k = 0; k < n; k++) y[i] += a[(size_t)i * n + k] * x[k];
        }
        double nx = 0;
        for (int k = 0; k < n; k++) {
            x[k] = 0;
            for (int i = 0; i < m; i++) x[k] += a[(size_t)i * n + k] * y[i];
            nx += x[k] * x[k];
        }
        nx = sqrt(nx);
        lambda = nx;  // |A^T A x| for the unit x of the last iteration -> sigma_1^2
        for (int k = 0; k < n; k++) x[k] /= nx;
    }
    free(x), free(y);
    return sqrt(lambda);
}

// A random orthogonal (n, n) matrix: a product of n Householder reflections.
static void random_orthogonal(double *q, int n, uint64_t *rng) {
    double *v = malloc_check((size_t)n * sizeof(double)), *col = malloc_check((size_t)n * sizeof(double));
    memset(q, 0, (size_t)n * n * sizeof(double));
    for (int i = 0; i < n; i++) q[(size_t)i * n + i] = 1;
    for (int r = 0; r < n; r++) {
        double nv = 0;
        for (int i = 0; i < n; i++) v[i] = rng_normal(rng), nv += v[i] * v[i];
        nv = sqrt(nv);
        for (int j = 0; j < n; j++) {  // q = (I - 2 v v^T / |v|^2) q, column by column
            double dot = 0;
            for (int i = 0; i < n; i++) col[i] = q[(size_t)i * n + j], dot += v[i] * col[i];
            for (int i = 0; i < n; i++) q[(size_t)i * n + j] = col[i] - 2 * dot * v[i] / (nv * nv);
        }
    }
    free(v), free(col);
}

// _i: a shape. A = Q1 diag(s) Q2^T with a known spectrum (a repeated value,
// a zero, wide and tall shapes): convert_svd finds s, an orthonormal V, and
// A V; and it is deterministic.
START_TEST(test_convert_svd_known_spectrum) {
    static const int shapes[][2] = {{9, 6}, {6, 9}, {7, 7}, {40, 24}};
    const int m = shapes[_i][0], n = shapes[_i][1], k = m < n ? m : n;
    uint64_t rng = 77 + (uint64_t)_i;
    double *q1 = malloc_check((size_t)m * m * 8), *q2 = malloc_check((size_t)n * n * 8), *s = calloc_check((size_t)n, 8);
    double *a = calloc_check((size_t)m * n, 8);
    random_orthogonal(q1, m, &rng);
    random_orthogonal(q2, n, &rng);
    for (int j = 0; j < k; j++) s[j] = 10.0 / (1 + j);  // descending
    s[1] = s[2];                                         // a repeated singular value
    s[k - 1] = 0;                                        // and a zero one
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int t = 0; t < k; t++) a[(size_t)i * n + j] += q1[(size_t)i * m + t] * s[t] * q2[(size_t)j * n + t];
    double *sigma = malloc_check((size_t)n * 8), *vt = malloc_check((size_t)n * n * 8), *av = malloc_check((size_t)m * n * 8);
    const int sweeps = convert_svd(a, m, n, sigma, vt, av);
    ck_assert_msg(sweeps > 0 && sweeps < 30, "%d sweeps", sweeps);
    double worst_s = 0, worst_v = 0, worst_av = 0, worst_a = 0;
    for (int j = 0; j < n; j++) worst_s = fmax(worst_s, fabs(sigma[j] - s[j]));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double d = 0;
            for (int t = 0; t < n; t++) d += vt[(size_t)i * n + t] * vt[(size_t)j * n + t];
            worst_v = fmax(worst_v, fabs(d - (i == j)));
        }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double d = 0, back = 0;  // (A V)[i, j], and A = (A V) V^T
            for (int t = 0; t < n; t++) d += a[(size_t)i * n + t] * vt[(size_t)j * n + t];
            for (int t = 0; t < n; t++) back += av[(size_t)i * n + t] * vt[(size_t)t * n + j];
            worst_av = fmax(worst_av, fabs(d - av[(size_t)i * n + j]));
            worst_a = fmax(worst_a, fabs(back - a[(size_t)i * n + j]));
        }
    // the columns of A V are orthogonal, their norms the singular values
    for (int p = 0; p < n; p++)
        for (int q = p + 1; q < n; q++) {
            double d = 0;
            for (int i = 0; i < m; i++) d += av[(size_t)i * n + p] * av[(size_t)i * n + q];
            ck_assert_msg(fabs(d) <= 1e-12 * 100, "columns %d, %d of A V: dot %g", p, q, d);
        }
    printf("svd %dx%d: %d sweeps, sigma err %.2g, V^T V - I %.2g, A V err %.2g, A - (A V) V^T %.2g\n", m, n,
           sweeps, worst_s, worst_v, worst_av, worst_a);
    ck_assert_msg(worst_s < 1e-12 && worst_v < 1e-13 && worst_av < 1e-12 && worst_a < 1e-12,
                  "svd %dx%d: sigma %g, V %g, AV %g, A %g", m, n, worst_s, worst_v, worst_av, worst_a);
    // deterministic: the same bits again
    double *sigma2 = malloc_check((size_t)n * 8), *vt2 = malloc_check((size_t)n * n * 8), *av2 = malloc_check((size_t)m * n * 8);
    ck_assert_int_eq(convert_svd(a, m, n, sigma2, vt2, av2), sweeps);
    ck_assert_mem_eq(sigma2, sigma, (size_t)n * 8);
    ck_assert_mem_eq(vt2, vt, (size_t)n * n * 8);
    ck_assert_mem_eq(av2, av, (size_t)m * n * 8);
    free(q1), free(q2), free(s), free(a), free(sigma), free(vt), free(av), free(sigma2), free(vt2), free(av2);
}
END_TEST

// _i: NKV 4 (MHA), 2 (GQA), 1 (MQA) of NH = 4, each with (even) and without
// (odd) biases. At full rank 2*NKV*HS (64 > C, 32 = C, 16 < C) the MLA model
// computes the source's logits (MHA also at r = C): the only differences are
// float round-off in the factors (~1e-7 relative) and in the longer product
// x dkvw^T ukvw^T. Measured worst logit difference: 4.1e-6 (the largest
// logits are 3.5-6.5); tolerance 2e-5.
#define TOL_LATENT_LOGITS 2e-5
START_TEST(test_convert_latent_full_rank_logits) {
    const int NKV = 4 >> (_i / 2), bias = _i % 2 == 0, C = 32, NH = 4, HS = 8, L = 2, B = 2, T = 16, V = 29;
    GPTConfig c = {.vocab_size = V, .block_size = T, .n_layer = L, .n_head = NH, .n_kv_head = NKV, .n_embd = C,
                   .bias = bias, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    GPT g, mla;
    char err[256];
    ck_assert_int_eq(gpt_init(&g, &c, 5), 0);
    randomize_params(&g, 300 + _i, 0.2f);
    const int full = 2 * NKV * HS;
    ConvertLatentStats st;
    ck_assert_msg(gpt_convert_to_latent(&g, &mla, full, &st, err, sizeof err) == 0, "%s", err);
    // the shape: MLA, one K and V per query head, no rotary part, no latent norm
    const GPTConfig *cm = &mla.config;
    ck_assert_int_eq(cm->kv_lora_rank, full);
    ck_assert_int_eq(cm->n_kv_head, NH);
    ck_assert_int_eq(cm->rope_head_dim, 0);
    ck_assert_int_eq(cm->latent_norm, 0);
    ck_assert_int_eq(cm->bias, bias);
    ck_assert_uint_eq(mla.param_sizes[PARAM_KVNW], 0);
    ck_assert_uint_eq(mla.param_sizes[PARAM_DKVW], (size_t)L * full * C);
    ck_assert_uint_eq(mla.param_sizes[PARAM_UKVW], (size_t)L * 2 * NH * HS * full);
    // nothing discarded at full rank
    ck_assert(st.discarded_sq < 1e-20 * st.kv_sq && st.kv_sq > 0);
    // every tensor outside the attention's K/V is the source's, bit for bit; the query rows too
    const int same[] = {PARAM_WTE, PARAM_WPE, PARAM_LN1W, PARAM_LN1B, PARAM_ATTPROJW, PARAM_ATTPROJB, PARAM_LN2W,
                        PARAM_LN2B, PARAM_FCW, PARAM_FCB, PARAM_FCPROJW, PARAM_FCPROJB, PARAM_LNFW, PARAM_LNFB};
    float *gp[GPT_NUM_PARAM_TENSORS], *mp[GPT_NUM_PARAM_TENSORS];
    gp[0] = g.params_memory, mp[0] = mla.params_memory;
    for (int i = 1; i < GPT_NUM_PARAM_TENSORS; i++)
        gp[i] = gp[i - 1] + g.param_sizes[i - 1], mp[i] = mp[i - 1] + mla.param_sizes[i - 1];
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        ck_assert_uint_eq(mla.param_sizes[same[i]], g.param_sizes[same[i]]);
        ck_assert_mem_eq(mp[same[i]], gp[same[i]], g.param_sizes[same[i]] * sizeof(float));
    }
    for (int l = 0; l < L; l++) {
        ck_assert_mem_eq(mla.params.qkvw + (size_t)l * NH * HS * C, g.params.qkvw + (size_t)l * (NH + 2 * NKV) * HS * C,
                         (size_t)NH * HS * C * sizeof(float));
        if (!bias) continue;
        ck_assert_mem_eq(mla.params.qkvb + (size_t)l * NH * HS, g.params.qkvb + (size_t)l * (NH + 2 * NKV) * HS,
                         (size_t)NH * HS * sizeof(float));
        for (int j = 0; j < full; j++) ck_assert_float_eq(mla.params.dkvb[(size_t)l * full + j], 0.0f);
        // ukvb: K then V biases of each query head's KV head
        for (int part = 0; part < 2; part++)
            for (int h = 0; h < NH; h++)
                ck_assert_mem_eq(mla.params.ukvb + (size_t)l * 2 * NH * HS + (size_t)part * NH * HS + (size_t)h * HS,
                                 g.params.qkvb + (size_t)l * (NH + 2 * NKV) * HS + (size_t)(NH + part * NKV + h / (NH / NKV)) * HS,
                                 (size_t)HS * sizeof(float));
    }
    // MHA: the full rank 64 exceeds C = 32; the latent's last 32 dimensions are zero in both factors
    if (full > C)
        for (int l = 0; l < L; l++) {
            for (size_t k = (size_t)C * C; k < (size_t)full * C; k++) ck_assert_float_eq(mla.params.dkvw[(size_t)l * full * C + k], 0.0f);
            for (int row = 0; row < 2 * NH * HS; row++)
                for (int j = C; j < full; j++) ck_assert_float_eq(mla.params.ukvw[((size_t)l * 2 * NH * HS + row) * full + j], 0.0f);
        }
    // the logits and the loss
    int tok[B * T], tgt[B * T];
    uint64_t rng = 41 + (uint64_t)_i;
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&rng) % V), tgt[i] = (int)(rng_u64(&rng) % V);
    ck_assert_int_eq(gpt_forward(&g, tok, tgt, B, T), 0);
    ck_assert_int_eq(gpt_forward(&mla, tok, tgt, B, T), 0);
    Diff d = diff_tensors(mla.acts.logits, g.acts.logits, (size_t)B * T * V);
    float big = 0;
    for (int i = 0; i < B * T * V; i++) big = fmaxf(big, fabsf(g.acts.logits[i]));
    printf("MLA at full rank %d (NKV %d, bias %d): logits max abs err %.2g (largest |logit| %.2g), normalised %.2g; "
           "loss %.7f vs %.7f\n", full, NKV, bias, d.max_abs, big, d.norm_err, mla.mean_loss, g.mean_loss);
    ck_assert_tensor_close("full-rank MLA vs source logits", mla.acts.logits, g.acts.logits, (size_t)B * T * V,
                           TOL_LATENT_LOGITS);
    ck_assert_float_eq_tol(mla.mean_loss, g.mean_loss, 1e-5f);
    // MHA: M has C columns, so its rank is at most C: r = C (half the cache) is lossless already
    if (full > C) {
        GPT half;
        ck_assert_msg(gpt_convert_to_latent(&g, &half, C, &st, err, sizeof err) == 0, "%s", err);
        ck_assert(st.discarded_sq < 1e-20 * st.kv_sq);
        ck_assert_int_eq(gpt_forward(&half, tok, tgt, B, T), 0);
        d = diff_tensors(half.acts.logits, g.acts.logits, (size_t)B * T * V);
        printf("MLA at rank C = %d (NKV %d, bias %d): logits max abs err %.2g\n", C, NKV, bias, d.max_abs);
        ck_assert_tensor_close("rank-C MLA vs MHA logits", half.acts.logits, g.acts.logits, (size_t)B * T * V,
                               TOL_LATENT_LOGITS);
        gpt_free(&half);
    }
    gpt_free(&g), gpt_free(&mla);
}
END_TEST

// _i: a rank below full (32). Eckart-Young on every layer of a GQA model
// (NKV 2 of 4 heads): the singular values of the expanded stack M, computed
// here from M itself, pass independent checks (their squares sum to
// ||M||_F^2; the largest equals power iteration's; they are sqrt(group)
// times those of the source's own, unexpanded K/V rows), and the converted
// factors' error ||M - ukvw dkvw||_F equals sqrt(sum of the discarded
// squared singular values), up to the factors' float round-off.
START_TEST(test_convert_latent_eckart_young) {
    static const int ranks[] = {1, 5, 12, 31};
    const int r = ranks[_i], NH = 4, NKV = 2, C = 32, HS = 8, L = 3, m = 2 * NH * HS, ms = 2 * NKV * HS;
    GPTConfig c = {.vocab_size = 13, .block_size = 8, .n_layer = L, .n_head = NH, .n_kv_head = NKV, .n_embd = C,
                   .bias = 1, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    GPT g, mla;
    char err[256];
    ck_assert_int_eq(gpt_init(&g, &c, 2), 0);
    randomize_params(&g, 17, 0.2f);
    ConvertLatentStats st;
    ck_assert_msg(gpt_convert_to_latent(&g, &mla, r, &st, err, sizeof err) == 0, "%s", err);
    double kv_sq = 0, cut_sq = 0, worst_rel = 0;
    int worst_layer = -1;
    double *sigma = malloc_check(C * 8), *vt = malloc_check((size_t)C * C * 8), *av = malloc_check((size_t)m * C * 8);
    double *sigma_src = malloc_check(C * 8), *av_src = malloc_check((size_t)ms * C * 8);
    for (int l = 0; l < L; l++) {
        double *M = kv_stack_expanded(&g, l);
        const double norm2 = frobenius_sq(M, (size_t)m * C);
        convert_svd(M, m, C, sigma, vt, av);
        double all = 0, cut = 0;
        for (int j = 0; j < C; j++) {
            all += sigma[j] * sigma[j];
            if (j >= r) cut += sigma[j] * sigma[j];
            if (j > 0) ck_assert(sigma[j] <= sigma[j - 1]);
        }
        ck_assert_msg(fabs(all - norm2) <= 1e-12 * norm2, "layer %d: sum sigma^2 %.17g, ||M||^2 %.17g", l, all, norm2);
        const double s1 = power_iteration_sigma1(M, m, C);
        ck_assert_msg(fabs(s1 - sigma[0]) <= 1e-10 * s1, "layer %d: sigma_1 %.17g, power iteration %.17g", l, sigma[0], s1);
        // the source's distinct K/V rows: singular values smaller by sqrt(group) = sqrt(2)
        const float *w = g.params.qkvw + ((size_t)l * (NH + 2 * NKV) + NH) * HS * C;
        for (size_t i = 0; i < (size_t)ms * C; i++) av_src[i] = w[i];
        double *Ms = malloc_check((size_t)ms * C * 8);
        memcpy(Ms, av_src, (size_t)ms * C * 8);
        convert_svd(Ms, ms, C, sigma_src, vt, av_src);
        for (int j = 0; j < C; j++) ck_assert(fabs(sigma[j] - sqrt(2.0) * sigma_src[j]) <= 1e-12 * sigma[0]);
        free(Ms);
        // the converted factors, multiplied out in double
        double e2 = 0;
        for (int row = 0; row < m; row++)
            for (int k = 0; k < C; k++) {
                double p = 0;
                for (int j = 0; j < r; j++)
                    p += (double)mla.params.ukvw[((size_t)l * m + row) * r + j] * mla.params.dkvw[((size_t)l * r + j) * C + k];
                e2 += (M[(size_t)row * C + k] - p) * (M[(size_t)row * C + k] - p);
            }
        const double got = sqrt(e2), want = sqrt(cut), fro = sqrt(norm2);
        printf("rank %d, layer %d: ||M - ukvw dkvw|| %.9g, sqrt(discarded sigma^2) %.9g, difference %.2g ||M||\n", r,
               l, got, want, fabs(got - want) / fro);
        ck_assert_msg(fabs(got - want) <= 2e-7 * fro, "rank %d layer %d: error %.9g, Eckart-Young %.9g", r, l, got, want);
        kv_sq += norm2, cut_sq += cut;
        if (sqrt(cut / norm2) > worst_rel) worst_rel = sqrt(cut / norm2), worst_layer = l;
        free(M);
    }
    // the stats the CLI prints are these sums
    ck_assert(fabs(st.kv_sq - kv_sq) <= 1e-12 * kv_sq);
    ck_assert(fabs(st.discarded_sq - cut_sq) <= 1e-10 * kv_sq);
    ck_assert_int_eq(st.worst_layer, worst_layer);
    ck_assert(fabs(st.worst_rel - worst_rel) <= 1e-9);
    free(sigma), free(vt), free(av), free(sigma_src), free(av_src);
    gpt_free(&g), gpt_free(&mla);
}
END_TEST

START_TEST(test_convert_latent_errors) {
    GPTConfig c = {.vocab_size = 11, .block_size = 8, .n_layer = 1, .n_head = 4, .n_kv_head = 2, .n_embd = 16,
                   .bias = 1, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    GPT g, out;
    char err[256];
    ck_assert_int_eq(gpt_init(&g, &c, 1), 0);
    // full rank: 2 x 2 KV heads x head size 4 = 16
    const int bad[] = {0, -3, 17};
    const char *msg[] = {"kv_lora_rank must be at least 1, got 0", "kv_lora_rank must be at least 1, got -3",
                         "kv_lora_rank 17 exceeds the full rank of the stacked K/V projection, 2 x n_kv_head x "
                         "head_size = 2 x 2 x 4 = 16 (lossless there)"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(gpt_convert_to_latent(&g, &out, bad[i], NULL, err, sizeof err), -1);
        ck_assert_str_eq(err, msg[i]);
        ck_assert_ptr_null(out.params_memory);  // nothing to free
    }
    ck_assert_int_eq(gpt_convert_to_latent(&g, &out, 16, NULL, err, sizeof err), 0);
    // an MLA source, either way
    GPT again;
    ck_assert_int_eq(gpt_convert_to_latent(&out, &again, 4, NULL, err, sizeof err), -1);
    ck_assert_str_eq(err, "the source is already MLA (kv_lora_rank 16); convert from a grouped (MHA/GQA) checkpoint");
    ck_assert_int_eq(gpt_convert_kv_heads(&out, &again, 2, CONVERT_MEAN, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "the source is MLA (kv_lora_rank 16): n_kv_head conversion needs grouped attention");
    gpt_free(&out);
    gpt_free(&g);
    // a rope source
    c.pos = GPT_POS_ROPE;
    ck_assert_int_eq(gpt_init(&g, &c, 1), 0);
    ck_assert_int_eq(gpt_convert_to_latent(&g, &out, 8, NULL, err, sizeof err), -1);
    ck_assert_str_eq(err, "conversion to MLA needs learned positions: the decoupled rotary key has no counterpart "
                          "in the source");
    gpt_free(&g);
}
END_TEST

// _i: 0 GQA at a low rank (6 of 32), 1 MHA at full rank 64 > C = 32. The
// converted model trains: a forward-backward pass (2 shards) gives a finite
// loss and finite gradients, non-zero for the latent factors; with r > C the
// dead latent dimensions get exactly zero gradients (each factor is the
// other's gradient's multiplier), so they stay zero; one AdamW step runs.
START_TEST(test_convert_latent_trains) {
    const int NKV = _i == 0 ? 2 : 4, r = _i == 0 ? 6 : 64, C = 32, NH = 4, HS = 8, L = 2, B = 4, T = 16, V = 23;
    GPTConfig c = {.vocab_size = V, .block_size = T, .n_layer = L, .n_head = NH, .n_kv_head = NKV, .n_embd = C,
                   .bias = 1, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    GPT g, mla;
    char err[256];
    ck_assert_int_eq(gpt_init(&g, &c, 8), 0);
    randomize_params(&g, 23, 0.1f);
    ck_assert_msg(gpt_convert_to_latent(&g, &mla, r, NULL, err, sizeof err) == 0, "%s", err);
    int tok[B * T], tgt[B * T];
    uint64_t rng = 5;
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&rng) % V), tgt[i] = (int)(rng_u64(&rng) % V);
    ck_assert_int_eq(gpt_forward_backward(&mla, tok, tgt, B, T, 2), 0);
    const float loss0 = mla.mean_loss;
    ck_assert(isfinite(loss0));
    for (size_t i = 0; i < mla.num_parameters; i++) ck_assert_msg(isfinite(mla.grads_memory[i]), "gradient %zu", i);
    double gd = 0, gu = 0;
    for (size_t i = 0; i < mla.param_sizes[PARAM_DKVW]; i++) gd += fabs(mla.grads.dkvw[i]);
    for (size_t i = 0; i < mla.param_sizes[PARAM_UKVW]; i++) gu += fabs(mla.grads.ukvw[i]);
    ck_assert_msg(gd > 0 && gu > 0, "latent gradients %g %g", gd, gu);
    if (r > C)
        for (int l = 0; l < L; l++) {
            for (size_t k = (size_t)C * C; k < (size_t)r * C; k++) ck_assert_float_eq(mla.grads.dkvw[(size_t)l * r * C + k], 0.0f);
            for (int row = 0; row < 2 * NH * HS; row++)
                for (int j = C; j < r; j++) ck_assert_float_eq(mla.grads.ukvw[((size_t)l * 2 * NH * HS + row) * r + j], 0.0f);
        }
    AdamW opt;
    adamw_init(&opt, mla.num_parameters, 0.9f, 0.99f, 1e-8f, 0.1f);
    adamw_step(&opt, &mla, 1e-2f);
    ck_assert_int_eq(gpt_forward_backward(&mla, tok, tgt, B, T, 2), 0);
    printf("MLA (NKV %d -> r %d) trains: loss %.5f -> %.5f after one AdamW step\n", NKV, r, loss0, mla.mean_loss);
    ck_assert(isfinite(mla.mean_loss) && mla.mean_loss < loss0);
    adamw_free(&opt);
    gpt_free(&g), gpt_free(&mla);
}
END_TEST

// ----------------------------------------------------------------------------
// validation

static void expect_config_error(GPTConfig c, const char *needle) {
    char err[256] = "";
    ck_assert_int_eq(gpt_config_validate(&c, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 0), -1);
    ck_assert_msg(strstr(m.error, needle) != NULL, "gpt_init message '%s' lacks '%s'", m.error, needle);
}

START_TEST(test_bad_configs) {
    const GPTConfig ok = {.vocab_size = 65, .block_size = 64, .n_layer = 2, .n_head = 6, .n_kv_head = 3,
                          .n_embd = 48, .bias = 0, .dropout = 0.0f};
    char err[256];
    ck_assert_int_eq(gpt_config_validate(&ok, err, sizeof err), 0);
    GPTConfig c = ok;
    c.n_kv_head = 4;
    expect_config_error(c, "n_head 6 is not divisible by n_kv_head 4");
    c = ok, c.n_embd = 50;
    expect_config_error(c, "n_embd 50 is not divisible by n_head 6");
    c = ok, c.n_kv_head = 0;
    expect_config_error(c, "n_kv_head must be in [1, n_head=6], got 0");
    c = ok, c.n_kv_head = 12;
    expect_config_error(c, "n_kv_head must be in [1, n_head=6], got 12");
    c = ok, c.vocab_size = 0;
    expect_config_error(c, "vocab_size must be in [1,");
    c = ok, c.n_layer = -3;
    expect_config_error(c, "n_layer must be in [1,");
    c = ok, c.block_size = 0;
    expect_config_error(c, "block_size must be in [1,");
    c = ok, c.dropout = 1.0f;
    expect_config_error(c, "dropout must be in [0, 1)");
    c = ok, c.pos = 2;
    expect_config_error(c, "pos must be 0 (learned) or 1 (rope), got 2");
    c = ok, c.pos = GPT_POS_ROPE, c.rope_theta = GPT_ROPE_THETA_DEFAULT;
    ck_assert_int_eq(gpt_config_validate(&c, err, sizeof err), 0);
    c.n_embd = 18;  // head size 3
    expect_config_error(c, "pos=rope rotates pairs of dimensions: the head size n_embd/n_head = 3 must be even");
    const float thetas[] = {0.0f, -1.0f, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        c = ok, c.pos = GPT_POS_ROPE, c.rope_theta = thetas[i];
        expect_config_error(c, "rope_theta must be a finite number > 0, got");
        c.pos = GPT_POS_LEARNED;  // learned positions never read it
        ck_assert_int_eq(gpt_config_validate(&c, err, sizeof err), 0);
    }
}
END_TEST

START_TEST(test_bad_tokens_and_lengths) {
    GPTConfig c = {.vocab_size = 10, .block_size = 4, .n_layer = 1, .n_head = 2, .n_kv_head = 1, .n_embd = 8};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 0), 0);
    int tok[8] = {1, 2, 3, 10, 0, 0, 0, 0};
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 1, 4), -1);
    ck_assert_str_eq(m.error, "token id 10 at position 3 is out of range [0, vocab_size=10)");
    tok[3] = -1;
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 1, 4), -1);
    ck_assert_str_eq(m.error, "token id -1 at position 3 is out of range [0, vocab_size=10)");
    tok[3] = 9;
    int bad_targets[4] = {0, 11, 0, 0};
    ck_assert_int_eq(gpt_forward(&m, tok, bad_targets, 1, 4), -1);
    ck_assert_str_eq(m.error, "target token id 11 at position 1 is out of range [0, vocab_size=10)");
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 1, 8), -1);
    ck_assert_str_eq(m.error, "sequence length T=8 exceeds block_size=4");
    tok[7] = 12;  // the second sequence of a batch is checked too
    ck_assert_int_eq(gpt_forward(&m, tok, NULL, 2, 4), -1);
    ck_assert_str_eq(m.error, "token id 12 at position 7 is out of range [0, vocab_size=10)");
    gpt_free(&m);
}
END_TEST

START_TEST(test_kv_bytes_and_params) {
    // cfg-m shape: 6 layers, 6 heads of 64; KV bytes per token follow n_kv_head
    GPTConfig c = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 6, .n_embd = 384};
    ck_assert_uint_eq(gpt_kv_bytes_per_token(&c, 4), 2u * 6 * 6 * 64 * 4);
    size_t mha = gpt_num_parameters(&c);
    c.n_kv_head = 1;
    ck_assert_uint_eq(gpt_kv_bytes_per_token(&c, 4), 2u * 6 * 1 * 64 * 4);
    // MQA drops 2 * (6 - 1) * 64 rows of C weights from each layer's W_qkv
    ck_assert_uint_eq(mha - gpt_num_parameters(&c), (size_t)6 * 2 * 5 * 64 * 384);
}
END_TEST

// The Linear layers' table against the arena: shapes, tensor sizes, where
// each weight lies, and every parameter accounted for; the decode step's
// parameter reads are all parameters but block_size - 1 rows of wpe.
static const GPTConfig linear_configs[] = {
    {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 6, .n_embd = 384, .bias = 0},
    {.vocab_size = 11, .block_size = 70, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 16, .bias = 1},
    {.vocab_size = 7, .block_size = 9, .n_layer = 3, .n_head = 8, .n_kv_head = 1, .n_embd = 24, .bias = 1},
    {.vocab_size = 11, .block_size = 70, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 16, .bias = 1,
     .pos = GPT_POS_ROPE, .rope_theta = 10000.0f},
    {.vocab_size = 11, .block_size = 70, .n_layer = 2, .n_head = 4, .n_kv_head = 4, .n_embd = 16, .bias = 1,
     .kv_lora_rank = 6, .latent_norm = 1},
    {.vocab_size = 7, .block_size = 9, .n_layer = 3, .n_head = 2, .n_kv_head = 2, .n_embd = 24, .bias = 0,
     .kv_lora_rank = 10, .latent_norm = 0},
    {.vocab_size = 11, .block_size = 70, .n_layer = 2, .n_head = 4, .n_kv_head = 4, .n_embd = 16, .bias = 1,
     .pos = GPT_POS_ROPE, .rope_theta = 10000.0f, .kv_lora_rank = 8, .rope_head_dim = 2, .latent_norm = 1},
};

START_TEST(test_linear_layers_and_decode_params) {
    const GPTConfig c = linear_configs[_i];
    const size_t L = c.n_layer, C = c.n_embd, bias = c.bias, HS = C / c.n_head;
    const int mla = gpt_is_latent(&c), r = c.kv_lora_rank, dR = c.rope_head_dim, NH = c.n_head;
    GPTLinear lin[GPT_NUM_LINEAR];
    const int nlin = gpt_linear_layers(&c, lin);
    ck_assert_int_eq(nlin, mla ? 6 : 4);
    size_t sizes[GPT_NUM_PARAM_TENSORS];
    gpt_param_sizes(&c, sizes);
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 1), 0);
    // grouped: qkv, attproj, fc, fcproj; MLA: q, dkv, ukv, then the same three
    const char *names[GPT_NUM_LINEAR] = {"qkv", "attproj", "fc", "fcproj"};
    int in[GPT_NUM_LINEAR] = {c.n_embd, c.n_embd, c.n_embd, 4 * c.n_embd};
    int out[GPT_NUM_LINEAR] = {(int)gpt_qkv_width(&c), c.n_embd, 4 * c.n_embd, c.n_embd};
    const float *weights[GPT_NUM_LINEAR] = {m.params.qkvw, m.params.attprojw, m.params.fcw, m.params.fcprojw};
    if (mla) {
        const char *mnames[] = {"q", "dkv", "ukv", "attproj", "fc", "fcproj"};
        const int min[] = {c.n_embd, c.n_embd, r, c.n_embd, c.n_embd, 4 * c.n_embd};
        const int mout[] = {NH * (int)(HS + dR), r + dR, 2 * c.n_embd, c.n_embd, 4 * c.n_embd, c.n_embd};
        const float *mw[] = {m.params.qkvw, m.params.dkvw, m.params.ukvw, m.params.attprojw, m.params.fcw,
                             m.params.fcprojw};
        for (int j = 0; j < 6; j++) names[j] = mnames[j], in[j] = min[j], out[j] = mout[j], weights[j] = mw[j];
        // the latent's norm weight: r per layer with latent_norm, initialised to 1
        ck_assert_uint_eq(sizes[PARAM_KVNW], c.latent_norm ? L * r : 0);
        for (size_t i = 0; i < sizes[PARAM_KVNW]; i++) ck_assert_float_eq(m.params.kvnw[i], 1.0f);
        ck_assert(!gpt_param_decays(PARAM_KVNW));
    } else {
        ck_assert_uint_eq(sizes[PARAM_DKVW] + sizes[PARAM_DKVB] + sizes[PARAM_KVNW] + sizes[PARAM_UKVW] +
                              sizes[PARAM_UKVB], 0);
    }
    const int rope = c.pos == GPT_POS_ROPE;
    size_t total = sizes[PARAM_WTE] + sizes[PARAM_WPE] + sizes[PARAM_KVNW];
    ck_assert_uint_eq(sizes[PARAM_WPE], rope ? 0 : (size_t)c.block_size * C);  // rope: no wpe
    for (int j = 0; j < nlin; j++) {
        ck_assert_str_eq(lin[j].name, names[j]);
        ck_assert_int_eq(lin[j].in, in[j]);
        ck_assert_int_eq(lin[j].out, out[j]);
        ck_assert_uint_eq(sizes[lin[j].weight], L * lin[j].out * lin[j].in);
        ck_assert_uint_eq(sizes[lin[j].bias], bias * L * lin[j].out);
        ck_assert_int_eq(lin[j].bias, lin[j].weight + 1);
        ck_assert(gpt_param_decays(lin[j].weight) && !gpt_param_decays(lin[j].bias));
        size_t off = 0;
        for (int i = 0; i < lin[j].weight; i++) off += sizes[i];
        ck_assert_ptr_eq(weights[j], m.params_memory + off);
        total += L * ((size_t)lin[j].in * lin[j].out + bias * lin[j].out);
    }
    total += 2 * L * C * (1 + bias) + C * (1 + bias);  // ln1, ln2 per layer, lnf
    ck_assert_uint_eq(total, gpt_num_parameters(&c));
    ck_assert_uint_eq(total, m.num_parameters);
    // a decode step reads every parameter once, of wpe one row
    ck_assert_double_eq(gpt_weight_bytes(&c, W_F32, 1),
                        4.0 * (double)(rope ? gpt_num_parameters(&c) : gpt_num_parameters(&c) - (size_t)c.block_size * C + C));
    ck_assert_ptr_eq(m.params.wpe, m.params.ln1w - sizes[PARAM_WPE]);  // the slot stays in the arena order
    // the rope tables are the model's, outside the arena: (block_size, dim/2) each, dim = HS or MLA's dR
    const size_t half = (size_t)(mla ? dR : (int)HS) / 2;
    ck_assert(rope ? m.rope_cos && m.rope_sin == m.rope_cos + (size_t)c.block_size * half
                   : !m.rope_cos && !m.rope_sin && !m.rope_memory);
    // KV cache per token per layer: 2 NKV HS (grouped) or r + dR (MLA)
    ck_assert_uint_eq(gpt_kv_bytes_per_token(&c, 2), L * 2 * (mla ? (size_t)(r + dR) : 2 * c.n_kv_head * HS));
    ck_assert_str_eq(gpt_param_names[PARAM_WPE], "wpe");
    ck_assert_str_eq(gpt_param_names[PARAM_FCPROJW], "fcprojw");
    ck_assert_str_eq(gpt_param_names[PARAM_LNFB], "lnfb");
    ck_assert_str_eq(gpt_param_names[PARAM_UKVW], "ukvw");
    gpt_free(&m);
}
END_TEST

// `gqa bench --kv_budget`'s sizes: bytes or a decimal number with an SI or
// binary unit, exact; everything else refused with one line naming it.
START_TEST(test_bench_parse_size) {
    static const struct {
        const char *text;
        size_t bytes;
    } good[] = {{"1", 1},
                {"536870912", 536870912},
                {"512MiB", (size_t)512 << 20},
                {"512mib", (size_t)512 << 20},
                {"2GiB", (size_t)2 << 30},
                {"1.5GB", 1500000000},
                {"1.5GiB", (size_t)3 << 29},
                {"0.5KiB", 512},
                {"1.0001kB", 1000},  // fractions of a byte dropped
                {"4096B", 4096},
                {"3TB", 3000000000000ull},
                {"1TiB", (size_t)1 << 40},
                {"4194304TiB", (size_t)1 << 62}};  // the largest
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t b = 0;
        char err[256] = "";
        ck_assert_msg(bench_parse_size(good[i].text, &b, err, sizeof err) == 0, "%s: %s", good[i].text, err);
        ck_assert_msg(b == good[i].bytes, "%s: %zu, want %zu", good[i].text, b, good[i].bytes);
    }
    static const char *const bad[] = {"", "abc", "12abc", "-5", "+5", "0", "0MiB", "0.0001B", "1.5", "2G", "2 GiB",
                                      " 2GiB", "1e9", "1.MiB", ".5MiB", "1..5MiB", "4194305TiB",
                                      "99999999999999999999999", "5EiB", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t b = 7;
        char err[256] = "";
        ck_assert_msg(bench_parse_size(bad[i], &b, err, sizeof err) == -1, "'%s' was accepted as %zu", bad[i], b);
        ck_assert_msg(b == 7 && strstr(err, "kv_budget '") && !strchr(err, '\n'), "'%s': %s", bad[i], err);
    }
}
END_TEST

// The budget's batch is the largest whose exact cache (kvcache_bytes) fits:
// batch + 1 does not; the grouped and latent formulas written out; the cap.
START_TEST(test_bench_budget_batch) {
    const GPTConfig c = linear_configs[_i];
    const size_t per_pos = c.kv_lora_rank ? (size_t)c.n_layer * (c.kv_lora_rank + c.rope_head_dim)
                                          : (size_t)2 * c.n_layer * c.n_kv_head * (c.n_embd / c.n_head);
    const size_t budgets[] = {1, 100, 4095, 4096, 123457, (size_t)1 << 20, (size_t)3 << 30};
    for (size_t e = 2; e <= 4; e += 2)
        for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++)
            for (int T = 1; T <= c.block_size; T += 1 + T / 3) {
                const size_t budget = budgets[i], seq = per_pos * T * e;
                ck_assert_uint_eq(kvcache_bytes(&c, 1, T, e), seq);
                int capped = -1;
                const int B = bench_budget_batch(&c, T, e, budget, &capped);
                const size_t want = budget / seq;
                ck_assert_int_eq(B, want > BENCH_BUDGET_BATCH_MAX ? BENCH_BUDGET_BATCH_MAX : (int)want);
                ck_assert_int_eq(capped, budget / seq > BENCH_BUDGET_BATCH_MAX);
                ck_assert(kvcache_bytes(&c, B, T, e) <= budget);
                if (!capped) ck_assert(kvcache_bytes(&c, B + 1, T, e) > budget);
                const int M = bench_budget_max_ctx(&c, e, budget, &capped);
                ck_assert_int_eq(M, budget / (per_pos * e) > (size_t)c.block_size ? c.block_size
                                                                                  : (int)(budget / (per_pos * e)));
                ck_assert(kvcache_bytes(&c, 1, M, e) <= budget);
                ck_assert(capped ? M == c.block_size : kvcache_bytes(&c, 1, M + 1, e) > budget);
            }
    // a cache of one sequence beyond any size_t budget fits none, without overflow
    GPTConfig huge = c;
    huge.n_layer = 1 << 30, huge.block_size = 1 << 24, huge.n_embd *= 1024, huge.kv_lora_rank *= 1024;
    ck_assert_int_eq(bench_budget_batch(&huge, 1 << 24, 4, (size_t)1 << 62, NULL), 0);
}
END_TEST

// ----------------------------------------------------------------------------
// team_for and team_run (util/team.h)

#define TEAM_MAX_N 200
typedef struct {
    int thread[TEAM_MAX_N];  // the OpenMP thread that ran each iteration
    int runs[TEAM_MAX_N];    // how often it ran
    int calls, nested_ok, nested_calls;
} TeamLog;

static void team_log_loop(void *ctx, long begin, long end, long step) {
    TeamLog *g = ctx;
#pragma omp atomic
    g->calls++;
    for (long i = begin; i < end; i += step) g->thread[i] = omp_get_thread_num(), g->runs[i]++;
}

// A team_for of n from a thread inside a region (team_run's or any other)
// runs on that thread alone, in one call: 1 if so.
static int team_for_alone(int n) {
    TeamLog *g = calloc_check(1, sizeof *g);
    team_for(n, 1, team_log_loop, g);
    int ok = g->calls == 1;
    for (int i = 0; i < n; i++) ok = ok && g->runs[i] == 1 && g->thread[i] == omp_get_thread_num();
    free(g);
    return ok;
}

static void team_nested_loop(void *ctx, long begin, long end, long step) {
    TeamLog *g = ctx;
    for (long i = begin; i < end; i += step) {
        const int ok = team_for_alone(7);
#pragma omp atomic
        g->nested_ok += ok;
#pragma omp atomic
        g->nested_calls++;
    }
}

// Checks one team_for of n over T threads: each iteration once, on the
// thread that schedule(static) (cyclic: schedule(static, 1)) gives it.
static void check_team_shares(const TeamLog *g, int n, int T, int cyclic, const char *where) {
    for (int i = 0; i < n; i++) {
        int t = i % T;
        if (!cyclic) {  // q or q + 1 contiguous iterations a thread, the first n % T with one more
            const int q = n / T, r = n % T;
            t = i < r * (q + 1) ? i / (q + 1) : r + (i - r * (q + 1)) / q;
        }
        ck_assert_msg(g->runs[i] == 1, "%s: n %d, iteration %d ran %d times", where, n, i, g->runs[i]);
        ck_assert_msg(g->thread[i] == t, "%s: n %d cyclic %d, iteration %d on thread %d, not %d", where, n, cyclic, i,
                      g->thread[i], t);
    }
}

typedef struct {
    int lead_thread, in_region, ok;
} TeamStep;

static void team_test_step_inner(void *ctx) { ((TeamStep *)ctx)->lead_thread = omp_get_thread_num(); }

static void team_test_step(void *ctx) {
    TeamStep *st = ctx;
    st->lead_thread = omp_get_thread_num();
    st->in_region = omp_in_parallel();  // team_run's region, if it opened one
    const int T = omp_get_max_threads();
    static const int ns[] = {1, 2, 3, 7, 64, 199};
    for (int cyclic = 0; cyclic < 2; cyclic++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            TeamLog *g = calloc_check(1, sizeof *g);
            (cyclic ? team_for_cyclic : team_for)(ns[k], 1, team_log_loop, g);
            check_team_shares(g, ns[k], T, cyclic, "team_run");
            free(g);
        }
    TeamLog *g = calloc_check(1, sizeof *g);
    team_for(5, 1, team_nested_loop, g);
    ck_assert_int_eq(g->nested_calls, 5);
    ck_assert_int_eq(g->nested_ok, 5);
    free(g);
    TeamStep inner = {0};
    team_run(team_test_step_inner, &inner);  // a team_run inside one is its step, on this thread
    ck_assert_int_eq(inner.lead_thread, omp_get_thread_num());
    st->ok = 1;
}

START_TEST(test_team_loops) {
    const int T = omp_get_max_threads();
    static const int ns[] = {0, 1, 2, 3, 7, 64, 199};
    for (int cyclic = 0; cyclic < 2; cyclic++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            TeamLog *g = calloc_check(1, sizeof *g);
            (cyclic ? team_for_cyclic : team_for)(ns[k], 1, team_log_loop, g);  // a region of its own
            check_team_shares(g, ns[k], T, cyclic, "team_for");
            memset(g, 0, sizeof *g);
            (cyclic ? team_for_cyclic : team_for)(ns[k], 0, team_log_loop, g);  // serial: one call on this thread
            ck_assert_int_eq(g->calls, ns[k] > 0);
            check_team_shares(g, ns[k], 1, 0, "serial team_for");
            free(g);
        }
    TeamLog *g = calloc_check(1, sizeof *g);
#pragma omp parallel num_threads(2)
    {  // inside a parallel region: each thread runs the whole loop itself
        const int ok = team_for_alone(9);
#pragma omp atomic
        g->nested_ok += ok;
    }
    ck_assert_int_eq(g->nested_ok, 2);
    free(g);
    TeamStep st = {0};
    team_run(team_test_step, &st);
    ck_assert_int_eq(st.ok, 1);
    ck_assert_int_eq(st.lead_thread, 0);
    // a region for the step (whose loops the shares above show on all T
    // threads) with 2 threads or more, but no more than processors
    ck_assert_int_eq(st.in_region, T >= 2 && T <= omp_get_num_procs());
    if (T >= 2 && T <= omp_get_num_procs()) {  // and with more threads than processors, none
        omp_set_num_threads(2 * omp_get_num_procs());
        TeamStep over = {0};
        team_run(team_test_step, &over);
        ck_assert_int_eq(over.in_region, 0);
        ck_assert_int_eq(over.ok, 1);
        omp_set_num_threads(T);
    }
}
END_TEST

static Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("pytorch");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_pytorch_forward_backward, 0, N_FIXTURES);
    tcase_add_loop_test(tc, test_pytorch_adamw_steps, 0, N_FIXTURES);
    suite_add_tcase(s, tc);
    tc = tcase_create("gradcheck");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_attention_finite_differences, 0, 6);
    tcase_add_loop_test(tc, test_attention_row_blocks_finite_differences, 0, 2);
    tcase_add_loop_test(tc, test_attention_rope_finite_differences, 0, 8);
    tcase_add_test(tc, test_rope_convention);
    tcase_add_test(tc, test_rope_shift_invariance);
    tcase_add_loop_test(tc, test_model_finite_differences_dropout, 0, 6);
    tcase_add_test(tc, test_dropout_only_in_training);
    tcase_add_test(tc, test_ignored_targets);
    suite_add_tcase(s, tc);
    tc = tcase_create("invariants");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_gqa_equals_expanded_mha, 0, 4);
    tcase_add_loop_test(tc, test_sharded_pass_equals_one_pass, 0, 6);
    tcase_add_test(tc, test_bad_configs);
    tcase_add_test(tc, test_bad_tokens_and_lengths);
    tcase_add_test(tc, test_kv_bytes_and_params);
    tcase_add_loop_test(tc, test_linear_layers_and_decode_params, 0, sizeof linear_configs / sizeof linear_configs[0]);
    tcase_add_test(tc, test_bench_parse_size);
    tcase_add_loop_test(tc, test_bench_budget_batch, 0, sizeof linear_configs / sizeof linear_configs[0]);
    tcase_add_test(tc, test_matmul_paths);
    tcase_add_test(tc, test_team_loops);
    tcase_add_loop_test(tc, test_matmul_backward_vs_double, 0, 6);
    tcase_add_loop_test(tc, test_gemm_vs_double, 0, sizeof gemm_shapes / sizeof gemm_shapes[0]);
    tcase_add_test(tc, test_gelu_vs_double);
    tcase_add_loop_test(tc, test_convert_mean_lossless_and_round_trip, 0, 2);
    tcase_add_test(tc, test_convert_methods_and_errors);
    tcase_add_loop_test(tc, test_convert_svd_known_spectrum, 0, 4);
    tcase_add_loop_test(tc, test_convert_latent_full_rank_logits, 0, 6);
    tcase_add_loop_test(tc, test_convert_latent_eckart_young, 0, 4);
    tcase_add_test(tc, test_convert_latent_errors);
    tcase_add_loop_test(tc, test_convert_latent_trains, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(model_suite()) == 0 ? 0 : 1; }
