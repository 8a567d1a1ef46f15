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
    "$GQA" sample --help | tr -s ' \n' ' ' | grep -q -- "(default: f32; one of f32, bf16, f16, q8)" &&
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
    [ "$(head -1 "$memcsv")" = "n_kv_head,ctx,kv_cache_bytes,kv_lora_rank,rope_head_dim" ] && [ "$(wc -l < "$memcsv")" -eq 10 ] &&
    grep -q '^1,1024,16777216,0,0$' "$memcsv" && [ ! -e "$memcsv.tmp" ] && ok || bad "mem CSV: $(cat "$memcsv")"
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
# the columns MLA added, after all of the above (readers by position keep working)
header="$header,kv_lora_rank,rope_head_dim,attention,decode_step_bytes,decode_step_flops,decode_roofline_tok_s,decode_roofline_frac,decode_bound"
# and --kv_budget's after those (empty without it)
header="$header,kv_budget_bytes,budget_batch,budget_max_ctx_batch1,budget_status,budget_kv_bytes,budget_seq_bytes,budget_batch_capped,budget_max_ctx_capped"
# and --weight_dtype's (empty without a decode shape)
header="$header,weight_dtype,weight_bytes"
# and the bandwidth beside each decode row (empty without the roofline), and the FLOPs its FMA side charges
header="$header,read_gbs,decode_step_fma_flops"
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
expect 0 "| 2 | 1 | 8 | f32 | f32 14.56 KiB | - |" -- "$GQA" bench $tiny --n_kv_head 2 --ctx 8 --batch_size 1 --measure=infer --roofline=false --csv "$tmpd/i.csv"
[ "$(rows "$tmpd/i.csv")" -eq 1 ] &&
    csv_all "$tmpd/i.csv" 'v("n_kv_head") == 2 && v("batch") == 1 && v("ctx") == 8 && v("kv_dtype") == "f32" &&
        empty("train_tok_s") && empty("train_tok_s_sd") && num("prefill_tok_s") && num("decode_tok_s") &&
        num("decode_tok_s_sd") && v("kv_cache_bytes") == 512 && num("peak_rss_bytes") && v("params") == 3728 &&
        empty("train_gflops") && empty("train_mfu") && num("decode_gbs") && empty("decode_bw_frac") &&
        empty("train_tok_s_median") && num("decode_tok_s_median") && v("decode_speedup") == "1.0000" &&
        empty("gemm_tok_s_median") && empty("train_gemm_frac")' && ok || bad "bench --measure=infer CSV: $(cat "$tmpd/i.csv")"
# the roofline (fixed sizes, ~1 s): its line, then MFU and the fraction of bandwidth in both table and CSV,
# a read bandwidth after each round of a decode row (2 rounds: 2 reads), and a last reading at the end of the run
# shellcheck disable=SC2086
expect 0 "roofline: sgemm peak" -- "$GQA" bench $tiny --n_kv_head 2 --ctx 8 --batch_size 1 --repeats 1 --rounds 2 \
    --csv "$tmpd/r.csv"
roofline_out=$out  # the MLA section below checks its roofline cell
case "$out" in *"roofline at the end: sgemm peak "*) ok ;;
    *) bad "bench prints no roofline at the end: $out" ;; esac
# the row's bandwidth is the median of its own readings (of two, their mean), and the table cell shows it:
# "0.8 (2% of 35.3)"
bws=$(echo "$out" | sed -n 's/^bench: read bandwidth now \([0-9.]*\) GB\/s$/\1/p' | tr '\n' ' ')
[ "$(echo "$bws" | wc -w)" -eq 2 ] && csv_all "$tmpd/r.csv" "num(\"read_gbs\") &&
    (v(\"read_gbs\") - ($(echo "$bws" | awk '{ print ($1 + $2) / 2 }')))^2 < 1e-5" &&
    echo "$out" | grep -q '^| GQA-2 | 2 | 1 | 8 | f32 | .* | [0-9.]* ([0-9]*% of [0-9.]*) | - | [0-9]*% of' &&
    ok || bad "bench row bandwidth: $bws $(cat "$tmpd/r.csv")"
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
expect 0 "| 1 | 1 | 8 | f32 | f32 14.03 KiB | - |" -- "$GQA" bench $tiny --n_kv_head 1 --ctx 8 --batch_size 1 --measure=infer,gemm --roofline=false \
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

# ---- MLA in info/mem/bench: multi-head latent attention (kv_lora_rank r > 0, rope_head_dim dR) caches
# n_layer x (r + dR) numbers per token; DeepSeek-V2's Table 1 calls that GQA with (r + dR) / (2 head_dim) groups.
# one_line STATUS NEEDLE -- cmd...: as expect, and the output is exactly one line
one_line() {
    expect "$@"
    [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && ok || bad "more than one line: $out"
}
# DeepSeek-V2's attention: 60 layers, 128 heads of 128 (n_embd 16384 = 128 x 128), d_c 512, d_R 64. Per token:
# MHA 2 L NH HS, GQA-8 2 L 8 HS, MQA 2 L HS, MLA L (d_c + d_R) numbers; 2 bytes each in f16, 4 in f32
ds="--n_layer 60 --n_head 128 --n_embd 16384 --n_kv_head 128,8,1 --kv_lora_rank 512 --rope_head_dim 64 --pos rope"
for e in 2 4; do
    dt=$([ $e = 2 ] && echo f16 || echo f32)
    # shellcheck disable=SC2086
    out=$("$GQA" mem $ds --kv_dtype $dt 2>&1) || bad "mem DeepSeek-V2 $dt failed: $out"
    for row in "128 | MHA | $((2 * 60 * 128 * 128 * e))" "8 | GQA | $((2 * 60 * 8 * 128 * e))" "1 | MQA | $((2 * 60 * 1 * 128 * e))" \
        "128 | MLA (r 512, dR 64) | $((60 * (512 + 64) * e))"; do
        # "| n_kv_head | attention | X.XX MB (BYTES B) |"
        echo "$out" | grep -q "^| ${row% *} [0-9.]* MB (${row##* } B) |" && ok || bad "mem DeepSeek-V2 $dt: no row '| $row B': $out"
    done
    echo "$out" | grep -q '^| 128 | MLA (r 512, dR 64) | .* | 56.89x | .* | 2.25 |$' && ok ||
        bad "mem DeepSeek-V2 $dt: MLA is not 56.89x smaller than MHA, as GQA with 2.25 groups: $out"
done
[ $((60 * (512 + 64) * 2)) -eq 69120 ] && [ $((2 * 60 * 128 * 128 * 2)) -eq 3932160 ] && ok || bad "shell arithmetic"
# shellcheck disable=SC2086
expect 0 "| 128 | MLA (r 512, dR 64) | 0.07 MB (69120 B) | 283.12 MB (270.00 MiB) | 56.89x" -- "$GQA" mem $ds --kv_dtype f16
# shellcheck disable=SC2086
expect 0 "| 8 | GQA | 0.25 MB (245760 B) | 1.01 GB (960.00 MiB) | 16.00x" -- "$GQA" mem $ds --kv_dtype f16
case "$out" in *"| 128 | MHA | 3.93 MB (3932160 B) | 16.11 GB (15.00 GiB) | 1.00x | 0 B |"*"| 128 |"*) ok ;;
    *) bad "mem DeepSeek-V2: the MHA row: $out" ;; esac
case "$out" in *"pos rope; MLA rope_head_dim 64, latent_norm 1;"*) ok ;; *) bad "mem does not name the MLA shape: $out" ;; esac
# d_c = 4 d_h and d_R = d_h / 2 (the default with rope) is GQA with 2.25 groups at any head size, and has its bytes:
# head_dim 64, 10 layers: MLA 10 x (256 + 32) x 4 = 11520 B = 2 x 10 x 2.25 x 64 x 4
expect 0 "| 8 | MLA (r 256, dR 32) | 0.01 MB (11520 B) |" -- "$GQA" mem --n_layer 10 --n_head 8 --n_embd 512 --n_kv_head 8 \
    --kv_lora_rank 256 --pos rope --kv_dtype f32
echo "$out" | grep -q '^| 8 | MLA (r 256, dR 32) | .* | 3.56x | .* | 2.25 |$' && ok || bad "2.25 groups at head_dim 64: $out"
[ $((10 * (256 + 32) * 4)) -eq $((2 * 10 * 64 * 4 * 9 / 4)) ] && ok || bad "11520 is not GQA-2.25's bytes"
# learned positions: no decoupled key, dR = 0: r = 2 head_dim is GQA-2 exactly; the grouped rows say n_kv_head
expect 0 "| 8 | MLA (r 256, dR 0) | 0.01 MB (10240 B) |" -- "$GQA" mem --n_layer 10 --n_head 8 --n_embd 512 --n_kv_head 2 \
    --kv_lora_rank 256 --kv_dtype f32
echo "$out" | grep -q '^| 8 | MLA (r 256, dR 0) | .* | 2 |$' && echo "$out" | grep -q '^| 2 | GQA | 0.01 MB (10240 B) | .* | 2 |$' &&
    echo "$out" | grep -q '^| 8 | MHA | .* | 8 |$' && ok || bad "as GQA groups, learned: $out"
# every MLA row of a list is L (r + dR) elem bytes per token, and the CSV gives them with their r and dR
memcsv=$(mktemp /tmp/gqa_mem_XXXXXX)
"$GQA" mem --n_kv_head 8 --kv_lora_rank 512,128,8 --pos rope --rope_head_dim 64 --ctx 512 --csv "$memcsv" > "$memcsv.md" 2>/dev/null ||
    bad "mem with a kv_lora_rank list failed"
for r in 512 128 8; do
    grep -q "^| 32 | MLA (r $r, dR 64) | [0-9.]* MB ($((32 * (r + 64) * 2)) B) |" "$memcsv.md" && ok || bad "mem MLA r $r bytes: $(cat "$memcsv.md")"
    grep -q "^32,512,$((32 * (r + 64) * 2 * 512)),$r,64\$" "$memcsv" && ok || bad "mem CSV MLA r $r: $(cat "$memcsv")"
done
[ "$(head -1 "$memcsv")" = "n_kv_head,ctx,kv_cache_bytes,kv_lora_rank,rope_head_dim" ] && grep -q '^8,256,33554432,0,0$' "$memcsv" &&
    [ "$(wc -l < "$memcsv")" -eq 11 ] && ok || bad "mem CSV columns: $(cat "$memcsv")"
rm -f "$memcsv" "$memcsv.md"
if command -v gnuplot >/dev/null; then
    # shellcheck disable=SC2086
    GQA=$GQA sh "$(dirname "$0")/../scripts/plot_mem.sh" "$tmpd/mla.png" $ds --ctx 8192 > /dev/null 2>&1 && [ -s "$tmpd/mla.png" ] &&
        ok || bad "plot_mem.sh with MLA rows made no PNG"
fi
# info: the kind, r, dR, the per-token formula and the GQA it equals; the parameter count as ref_gpt.py builds it
# (wte 65 x 512; per layer q 8 x 96 x 512, dkv 288 x 512, kvnw 256, ukv 1024 x 256, attproj, fc, fcproj, 2 LN, biases)
mla="--n_layer 10 --n_head 8 --n_kv_head 8 --n_embd 512 --kv_lora_rank 256 --pos rope"
# shellcheck disable=SC2086
expect 0 "attention: MLA, head_dim 64, 8 query heads" -- "$GQA" info $mla
for k in "pos=rope kv_lora_rank=256 rope_head_dim=32 latent_norm=1" "latent of kv_lora_rank 256 (RMSNorm); query/key heads 64 + rope_head_dim 32 = 96 wide" \
    "kv cache per token: 11520 bytes float32 (n_layer * (kv_lora_rank + rope_head_dim) * 4 = 10 * (256 + 32) * 4)" \
    "kv cache as GQA: equal to GQA with 2.25 groups" "parameters: 31729984" "at block_size 256: 2949120 bytes" "MHA would need 10.00 MiB"; do
    case "$out" in *"$k"*) ok ;; *) bad "info MLA lacks '$k': $out" ;; esac
done
# shellcheck disable=SC2086
expect 0 "kv cache per token: 10240 bytes float32 (n_layer * (kv_lora_rank + rope_head_dim) * 4 = 10 * (256 + 0) * 4)" -- \
    "$GQA" info $mla --pos learned
case "$out" in *"equal to GQA with 2 groups"*) ok ;; *) bad "info MLA learned: $out" ;; esac
# shellcheck disable=SC2086
expect 0 "latent of kv_lora_rank 256 (no norm)" -- "$GQA" info $mla --latent_norm=0 --rope_head_dim 16
case "$out" in *"parameters: $((31729984 - 10 * 256 - 10 * 8 * 16 * 513 - 10 * 16 * 513))"*"equal to GQA with 2.125 groups"*) ok ;;
    *) bad "info MLA without the norm, dR 16: $out" ;; esac
# the shape of a checkpoint: a one-step MLA model trained here, and the grouped fixture
head -c 20000 "$(dirname "$0")/../data/shakespeare_char/input.txt" > "$tmpd/small.txt"
"$GQA" prepare --input "$tmpd/small.txt" --out_dir "$tmpd/data" > /dev/null 2>&1 &&
    "$GQA" train --data_dir "$tmpd/data" --out_dir "$tmpd/mla" --n_layer 1 --n_head 4 --n_kv_head 4 --n_embd 16 --block_size 16 \
        --batch_size 2 --max_iters 1 --eval_iters 1 --eval_interval 1 --kv_lora_rank 8 --pos rope --threads 1 > "$tmpd/mla.log" 2>&1 &&
    ok || bad "a one-step MLA training failed: $(tail -3 "$tmpd/mla.log")"
expect 0 "kv_lora_rank=8 rope_head_dim=2 latent_norm=1" -- "$GQA" info --ckpt "$tmpd/mla/ckpt.bin"
case "$out" in *"checkpoint: $tmpd/mla/ckpt.bin"*"kv cache per token: 40 bytes float32"*"equal to GQA with 1.25 groups"*) ok ;;
    *) bad "info --ckpt MLA: $out" ;; esac
expect 0 "attention: GQA, head_dim 12, 2 query heads per KV head" -- "$GQA" info --ckpt "$(dirname "$0")/fixtures/tiny_gqa.bin"
one_line 1 "--n_head: with --ckpt the shape is the checkpoint's" -- "$GQA" info --ckpt "$tmpd/mla/ckpt.bin" --n_head 4
one_line 1 "cannot open '$tmpd/none.bin'" -- "$GQA" info --ckpt "$tmpd/none.bin"
# sample names what its cache holds
"$GQA" sample --ckpt "$tmpd/mla/ckpt.bin" --max_new_tokens 5 --prompt "A" > /dev/null 2> "$tmpd/mla.err"
grep -q "bytes: MLA kv_lora_rank 8 + rope_head_dim 2, 6 positions, 1 sequence, f32)" "$tmpd/mla.err" && ok ||
    bad "sample's kv cache line does not name MLA: $(cat "$tmpd/mla.err")"
# ... and holds 1 layer x 6 positions x (8 + 2) numbers x 4 B
grep -q "kv cache: 240 B (240 bytes: MLA kv_lora_rank 8" "$tmpd/mla.err" && ok || bad "sample MLA cache bytes: $(cat "$tmpd/mla.err")"
# bench: one list of settings, the n_kv_head rows then the MLA rows (n_kv_head = n_head), new columns at the end
# shellcheck disable=SC2086
expect 0 "| MLA-8 | 4 | - | - | - |" -- "$GQA" bench $tiny --n_kv_head 4,2 --kv_lora_rank 8,4 --measure=train --roofline=false \
    --csv "$tmpd/mla.csv"
case "$out" in *"| MHA | 4 | - |"*"| GQA-2 | 2 | - |"*"| MLA-8 | 4 | - |"*"| MLA-4 | 4 | - |"*) ok ;; *) bad "bench MLA row order: $out" ;; esac
if [ "$(head -1 "$tmpd/mla.csv")" = "$header" ] && [ "$(rows "$tmpd/mla.csv")" -eq 4 ] &&
    csv_has "$tmpd/mla.csv" 'v("n_kv_head") == 4 && v("kv_lora_rank") == 0 && v("rope_head_dim") == 0 && v("attention") == "MHA" && v("params") == 4000' &&
    csv_has "$tmpd/mla.csv" 'v("n_kv_head") == 2 && v("kv_lora_rank") == 0 && v("attention") == "GQA-2" && v("params") == 3728' &&
    csv_has "$tmpd/mla.csv" 'v("n_kv_head") == 4 && v("kv_lora_rank") == 8 && v("rope_head_dim") == 0 && v("attention") == "MLA-8" && v("params") == 3888' &&
    csv_has "$tmpd/mla.csv" 'v("n_kv_head") == 4 && v("kv_lora_rank") == 4 && v("attention") == "MLA-4" && v("params") == 3688' &&
    csv_all "$tmpd/mla.csv" 'num("train_tok_s") && empty("decode_tok_s") && empty("decode_step_bytes") && empty("decode_bound")'
then ok; else bad "bench MLA CSV: $(cat "$tmpd/mla.csv")"; fi
# with rope, dR defaults to head_size / 2 (2 here) and the MLA settings say so in the header line
# shellcheck disable=SC2086
expect 0 "pos=rope rope_theta=10000 rope_head_dim=2 latent_norm=1;" -- "$GQA" bench $tiny --n_kv_head 4 --kv_lora_rank 8 --pos rope \
    --measure=train,gemm --repeats 1 --roofline=false --csv "$tmpd/mlar.csv"
csv_has "$tmpd/mlar.csv" 'v("kv_lora_rank") == 8 && v("rope_head_dim") == 2 && v("params") == 3546 && num("train_tok_s") &&
    num("gemm_tok_s_median")' && ok || bad "bench MLA rope CSV: $(cat "$tmpd/mlar.csv")"
# the roofline of a decode row (the grouped one measured above with --roofline): the larger of the FMA time at the
# peak and the read time at the bandwidth. n_kv_head 2, batch 1, ctx 8, f32: bytes 4 x (3728 - 31 x 16) weights +
# 8 x 64 cache; FLOPs 2 x (16 x 32 + 256 + 1024 + 1024 + 11 x 16) MACs + 2 x 4 heads x 8 x 4 x 2
csv_all "$tmpd/r.csv" "v(\"decode_step_bytes\") == $((4 * (3728 - 31 * 16) + 8 * 64)) &&
    v(\"decode_step_flops\") == $((2 * (16 * 32 + 256 + 1024 + 1024 + 11 * 16) + 2 * 4 * 8 * 4 * 2)) && v(\"kv_lora_rank\") == 0 &&
    v(\"attention\") == \"GQA-2\"" && ok || bad "bench decode step bytes/FLOPs: $(cat "$tmpd/r.csv")"
# peak = train_gflops / train_mfu and bandwidth = decode_gbs / decode_bw_frac (the CSV rounds them: 1% slack)
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { peak = $(c["train_gflops"]) / $(c["train_mfu"]) * 1e9; bw = $(c["decode_gbs"]) / $(c["decode_bw_frac"]) * 1e9
      f = $(c["decode_step_fma_flops"]) / peak; b = $(c["decode_step_bytes"]) / bw; t = f > b ? f : b
      if ($(c["decode_step_fma_flops"]) != $(c["decode_step_flops"])) bad = 1  # f32 weights: every MAC an FMA lane
      if (bw < 0.99 * $(c["read_gbs"]) * 1e9 || bw > 1.01 * $(c["read_gbs"]) * 1e9) bad = 1
      want = $(c["batch"]) / t; got = $(c["decode_roofline_tok_s"])
      frac = $(c["decode_tok_s"]) / got
      if (got < 0.99 * want || got > 1.01 * want) bad = 1
      if ((frac - $(c["decode_roofline_frac"])) ^ 2 > 1e-8 * frac * frac + 1e-8) bad = 1
      if ($(c["decode_bound"]) != (f > b ? "fma" : "read")) bad = 1
      n++ }
    END { exit bad || n != 1 }' "$tmpd/r.csv" && ok || bad "bench decode roofline: $(cat "$tmpd/r.csv")"
echo "$roofline_out" | grep -q '^| GQA-2 | 2 | 1 | 8 | f32 | .* | [0-9]*% of [0-9]* (\(read\|fma\)) |$' && ok ||
    bad "bench table lacks the roofline cell: $roofline_out"
# MLA decode rows: the cache of r + dR numbers per position and the absorbed attention's FLOPs
# shellcheck disable=SC2086
expect 0 "| MLA-8 | 4 | 2 | 8 | f32 |" -- "$GQA" bench $tiny --n_kv_head 4 --kv_lora_rank 8 --ctx 8 --batch_size 2 --measure=infer \
    --roofline=false --csv "$tmpd/mlai.csv"
# 1 layer x 2 sequences x 8 positions x 8 numbers x 4 B; weights 4 x (3888 - 31 x 16); FLOPs: 2 tokens x 2 x
# (q 16 x 16 + dkv 16 x 8 + 256 + 1024 + 1024 + 11 x 16) + 2 x 2 x 4 heads x 8 x (8 + 8) + 2 x 2 x 4 x 4 x 8 x 2
csv_has "$tmpd/mlai.csv" "v(\"kv_lora_rank\") == 8 && v(\"batch\") == 2 && v(\"kv_cache_bytes\") == 512 &&
    v(\"decode_step_bytes\") == $((4 * (3888 - 31 * 16) + 512)) &&
    v(\"decode_step_flops\") == $((2 * 2 * (256 + 128 + 256 + 1024 + 1024 + 176) + 2 * 2 * 4 * 8 * 16 + 2 * 2 * 4 * 4 * 8 * 2)) &&
    num(\"decode_tok_s\") && v(\"decode_speedup\") != \"\"" && ok || bad "bench MLA decode CSV: $(cat "$tmpd/mlai.csv")"
# bad values: one line each
one_line 1 "option 'kv_lora_rank': -1 is out of range [1, 1048576]" -- "$GQA" bench --kv_lora_rank -1
one_line 1 "option 'kv_lora_rank': -1 is out of range [1, 1048576]" -- "$GQA" mem --kv_lora_rank -1
one_line 1 "option 'kv_lora_rank': -1 is out of range [0, 1048576]" -- "$GQA" info --kv_lora_rank -1
# shellcheck disable=SC2086
one_line 1 "kv_lora_rank 8: MLA with pos=rope needs an even rope_head_dim >= 2" -- "$GQA" bench $tiny --n_kv_head 4 --kv_lora_rank 8 --pos rope --rope_head_dim 3
one_line 1 "kv_lora_rank 512: MLA with pos=rope needs an even rope_head_dim >= 2" -- "$GQA" mem --kv_lora_rank 512 --pos rope --rope_head_dim 63
one_line 1 "MLA with pos=rope needs an even rope_head_dim >= 2 (the decoupled rotary part; DeepSeek-V2 uses head_size/2), got 5" -- \
    "$GQA" info --kv_lora_rank 64 --pos rope --rope_head_dim 5
one_line 1 "kv_lora_rank 512: rope_head_dim is MLA's decoupled rotary part (kv_lora_rank > 0 with pos=rope); it must be 0 here, got 64" -- \
    "$GQA" mem --kv_lora_rank 512 --rope_head_dim 64
one_line 1 "rope_head_dim 64 is for the MLA rows, and there are none: give --kv_lora_rank too" -- "$GQA" mem --rope_head_dim 64
one_line 1 "rope_head_dim 2 is for the MLA settings, and there are none: give --kv_lora_rank too" -- "$GQA" bench --rope_head_dim 2
one_line 1 "n_kv_head must equal n_head=6, got 2" -- "$GQA" info --kv_lora_rank 64 --n_kv_head 2
for c in bench mem info; do
    for o in kv_lora_rank rope_head_dim latent_norm; do "$GQA" "$c" --help | grep -q "^  --$o " && ok || bad "gqa $c --help lacks --$o"; done
done

# ---- 16- and 8-bit weights (--weight_dtype). sample: the fixture's golden greedy text with every weight dtype
# (its 200 tokens agree), the weights' bytes (f32: 4 per parameter; bf16 about half; q8 less: this model's rows
# of 24 are padded to a block of 32), a bad name refused
wfx=$(dirname "$0")/fixtures
wparams=$("$GQA" info --ckpt "$wfx/tiny_gqa.bin" | sed -n 's/^parameters: \([0-9]*\) .*/\1/p')
for d in f32 bf16 f16 q8; do
    "$GQA" sample --ckpt "$wfx/tiny_gqa.bin" --temperature 0 --max_new_tokens 200 --prompt "ROMEO:" --weight_dtype "$d" \
        2> "$tmpd/w_$d.err" | cmp -s - "$wfx/tiny_gqa_greedy.txt" && ok || bad "sample --weight_dtype $d: greedy text differs"
    eval "wb_$d=\$(sed -n 's/^weights: .* (\([0-9]*\) bytes, $d.*/\1/p' \"\$tmpd/w_$d.err\")"
done
# shellcheck disable=SC2154
[ "$wb_f32" = $((4 * wparams)) ] && [ "$wb_bf16" = "$wb_f16" ] && [ "$wb_bf16" -lt $((wb_f32 * 55 / 100)) ] &&
    [ "$wb_q8" -lt $((wb_bf16 * 75 / 100)) ] && grep -q "kernel " "$tmpd/w_q8.err" && ok ||
    bad "sample weight bytes: f32 $wb_f32 (params $wparams), bf16 $wb_bf16, f16 $wb_f16, q8 $wb_q8"
one_line 1 "option 'weight_dtype': 'int4' is not one of f32, bf16, f16, q8" -- \
    "$GQA" sample --ckpt "$wfx/tiny_gqa.bin" --weight_dtype int4
# every weight dtype with every cache dtype: 50 tokens past the 32-token context (the re-prefill path), 2 sequences
for d in f32 bf16 f16 q8; do for k in f32 bf16 f16; do
    n=$("$GQA" sample --ckpt "$wfx/tiny_gqa.bin" --weight_dtype "$d" --kv_dtype "$k" --max_new_tokens 50 --num_samples 2 \
        --prompt "ROMEO:" 2> /dev/null | grep -c "^ROMEO:") && [ "$n" -eq 2 ] && ok || bad "sample --weight_dtype $d --kv_dtype $k"
done; done
expect 0 "weights for inference: f32 " -- "$GQA" info
case "$out" in *", bf16 "*", f16 "*", q8 "*) ok ;; *) bad "info weights line: $out" ;; esac
expect 0 "weight_dtype q8 (1.125 bytes a weight" -- "$GQA" mem --weight_dtype q8
# bench: one row per weight dtype; the CSV's weight columns; with rope (no wpe) a decode step reads every weight, so
# the step bytes of two dtypes differ by their weight bytes; every dtype with the 16-bit cache
# shellcheck disable=SC2086
expect 0 "| MQA | 1 | 1 | 8 | bf16 | q8 " -- "$GQA" bench $tiny --pos rope --n_kv_head 4,1 --ctx 8 --batch_size 1 \
    --kv_dtype f32,bf16 --weight_dtype f32,bf16,f16,q8 --measure infer --repeats 1 --roofline=false --csv "$tmpd/wd.csv"
[ "$(rows "$tmpd/wd.csv")" -eq 16 ] && csv_all "$tmpd/wd.csv" 'num("decode_tok_s") && num("weight_bytes") && v("weight_dtype") != ""' &&
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        { k = $(c["n_kv_head"]) "," $(c["kv_dtype"]); w[k "," $(c["weight_dtype"])] = $(c["weight_bytes"]);
          s[k "," $(c["weight_dtype"])] = $(c["decode_step_bytes"]) }
        END { n = 0; for (x in w) { split(x, p, ","); f = p[1] "," p[2] ",f32"
                  if (s[f] - s[x] != w[f] - w[x]) { print "step bytes " x; exit 1 } n++ }
              exit !(n == 16 && w["4,f32,bf16"] < w["4,f32,f32"] / 1.8 && w["4,f32,q8"] < w["4,f32,bf16"]) }' "$tmpd/wd.csv" &&
    ok || bad "bench --weight_dtype CSV: $(cat "$tmpd/wd.csv")"
# the roofline's FMA side charges the linear FLOPs in full with f32 and f16 weights, half with bf16 (vdpbf16ps: 2
# multiply-adds a lane) and a quarter with q8 (vpdpbusd: 4), the attention's in full: so flops - fma_flops is
# half the linear FLOPs with bf16 and three quarters with q8
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { k = $(c["n_kv_head"]) "," $(c["kv_dtype"]); d[k "," $(c["weight_dtype"])] = $(c["decode_step_flops"]) - $(c["decode_step_fma_flops"]) }
    END { n = 0; for (x in d) { split(x, p, ","); if (p[3] != "q8") continue; b = d[p[1] "," p[2] ",bf16"]
              if (!(d[x] > 0 && 3 * b == 2 * d[x] && d[p[1] "," p[2] ",f32"] == 0 && d[p[1] "," p[2] ",f16"] == 0)) exit 1
              n++ }
          exit n != 4 }' "$tmpd/wd.csv" && ok || bad "bench decode_step_fma_flops by weight dtype: $(cat "$tmpd/wd.csv")"
# peak RSS shrinks with the weights: cfg-d at a tiny context, f32 against q8 (the float32 copy is freed)
"$GQA" bench --n_kv_head 8 --ctx 8 --batch_size 1 --decode_tokens 2 --weight_dtype f32,q8 --measure infer --repeats 1 \
    --roofline=false --csv "$tmpd/wr.csv" > /dev/null 2>&1 &&
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
        { r[$(c["weight_dtype"])] = $(c["peak_rss_bytes"]); w[$(c["weight_dtype"])] = $(c["weight_bytes"]) }
        END { exit !(r["f32"] - r["q8"] > 0.8 * (w["f32"] - w["q8"])) }' "$tmpd/wr.csv" &&
    ok || bad "bench peak RSS does not shrink with q8 weights: $(cat "$tmpd/wr.csv")"

# ---- bench --kv_budget: capacity at a memory budget. Every decode row runs at the largest batch B whose exact cache
# of T = ctx + decode_tokens positions per sequence fits the budget: B x (bytes of one sequence) <= budget, and B + 1
# exceeds it. 2 layers, 4 heads of 4, rope (so MLA's dR = 2), 4 decode steps; one sequence of T positions holds
#   grouped 2 L NKV HS T elem, MLA L (r + dR) T elem
# bytes. At 3000 bytes MHA f32 (2 x 2 x 4 x 4 x 12 x 4 = 3072), MHA bf16 and GQA-2 f32 at ctx 24 (28 positions:
# 3584) do not fit: no run, a row.
# shellcheck disable=SC2086
"$GQA" bench $tiny --n_layer 2 --pos rope --n_kv_head 4,2,1 --kv_lora_rank 8,4 --ctx 8,24 --kv_dtype f32,bf16 \
    --kv_budget 3000 --measure infer --repeats 1 --roofline=false --csv "$tmpd/kb.csv" > "$tmpd/kb.out" 2> "$tmpd/kb.err" &&
    ok || bad "bench --kv_budget failed: $(cat "$tmpd/kb.err")"
if [ "$(head -1 "$tmpd/kb.csv")" = "$header" ] && [ "$(rows "$tmpd/kb.csv")" -eq 20 ]; then ok
else bad "bench --kv_budget CSV header or row count: $(cat "$tmpd/kb.csv")"; fi
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { L = 2; HS = 4; T = $(c["ctx"]) + 4; e = $(c["kv_dtype"]) == "f32" ? 4 : 2; budget = $(c["kv_budget_bytes"])
      r = $(c["kv_lora_rank"]); pos = r > 0 ? L * (r + $(c["rope_head_dim"])) * e : 2 * L * $(c["n_kv_head"]) * HS * e
      seq = pos * T; B = $(c["budget_batch"]); fits = $(c["budget_status"])
      if (budget != 3000 || (r > 0 && $(c["rope_head_dim"]) != 2)) { print "budget or dR: " $0; bad = 1 }
      if ($(c["budget_seq_bytes"]) != seq || $(c["budget_kv_bytes"]) != B * seq) { print "bytes: " $0; bad = 1 }
      # the largest batch: B fits, B + 1 does not
      if (B * seq > budget || (B + 1) * seq <= budget || $(c["budget_batch_capped"]) != 0) { print "batch: " $0; bad = 1 }
      # fits: measured at that batch; does not fit: no batch, no measurement
      if (B > 0 && (fits != "fits" || $(c["batch"]) != B || $(c["decode_tok_s"]) !~ /^[0-9.]+$/ ||
                    $(c["kv_cache_bytes"]) != B * pos * $(c["ctx"]))) { print "fits row: " $0; bad = 1 }
      if (B == 0 && (fits != "does_not_fit" || $(c["batch"]) != "" || $(c["decode_tok_s"]) != "")) { print "no-fit row: " $0; bad = 1 }
      nofit += B == 0
      # the longest context at batch 1: floor(budget / bytes per position), at most block_size 32
      m = int(budget / pos); capped = m > 32; if (capped) m = 32
      if ($(c["budget_max_ctx_batch1"]) != m || $(c["budget_max_ctx_capped"]) != capped) { print "max ctx: " $0; bad = 1 }
      n++ }
    END { exit bad || n != 20 || nofit != 4 }' "$tmpd/kb.csv" > "$tmpd/kb.awk" && ok || bad "bench --kv_budget rows: $(cat "$tmpd/kb.awk")"
# spot values: MQA f32 ctx 8 holds 3000 / (2 x 2 x 1 x 4 x 12 x 4 = 768) = 3 sequences, MLA-4 bf16 ctx 8
# 3000 / (2 x 6 x 12 x 2 = 288) = 10; the table names the batch with its cache, the longest context and "does not fit"
csv_has "$tmpd/kb.csv" 'v("attention") == "MQA" && v("ctx") == 8 && v("kv_dtype") == "f32" && v("batch") == 3' &&
    csv_has "$tmpd/kb.csv" 'v("attention") == "MLA-4" && v("ctx") == 8 && v("kv_dtype") == "bf16" && v("batch") == 10' &&
    ok || bad "bench --kv_budget spot batches: $(cat "$tmpd/kb.csv")"
grep -q '^| MQA | 1 | 3 | 8 | f32 | .* | 3 (2.25 KiB) | 32 (block_size) |$' "$tmpd/kb.out" &&
    grep -q '^| MHA | 4 | - | 8 | f32 | f32 [0-9.]* KiB | - | - | - | .* | does not fit (1 sequence: 3.00 KiB) | 11 |$' "$tmpd/kb.out" &&
    grep -q '^kv_budget=2.93 KiB (3000 bytes): ' "$tmpd/kb.out" && ok || bad "bench --kv_budget table: $(cat "$tmpd/kb.out")"
# a budget the machine cannot hold: the batch stops at 2^20 sequences (cfg-d MHA, 12.75 MiB a sequence at ctx 512) and
# the row is refused, not run, with no measurement
expect 0 "| MHA | 8 | - | 512 | f32 | f32 80.66 MiB | - | - | - |" -- "$GQA" bench --n_kv_head 8 --ctx 512 --kv_budget 1024TiB --measure infer \
    --roofline=false --csv "$tmpd/km.csv"
case "$out" in *"bench: n_kv_head"*) bad "bench ran a row beyond memory: $out" ;;
    *"| exceeds memory: 1048576 (12.75 TiB, at the cap) needs 12.7"*" TiB of "*" available | 4096 (block_size) |"*) ok ;;
    *) bad "bench --kv_budget beyond memory: $out" ;; esac
csv_all "$tmpd/km.csv" 'v("budget_status") == "exceeds_memory" && v("budget_batch") == 1048576 && v("budget_batch_capped") == 1 &&
    empty("batch") && empty("decode_tok_s") && v("budget_max_ctx_batch1") == 4096 && v("budget_max_ctx_capped") == 1' &&
    ok || bad "bench --kv_budget beyond memory CSV: $(cat "$tmpd/km.csv")"
# bad sizes: one line each, exit 1
for s in abc 12abc -5 0 0MiB 1.5 2G "2 GiB" 1e9 1.MiB 5EiB 99999999999999999999999; do
    one_line 1 "kv_budget '$s'" -- "$GQA" bench --kv_budget "$s"
done
one_line 1 "kv_budget '2G' is not a size: give bytes or a number with a unit: B, kB, MB, GB, TB (1000s), KiB, MiB, GiB, TiB (1024s), e.g. 512MiB or 1.5GB" -- "$GQA" bench --kv_budget 2G
one_line 1 "kv_budget sizes the decode rows: give infer in --measure too" -- "$GQA" bench --kv_budget 1GiB --measure train
# the plot of a budget CSV: throughput at the budget and the batch, against context
if command -v gnuplot > /dev/null; then
    sh "$(dirname "$0")/../scripts/plot_bench.sh" "$tmpd/kb.csv" "$tmpd/kb" > /dev/null 2>&1 && [ -s "$tmpd/kb-budget.png" ] &&
        [ ! -e "$tmpd/kb-decode.png" ] && ok || bad "plot_bench.sh made no budget PNG"
fi

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
expect 1 "give one of --n_kv_head G (grouped attention, G >= 1), --kv_lora_rank R (MLA, R >= 1) or --weight_dtype bf16|f16|q8" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 0 --out "$tmpd/x.bin"
expect 1 "option 'kv_lora_rank': -1 is out of range [0, 1048576]" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank -1 --out "$tmpd/x.bin"
expect 1 "or --weight_dtype bf16|f16|q8, not more" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --kv_lora_rank 8 --n_kv_head 1 --out "$tmpd/x.bin"
expect 1 "mla8.bin: the source is already MLA (kv_lora_rank 8); convert from a grouped (MHA/GQA) checkpoint" -- "$GQA" convert --ckpt "$tmpd/mla8.bin" --kv_lora_rank 4 --out "$tmpd/x.bin"
expect 1 "mla8.bin: the source is MLA (kv_lora_rank 8): n_kv_head conversion needs grouped attention" -- "$GQA" convert --ckpt "$tmpd/mla8.bin" --n_kv_head 1 --out "$tmpd/x.bin"
# the evaluation of `gqa train --max_iters 0`: the full-rank model has the source's val loss (to float
# round-off), the rank-8 one a higher one; the full-rank model's greedy text is the source's, through the
# absorbed decode over the latent cache.
"$GQA" sample --ckpt "$tmpd/mla48.bin" --temperature 0 --max_new_tokens 200 --prompt "ROMEO:" 2>/dev/null |
    cmp -s - "$fx/tiny_gqa_greedy.txt" && ok || bad "the full-rank MLA conversion's greedy text differs from the source's"
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

# gqa convert --weight_dtype: a smaller checkpoint for inference only, its matrices as sample's
# --weight_dtype converts them at load (the same text), refused by training and by the other conversions
for d in bf16 f16 q8; do
    expect 0 "tiny_gqa.bin (221.38 KiB) -> $tmpd/w_$d.bin (" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --weight_dtype $d --out "$tmpd/w_$d.bin"
    a=$("$GQA" sample --ckpt "$fx/tiny_gqa.bin" --weight_dtype $d --num_samples 3 --max_new_tokens 100 --seed 7 2>/dev/null)
    b=$("$GQA" sample --ckpt "$tmpd/w_$d.bin" --num_samples 3 --max_new_tokens 100 --seed 7 2>/dev/null)
    c=$("$GQA" sample --ckpt "$tmpd/w_$d.bin" --weight_dtype $d --num_samples 3 --max_new_tokens 100 --seed 7 2>/dev/null)
    expect 0 "): $d weights, for inference only" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --weight_dtype $d --out "$tmpd/w_$d.bin"
    [ ${#a} -gt 300 ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && ok || bad "sampling the $d checkpoint differs from --weight_dtype $d at load"
done
expect 0 "weights: 79.20 KiB (81096 bytes, q8, kernel " -- "$GQA" sample --ckpt "$tmpd/w_q8.bin" --max_new_tokens 4
expect 0 "at the peak (loading reads the q8 checkpoint)" -- "$GQA" sample --ckpt "$tmpd/w_q8.bin" --max_new_tokens 4
f32b=$(wc -c < "$fx/tiny_gqa.bin") q8b=$(wc -c < "$tmpd/w_q8.bin") bf16b=$(wc -c < "$tmpd/w_bf16.bin")
[ "$q8b" -lt $((f32b / 3)) ] && [ "$bf16b" -lt $((f32b * 55 / 100)) ] && ok || bad "sizes: f32 $f32b, bf16 $bf16b, q8 $q8b bytes"
expect 0 "checkpoint: $tmpd/w_f16.bin (weights in f16, for inference only: gqa sample reads it, training does not)" -- "$GQA" info --ckpt "$tmpd/w_f16.bin"
expect 1 "w_q8.bin: the weights are already q8 (gqa convert --weight_dtype): --weight_dtype bf16 would convert them again; give it the float32 checkpoint" -- "$GQA" sample --ckpt "$tmpd/w_q8.bin" --weight_dtype bf16
expect 1 "w_q8.bin: the weights are q8, for inference only (gqa convert --weight_dtype): training needs the float32 checkpoint it was converted from" -- "$GQA" train --data_dir "$tmpd/sc" --out_dir "$tmpd/tq" --init_from="$tmpd/w_q8.bin" --max_iters 1 --peak_gflops 1
expect 1 "w_bf16.bin: the weights are bf16, for inference only: convert needs a float32 checkpoint (ckpt.bin or best.bin)" -- "$GQA" convert --ckpt "$tmpd/w_bf16.bin" --n_kv_head 1 --out "$tmpd/x.bin"
expect 1 "w_bf16.bin: the weights are bf16, for inference only: convert needs a float32 checkpoint" -- "$GQA" convert --ckpt "$tmpd/w_bf16.bin" --weight_dtype q8 --out "$tmpd/x.bin"
expect 1 "option 'weight_dtype': 'f32' is not one of none, bf16, f16, q8" -- "$GQA" convert --ckpt "$fx/tiny_gqa.bin" --weight_dtype f32 --out "$tmpd/x.bin"
[ ! -e "$tmpd/x.bin" ] && [ ! -e "$tmpd/x.bin.tmp" ] && ok || bad "a refused weight conversion wrote a file"
# a refused conversion leaves an existing output as it was
cp "$tmpd/w_f16.bin" "$tmpd/keep.bin"
expect 1 "for inference only: convert needs a float32 checkpoint" -- "$GQA" convert --ckpt "$tmpd/w_q8.bin" --weight_dtype f16 --out "$tmpd/keep.bin"
cmp -s "$tmpd/w_f16.bin" "$tmpd/keep.bin" && ok || bad "a refused conversion changed its existing output file"
rm -rf "$tmpd"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
