/*
 * adamw.c: the AdamW step (see adamw.h). One loop per parameter tensor, so
 * each tensor's weight-decay rule is applied without a per-element branch.
 */
#include "adamw.h"

#include <math.h>
#include <stdlib.h>

#include "../util/util.h"

void adamw_init(AdamW *opt, size_t n, float beta1, float beta2, float eps, float weight_decay) {
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->m = calloc_check(n, sizeof(float));
    opt->v = calloc_check(n, sizeof(float));
    opt->n = n;
    opt->t = 0;
}

void adamw_free(AdamW *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

void adamw_step(AdamW *opt, GPT *model, float lr) {
    CHECK(opt->n == model->num_parameters && model->grads_memory != NULL);
    opt->t++;
    const float b1 = opt->beta1, b2 = opt->beta2, eps = opt->eps;
    // PyTorch's arrangement: step = lr / bc1 and denom = sqrt(v) / sqrt(bc2) + eps,
    // one square root and one division per number (the division by sqrt(bc2)
    // taken as a product with its inverse)
    const float step = lr / (1.0f - powf(b1, (float)opt->t)), inv_bc2s = 1.0f / sqrtf(1.0f - powf(b2, (float)opt->t));
    const float *grads = model->grads_memory;
    float *params = model->params_memory, *ms = opt->m, *vs = opt->v;
    // one parallel region for all tensors (a fork/join per tensor costs more
    // than a small tensor's update); the tensors' loops share it without barriers
#pragma omp parallel
    {
        size_t off = 0;
        for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
            const size_t n = model->param_sizes[i];
            const float decay = 1.0f - lr * (gpt_param_decays(i) ? opt->weight_decay : 0.0f);
            float *p = params + off, *m = ms + off, *v = vs + off;
            const float *g = grads + off;
#pragma omp for schedule(static) nowait
            for (size_t j = 0; j < n; j++) {
                m[j] = b1 * m[j] + (1.0f - b1) * g[j];
                v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
                // decoupled decay: p = p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)
                p[j] = p[j] * decay - step * m[j] / (sqrtf(v[j]) * inv_bc2s + eps);
            }
            off += n;
        }
    }
}

float grad_global_norm(const GPT *model) {
    const float *g = model->grads_memory;
    const size_t n = model->num_parameters;
    double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < n; i++) sum += (double)g[i] * g[i];
    return (float)sqrt(sum);
}

void grads_scale(GPT *model, float s) {
    float *g = model->grads_memory;
    const size_t n = model->num_parameters;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] *= s;
}
