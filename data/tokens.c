/*
 * tokens.c: token files (tokens.h). Every failure is a returned one-line message naming
 * the path; nothing here dies on bad input or a full disk.
 */
#include "tokens.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/util.h"

// ----------------------------------------------------------------------------
// token files

int tokens_write(const char *path, const int *tokens, size_t n, int vocab_size, char *err, size_t errlen) {
    if (vocab_size < 1) {
        snprintf(err, errlen, "%s: vocab_size %d must be >= 1", path, vocab_size);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= vocab_size) {
            snprintf(err, errlen, "%s: token %d at index %zu is outside [0, vocab_size %d)", path, tokens[i], i,
                     vocab_size);
            return -1;
        }
    }
    const uint32_t dtype = vocab_size <= 65536 ? 2 : 4;  // bytes per token
    size_t data_bytes, total;
    if (!size_mul(n, dtype, &data_bytes) || !size_add(data_bytes, TOKENS_HEADER_BYTES, &total)) {
        snprintf(err, errlen, "%s: %zu tokens overflow the file size", path, n);
        return -1;
    }
    uint8_t *buf = malloc_check(total);
    memcpy(buf, TOKENS_MAGIC, 4);
    put_u32le(buf + 4, TOKENS_VERSION);
    put_u32le(buf + 8, dtype);
    put_u32le(buf + 12, (uint32_t)vocab_size);
    put_u64le(buf + 16, (uint64_t)n);
    uint8_t *p = buf + TOKENS_HEADER_BYTES;
    if (dtype == 2) {
        for (size_t i = 0; i < n; i++) put_u16le(p + 2 * i, (uint16_t)tokens[i]);
    } else {
        for (size_t i = 0; i < n; i++) put_u32le(p + 4 * i, (uint32_t)tokens[i]);
    }
    int rc = write_file_atomic(path, buf, total, err, errlen);
    free(buf);
    return rc;
}

int tokens_read(const char *path, int expect_vocab, TokenFile *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint64_t fsize;
    FILE *f = fopen_regular(path, "run `gqa prepare` first?", &fsize, err, errlen);
    if (!f) return -1;
    uint8_t h[TOKENS_HEADER_BYTES];
    size_t got = fread(h, 1, sizeof h, f);
    uint8_t *raw = NULL;
    int rc = -1;
    uint32_t version = 0, dtype = 0, vocab = 0;
    uint64_t count = 0, expected = 0;
    if (got >= 4 && memcmp(h, TOKENS_MAGIC, 4) != 0) {
        snprintf(err, errlen, "%s: bad magic (not a gqa token file; re-run `gqa prepare`)", path);
        goto done;
    }
    if (got < TOKENS_HEADER_BYTES) {
        snprintf(err, errlen, "%s: truncated header: file is %zu bytes, a token file header is %d (re-run `gqa prepare`)",
                 path, got, TOKENS_HEADER_BYTES);
        goto done;
    }
    version = get_u32le(h + 4), dtype = get_u32le(h + 8), vocab = get_u32le(h + 12), count = get_u64le(h + 16);
    if (version != TOKENS_VERSION) {
        snprintf(err, errlen, "%s: unsupported version %" PRIu32 " (this build reads version %d; re-run `gqa prepare`)",
                 path, version, TOKENS_VERSION);
        goto done;
    }
    if (dtype != 2 && dtype != 4) {
        snprintf(err, errlen, "%s: bad dtype %" PRIu32 " (bytes per token must be 2 or 4)", path, dtype);
        goto done;
    }
    if (vocab < 1 || vocab > INT_MAX) {
        snprintf(err, errlen, "%s: bad vocab_size %" PRIu32 " in header (must be in [1, %d])", path, vocab, INT_MAX);
        goto done;
    }
    if (expect_vocab > 0 && vocab != (uint32_t)expect_vocab) {
        snprintf(err, errlen,
                 "%s: vocab_size %" PRIu32 " in header does not match the expected vocab_size %d "
                 "(token file and vocabulary from different `gqa prepare` runs?)",
                 path, vocab, expect_vocab);
        goto done;
    }
    if (count > (UINT64_MAX - TOKENS_HEADER_BYTES) / dtype || count > (SIZE_MAX - TOKENS_HEADER_BYTES) / dtype) {
        snprintf(err, errlen, "%s: impossible token count %" PRIu64 " in header", path, count);
        goto done;
    }
    expected = TOKENS_HEADER_BYTES + count * dtype;
    if (fsize != expected) {
        char why[64];
        if (fsize < expected) snprintf(why, sizeof why, "truncated");
        else snprintf(why, sizeof why, "%" PRIu64 " trailing bytes", fsize - expected);
        snprintf(err, errlen,
                 "%s: file is %" PRIu64 " bytes, expected %" PRIu64 " (%d-byte header + %" PRIu64 " tokens x %" PRIu32
                 " bytes): %s; re-run `gqa prepare`",
                 path, fsize, expected, TOKENS_HEADER_BYTES, count, dtype, why);
        goto done;
    }
    // fsize == expected, so these sizes fit in memory's address range
    const size_t n = (size_t)count, data_bytes = n * dtype;
    raw = malloc_check(data_bytes);
    errno = 0;
    got = fread(raw, 1, data_bytes, f);
    if (got != data_bytes) {
        snprintf(err, errlen, "%s: read %zu of %zu token bytes: %s", path, got, data_bytes,
                 errno ? strerror(errno) : "file shrank");
        goto done;
    }
    int *tokens = calloc_check(n, sizeof(int));
    for (size_t i = 0; i < n; i++) {
        uint32_t v = dtype == 2 ? get_u16le(raw + 2 * i) : get_u32le(raw + 4 * i);
        if (v >= vocab) {
            snprintf(err, errlen, "%s: token %" PRIu32 " at index %zu is >= vocab_size %" PRIu32, path, v, i, vocab);
            free(tokens);
            goto done;
        }
        tokens[i] = (int)v;
    }
    out->tokens = tokens;
    out->count = n;
    out->vocab_size = (int)vocab;
    rc = 0;
done:
    free(raw);
    fclose(f);
    return rc;
}

void tokens_free(TokenFile *tf) {
    free(tf->tokens);
    memset(tf, 0, sizeof *tf);
}
