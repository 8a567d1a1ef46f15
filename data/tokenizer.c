/*
 * tokenizer.c: the character-level tokenizer of tokenizer.h. UTF-8 is
 * decoded strictly (RFC 3629): a byte string is either exactly one sequence
 * of code points or an error at a byte offset, never silently repaired, so
 * encode(decode(ids)) == ids and decode(encode(text)) == text.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

#define UNICODE_MAX 0x10FFFFu

static int is_surrogate(uint32_t cp) { return cp >= 0xD800 && cp <= 0xDFFF; }

// ----------------------------------------------------------------------------
// UTF-8

int utf8_decode(const uint8_t *s, size_t len, uint32_t *cp, char *why, size_t whylen) {
    const uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    int n;          // sequence length announced by the lead byte
    uint32_t c;     // code point being assembled
    uint32_t least; // smallest code point that needs n bytes (smaller is overlong)
    if (b0 < 0xC0) {
        snprintf(why, whylen, "unexpected continuation byte 0x%02X", b0);
        return 0;
    } else if (b0 < 0xE0) {
        n = 2, c = b0 & 0x1Fu, least = 0x80;
    } else if (b0 < 0xF0) {
        n = 3, c = b0 & 0x0Fu, least = 0x800;
    } else if (b0 < 0xF8) {
        n = 4, c = b0 & 0x07u, least = 0x10000;
    } else {
        snprintf(why, whylen, "byte 0x%02X never appears in UTF-8", b0);
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((size_t)i >= len) {
            snprintf(why, whylen, "truncated sequence: lead byte 0x%02X starts a %d-byte sequence but the text ends after %zu byte%s of it",
                     b0, n, len, len == 1 ? "" : "s");
            return 0;
        }
        if ((s[i] & 0xC0) != 0x80) {
            snprintf(why, whylen, "lead byte 0x%02X starts a %d-byte sequence but byte %d of it is 0x%02X, not a continuation byte",
                     b0, n, i + 1, s[i]);
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3Fu);
    }
    if (c < least) {
        char bytes[16];  // "F0 82 82 AC"
        for (int i = 0; i < n; i++) snprintf(bytes + 3 * i, sizeof bytes - 3 * (size_t)i, "%02X ", s[i]);
        bytes[3 * n - 1] = '\0';
        snprintf(why, whylen, "overlong %d-byte encoding of U+%04X (bytes %s)", n, c, bytes);
        return 0;
    }
    if (is_surrogate(c)) {
        snprintf(why, whylen, "UTF-16 surrogate U+%04X is not a character", c);
        return 0;
    }
    if (c > UNICODE_MAX) {
        snprintf(why, whylen, "U+%X is beyond U+10FFFF", c);
        return 0;
    }
    *cp = c;
    return n;
}

int utf8_encode(uint32_t cp, char out[4]) {
    CHECK(cp <= UNICODE_MAX && !is_surrogate(cp));
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// ----------------------------------------------------------------------------
// build, encode, decode

int tokenizer_build(Tokenizer *t, const char *text, size_t len, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (len == 0) {
        snprintf(err, errlen, "text is empty: no characters to build a vocabulary from");
        return -1;
    }
    // one bit per code point (136 KiB): the sorted set falls out of a scan
    const size_t nwords = (UNICODE_MAX + 1) / 64;
    uint64_t *seen = calloc_check(nwords, sizeof(uint64_t));
    const uint8_t *s = (const uint8_t *)text;
    size_t V = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        char why[160];
        int n = utf8_decode(s + i, len - i, &cp, why, sizeof why);
        if (n == 0) {
            snprintf(err, errlen, "invalid UTF-8 at byte %zu: %s", i, why);
            free(seen);
            return -1;
        }
        uint64_t bit = 1ull << (cp & 63);
        if (!(seen[cp >> 6] & bit)) seen[cp >> 6] |= bit, V++;
        i += (size_t)n;
    }
    t->codepoints = malloc_check(V * sizeof(uint32_t));
    size_t k = 0;
    for (size_t w = 0; w < nwords; w++)
        for (uint64_t bits = seen[w]; bits; bits &= bits - 1)
            t->codepoints[k++] = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(bits));
    CHECK(k == V);
    t->vocab_size = (int)V;
    free(seen);
    return 0;
}

int tokenizer_lookup(const Tokenizer *t, uint32_t cp) {
    int lo = 0, hi = t->vocab_size - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->codepoints[mid] == cp) return mid;
        if (t->codepoints[mid] < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

// "'Z' (U+005A)", "'\n' (U+000A)" or, for other control characters, "U+0007".
static void describe_char(uint32_t cp, char *buf, size_t len) {
    const char *esc = cp == '\n' ? "\\n" : cp == '\t' ? "\\t" : cp == '\r' ? "\\r" : NULL;
    if (esc) {
        snprintf(buf, len, "'%s' (U+%04X)", esc, cp);
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
        snprintf(buf, len, "U+%04X", cp);
    } else {
        char u[5];
        u[utf8_encode(cp, u)] = '\0';
        snprintf(buf, len, "'%s' (U+%04X)", u, cp);
    }
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int *out, size_t *n_out, char *err,
                     size_t errlen) {
    const uint8_t *s = (const uint8_t *)text;
    size_t n = 0;
    *n_out = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        char why[160];
        int nb = utf8_decode(s + i, len - i, &cp, why, sizeof why);
        if (nb == 0) {
            snprintf(err, errlen, "invalid UTF-8 at byte %zu: %s", i, why);
            return -1;
        }
        int id = tokenizer_lookup(t, cp);
        if (id < 0) {
            char desc[32];
            describe_char(cp, desc, sizeof desc);
            snprintf(err, errlen, "character %s at byte %zu is not in the vocabulary (%d character%s)", desc, i,
                     t->vocab_size, t->vocab_size == 1 ? "" : "s");
            return -1;
        }
        out[n++] = id;
        i += (size_t)nb;
    }
    *n_out = n;
    return 0;
}

int tokenizer_decode(const Tokenizer *t, int id, char out[4]) {
    CHECK(id >= 0 && id < t->vocab_size);
    return utf8_encode(t->codepoints[id], out);
}

// ----------------------------------------------------------------------------
// serialisation

size_t tokenizer_serialized_size(const Tokenizer *t) { return 4 + 4 * (size_t)t->vocab_size; }

static void tokenizer_serialize(const Tokenizer *t, uint8_t *buf) {
    put_u32le(buf, (uint32_t)t->vocab_size);
    for (int i = 0; i < t->vocab_size; i++) put_u32le(buf + 4 + 4 * (size_t)i, t->codepoints[i]);
}

void tokenizer_write(const Tokenizer *t, FILE *f) {
    size_t n = tokenizer_serialized_size(t);
    uint8_t *buf = malloc_check(n);
    tokenizer_serialize(t, buf);
    fwrite_check(buf, 1, n, f);
    free(buf);
}

size_t tokenizer_parse(Tokenizer *t, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (len < 4) {
        snprintf(err, errlen, "vocabulary: truncated: %zu bytes, need 4 for vocab_size", len);
        return 0;
    }
    uint32_t V = get_u32le(buf);
    if (V < 1 || V > TOKENIZER_MAX_VOCAB) {
        snprintf(err, errlen, "vocabulary: vocab_size %u is out of range [1, %d]", V, TOKENIZER_MAX_VOCAB);
        return 0;
    }
    size_t need = 4 + 4 * (size_t)V;
    if (len < need) {
        snprintf(err, errlen, "vocabulary: truncated: vocab_size %u needs %zu bytes, have %zu", V, need, len);
        return 0;
    }
    for (uint32_t i = 0; i < V; i++) {
        uint32_t cp = get_u32le(buf + 4 + 4 * (size_t)i);
        if (cp > UNICODE_MAX || is_surrogate(cp)) {
            snprintf(err, errlen, "vocabulary: code point 0x%X at index %u is not a Unicode scalar value", cp, i);
            return 0;
        }
        if (i > 0 && cp <= get_u32le(buf + 4 * (size_t)i)) {
            snprintf(err, errlen, "vocabulary: code points must strictly ascend, but index %u is U+%04X after U+%04X", i,
                     cp, get_u32le(buf + 4 * (size_t)i));
            return 0;
        }
    }
    t->codepoints = malloc_check((size_t)V * sizeof(uint32_t));
    for (uint32_t i = 0; i < V; i++) t->codepoints[i] = get_u32le(buf + 4 + 4 * (size_t)i);
    t->vocab_size = (int)V;
    return need;
}

// ----------------------------------------------------------------------------
// vocab.bin

#define VOCAB_MAGIC "GQAV"
#define VOCAB_HEADER_BYTES 8  // magic, u32 version

int tokenizer_save(const Tokenizer *t, const char *path, char *err, size_t errlen) {
    size_t n = VOCAB_HEADER_BYTES + tokenizer_serialized_size(t);
    uint8_t *buf = malloc_check(n);
    memcpy(buf, VOCAB_MAGIC, 4);
    put_u32le(buf + 4, TOKENIZER_FILE_VERSION);
    tokenizer_serialize(t, buf + VOCAB_HEADER_BYTES);
    int rc = write_file_atomic(path, buf, n, err, errlen);
    free(buf);
    return rc;
}

int tokenizer_load(Tokenizer *t, const char *path, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    uint8_t *buf;
    size_t len;
    const size_t max_bytes = VOCAB_HEADER_BYTES + 4 + 4 * (size_t)TOKENIZER_MAX_VOCAB;
    if (read_file(path, max_bytes, &buf, &len, err, errlen) != 0) return -1;
    int rc = -1;
    char inner[256];
    if (len >= 4 && memcmp(buf, VOCAB_MAGIC, 4) != 0) {
        snprintf(err, errlen, "%s: bad magic (not a gqa vocabulary file; re-run `gqa prepare`)", path);
    } else if (len < VOCAB_HEADER_BYTES) {
        snprintf(err, errlen, "%s: truncated header: %zu bytes, a vocabulary file header is %d (re-run `gqa prepare`)",
                 path, len, VOCAB_HEADER_BYTES);
    } else if (get_u32le(buf + 4) != TOKENIZER_FILE_VERSION) {
        snprintf(err, errlen, "%s: unsupported version %u (this build reads version %d; re-run `gqa prepare`)", path,
                 get_u32le(buf + 4), TOKENIZER_FILE_VERSION);
    } else {
        size_t body = len - VOCAB_HEADER_BYTES;
        size_t used = tokenizer_parse(t, buf + VOCAB_HEADER_BYTES, body, inner, sizeof inner);
        if (used == 0) {
            snprintf(err, errlen, "%s: %s", path, inner);
        } else if (used != body) {
            snprintf(err, errlen, "%s: %zu trailing bytes after the vocabulary (file is %zu bytes, expected %zu)", path,
                     body - used, len, VOCAB_HEADER_BYTES + used);
            tokenizer_free(t);
        } else {
            rc = 0;
        }
    }
    free(buf);
    return rc;
}

void tokenizer_free(Tokenizer *t) {
    free(t->codepoints);
    t->codepoints = NULL;
    t->vocab_size = 0;
}
