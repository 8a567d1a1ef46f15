/*
 * util.h: checked helpers shared by every module (llm.c's fopen_check family),
 * the little-endian byte helpers of the file formats, atomic writes.
 *
 * Each helper either succeeds or prints one line saying what failed, where
 * (file:line) and with which value, then exits with status 1. They never
 * compile out (no dependence on NDEBUG). Library code that must report a
 * recoverable error (bad user input) returns an error string instead; these
 * are for "cannot continue" failures.
 */
#ifndef GQA_UTIL_H
#define GQA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
#define GQA_NORETURN __attribute__((noreturn))
#define GQA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GQA_NORETURN
#define GQA_PRINTF(a, b)
#endif

// Print "error: <message>" to stderr (stdout flushed first).
void error_message(const char *fmt, ...) GQA_PRINTF(1, 2);
// error_message, then exit(1).
GQA_NORETURN void die(const char *fmt, ...) GQA_PRINTF(1, 2);

// An assert that survives NDEBUG and says where it failed.
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) die("internal check failed at %s:%d: %s", __FILE__, __LINE__, #cond); \
    } while (0)

FILE *fopen_check_(const char *path, const char *mode, const char *file, int line);
void fread_check_(void *ptr, size_t size, size_t n, FILE *f, const char *file, int line);
void fwrite_check_(const void *ptr, size_t size, size_t n, FILE *f, const char *file, int line);
void *malloc_check_(size_t size, const char *file, int line);
void *calloc_check_(size_t n, size_t size, const char *file, int line);
#define fopen_check(path, mode) fopen_check_(path, mode, __FILE__, __LINE__)
#define fread_check(p, s, n, f) fread_check_(p, s, n, f, __FILE__, __LINE__)
#define fwrite_check(p, s, n, f) fwrite_check_(p, s, n, f, __FILE__, __LINE__)
#define malloc_check(size) malloc_check_(size, __FILE__, __LINE__)
#define calloc_check(n, size) calloc_check_(n, size, __FILE__, __LINE__)

// size_t arithmetic that refuses to wrap: returns 0 and leaves *out alone
// on overflow, 1 on success.
static inline int size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static inline int size_add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

// Little-endian encoding for the files (docs/formats.md): every integer and
// float on disk goes through these, so the bytes do not depend on the host's
// byte order. A float is stored as its IEEE-754 bit pattern.
static inline void put_u16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static inline void put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_u64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_i32le(uint8_t *p, int32_t v) { put_u32le(p, (uint32_t)v); }  // two's complement
static inline void put_f32le(uint8_t *p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    put_u32le(p, bits);
}
static inline uint16_t get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_u64le(const uint8_t *p) { return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32; }
static inline int32_t get_i32le(const uint8_t *p) {
    const uint32_t u = get_u32le(p);  // two's complement, without an implementation-defined cast
    return u <= INT32_MAX ? (int32_t)u : (int32_t)(u - 0x80000000u) - INT32_MAX - 1;
}
static inline float get_f32le(const uint8_t *p) {
    const uint32_t bits = get_u32le(p);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

// Is the host little-endian? Known at compile time with GCC and clang; then
// the float arrays below are plain copies.
static inline int host_is_little_endian(void) {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#else
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
#endif
}

// n floats to and from their little-endian bytes (4n); a memcpy on a
// little-endian host.
void f32s_to_le(uint8_t *dst, const float *src, size_t n);
void f32s_from_le(float *dst, const uint8_t *src, size_t n);

// CRC-32 (IEEE 802.3, as zlib's crc32): crc = crc32_update(crc, buf, n),
// starting from crc = 0.
uint32_t crc32_update(uint32_t crc, const void *buf, size_t n);

// Write a file atomically: `write` streams the content into "path.tmp",
// which is flushed, fsync'd, closed and renamed over path. On any failure
// (disk full, unwritable directory) the temp file is removed, an existing
// file at path is untouched, and -1 is returned with err naming the path and
// the cause. If path exists and is not a regular file (/dev/null, /dev/full,
// a FIFO) the bytes go straight to it with the same checks, since a rename
// would replace the device. `write` returns 0, or -1 on a write error.
int write_atomic(const char *path, int (*write)(FILE *f, void *ctx), void *ctx, char *err, size_t errlen);
// write_atomic of a buffer.
int write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

// Read a whole regular file of at most max_bytes into a malloc'd buffer (one
// extra NUL byte after the data; *len excludes it). Returns 0, or -1 with err
// naming the path. The caller frees *data.
// Open a regular file for reading and give its size: NULL with err
// "PATH: cannot open: REASON (HINT)" or "PATH: not a regular file". The
// readers of gqa's own data files (token files, the recall task) use it.
FILE *fopen_regular(const char *path, const char *hint, uint64_t *size, char *err, size_t errlen);

int read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, char *err, size_t errlen);

// mkdir -p: create dir and its missing parents. 0, or -1 with err (also
// when dir exists but is not a directory).
int make_dirs(const char *dir, char *err, size_t errlen);

// Wall-clock seconds from a monotonic clock.
double now_seconds(void);

// Format a byte count as "12.34 MiB" into buf (at least 32 bytes); returns buf.
const char *format_bytes(double bytes, char *buf, size_t len);

// Peak resident set size of this process in bytes (getrusage).
size_t peak_rss_bytes(void);
// Resident set size now, in bytes (/proc/self/statm; 0 where unreadable).
size_t current_rss_bytes(void);
// Restart the peak from the resident size now (Linux: "5" to
// /proc/self/clear_refs), so that a later peak_rss_bytes, or the parent's
// wait4, sees only what follows. Returns 0, or -1 where unsupported.
int reset_peak_rss(void);

// Ask for transparent huge pages on the 2 MiB-aligned interior of a large,
// not yet touched buffer (weights, a KV cache): streaming it then misses the
// TLB far less. A hint only; nothing changes where THP is off.
void advise_huge_pages(void *p, size_t bytes);

#endif
