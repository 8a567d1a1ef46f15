/*
 * fuzz_config.c: libFuzzer harness for the config-file parser with the
 * option table of `gqa train`, followed by its cross-field validation.
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "../../cli/cli.h"
#include "../../train/train.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (fuzz_write_file(path, sizeof path, "config", "conf", data, size) != 0) return 0;
    TrainConfig tc;
    train_config_defaults(&tc);
    int n;
    const Opt *opts = cli_train_opts(&tc, &n);
    char err[1024];
    if (opts_parse_file(opts, n, path, NULL, err, sizeof err) == 0) train_config_validate(&tc, err, sizeof err);
    unlink(path);
    return 0;
}
