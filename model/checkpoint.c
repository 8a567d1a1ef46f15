/*
 * checkpoint.c: checkpoint writer and reader (see checkpoint.h and
 * docs/formats.md). Every field is little-endian whatever the host, through
 * the byte helpers of util/util.h. The reader takes the whole file into
 * memory and checks it before anything is built from it, so a bad file never
 * half-loads.
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

// The output stream and the running CRC of every byte written to it.
typedef struct {
    FILE *f;
    uint32_t crc;
    int bad;  // a write failed
} Out;

static void put_bytes(Out *o, const void *p, size_t n) {
    if (o->bad || n == 0) return;  // after a failed write the file is discarded
    o->crc = crc32_update(o->crc, p, n);
    if (fwrite(p, 1, n, o->f) != n) o->bad = 1;
}

static void put_u32(Out *o, uint32_t v) {
    uint8_t b[4];
    put_u32le(b, v);
    put_bytes(o, b, 4);
}

static void put_i32(Out *o, int32_t v) { put_u32(o, (uint32_t)v); }

static void put_u64(Out *o, uint64_t v) {
    uint8_t b[8];
    put_u64le(b, v);
    put_bytes(o, b, 8);
}

static void put_f32(Out *o, float v) {
    uint8_t b[4];
    put_f32le(b, v);
    put_bytes(o, b, 4);
}

// n floats, little-endian: the array itself on a little-endian host (no
// copy of a multi-GB arena), else converted a block at a time.
static void put_f32s(Out *o, const float *x, size_t n) {
    if (host_is_little_endian()) {
        put_bytes(o, x, n * sizeof(float));
        return;
    }
    uint8_t b[4096];
    for (size_t i = 0; i < n; i += sizeof b / 4) {
        const size_t k = n - i < sizeof b / 4 ? n - i : sizeof b / 4;
        f32s_to_le(b, x + i, k);
        put_bytes(o, b, 4 * k);
    }
}

// A converted model's parameters, tensor by tensor: the matrices in the
// checkpoint's form (wmat_to_raw), the rest float32.
static void put_converted(Out *o, const GPT *m) {
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        const WMat w = gpt_weight(m, i);
        if (!w.grouped) {
            put_f32s(o, w.data, m->param_sizes[i]);
            continue;
        }
        const size_t n = wmat_raw_bytes(w.dtype, w.rows, w.cols);
        uint8_t *raw = malloc_check(n ? n : 1);
        wmat_to_raw(&w, raw);
        put_bytes(o, raw, n);
        free(raw);
    }
}

static int write_checkpoint(FILE *f, void *ctx_) {
    const SaveCtx *ctx = ctx_;
    const GPTConfig *c = &ctx->m->config;
    const size_t P = ctx->m->num_parameters;
    const int converted = ctx->m->wmat_memory != NULL;
    Out o = {f, 0, 0};
    put_bytes(&o, "GQAC", 4);
    put_u32(&o, converted ? 4 : 3);
    const int32_t dims[7] = {c->vocab_size, c->block_size, c->n_layer, c->n_head, c->n_kv_head, c->n_embd, c->bias};
    for (int i = 0; i < 7; i++) put_i32(&o, dims[i]);
    put_f32(&o, c->dropout);
    put_u32(&o, ctx->ts ? 1 : 0);  // flags
    put_u64(&o, P);
    put_u32(&o, (uint32_t)ctx->vocab_len);
    put_i32(&o, c->pos);  // version 2
    put_f32(&o, c->rope_theta);
    put_i32(&o, c->kv_lora_rank);  // version 3
    put_i32(&o, c->rope_head_dim);
    put_i32(&o, gpt_is_latent(c) ? c->latent_norm : 0);  // 0 when unused: one spelling of a grouped model
    if (converted) put_u32(&o, (uint32_t)ctx->m->weight_dtype);  // version 4
    put_bytes(&o, ctx->vocab, ctx->vocab_len);
    if (converted) put_converted(&o, ctx->m);
    else put_f32s(&o, ctx->m->params_memory, P);
    if (ctx->ts) {
        const TrainState *ts = ctx->ts;
        put_i32(&o, ts->step);
        put_i32(&o, ts->adam_t);
        put_f32(&o, ts->best_val_loss);
        put_u64(&o, ts->data_rng);
        put_u64(&o, ts->model_rng);
        put_f32s(&o, ts->adam_m, P);
        put_f32s(&o, ts->adam_v, P);
    }
    uint8_t crc[4];
    put_u32le(crc, o.crc);
    if (!o.bad && fwrite(crc, 1, 4, f) != 4) o.bad = 1;
    return o.bad ? -1 : 0;
}

int checkpoint_save(const char *path, const GPT *m, const void *vocab, size_t vocab_len, const TrainState *ts,
                    char *err, size_t errlen) {
    if (m->wmat_memory && (m->weight_dtype == W_F32 || ts)) {
        snprintf(err, errlen, "%s: the model's weights are converted (%s) for inference: %s", path,
                 weight_dtype_name(m->weight_dtype),
                 ts ? "a training checkpoint holds the float32 weights as trained"
                    : "f32 is saved as the float32 weights before conversion");
        return -1;
    }
    if (vocab_len > UINT32_MAX) {
        snprintf(err, errlen, "%s: vocabulary blob of %zu bytes is too large", path, vocab_len);
        return -1;
    }
    SaveCtx ctx = {m, vocab, vocab_len, ts};
    return write_atomic(path, write_checkpoint, &ctx, err, errlen);
}

// ----------------------------------------------------------------------------
// reading

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

// The first of n little-endian float32 at p that is not finite, or n.
static size_t first_not_finite(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && isfinite(get_f32le(p + 4 * i))) i++;
    return i;
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
    uint32_t version = get_u32le(buf + 4);
    if (version < 1 || version > CHECKPOINT_VERSION)
        FAIL("unsupported checkpoint version %u (this build reads 1 to %d)", version, CHECKPOINT_VERSION);
    const size_t header = version == 1   ? CHECKPOINT_V1_HEADER_BYTES
                          : version == 2 ? CHECKPOINT_V2_HEADER_BYTES
                          : version == 3 ? CHECKPOINT_V3_HEADER_BYTES
                                         : CHECKPOINT_HEADER_BYTES;
    if (len < header) FAIL("truncated header: file is %zu bytes, the version-%u header alone is %zu", len, version, header);
    // as every version-1 file: learned positions; versions 1 and 2: grouped attention
    GPTConfig c = {.pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    c.vocab_size = get_i32le(buf + 8), c.block_size = get_i32le(buf + 12), c.n_layer = get_i32le(buf + 16);
    c.n_head = get_i32le(buf + 20), c.n_kv_head = get_i32le(buf + 24), c.n_embd = get_i32le(buf + 28);
    c.bias = get_i32le(buf + 32);
    c.dropout = get_f32le(buf + 36);
    uint32_t flags = get_u32le(buf + 40);
    uint64_t np = get_u64le(buf + 44);
    uint32_t vlen = get_u32le(buf + 52);
    if (version >= 2) c.pos = get_i32le(buf + 56), c.rope_theta = get_f32le(buf + 60);
    if (version >= 3)
        c.kv_lora_rank = get_i32le(buf + 64), c.rope_head_dim = get_i32le(buf + 68), c.latent_norm = get_i32le(buf + 72);
    const uint32_t wdt = version >= 4 ? get_u32le(buf + 76) : W_F32;
    char cerr[200];
    if (gpt_config_validate(&c, cerr, sizeof cerr) != 0) FAIL("bad config: %s", cerr);
    if (flags > 1) FAIL("unknown flags 0x%x", flags);
    if (wdt >= W_NUM_DTYPES) FAIL("unknown weight_dtype %u (0 f32, 1 bf16, 2 f16, 3 q8)", wdt);
    if (wdt != W_F32 && flags) FAIL("weights in %s with a training state (flags 0x%x)", weight_dtype_name(wdt), flags);
    size_t P = gpt_num_parameters(&c);
    if (np != P) FAIL("num_parameters is %llu but the config implies %zu", (unsigned long long)np, P);
    // expected size, overflow-checked (P <= 1e18/4 by gpt_num_parameters; the
    // converted forms are smaller than float32)
    size_t want = header, pbytes, tbytes[GPT_NUM_PARAM_TENSORS], sizes[GPT_NUM_PARAM_TENSORS];
    if (!size_mul(P, sizeof(float), &pbytes)) FAIL("sizes in the header overflow");
    gpt_param_sizes(&c, sizes);
    if (wdt != W_F32) {
        pbytes = 0;
        for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
            size_t rows;
            int cols;
            tbytes[i] = gpt_weight_converts(&c, i, &rows, &cols) ? wmat_raw_bytes((WeightDtype)wdt, rows, cols)
                                                                  : sizes[i] * sizeof(float);
            pbytes += tbytes[i];
        }
    }
    if (!size_add(want, vlen, &want) || !size_add(want, pbytes, &want) ||
        (flags && (!size_add(want, 28, &want) || !size_add(want, pbytes, &want) || !size_add(want, pbytes, &want))) ||
        !size_add(want, 4, &want))
        FAIL("sizes in the header overflow");
    if (len != want) FAIL("file is %zu bytes but its header implies %zu (%s)", len, want, len < want ? "truncated" : "trailing bytes");
    uint32_t stored = get_u32le(buf + len - 4), computed = crc32_update(0, buf, len - 4);
    if (stored != computed) FAIL("checksum mismatch (stored %08x, computed %08x): the file is corrupt", stored, computed);
    const uint8_t *p = buf + header;
    const uint8_t *vocab_p = p;
    p += vlen;
    const uint8_t *params_p = p;
    p += pbytes;
    if (wdt != W_F32) {  // a model for inference: each tensor checked, then built converted (flags are 0)
        const uint8_t *raw[GPT_NUM_PARAM_TENSORS];
        for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
            size_t rows;
            int cols;
            raw[i] = params_p;
            if (gpt_weight_converts(&c, i, &rows, &cols)) {
                if (wmat_raw_check((WeightDtype)wdt, rows, cols, params_p, cerr, sizeof cerr) != 0)
                    FAIL("%s (%s): %s", gpt_param_names[i], weight_dtype_name(wdt), cerr);
            } else {
                const size_t j = first_not_finite(params_p, sizes[i]);
                if (j < sizes[i])
                    FAIL("%s[%zu] is %g: the weights are not finite", gpt_param_names[i], j,
                         (double)get_f32le(params_p + 4 * j));
            }
            params_p += tbytes[i];
        }
        if (gpt_init_converted(m, &c, (WeightDtype)wdt, raw) != 0) FAIL("%s", m->error);
    } else {
        const size_t i = first_not_finite(params_p, P);
        if (i < P) FAIL("parameter %zu is %g: the weights are not finite", i, (double)get_f32le(params_p + 4 * i));
        if (gpt_init(m, &c, 0) != 0) FAIL("%s", m->error);
        f32s_from_le(m->params_memory, params_p, P);
    }
    *vocab = malloc_check(vlen ? vlen : 1);
    memcpy(*vocab, vocab_p, vlen);
    *vocab_len = vlen;
    if (flags && ts) {
        ts->step = get_i32le(p);
        ts->adam_t = get_i32le(p + 4);
        ts->best_val_loss = get_f32le(p + 8);
        ts->data_rng = get_u64le(p + 12);
        ts->model_rng = get_u64le(p + 20);
        if (ts->step < 0 || ts->adam_t < 0) {
            gpt_free(m);
            free(*vocab);
            *vocab = NULL;
            FAIL("bad train state: step %d, adam_t %d", ts->step, ts->adam_t);
        }
        ts->adam_m = malloc_check(pbytes);
        ts->adam_v = malloc_check(pbytes);
        f32s_from_le(ts->adam_m, p + 28, P);
        f32s_from_le(ts->adam_v, p + 28 + pbytes, P);
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
