/*
 * recall.h: multi-query associative recall (MQAR, Arora et al. 2023,
 * "Zoology", arXiv 2312.04927), a synthetic task on which attention
 * capacity matters. Each sequence of S = seq_len tokens holds P key-value
 * pairs, then Q = S/2 - P queries of those keys, each followed by its
 * value, the answer:
 *
 *     k_0 v_0 k_1 v_1 .. k_{P-1} v_{P-1} | q_0 a_0 q_1 a_1 .. q_{Q-1} a_{Q-1}
 *
 * Keys are token ids [0, V/2), values [V/2, V). Within a sequence the P
 * keys are distinct and so are the P values; each query asks one of the P
 * pairs drawn uniformly and independently (a key may be asked again, and
 * which keys were asked says nothing of the next). Position p of a sequence
 * holds an answer iff p >= 2P and p - 2P is odd (recall_is_answer).
 *
 * Here: the task's description and its file DIR/recall.bin (magic, version,
 * checked reader), the seeded generator, the vocabulary's readable
 * characters, a check that token files follow the layout, and the accuracy
 * on answer positions (a pure function of predictions, targets and a mask).
 * The token files themselves are data/tokens.h; windows and the model's
 * logits are train/'s. Byte layout in docs/formats.md.
 */
#ifndef GQA_RECALL_H
#define GQA_RECALL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

#define RECALL_MAGIC "GQAR"
#define RECALL_VERSION 1
#define RECALL_FILE_BYTES 48  // magic, u32 version, u32 V, u32 P, u32 S, u32 Q, u64 train, u64 val, u64 seed

// Keys are shown as 'A'.. and values as 'a'.. while V/2 <= 26; beyond, as
// CJK ideographs (U+4E00..) and Hangul syllables (U+AC00..), of which there
// are 11172: so V/2 <= 11172.
#define RECALL_MAX_VOCAB (2 * 11172)
#define RECALL_MAX_SEQ_LEN 65536
#define RECALL_MAX_TOKENS ((uint64_t)1 << 31)  // per split: num_* x seq_len

typedef struct {
    int vocab_size;   // V, even: keys [0, V/2), values [V/2, V)
    int num_pairs;    // P, 1 <= P <= V/2
    int seq_len;      // S, even, >= 2P + 2
    int num_queries;  // Q = S/2 - P >= 1
    uint64_t num_train, num_val;  // sequences in train.bin and val.bin, each >= 2
    uint64_t seed;    // of the generator
} RecallTask;

// Fill num_queries from the other fields and check everything: 0, or -1
// with a one-line err naming the value and the bound ("num_pairs 30 is more
// than the 26 keys of vocab_size 52 ...").
int recall_task_resolve(RecallTask *t, char *err, size_t errlen);
// The same checks without filling anything (num_queries must be S/2 - P).
int recall_task_check(const RecallTask *t, char *err, size_t errlen);

// Does position p (0 <= p < S) of a sequence hold an answer?
static inline int recall_is_answer(const RecallTask *t, size_t p) {
    return p >= 2 * (size_t)t->num_pairs && (p - 2 * (size_t)t->num_pairs) % 2 == 1;
}

// Generate n_seq sequences (n_seq x S tokens into out) of one split. split
// 0 is train, 1 is val: each draws from its own stream of the seed, so the
// same seed always gives the same bytes, and val never repeats train's draws.
void recall_generate(const RecallTask *t, int split, size_t n_seq, int *out);

// The vocabulary: V code points, keys then values, ascending (see above).
void recall_vocab(const RecallTask *t, Tokenizer *tok);

// Check that n tokens are whole sequences in the layout: keys and values
// where they belong, distinct within a sequence, each query a key of its
// sequence and each answer that key's value. 0, or -1 with err naming the
// sequence and the position.
int recall_check_tokens(const RecallTask *t, const int *tokens, size_t n, char *err, size_t errlen);

// Answer mask of a training window: the window's inputs start at token
// `start` of a split (a multiple of S), and mask[i] (i < T) says whether its
// target i, the token at start + i + 1, is an answer.
void recall_window_mask(const RecallTask *t, size_t start, int T, uint8_t *mask);

// ----------------------------------------------------------------------------
// accuracy on answer positions

// preds[i] = argmax of logits row i (rows x V), the lowest id on ties.
void recall_argmax(const float *logits, size_t rows, int V, int *preds);
// Of the n positions with mask[i] != 0, how many have preds[i] == targets[i]:
// returns the number of masked positions, *correct the hits among them.
size_t recall_score(const int *preds, const int *targets, const uint8_t *mask, size_t n, size_t *correct);
// The fraction correct among masked positions; NAN when none is masked.
double recall_accuracy(const int *preds, const int *targets, const uint8_t *mask, size_t n);

// ----------------------------------------------------------------------------
// DIR/recall.bin

// Write (atomically) and read the task file. The reader checks the magic,
// the exact length, the version and every field (recall_task_check); 0, or
// -1 with err "PATH: ..." and *t zeroed.
int recall_write(const char *path, const RecallTask *t, char *err, size_t errlen);
int recall_read(const char *path, RecallTask *t, char *err, size_t errlen);

#endif
