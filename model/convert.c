/*
 * convert.c: change a model's number of KV heads (GQA paper, Ainslie et al.
 * 2023, section 2.1). The `gqa convert` subcommand is cli/convert.c.
 *
 * Reducing NKV_src -> G (G divides NKV_src): target KV head j stands for the
 * r = NKV_src / G source heads j*r .. j*r + r - 1, which are exactly the
 * heads the query heads of its new group read, so:
 *   mean    averages their K and V projection rows (and biases),
 *   first   keeps the first of them,
 *   random  re-initialises K and V (normal 0.02, biases 0).
 * Expanding NKV_src -> G (G a multiple of NKV_src), method repeat: target
 * head j copies source head j / (G / NKV_src); the logits do not change.
 * Everything but the K and V rows of W_qkv is copied as it is.
 */
#include "convert.h"

#include <stdlib.h>
#include <string.h>

#include "../util/rng.h"
#include "../util/util.h"
#include "checkpoint.h"

const char *const convert_method_names[] = {"mean", "first", "random", "repeat", NULL};

int gpt_convert_kv_heads(const GPT *src, GPT *dst, int G, ConvertMethod method, uint64_t seed, char *err,
                         size_t errlen) {
    const GPTConfig *cs = &src->config;
    const int NH = cs->n_head, S = cs->n_kv_head, C = cs->n_embd, HS = C / NH, L = cs->n_layer;
    memset(dst, 0, sizeof *dst);
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
