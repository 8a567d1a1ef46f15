/*
 * adamw.h: AdamW with decoupled weight decay, as torch.optim.AdamW and
 * nanoGPT apply it: decay on every parameter tensor of dim >= 2 (matrices
 * and embeddings), none on biases and LayerNorm parameters.
 *
 * The moments m and v are one arena laid out like the parameters, so the
 * update is a single pass and a checkpoint saves them in one write.
 */
#ifndef GQA_ADAMW_H
#define GQA_ADAMW_H

#include <stddef.h>

#include "../model/gpt.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
    float *m;    // (num_parameters) first moment
    float *v;    // (num_parameters) second moment
    size_t n;    // num_parameters
    int t;       // steps taken (bias correction)
} AdamW;

// Zeroed moments for a model of n parameters.
void adamw_init(AdamW *opt, size_t n, float beta1, float beta2, float eps, float weight_decay);
void adamw_free(AdamW *opt);

// One step at learning rate lr on the model's params from its grads.
void adamw_step(AdamW *opt, GPT *model, float lr);

// L2 norm of all gradients, accumulated in double.
float grad_global_norm(const GPT *model);
// Multiply all gradients by s (gradient clipping).
void grads_scale(GPT *model, float s);

#endif
