/*
 * convert.c: change the attention of a trained model (convert.h). The `gqa
 * convert` subcommand is cli/convert.c.
 *
 * KV heads (GQA paper, Ainslie et al. 2023, section 2.1). Reducing NKV_src
 * -> G (G divides NKV_src): target KV head j stands for the r = NKV_src / G
 * source heads j*r .. j*r + r - 1, which are exactly the heads the query
 * heads of its new group read, so:
 *   mean    averages their K and V projection rows (and biases),
 *   first   keeps the first of them,
 *   random  re-initialises K and V (normal 0.02, biases 0).
 * Expanding NKV_src -> G (G a multiple of NKV_src), method repeat: target
 * head j copies source head j / (G / NKV_src); the logits do not change.
 * Everything but the K and V rows of W_qkv is copied as it is.
 *
 * Latent attention (MHA2MLA, Ji et al. 2025; TransMLA, Meng et al. 2025).
 * A grouped layer computes k_h = x Wk_g^T + bk_g, v_h = x Wv_g^T + bv_g for
 * query head h and its KV head g = h / group. Stack the K rows of heads
 * 0..NH-1, then their V rows: M = [K_exp; V_exp], (2*NH*HS, C), so
 * [k | v] = x M^T + b. MLA computes the same thing through a latent c:
 *   c = x dkvw^T + dkvb (r),   [k | v] = c ukvw^T + ukvb,
 * i.e. M is replaced by ukvw dkvw, a rank-r product. The truncated SVD
 * M ~= U_r S_r V_r^T is the best rank-r choice in the Frobenius norm
 * (Eckart-Young), and exact once r reaches the rank of M, which is at most
 * 2*NKV*HS (the distinct rows: the "full rank") and at most C.
 *
 * - The split of S: dkvw = V_r^T (orthonormal rows), ukvw = U_r S_r = M V_r.
 *   The latent c = x V_r is then an orthogonal projection of the LN1
 *   output, whatever the layer's weight scale: numbers of the size of x's,
 *   good for a bf16/f16 KV cache; ukvw is computed as M V_r, with no
 *   division by a singular value, so zero and tiny singular values need no
 *   special case; and the latent's coordinates are ordered by importance.
 *   (S^1/2 on both sides, as LoRA-style initialisations do, balances the
 *   factors' scale for gradient steps; the product, hence the function, is
 *   the same.)
 * - Heads: M_exp = E M_src with M_src the source's distinct K/V rows,
 *   (2*NKV*HS, C), and E repeating each KV head's rows `group` times, so
 *   M_exp^T M_exp = group M_src^T M_src: the same right singular vectors,
 *   singular values times sqrt(group). The SVD runs on the smaller M_src;
 *   ukvw's rows for head h are M_src V_r's rows of KV head h / group.
 * - Biases: [k | v] = x (ukvw dkvw)^T + (ukvw dkvb + ukvb): with dkvb = 0,
 *   ukvb is the source's K/V biases per head, exactly.
 * - r > C (possible with MHA, whose full rank 2C exceeds C): the latent of a
 *   C-wide x has at most C independent dimensions; the rows of dkvw past C
 *   and the columns of ukvw past C are zero, and their gradients too (each
 *   is the other's factor), so they stay zero in training.
 *
 * The SVD is one-sided Jacobi (Hestenes 1958) in double, rather than an
 * eigendecomposition of M^T M. It never forms M^T M: a singular value is
 * found from M itself, with an error of order eps sigma_j for well-scaled
 * columns (Demmel and Veselic 1992), where the Gram matrix squares the
 * condition number and leaves each sigma_j an error of order
 * eps sigma_1^2 / sigma_j. (In double, against float weights, both would
 * do; Jacobi is the accurate one for about the same code.) V comes out orthonormal
 * to round-off and complete, null-space directions included, which gives
 * the latent dimensions past the rank of M well-defined rows; and the
 * result depends only on the input: a fixed cyclic order of column pairs,
 * a fixed sort (ties by index). Cost: m n^2 per sweep (n = C columns of
 * length m = 2*NKV*HS), 5-12 sweeps measured; the layers run in parallel.
 */
#include "convert.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/rng.h"
#include "../util/util.h"
#include "checkpoint.h"

const char *const convert_method_names[] = {"mean", "first", "random", "repeat", NULL};

// ----------------------------------------------------------------------------
// KV heads

int gpt_convert_kv_heads(const GPT *src, GPT *dst, int G, ConvertMethod method, uint64_t seed, char *err,
                         size_t errlen) {
    const GPTConfig *cs = &src->config;
    const int NH = cs->n_head, S = cs->n_kv_head, C = cs->n_embd, HS = C / NH, L = cs->n_layer;
    memset(dst, 0, sizeof *dst);
    if (gpt_is_latent(cs)) {
        snprintf(err, errlen, "the source is MLA (kv_lora_rank %d): n_kv_head conversion needs grouped attention",
                 cs->kv_lora_rank);
        return -1;
    }
    if (G < 1 || G > NH || NH % G != 0) {
        snprintf(err, errlen, "n_kv_head %d must divide n_head %d", G, NH);
        return -1;
    }
    if (method == CONVERT_REPEAT ? G % S != 0 : S % G != 0) {
        if (method == CONVERT_REPEAT)
            snprintf(err, errlen, "--method repeat expands: n_kv_head %d must be a multiple of the source's %d", G, S);
        else if (G > S)
            snprintf(err, errlen, "n_kv_head %d is larger than the source's %d (use --method repeat to expand)", G, S);
        else
            snprintf(err, errlen, "n_kv_head %d must divide the source's n_kv_head %d", G, S);
        return -1;
    }
    GPTConfig cd = *cs;
    cd.n_kv_head = G;
    if (gpt_init(dst, &cd, seed) != 0) {
        snprintf(err, errlen, "%s", dst->error);
        return -1;
    }
    // all tensors but qkvw/qkvb are the same size: copy them whole
    const float *sp = src->params_memory;
    float *dp = dst->params_memory;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        if (i != PARAM_QKVW && i != PARAM_QKVB) memcpy(dp, sp, src->param_sizes[i] * sizeof(float));
        sp += src->param_sizes[i];
        dp += dst->param_sizes[i];
    }
    const int QKVs = (NH + 2 * S) * HS, QKVd = (NH + 2 * G) * HS;
    uint64_t rng = rng_mix64(seed ^ 0xC0417E27ull);
    for (int l = 0; l < L; l++) {
        const float *ws = src->params.qkvw + (size_t)l * QKVs * C, *bs = cs->bias ? src->params.qkvb + (size_t)l * QKVs : NULL;
        float *wd = dst->params.qkvw + (size_t)l * QKVd * C, *bd = cd.bias ? dst->params.qkvb + (size_t)l * QKVd : NULL;
        // q rows as they are
        memcpy(wd, ws, (size_t)NH * HS * C * sizeof(float));
        if (bd) memcpy(bd, bs, (size_t)NH * HS * sizeof(float));
        for (int part = 0; part < 2; part++) {  // 0: K rows, 1: V rows
            const size_t src_base = (size_t)(NH + part * S) * HS, dst_base = (size_t)(NH + part * G) * HS;
            for (int j = 0; j < G; j++) {
                for (int d = 0; d < HS; d++) {
                    float *row = wd + (dst_base + (size_t)j * HS + d) * C;
                    float *brow = bd ? bd + dst_base + (size_t)j * HS + d : NULL;
                    if (method == CONVERT_RANDOM) {
                        for (int k = 0; k < C; k++) row[k] = 0.02f * rng_normal(&rng);
                        if (brow) *brow = 0.0f;
                        continue;
                    }
                    // the source heads this target head stands for
                    int first, count;
                    if (method == CONVERT_REPEAT) first = j / (G / S), count = 1;
                    else first = j * (S / G), count = method == CONVERT_FIRST ? 1 : S / G;
                    memset(row, 0, (size_t)C * sizeof(float));
                    if (brow) *brow = 0.0f;
                    for (int s = first; s < first + count; s++) {
                        const float *srow = ws + (src_base + (size_t)s * HS + d) * C;
                        for (int k = 0; k < C; k++) row[k] += srow[k];
                        if (brow) *brow += bs[src_base + (size_t)s * HS + d];
                    }
                    if (count > 1) {
                        for (int k = 0; k < C; k++) row[k] /= (float)count;
                        if (brow) *brow /= (float)count;
                    }
                }
            }
        }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// SVD: one-sided Jacobi

// Order of the singular values: descending, ties by index (deterministic).
typedef struct {
    double s;
    int j;
} SigmaIndex;

static int sigma_desc(const void *pa, const void *pb) {
    const SigmaIndex *a = pa, *b = pb;
    if (a->s != b->s) return a->s < b->s ? 1 : -1;
    return (a->j > b->j) - (a->j < b->j);
}

int convert_svd(const double *a, int m, int n, double *sigma, double *vt, double *av) {
    // w: (n, m), row j = column j of A, rotated in place into column j of A V;
    // v: (n, n), row j = column j of V, the same rotations applied
    double *w = malloc_check((size_t)n * m * sizeof(double)), *v = calloc_check((size_t)n * n, sizeof(double));
    double fro2 = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) w[(size_t)j * m + i] = a[(size_t)i * n + j], fro2 += a[(size_t)i * n + j] * a[(size_t)i * n + j];
    for (int j = 0; j < n; j++) v[(size_t)j * n + j] = 1.0;
    // a pair is orthogonal enough when |w_p . w_q| <= tol |w_p| |w_q|; a
    // column below n eps ||A|| is round-off of a zero singular value
    const double tol = (double)m * DBL_EPSILON, zero2 = (double)n * n * DBL_EPSILON * DBL_EPSILON * fro2;
    int sweep = 0;
    for (int rotated = 1; rotated && sweep < 100; sweep++) {
        rotated = 0;
        for (int p = 0; p < n - 1; p++) {
            double *wp = w + (size_t)p * m, *vp = v + (size_t)p * n;
            for (int q = p + 1; q < n; q++) {
                double *wq = w + (size_t)q * m, *vq = v + (size_t)q * n;
                double alpha = 0, beta = 0, gamma = 0;
                for (int i = 0; i < m; i++) alpha += wp[i] * wp[i], beta += wq[i] * wq[i], gamma += wp[i] * wq[i];
                if (alpha <= zero2 || beta <= zero2 || fabs(gamma) <= tol * sqrt(alpha * beta)) continue;
                // the rotation by t = tan(theta) that makes the pair orthogonal:
                // t^2 + 2 zeta t - 1 = 0, its smaller root (|theta| <= pi/4)
                const double zeta = (beta - alpha) / (2 * gamma);
                const double t = copysign(1.0, zeta) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                const double c = 1 / sqrt(1 + t * t), s = c * t;
                for (int i = 0; i < m; i++) {
                    const double x = wp[i], y = wq[i];
                    wp[i] = c * x - s * y, wq[i] = s * x + c * y;
                }
                for (int i = 0; i < n; i++) {
                    const double x = vp[i], y = vq[i];
                    vp[i] = c * x - s * y, vq[i] = s * x + c * y;
                }
                rotated = 1;
            }
        }
    }
    // sigma_j = |A v_j|, sorted; the columns of A V and rows of V^T follow
    SigmaIndex *order = malloc_check((size_t)n * sizeof *order);
    for (int j = 0; j < n; j++) {
        double s2 = 0;
        for (int i = 0; i < m; i++) s2 += w[(size_t)j * m + i] * w[(size_t)j * m + i];
        order[j] = (SigmaIndex){sqrt(s2), j};
    }
    qsort(order, (size_t)n, sizeof *order, sigma_desc);
    for (int k = 0; k < n; k++) {
        const int j = order[k].j;
        sigma[k] = order[k].s;
        memcpy(vt + (size_t)k * n, v + (size_t)j * n, (size_t)n * sizeof(double));
        for (int i = 0; i < m; i++) av[(size_t)i * n + k] = w[(size_t)j * m + i];
    }
    free(order), free(w), free(v);
    return sweep;
}

// ----------------------------------------------------------------------------
// grouped -> latent attention

int gpt_convert_to_latent(const GPT *src, GPT *dst, int rank, ConvertLatentStats *stats, char *err, size_t errlen) {
    const GPTConfig *cs = &src->config;
    const int NH = cs->n_head, NKV = cs->n_kv_head, C = cs->n_embd, HS = C / NH, L = cs->n_layer;
    const int group = NH / NKV, full = 2 * NKV * HS, r = rank;
    memset(dst, 0, sizeof *dst);
    if (stats) memset(stats, 0, sizeof *stats);
    if (gpt_is_latent(cs)) {
        snprintf(err, errlen, "the source is already MLA (kv_lora_rank %d); convert from a grouped (MHA/GQA) checkpoint",
                 cs->kv_lora_rank);
        return -1;
    }
    if (cs->pos != GPT_POS_LEARNED) {
        snprintf(err, errlen, "conversion to MLA needs learned positions: the decoupled rotary key has no "
                              "counterpart in the source");
        return -1;
    }
    if (r < 1) {
        snprintf(err, errlen, "kv_lora_rank must be at least 1, got %d", r);
        return -1;
    }
    if (r > full) {
        snprintf(err, errlen, "kv_lora_rank %d exceeds the full rank of the stacked K/V projection, 2 x n_kv_head x "
                              "head_size = 2 x %d x %d = %d (lossless there)", r, NKV, HS, full);
        return -1;
    }
    GPTConfig cd = *cs;
    cd.n_kv_head = NH, cd.kv_lora_rank = r, cd.rope_head_dim = 0, cd.latent_norm = 0;
    if (gpt_init(dst, &cd, 0) != 0) {
        snprintf(err, errlen, "%s", dst->error);
        gpt_free(dst);
        return -1;
    }
    // every tensor outside the attention's q/k/v projections is the same: copy it whole
    const float *sp = src->params_memory;
    float *dp = dst->params_memory;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        const int attn = i == PARAM_QKVW || i == PARAM_QKVB || i == PARAM_DKVW || i == PARAM_DKVB ||
                         i == PARAM_KVNW || i == PARAM_UKVW || i == PARAM_UKVB;
        if (!attn) {
            CHECK(src->param_sizes[i] == dst->param_sizes[i]);
            memcpy(dp, sp, src->param_sizes[i] * sizeof(float));
        }
        sp += src->param_sizes[i];
        dp += dst->param_sizes[i];
    }
    CHECK(dst->param_sizes[PARAM_KVNW] == 0);
    const size_t QKVs = (size_t)(NH + 2 * NKV) * HS, NQ = (size_t)NH * HS, NKV2 = 2 * (size_t)NH * HS;
    const int kept = r < C ? r : C;  // latent dimensions a C-wide x can fill
    double *kv_sq = calloc_check((size_t)L, sizeof(double)), *cut_sq = calloc_check((size_t)L, sizeof(double));
#pragma omp parallel for schedule(dynamic, 1)
    for (int l = 0; l < L; l++) {
        const float *ws = src->params.qkvw + (size_t)l * QKVs * C;
        const float *bs = cs->bias ? src->params.qkvb + (size_t)l * QKVs : NULL;
        float *q = dst->params.qkvw + (size_t)l * NQ * C, *dkvw = dst->params.dkvw + (size_t)l * r * C;
        float *ukvw = dst->params.ukvw + (size_t)l * NKV2 * r;
        // the query rows as they are (D = HS: no rotary part)
        memcpy(q, ws, NQ * C * sizeof(float));
        if (cd.bias) {
            memcpy(dst->params.qkvb + (size_t)l * NQ, bs, NQ * sizeof(float));
            memset(dst->params.dkvb + (size_t)l * r, 0, (size_t)r * sizeof(float));
        }
        // M_src: the source's K rows then V rows, (2*NKV*HS, C)
        const int m = full;
        double *M = malloc_check((size_t)m * C * sizeof(double)), *sigma = malloc_check((size_t)C * sizeof(double));
        double *vt = malloc_check((size_t)C * C * sizeof(double)), *av = malloc_check((size_t)m * C * sizeof(double));
        double norm2 = 0;
        for (size_t i = 0; i < (size_t)m * C; i++) M[i] = ws[NQ * C + i], norm2 += M[i] * M[i];
        convert_svd(M, m, C, sigma, vt, av);
        double cut = 0;
        for (int j = kept; j < C; j++) cut += sigma[j] * sigma[j];
        kv_sq[l] = group * norm2, cut_sq[l] = group * cut;  // of M_exp: each KV head's rows `group` times
        // dkvw = V_r^T; rows past C zero
        memset(dkvw, 0, (size_t)r * C * sizeof(float));
        for (int j = 0; j < kept; j++)
            for (int k = 0; k < C; k++) dkvw[(size_t)j * C + k] = (float)vt[(size_t)j * C + k];
        // ukvw = M_exp V_r = U_r S_r, row part*NH*HS + h*HS + d from M_src's row part*NKV*HS + (h/group)*HS + d;
        // a column of round-off (sigma at the zero level) is written as the zero it stands for
        const double zero = sigma[0] * (double)C * DBL_EPSILON;
        for (int part = 0; part < 2; part++)
            for (int h = 0; h < NH; h++)
                for (int d = 0; d < HS; d++) {
                    const size_t srow = (size_t)part * NKV * HS + (size_t)(h / group) * HS + d;
                    const size_t drow = (size_t)part * NH * HS + (size_t)h * HS + d;
                    float *u = ukvw + drow * r;
                    for (int j = 0; j < r; j++) u[j] = j < kept && sigma[j] > zero ? (float)av[srow * C + j] : 0.0f;
                    if (cd.bias) dst->params.ukvb[(size_t)l * NKV2 + drow] = bs[NQ + srow];
                }
        free(M), free(sigma), free(vt), free(av);
    }
    if (stats) {
        stats->worst_layer = 0, stats->worst_rel = -1;
        for (int l = 0; l < L; l++) {
            stats->kv_sq += kv_sq[l], stats->discarded_sq += cut_sq[l];
            const double rel = kv_sq[l] > 0 ? sqrt(cut_sq[l] / kv_sq[l]) : 0;
            if (rel > stats->worst_rel) stats->worst_rel = rel, stats->worst_layer = l;
        }
    }
    free(kv_sq), free(cut_sq);
    return 0;
}
