/*
 * checkpoint.h: self-describing, checksummed checkpoint files.
 *
 * A checkpoint holds the model config (n_kv_head and the position scheme
 * among it), the tokenizer
 * as an opaque blob (data/tokenizer.h parses it; model/ does not), the
 * parameters, and optionally the training state (AdamW moments, step, RNG
 * states) for an exact resume. Layout in docs/formats.md: little-endian on
 * every host. Writes are atomic (temp file, fsync, rename); reads check
 * magic, version, every size against the file size, the config, the CRC-32,
 * and that weights are finite.
 */
#ifndef GQA_CHECKPOINT_H
#define GQA_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "gpt.h"

// Version 2 adds the position scheme (pos, rope_theta) at the end of the
// header, version 3 the attention kind (kv_lora_rank, rope_head_dim,
// latent_norm); older files still load, as pos = learned (version 1) and
// grouped attention (versions 1 and 2). Version 4 adds weight_dtype: a
// model whose weights were converted for inference (gpt_set_weight_dtype:
// bf16, f16, q8) is saved with its matrices in that form and no training
// state, and loads converted. A float32 model is still written as version
// 3, which builds before version 4 read.
#define CHECKPOINT_VERSION 4
#define CHECKPOINT_HEADER_BYTES 80
#define CHECKPOINT_V3_HEADER_BYTES 76
#define CHECKPOINT_V2_HEADER_BYTES 64
#define CHECKPOINT_V1_HEADER_BYTES 56

typedef struct {
    int step;              // optimizer steps taken
    int adam_t;            // AdamW bias-correction step
    float best_val_loss;   // best eval so far (for best.bin)
    uint64_t data_rng;     // training batch sampler state
    uint64_t model_rng;    // GPT.rng_state: dropout masks
    float *adam_m, *adam_v;  // (num_parameters) each
} TrainState;

// Save model + vocab blob (+ train state when ts != NULL). A model converted
// to bf16, f16 or q8 is saved as such (version 4; no train state; f32's
// regrouped weights are refused). 0, or -1 with err; on failure an
// existing file at path is untouched.
int checkpoint_save(const char *path, const GPT *m, const void *vocab, size_t vocab_len, const TrainState *ts,
                    char *err, size_t errlen);

// Load: initialises *m from the file's config and weights (converted, with
// m->wmat_memory set, if the file holds bf16, f16 or q8 weights: a model
// for inference only); *vocab is a malloc'd copy of the tokenizer blob. If
// ts is non-NULL and the file has a train state, fills *ts (moments
// malloc'd) and sets *has_ts = 1. Returns 0, or -1 with err naming the
// path, the field and the value.
int checkpoint_load(const char *path, GPT *m, uint8_t **vocab, size_t *vocab_len, TrainState *ts, int *has_ts,
                    char *err, size_t errlen);

// checkpoint_load's checks and parsing on bytes already in memory (path only
// names them in messages). Used by the loader and the fuzzer.
int checkpoint_parse(const char *path, const uint8_t *buf, size_t len, GPT *m, uint8_t **vocab, size_t *vocab_len,
                     TrainState *ts, int *has_ts, char *err, size_t errlen);

void train_state_free(TrainState *ts);

#endif
