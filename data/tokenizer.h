/*
 * tokenizer.h: the character-level tokenizer. A token is one Unicode code
 * point of UTF-8 text; the vocabulary is the sorted set of distinct code
 * points of the training text (nanoGPT's shakespeare_char: sorted(set(text))),
 * so token id i is the i-th smallest character seen.
 *
 * Also here: strict UTF-8 decoding (overlong forms, surrogates, values past
 * U+10FFFF and truncated sequences are errors naming the byte offset), the
 * vocabulary's byte layout (embedded in checkpoints) and the vocab.bin file.
 * Byte layouts are in docs/formats.md. Token files are data/tokens.h.
 */
#ifndef GQA_TOKENIZER_H
#define GQA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    int vocab_size;        // V
    uint32_t *codepoints;  // (V) sorted ascending; token id i is codepoints[i]
} Tokenizer;

// Largest vocabulary a serialised tokenizer may declare (there are only
// 0x110000 - 0x800 Unicode scalar values, so a valid one is always smaller).
#define TOKENIZER_MAX_VOCAB (1 << 21)

// ----------------------------------------------------------------------------
// UTF-8

// Decode the sequence starting at s[0] (len bytes available, len >= 1).
// Returns its length 1..4 with *cp set, or 0 if it is not valid UTF-8, with a
// reason ("overlong encoding of U+002F (bytes C0 AF)") written into why.
int utf8_decode(const uint8_t *s, size_t len, uint32_t *cp, char *why, size_t whylen);

// Encode a Unicode scalar value (CHECKed); returns the byte count 1..4.
int utf8_encode(uint32_t cp, char out[4]);

// ----------------------------------------------------------------------------
// build, encode, decode

// Vocabulary = the distinct code points of valid UTF-8 text, sorted.
// Returns 0, or -1 with err naming the byte offset of invalid UTF-8 or saying
// the text is empty (t is then zeroed).
int tokenizer_build(Tokenizer *t, const char *text, size_t len, char *err, size_t errlen);

// Encode UTF-8 text to ids; out must hold len ints (ids <= bytes).
// *n_out = number of tokens. -1 with err (and *n_out = 0) on invalid UTF-8 or
// a character not in the vocabulary, e.g.
// "character 'Z' (U+005A) at byte 3 is not in the vocabulary (65 characters)".
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int *out, size_t *n_out, char *err,
                     size_t errlen);

// UTF-8 bytes of token id into out (no NUL terminator); returns the byte
// count (1..4). id must be in [0, vocab_size) (CHECKed).
int tokenizer_decode(const Tokenizer *t, int id, char out[4]);

// Token id of a code point, or -1 if it is not in the vocabulary.
int tokenizer_lookup(const Tokenizer *t, uint32_t cp);

// ----------------------------------------------------------------------------
// serialisation: u32 vocab_size, then vocab_size x u32 code points, little-endian

size_t tokenizer_serialized_size(const Tokenizer *t);
void tokenizer_write(const Tokenizer *t, FILE *f);  // fwrite_check: dies on failure

// Parse from buf of len bytes. Validates the count (1..TOKENIZER_MAX_VOCAB),
// that len holds it, that each code point is a scalar value (<= 0x10FFFF, not
// a surrogate) and that they strictly ascend. Returns the bytes consumed, or
// 0 with err ("vocabulary: ...") and t zeroed. Safe on any input.
size_t tokenizer_parse(Tokenizer *t, const uint8_t *buf, size_t len, char *err, size_t errlen);

// vocab.bin: magic "GQAV", u32 version 1, then the layout above, nothing
// after. Save is atomic (path.tmp, fflush, fsync, rename); load validates
// magic, version and sizes. Both return 0, or -1 with err naming the path.
#define TOKENIZER_FILE_VERSION 1
int tokenizer_save(const Tokenizer *t, const char *path, char *err, size_t errlen);
int tokenizer_load(Tokenizer *t, const char *path, char *err, size_t errlen);

void tokenizer_free(Tokenizer *t);

#endif
