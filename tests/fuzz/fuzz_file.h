/*
 * fuzz_file.h: the harnesses whose reader takes a path (as gqa reads its
 * files) write each input to a file of their own first.
 */
#ifndef GQA_FUZZ_FILE_H
#define GQA_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

// Write data to /tmp/gqa_fuzz_<name>_<pid>.<ext> and put its path in path
// (len bytes); 0, or -1 when it cannot be written. The caller unlinks it.
static inline int fuzz_write_file(char *path, size_t len, const char *name, const char *ext, const uint8_t *data,
                                  size_t size) {
    snprintf(path, len, "/tmp/gqa_fuzz_%s_%d.%s", name, (int)getpid(), ext);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(data, 1, size, f);
    fclose(f);
    return 0;
}

#endif
