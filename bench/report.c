/*
 * report.c: `gqa bench`'s table (Markdown, mean +- stddev over repeats, as
 * llama-bench prints) and CSV (empty fields for what was not measured).
 * The CSV's columns only ever grow at the end, so readers that index them
 * by position keep working.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../util/util.h"
#include "bench.h"

void report_header(int first_n_kv_head, int with_budget) {
    printf("\n| attention | n_kv_head | batch | ctx | kv_dtype | weights | train tok/s | prefill tok/s | decode tok/s "
           "| decode x n_kv_head %d | KV cache | peak RSS | params | train GFLOP/s (MFU) "
           "| decode GB/s (%% of read GB/s) "
           "| GEMM-only tok/s (train of it) | decode of roofline tok/s (bound) |%s\n", first_n_kv_head,
           with_budget ? " budget batch (its cache of ctx + decode_tokens) | max ctx at batch 1 |" : "");
    printf("|:---|---:|---:|---:|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|%s\n",
           with_budget ? ":---|---:|" : "");
    fflush(stdout);
}

void report_csv_header(FILE *f) {
    fprintf(f, "n_kv_head,batch,ctx,kv_dtype,train_tok_s,train_tok_s_sd,prefill_tok_s,decode_tok_s,"
               "decode_tok_s_sd,kv_cache_bytes,peak_rss_bytes,params,"
               "train_gflops,train_mfu,decode_gbs,decode_bw_frac,train_tok_s_median,decode_tok_s_median,"
               "decode_speedup,gemm_tok_s_median,train_gemm_frac,"
               "kv_lora_rank,rope_head_dim,attention,decode_step_bytes,decode_step_flops,decode_roofline_tok_s,"
               "decode_roofline_frac,decode_bound,"
               "kv_budget_bytes,budget_batch,budget_max_ctx_batch1,budget_status,budget_kv_bytes,budget_seq_bytes,"
               "budget_batch_capped,budget_max_ctx_capped,weight_dtype,weight_bytes,read_gbs,decode_step_fma_flops\n");
}

// Table cells: "-" for what was not measured.
static const char *cell_pm(char *buf, size_t len, int prec, double mean, double sd) {
    if (isnan(mean)) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.*f ± %.*f", prec, mean, prec, sd);
    return buf;
}

static const char *cell_num(char *buf, size_t len, int prec, double v) {
    if (isnan(v)) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.*f", prec, v);
    return buf;
}

static const char *cell_bytes(char *buf, size_t len, double v) {
    return isnan(v) ? (snprintf(buf, len, "-"), buf) : format_bytes(v, buf, len);
}

// "45.1 (22%)": a rate and its fraction of the roofline, when there is one.
static const char *cell_rate(char *buf, size_t len, double v, double frac) {
    if (isnan(v)) snprintf(buf, len, "-");
    else if (isnan(frac)) snprintf(buf, len, "%.1f", v);
    else snprintf(buf, len, "%.1f (%.0f%%)", v, 100.0 * frac);
    return buf;
}

// "44.9 (65% of 68.7)": decode GB/s, its fraction of the read bandwidth
// measured beside the row, and that bandwidth.
static const char *cell_read(char *buf, size_t len, double v, double frac, double read_gbs) {
    if (isnan(v) || isnan(frac)) return cell_rate(buf, len, v, frac);  // "-" or the rate alone
    snprintf(buf, len, "%.1f (%.0f%% of %.1f)", v, 100.0 * frac, read_gbs);
    return buf;
}

// "41% of 2950 (read)": decode tok/s as a fraction of the roofline's tok/s,
// and the side that bounds it.
static const char *cell_roofline(char *buf, size_t len, double frac, double tok_s, const char *bound) {
    if (isnan(frac) || !bound) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.0f%% of %.0f (%s)", 100.0 * frac, tok_s, bound);
    return buf;
}

// The budget's cells: "321 (511.9 MiB)", "1048576 (768 MiB, at the cap)", "does
// not fit (1 sequence: 12.1 MiB)", "exceeds memory: 1024 (64.0 GiB) needs 65.1
// GiB of 23.1 GiB available"; and
// the longest context at batch 1, "4096 (block_size)" when capped.
static void cells_budget(const BenchRow *r, char *batch, char *max_ctx, size_t len) {
    char a[32], b[32], m[32];
    const char *cap = r->budget_batch_capped ? ", at the cap" : "";
    format_bytes(r->budget_kv_bytes, a, sizeof a);
    switch (r->budget) {
    case BUDGET_FITS: snprintf(batch, len, "%d (%s%s)", r->budget_batch, a, cap); break;
    case BUDGET_NO_FIT:
        snprintf(batch, len, "does not fit (1 sequence: %s)", format_bytes(r->budget_seq_bytes, b, sizeof b));
        break;
    case BUDGET_NO_MEMORY:
        snprintf(batch, len, "exceeds memory: %d (%s%s) needs %s of %s available", r->budget_batch, a, cap,
                 format_bytes(r->budget_need_bytes, b, sizeof b), format_bytes(r->mem_available, m, sizeof m));
        break;
    case BUDGET_NONE: snprintf(batch, len, "-"); break;
    }
    if (r->budget_max_ctx == 0) snprintf(max_ctx, len, "does not fit");
    else snprintf(max_ctx, len, "%d%s", r->budget_max_ctx, r->budget_max_ctx_capped ? " (block_size)" : "");
}

void report_row(const BenchRow *r) {
    char c[13][64], budget[2][160] = {"", ""}, wb[32];
    if (r->batch) snprintf(c[0], 64, "%d", r->batch);
    else strcpy(c[0], "-");
    if (r->ctx) snprintf(c[1], 64, "%d", r->ctx);
    else strcpy(c[1], "-");
    if (r->kv_budget) cells_budget(r, budget[0], budget[1], sizeof budget[0]);
    // weights: "bf16 38.2 MiB"
    if (isnan(r->weight_bytes)) strcpy(c[12], "-");
    else snprintf(c[12], 64, "%s %s", r->weight_dtype, format_bytes(r->weight_bytes, wb, sizeof wb));
    printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %zu | %s | %s | %s | %s |", r->attention,
           r->n_kv_head, c[0], c[1], r->kv_dtype, c[12], cell_pm(c[2], 64, 0, r->train, r->train_sd),
           cell_num(c[3], 64, 0, r->prefill),
           cell_pm(c[4], 64, 1, r->decode, r->decode_sd), cell_num(c[9], 64, 2, r->decode_x),
           cell_bytes(c[5], 64, r->kv_bytes), cell_bytes(c[6], 64, r->rss), r->params,
           cell_rate(c[7], 64, r->train_gflops, r->train_mfu),
           cell_read(c[8], 64, r->decode_gbs, r->decode_bw_frac, r->read_gbs),
           cell_rate(c[10], 64, r->gemm, r->train_gemm_frac),
           cell_roofline(c[11], 64, r->roofline_frac, r->roofline_tok_s, r->bound));
    if (r->kv_budget) printf(" %s | %s |", budget[0], budget[1]);
    printf("\n");
    fflush(stdout);
}

// CSV fields: empty for what was not measured.
static void csv_field(FILE *f, const char *fmt, double v) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

void report_csv_row(FILE *f, const BenchRow *r) {
    fprintf(f, "%d", r->n_kv_head);
    if (r->ctx && r->batch) fprintf(f, ",%d,%d,%s", r->batch, r->ctx, r->kv_dtype);
    else if (r->ctx) fprintf(f, ",,%d,%s", r->ctx, r->kv_dtype);  // a budget row that did not run
    else fprintf(f, ",,,");
    csv_field(f, "%.3f", r->train);
    csv_field(f, "%.3f", r->train_sd);
    csv_field(f, "%.3f", r->prefill);
    csv_field(f, "%.3f", r->decode);
    csv_field(f, "%.3f", r->decode_sd);
    csv_field(f, "%.0f", r->kv_bytes);
    csv_field(f, "%.0f", r->rss);
    fprintf(f, ",%zu", r->params);
    csv_field(f, "%.3f", r->train_gflops);
    csv_field(f, "%.4f", r->train_mfu);
    csv_field(f, "%.3f", r->decode_gbs);
    csv_field(f, "%.4f", r->decode_bw_frac);
    csv_field(f, "%.3f", r->train_median);
    csv_field(f, "%.3f", r->decode_median);
    csv_field(f, "%.4f", r->decode_x);
    csv_field(f, "%.3f", r->gemm);
    csv_field(f, "%.4f", r->train_gemm_frac);
    fprintf(f, ",%d,%d,%s", r->kv_lora_rank, r->rope_head_dim, r->attention);
    csv_field(f, "%.0f", r->step_bytes);
    csv_field(f, "%.0f", r->step_flops);
    csv_field(f, "%.3f", r->roofline_tok_s);
    csv_field(f, "%.4f", r->roofline_frac);
    fprintf(f, ",%s", r->bound ? r->bound : "");
    if (r->kv_budget)
        fprintf(f, ",%zu,%d,%d,%s,%.0f,%.0f,%d,%d", r->kv_budget, r->budget_batch, r->budget_max_ctx,
                bench_budget_names[r->budget], r->budget_kv_bytes, r->budget_seq_bytes, r->budget_batch_capped,
                r->budget_max_ctx_capped);
    else
        fprintf(f, ",,,,,,,,");
    fprintf(f, ",%s", isnan(r->weight_bytes) ? "" : r->weight_dtype);
    csv_field(f, "%.0f", r->weight_bytes);
    csv_field(f, "%.3f", r->read_gbs);
    csv_field(f, "%.0f", r->step_fma_flops);
    fputc('\n', f);
}
