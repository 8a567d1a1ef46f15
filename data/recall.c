/*
 * recall.c: the multi-query associative recall task (recall.h): checks,
 * generator, vocabulary, layout check, accuracy and DIR/recall.bin. Every
 * failure on user input is a returned one-line message; nothing here dies
 * on bad input.
 */
#include "recall.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/rng.h"
#include "../util/util.h"

// Stream keys of the two splits (xored into the seed).
#define RECALL_STREAM_TRAIN 0x7261696E5EEDull
#define RECALL_STREAM_VAL 0x76616C5EEDull

// ----------------------------------------------------------------------------
// the task's description

static int check_fields(const RecallTask *t, int resolve_queries, char *err, size_t errlen) {
    const int V = t->vocab_size, P = t->num_pairs, S = t->seq_len;
    if (V < 4 || V > RECALL_MAX_VOCAB) {
        snprintf(err, errlen, "vocab_size %d is out of range [4, %d]", V, RECALL_MAX_VOCAB);
        return -1;
    }
    if (V % 2 != 0) {
        snprintf(err, errlen, "vocab_size %d must be even: keys are ids [0, V/2), values [V/2, V)", V);
        return -1;
    }
    if (P < 1 || P > V / 2) {
        snprintf(err, errlen,
                 "num_pairs %d is out of range [1, %d]: a sequence's keys are distinct, and so are its values, "
                 "each drawn from the %d of vocab_size %d",
                 P, V / 2, V / 2, V);
        return -1;
    }
    if (S < 4 || S > RECALL_MAX_SEQ_LEN) {
        snprintf(err, errlen, "seq_len %d is out of range [4, %d]", S, RECALL_MAX_SEQ_LEN);
        return -1;
    }
    if (S % 2 != 0) {
        snprintf(err, errlen, "seq_len %d must be even: pairs (key, value) then pairs (query, answer)", S);
        return -1;
    }
    if (S < 2 * P + 2) {
        snprintf(err, errlen, "seq_len %d leaves no room for a query after %d pairs: it must be >= 2 * num_pairs + 2 = %d",
                 S, P, 2 * P + 2);
        return -1;
    }
    if (!resolve_queries && t->num_queries != S / 2 - P) {
        snprintf(err, errlen, "num_queries %d is not seq_len / 2 - num_pairs = %d", t->num_queries, S / 2 - P);
        return -1;
    }
    const struct {
        const char *name;
        uint64_t n;
    } splits[2] = {{"num_train", t->num_train}, {"num_val", t->num_val}};
    for (int i = 0; i < 2; i++) {
        if (splits[i].n < 2) {
            snprintf(err, errlen,
                     "%s %" PRIu64 " is too few: a split needs at least 2 sequences (a window of seq_len + 1 tokens)",
                     splits[i].name, splits[i].n);
            return -1;
        }
        if (splits[i].n > RECALL_MAX_TOKENS / (uint64_t)S) {
            snprintf(err, errlen, "%s %" PRIu64 " x seq_len %d is more than the %" PRIu64 " tokens allowed per split",
                     splits[i].name, splits[i].n, S, RECALL_MAX_TOKENS);
            return -1;
        }
    }
    return 0;
}

int recall_task_check(const RecallTask *t, char *err, size_t errlen) { return check_fields(t, 0, err, errlen); }

int recall_task_resolve(RecallTask *t, char *err, size_t errlen) {
    if (check_fields(t, 1, err, errlen) != 0) return -1;
    t->num_queries = t->seq_len / 2 - t->num_pairs;
    return 0;
}

// ----------------------------------------------------------------------------
// the generator

void recall_generate(const RecallTask *t, int split, size_t n_seq, int *out) {
    const int K = t->vocab_size / 2, P = t->num_pairs, Q = t->num_queries, S = t->seq_len;
    uint64_t rng = rng_mix64(t->seed ^ (split == 0 ? RECALL_STREAM_TRAIN : RECALL_STREAM_VAL));
    // Permutations carried from sequence to sequence: a partial Fisher-Yates
    // over any permutation draws a uniform set of distinct ids, so they are
    // never reset (and generation is O(P) per sequence, not O(V)).
    int *kperm = malloc_check((size_t)K * sizeof(int)), *vperm = malloc_check((size_t)K * sizeof(int));
    for (int i = 0; i < K; i++) kperm[i] = i, vperm[i] = K + i;
    for (size_t s = 0; s < n_seq; s++) {
        int *seq = out + s * (size_t)S;
        for (int i = 0; i < P; i++) {  // pair i: the i-th of a fresh draw of keys and of values
            int j = i + (int)(rng_u64(&rng) % (uint64_t)(K - i)), tmp = kperm[i];
            kperm[i] = kperm[j], kperm[j] = tmp;
            j = i + (int)(rng_u64(&rng) % (uint64_t)(K - i)), tmp = vperm[i];
            vperm[i] = vperm[j], vperm[j] = tmp;
            seq[2 * i] = kperm[i], seq[2 * i + 1] = vperm[i];
        }
        // each query asks a pair drawn anew (with replacement): asking each
        // pair once per round would give the last of a round away to a model
        // that only tracks which values have not been answered yet
        for (int q = 0; q < Q; q++) {
            const int pair = (int)(rng_u64(&rng) % (uint64_t)P);
            seq[2 * P + 2 * q] = seq[2 * pair];
            seq[2 * P + 2 * q + 1] = seq[2 * pair + 1];
        }
    }
    free(kperm), free(vperm);
}

void recall_vocab(const RecallTask *t, Tokenizer *tok) {
    const int K = t->vocab_size / 2;
    const uint32_t key0 = K <= 26 ? 'A' : 0x4E00, value0 = K <= 26 ? 'a' : 0xAC00;
    tok->vocab_size = t->vocab_size;
    tok->codepoints = malloc_check((size_t)t->vocab_size * sizeof(uint32_t));
    for (int i = 0; i < K; i++) tok->codepoints[i] = key0 + (uint32_t)i, tok->codepoints[K + i] = value0 + (uint32_t)i;
}

int recall_check_tokens(const RecallTask *t, const int *tokens, size_t n, char *err, size_t errlen) {
    const int V = t->vocab_size, K = V / 2, P = t->num_pairs, S = t->seq_len;
    if (n % (size_t)S != 0) {
        snprintf(err, errlen, "%zu tokens are not whole sequences of seq_len %d", n, S);
        return -1;
    }
    // seen[id] = 1 + the sequence that last used id; value_of[key] its value there
    uint64_t *seen = calloc_check((size_t)V, sizeof(uint64_t));
    int *value_of = calloc_check((size_t)K, sizeof(int));
    int rc = -1;
    for (size_t s = 0; s < n / (size_t)S; s++) {
        const int *seq = tokens + s * (size_t)S;
        const uint64_t stamp = s + 1;
        for (int p = 0; p < S; p++) {
            const int id = seq[p];
            const char *what = NULL;
            if (id < 0 || id >= V) what = "outside the vocabulary";
            else if (p < 2 * P && p % 2 == 0 && id >= K) what = "a value where a key belongs";
            else if (p < 2 * P && p % 2 == 1 && id < K) what = "a key where a value belongs";
            else if (p < 2 * P && seen[id] == stamp) what = p % 2 == 0 ? "a repeated key" : "a repeated value";
            else if (p >= 2 * P && p % 2 == 0 && (id >= K || seen[id] != stamp)) what = "a query that is not a key of its pairs";
            else if (p >= 2 * P && p % 2 == 1 && id != value_of[seq[p - 1]]) what = "an answer that is not its query's value";
            if (what) {
                snprintf(err, errlen, "sequence %zu position %d: token %d is %s", s, p, id, what);
                goto done;
            }
            if (p < 2 * P) {
                seen[id] = stamp;
                if (p % 2 == 1) value_of[seq[p - 1]] = id;
            }
        }
    }
    rc = 0;
done:
    free(seen), free(value_of);
    return rc;
}

void recall_window_mask(const RecallTask *t, size_t start, int T, uint8_t *mask) {
    for (int i = 0; i < T; i++) mask[i] = (uint8_t)recall_is_answer(t, (start + (size_t)i + 1) % (size_t)t->seq_len);
}

// ----------------------------------------------------------------------------
// accuracy

void recall_argmax(const float *logits, size_t rows, int V, int *preds) {
    for (size_t r = 0; r < rows; r++) {
        const float *l = logits + r * (size_t)V;
        int best = 0;
        for (int j = 1; j < V; j++)
            if (l[j] > l[best]) best = j;
        preds[r] = best;
    }
}

size_t recall_score(const int *preds, const int *targets, const uint8_t *mask, size_t n, size_t *correct) {
    size_t answers = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mask[i]) continue;
        answers++;
        hits += preds[i] == targets[i];
    }
    *correct = hits;
    return answers;
}

double recall_accuracy(const int *preds, const int *targets, const uint8_t *mask, size_t n) {
    size_t correct;
    const size_t answers = recall_score(preds, targets, mask, n, &correct);
    return answers ? (double)correct / (double)answers : NAN;
}

// ----------------------------------------------------------------------------
// DIR/recall.bin

int recall_write(const char *path, const RecallTask *t, char *err, size_t errlen) {
    char why[256];
    if (recall_task_check(t, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    uint8_t b[RECALL_FILE_BYTES];
    memcpy(b, RECALL_MAGIC, 4);
    put_u32le(b + 4, RECALL_VERSION);
    put_u32le(b + 8, (uint32_t)t->vocab_size);
    put_u32le(b + 12, (uint32_t)t->num_pairs);
    put_u32le(b + 16, (uint32_t)t->seq_len);
    put_u32le(b + 20, (uint32_t)t->num_queries);
    put_u64le(b + 24, t->num_train);
    put_u64le(b + 32, t->num_val);
    put_u64le(b + 40, t->seed);
    return write_file_atomic(path, b, sizeof b, err, errlen);
}

int recall_read(const char *path, RecallTask *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    uint64_t fsize;
    FILE *f = fopen_regular(path, "run `gqa prepare --task recall` first?", &fsize, err, errlen);
    if (!f) return -1;
    uint8_t b[RECALL_FILE_BYTES];
    const size_t got = fread(b, 1, sizeof b, f);
    fclose(f);
    if (got >= 4 && memcmp(b, RECALL_MAGIC, 4) != 0) {
        snprintf(err, errlen, "%s: bad magic (not a gqa recall task file; re-run `gqa prepare --task recall`)", path);
        return -1;
    }
    if (fsize != RECALL_FILE_BYTES || got != RECALL_FILE_BYTES) {
        snprintf(err, errlen, "%s: file is %" PRIu64 " bytes, a recall task file is %d (re-run `gqa prepare --task recall`)",
                 path, fsize, RECALL_FILE_BYTES);
        return -1;
    }
    const uint32_t version = get_u32le(b + 4);
    if (version != RECALL_VERSION) {
        snprintf(err, errlen,
                 "%s: unsupported version %" PRIu32 " (this build reads version %d; re-run `gqa prepare --task recall`)",
                 path, version, RECALL_VERSION);
        return -1;
    }
    const char *names[4] = {"vocab_size", "num_pairs", "seq_len", "num_queries"};
    int v[4];
    for (int i = 0; i < 4; i++) {
        const uint32_t u = get_u32le(b + 8 + 4 * i);
        if (u > INT_MAX) {
            snprintf(err, errlen, "%s: %s %" PRIu32 " is out of range", path, names[i], u);
            return -1;
        }
        v[i] = (int)u;
    }
    RecallTask r = {.vocab_size = v[0], .num_pairs = v[1], .seq_len = v[2], .num_queries = v[3],
                    .num_train = get_u64le(b + 24), .num_val = get_u64le(b + 32), .seed = get_u64le(b + 40)};
    char why[256];
    if (recall_task_check(&r, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    *t = r;
    return 0;
}
