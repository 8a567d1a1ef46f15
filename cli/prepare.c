/*
 * prepare.c: `gqa prepare`, the data of `gqa train`. Two tasks:
 * - text (nanoGPT's data/shakespeare_char/prepare.py): reads FILE as UTF-8,
 *   builds the character vocabulary (data/tokenizer.h), encodes the whole
 *   text and splits like nanoGPT (train = data[:int(n * (1 - val_fraction))]);
 * - recall: generates multi-query associative recall sequences
 *   (data/recall.h) from a seed and also writes DIR/recall.bin.
 * Both write DIR/train.bin, DIR/val.bin and DIR/vocab.bin, creating DIR if
 * needed. User errors are one line on stderr and exit status 1; only
 * internal failures die.
 */

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/recall.h"
#include "../data/tokenizer.h"
#include "../data/tokens.h"
#include "../util/util.h"
#include "cli.h"

enum { PREPARE_TEXT, PREPARE_RECALL };
static const char *const prepare_tasks[] = {"text", "recall", NULL};

typedef struct {
    int task;                   // PREPARE_TEXT | PREPARE_RECALL
    char out_dir[OPT_STR_MAX];  // where train.bin, val.bin, vocab.bin (and recall.bin) go
    // --task text
    char input[OPT_STR_MAX];    // UTF-8 text file
    float val_fraction;         // share of tokens (the tail) held out for val.bin, in (0, 1)
    // --task recall (data/recall.h): V, P, S, sequences per split, seed
    int vocab_size, num_pairs, seq_len, num_train, num_val, seed;
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

// Write DIR/train.bin, DIR/val.bin and DIR/vocab.bin, each line "wrote ...".
static int write_splits(const char *dir, const int *train, size_t n_train, const int *val, size_t n_val,
                        const Tokenizer *tok) {
    char err[1024], c[32];
    const char *names[3] = {"train.bin", "val.bin", "vocab.bin"};
    for (int i = 0; i < 3; i++) {
        char path[OPT_STR_MAX + 16];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        int w = i == 0   ? tokens_write(path, train, n_train, tok->vocab_size, err, sizeof err)
                : i == 1 ? tokens_write(path, val, n_val, tok->vocab_size, err, sizeof err)
                         : tokenizer_save(tok, path, err, sizeof err);
        if (w != 0) return prepare_fail("%s", err);
        struct stat st;
        size_t bytes = stat(path, &st) == 0 ? (size_t)st.st_size : 0;
        const char *what = i == 2 ? "vocabulary" : tok->vocab_size <= 65536 ? "uint16 tokens" : "uint32 tokens";
        printf("wrote %s: %s bytes (%s)\n", path, format_count(bytes, c, sizeof c), what);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// --task text: a UTF-8 file, character tokens

static int prepare_text(const PrepareConfig *cfg) {
    char err[1024];
    // The option arrives as a float (0.1f is 0.100000001). Take back the
    // decimal that was typed (FLT_DIG digits survive a round trip) so the
    // split is nanoGPT's int(n * 0.9) in double: with the float itself, 100
    // tokens would split 89/11 instead of 90/10.
    char vbuf[32];
    snprintf(vbuf, sizeof vbuf, "%.*g", FLT_DIG, (double)cfg->val_fraction);
    const double val_fraction = strtod(vbuf, NULL);

    uint8_t *text;
    size_t len;
    if (read_file(cfg->input, SIZE_MAX / sizeof(int) - 1, &text, &len, err, sizeof err) != 0)
        return prepare_fail("%s", err);
    if (len == 0) {
        free(text);
        return prepare_fail("%s: file is empty (nothing to tokenize)", cfg->input);
    }
    Tokenizer tok;
    if (tokenizer_build(&tok, (const char *)text, len, err, sizeof err) != 0) {
        free(text);
        return prepare_fail("%s: %s", cfg->input, err);
    }
    int *ids = malloc_check(len * sizeof(int));
    size_t n;
    CHECK(tokenizer_encode(&tok, (const char *)text, len, ids, &n, err, sizeof err) == 0);
    free(text);

    const size_t n_train = (size_t)((double)n * (1.0 - val_fraction));
    const size_t n_val = n - n_train;
    char c1[32];
    printf("length of dataset in characters: %s\n", format_count(n, c1, sizeof c1));
    print_vocab(&tok);
    printf("vocab size: %d\n", tok.vocab_size);
    int status = 0;
    if (n_train < 2 || n_val < 2) {
        status = prepare_fail("%s: %zu characters at val_fraction %g split into train %zu and val %zu tokens; "
                              "each needs at least 2 (an input and its target): use a longer text or another "
                              "val_fraction",
                              cfg->input, n, val_fraction, n_train, n_val);
        goto done;
    }
    printf("train has %s tokens\n", format_count(n_train, c1, sizeof c1));
    printf("val has %s tokens\n", format_count(n_val, c1, sizeof c1));

    if (make_dirs(cfg->out_dir, err, sizeof err) != 0) {
        status = prepare_fail("%s", err);
        goto done;
    }
    // a recall.bin left by `--task recall` in this directory would make
    // `gqa train` read these text tokens as recall sequences
    char path[OPT_STR_MAX + 16];
    snprintf(path, sizeof path, "%s/recall.bin", cfg->out_dir);
    if (unlink(path) == 0) printf("removed %s (left by --task recall)\n", path);
    else if (errno != ENOENT) {
        status = prepare_fail("cannot remove %s: %s (it would mark text tokens as recall sequences)", path,
                              strerror(errno));
        goto done;
    }
    status = write_splits(cfg->out_dir, ids, n_train, ids + n_train, n_val, &tok);
done:
    free(ids);
    tokenizer_free(&tok);
    return status;
}

// ----------------------------------------------------------------------------
// --task recall: generated multi-query associative recall sequences

static int prepare_recall(const PrepareConfig *cfg) {
    char err[1024], c1[32], c2[32];
    RecallTask t = {.vocab_size = cfg->vocab_size, .num_pairs = cfg->num_pairs, .seq_len = cfg->seq_len,
                    .num_train = (uint64_t)cfg->num_train, .num_val = (uint64_t)cfg->num_val,
                    .seed = (uint64_t)cfg->seed};
    if (recall_task_resolve(&t, err, sizeof err) != 0) return prepare_fail("--task recall: %s", err);
    const size_t S = (size_t)t.seq_len, n_train = (size_t)t.num_train * S, n_val = (size_t)t.num_val * S;
    int *train = malloc_check(n_train * sizeof(int)), *val = malloc_check(n_val * sizeof(int));
    recall_generate(&t, 0, (size_t)t.num_train, train);
    recall_generate(&t, 1, (size_t)t.num_val, val);
    Tokenizer tok;
    recall_vocab(&t, &tok);
    // the generator's output passes the check the trainer makes
    CHECK(recall_check_tokens(&t, train, n_train, err, sizeof err) == 0);
    CHECK(recall_check_tokens(&t, val, n_val, err, sizeof err) == 0);

    const int K = t.vocab_size / 2, P = t.num_pairs;
    char u[4][4];
    int ul[4] = {tokenizer_decode(&tok, 0, u[0]), tokenizer_decode(&tok, K - 1, u[1]),
                 tokenizer_decode(&tok, K, u[2]), tokenizer_decode(&tok, t.vocab_size - 1, u[3])};
    printf("recall: %d key-value pairs, then %d queries (key, answer), per sequence of %d tokens\n", P,
           t.num_queries, t.seq_len);
    printf("keys: ids 0..%d (%.*s..%.*s), values: ids %d..%d (%.*s..%.*s); chance accuracy 1/%d\n", K - 1, ul[0],
           u[0], ul[1], u[1], K, t.vocab_size - 1, ul[2], u[2], ul[3], u[3], K);
    printf("answers at positions %d, %d, .., %d of each sequence (p >= 2 num_pairs, p - 2 num_pairs odd)\n",
           2 * P + 1, 2 * P + 3, t.seq_len - 1);
    printf("first train sequence: ");
    for (size_t i = 0; i < S; i++) {
        if ((int)i == 2 * P) fputs(" | ", stdout);
        char b[4];
        fwrite(b, 1, (size_t)tokenizer_decode(&tok, train[i], b), stdout);
    }
    putchar('\n');
    printf("train has %s sequences (%s tokens)\n", format_count((size_t)t.num_train, c1, sizeof c1),
           format_count(n_train, c2, sizeof c2));
    printf("val has %s sequences (%s tokens)\n", format_count((size_t)t.num_val, c1, sizeof c1),
           format_count(n_val, c2, sizeof c2));

    int status = 0;
    char path[OPT_STR_MAX + 16];
    if (make_dirs(cfg->out_dir, err, sizeof err) != 0) {
        status = prepare_fail("%s", err);
        goto done;
    }
    if ((status = write_splits(cfg->out_dir, train, n_train, val, n_val, &tok)) != 0) goto done;
    snprintf(path, sizeof path, "%s/recall.bin", cfg->out_dir);
    if (recall_write(path, &t, err, sizeof err) != 0) {
        status = prepare_fail("%s", err);
        goto done;
    }
    printf("wrote %s: %d bytes (recall task)\n", path, RECALL_FILE_BYTES);
done:
    free(train), free(val);
    tokenizer_free(&tok);
    return status;
}

// ----------------------------------------------------------------------------
// gqa prepare

int cmd_prepare(int argc, char **argv) {
    PrepareConfig cfg = {.task = PREPARE_TEXT, .input = "", .out_dir = "", .val_fraction = 0.1f,
                         .vocab_size = 52, .num_pairs = 16, .seq_len = 64, .num_train = 20000, .num_val = 2000,
                         .seed = 1337};
    const Opt opts[] = {
        {"task", OPT_CHOICE, &cfg.task, 0, 0,
         "text: tokenize --input; recall: generate multi-query associative recall sequences", prepare_tasks, 0, NULL,
         NULL},
        {"out_dir", OPT_STRING, cfg.out_dir, 0, 0, "directory for train.bin, val.bin, vocab.bin (created)", NULL,
         OPT_REQUIRED, NULL, "DIR"},
        {"input", OPT_STRING, cfg.input, 0, 0, "UTF-8 text file to tokenize; required with --task text", NULL, 0, "--task text",
         "FILE"},
        {"val_fraction", OPT_FLOAT, &cfg.val_fraction, 0, 1, "share of tokens, from the end, for val.bin", NULL,
         OPT_OPEN, "--task text", NULL},
        {"vocab_size", OPT_INT, &cfg.vocab_size, 4, RECALL_MAX_VOCAB,
         "even: keys are ids [0, V/2) (A.. while V <= 52), values [V/2, V) (a..)", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
        {"num_pairs", OPT_INT, &cfg.num_pairs, 1, RECALL_MAX_VOCAB / 2,
         "key-value pairs per sequence, distinct keys and values (<= vocab_size/2)", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
        {"seq_len", OPT_INT, &cfg.seq_len, 4, RECALL_MAX_SEQ_LEN,
         "tokens per sequence, even, >= 2 num_pairs + 2; queries fill the rest: seq_len/2 - num_pairs", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
        {"num_train", OPT_INT, &cfg.num_train, 2, 1e9, "sequences in train.bin", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
        {"num_val", OPT_INT, &cfg.num_val, 2, 1e9, "sequences in val.bin", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
        {"seed", OPT_INT, &cfg.seed, 0, 2147483647, "random seed of the generator (same seed, same bytes)", NULL, 0,
         "--task recall (also writes DIR/recall.bin)", NULL},
    };
    enum { O_TASK, O_OUT_DIR, O_INPUT, O_VAL_FRACTION, O_FIRST_RECALL, NOPTS = sizeof opts / sizeof opts[0] };
    static const char usage[] =
        "usage: gqa prepare --input FILE --out_dir DIR [--val_fraction 0.1]\n"
        "       gqa prepare --task recall --out_dir DIR [--vocab_size 52 --num_pairs 16 --seq_len 64 ...]\n"
        "\n"
        "text: build a character vocabulary from FILE and write DIR/train.bin (first tokens),\n"
        "DIR/val.bin (last val_fraction of tokens) and DIR/vocab.bin.\n"
        "recall: generate multi-query associative recall (Zoology, arXiv 2312.04927): each sequence\n"
        "holds num_pairs key-value pairs, then queries of pairs drawn at random, each followed by\n"
        "its value; writes the same three files and DIR/recall.bin, by which `gqa train` starts its\n"
        "windows at sequence boundaries, counts the loss on the answers alone (--loss_on) and\n"
        "reports the accuracy on them.\n";
    char err[1024];
    int seen[NOPTS] = {0};
    int rc = opts_parse_argv(opts, NOPTS, argc, argv, 2, NULL, NULL, 0, seen, err, sizeof err);
    if (rc == 1) {
        fputs(usage, stdout);
        opts_print_help(opts, NOPTS, stdout);
        return 0;
    }
    if (rc != 0) return prepare_fail("%s", err);
    if (!seen[O_OUT_DIR]) return prepare_fail("missing --out_dir DIR (required; see --help)");
    if (cfg.out_dir[0] == '\0') return prepare_fail("--out_dir is empty: give the directory for the token files");
    // options of the other task are refused, not ignored
    const int text = cfg.task == PREPARE_TEXT;
    for (int i = O_INPUT; i < NOPTS; i++)
        if (seen[i] && (i >= O_FIRST_RECALL) == text)
            return prepare_fail("--%s is an option of --task %s, not of --task %s", opts[i].name,
                                text ? "recall" : "text", prepare_tasks[cfg.task]);
    if (text && !seen[O_INPUT]) return prepare_fail("missing --input FILE (required with --task text; see --help)");
    if (text && cfg.input[0] == '\0') return prepare_fail("--input is empty: give the UTF-8 text to tokenize");

    // the resolved configuration: the options of this task
    Opt shown[NOPTS];
    int n_shown = 0;
    for (int i = 0; i < NOPTS; i++)
        if (i < O_INPUT || (i >= O_FIRST_RECALL) != text) shown[n_shown++] = opts[i];
    printf("gqa prepare:\n");
    opts_print_values(shown, n_shown, stdout);
    return text ? prepare_text(&cfg) : prepare_recall(&cfg);
}
