/*
 * prepare.c: `gqa prepare`, text file in, token files out (nanoGPT's
 * data/shakespeare_char/prepare.py). Reads FILE as UTF-8, builds the
 * character vocabulary (data/tokenizer.h), encodes the whole text, splits
 * like nanoGPT (train = data[:int(n * (1 - val_fraction))]) and writes
 * DIR/train.bin, DIR/val.bin and DIR/vocab.bin, creating DIR if needed.
 * User errors are one line on stderr and exit status 1; only internal
 * failures die.
 */

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/tokenizer.h"
#include "../data/tokens.h"
#include "../util/util.h"
#include "cli.h"

typedef struct {
    char input[OPT_STR_MAX];    // UTF-8 text file
    char out_dir[OPT_STR_MAX];  // where train.bin, val.bin, vocab.bin go
    float val_fraction;         // share of tokens (the tail) held out for val.bin, in (0, 1)
} PrepareConfig;

// Print "error: ..." and return the exit status 1 (tests call cmd_prepare
// in-process, so it returns instead of exiting).
#define prepare_fail(...) (error_message(__VA_ARGS__), 1)

// ----------------------------------------------------------------------------
// helpers

// 1115394 -> "1,115,394" (as nanoGPT prints counts with {:,}).
static const char *format_count(size_t n, char *buf, size_t len) {
    char digits[32];
    int nd = snprintf(digits, sizeof digits, "%zu", n);
    size_t k = 0;
    for (int i = 0; i < nd && k + 2 < len; i++) {
        if (i > 0 && (nd - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = digits[i];
    }
    buf[k] = '\0';
    return buf;
}

// The vocabulary on one line: printable characters as themselves, \n \t \r
// escaped, other control characters as <U+XXXX>; long vocabularies cut.
static void print_vocab(const Tokenizer *t) {
    const int show = t->vocab_size < 256 ? t->vocab_size : 256;
    printf("all the unique characters: ");
    for (int i = 0; i < show; i++) {
        uint32_t cp = t->codepoints[i];
        if (cp == '\n') fputs("\\n", stdout);
        else if (cp == '\t') fputs("\\t", stdout);
        else if (cp == '\r') fputs("\\r", stdout);
        else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) printf("<U+%04X>", cp);
        else {
            char u[4];
            fwrite(u, 1, (size_t)tokenizer_decode(t, i, u), stdout);
        }
    }
    if (show < t->vocab_size) printf(" ... (%d more)", t->vocab_size - show);
    putchar('\n');
}

// ----------------------------------------------------------------------------
// gqa prepare

int cmd_prepare(int argc, char **argv) {
    PrepareConfig cfg = {.input = "", .out_dir = "", .val_fraction = 0.1f};
    const Opt opts[] = {
        {"input", OPT_STRING, cfg.input, 0, 0, "UTF-8 text file to tokenize", NULL, OPT_REQUIRED, NULL, "FILE"},
        {"out_dir", OPT_STRING, cfg.out_dir, 0, 0, "directory for train.bin, val.bin, vocab.bin (created)", NULL,
         OPT_REQUIRED, NULL, "DIR"},
        {"val_fraction", OPT_FLOAT, &cfg.val_fraction, 0, 1, "share of tokens, from the end, for val.bin", NULL,
         OPT_OPEN, NULL, NULL},
    };
    const int nopts = sizeof opts / sizeof opts[0];
    static const char usage[] =
        "usage: gqa prepare --input FILE --out_dir DIR [--val_fraction 0.1]\n"
        "\n"
        "Build a character vocabulary from FILE and write DIR/train.bin (first tokens),\n"
        "DIR/val.bin (last val_fraction of tokens) and DIR/vocab.bin.\n";
    const int rc = opts_parse_command(opts, nopts, argc, argv, usage, 0);
    if (rc != 0) return rc < 0;  // --help: 0, an error: 1
    char err[1024];
    if (cfg.input[0] == '\0') return prepare_fail("--input is empty: give the UTF-8 text to tokenize");
    if (cfg.out_dir[0] == '\0') return prepare_fail("--out_dir is empty: give the directory for the token files");
    // The option arrives as a float (0.1f is 0.100000001). Take back the
    // decimal that was typed (FLT_DIG digits survive a round trip) so the
    // split is nanoGPT's int(n * 0.9) in double: with the float itself, 100
    // tokens would split 89/11 instead of 90/10.
    char vbuf[32];
    snprintf(vbuf, sizeof vbuf, "%.*g", FLT_DIG, (double)cfg.val_fraction);
    const double val_fraction = strtod(vbuf, NULL);
    printf("gqa prepare:\n");
    opts_print_values(opts, nopts, stdout);

    uint8_t *text;
    size_t len;
    if (read_file(cfg.input, SIZE_MAX / sizeof(int) - 1, &text, &len, err, sizeof err) != 0)
        return prepare_fail("%s", err);
    if (len == 0) {
        free(text);
        return prepare_fail("%s: file is empty (nothing to tokenize)", cfg.input);
    }
    Tokenizer tok;
    if (tokenizer_build(&tok, (const char *)text, len, err, sizeof err) != 0) {
        free(text);
        return prepare_fail("%s: %s", cfg.input, err);
    }
    int *ids = malloc_check(len * sizeof(int));
    size_t n;
    CHECK(tokenizer_encode(&tok, (const char *)text, len, ids, &n, err, sizeof err) == 0);
    free(text);

    const size_t n_train = (size_t)((double)n * (1.0 - val_fraction));
    const size_t n_val = n - n_train;
    char c1[32], c2[32];
    printf("length of dataset in characters: %s\n", format_count(n, c1, sizeof c1));
    print_vocab(&tok);
    printf("vocab size: %d\n", tok.vocab_size);
    int status = 0;
    if (n_train < 2 || n_val < 2) {
        status = prepare_fail("%s: %zu characters at val_fraction %g split into train %zu and val %zu tokens; "
                              "each needs at least 2 (an input and its target): use a longer text or another "
                              "val_fraction",
                              cfg.input, n, val_fraction, n_train, n_val);
        goto done;
    }
    printf("train has %s tokens\n", format_count(n_train, c1, sizeof c1));
    printf("val has %s tokens\n", format_count(n_val, c1, sizeof c1));

    if (make_dirs(cfg.out_dir, err, sizeof err) != 0) {
        status = prepare_fail("%s", err);
        goto done;
    }
    const char *names[3] = {"train.bin", "val.bin", "vocab.bin"};
    for (int i = 0; i < 3; i++) {
        char path[OPT_STR_MAX + 16];
        snprintf(path, sizeof path, "%s/%s", cfg.out_dir, names[i]);
        int w = i == 0   ? tokens_write(path, ids, n_train, tok.vocab_size, err, sizeof err)
                : i == 1 ? tokens_write(path, ids + n_train, n_val, tok.vocab_size, err, sizeof err)
                         : tokenizer_save(&tok, path, err, sizeof err);
        if (w != 0) {
            status = prepare_fail("%s", err);
            goto done;
        }
        struct stat st;
        size_t bytes = stat(path, &st) == 0 ? (size_t)st.st_size : 0;
        const char *what = i == 2 ? "vocabulary" : tok.vocab_size <= 65536 ? "uint16 tokens" : "uint32 tokens";
        printf("wrote %s: %s bytes (%s)\n", path, format_count(bytes, c2, sizeof c2), what);
    }
done:
    free(ids);
    tokenizer_free(&tok);
    return status;
}
