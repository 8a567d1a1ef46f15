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

void report_header(int first_n_kv_head) {
    printf("\n| attention | n_kv_head | batch | ctx | kv_dtype | train tok/s | prefill tok/s | decode tok/s "
           "| decode x n_kv_head %d | KV cache | peak RSS | params | train GFLOP/s (MFU) | decode GB/s (of read bw) "
           "| GEMM-only tok/s (train of it) | decode of roofline tok/s (bound) |\n", first_n_kv_head);
    printf("|:---|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
}

void report_csv_header(FILE *f) {
    fprintf(f, "n_kv_head,batch,ctx,kv_dtype,train_tok_s,train_tok_s_sd,prefill_tok_s,decode_tok_s,"
               "decode_tok_s_sd,kv_cache_bytes,peak_rss_bytes,params,"
               "train_gflops,train_mfu,decode_gbs,decode_bw_frac,train_tok_s_median,decode_tok_s_median,"
               "decode_speedup,gemm_tok_s_median,train_gemm_frac,"
               "kv_lora_rank,rope_head_dim,attention,decode_step_bytes,decode_step_flops,decode_roofline_tok_s,"
               "decode_roofline_frac,decode_bound\n");
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

// "41% of 2950 (read)": decode tok/s as a fraction of the roofline's tok/s,
// and the side that bounds it.
static const char *cell_roofline(char *buf, size_t len, double frac, double tok_s, const char *bound) {
    if (isnan(frac) || !bound) snprintf(buf, len, "-");
    else snprintf(buf, len, "%.0f%% of %.0f (%s)", 100.0 * frac, tok_s, bound);
    return buf;
}

void report_row(const BenchRow *r) {
    char c[12][64];
    if (r->batch) {
        snprintf(c[0], 64, "%d", r->batch);
        snprintf(c[1], 64, "%d", r->ctx);
    } else {
        strcpy(c[0], "-"), strcpy(c[1], "-");
    }
    printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %zu | %s | %s | %s | %s |\n", r->attention,
           r->n_kv_head, c[0], c[1], r->kv_dtype, cell_pm(c[2], 64, 0, r->train, r->train_sd),
           cell_num(c[3], 64, 0, r->prefill),
           cell_pm(c[4], 64, 1, r->decode, r->decode_sd), cell_num(c[9], 64, 2, r->decode_x),
           cell_bytes(c[5], 64, r->kv_bytes), cell_bytes(c[6], 64, r->rss), r->params,
           cell_rate(c[7], 64, r->train_gflops, r->train_mfu), cell_rate(c[8], 64, r->decode_gbs, r->decode_bw_frac),
           cell_rate(c[10], 64, r->gemm, r->train_gemm_frac),
           cell_roofline(c[11], 64, r->roofline_frac, r->roofline_tok_s, r->bound));
    fflush(stdout);
}

// CSV fields: empty for what was not measured.
static void csv_field(FILE *f, const char *fmt, double v) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

void report_csv_row(FILE *f, const BenchRow *r) {
    fprintf(f, "%d", r->n_kv_head);
    if (r->batch) fprintf(f, ",%d,%d,%s", r->batch, r->ctx, r->kv_dtype);
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
    fprintf(f, ",%s\n", r->bound ? r->bound : "");
}
