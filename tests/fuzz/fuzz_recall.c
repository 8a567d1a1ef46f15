/*
 * fuzz_recall.c: libFuzzer harness for the recall task file reader
 * (DIR/recall.bin, through a file, as `gqa train` reads it). A file the
 * reader accepts must describe a task the generator can run: a few
 * sequences of it are generated and pass the layout check.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../data/recall.h"
#include "../../util/util.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (fuzz_write_file(path, sizeof path, "recall", "bin", data, size) != 0) return 0;
    RecallTask t;
    char err[512];
    if (recall_read(path, &t, err, sizeof err) == 0) {
        const size_t n = 2;
        int *tokens = malloc_check(n * (size_t)t.seq_len * sizeof(int));
        recall_generate(&t, 0, n, tokens);
        CHECK(recall_check_tokens(&t, tokens, n * (size_t)t.seq_len, err, sizeof err) == 0);
        free(tokens);
    }
    unlink(path);
    return 0;
}
