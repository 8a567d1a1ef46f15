/*
 * fuzz_tokens.c: libFuzzer harness for the token-file reader (through a
 * file, as `gqa train` reads it), with and without an expected vocabulary.
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "../../data/tokens.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (fuzz_write_file(path, sizeof path, "tokens", "bin", data, size) != 0) return 0;
    TokenFile tf;
    char err[512];
    if (tokens_read(path, 0, &tf, err, sizeof err) == 0) tokens_free(&tf);
    if (tokens_read(path, 65, &tf, err, sizeof err) == 0) tokens_free(&tf);
    unlink(path);
    return 0;
}
