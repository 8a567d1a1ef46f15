#!/bin/sh
# test_cli.sh: the command line as a user meets it: help, info, and clear
# errors (message + non-zero exit, never a signal) on bad flags and shapes.
# Usage: sh tests/test_cli.sh ./gqa
GQA=${1:-./gqa}
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS NEEDLE -- cmd...: exit status must equal STATUS and the
# combined output must contain NEEDLE
expect() {
    want=$1 needle=$2; shift 3
    out=$("$@" 2>&1); got=$?
    if [ "$got" -ne "$want" ]; then bad "$* exited $got, want $want: $out"; return; fi
    case "$out" in *"$needle"*) ok ;; *) bad "$*: output lacks '$needle': $out" ;; esac
}

expect 0 "commands:" -- "$GQA" --help
expect 2 "usage: gqa" -- "$GQA"
# usage alone goes to stderr, --help to stdout
[ -z "$("$GQA" 2>/dev/null)" ] && [ -n "$("$GQA" --help 2>/dev/null)" ] && ok || bad "usage streams: stderr alone, --help stdout"
expect 0 "gqa 1.0.0" -- "$GQA" --version
out=$("$GQA" --version)
for k in "compiler: " "blas: OpenBLAS" "openmp: " "mpi: "; do
    case "$out" in *"$k"*) ok ;; *) bad "--version lacks '$k': $out" ;; esac
done
# every help fits 100 columns, lists every option once, and docs/cli.md is that help as the binary prints it
for c in prepare train sample convert bench mem info; do
    "$GQA" "$c" --help > /tmp/gqa_help_$$.txt 2>&1 || bad "gqa $c --help failed"
    awk -v c="$c" 'length($0) > 100 { print "FAIL: gqa " c " --help line of " length($0) " columns: " $0; bad = 1 }
        END { exit bad }' /tmp/gqa_help_$$.txt && ok || fail=$((fail + 1))
    n=$(grep -c '^  --' /tmp/gqa_help_$$.txt); u=$(grep '^  --' /tmp/gqa_help_$$.txt | awk '{ print $1 }' | sort -u | wc -l)
    [ "$n" -gt 0 ] && [ "$n" -eq "$u" ] && ok || bad "gqa $c --help: $n option lines, $u distinct"
done
rm -f /tmp/gqa_help_$$.txt
sh "$(dirname "$0")/../scripts/cli_md.sh" "$GQA" | cmp -s - "$(dirname "$0")/../docs/cli.md" && ok ||
    bad "docs/cli.md differs from the binary's --help (regenerate: sh scripts/cli_md.sh > docs/cli.md)"
# bench lists (and accepts) only its own options; the fixed AdamW is stated
out=$("$GQA" bench --help)
for o in data_dir out_dir learning_rate beta1 weight_decay eval_interval max_iters init_from peak_gflops; do
    case "$out" in *"--$o "*) bad "bench --help lists --$o, which bench does not use" ;; *) ok ;; esac
done
case "$out" in *"AdamW with fixed hyperparameters (lr 0.0001, beta1 0.9, beta2 0.99"*) ok ;;
    *) bad "bench --help does not state its AdamW: $out" ;; esac
expect 1 "unknown option 'learning_rate'" -- "$GQA" bench --learning_rate 1e-3
expect 1 "unknown option 'batch' (did you mean '--batch_size'?" -- "$GQA" bench --batch 1
# the same concept has the same spelling in every help that takes it
for o in n_kv_head ctx batch_size kv_dtype; do
    for c in bench mem; do "$GQA" "$c" --help | grep -q "^  --$o " && ok || bad "gqa $c --help lacks --$o"; done
done
"$GQA" sample --help | tr -s ' \n' ' ' | grep -q -- "--kv_dtype NAME KV cache element type (16 bits: half the bytes) (default: f32; one of f32, bf16, f16)" &&
    ok || bad "sample --kv_dtype choices"
# required options say so and show no default; string defaults are printed escaped
"$GQA" sample --help | grep -A1 "^  --ckpt PATH" | grep -q "(required)" && ok || bad "sample --ckpt is not marked required"
"$GQA" sample --help | grep -q '^  --prompt TEXT .*(default: "\\n")' && ok || bad "sample --prompt default not escaped"
expect 1 "missing --ckpt PATH (required; see --help)" -- "$GQA" sample
expect 1 "missing --out PATH (required; see --help)" -- "$GQA" convert --ckpt x.bin --n_kv_head 1
# train's options are grouped
for g in model optimizer schedule evaluation "input and output" system; do
    "$GQA" train --help | grep -q "^$g:$" && ok || bad "train --help has no group '$g'"
done
# a stated range is the one enforced
"$GQA" prepare --help | grep -q "range (0, 1)" && ok || bad "prepare --help does not state (0, 1)"
expect 1 "option 'val_fraction': 1 is out of range (0, 1)" -- "$GQA" prepare --input x --out_dir y --val_fraction 1
expect 2 "unknown command 'frobnicate'" -- "$GQA" frobnicate
expect 0 "--n_kv_head" -- "$GQA" info --help
expect 0 "kv cache per token: 18432 bytes" -- "$GQA" info --n_layer 6 --n_head 6 --n_kv_head 6 --n_embd 384
expect 0 "kv cache per token: 3072 bytes" -- "$GQA" info --n_layer=6 --n_head=6 --n_kv_head=1 --n_embd=384
expect 0 "parameters: 10745088" -- "$GQA" info --n_layer=6 --n_head=6 --n_kv_head=6 --n_embd=384 --vocab_size 65 --block_size 256 --bias 0
expect 1 "n_head 6 is not divisible by n_kv_head 4" -- "$GQA" info --n_head 6 --n_kv_head 4
expect 1 "n_embd 100 is not divisible by n_head 6" -- "$GQA" info --n_embd 100
expect 1 "n_kv_head must be in [1, n_head=6], got 8" -- "$GQA" info --n_kv_head 8
expect 1 "option 'n_layer': 0 is out of range" -- "$GQA" info --n_layer 0
expect 1 "option 'n_head': 'abc' is not an integer" -- "$GQA" info --n_head abc
expect 1 "unknown option 'n_kv_heads'" -- "$GQA" info --n_kv_heads 2
expect 1 "option '--n_embd' needs a value" -- "$GQA" info --n_embd
# the position scheme: rope has no wpe (block_size x n_embd = 256 x 384 parameters fewer)
expect 0 "positions: learned, wpe of 256 x 384 = 98304 parameters" -- "$GQA" info
expect 0 "parameters: 10770816" -- "$GQA" info --pos learned
expect 0 "parameters: 10672512" -- "$GQA" info --pos rope
expect 0 "positions: rope, rope_theta 500000: q and k rotated by position" -- "$GQA" info --pos=rope --rope_theta=5e5
expect 0 "bias=1 pos=rope" -- "$GQA" info --pos rope
expect 1 "option 'pos': 'alibi' is not one of learned, rope" -- "$GQA" info --pos alibi
expect 1 "option 'rope_theta': 0 is out of range (0, 1e+09)" -- "$GQA" info --pos rope --rope_theta 0
expect 1 "option 'rope_theta': 'nan' is not a number" -- "$GQA" info --pos rope --rope_theta nan
expect 1 "pos=rope rotates pairs of dimensions: the head size n_embd/n_head = 3 must be even" -- "$GQA" info --pos rope --n_embd 18 --n_head 6 --n_kv_head 6
for c in train bench mem info; do
    for o in pos rope_theta; do "$GQA" "$c" --help | grep -q "^  --$o " && ok || bad "gqa $c --help lacks --$o"; done
done

# gqa mem reproduces the published figures
expect 0 "| 64 | MHA | 2.62 MB" -- "$GQA" mem --n_layer 80 --n_head 64 --n_kv_head 8 --n_embd 8192 --kv_dtype f16
expect 0 "| 8 | GQA | 0.33 MB" -- "$GQA" mem --n_layer 80 --n_head 64 --n_kv_head 8 --n_embd 8192 --kv_dtype f16
expect 0 "17.18 GB (16.00 GiB)" -- "$GQA" mem --n_embd 4096 --n_head 32 --n_layer 32 --ctx 32768 --batch_size 1 --kv_dtype bf16 --n_kv_head 8
expect 0 "| 8 | GQA | 0.13 MB (131072 B) | 4.29 GB (4.00 GiB) | 4.00x" -- "$GQA" mem --n_embd 4096 --n_head 32 --n_layer 32 --ctx 32768 --batch_size 1 --kv_dtype bf16 --n_kv_head 8
expect 1 "option 'kv_dtype': 'fp8' is not one of f32, bf16, f16" -- "$GQA" mem --kv_dtype fp8
expect 1 "n_head 32 is not divisible by n_kv_head 5" -- "$GQA" mem --n_kv_head 8,5
# rope: the same cache, block_size x n_embd = 4096 x 4096 parameters fewer
expect 0 "| 8 | GQA | 0.13 MB (131072 B) | 536.87 MB (512.00 MiB) | 4.00x | 1.61 GB | 5860040704 (11.72 GB)" -- "$GQA" mem --n_kv_head 8
expect 0 "| 8 | GQA | 0.13 MB (131072 B) | 536.87 MB (512.00 MiB) | 4.00x | 1.61 GB | 5843263488 (11.69 GB)" -- "$GQA" mem --n_kv_head 8 --pos rope
case "$out" in *"n_embd 4096, pos rope;"*) ok ;; *) bad "mem does not name the position scheme: $out" ;; esac
# an unwritable CSV path fails before anything is printed; a good one is written whole
expect 1 "--csv: cannot write '/nonexistent/x.csv'" -- "$GQA" mem --csv /nonexistent/x.csv
case "$out" in *"| n_kv_head |"*) bad "mem printed its table before failing on the CSV path" ;; *) ok ;; esac
memcsv=$(mktemp /tmp/gqa_mem_XXXXXX)
"$GQA" mem --n_kv_head 8,1 --ctx 1024 --csv "$memcsv" > /dev/null 2>&1 &&
    [ "$(head -1 "$memcsv")" = "n_kv_head,ctx,kv_cache_bytes" ] && [ "$(wc -l < "$memcsv")" -eq 10 ] &&
    grep -q '^1,1024,16777216$' "$memcsv" && [ ! -e "$memcsv.tmp" ] && ok || bad "mem CSV: $(cat "$memcsv")"
rm -f "$memcsv"

# csv_has FILE CONDITION: some data row of FILE meets CONDITION, an awk expression over the columns by
# their header names: v("name") is a field, num("name") says it is a number, empty("name") that it is empty.
csv_has() {
    awk -F, "function v(k) { if (!(k in col)) { print \"no column \" k > \"/dev/stderr\"; exit 2 } return \$(col[k]) }
        function num(k) { return v(k) ~ /^-?[0-9]+(\\.[0-9]+)?$/ }
        function empty(k) { return v(k) == \"\" }
        NR == 1 { for (i = 1; i <= NF; i++) col[\$i] = i; next }
        ($2) { found = 1 } END { exit !found }" "$1"
}
# csv_all FILE CONDITION: every data row meets it (and there is at least one)
csv_all() { csv_has "$1" "$2" && ! csv_has "$1" "!($2)"; }
rows() { echo $(($(wc -l < "$1") - 1)); }

# gqa bench on a tiny shape: one row per setting, CSV columns, exact KV bytes
# (the roofline, ~1 s, only where it is the subject)
tmpd=$(mktemp -d /tmp/gqa_cli_XXXXXX)
tiny="--vocab_size 11 --n_layer 1 --n_head 4 --n_embd 16 --block_size 32 --train_batch_size 2 --train_block_size 8
    --decode_tokens 4 --train_steps 1 --threads 1"
header="n_kv_head,batch,ctx,kv_dtype,train_tok_s,train_tok_s_sd,prefill_tok_s,decode_tok_s,decode_tok_s_sd,kv_cache_bytes,peak_rss_bytes,params,train_gflops,train_mfu,decode_gbs,decode_bw_frac,train_tok_s_median,decode_tok_s_median,decode_speedup,gemm_tok_s_median,train_gemm_frac"
# shellcheck disable=SC2086
expect 0 "| 2 | 2 | 16 | bf16 |" -- "$GQA" bench $tiny --n_kv_head 4,2 --ctx 8,16 --batch_size 1,2 --kv_dtype f32,bf16 \
    --repeats 2 --roofline=false --csv "$tmpd/b.csv"
if [ "$(head -1 "$tmpd/b.csv")" = "$header" ] && [ "$(rows "$tmpd/b.csv")" -eq 16 ]; then ok
else bad "bench CSV header or row count: $(cat "$tmpd/b.csv")"; fi
# n_kv_head 2, batch 2, ctx 16, bf16: 2 * 1 layer * 2 heads * 4 dims * 16 positions * 2 sequences * 2 bytes = 1024;
# the roofline's fractions are empty without it; the speed-up of the list's first n_kv_head (4) is 1
csv_has "$tmpd/b.csv" 'v("n_kv_head") == 2 && v("batch") == 2 && v("ctx") == 16 && v("kv_dtype") == "bf16" &&
    v("kv_cache_bytes") == 1024 && v("params") == 3728 && num("train_tok_s") && num("decode_tok_s") &&
    num("peak_rss_bytes") && num("train_gflops") && empty("train_mfu") && num("decode_gbs") &&
    empty("decode_bw_frac") && num("decode_speedup") && empty("gemm_tok_s_median") && empty("train_gemm_frac")' &&
    ok || bad "bench CSV lacks the exact KV bytes row: $(cat "$tmpd/b.csv")"
csv_has "$tmpd/b.csv" 'v("n_kv_head") == 4 && v("batch") == 2 && v("ctx") == 16 && v("kv_dtype") == "f32" &&
    v("kv_cache_bytes") == 4096 && v("params") == 4000 && v("decode_speedup") == "1.0000" &&
    empty("train_mfu") && empty("decode_bw_frac")' && ok || bad "bench CSV lacks the f32 MHA row"
# --measure: training alone is one row per n_kv_head (no decode shape, so a ctx beyond block_size is no error) ...
# shellcheck disable=SC2086
expect 0 "| 4 | - | - | - |" -- "$GQA" bench $tiny --n_kv_head 4,1 --ctx 40 --measure=train --roofline=false --csv "$tmpd/t.csv"
if [ "$(head -1 "$tmpd/t.csv")" = "$header" ] && [ "$(rows "$tmpd/t.csv")" -eq 2 ] &&
    csv_all "$tmpd/t.csv" 'empty("batch") && empty("ctx") && empty("kv_dtype") && num("train_tok_s") &&
        num("train_tok_s_sd") && empty("prefill_tok_s") && empty("decode_tok_s") && empty("kv_cache_bytes") &&
        empty("peak_rss_bytes") && num("train_gflops") && empty("train_mfu") && num("train_tok_s_median") &&
        empty("decode_speedup") && empty("gemm_tok_s_median")' &&
    csv_has "$tmpd/t.csv" 'v("n_kv_head") == 4 && v("params") == 4000' &&
    csv_has "$tmpd/t.csv" 'v("n_kv_head") == 1 && v("params") == 3592'; then ok; else bad "bench --measure=train CSV: $(cat "$tmpd/t.csv")"; fi
# ... and decode alone leaves the training columns empty
# shellcheck disable=SC2086
expect 0 "| 2 | 1 | 8 | f32 | - |" -- "$GQA" bench $tiny --n_kv_head 2 --ctx 8 --batch_size 1 --measure=infer --roofline=false --csv "$tmpd/i.csv"
[ "$(rows "$tmpd/i.csv")" -eq 1 ] &&
    csv_all "$tmpd/i.csv" 'v("n_kv_head") == 2 && v("batch") == 1 && v("ctx") == 8 && v("kv_dtype") == "f32" &&
        empty("train_tok_s") && empty("train_tok_s_sd") && num("prefill_tok_s") && num("decode_tok_s") &&
        num("decode_tok_s_sd") && v("kv_cache_bytes") == 512 && num("peak_rss_bytes") && v("params") == 3728 &&
        empty("train_gflops") && empty("train_mfu") && num("decode_gbs") && empty("decode_bw_frac") &&
        empty("train_tok_s_median") && num("decode_tok_s_median") && v("decode_speedup") == "1.0000" &&
        empty("gemm_tok_s_median") && empty("train_gemm_frac")' && ok || bad "bench --measure=infer CSV: $(cat "$tmpd/i.csv")"
# the roofline (fixed sizes, ~1 s): its line, then MFU and the fraction of bandwidth in both table and CSV,
# and a second reading at the end of the run
# shellcheck disable=SC2086
expect 0 "roofline: sgemm peak" -- "$GQA" bench $tiny --n_kv_head 2 --ctx 8 --batch_size 1 --repeats 1 --csv "$tmpd/r.csv"
case "$out" in *"roofline at the end (the percentages above are of the first): sgemm peak "*) ok ;;
    *) bad "bench prints no roofline at the end: $out" ;; esac
# the peak is the faster of the two sgemm backends it names
echo "$out" | sed -n 's/^roofline: sgemm peak \([0-9.]*\) GFLOP\/s (gqa.c gemm \([0-9.]*\), OpenBLAS \([0-9.]*\)).*/\1 \2 \3/p' |
    awk 'NF == 3 && $1 > 0 && $1 == ($2 > $3 ? $2 : $3) { found = 1 } END { exit !found }' &&
    ok || bad "the roofline's sgemm peak is not the faster of gqa.c's gemm and OpenBLAS: $out"
csv_all "$tmpd/r.csv" 'v("n_kv_head") == 2 && v("batch") == 1 && v("ctx") == 8 && v("kv_dtype") == "f32" &&
    num("train_tok_s") && num("decode_tok_s") && v("kv_cache_bytes") == 512 && v("params") == 3728 &&
    num("train_gflops") && v("train_mfu") ~ /^0\.[0-9]+$/ && num("decode_gbs") && v("decode_bw_frac") ~ /^0\.[0-9]+$/ &&
    v("decode_speedup") == "1.0000" && empty("gemm_tok_s_median")' &&
    ok || bad "bench CSV with the roofline lacks train_mfu or decode_bw_frac: $(cat "$tmpd/r.csv")"
# --rounds: every setting in R processes, round-robin (every setting's round 1 before any round 2), and
# decode_speedup is the ratio of the pooled medians to those of the list's first n_kv_head
# shellcheck disable=SC2086
"$GQA" bench $tiny --n_kv_head 4,1 --ctx 8 --batch_size 1,2 --rounds 2 --repeats 3 --roofline=false --csv "$tmpd/rr.csv" \
    > "$tmpd/rr.out" 2> "$tmpd/rr.err" && ok || bad "bench --rounds 2 failed: $(cat "$tmpd/rr.err")"
if [ "$(grep -c 'round 1/2' "$tmpd/rr.err")" -eq 6 ] && [ "$(grep -c 'round 2/2' "$tmpd/rr.err")" -eq 6 ] &&
    [ "$(grep -n 'round 1/2' "$tmpd/rr.err" | tail -1 | cut -d: -f1)" -lt \
      "$(grep -n 'round 2/2' "$tmpd/rr.err" | head -1 | cut -d: -f1)" ]; then ok; else bad "bench --rounds order: $(cat "$tmpd/rr.err")"; fi
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { k = $(col["n_kv_head"]) "," $(col["batch"]); med[k] = $(col["decode_tok_s_median"]); x[k] = $(col["decode_speedup"]); n++ }
    END { bad = n != 4
          for (k in med) { split(k, a, ","); want = med[k] / med["4," a[2]]
                           if (x[k] < want - 1e-3 * want || x[k] > want + 1e-3 * want) bad = 1 }
          exit bad }' "$tmpd/rr.csv" && grep -q "repeats x 2 rounds" "$tmpd/rr.out" && ok ||
    bad "bench --rounds CSV speed-ups: $(cat "$tmpd/rr.csv")"
# gemm: the training step's linear-layer products alone, its median and (with train) train's median over it
# shellcheck disable=SC2086
expect 0 "| 2 | - | - | - |" -- "$GQA" bench $tiny --n_kv_head 4,2 --measure=train,gemm --repeats 2 --roofline=false \
    --csv "$tmpd/g.csv"
if [ "$(rows "$tmpd/g.csv")" -eq 2 ] &&
    csv_has "$tmpd/g.csv" 'v("n_kv_head") == 2 && empty("batch") && empty("ctx") && empty("kv_dtype") &&
        num("train_tok_s") && num("train_tok_s_sd") && empty("prefill_tok_s") && empty("decode_tok_s") &&
        empty("kv_cache_bytes") && empty("peak_rss_bytes") && v("params") == 3728 && num("train_gflops") &&
        empty("train_mfu") && empty("decode_gbs") && num("train_tok_s_median") && empty("decode_speedup") &&
        num("gemm_tok_s_median") && num("train_gemm_frac")' &&
    csv_all "$tmpd/g.csv" 'v("gemm_tok_s_median") > 0 && v("train_gemm_frac") > 0 &&
        (v("train_gemm_frac") - v("train_tok_s_median") / v("gemm_tok_s_median")) ^ 2 < 1e-8'
then ok; else bad "bench --measure=train,gemm CSV: $(cat "$tmpd/g.csv")"; fi
# ... and beside decode alone there is no training to put over it
# shellcheck disable=SC2086
expect 0 "| 1 | 1 | 8 | f32 | - |" -- "$GQA" bench $tiny --n_kv_head 1 --ctx 8 --batch_size 1 --measure=infer,gemm --roofline=false \
    --csv "$tmpd/gi.csv"
csv_all "$tmpd/gi.csv" 'v("n_kv_head") == 1 && v("batch") == 1 && v("ctx") == 8 && v("kv_dtype") == "f32" &&
    empty("train_tok_s") && num("prefill_tok_s") && num("decode_tok_s") && num("kv_cache_bytes") &&
    empty("train_gflops") && empty("train_mfu") && num("decode_gbs") && empty("train_tok_s_median") &&
    num("decode_tok_s_median") && v("decode_speedup") == "1.0000" && num("gemm_tok_s_median") &&
    empty("train_gemm_frac")' && ok ||
    bad "bench --measure=infer,gemm CSV: $(cat "$tmpd/gi.csv")"
expect 1 "option 'measure': 'decode' is not one of train, gemm, infer" -- "$GQA" bench --measure train,decode
# rope in bench: training and decode run, and the parameters lack wpe (32 x 16 = 512 of them)
# shellcheck disable=SC2086
expect 0 "pos=rope rope_theta=500;" -- "$GQA" bench $tiny --n_kv_head 2 --ctx 8 --batch_size 1 --pos rope --rope_theta 500 \
    --repeats 1 --roofline=false --csv "$tmpd/rope.csv"
csv_all "$tmpd/rope.csv" 'v("n_kv_head") == 2 && v("params") == 3216 && num("train_tok_s") && num("decode_tok_s") &&
    v("kv_cache_bytes") == 512' && ok || bad "bench --pos rope CSV: $(cat "$tmpd/rope.csv")"
# --gemm: the linear layers' backend; alternate times both, step by step, in one process
# shellcheck disable=SC2086
expect 0 "ours/OpenBLAS" -- "$GQA" bench $tiny --n_kv_head 2 --measure=train --train_steps 2 --roofline=false --gemm=alternate
# shellcheck disable=SC2086
expect 0 "| 2 | - | - | - |" -- "$GQA" bench $tiny --n_kv_head 2 --measure=train --roofline=false --gemm=openblas
expect 1 "option 'gemm': 'mkl' is not one of ours, openblas, alternate" -- "$GQA" bench --gemm mkl
if command -v gnuplot >/dev/null; then
    sh "$(dirname "$0")/../scripts/plot_bench.sh" "$tmpd/b.csv" "$tmpd/p" > /dev/null 2>&1 && [ -s "$tmpd/p-decode.png" ] &&
        [ -s "$tmpd/p-memory.png" ] && ok || bad "plot_bench.sh made no PNGs"
fi
expect 1 "ctx 40 + decode_tokens 32 exceeds block_size 64" -- "$GQA" bench --block_size 64 --ctx 40
expect 1 "option 'kv_dtype': 'f8' is not one of f32, bf16, f16" -- "$GQA" bench --kv_dtype f32,f8

# gqa convert: the tiny GQA fixture (4 query heads, 2 KV heads)
fx=$(dirname "$0")/fixtures
expect 0 "(n_kv_head 2) -> $tmpd/mqa.bin (n_kv_head 1, mean)" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --n_kv_head 1 --out "$tmpd/mqa.bin"
expect 1 "n_kv_head 4 is larger than the source's 2 (use --method repeat to expand)" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --n_kv_head 4 --out "$tmpd/x.bin"
expect 1 "n_kv_head 3 must divide n_head 4" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --n_kv_head 3 --out "$tmpd/x.bin"
expect 1 "option 'method': 'median' is not one of mean, first, random, repeat" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --n_kv_head 1 --out "$tmpd/x.bin" --method median
[ ! -e "$tmpd/x.bin" ] && ok || bad "a refused conversion wrote a file"
# expanding by repeat changes nothing: the greedy sample is the golden one
expect 0 "(n_kv_head 4, repeat)" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --n_kv_head 4 --out "$tmpd/mha.bin" --method repeat
"$GQA" sample --ckpt "$tmpd/mha.bin" --temperature 0 --max_new_tokens 200 --prompt "ROMEO:" 2>/dev/null | cmp -s - "$fx/tiny_gqa_greedy.txt" &&
    ok || bad "the repeat-expanded model's greedy text differs from the golden sample"
"$GQA" sample --ckpt "$tmpd/mqa.bin" --max_new_tokens 31 2>&1 | grep -q "kv cache: 6.00 KiB (6144 bytes: n_kv_head 1" &&
    ok || bad "the MQA cache is not 2 x 2 layers x 1 head x 12 x 32 positions x 4 B"

# gqa convert to MLA: the same fixture (head size 12) at its full rank 2 x 2 KV heads x 12 = 48, and at 8
expect 0 "(n_kv_head 2) -> $tmpd/mla48.bin (MLA, kv_lora_rank 48): parameters 56592 -> 66000, KV cache per token 384 B -> 384 B, K/V projection at rank 48: relative Frobenius error 0.0000 over 2 layers" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 48 --out "$tmpd/mla48.bin"
expect 0 "(MLA, kv_lora_rank 8): parameters 56592 -> 54400, KV cache per token 384 B -> 64 B, K/V projection at rank 8: relative Frobenius error 0.3996 over 2 layers (worst: layer 0, 0.4095)" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 8 --out "$tmpd/mla8.bin"
expect 1 "kv_lora_rank 49 exceeds the full rank of the stacked K/V projection, 2 x n_kv_head x head_size = 2 x 2 x 12 = 48" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 49 --out "$tmpd/x.bin"
expect 1 "give one of --n_kv_head G (grouped attention, G >= 1) or --kv_lora_rank R (MLA, R >= 1)" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 0 --out "$tmpd/x.bin"
expect 1 "option 'kv_lora_rank': -1 is out of range [0, 1048576]" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank -1 --out "$tmpd/x.bin"
expect 1 "(MLA, R >= 1), not both" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 8 --n_kv_head 1 --out "$tmpd/x.bin"
expect 1 "mla8.bin: the source is already MLA (kv_lora_rank 8); convert from a grouped (MHA/GQA) checkpoint" -- "$GQA" convert --ckpt "$tmpd/mla8.bin" --kv_lora_rank 4 --out "$tmpd/x.bin"
expect 1 "mla8.bin: the source is MLA (kv_lora_rank 8): n_kv_head conversion needs grouped attention" -- "$GQA" convert --ckpt "$tmpd/mla8.bin" --n_kv_head 1 --out "$tmpd/x.bin"
# the evaluation of `gqa train --max_iters 0`: the full-rank model has the source's val loss (to float
# round-off), the rank-8 one a higher one. Once `gqa sample` decodes MLA (built apart from the conversion),
# also check that its greedy text on mla48.bin is tiny_gqa_greedy.txt.
"$GQA" prepare --input "$(dirname "$0")/../data/shakespeare_char/input.txt" --out_dir "$tmpd/sc" > /dev/null 2>&1 &&
    ok || bad "prepare of Tiny Shakespeare failed"
val_loss() {
    "$GQA" train --data_dir "$tmpd/sc" --out_dir "$tmpd/ev_$2" --init_from="$1" --max_iters 0 --eval_iters 4 \
        --batch_size 4 --peak_gflops 1 > "$tmpd/ev_$2.out" 2>&1 || bad "evaluating $1 failed: $(tail -2 "$tmpd/ev_$2.out")"
    sed -n 's/^eval 0 train [0-9.]* val \([0-9.]*\)$/\1/p' "$tmpd/ev_$2/log.txt"
}
vl_src=$(val_loss "$fx/tiny_gqa.bin" src) vl48=$(val_loss "$tmpd/mla48.bin" r48) vl8=$(val_loss "$tmpd/mla8.bin" r8)
awk -v a="$vl_src" -v b="$vl48" -v c="$vl8" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d < 1e-5 && c > a + 0.1) }' &&
    ok || bad "val loss: source $vl_src, MLA full rank $vl48 (want the same), rank 8 $vl8 (want higher)"
# a rope source has no counterpart of MLA's decoupled rotary key
"$GQA" train --data_dir "$tmpd/sc" --out_dir "$tmpd/rope" --pos rope --n_layer 1 --n_head 2 --n_kv_head 2 --n_embd 8 \
    --block_size 8 --batch_size 2 --max_iters 0 --eval_iters 1 --peak_gflops 1 > /dev/null 2>&1 || bad "training a rope model failed"
expect 1 "conversion to MLA needs learned positions: the decoupled rotary key has no counterpart in the source" -- "$GQA" convert --ckpt "$tmpd/rope/ckpt.bin" --kv_lora_rank 4 --out "$tmpd/x.bin"
[ ! -e "$tmpd/x.bin" ] && [ ! -e "$tmpd/x.bin.tmp" ] && ok || bad "a refused MLA conversion wrote a file"
rm -rf "$tmpd"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
