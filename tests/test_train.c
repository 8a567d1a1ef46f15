/*
 * test_train.c: training pieces at the API level: LR schedule, config
 * parsing and its errors, overfitting a tiny model, and checkpoints (round
 * trip, every kind of damage, failed writes that keep the old file, the
 * little-endian byte layout, committed files rewritten byte for byte).
 * End-to-end runs of `gqa train` (resume, determinism, signals) are in
 * tests/test_train.sh.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/tokens.h"
#include "../model/checkpoint.h"
#include "../model/gpt.h"
#include "../model/weights.h"
#include "../train/adamw.h"
#include "../cli/cli.h"
#include "../train/train.h"
#include "../util/util.h"
#include "testutil.h"

// ----------------------------------------------------------------------------
// LR schedule (nanoGPT's get_lr)

START_TEST(test_lr_schedule) {
    TrainConfig tc;
    train_config_defaults(&tc);  // lr 1e-3, min 1e-4, warmup 100, decay 2000
    ck_assert_float_eq_tol(train_lr(&tc, 0), 1e-3f * 1 / 101, 1e-9);
    ck_assert_float_eq_tol(train_lr(&tc, 99), 1e-3f * 100 / 101, 1e-9);
    ck_assert_float_eq_tol(train_lr(&tc, 100), 1e-3f, 1e-9);             // peak: cosine starts at 1
    ck_assert_float_eq_tol(train_lr(&tc, 1050), 5.5e-4f, 1e-8);           // halfway: (lr + min) / 2
    ck_assert_float_eq_tol(train_lr(&tc, 2000), 1e-4f, 1e-9);             // end of decay
    ck_assert_float_eq_tol(train_lr(&tc, 5000), 1e-4f, 1e-9);             // after: min_lr
    ck_assert(train_lr(&tc, 500) > train_lr(&tc, 501));                    // decreasing
    tc.decay_lr = 0;
    ck_assert_float_eq(train_lr(&tc, 0), 1e-3f);
    ck_assert_float_eq(train_lr(&tc, 1999), 1e-3f);
}
END_TEST

// nanoGPT's 6N + 12 L C T training FLOPs per token, N without wpe (a lookup,
// no matmul): the same for both position schemes of one shape, since rope
// has no wpe and its rotation is not counted (4 HS/2 multiply-adds per head
// vector, under 0.1% of a step here)
START_TEST(test_flops_per_token) {
    GPTConfig c = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_kv_head = 2, .n_embd = 384,
                   .bias = 1, .pos = GPT_POS_LEARNED, .rope_theta = GPT_ROPE_THETA_DEFAULT};
    const double learned = train_flops_per_token(&c, 256);
    ck_assert_double_eq(learned, 6.0 * (gpt_num_parameters(&c) - 256 * 384) + 12.0 * 6 * 384 * 256);
    c.pos = GPT_POS_ROPE;
    ck_assert_double_eq(train_flops_per_token(&c, 256), learned);
    ck_assert_double_eq(train_flops_per_token(&c, 256), 6.0 * gpt_num_parameters(&c) + 12.0 * 6 * 384 * 256);
    // MLA with rope: query/key heads HS + rope_head_dim wide, so the scores cost 6 L T NH (HS + dR) more
    // than 6 L T C, the weighted sum 6 L T C as before
    c.n_kv_head = 6, c.kv_lora_rank = 96, c.rope_head_dim = 32, c.latent_norm = 1;
    ck_assert_double_eq(train_flops_per_token(&c, 256),
                        6.0 * gpt_num_parameters(&c) + 6.0 * 6 * 256 * (6 * (64 + 32) + 384));
}
END_TEST

// ----------------------------------------------------------------------------
// config parsing

static char tmpdir[64];

static void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/gqa_test_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_tmpdir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen_check(path, "w");
    fputs(text, f);
    fclose(f);
}

static int parse(TrainConfig *tc, char **argv, int argc, char *err) {
    train_config_defaults(tc);
    return cli_train_parse(tc, argc, argv, err, 512);
}

START_TEST(test_config_parsing) {
    make_tmpdir();
    char conf[128], err[512];
    snprintf(conf, sizeof conf, "%s/a.conf", tmpdir);
    write_text(conf, "# baby GPT\nn_layer = 6\nn_kv_head = 2  # GQA\nlearning_rate = 1e-3\nout_dir = 'out-x'\n");
    TrainConfig tc;
    char *argv1[] = {"gqa", "train", conf, "--n_kv_head=3", "--batch_size", "7"};
    ck_assert_int_eq(parse(&tc, argv1, 6, err), 0);
    ck_assert_int_eq(tc.model.n_layer, 6);
    ck_assert_int_eq(tc.model.n_kv_head, 3);  // the flag overrides the file
    ck_assert_int_eq(tc.batch_size, 7);
    ck_assert_str_eq(tc.out_dir, "out-x");

    write_text(conf, "n_layer = 6\nn_kv_heads = 2\n");
    char *argv2[] = {"gqa", "train", conf};
    ck_assert_int_eq(parse(&tc, argv2, 3, err), -1);
    ck_assert_msg(strstr(err, "a.conf:2: unknown option 'n_kv_heads'"), "%s", err);

    // the position scheme: the same names in a file as on the command line
    ck_assert_int_eq(tc.model.pos, GPT_POS_LEARNED);  // the default
    ck_assert_float_eq(tc.model.rope_theta, GPT_ROPE_THETA_DEFAULT);
    write_text(conf, "pos = rope\nrope_theta = 5e5\n");
    ck_assert_int_eq(parse(&tc, argv2, 3, err), 0);
    ck_assert_int_eq(tc.model.pos, GPT_POS_ROPE);
    ck_assert_float_eq(tc.model.rope_theta, 5e5f);
    write_text(conf, "pos = alibi\n");
    ck_assert_int_eq(parse(&tc, argv2, 3, err), -1);
    ck_assert_msg(strstr(err, "a.conf:1: option 'pos': 'alibi' is not one of learned, rope"), "%s", err);
    write_text(conf, "rope_theta = -1\n");
    ck_assert_int_eq(parse(&tc, argv2, 3, err), -1);
    ck_assert_msg(strstr(err, "a.conf:1: option 'rope_theta': -1 is out of range (0, 1e+09)"), "%s", err);

    write_text(conf, "batch_size = twelve\n");
    ck_assert_int_eq(parse(&tc, argv2, 3, err), -1);
    ck_assert_msg(strstr(err, "a.conf:1: option 'batch_size': 'twelve' is not an integer"), "%s", err);

    write_text(conf, "dropout\n");
    ck_assert_int_eq(parse(&tc, argv2, 3, err), -1);
    ck_assert_msg(strstr(err, "a.conf:1: expected 'key = value'"), "%s", err);

    char *argv3[] = {"gqa", "train", "--data_dir="};
    ck_assert_int_eq(parse(&tc, argv3, 3, err), -1);
    ck_assert_msg(strstr(err, "data_dir is empty"), "%s", err);

    char *argv4[] = {"gqa", "train", "--min_lr=1", "--learning_rate=0.1"};
    ck_assert_int_eq(parse(&tc, argv4, 4, err), -1);
    ck_assert_msg(strstr(err, "min_lr 1 is larger than learning_rate 0.1"), "%s", err);

    char *argv5[] = {"gqa", "train", "--dropout=1.5"};
    ck_assert_int_eq(parse(&tc, argv5, 3, err), -1);
    ck_assert_msg(strstr(err, "option 'dropout': 1.5 is out of range"), "%s", err);

    char *argv6[] = {"gqa", "train", "/nonexistent/x.conf"};
    ck_assert_int_eq(parse(&tc, argv6, 3, err), -1);
    ck_assert_msg(strstr(err, "cannot open config file '/nonexistent/x.conf'"), "%s", err);
    rm_tmpdir();
}
END_TEST

// ----------------------------------------------------------------------------
// a tiny model can overfit a repetitive text

START_TEST(test_overfit_repetitive_text) {
    GPTConfig c = {.vocab_size = 5, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 32,
                   .bias = 1};
    GPT m;
    ck_assert_int_eq(gpt_init(&m, &c, 3), 0);
    const int B = 4, T = 16;
    int x[64], y[64];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            x[b * T + t] = (b + t) % 5;  // "abcdeabcde..." at four offsets
            y[b * T + t] = (b + t + 1) % 5;
        }
    AdamW opt;
    adamw_init(&opt, m.num_parameters, 0.9f, 0.99f, 1e-8f, 0.0f);
    float first = 0;
    for (int step = 0; step < 150; step++) {
        ck_assert_int_eq(gpt_forward(&m, x, y, B, T), 0);
        if (step == 0) first = m.mean_loss;
        gpt_zero_grad(&m);
        gpt_backward(&m);
        adamw_step(&opt, &m, 1e-2f);
    }
    gpt_forward(&m, x, y, B, T);
    ck_assert_msg(first > 1.5f && m.mean_loss < 0.05f, "loss %.4f -> %.4f", first, m.mean_loss);
    adamw_free(&opt);
    gpt_free(&m);
}
END_TEST

// ----------------------------------------------------------------------------
// checkpoints

static const uint8_t vocab_blob[] = {3, 0, 0, 0, 'a', 0, 0, 0, 'b', 0, 0, 0, 'c', 0, 0, 0};

// pos: GPT_POS_LEARNED (rope_theta the default, unused) or GPT_POS_ROPE (rope_theta 500)
static void make_model_pos(GPT *m, AdamW *opt, int pos) {
    GPTConfig c = {.vocab_size = 3, .block_size = 8, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 16,
                   .bias = 1, .dropout = 0.1f, .pos = pos,
                   .rope_theta = pos == GPT_POS_ROPE ? 500.0f : GPT_ROPE_THETA_DEFAULT};
    ck_assert_int_eq(gpt_init(m, &c, 11), 0);
    adamw_init(opt, m->num_parameters, 0.9f, 0.95f, 1e-8f, 0.1f);
    uint64_t rng = 5;
    fill_normal(opt->m, opt->n, 1.0f, &rng);
    fill_normal(opt->v, opt->n, 1.0f, &rng);
    opt->t = 17;
}

static void make_model(GPT *m, AdamW *opt) { make_model_pos(m, opt, GPT_POS_LEARNED); }

static TrainState state_of(GPT *m, AdamW *opt) {
    return (TrainState){.step = 42, .adam_t = opt->t, .best_val_loss = 1.25f, .data_rng = 0x1234567890ull,
                        .model_rng = m->rng_state, .adam_m = opt->m, .adam_v = opt->v};
}

// _i: the position scheme (GPTPos)
START_TEST(test_checkpoint_roundtrip) {
    make_tmpdir();
    GPT m, m2;
    AdamW opt;
    make_model_pos(&m, &opt, _i);
    TrainState ts = state_of(&m, &opt), ts2;
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/ckpt.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, &ts, err, sizeof err), 0);
    uint8_t *vb;
    size_t vl;
    int has_ts;
    ck_assert_int_eq(checkpoint_load(path, &m2, &vb, &vl, &ts2, &has_ts, err, sizeof err), 0);
    ck_assert_int_eq(has_ts, 1);
    ck_assert_mem_eq(&m.config, &m2.config, sizeof m.config);
    ck_assert_int_eq(m2.config.pos, _i);
    ck_assert_float_eq(m2.config.rope_theta, _i == GPT_POS_ROPE ? 500.0f : GPT_ROPE_THETA_DEFAULT);
    ck_assert_uint_eq(m2.num_parameters, m.num_parameters);
    if (_i == GPT_POS_ROPE)  // the loaded model has its own rotation tables, as built by gpt_init
        ck_assert_mem_eq(m2.rope_cos, m.rope_cos, 2 * 8 * 2 * sizeof(float));
    ck_assert_mem_eq(m.params_memory, m2.params_memory, m.num_parameters * 4);
    ck_assert_uint_eq(vl, sizeof vocab_blob);
    ck_assert_mem_eq(vb, vocab_blob, vl);
    ck_assert_int_eq(ts2.step, 42);
    ck_assert_int_eq(ts2.adam_t, 17);
    ck_assert_float_eq(ts2.best_val_loss, 1.25f);
    ck_assert_uint_eq(ts2.data_rng, 0x1234567890ull);
    ck_assert_uint_eq(ts2.model_rng, m.rng_state);
    ck_assert_uint_eq(m2.rng_state, m.rng_state);
    ck_assert_mem_eq(ts2.adam_m, opt.m, opt.n * 4);
    ck_assert_mem_eq(ts2.adam_v, opt.v, opt.n * 4);
    // model-only checkpoint: no train state
    free(vb);
    train_state_free(&ts2);
    gpt_free(&m2);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    ck_assert_int_eq(checkpoint_load(path, &m2, &vb, &vl, &ts2, &has_ts, err, sizeof err), 0);
    ck_assert_int_eq(has_ts, 0);
    free(vb);
    gpt_free(&m2);
    gpt_free(&m);
    adamw_free(&opt);
    rm_tmpdir();
}
END_TEST

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *buf;
    char err[256];
    ck_assert_int_eq(read_file(path, SIZE_MAX, &buf, len, err, sizeof err), 0);
    return buf;
}

static void spit(const char *path, const uint8_t *buf, size_t len) {
    FILE *f = fopen_check(path, "wb");
    fwrite_check(buf, 1, len, f);
    fclose(f);
}

// Loading path must fail with a message containing needle.
static void expect_load_error(const char *path, const char *needle) {
    GPT m;
    uint8_t *vb = NULL;
    size_t vl;
    TrainState ts;
    int has_ts;
    char err[512] = "";
    ck_assert_int_eq(checkpoint_load(path, &m, &vb, &vl, &ts, &has_ts, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    ck_assert_msg(strstr(err, path) != NULL, "message '%s' does not name the file", err);
}

START_TEST(test_checkpoint_damage) {
    make_tmpdir();
    GPT m;
    AdamW opt;
    make_model(&m, &opt);
    TrainState ts = state_of(&m, &opt);
    char path[128], bad[128], err[512];
    snprintf(path, sizeof path, "%s/ckpt.bin", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, &ts, err, sizeof err), 0);
    size_t len;
    uint8_t *buf = slurp(path, &len);

    // truncated at every header field boundary, inside the data, and before the CRC
    const size_t cuts[] = {0, 3, 4, 8, 20, 36, 40, 44, 52, 56, 60, 64, 68, 72, 76, 1000, len - 5, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, buf, cuts[i]);
        const char *want = cuts[i] < 8 ? "too short for a checkpoint"
                           : cuts[i] < CHECKPOINT_V3_HEADER_BYTES ? "truncated header"
                                                               : "truncated";
        expect_load_error(bad, want);
    }
    // trailing bytes
    uint8_t *longer = malloc_check(len + 3);
    memcpy(longer, buf, len);
    memset(longer + len, 0, 3);
    spit(bad, longer, len + 3);
    expect_load_error(bad, "trailing bytes");
    free(longer);

    uint8_t *copy = malloc_check(len);
    memcpy(copy, buf, len);
    memcpy(copy, "GPT2", 4);
    spit(bad, copy, len);
    expect_load_error(bad, "bad magic (not a gqa checkpoint)");

    memcpy(copy, buf, len);
    copy[4] = 9;
    spit(bad, copy, len);
    expect_load_error(bad, "unsupported checkpoint version 9 (this build reads 1 to 4)");
    memcpy(copy, buf, len);
    copy[4] = 0;
    spit(bad, copy, len);
    expect_load_error(bad, "unsupported checkpoint version 0 (this build reads 1 to 4)");

    memcpy(copy, buf, len);
    int32_t nkv = 3;  // n_head 4 % 3 != 0
    memcpy(copy + 8 + 4 * 4, &nkv, 4);
    spit(bad, copy, len);
    expect_load_error(bad, "bad config: n_head 4 is not divisible by n_kv_head 3");

    memcpy(copy, buf, len);
    uint64_t np = 5;
    memcpy(copy + 44, &np, 8);
    spit(bad, copy, len);
    expect_load_error(bad, "num_parameters is 5 but the config implies");

    // the position fields (version 2): an unknown scheme; rope over a file
    // that holds wpe (one tensor too many); rope with a theta that is no base
    const int32_t bad_pos[] = {2, -1};
    for (int i = 0; i < 2; i++) {
        memcpy(copy, buf, len);
        put_u32le(copy + 56, (uint32_t)bad_pos[i]);
        spit(bad, copy, len);
        char want[96];
        snprintf(want, sizeof want, "bad config: pos must be 0 (learned) or 1 (rope), got %d", bad_pos[i]);
        expect_load_error(bad, want);
    }
    memcpy(copy, buf, len);
    put_u32le(copy + 56, GPT_POS_ROPE);
    spit(bad, copy, len);
    expect_load_error(bad, "num_parameters is 6224 but the config implies 6096");
    const float thetas[] = {0.0f, -2.0f, NAN, INFINITY};
    const char *theta_msgs[] = {"got 0", "got -2", "got nan", "got inf"};
    for (int i = 0; i < 4; i++) {
        memcpy(copy, buf, len);
        put_u32le(copy + 56, GPT_POS_ROPE);
        put_f32le(copy + 60, thetas[i]);
        spit(bad, copy, len);
        char want[96];
        snprintf(want, sizeof want, "bad config: rope_theta must be a finite number > 0, %s", theta_msgs[i]);
        expect_load_error(bad, want);
    }

    // the attention fields (version 3): a negative rank; MLA over a model whose
    // n_kv_head is not n_head; a decoupled rope part with learned positions; a
    // latent_norm that is no flag; MLA whose parameters the file does not hold
    struct { size_t at; int32_t v; const char *msg; } bad_attn[] = {
        {64, -1, "bad config: kv_lora_rank must be in [0, 16777216] (0: grouped attention), got -1"},
        {64, 8, "bad config: MLA (kv_lora_rank 8) gives every query head its own K and V: n_kv_head must equal "
                "n_head=4, got 2"},
        {68, 4, "bad config: rope_head_dim is MLA's decoupled rotary part (kv_lora_rank > 0 with pos=rope); it must "
                "be 0 here, got 4"},
        {72, 2, "bad config: latent_norm must be 0 or 1, got 2"},
    };
    for (size_t i = 0; i < sizeof bad_attn / sizeof bad_attn[0]; i++) {
        memcpy(copy, buf, len);
        put_u32le(copy + bad_attn[i].at, (uint32_t)bad_attn[i].v);
        spit(bad, copy, len);
        expect_load_error(bad, bad_attn[i].msg);
    }
    memcpy(copy, buf, len);
    put_u32le(copy + 24, 4);  // n_kv_head = n_head, then MLA of rank 8
    put_u32le(copy + 64, 8);
    spit(bad, copy, len);
    expect_load_error(bad, "but the config implies");

    // a flipped bit anywhere in the body is caught by the checksum
    const size_t flips[] = {CHECKPOINT_V3_HEADER_BYTES + 2, CHECKPOINT_V3_HEADER_BYTES + 100, len / 2, len - 10};
    for (size_t i = 0; i < 4; i++) {
        memcpy(copy, buf, len);
        copy[flips[i]] ^= 0x10;
        spit(bad, copy, len);
        expect_load_error(bad, "checksum mismatch");
    }

    // a NaN weight with a valid checksum is refused too
    m.params_memory[7] = NAN;
    ck_assert_int_eq(checkpoint_save(bad, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    expect_load_error(bad, "parameter 7 is nan: the weights are not finite");
    expect_load_error("/nonexistent/ckpt.bin", "cannot open");
    free(copy);
    free(buf);
    gpt_free(&m);
    adamw_free(&opt);
    rm_tmpdir();
}
END_TEST

START_TEST(test_checkpoint_failed_write_keeps_old) {
    make_tmpdir();
    GPT m, m2;
    AdamW opt;
    make_model(&m, &opt);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/ckpt.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    float first = m.params_memory[0];
    m.params_memory[0] += 1.0f;

    // a full disk: cap the file size below the checkpoint's (the test runs in
    // its own forked process, so the limit dies with it)
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "File too large") && strstr(err, "previous file is unchanged"), "%s", err);
    rl.rlim_cur = RLIM_INFINITY;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);

    // a directory that cannot exist (its parent is a file)
    char inside_file[160];
    snprintf(inside_file, sizeof inside_file, "%s/x/ckpt.bin", path);
    ck_assert_int_eq(checkpoint_save(inside_file, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "Not a directory"), "%s", err);
    // a read-only directory (root ignores the mode bits, so only as a user)
    if (geteuid() != 0) {
        chmod(tmpdir, 0555);
        int rc = checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err);
        chmod(tmpdir, 0755);
        ck_assert_int_eq(rc, -1);
    }
    // no temp file is left behind, and the old checkpoint loads unchanged
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    uint8_t *vb;
    size_t vl;
    ck_assert_int_eq(checkpoint_load(path, &m2, &vb, &vl, NULL, NULL, err, sizeof err), 0);
    ck_assert_float_eq(m2.params_memory[0], first);
    free(vb);
    gpt_free(&m2);
    gpt_free(&m);
    adamw_free(&opt);
    rm_tmpdir();
}
END_TEST

// The file's bytes, decoded one by one (not through the reader's helpers,
// and whatever the host's byte order): n bytes little-endian at p.
static uint64_t le_bytes(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

START_TEST(test_checkpoint_byte_layout) {
    make_tmpdir();
    GPT m;
    AdamW opt;
    make_model(&m, &opt);
    TrainState ts = state_of(&m, &opt);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/ckpt.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, &ts, err, sizeof err), 0);
    size_t len;
    uint8_t *b = slurp(path, &len);
    const size_t P = m.num_parameters, V = sizeof vocab_blob, H = CHECKPOINT_V3_HEADER_BYTES;
    ck_assert_uint_eq(len, H + V + 4 * P + 28 + 8 * P + 4);
    ck_assert_mem_eq(b, "GQAC", 4);
    ck_assert_uint_eq(le_bytes(b + 4, 4), 3);  // version
    const uint64_t dims[7] = {3, 8, 2, 4, 2, 16, 1};  // vocab, block, layers, heads, kv heads, embd, bias
    for (int i = 0; i < 7; i++) ck_assert_uint_eq(le_bytes(b + 8 + 4 * i, 4), dims[i]);
    ck_assert_uint_eq(le_bytes(b + 36, 4), 0x3DCCCCCDu);  // dropout 0.1f
    ck_assert_uint_eq(le_bytes(b + 40, 4), 1);            // flags: train state present
    ck_assert_uint_eq(le_bytes(b + 44, 8), P);
    ck_assert_uint_eq(le_bytes(b + 52, 4), V);
    ck_assert_uint_eq(le_bytes(b + 56, 4), 0);            // pos: learned
    ck_assert_uint_eq(le_bytes(b + 60, 4), 0x461C4000u);  // rope_theta 10000.0f (unused by learned)
    ck_assert_uint_eq(le_bytes(b + 64, 4), 0);            // kv_lora_rank: grouped attention
    ck_assert_uint_eq(le_bytes(b + 68, 4), 0);            // rope_head_dim
    ck_assert_uint_eq(le_bytes(b + 72, 4), 0);            // latent_norm (0 when unused)
    ck_assert_uint_eq(H, 76);
    ck_assert_mem_eq(b + H, vocab_blob, V);
    const uint8_t *params = b + H + V;
    for (size_t i = 0; i < P; i += P / 7)
        ck_assert_uint_eq(le_bytes(params + 4 * i, 4), float_bits(m.params_memory[i]));
    ck_assert_uint_eq(le_bytes(params + 4 * (P - 1), 4), float_bits(m.params_memory[P - 1]));
    const uint8_t *st = params + 4 * P;
    ck_assert_uint_eq(le_bytes(st, 4), 42);                // step
    ck_assert_uint_eq(le_bytes(st + 4, 4), 17);            // adam_t
    ck_assert_uint_eq(le_bytes(st + 8, 4), 0x3FA00000u);   // best_val_loss 1.25f
    ck_assert_uint_eq(le_bytes(st + 12, 8), 0x1234567890ull);
    ck_assert_uint_eq(le_bytes(st + 20, 8), m.rng_state);
    ck_assert_uint_eq(le_bytes(st + 28, 4), float_bits(opt.m[0]));
    ck_assert_uint_eq(le_bytes(st + 28 + 4 * P, 4), float_bits(opt.v[0]));
    ck_assert_uint_eq(le_bytes(st + 28 + 8 * P - 4, 4), float_bits(opt.v[P - 1]));
    ck_assert_uint_eq(le_bytes(b + len - 4, 4), crc32_update(0, b, len - 4));
    // a negative step would be refused on load; its bytes are two's complement
    ts.step = -2;
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, &ts, err, sizeof err), 0);
    free(b);
    b = slurp(path, &len);
    ck_assert_uint_eq(le_bytes(b + H + V + 4 * P, 4), 0xFFFFFFFEu);
    expect_load_error(path, "bad train state: step -2");
    free(b);
    gpt_free(&m);
    adamw_free(&opt);
    // rope: pos 1 and theta in the header, and no wpe among the parameters
    make_model_pos(&m, &opt, GPT_POS_ROPE);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    b = slurp(path, &len);
    ck_assert_uint_eq(le_bytes(b + 56, 4), 1);
    ck_assert_uint_eq(le_bytes(b + 60, 4), 0x43FA0000u);  // 500.0f
    ck_assert_uint_eq(le_bytes(b + 44, 8), P - 8 * 16);   // block_size x n_embd fewer
    ck_assert_uint_eq(len, H + V + 4 * (P - 8 * 16) + 4);
    free(b);
    gpt_free(&m);
    adamw_free(&opt);
    rm_tmpdir();
}
END_TEST

// A model converted for inference and saved (version 4) loads converted:
// the same config and dtype, every matrix the same in the checkpoint's form
// (wmat_to_raw) and in its products, the float32 tensors the same; saving
// it again gives the same bytes. _i: dtype bf16, f16, q8 (_i % 3) x shape
// (_i / 3): grouped with learned positions, rope (no wpe), MLA (ukvw stays
// float32). n_embd 40: q8 rows end in a partial block of 8.
static void make_converted(GPT *m, int shape, WeightDtype dt) {
    GPTConfig c = {.vocab_size = 3, .block_size = 8, .n_layer = 2, .n_head = 4, .n_kv_head = 2, .n_embd = 40,
                   .bias = 1, .pos = shape == 1 ? GPT_POS_ROPE : GPT_POS_LEARNED,
                   .rope_theta = GPT_ROPE_THETA_DEFAULT};
    if (shape == 2) c.kv_lora_rank = 12, c.n_kv_head = 4;
    ck_assert_int_eq(gpt_init(m, &c, 13), 0);
    ck_assert_int_eq(gpt_set_weight_dtype(m, dt), 0);
}

START_TEST(test_checkpoint_converted) {
    const WeightDtype dt = (WeightDtype)(1 + _i % 3);
    make_tmpdir();
    GPT m, m2;
    make_converted(&m, _i / 3, dt);
    char path[128], again[128], err[512];
    snprintf(path, sizeof path, "%s/w.bin", tmpdir);
    snprintf(again, sizeof again, "%s/again.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    uint8_t *vb;
    size_t vl, len, len2;
    TrainState ts;
    int has_ts;
    ck_assert_msg(checkpoint_load(path, &m2, &vb, &vl, &ts, &has_ts, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(has_ts, 0);
    ck_assert_mem_eq(&m.config, &m2.config, sizeof m.config);
    ck_assert_int_eq(m2.weight_dtype, dt);
    ck_assert_ptr_nonnull(m2.wmat_memory);
    ck_assert_uint_eq(m2.num_parameters, m.num_parameters);
    int converted = 0;
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        const WMat a = gpt_weight(&m, i), b = gpt_weight(&m2, i);
        ck_assert_int_eq(a.grouped, b.grouped);
        if (!a.grouped) {
            ck_assert_mem_eq(a.data, b.data, m.param_sizes[i] * sizeof(float));
            continue;
        }
        converted++;
        const size_t n = wmat_raw_bytes(dt, a.rows, a.cols);
        uint8_t *ra = malloc_check(n), *rb = malloc_check(n);
        wmat_to_raw(&a, ra);
        wmat_to_raw(&b, rb);
        ck_assert_mem_eq(ra, rb, n);
        // the products read the grouped layout, padding included
        const int N = 3;
        float *x = malloc_check((size_t)N * a.cols * sizeof(float)), *ya = malloc_check((size_t)N * a.rows * 4),
              *yb = malloc_check((size_t)N * a.rows * 4);
        void *scr = aligned_alloc(64, wmat_scratch_bytes(N, a.cols));
        uint64_t rng = 3 + (uint64_t)i;
        fill_normal(x, (size_t)N * a.cols, 1.0f, &rng);
        wmat_matmul(ya, x, &a, NULL, N, scr);
        wmat_matmul(yb, x, &b, NULL, N, scr);
        ck_assert_mem_eq(ya, yb, (size_t)N * a.rows * 4);
        free(ra), free(rb), free(x), free(ya), free(yb), free(scr);
    }
    ck_assert_int_ge(converted, 5);  // wte (+ wpe), qkv or MLA's projections, attproj, fc, fcproj
    ck_assert_int_eq(checkpoint_save(again, &m2, vb, vl, NULL, err, sizeof err), 0);
    uint8_t *want = slurp(path, &len), *got = slurp(again, &len2);
    ck_assert_uint_eq(len2, len);
    ck_assert_mem_eq(got, want, len);
    ck_assert_uint_eq(le_bytes(want + 4, 4), 4);    // version
    ck_assert_uint_eq(le_bytes(want + 76, 4), dt);  // weight_dtype
    ck_assert_uint_eq(le_bytes(want + 40, 4), 0);   // flags: no training state
    // a converted model keeps no training state, nor float32's regrouped weights
    TrainState none = {0};
    ck_assert_int_eq(checkpoint_save(again, &m2, vb, vl, &none, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "a training checkpoint holds the float32 weights as trained"), "%s", err);
    free(want), free(got), free(vb);
    gpt_free(&m2);
    gpt_free(&m);
    rm_tmpdir();
}
END_TEST

// A damaged version-4 file is refused with the field and the file named: an
// unknown dtype, a training state beside converted weights, a value that is
// not finite in a matrix (bf16, f16) or a scale that is not finite or is
// negative (q8), a float32 tensor that is not finite, a truncation. The
// header's CRC is recomputed each time, so only the check under test fails.
static void damage_and_expect(const char *path, const uint8_t *buf, size_t len, size_t at, const void *bytes,
                              size_t n, size_t cut, const char *needle) {
    uint8_t *b = malloc_check(len);
    memcpy(b, buf, len);
    memcpy(b + at, bytes, n);
    const size_t L = len - cut;
    put_u32le(b + L - 4, crc32_update(0, b, L - 4));
    spit(path, b, L);
    expect_load_error(path, needle);
    free(b);
}

START_TEST(test_checkpoint_converted_damage) {
    const WeightDtype dt = (WeightDtype)(1 + _i);
    make_tmpdir();
    GPT m;
    make_converted(&m, 0, dt);
    char path[128], bad[128], err[512];
    snprintf(path, sizeof path, "%s/w.bin", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.bin", tmpdir);
    ck_assert_int_eq(checkpoint_save(path, &m, vocab_blob, sizeof vocab_blob, NULL, err, sizeof err), 0);
    size_t len;
    uint8_t *buf = slurp(path, &len), v4[4];
    const size_t wte = 80 + sizeof vocab_blob;  // the first tensor, wte (3 x 40), converted
    put_u32le(v4, 4);
    damage_and_expect(bad, buf, len, 76, v4, 4, 0, "unknown weight_dtype 4 (0 f32, 1 bf16, 2 f16, 3 q8)");
    put_u32le(v4, 1);
    damage_and_expect(bad, buf, len, 40, v4, 4, 0, "with a training state (flags 0x1)");
    if (dt == W_Q8) {
        put_f32le(v4, -1.0f);
        damage_and_expect(bad, buf, len, wte + 4, v4, 4, 0, "wte (q8): row 0, block 1 has scale -1 (want finite and >= 0)");
        put_f32le(v4, NAN);
        damage_and_expect(bad, buf, len, wte + 8 * 2 + 4, v4, 4, 0, "wte (q8): row 2, block 1 has scale nan");
    } else {
        const uint8_t inf[2] = {0x80, (uint8_t)(dt == W_BF16 ? 0x7F : 0x7C)}, nan[2] = {0xC1, 0xFF};
        damage_and_expect(bad, buf, len, wte + 2 * 41, inf, 2, 0, "wte (");
        damage_and_expect(bad, buf, len, wte + 2 * 41, inf, 2, 0, "): row 1, column 1 is not finite");
        damage_and_expect(bad, buf, len, wte + 2 * 119, nan, 2, 0, "row 2, column 39 is not finite (0xffc1)");
    }
    // ln1w: after wte (3 x 40) and wpe (8 x 40) in the dtype
    const size_t ln1w = wte + wmat_raw_bytes(dt, 3, 40) + wmat_raw_bytes(dt, 8, 40);
    put_f32le(v4, INFINITY);
    damage_and_expect(bad, buf, len, ln1w + 4 * 5, v4, 4, 0, "ln1w[5] is inf: the weights are not finite");
    damage_and_expect(bad, buf, len, 0, "G", 1, 1, "truncated");
    free(buf);
    gpt_free(&m);
    rm_tmpdir();
}
END_TEST

// Committed checkpoints load, and saving what was loaded gives back the very
// same bytes: version-3 files and version-4 ones of converted weights as
// they are; a version-4 file of float32 weights as version 3 (without its
// weight_dtype 0); older ones as version 3: a
// version-1 file (tiny_gqa.bin, written before the position fields, and two
// crafted ones) with pos = learned (0) and rope_theta 10000 inserted after
// its 56-byte header, then (versions 1 and 2) kv_lora_rank, rope_head_dim
// and latent_norm = 0 after the 64-byte header, a new version and CRC.
static const char *committed_checkpoints[] = {
    "tests/fixtures/tiny_gqa.bin",                  "tests/corpus/checkpoint/ok-model.bin",
    "tests/corpus/checkpoint/ok-state.bin",         "tests/corpus/checkpoint/ok-model-v2-rope.bin",
    "tests/corpus/checkpoint/ok-state-v2-rope.bin", "tests/corpus/checkpoint/ok-state-v2-learned.bin",
    "tests/corpus/checkpoint/ok-model-v3-mla.bin",  "tests/corpus/checkpoint/ok-state-v3-mla-rope.bin",
    "tests/corpus/checkpoint/ok-model-v4-q8.bin",   "tests/corpus/checkpoint/ok-model-v4-bf16-rope.bin",
    "tests/corpus/checkpoint/ok-model-v4-f16-mla.bin", "tests/corpus/checkpoint/ok-model-v4-f32-mla.bin"};

START_TEST(test_checkpoint_committed_bytes) {
    const char *src = committed_checkpoints[_i];
    make_tmpdir();
    GPT m;
    uint8_t *vb;
    size_t vl, len, len2;
    TrainState ts;
    int has_ts;
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/again.bin", tmpdir);
    ck_assert_msg(checkpoint_load(src, &m, &vb, &vl, &ts, &has_ts, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(checkpoint_save(path, &m, vb, vl, has_ts ? &ts : NULL, err, sizeof err), 0);
    uint8_t *want = slurp(src, &len), *got = slurp(path, &len2);
    if (le_bytes(want + 4, 4) == 1) {  // version 1: what this build writes of it
        ck_assert_int_eq(m.config.pos, GPT_POS_LEARNED);
        ck_assert_float_eq(m.config.rope_theta, GPT_ROPE_THETA_DEFAULT);
        uint8_t *v2 = malloc_check(len + 8);
        memcpy(v2, want, CHECKPOINT_V1_HEADER_BYTES);
        put_u32le(v2 + 4, 2);
        put_u32le(v2 + 56, GPT_POS_LEARNED);
        put_f32le(v2 + 60, GPT_ROPE_THETA_DEFAULT);
        memcpy(v2 + 64, want + 56, len - 60);
        put_u32le(v2 + len + 4, crc32_update(0, v2, len + 4));
        free(want);
        want = v2, len += 8;
    }
    if (le_bytes(want + 4, 4) == 2) {  // version 2: grouped attention, the three fields 0
        ck_assert_int_eq(m.config.kv_lora_rank, 0);
        uint8_t *v3 = calloc_check(len + 12, 1);
        memcpy(v3, want, CHECKPOINT_V2_HEADER_BYTES);
        put_u32le(v3 + 4, 3);
        memcpy(v3 + 76, want + 64, len - 68);
        put_u32le(v3 + len + 8, crc32_update(0, v3, len + 8));
        free(want);
        want = v3, len += 12;
    }
    if (le_bytes(want + 4, 4) == 4 && le_bytes(want + 76, 4) == W_F32) {  // float32: written as version 3
        ck_assert_ptr_null(m.wmat_memory);
        uint8_t *v3 = malloc_check(len - 4);
        memcpy(v3, want, CHECKPOINT_V3_HEADER_BYTES);
        put_u32le(v3 + 4, 3);
        memcpy(v3 + 76, want + 80, len - 84);
        put_u32le(v3 + len - 8, crc32_update(0, v3, len - 8));
        free(want);
        want = v3, len -= 4;
    }
    ck_assert_uint_eq(len2, len);
    ck_assert_msg(memcmp(got, want, len) == 0, "%s: rewritten bytes differ", src);
    ck_assert_uint_eq(le_bytes(want + 40, 4), (uint64_t)has_ts);
    free(want);
    free(got);
    free(vb);
    if (has_ts) train_state_free(&ts);
    gpt_free(&m);
    rm_tmpdir();
}
END_TEST

// ----------------------------------------------------------------------------
// the crafted corpus (tests/corpus/, also the fuzzers' seeds): every ok-*
// file loads, every bad-* file is refused with a message naming it

#include <dirent.h>

static int corpus_load(const char *kind, const char *path, char *err, size_t errlen) {
    if (!strcmp(kind, "checkpoint")) {
        GPT m;
        uint8_t *vb;
        size_t vl;
        TrainState ts;
        int has_ts;
        if (checkpoint_load(path, &m, &vb, &vl, &ts, &has_ts, err, errlen) != 0) return -1;
        free(vb);
        if (has_ts) train_state_free(&ts);
        gpt_free(&m);
        return 0;
    }
    if (!strcmp(kind, "tokens")) {
        TokenFile tf;
        if (tokens_read(path, 0, &tf, err, errlen) != 0) return -1;
        tokens_free(&tf);
        return 0;
    }
    TrainConfig tc;
    train_config_defaults(&tc);
    int n;
    const Opt *opts = cli_train_opts(&tc, &n);
    if (opts_parse_file(opts, n, path, NULL, err, errlen) != 0) return -1;
    return train_config_validate(&tc, err, errlen);
}

static const char *corpus_kinds[] = {"checkpoint", "tokens", "config"};

START_TEST(test_corpus_replay) {
    const char *kind = corpus_kinds[_i];
    char dir[128];
    snprintf(dir, sizeof dir, "tests/corpus/%s", kind);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int seen_ok = 0, seen_bad = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[512], err[1024] = "";
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int rc = corpus_load(kind, path, err, sizeof err);
        if (!strncmp(e->d_name, "ok", 2)) {
            ck_assert_msg(rc == 0, "%s should load: %s", path, err);
            seen_ok++;
        } else {
            ck_assert_msg(rc == -1, "%s should be refused", path);
            // one line naming the file (the config checks name the key instead)
            ck_assert_msg(strchr(err, '\n') == NULL && (strstr(err, e->d_name) || !strcmp(kind, "config")),
                          "%s: message '%s'", path, err);
            ck_assert_msg(strlen(err) > 10, "%s: message '%s' says too little", path, err);
            seen_bad++;
        }
    }
    closedir(d);
    ck_assert_msg(seen_ok >= 1 && seen_bad >= 8, "%s: %d ok and %d bad files", dir, seen_ok, seen_bad);
}
END_TEST

static Suite *train_suite(void) {
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_lr_schedule);
    tcase_add_test(tc, test_flops_per_token);
    tcase_add_test(tc, test_config_parsing);
    tcase_add_test(tc, test_overfit_repetitive_text);
    tcase_add_loop_test(tc, test_checkpoint_roundtrip, 0, 2);
    tcase_add_test(tc, test_checkpoint_damage);
    tcase_add_test(tc, test_checkpoint_failed_write_keeps_old);
    tcase_add_test(tc, test_checkpoint_byte_layout);
    tcase_add_loop_test(tc, test_checkpoint_converted, 0, 9);
    tcase_add_loop_test(tc, test_checkpoint_converted_damage, 0, 3);
    tcase_add_loop_test(tc, test_checkpoint_committed_bytes, 0,
                        sizeof committed_checkpoints / sizeof committed_checkpoints[0]);
    tcase_add_loop_test(tc, test_corpus_replay, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(train_suite()) == 0 ? 0 : 1; }
