/*
 * tokens.h: token files (DIR/train.bin, DIR/val.bin), the output of
 * `gqa prepare` and the input of training. A versioned header, then the
 * tokens as little-endian uint16 (vocab_size <= 65536) or uint32.
 * Byte layout in docs/formats.md.
 *
 * The reader trusts nothing: magic, version, dtype, vocab_size, the exact
 * file size and every token id are checked, and each failure is one line
 * naming the path and the values. Batching and sampling of windows are
 * left to train/.
 */
#ifndef GQA_TOKENS_H
#define GQA_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#define TOKENS_MAGIC "GQAT"
#define TOKENS_VERSION 1
#define TOKENS_HEADER_BYTES 24  // magic, u32 version, u32 dtype, u32 vocab_size, u64 count

// Write n tokens, each in [0, vocab_size), to path. dtype 2 (uint16) when
// vocab_size <= 65536, else 4 (uint32). Atomic (see write_file_atomic in util/util.h).
// Returns 0, or -1 with err naming the path and the reason (strerror).
int tokens_write(const char *path, const int *tokens, size_t n, int vocab_size, char *err, size_t errlen);

typedef struct {
    int *tokens;     // (count) as int
    size_t count;
    int vocab_size;  // from the header
} TokenFile;

// Read and validate a whole token file. If expect_vocab > 0, the header's
// vocab_size must equal it. Returns 0, or -1 with a one-line err such as
// "PATH: bad magic (not a gqa token file; re-run `gqa prepare`)"; out is
// zeroed on error, so tokens_free is always safe.
int tokens_read(const char *path, int expect_vocab, TokenFile *out, char *err, size_t errlen);
void tokens_free(TokenFile *tf);

#endif
