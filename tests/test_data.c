/*
 * test_data.c: the data pipeline: tokenizer, token files, `gqa prepare`.
 *
 * - Round trips: text -> ids -> text (ASCII and 1- to 4-byte UTF-8),
 *   tokenizer -> bytes -> tokenizer, vocab.bin and token files (uint16 and
 *   uint32) written and read back; the little-endian byte helpers give
 *   fixed bytes.
 * - Every malformed input is refused with the expected message: invalid
 *   UTF-8 (with its byte offset), characters outside the vocabulary,
 *   truncated / unsorted / out-of-range serialised vocabularies, token files
 *   cut at every length, with a wrong magic, version, dtype, vocab_size,
 *   trailing bytes or an out-of-range token; writes to a full device or a
 *   missing directory fail without touching an existing file.
 * - `gqa prepare` on a small text and on Tiny Shakespeare, whose numbers
 *   come from nanoGPT (vocab 65, train 1,003,854, val 111,540 tokens; the
 *   first tokens and encode("hii there") from its shakespeare_char notebook).
 *
 * Run from the repo root. Files go to a fresh mkdtemp directory in /tmp,
 * removed at the end.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cli/cli.h"
#include <dirent.h>

#include "../data/recall.h"
#include "../data/tokenizer.h"
#include "../data/tokens.h"
#include "../util/util.h"
#include "testutil.h"

#define SHAKESPEARE_PATH "data/shakespeare_char/input.txt"  // ships with the repo

// ----------------------------------------------------------------------------
// scratch directory and file helpers

static char tmp_root[64];

static void tmp_setup(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/gqa_test_data.XXXXXX");
    if (!mkdtemp(tmp_root)) die("mkdtemp %s failed", tmp_root);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void tmp_teardown(void) {
    if (tmp_root[0]) nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// buf = tmp_root/name
static char *tmp_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmp_root, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen_check(path, "wb");
    if (len) fwrite_check(data, 1, len, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    uint8_t *data;
    char err[512];
    if (read_file(path, SIZE_MAX / 2, &data, len, err, sizeof err) != 0) die("%s", err);
    return data;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define ck_assert_substr(haystack, needle) \
    ck_assert_msg(strstr((haystack), (needle)) != NULL, "message '%s' lacks '%s'", (haystack), (needle))

// Decode ids back to UTF-8 into a malloc'd buffer of *len bytes.
static char *decode_all(const Tokenizer *t, const int *ids, size_t n, size_t *len) {
    char *s = malloc_check(4 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)tokenizer_decode(t, ids[i], s + k);
    s[k] = '\0';
    *len = k;
    return s;
}

// ----------------------------------------------------------------------------
// tokenizer: build, encode, decode

// Build from text, encode it, decode it back: must give the same bytes.
static void check_round_trip(const char *text, int want_vocab, size_t want_tokens) {
    Tokenizer t;
    char err[256];
    size_t len = strlen(text), n, back_len;
    ck_assert_msg(tokenizer_build(&t, text, len, err, sizeof err) == 0, "build: %s", err);
    ck_assert_int_eq(t.vocab_size, want_vocab);
    for (int i = 1; i < t.vocab_size; i++) ck_assert_uint_lt(t.codepoints[i - 1], t.codepoints[i]);
    int *ids = malloc_check(len * sizeof(int));
    ck_assert_msg(tokenizer_encode(&t, text, len, ids, &n, err, sizeof err) == 0, "encode: %s", err);
    ck_assert_uint_eq(n, want_tokens);
    for (size_t i = 0; i < n; i++) ck_assert(ids[i] >= 0 && ids[i] < t.vocab_size);
    char *back = decode_all(&t, ids, n, &back_len);
    ck_assert_uint_eq(back_len, len);
    ck_assert_mem_eq(back, text, len);
    free(back), free(ids);
    tokenizer_free(&t);
}

START_TEST(test_round_trip_ascii) {
    check_round_trip("hello world", 8, 11);
    check_round_trip("First Citizen:\nBefore we proceed any further, hear me speak.\n", 27, 61);
    check_round_trip("a", 1, 1);
}
END_TEST

START_TEST(test_round_trip_multibyte) {
    // h é l o ' ' w ö r d ✓ 𝄞 -> 11 distinct; 15 characters in 22 bytes (1-, 2-, 3- and 4-byte forms)
    const char *text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9D\x84\x9E";
    ck_assert_uint_eq(strlen(text), 22);
    check_round_trip(text, 11, 15);

    Tokenizer t;
    char err[256], out[4];
    ck_assert_int_eq(tokenizer_build(&t, text, strlen(text), err, sizeof err), 0);
    // the largest code points sort last: é (U+00E9), ö (U+00F6), ✓ (U+2713), 𝄞 (U+1D11E)
    ck_assert_uint_eq(t.codepoints[7], 0xE9);
    ck_assert_uint_eq(t.codepoints[8], 0xF6);
    ck_assert_uint_eq(t.codepoints[9], 0x2713);
    ck_assert_uint_eq(t.codepoints[10], 0x1D11E);
    ck_assert_int_eq(tokenizer_decode(&t, 0, out), 1);
    ck_assert_int_eq(out[0], ' ');
    ck_assert_int_eq(tokenizer_decode(&t, 7, out), 2);
    ck_assert_mem_eq(out, "\xC3\xA9", 2);
    ck_assert_int_eq(tokenizer_decode(&t, 9, out), 3);
    ck_assert_mem_eq(out, "\xE2\x9C\x93", 3);
    ck_assert_int_eq(tokenizer_decode(&t, 10, out), 4);
    ck_assert_mem_eq(out, "\xF0\x9D\x84\x9E", 4);
    tokenizer_free(&t);

    // the edges of each encoding length survive encode + decode
    const uint32_t edges[] = {0x0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x10FFFF};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        char buf[4];
        uint32_t cp = 0xFFFFFFFF;
        int n = utf8_encode(edges[i], buf);
        ck_assert_int_eq(utf8_decode((const uint8_t *)buf, (size_t)n, &cp, err, sizeof err), n);
        ck_assert_uint_eq(cp, edges[i]);
    }
}
END_TEST

START_TEST(test_vocab_sorted) {
    Tokenizer t;
    char err[256];
    const char *text = "the cat sat on the mat.\nThe End!";
    ck_assert_int_eq(tokenizer_build(&t, text, strlen(text), err, sizeof err), 0);
    // sorted(set(text)) in Python
    const char *want = "\n !.ETacdehmnost";
    ck_assert_int_eq(t.vocab_size, (int)strlen(want));
    for (int i = 0; i < t.vocab_size; i++) ck_assert_uint_eq(t.codepoints[i], (uint8_t)want[i]);
    ck_assert_int_eq(tokenizer_lookup(&t, 'a'), 6);
    ck_assert_int_eq(tokenizer_lookup(&t, 'z'), -1);
    size_t n;
    int ids[8];
    ck_assert_int_eq(tokenizer_encode(&t, "cat\n", 4, ids, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 4);
    const int want_ids[4] = {7, 6, 15, 0};  // c a t \n
    ck_assert_mem_eq(ids, want_ids, sizeof want_ids);
    tokenizer_free(&t);
}
END_TEST

static const struct {
    const char *bytes;
    const char *want;  // expected message substring
} bad_utf8[] = {
    {"ab\xC0\xAF", "invalid UTF-8 at byte 2: overlong 2-byte encoding of U+002F (bytes C0 AF)"},
    {"a\xE0\x80\xAF", "invalid UTF-8 at byte 1: overlong 3-byte encoding of U+002F (bytes E0 80 AF)"},
    {"\xF0\x82\x82\xAC", "invalid UTF-8 at byte 0: overlong 4-byte encoding of U+20AC (bytes F0 82 82 AC)"},
    {"xy\xED\xA0\x80z", "invalid UTF-8 at byte 2: UTF-16 surrogate U+D800 is not a character"},
    {"\xF4\x90\x80\x80", "invalid UTF-8 at byte 0: U+110000 is beyond U+10FFFF"},
    {"abc\xE2\x82", "invalid UTF-8 at byte 3: truncated sequence: lead byte 0xE2 starts a 3-byte sequence but the "
                    "text ends after 2 bytes of it"},
    {"\xF0\x9D\x84", "invalid UTF-8 at byte 0: truncated sequence"},
    {"a\x80", "invalid UTF-8 at byte 1: unexpected continuation byte 0x80"},
    {"hello \xFF", "invalid UTF-8 at byte 6: byte 0xFF never appears in UTF-8"},
    {"ab\xC3(", "invalid UTF-8 at byte 2: lead byte 0xC3 starts a 2-byte sequence but byte 2 of it is 0x28, not a "
                "continuation byte"},
    {"\xE2\x9C\x93\xE2\x9C", "invalid UTF-8 at byte 3: truncated"},
};

START_TEST(test_invalid_utf8) {
    const char *text = bad_utf8[_i].bytes;
    size_t len = strlen(text);
    Tokenizer t;
    char err[256];
    ck_assert_int_eq(tokenizer_build(&t, text, len, err, sizeof err), -1);
    ck_assert_substr(err, bad_utf8[_i].want);
    ck_assert_ptr_null(t.codepoints);
    // encode reports the same offset, whatever the vocabulary
    Tokenizer all;
    const char *valid = "abcxyzhelo (\xE2\x9C\x93";  // every valid character of bad_utf8
    ck_assert_int_eq(tokenizer_build(&all, valid, strlen(valid), err, sizeof err), 0);
    int ids[16];
    size_t n = 99;
    ck_assert_int_eq(tokenizer_encode(&all, text, len, ids, &n, err, sizeof err), -1);
    ck_assert_uint_eq(n, 0);
    ck_assert_substr(err, "invalid UTF-8 at byte");
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%.*s", (int)(strchr(bad_utf8[_i].want, ':') - bad_utf8[_i].want),
             bad_utf8[_i].want);
    ck_assert_substr(err, prefix);
    tokenizer_free(&all);
}
END_TEST

START_TEST(test_empty_text) {
    Tokenizer t;
    char err[256];
    ck_assert_int_eq(tokenizer_build(&t, "", 0, err, sizeof err), -1);
    ck_assert_substr(err, "text is empty");
}
END_TEST

START_TEST(test_encode_out_of_vocab) {
    Tokenizer t;
    char err[256];
    int ids[16];
    size_t n = 99;
    ck_assert_int_eq(tokenizer_build(&t, "abcabc", 6, err, sizeof err), 0);
    ck_assert_int_eq(tokenizer_encode(&t, "abcZ", 4, ids, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "character 'Z' (U+005A) at byte 3 is not in the vocabulary (3 characters)");
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(tokenizer_encode(&t, "a\xC3\xA9", 3, ids, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "character '\xC3\xA9' (U+00E9) at byte 1 is not in the vocabulary (3 characters)");
    ck_assert_int_eq(tokenizer_encode(&t, "ab\n", 3, ids, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "character '\\n' (U+000A) at byte 2 is not in the vocabulary (3 characters)");
    ck_assert_int_eq(tokenizer_encode(&t, "\x07", 1, ids, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "character U+0007 at byte 0 is not in the vocabulary (3 characters)");
    tokenizer_free(&t);
    ck_assert_int_eq(tokenizer_build(&t, "x", 1, err, sizeof err), 0);
    ck_assert_int_eq(tokenizer_encode(&t, "x\xF0\x9D\x84\x9E", 5, ids, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "character '\xF0\x9D\x84\x9E' (U+1D11E) at byte 1 is not in the vocabulary (1 character)");
    tokenizer_free(&t);
}
END_TEST

// ----------------------------------------------------------------------------
// tokenizer serialisation

// tokenizer_write's bytes, through an in-memory stream.
static uint8_t *serialize(const Tokenizer *t, size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    CHECK(f != NULL);
    tokenizer_write(t, f);
    fclose(f);
    return (uint8_t *)buf;
}

static void expect_parse_error(const uint8_t *buf, size_t len, const char *want) {
    Tokenizer t;
    char err[256] = "";
    ck_assert_uint_eq(tokenizer_parse(&t, buf, len, err, sizeof err), 0);
    ck_assert_substr(err, want);
    ck_assert_ptr_null(t.codepoints);
    ck_assert_int_eq(t.vocab_size, 0);
}

START_TEST(test_parse_round_trip_and_errors) {
    Tokenizer t, u;
    char err[256];
    const char *text = "Hello, w\xC3\xB6rld \xF0\x9D\x84\x9E";
    ck_assert_int_eq(tokenizer_build(&t, text, strlen(text), err, sizeof err), 0);
    size_t len;
    uint8_t *buf = serialize(&t, &len);
    ck_assert_uint_eq(len, tokenizer_serialized_size(&t));
    ck_assert_uint_eq(len, 4 + 4 * (size_t)t.vocab_size);
    ck_assert_uint_eq(get_u32(buf), (uint32_t)t.vocab_size);
    ck_assert_uint_eq(get_u32(buf + 4), ' ');  // little-endian, smallest first

    // exact, and with extra bytes after it (a checkpoint continues there)
    uint8_t *more = malloc_check(len + 7);
    memcpy(more, buf, len);
    memset(more + len, 0xAB, 7);
    ck_assert_uint_eq(tokenizer_parse(&u, more, len + 7, err, sizeof err), len);
    ck_assert_int_eq(u.vocab_size, t.vocab_size);
    ck_assert_mem_eq(u.codepoints, t.codepoints, (size_t)t.vocab_size * 4);
    tokenizer_free(&u);

    for (size_t cut = 0; cut < len; cut++) expect_parse_error(buf, cut, "vocabulary: truncated");
    expect_parse_error(NULL, 0, "vocabulary: truncated: 0 bytes, need 4 for vocab_size");

    uint8_t *bad = malloc_check(len);
    memcpy(bad, buf, len), put_u32(bad, 0);
    expect_parse_error(bad, len, "vocabulary: vocab_size 0 is out of range [1, 2097152]");
    memcpy(bad, buf, len), put_u32(bad, 0xFFFFFFFFu);
    expect_parse_error(bad, len, "vocabulary: vocab_size 4294967295 is out of range");
    memcpy(bad, buf, len), put_u32(bad, 1u << 21);
    expect_parse_error(bad, len, "vocabulary: truncated: vocab_size 2097152 needs 8388612 bytes");
    memcpy(bad, buf, len), put_u32(bad + 8, 0x1F);  // index 1 below index 0 (' ')
    expect_parse_error(bad, len, "vocabulary: code points must strictly ascend, but index 1 is U+001F after U+0020");
    memcpy(bad, buf, len), put_u32(bad + 8, ' ');  // duplicate
    expect_parse_error(bad, len, "strictly ascend, but index 1 is U+0020 after U+0020");
    memcpy(bad, buf, len), put_u32(bad + len - 4, 0x110000);
    expect_parse_error(bad, len, "code point 0x110000 at index");
    memcpy(bad, buf, len), put_u32(bad + len - 4, 0xDC00);
    expect_parse_error(bad, len, "code point 0xDC00 at index");

    // random bytes: never a crash (ASan watches), and whatever parses is valid
    uint64_t rng = 1234;
    uint8_t junk[64];
    for (int trial = 0; trial < 20000; trial++) {
        size_t n = (uint32_t)rng_u64(&rng) % sizeof junk;
        for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)(uint32_t)rng_u64(&rng);
        if (n >= 4) put_u32(junk, (uint32_t)rng_u64(&rng) % 20);  // small counts reach the code point checks
        if (trial % 2 && n >= 12) put_u32(junk + 4, 'a'), put_u32(junk + 8, 'a' + (uint32_t)rng_u64(&rng) % 3);
        size_t used = tokenizer_parse(&u, junk, n, err, sizeof err);
        if (used) {
            ck_assert_uint_eq(used, 4 + 4 * (size_t)u.vocab_size);
            for (int i = 1; i < u.vocab_size; i++) ck_assert_uint_lt(u.codepoints[i - 1], u.codepoints[i]);
            tokenizer_free(&u);
        } else {
            ck_assert(strncmp(err, "vocabulary: ", 12) == 0);
        }
    }
    free(bad), free(more), free(buf);
    tokenizer_free(&t);
}
END_TEST

START_TEST(test_vocab_file) {
    Tokenizer t, u;
    char err[1024], path[512], tmp[520];
    const char *text = "Zebra \xE2\x9C\x93 apple\n";
    ck_assert_int_eq(tokenizer_build(&t, text, strlen(text), err, sizeof err), 0);
    tmp_path(path, sizeof path, "vocab.bin");
    ck_assert_msg(tokenizer_save(&t, path, err, sizeof err) == 0, "%s", err);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_msg(!file_exists(tmp), "%s left behind", tmp);
    ck_assert_msg(tokenizer_load(&u, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(u.vocab_size, t.vocab_size);
    ck_assert_mem_eq(u.codepoints, t.codepoints, (size_t)t.vocab_size * 4);
    tokenizer_free(&u);

    size_t len;
    uint8_t *good = read_bytes(path, &len);
    ck_assert_uint_eq(len, 8 + tokenizer_serialized_size(&t));
    ck_assert_mem_eq(good, "GQAV\x01\x00\x00\x00", 8);
    uint8_t *bad = malloc_check(len + 4);
    char bad_path[512];
    tmp_path(bad_path, sizeof bad_path, "bad_vocab.bin");

    memcpy(bad, good, len), bad[3] = 'T';
    write_bytes(bad_path, bad, len);
    ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
    ck_assert_substr(err, bad_path);
    ck_assert_substr(err, ": bad magic (not a gqa vocabulary file; re-run `gqa prepare`)");

    memcpy(bad, good, len), put_u32(bad + 4, 7);
    write_bytes(bad_path, bad, len);
    ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
    ck_assert_substr(err, "unsupported version 7 (this build reads version 1");

    memcpy(bad, good, len), memset(bad + len, 0, 4);
    write_bytes(bad_path, bad, len + 4);
    ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
    ck_assert_substr(err, "4 trailing bytes after the vocabulary");
    ck_assert_ptr_null(u.codepoints);

    memcpy(bad, good, len), put_u32(bad + 12, 'a'), put_u32(bad + 16, 'a');
    write_bytes(bad_path, bad, len);
    ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
    ck_assert_substr(err, ": vocabulary: code points must strictly ascend");

    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(bad_path, good, cut);
        ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
        ck_assert_substr(err, bad_path);
        ck_assert_substr(err, cut < 8 ? "truncated header" : "vocabulary: truncated");
    }

    tmp_path(bad_path, sizeof bad_path, "no_such_vocab.bin");
    ck_assert_int_eq(tokenizer_load(&u, bad_path, err, sizeof err), -1);
    ck_assert_substr(err, "no_such_vocab.bin': No such file or directory");
    ck_assert_int_eq(tokenizer_save(&t, "/dev/full", err, sizeof err), -1);
    ck_assert_substr(err, "cannot write '/dev/full': write failed: No space left on device");
    free(bad), free(good);
    tokenizer_free(&t);
}
END_TEST

// ----------------------------------------------------------------------------
// token files

static void check_tokens_round_trip(int vocab_size, const int *tokens, size_t n, uint32_t want_dtype) {
    char path[512], err[1024];
    tmp_path(path, sizeof path, "rt.bin");
    ck_assert_msg(tokens_write(path, tokens, n, vocab_size, err, sizeof err) == 0, "%s", err);
    size_t len;
    uint8_t *raw = read_bytes(path, &len);
    ck_assert_uint_eq(len, 24 + n * want_dtype);
    ck_assert_mem_eq(raw, "GQAT\x01\x00\x00\x00", 8);
    ck_assert_uint_eq(get_u32(raw + 8), want_dtype);
    ck_assert_uint_eq(get_u32(raw + 12), (uint32_t)vocab_size);
    ck_assert_uint_eq(get_u32(raw + 16), n);
    ck_assert_uint_eq(get_u32(raw + 20), 0);
    free(raw);
    TokenFile tf;
    ck_assert_msg(tokens_read(path, vocab_size, &tf, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(tf.count, n);
    ck_assert_int_eq(tf.vocab_size, vocab_size);
    if (n) ck_assert_mem_eq(tf.tokens, tokens, n * sizeof(int));
    tokens_free(&tf);
    ck_assert_msg(tokens_read(path, 0, &tf, err, sizeof err) == 0, "%s", err);  // 0: any vocabulary
    tokens_free(&tf);
}

START_TEST(test_tokens_round_trip) {
    const int small[] = {0, 1, 64, 2, 3, 64, 0};
    check_tokens_round_trip(65, small, 7, 2);
    const int edge16[] = {65535, 0, 256, 255, 65534};
    check_tokens_round_trip(65536, edge16, 5, 2);  // largest vocabulary that fits uint16
    const int wide[] = {69999, 0, 65536, 65535, 256, 1};
    check_tokens_round_trip(70000, wide, 6, 4);
    check_tokens_round_trip(3, NULL, 0, 2);  // empty is a valid file

    uint64_t rng = 7;
    size_t n = 100000;
    int *many = malloc_check(n * sizeof(int));
    for (size_t i = 0; i < n; i++) many[i] = (int)((uint32_t)rng_u64(&rng) % 1000);
    check_tokens_round_trip(1000, many, n, 2);
    free(many);
}
END_TEST

// The little-endian helpers of util/util.h give the same bytes on any host,
// and token payloads are written with them.
START_TEST(test_byte_order) {
    uint8_t b[12];
    put_u16le(b, 0xBEEF);
    ck_assert_mem_eq(b, "\xEF\xBE", 2);
    ck_assert_uint_eq(get_u16le(b), 0xBEEF);
    put_u32le(b, 0x12345678u);
    ck_assert_mem_eq(b, "\x78\x56\x34\x12", 4);
    ck_assert_uint_eq(get_u32le(b), 0x12345678u);
    put_u64le(b, 0x0102030405060708ull);
    ck_assert_mem_eq(b, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
    ck_assert_uint_eq(get_u64le(b), 0x0102030405060708ull);
    put_i32le(b, -2);
    ck_assert_mem_eq(b, "\xFE\xFF\xFF\xFF", 4);
    ck_assert_int_eq(get_i32le(b), -2);
    ck_assert_int_eq(get_i32le((const uint8_t *)"\x00\x00\x00\x80"), INT32_MIN);
    ck_assert_int_eq(get_i32le((const uint8_t *)"\xFF\xFF\xFF\x7F"), INT32_MAX);
    put_f32le(b, 1.0f);
    ck_assert_mem_eq(b, "\x00\x00\x80\x3F", 4);
    put_f32le(b, -0.1f);
    ck_assert_mem_eq(b, "\xCD\xCC\xCC\xBD", 4);
    ck_assert_float_eq(get_f32le(b), -0.1f);
    // a NaN keeps its payload bits
    const uint8_t nan_bytes[4] = {0x01, 0x00, 0xC0, 0x7F};
    put_f32le(b, get_f32le(nan_bytes));
    ck_assert_mem_eq(b, nan_bytes, 4);

    const float x[3] = {1.0f, -2.0f, 0.5f};
    float y[3];
    f32s_to_le(b, x, 3);
    ck_assert_mem_eq(b, "\x00\x00\x80\x3F\x00\x00\x00\xC0\x00\x00\x00\x3F", 12);
    f32s_from_le(y, b, 3);
    ck_assert_mem_eq(y, x, sizeof x);
    const uint32_t one = 1;
    ck_assert_int_eq(host_is_little_endian(), *(const uint8_t *)&one == 1);

    // token payloads: uint16 and uint32, least significant byte first
    char path[512], err[1024];
    tmp_path(path, sizeof path, "order.bin");
    const int t16[] = {0x0102, 7};
    ck_assert_msg(tokens_write(path, t16, 2, 65536, err, sizeof err) == 0, "%s", err);
    size_t len;
    uint8_t *raw = read_bytes(path, &len);
    ck_assert_uint_eq(len, 28);
    ck_assert_mem_eq(raw + 24, "\x02\x01\x07\x00", 4);
    free(raw);
    const int t32[] = {0x010203};
    ck_assert_msg(tokens_write(path, t32, 1, 70000, err, sizeof err) == 0, "%s", err);
    raw = read_bytes(path, &len);
    ck_assert_uint_eq(len, 28);
    ck_assert_mem_eq(raw + 24, "\x03\x02\x01\x00", 4);
    free(raw);
    TokenFile tf;
    ck_assert_msg(tokens_read(path, 0, &tf, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(tf.tokens[0], 0x010203);
    tokens_free(&tf);
}
END_TEST

// A valid 5-token file (vocab 10) as bytes: 24 + 10 = 34.
static uint8_t *good_token_file(size_t *len) {
    char path[512], err[1024];
    const int toks[] = {3, 1, 4, 1, 5};
    tmp_path(path, sizeof path, "good.bin");
    ck_assert_msg(tokens_write(path, toks, 5, 10, err, sizeof err) == 0, "%s", err);
    return read_bytes(path, len);
}

static void expect_tokens_error(const uint8_t *bytes, size_t len, int expect_vocab, const char *want) {
    char path[512], err[1024];
    tmp_path(path, sizeof path, "bad.bin");
    write_bytes(path, bytes, len);
    TokenFile tf;
    ck_assert_int_eq(tokens_read(path, expect_vocab, &tf, err, sizeof err), -1);
    ck_assert_substr(err, path);
    ck_assert_substr(err, want);
    ck_assert_ptr_null(tf.tokens);
    ck_assert_uint_eq(tf.count, 0);
    ck_assert_msg(strchr(err, '\n') == NULL, "message is not one line: %s", err);
}

START_TEST(test_tokens_truncated) {
    size_t len;
    uint8_t *good = good_token_file(&len);
    ck_assert_uint_eq(len, 34);
    for (size_t cut = 0; cut < 24; cut++)  // every header boundary and every byte between
        expect_tokens_error(good, cut, 10, "truncated header");
    expect_tokens_error(good, 16, 10, "truncated header: file is 16 bytes, a token file header is 24");
    for (size_t cut = 24; cut < len; cut++) {  // mid-data
        char want[128];
        snprintf(want, sizeof want, "file is %zu bytes, expected 34 (24-byte header + 5 tokens x 2 bytes): truncated",
                 cut);
        expect_tokens_error(good, cut, 10, want);
    }
    free(good);
}
END_TEST

START_TEST(test_tokens_bad_files) {
    size_t len;
    uint8_t *good = good_token_file(&len);
    uint8_t *b = malloc_check(len + 8);

    memcpy(b, good, len), memcpy(b, "GQAV", 4);
    expect_tokens_error(b, len, 10, ": bad magic (not a gqa token file; re-run `gqa prepare`)");
    expect_tokens_error((const uint8_t *)"hello world, this is just a text file\n", 38, 0, ": bad magic");
    memcpy(b, good, len), put_u32(b + 4, 2);
    expect_tokens_error(b, len, 10, ": unsupported version 2 (this build reads version 1; re-run `gqa prepare`)");
    memcpy(b, good, len), put_u32(b + 8, 3);
    expect_tokens_error(b, len, 10, ": bad dtype 3 (bytes per token must be 2 or 4)");
    memcpy(b, good, len), put_u32(b + 8, 0);
    expect_tokens_error(b, len, 10, ": bad dtype 0");
    memcpy(b, good, len), put_u32(b + 8, 4);  // right dtype claim, wrong size
    expect_tokens_error(b, len, 10, "expected 44 (24-byte header + 5 tokens x 4 bytes): truncated");
    memcpy(b, good, len), put_u32(b + 12, 0);
    expect_tokens_error(b, len, 0, ": bad vocab_size 0 in header");
    memcpy(b, good, len), put_u32(b + 12, 0x80000000u);
    expect_tokens_error(b, len, 0, ": bad vocab_size 2147483648 in header");
    memcpy(b, good, len), memset(b + len, 0, 3);
    expect_tokens_error(b, len + 3, 10, "file is 37 bytes, expected 34 (24-byte header + 5 tokens x 2 bytes): 3 trailing bytes");
    memcpy(b, good, len), put_u64(b + 16, 6);
    expect_tokens_error(b, len, 10, "file is 34 bytes, expected 36");
    memcpy(b, good, len), put_u64(b + 16, UINT64_MAX / 2);
    expect_tokens_error(b, len, 10, ": impossible token count 9223372036854775807 in header");
    memcpy(b, good, len), put_u64(b + 16, UINT64_MAX / 4);
    expect_tokens_error(b, len, 10, "file is 34 bytes, expected 9223372036854775830");
    memcpy(b, good, len), b[24 + 2 * 3] = 10;  // token index 3: 1 -> 10
    expect_tokens_error(b, len, 10, ": token 10 at index 3 is >= vocab_size 10");
    memcpy(b, good, len), b[24 + 2 * 4 + 1] = 0xFF;  // token index 4: 5 -> 0xFF05
    expect_tokens_error(b, len, 10, ": token 65285 at index 4 is >= vocab_size 10");
    memcpy(b, good, len);
    expect_tokens_error(b, len, 11,
                        ": vocab_size 10 in header does not match the expected vocab_size 11 (token file and vocabulary "
                        "from different `gqa prepare` runs?)");

    char path[512], err[1024];
    TokenFile tf;
    tmp_path(path, sizeof path, "missing.bin");
    ck_assert_int_eq(tokens_read(path, 0, &tf, err, sizeof err), -1);
    ck_assert_substr(err, "missing.bin: cannot open: No such file or directory (run `gqa prepare` first?)");
    ck_assert_int_eq(tokens_read(tmp_root, 0, &tf, err, sizeof err), -1);
    ck_assert_substr(err, ": not a regular file");
    free(b), free(good);
}
END_TEST

START_TEST(test_tokens_write_failures) {
    const int toks[] = {1, 2, 3, 4};
    char err[1024], path[512], tmp[520];
    TokenFile tf;

    // a full disk: every byte is refused (fwrite or fflush), reported, not ignored
    ck_assert_int_eq(tokens_write("/dev/full", toks, 4, 5, err, sizeof err), -1);
    ck_assert_str_eq(err, "cannot write '/dev/full': write failed: No space left on device");
    int *big = calloc_check(1 << 20, sizeof(int));  // larger than any stdio buffer
    ck_assert_int_eq(tokens_write("/dev/full", big, 1 << 20, 5, err, sizeof err), -1);
    ck_assert_substr(err, "No space left on device");
    free(big);
    // a device is written in place, never replaced by a rename
    ck_assert_int_eq(tokens_write("/dev/null", toks, 4, 5, err, sizeof err), 0);
    struct stat st;
    ck_assert_int_eq(stat("/dev/null", &st), 0);
    ck_assert(S_ISCHR(st.st_mode));

    // no such directory
    tmp_path(path, sizeof path, "no/such/dir/train.bin");
    ck_assert_int_eq(tokens_write(path, toks, 4, 5, err, sizeof err), -1);
    ck_assert_substr(err, path);
    ck_assert_substr(err, "No such file or directory");

    // a failed write leaves the existing file as it was: make the temporary
    // path impossible to create (a directory sits there), which fails even as root
    tmp_path(path, sizeof path, "keep.bin");
    const int old[] = {0, 0, 7};
    ck_assert_int_eq(tokens_write(path, old, 3, 8, err, sizeof err), 0);
    size_t before_len, after_len;
    uint8_t *before = read_bytes(path, &before_len);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_eq(mkdir(tmp, 0700), 0);
    ck_assert_int_eq(tokens_write(path, toks, 4, 5, err, sizeof err), -1);
    ck_assert_substr(err, "keep.bin.tmp': Is a directory (any previous file is unchanged)");
    uint8_t *after = read_bytes(path, &after_len);
    ck_assert_uint_eq(after_len, before_len);
    ck_assert_mem_eq(after, before, before_len);
    free(after);
    ck_assert_int_eq(rmdir(tmp), 0);

    // an unwritable directory (meaningless as root, who may write anyway)
    if (geteuid() != 0) {
        char dir[512], inner[600];
        tmp_path(dir, sizeof dir, "ro");
        ck_assert_int_eq(mkdir(dir, 0700), 0);
        snprintf(inner, sizeof inner, "%s/keep.bin", dir);
        ck_assert_int_eq(tokens_write(inner, old, 3, 8, err, sizeof err), 0);
        ck_assert_int_eq(chmod(dir, 0500), 0);
        ck_assert_int_eq(tokens_write(inner, toks, 4, 5, err, sizeof err), -1);
        ck_assert_substr(err, "Permission denied");
        chmod(dir, 0700);
        ck_assert_int_eq(tokens_read(inner, 8, &tf, err, sizeof err), 0);
        ck_assert_int_eq(tf.tokens[2], 7);
        tokens_free(&tf);
    }

    // bad tokens are refused before anything is written
    const int bad[] = {0, 5, 1};
    ck_assert_int_eq(tokens_write(path, bad, 3, 5, err, sizeof err), -1);
    ck_assert_substr(err, "keep.bin: token 5 at index 1 is outside [0, vocab_size 5)");
    const int neg[] = {0, 1, -1};
    ck_assert_int_eq(tokens_write(path, neg, 3, 5, err, sizeof err), -1);
    ck_assert_substr(err, "token -1 at index 2");
    ck_assert_int_eq(tokens_write(path, bad, 3, 0, err, sizeof err), -1);
    ck_assert_substr(err, "vocab_size 0 must be >= 1");
    after = read_bytes(path, &after_len);
    ck_assert_uint_eq(after_len, before_len);
    ck_assert_mem_eq(after, before, before_len);
    ck_assert_msg(!file_exists(tmp), "%s left behind", tmp);
    free(after), free(before);
}
END_TEST

// ----------------------------------------------------------------------------
// the recall task (data/recall.h)

// A task of small numbers, resolved (num_queries filled).
static RecallTask small_task(int V, int P, int S) {
    RecallTask t = {.vocab_size = V, .num_pairs = P, .seq_len = S, .num_train = 4, .num_val = 2, .seed = 5};
    char err[256];
    ck_assert_msg(recall_task_resolve(&t, err, sizeof err) == 0, "%s", err);
    return t;
}

START_TEST(test_recall_hand_case) {
    // V 8: keys 0..3, values 4..7; P 2 pairs, S 8: Q 2 queries
    RecallTask t = small_task(8, 2, 8);
    ck_assert_int_eq(t.num_queries, 2);
    //                 k  v  k  v  q  a  q  a
    const int seq[8] = {1, 5, 3, 4, 3, 4, 1, 5};
    for (int p = 0; p < 8; p++) ck_assert_int_eq(recall_is_answer(&t, (size_t)p), p == 5 || p == 7);
    // a window starting at the sequence: target i is token i + 1
    uint8_t mask[16];
    recall_window_mask(&t, 0, 8, mask);
    const uint8_t want[8] = {0, 0, 0, 0, 1, 0, 1, 0};
    ck_assert_mem_eq(mask, want, 8);
    // a window over two sequences, from the second: targets 4 and 6, then 12 and 14
    recall_window_mask(&t, 8, 16, mask);
    for (int i = 0; i < 16; i++) ck_assert_int_eq(mask[i], i == 4 || i == 6 || i == 12 || i == 14);
    char err[256];
    ck_assert_msg(recall_check_tokens(&t, seq, 8, err, sizeof err) == 0, "%s", err);
    // each break of the layout is named
    struct {
        int pos, id;
        const char *want;
    } bad[] = {
        {0, 4, "sequence 0 position 0: token 4 is a value where a key belongs"},
        {1, 2, "position 1: token 2 is a key where a value belongs"},
        {2, 1, "position 2: token 1 is a repeated key"},
        {3, 5, "position 3: token 5 is a repeated value"},
        {4, 2, "position 4: token 2 is a query that is not a key of its pairs"},
        {4, 6, "position 4: token 6 is a query that is not a key of its pairs"},
        {5, 5, "position 5: token 5 is an answer that is not its query's value"},
        {7, 8, "position 7: token 8 is outside the vocabulary"},
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        int b[8];
        memcpy(b, seq, sizeof b);
        b[bad[c].pos] = bad[c].id;
        ck_assert_int_eq(recall_check_tokens(&t, b, 8, err, sizeof err), -1);
        ck_assert_substr(err, bad[c].want);
    }
    ck_assert_int_eq(recall_check_tokens(&t, seq, 7, err, sizeof err), -1);
    ck_assert_substr(err, "7 tokens are not whole sequences of seq_len 8");

    // the vocabulary: keys A..D, values a..d
    Tokenizer tok;
    recall_vocab(&t, &tok);
    char text[9];
    for (int i = 0; i < 8; i++) ck_assert_int_eq(tokenizer_decode(&tok, seq[i], text + i), 1);
    text[8] = '\0';
    ck_assert_str_eq(text, "BbDaDaBb");
    tokenizer_free(&tok);
}
END_TEST

// The generator's sequences, checked by a reading of the layout independent
// of recall_check_tokens: the answer after each query is the value that
// followed that key among the pairs.
static void check_generated(const RecallTask *t, const int *seq) {
    const int P = t->num_pairs, K = t->vocab_size / 2;
    for (int q = 0; q < t->num_queries; q++) {
        const int key = seq[2 * P + 2 * q], ans = seq[2 * P + 2 * q + 1];
        int found = -1;
        for (int i = 0; i < P; i++)
            if (seq[2 * i] == key) found = i;
        ck_assert_msg(found >= 0, "query %d: key %d not among the pairs", q, key);
        ck_assert_int_eq(ans, seq[2 * found + 1]);
        ck_assert(key < K && ans >= K);
    }
}

// Queries ask pairs uniformly and independently: every pair about equally
// often, and the key of query P-1 is among queries 0..P-2 with probability
// 1 - ((P-1)/P)^(P-1) (asking each pair once per round of P would make it
// never so, and the last answer of a round a matter of elimination).
START_TEST(test_recall_queries_independent) {
    RecallTask t = small_task(20, 8, 32);  // P 8, Q 8
    const int P = 8, n = 4000, S = 32;
    int *seq = malloc_check((size_t)n * S * sizeof(int));
    recall_generate(&t, 0, n, seq);
    int asked[8] = {0}, repeat = 0;
    for (int s = 0; s < n; s++) {
        const int *x = seq + (size_t)s * S;
        for (int q = 0; q < P; q++)
            for (int i = 0; i < P; i++) asked[i] += x[2 * P + 2 * q] == x[2 * i];
        int seen = 0;
        for (int r = 0; r < P - 1; r++) seen |= x[2 * P + 2 * r] == x[2 * P + 2 * (P - 1)];
        repeat += seen;
    }
    const double p = 1.0 - pow(7.0 / 8.0, 7.0), sd = sqrt(p * (1 - p) / n), f = (double)repeat / n;
    ck_assert_msg(fabs(f - p) <= 5 * sd, "key of the last query asked before in %.3f of sequences, want %.3f", f, p);
    for (int i = 0; i < P; i++)  // each pair n P / P = n times, sd sqrt(n (P-1)/P)
        ck_assert_msg(abs(asked[i] - n) <= 5 * sqrt(n * 7.0 / 8.0), "pair %d asked %d times of %d", i, asked[i], n * P);
    free(seq);
}
END_TEST

START_TEST(test_recall_generator) {
    const int shapes[][3] = {{8, 2, 8}, {52, 16, 64}, {20, 8, 32}, {12, 2, 14}, {200, 8, 40}, {4, 1, 4}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        RecallTask t = small_task(shapes[c][0], shapes[c][1], shapes[c][2]);
        const size_t n = 50, S = (size_t)t.seq_len;
        int *a = malloc_check(n * S * sizeof(int)), *b = malloc_check(n * S * sizeof(int));
        recall_generate(&t, 0, n, a);
        recall_generate(&t, 0, n, b);
        ck_assert_mem_eq(a, b, n * S * sizeof(int));  // deterministic
        for (size_t s = 0; s < n; s++) check_generated(&t, a + s * S);
        char err[256];
        ck_assert_msg(recall_check_tokens(&t, a, n * S, err, sizeof err) == 0, "%s", err);
        recall_generate(&t, 1, n, b);  // val: another stream
        ck_assert_msg(memcmp(a, b, n * S * sizeof(int)) != 0, "val repeats train");
        t.seed++;
        recall_generate(&t, 0, n, b);
        ck_assert_msg(memcmp(a, b, n * S * sizeof(int)) != 0, "another seed, the same sequences");
        free(a), free(b);
    }
}
END_TEST

START_TEST(test_recall_accuracy) {
    // answers fed as predictions: 100%
    RecallTask t = small_task(52, 16, 64);
    const size_t n_seq = 2000, S = 64, n = n_seq * S;
    int *tokens = malloc_check(n * sizeof(int)), *preds = malloc_check(n * sizeof(int));
    uint8_t *mask = malloc_check(n);
    recall_generate(&t, 1, n_seq, tokens);
    // targets of windows of T = S - 1 at every sequence: y = tokens shifted by one
    const int T = (int)S - 1;
    int *y = malloc_check(n_seq * (size_t)T * sizeof(int));
    for (size_t s = 0; s < n_seq; s++) {
        memcpy(y + s * T, tokens + s * S + 1, (size_t)T * sizeof(int));
        recall_window_mask(&t, s * S, T, mask + s * T);
    }
    const size_t m = n_seq * (size_t)T;
    memcpy(preds, y, m * sizeof(int));
    size_t correct;
    ck_assert_uint_eq(recall_score(preds, y, mask, m, &correct), n_seq * 16);
    ck_assert_uint_eq(correct, n_seq * 16);
    ck_assert_double_eq(recall_accuracy(preds, y, mask, m), 1.0);
    // only the masked positions count: wrong predictions elsewhere change nothing
    for (size_t i = 0; i < m; i++)
        if (!mask[i]) preds[i] = -1;
    ck_assert_double_eq(recall_accuracy(preds, y, mask, m), 1.0);
    // one wrong answer
    for (size_t i = 0; i < m; i++)
        if (mask[i]) {
            preds[i] = y[i] == 26 ? 27 : 26;
            break;
        }
    ck_assert_double_eq_tol(recall_accuracy(preds, y, mask, m), 1.0 - 1.0 / (n_seq * 16), 1e-12);

    // uniform random values: chance 1/26 over 32,000 answers; the standard
    // error is sqrt(p (1 - p) / 32000) = 0.00107, the tolerance 0.006 (5.6 of them)
    uint64_t rng = 42;
    for (size_t i = 0; i < m; i++) preds[i] = 26 + (int)(rng_u64(&rng) % 26);
    const double acc = recall_accuracy(preds, y, mask, m);
    ck_assert_msg(fabs(acc - 1.0 / 26) < 0.006, "random predictions: accuracy %.4f, chance %.4f", acc, 1.0 / 26);

    // nothing masked: no accuracy
    memset(mask, 0, m);
    ck_assert(isnan(recall_accuracy(preds, y, mask, m)));

    // argmax of logits, the lowest id on ties
    const float logits[3 * 4] = {0.1f, 2.0f, -1.0f, 2.0f, -5.0f, -4.0f, -3.0f, -3.5f, 1.0f, 1.0f, 1.0f, 1.0f};
    int am[3];
    recall_argmax(logits, 3, 4, am);
    ck_assert_int_eq(am[0], 1);
    ck_assert_int_eq(am[1], 2);
    ck_assert_int_eq(am[2], 0);
    free(tokens), free(preds), free(mask), free(y);
}
END_TEST

START_TEST(test_recall_file) {
    char path[512], err[1024];
    tmp_path(path, sizeof path, "recall.bin");
    RecallTask t = small_task(52, 16, 64), back;
    t.num_train = 20000, t.num_val = 2000, t.seed = 1337;
    ck_assert_int_eq(recall_write(path, &t, err, sizeof err), 0);
    ck_assert_int_eq(recall_read(path, &back, err, sizeof err), 0);
    ck_assert_mem_eq(&back, &t, sizeof t);
    size_t len;
    uint8_t *ok = read_bytes(path, &len);
    ck_assert_uint_eq(len, RECALL_FILE_BYTES);
    uint8_t *want = read_bytes("tests/corpus/recall/ok.bin", &len);  // the same task, written by hand
    ck_assert_uint_eq(len, RECALL_FILE_BYTES);
    ck_assert_mem_eq(ok, want, RECALL_FILE_BYTES);
    free(want);
    t.num_queries = 3;  // the writer refuses what the reader would
    ck_assert_int_eq(recall_write(path, &t, err, sizeof err), -1);
    ck_assert_substr(err, "num_queries 3 is not seq_len / 2 - num_pairs = 16");
    free(ok);
    ck_assert_int_eq(recall_read(tmp_root, &back, err, sizeof err), -1);
    ck_assert_substr(err, ": not a regular file");
    tmp_path(path, sizeof path, "none.bin");
    ck_assert_int_eq(recall_read(path, &back, err, sizeof err), -1);
    ck_assert_substr(err, "none.bin: cannot open: No such file or directory");
}
END_TEST

// tests/corpus/recall (also the fuzzer's seeds): every ok-* file loads,
// every bad-* file is refused with one line naming it and the reason.
START_TEST(test_recall_corpus) {
    const struct {
        const char *name, *want;
    } bad[] = {
        {"bad-magic.bin", ": bad magic (not a gqa recall task file; re-run `gqa prepare --task recall`)"},
        {"bad-version.bin", ": unsupported version 2 (this build reads version 1"},
        {"bad-trailing.bin", ": file is 49 bytes, a recall task file is 48"},
        {"bad-truncated-0.bin", ": file is 0 bytes, a recall task file is 48"},
        {"bad-truncated-3.bin", ": file is 3 bytes"},
        {"bad-truncated-4.bin", ": file is 4 bytes"},
        {"bad-truncated-20.bin", ": file is 20 bytes"},
        {"bad-truncated-47.bin", ": file is 47 bytes"},
        {"bad-vocab-odd.bin", ": vocab_size 51 must be even"},
        {"bad-vocab-huge.bin", ": vocab_size 2147483648 is out of range"},
        {"bad-pairs.bin", ": num_pairs 27 is out of range [1, 26]"},
        {"bad-seq-len-odd.bin", ": seq_len 63 must be even"},
        {"bad-no-query.bin", ": seq_len 32 leaves no room for a query after 16 pairs"},
        {"bad-queries.bin", ": num_queries 15 is not seq_len / 2 - num_pairs = 16"},
        {"bad-num-train.bin", ": num_train 1 is too few"},
        {"bad-num-val-huge.bin", ": num_val 1099511627776 x seq_len 64 is more than the 2147483648 tokens allowed"},
    };
    DIR *dir = opendir("tests/corpus/recall");
    ck_assert_ptr_nonnull(dir);
    int n_ok = 0, n_bad = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char path[600], err[1024];
        snprintf(path, sizeof path, "tests/corpus/recall/%s", e->d_name);
        RecallTask t;
        const int rc = recall_read(path, &t, err, sizeof err);
        if (!strncmp(e->d_name, "ok", 2)) {
            ck_assert_msg(rc == 0, "%s: %s", path, err);
            n_ok++;
            continue;
        }
        ck_assert_msg(rc == -1, "%s was accepted", path);
        ck_assert_msg(strchr(err, '\n') == NULL && strstr(err, path) == err, "%s: '%s'", path, err);
        const char *want = NULL;
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            if (!strcmp(bad[i].name, e->d_name)) want = bad[i].want;
        ck_assert_msg(want != NULL, "%s: no expected message in the test", path);
        ck_assert_substr(err, want);
        n_bad++;
    }
    closedir(dir);
    ck_assert_int_eq(n_ok, 2);
    ck_assert_int_eq(n_bad, (int)(sizeof bad / sizeof bad[0]));
}
END_TEST

// ----------------------------------------------------------------------------
// gqa prepare

typedef struct {
    int rc;
    char out[8192], err[2048];  // captured stdout (its head) and stderr
} PrepareRun;

// cmd_prepare("gqa", "prepare", args..., NULL) with stdout and stderr captured.
static void run_prepare(PrepareRun *r, ...) {
    char *argv[24] = {"gqa", "prepare"};
    int argc = 2;
    va_list ap;
    va_start(ap, r);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        CHECK(argc < 23);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    char out_path[512], err_path[512];
    tmp_path(out_path, sizeof out_path, "prepare.stdout");
    tmp_path(err_path, sizeof err_path, "prepare.stderr");
    fflush(stdout), fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1), dup2(fe, 2), close(fo), close(fe);
    r->rc = cmd_prepare(argc, argv);
    fflush(stdout), fflush(stderr);
    dup2(saved_out, 1), dup2(saved_err, 2), close(saved_out), close(saved_err);
    size_t n;
    uint8_t *s = read_bytes(out_path, &n);
    snprintf(r->out, sizeof r->out, "%s", (char *)s);
    free(s);
    s = read_bytes(err_path, &n);
    snprintf(r->err, sizeof r->err, "%s", (char *)s);
    free(s);
}

// Case c of a table of bad invocations: exit status 1 and one 'error: '
// line on stderr that contains want.
static void check_refused(const PrepareRun *r, size_t c, const char *want) {
    ck_assert_msg(r->rc == 1, "case %zu: rc %d, want 1", c, r->rc);
    ck_assert_msg(strstr(r->err, want) != NULL, "case %zu: stderr '%s' lacks '%s'", c, r->err, want);
    ck_assert_msg(strncmp(r->err, "error: ", 7) == 0 && strchr(r->err, '\n') == r->err + strlen(r->err) - 1,
                  "case %zu: not one 'error: ' line: '%s'", c, r->err);
}

// Read DIR/{train,val,vocab}.bin back; check they decode to exactly text.
static void check_prepared(const char *dir, const uint8_t *text, size_t len, int want_vocab, size_t want_train,
                           size_t want_val) {
    char path[600], err[1024];
    Tokenizer t;
    TokenFile train, val;
    snprintf(path, sizeof path, "%s/vocab.bin", dir);
    ck_assert_msg(tokenizer_load(&t, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(t.vocab_size, want_vocab);
    snprintf(path, sizeof path, "%s/train.bin", dir);
    ck_assert_msg(tokens_read(path, t.vocab_size, &train, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/val.bin", dir);
    ck_assert_msg(tokens_read(path, t.vocab_size, &val, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(train.count, want_train);
    ck_assert_uint_eq(val.count, want_val);
    size_t a, b;
    char *s_train = decode_all(&t, train.tokens, train.count, &a);
    char *s_val = decode_all(&t, val.tokens, val.count, &b);
    ck_assert_uint_eq(a + b, len);
    ck_assert_mem_eq(s_train, text, a);
    ck_assert_mem_eq(s_val, text + a, b);
    free(s_train), free(s_val);
    tokens_free(&train), tokens_free(&val);
    tokenizer_free(&t);
}

START_TEST(test_prepare_small) {
    // 100 characters (110 bytes): 90 ASCII and 10 two-byte 'é'
    char text[128];
    size_t k = 0;
    for (int i = 0; i < 90; i++) text[k++] = "abcdefghij\n"[i % 11];
    for (int i = 0; i < 10; i++) text[k++] = (char)0xC3, text[k++] = (char)0xA9;
    char input[512], dir[512];
    tmp_path(input, sizeof input, "small.txt");
    tmp_path(dir, sizeof dir, "prepared/small");  // the parent does not exist yet: mkdir -p
    write_bytes(input, text, k);
    PrepareRun r;
    run_prepare(&r, "--input", input, "--out_dir", dir, NULL);
    ck_assert_msg(r.rc == 0, "rc %d, stderr: %s", r.rc, r.err);
    ck_assert_substr(r.out, "length of dataset in characters: 100\n");
    ck_assert_substr(r.out, "vocab size: 12\n");
    ck_assert_substr(r.out, "train has 90 tokens\n");
    ck_assert_substr(r.out, "val has 10 tokens\n");
    ck_assert_substr(r.out, "train.bin: 204 bytes");
    ck_assert_substr(r.out, "val.bin: 44 bytes");
    ck_assert_str_eq(r.err, "");
    check_prepared(dir, (const uint8_t *)text, k, 12, 90, 10);

    // another fraction, --key=value form, re-run over existing files
    run_prepare(&r, "--input=" , "--out_dir", dir, NULL);  // empty --input= is missing
    ck_assert_int_eq(r.rc, 1);
    char in_flag[600];
    snprintf(in_flag, sizeof in_flag, "--input=%s", input);
    run_prepare(&r, in_flag, "--out_dir", dir, "--val_fraction=0.25", NULL);
    ck_assert_msg(r.rc == 0, "stderr: %s", r.err);
    ck_assert_substr(r.out, "train has 75 tokens\n");
    check_prepared(dir, (const uint8_t *)text, k, 12, 75, 25);
}
END_TEST

START_TEST(test_prepare_errors) {
    char input[512], dir[512], bad[512], empty[512], tiny[512], file_dir[600];
    tmp_path(input, sizeof input, "ok.txt");
    tmp_path(dir, sizeof dir, "err_out");
    tmp_path(bad, sizeof bad, "bad.txt");
    tmp_path(empty, sizeof empty, "empty.txt");
    tmp_path(tiny, sizeof tiny, "tiny.txt");
    write_bytes(input, "To be, or not to be: that is the question.\n", 43);
    write_bytes(bad, "abc\xE2\x82", 5);
    write_bytes(empty, "", 0);
    write_bytes(tiny, "fifteen chars!\n", 15);
    PrepareRun r;

    run_prepare(&r, "--help", NULL);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_substr(r.out, "usage: gqa prepare --input FILE --out_dir DIR");
    ck_assert_substr(r.out, "--val_fraction");
    ck_assert_substr(r.out, "default: 0.1");

    struct {
        const char *args[6];
        const char *want;
    } cases[] = {
        {{"--out_dir", dir}, "error: missing --input FILE"},
        {{"--input", input}, "error: missing --out_dir DIR"},
        {{"--input", "/nonexistent/x.txt", "--out_dir", dir}, "error: cannot open '/nonexistent/x.txt': No such file"},
        {{"--input", tmp_root, "--out_dir", dir}, ": not a regular file"},
        {{"--input", bad, "--out_dir", dir}, "bad.txt: invalid UTF-8 at byte 3: truncated sequence"},
        {{"--input", empty, "--out_dir", dir}, "empty.txt: file is empty"},
        {{"--input", input, "--out_dir", dir, "--val_fraction", "0"}, "error: option 'val_fraction': 0 is out of range (0, 1)\n"},
        {{"--input", input, "--out_dir", dir, "--val_fraction", "1"}, "error: option 'val_fraction': 1 is out of range (0, 1)\n"},
        {{"--input", input, "--out_dir", dir, "--val_fraction", "1.5"}, "option 'val_fraction': 1.5 is out of range"},
        {{"--input", input, "--out_dir", dir, "--val_fraction", "x"}, "option 'val_fraction': 'x' is not a number"},
        {{"--input", tiny, "--out_dir", dir}, "15 characters at val_fraction 0.1 split into train 13 and val 2"},
        {{"--input", tiny, "--out_dir", dir, "--val_fraction", "0.05"},
         "15 characters at val_fraction 0.05 split into train 14 and val 1 tokens; each needs at least 2"},
        {{"--input", tiny, "--out_dir", dir, "--val_fraction", "0.9"}, "split into train 1 and val 14 tokens"},
        {{"--input", input, "--out_dir", input}, "exists and is not a directory"},
        {{"--input", input, "--out_dir", dir, "--n_layer", "4"}, "error: unknown option 'n_layer'"},
        {{"--input", input, "stray"}, "error: unexpected argument 'stray'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *const *a = cases[c].args;
        run_prepare(&r, a[0], a[1], a[2], a[3], a[4], a[5], NULL);
        if (strstr(cases[c].want, "train 13 and val 2")) {  // 13/2 is fine: the control case
            ck_assert_msg(r.rc == 0, "case %zu: %s", c, r.err);
            continue;
        }
        check_refused(&r, c, cases[c].want);
    }
    // out_dir below a regular file
    snprintf(file_dir, sizeof file_dir, "%s/sub", input);
    run_prepare(&r, "--input", input, "--out_dir", file_dir, NULL);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_substr(r.err, "cannot create directory");
    ck_assert_substr(r.err, "Not a directory");
}
END_TEST

// Whole files of a prepared directory, for byte comparisons.
static uint8_t *read_in(const char *dir, const char *name, size_t *len) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return read_bytes(path, len);
}

START_TEST(test_prepare_recall) {
    char a[512], b[512], c[512];
    tmp_path(a, sizeof a, "recall_a");
    tmp_path(b, sizeof b, "recall_b");
    tmp_path(c, sizeof c, "recall_c");
    PrepareRun r;
    const char *shape[] = {"--num_train", "300", "--num_val", "20", "--seq_len", "40", "--num_pairs", "8"};
#define SHAPE shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], shape[7]
    run_prepare(&r, "--task", "recall", "--out_dir", a, SHAPE, NULL);
    ck_assert_msg(r.rc == 0, "rc %d, stderr: %s", r.rc, r.err);
    ck_assert_str_eq(r.err, "");
    ck_assert_substr(r.out, "recall: 8 key-value pairs, then 12 queries (key, answer), per sequence of 40 tokens\n");
    ck_assert_substr(r.out, "keys: ids 0..25 (A..Z), values: ids 26..51 (a..z); chance accuracy 1/26\n");
    ck_assert_substr(r.out, "answers at positions 17, 19, .., 39 of each sequence");
    ck_assert_substr(r.out, "train has 300 sequences (12,000 tokens)\n");
    ck_assert_substr(r.out, "recall.bin: 48 bytes (recall task)\n");
    ck_assert_msg(!strstr(r.out, "val_fraction") && !strstr(r.out, "input"), "text options listed: %s", r.out);
    run_prepare(&r, "--task", "recall", "--out_dir", b, SHAPE, NULL);
    ck_assert_int_eq(r.rc, 0);
    run_prepare(&r, "--task", "recall", "--out_dir", c, SHAPE, "--seed", "1338", NULL);
    ck_assert_int_eq(r.rc, 0);
    const char *names[] = {"train.bin", "val.bin", "vocab.bin", "recall.bin"};
    for (int i = 0; i < 4; i++) {  // the same seed: the same bytes; another seed: other sequences
        size_t la, lb, lc;
        uint8_t *fa = read_in(a, names[i], &la), *fb = read_in(b, names[i], &lb), *fc = read_in(c, names[i], &lc);
        ck_assert_uint_eq(la, lb);
        ck_assert_mem_eq(fa, fb, la);
        ck_assert_uint_eq(la, lc);
        if (i < 2) ck_assert_msg(memcmp(fa, fc, la) != 0, "%s: seed 1338 gave seed 1337's bytes", names[i]);
        if (i == 2) ck_assert_mem_eq(fa, fc, la);  // the vocabulary depends on vocab_size alone
        free(fa), free(fb), free(fc);
    }
    // what the trainer reads: the files agree with one another
    char path[700], err[1024];
    RecallTask t;
    Tokenizer tok;
    TokenFile train;
    snprintf(path, sizeof path, "%s/recall.bin", a);
    ck_assert_msg(recall_read(path, &t, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(t.num_queries, 12);
    ck_assert_uint_eq(t.seed, 1337);
    snprintf(path, sizeof path, "%s/vocab.bin", a);
    ck_assert_int_eq(tokenizer_load(&tok, path, err, sizeof err), 0);
    ck_assert_int_eq(tok.vocab_size, 52);
    snprintf(path, sizeof path, "%s/train.bin", a);
    ck_assert_int_eq(tokens_read(path, 52, &train, err, sizeof err), 0);
    ck_assert_uint_eq(train.count, 300 * 40);
    ck_assert_msg(recall_check_tokens(&t, train.tokens, train.count, err, sizeof err) == 0, "%s", err);
    tokens_free(&train);
    tokenizer_free(&tok);

    // text prepared over a recall directory removes recall.bin
    char input[512];
    tmp_path(input, sizeof input, "some.txt");
    write_bytes(input, "some text, long enough to split\n", 32);
    run_prepare(&r, "--input", input, "--out_dir", a, NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_substr(r.out, "recall.bin (left by --task recall)");
    snprintf(path, sizeof path, "%s/recall.bin", a);
    ck_assert(!file_exists(path));
#undef SHAPE
}
END_TEST

START_TEST(test_prepare_recall_errors) {
    char dir[512], input[512];
    tmp_path(dir, sizeof dir, "recall_err");
    tmp_path(input, sizeof input, "in.txt");
    write_bytes(input, "To be, or not to be: that is the question.\n", 43);
    PrepareRun r;
    run_prepare(&r, "--help", NULL);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_substr(r.out, "gqa prepare --task recall --out_dir DIR");
    ck_assert_substr(r.out, "--num_pairs N");
    struct {
        const char *args[8];
        const char *want;
    } cases[] = {
        {{"--task", "recall", "--out_dir", dir, "--vocab_size", "7"}, "--task recall: vocab_size 7 must be even"},
        {{"--task", "recall", "--out_dir", dir, "--vocab_size", "2"}, "option 'vocab_size': 2 is out of range [4, 22344]"},
        {{"--task", "recall", "--out_dir", dir, "--num_pairs", "27"},
         "--task recall: num_pairs 27 is out of range [1, 26]: a sequence's keys are distinct"},
        {{"--task", "recall", "--out_dir", dir, "--seq_len", "63"}, "--task recall: seq_len 63 must be even"},
        {{"--task", "recall", "--out_dir", dir, "--seq_len", "32"},
         "seq_len 32 leaves no room for a query after 16 pairs: it must be >= 2 * num_pairs + 2 = 34"},
        {{"--task", "recall", "--out_dir", dir, "--num_train", "1"}, "option 'num_train': 1 is out of range [2, "},
        {{"--task", "recall", "--out_dir", dir, "--num_train", "40000000"},
         "num_train 40000000 x seq_len 64 is more than the 2147483648 tokens allowed per split"},
        {{"--task", "recall", "--out_dir", dir, "--seed", "-1"}, "option 'seed': -1 is out of range"},
        {{"--task", "recall", "--out_dir", dir, "--input", input}, "--input is an option of --task text, not of --task recall"},
        {{"--task", "recall", "--out_dir", dir, "--val_fraction", "0.2"}, "--val_fraction is an option of --task text"},
        {{"--input", input, "--out_dir", dir, "--num_pairs", "4"}, "--num_pairs is an option of --task recall, not of --task text"},
        {{"--task", "text", "--out_dir", dir, "--seed", "4"}, "--seed is an option of --task recall"},
        {{"--task", "text", "--out_dir", dir}, "error: missing --input FILE"},
        {{"--task", "recall"}, "error: missing --out_dir DIR"},
        {{"--task", "copy", "--out_dir", dir}, "option 'task': 'copy' is not one of text, recall"},
        {{"--task", "recall", "--out_dir", input}, "exists and is not a directory"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *const *a = cases[c].args;
        run_prepare(&r, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL);
        check_refused(&r, c, cases[c].want);
    }
}
END_TEST

START_TEST(test_prepare_shakespeare) {
    char dir[512];
    tmp_path(dir, sizeof dir, "shakespeare_char");
    PrepareRun r;
    run_prepare(&r, "--input", SHAKESPEARE_PATH, "--out_dir", dir, NULL);
    ck_assert_msg(r.rc == 0, "rc %d, stderr: %s", r.rc, r.err);
    // nanoGPT data/shakespeare_char/prepare.py prints these
    ck_assert_substr(r.out, "length of dataset in characters: 1,115,394\n");
    ck_assert_substr(r.out, "all the unique characters: \\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n");
    ck_assert_substr(r.out, "vocab size: 65\n");
    ck_assert_substr(r.out, "train has 1,003,854 tokens\n");
    ck_assert_substr(r.out, "val has 111,540 tokens\n");
    ck_assert_substr(r.out, "train.bin: 2,007,732 bytes");
    ck_assert_substr(r.out, "val.bin: 223,104 bytes");

    size_t len;
    uint8_t *text = read_bytes(SHAKESPEARE_PATH, &len);
    ck_assert_uint_eq(len, 1115394);
    check_prepared(dir, text, len, 65, 1003854, 111540);
    free(text);

    char path[600], err[1024];
    Tokenizer t;
    TokenFile train;
    snprintf(path, sizeof path, "%s/vocab.bin", dir);
    ck_assert_int_eq(tokenizer_load(&t, path, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/train.bin", dir);
    ck_assert_int_eq(tokens_read(path, 65, &train, err, sizeof err), 0);
    // "First Citizen" and encode("hii there"), as in nanoGPT's notebook
    const int first[] = {18, 47, 56, 57, 58, 1, 15, 47, 58, 47, 64, 43, 52, 10, 0};
    ck_assert_mem_eq(train.tokens, first, sizeof first);
    int ids[9];
    size_t n;
    ck_assert_int_eq(tokenizer_encode(&t, "hii there", 9, ids, &n, err, sizeof err), 0);
    const int hii[] = {46, 47, 47, 1, 58, 46, 43, 56, 43};
    ck_assert_uint_eq(n, 9);
    ck_assert_mem_eq(ids, hii, sizeof hii);
    tokens_free(&train);
    tokenizer_free(&t);
}
END_TEST

// ----------------------------------------------------------------------------

static Suite *data_suite(void) {
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("tokenizer");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_round_trip_ascii);
    tcase_add_test(tc, test_round_trip_multibyte);
    tcase_add_test(tc, test_vocab_sorted);
    tcase_add_loop_test(tc, test_invalid_utf8, 0, (int)(sizeof bad_utf8 / sizeof bad_utf8[0]));
    tcase_add_test(tc, test_empty_text);
    tcase_add_test(tc, test_encode_out_of_vocab);
    tcase_add_test(tc, test_parse_round_trip_and_errors);
    tcase_add_test(tc, test_vocab_file);
    suite_add_tcase(s, tc);
    tc = tcase_create("tokens");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_tokens_round_trip);
    tcase_add_test(tc, test_byte_order);
    tcase_add_test(tc, test_tokens_truncated);
    tcase_add_test(tc, test_tokens_bad_files);
    tcase_add_test(tc, test_tokens_write_failures);
    suite_add_tcase(s, tc);
    tc = tcase_create("prepare");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_prepare_small);
    tcase_add_test(tc, test_prepare_errors);
    tcase_add_test(tc, test_prepare_shakespeare);
    tcase_add_test(tc, test_prepare_recall);
    tcase_add_test(tc, test_prepare_recall_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("recall");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_recall_hand_case);
    tcase_add_test(tc, test_recall_generator);
    tcase_add_test(tc, test_recall_queries_independent);
    tcase_add_test(tc, test_recall_accuracy);
    tcase_add_test(tc, test_recall_file);
    tcase_add_test(tc, test_recall_corpus);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(data_suite()) == 0 ? 0 : 1; }
