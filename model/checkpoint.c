/*
 * checkpoint.c: checkpoint writer and reader (see checkpoint.h and
 * docs/formats.md). The reader takes the whole file into memory and checks
 * it before anything is built from it, so a bad file never half-loads.
 */
#include "checkpoint.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

// ----------------------------------------------------------------------------
// writing

typedef struct {
    const GPT *m;
    const void *vocab;
    size_t vocab_len;
    const TrainState *ts;
} SaveCtx;

// fwrite that also feeds the running CRC
static int put(FILE *f, uint32_t *crc, const void *p, size_t n) {
    *crc = crc32_update(*crc, p, n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int write_checkpoint(FILE *f, void *ctx_) {
    const SaveCtx *ctx = ctx_;
    const GPTConfig *c = &ctx->m->config;
    const size_t P = ctx->m->num_parameters;
    uint32_t crc = 0, version = CHECKPOINT_VERSION, flags = ctx->ts ? 1 : 0, vlen = (uint32_t)ctx->vocab_len;
    int32_t dims[7] = {c->vocab_size, c->block_size, c->n_layer, c->n_head, c->n_kv_head, c->n_embd, c->bias};
    uint64_t np = P;
    int bad = 0;
    bad |= put(f, &crc, "GQAC", 4);
    bad |= put(f, &crc, &version, 4);
    bad |= put(f, &crc, dims, sizeof dims);
    bad |= put(f, &crc, &c->dropout, 4);
    bad |= put(f, &crc, &flags, 4);
    bad |= put(f, &crc, &np, 8);
    bad |= put(f, &crc, &vlen, 4);
    bad |= put(f, &crc, ctx->vocab, ctx->vocab_len);
    bad |= put(f, &crc, ctx->m->params_memory, P * sizeof(float));
    if (ctx->ts) {
        const TrainState *ts = ctx->ts;
        bad |= put(f, &crc, &ts->step, 4);
        bad |= put(f, &crc, &ts->adam_t, 4);
        bad |= put(f, &crc, &ts->best_val_loss, 4);
        bad |= put(f, &crc, &ts->data_rng, 8);
        bad |= put(f, &crc, &ts->model_rng, 8);
        bad |= put(f, &crc, ts->adam_m, P * sizeof(float));
        bad |= put(f, &crc, ts->adam_v, P * sizeof(float));
    }
    bad |= fwrite(&crc, 4, 1, f) == 1 ? 0 : -1;
    return bad ? -1 : 0;
}

int checkpoint_save(const char *path, const GPT *m, const void *vocab, size_t vocab_len, const TrainState *ts,
                    char *err, size_t errlen) {
    if (vocab_len > UINT32_MAX) {
        snprintf(err, errlen, "%s: vocabulary blob of %zu bytes is too large", path, vocab_len);
        return -1;
    }
    SaveCtx ctx = {m, vocab, vocab_len, ts};
    return write_atomic(path, write_checkpoint, &ctx, err, errlen);
}

// ----------------------------------------------------------------------------
// reading

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// err = "path: message"
static void path_error(char *err, size_t errlen, const char *path, const char *fmt, ...) GQA_PRINTF(4, 5);
static void path_error(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    int k = snprintf(err, errlen, "%s: ", path);
    if (k < 0 || (size_t)k >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
}

int checkpoint_load(const char *path, GPT *m, uint8_t **vocab, size_t *vocab_len, TrainState *ts, int *has_ts,
                    char *err, size_t errlen) {
    uint8_t *buf;
    size_t len;
    memset(m, 0, sizeof *m);
    if (has_ts) *has_ts = 0;
    if (read_file(path, SIZE_MAX, &buf, &len, err, errlen) != 0) return -1;
    int rc = checkpoint_parse(path, buf, len, m, vocab, vocab_len, ts, has_ts, err, errlen);
    free(buf);
    return rc;
}

int checkpoint_parse(const char *path, const uint8_t *buf, size_t len, GPT *m, uint8_t **vocab, size_t *vocab_len,
                     TrainState *ts, int *has_ts, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (has_ts) *has_ts = 0;
    int rc = -1;
#define FAIL(...)                                 \
    do {                                          \
        path_error(err, errlen, path, __VA_ARGS__); \
        goto done;                                \
    } while (0)
    if (len < 8) FAIL("file is %zu bytes, too short for a checkpoint", len);
    if (memcmp(buf, "GQAC", 4) != 0) FAIL("bad magic (not a gqa checkpoint)");
    uint32_t version = rd32(buf + 4);
    if (version != CHECKPOINT_VERSION) FAIL("unsupported checkpoint version %u (this build reads %d)", version, CHECKPOINT_VERSION);
    if (len < CHECKPOINT_HEADER_BYTES) FAIL("truncated header: file is %zu bytes, the header alone is %d", len, CHECKPOINT_HEADER_BYTES);
    GPTConfig c;
    int32_t dims[7];
    memcpy(dims, buf + 8, sizeof dims);
    c.vocab_size = dims[0], c.block_size = dims[1], c.n_layer = dims[2], c.n_head = dims[3];
    c.n_kv_head = dims[4], c.n_embd = dims[5], c.bias = dims[6];
    memcpy(&c.dropout, buf + 36, 4);
    uint32_t flags = rd32(buf + 40);
    uint64_t np = rd64(buf + 44);
    uint32_t vlen = rd32(buf + 52);
    char cerr[200];
    if (gpt_config_validate(&c, cerr, sizeof cerr) != 0) FAIL("bad config: %s", cerr);
    if (flags > 1) FAIL("unknown flags 0x%x", flags);
    size_t P = gpt_num_parameters(&c);
    if (np != P) FAIL("num_parameters is %llu but the config implies %zu", (unsigned long long)np, P);
    // expected size, overflow-checked (P <= 1e18/4 by gpt_num_parameters)
    size_t want = CHECKPOINT_HEADER_BYTES, pbytes;
    if (!size_mul(P, sizeof(float), &pbytes) || !size_add(want, vlen, &want) || !size_add(want, pbytes, &want) ||
        (flags && (!size_add(want, 28, &want) || !size_add(want, pbytes, &want) || !size_add(want, pbytes, &want))) ||
        !size_add(want, 4, &want))
        FAIL("sizes in the header overflow");
    if (len != want) FAIL("file is %zu bytes but its header implies %zu (%s)", len, want, len < want ? "truncated" : "trailing bytes");
    uint32_t stored = rd32(buf + len - 4), computed = crc32_update(0, buf, len - 4);
    if (stored != computed) FAIL("checksum mismatch (stored %08x, computed %08x): the file is corrupt", stored, computed);
    const uint8_t *p = buf + CHECKPOINT_HEADER_BYTES;
    const uint8_t *vocab_p = p;
    p += vlen;
    const uint8_t *params_p = p;
    p += pbytes;
    for (size_t i = 0; i < P; i++) {
        float w;
        memcpy(&w, params_p + 4 * i, 4);
        if (!isfinite(w)) FAIL("parameter %zu is %g: the weights are not finite", i, (double)w);
    }
    if (gpt_init(m, &c, 0) != 0) FAIL("%s", m->error);
    memcpy(m->params_memory, params_p, pbytes);
    *vocab = malloc_check(vlen ? vlen : 1);
    memcpy(*vocab, vocab_p, vlen);
    *vocab_len = vlen;
    if (flags && ts) {
        memcpy(&ts->step, p, 4);
        memcpy(&ts->adam_t, p + 4, 4);
        memcpy(&ts->best_val_loss, p + 8, 4);
        ts->data_rng = rd64(p + 12);
        ts->model_rng = rd64(p + 20);
        if (ts->step < 0 || ts->adam_t < 0) {
            gpt_free(m);
            free(*vocab);
            *vocab = NULL;
            FAIL("bad train state: step %d, adam_t %d", ts->step, ts->adam_t);
        }
        ts->adam_m = malloc_check(pbytes);
        ts->adam_v = malloc_check(pbytes);
        memcpy(ts->adam_m, p + 28, pbytes);
        memcpy(ts->adam_v, p + 28 + pbytes, pbytes);
        m->rng_state = ts->model_rng;
        if (has_ts) *has_ts = 1;
    }
    rc = 0;
#undef FAIL
done:
    return rc;
}

void train_state_free(TrainState *ts) {
    free(ts->adam_m);
    free(ts->adam_v);
    ts->adam_m = ts->adam_v = NULL;
}
