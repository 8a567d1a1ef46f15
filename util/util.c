/*
 * util.c: the checked helpers of util.h. Nothing here knows about models.
 */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

FILE *fopen_check_(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f) die("cannot open '%s' (mode %s): %s [%s:%d]", path, mode, strerror(errno), file, line);
    return f;
}

void fread_check_(void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    size_t got = fread(ptr, size, n, f);
    if (got != n) {
        die("short read: wanted %zu items of %zu bytes, got %zu (%s) [%s:%d]", n, size, got,
            feof(f) ? "end of file" : "read error", file, line);
    }
}

void fwrite_check_(const void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    size_t put = fwrite(ptr, size, n, f);
    if (put != n) {
        die("short write: wanted %zu items of %zu bytes, wrote %zu: %s [%s:%d]", n, size, put,
            strerror(errno), file, line);
    }
}

void *malloc_check_(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) die("out of memory allocating %zu bytes [%s:%d]", size, file, line);
    return p;
}

void *calloc_check_(size_t n, size_t size, const char *file, int line) {
    size_t total;
    if (!size_mul(n, size, &total)) die("allocation size overflows: %zu x %zu [%s:%d]", n, size, file, line);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu bytes [%s:%d]", total, file, line);
    return p;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *format_bytes(double bytes, char *buf, size_t len) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, len, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
    return buf;
}

size_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024;  // Linux reports KiB
}
