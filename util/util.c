/*
 * util.c: the checked helpers of util.h. Nothing here knows about models.
 */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void verror_message(const char *fmt, va_list ap) {
    fflush(stdout);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void error_message(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verror_message(fmt, ap);
    va_end(ap);
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verror_message(fmt, ap);
    va_end(ap);
    exit(1);
}

int make_dirs(const char *dir, char *err, size_t errlen) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s", dir) >= sizeof path || !dir[0]) {
        snprintf(err, errlen, "bad directory name '%s'", dir);
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create directory '%s': %s", path, strerror(errno));
            return -1;
        }
        *p = c;
        if (c == '\0') break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "'%s' exists and is not a directory", dir);
        return -1;
    }
    return 0;
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

size_t current_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size, resident;
    const int ok = fscanf(f, "%llu %llu", &size, &resident) == 2;
    fclose(f);
    const long page = sysconf(_SC_PAGESIZE);
    return ok && page > 0 ? (size_t)resident * (size_t)page : 0;
}

int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    const int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

void advise_huge_pages(void *p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}

uint32_t crc32_update(uint32_t crc, const void *buf, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) {  // benign race: every thread writes the same values
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

void f32s_to_le(uint8_t *dst, const float *src, size_t n) {
    if (host_is_little_endian()) {
        if (n) memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) put_f32le(dst + 4 * i, src[i]);
}

void f32s_from_le(float *dst, const uint8_t *src, size_t n) {
    if (host_is_little_endian()) {
        if (n) memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = get_f32le(src + 4 * i);
}

// fflush (+ fsync) + fclose after `write`, each checked; f is always closed.
static int finish_stream(FILE *f, const char *path, int (*write)(FILE *, void *), void *ctx, int sync, char *err,
                         size_t errlen) {
    const char *what = NULL;
    int e = 0;
    errno = 0;
    if (write(f, ctx) != 0) what = "write", e = errno;
    else if (fflush(f) != 0) what = "write", e = errno;
    else if (sync && fsync(fileno(f)) != 0) what = "fsync", e = errno;
    if (fclose(f) != 0 && !what) what = "close", e = errno;
    if (what) {
        snprintf(err, errlen, "cannot write '%s': %s failed: %s%s", path, what, e ? strerror(e) : "short write",
                 sync ? " (any previous file is unchanged)" : "");
        return -1;
    }
    return 0;
}

int write_atomic(const char *path, int (*write)(FILE *f, void *ctx), void *ctx, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "cannot write '%s': is a directory", path);
            return -1;
        }
        FILE *f = fopen(path, "wb");
        if (!f) {
            snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
            return -1;
        }
        return finish_stream(f, path, write, ctx, 0, err, errlen);  // fsync means nothing to a device
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(err, errlen, "cannot write '%s': path too long", path);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s (any previous file is unchanged)", tmp, strerror(errno));
        return -1;
    }
    if (finish_stream(f, path, write, ctx, 1, err, errlen) != 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename '%s' to '%s': %s (any previous file is unchanged)", tmp, path,
                 strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

typedef struct {
    const void *data;
    size_t len;
} Buffer;

static int write_buffer(FILE *f, void *ctx) {
    const Buffer *b = ctx;
    return b->len == 0 || fwrite(b->data, 1, b->len, f) == b->len ? 0 : -1;
}

int write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    Buffer b = {data, len};
    return write_atomic(path, write_buffer, &b, err, errlen);
}

FILE *fopen_regular(const char *path, const char *hint, uint64_t *size, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s (%s)", path, strerror(errno), hint);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    *size = (uint64_t)st.st_size;
    return f;
}

int read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, char *err, size_t errlen) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return -1;
    }
    if ((uintmax_t)st.st_size > (uintmax_t)max_bytes) {
        snprintf(err, errlen, "%s: file is %jd bytes, more than the %zu allowed here", path, (intmax_t)st.st_size,
                 max_bytes);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n + 1);
    if (!buf) {
        snprintf(err, errlen, "%s: cannot allocate %zu bytes to read it", path, n + 1);
        fclose(f);
        return -1;
    }
    errno = 0;
    size_t got = fread(buf, 1, n, f);
    int e = errno;
    fclose(f);
    if (got != n) {
        snprintf(err, errlen, "%s: read %zu of %zu bytes: %s", path, got, n, e ? strerror(e) : "file shrank");
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}
