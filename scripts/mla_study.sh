#!/bin/sh
# mla_study.sh: quality at equal KV-cache bytes on cfg-s (Tiny Shakespeare,
# 4 layers, 4 query heads of 32, learned positions): MHA; GQA-2 beside MLA of
# the same bytes per token (kv_lora_rank 128 = 2 x 2 x 32); MQA beside MLA of
# the same bytes (kv_lora_rank 64 = 2 x 1 x 32).
#
#   sh scripts/mla_study.sh [OUT_DIR]        (default docs/mla; ~25 minutes on 2 cores)
#
# 1. From scratch: every setting, MAX_ITERS steps, SEEDS seeds; the settings
#    alternate within each seed, so a slow spell of a shared machine falls on
#    all of them alike.
# 2. By conversion: seed 1's MHA checkpoint converted to GQA-2 and MQA
#    (`gqa convert --n_kv_head`, mean-pooling) and to MLA-128 and MLA-64
#    (`gqa convert --kv_lora_rank`, truncated SVD of the stacked K/V
#    projections), evaluated right away and after uptraining for 10% of
#    MAX_ITERS (constant learning rate 2e-4), SEEDS uptraining seeds each.
# Writes OUT_DIR/runs.csv (one row per run), OUT_DIR/mla.md (tables made
# from the CSV: mean, sd and a 95% t-interval per setting, and per-seed
# differences between each MLA and the grouped setting of equal bytes) and
# OUT_DIR/mla.png (val loss against KV bytes per token). Environment: SEEDS
# (3), MAX_ITERS (2000), GQA (./gqa), PHASES ("scratch convert": one of them
# runs that phase alone), WORK (a directory kept for the runs, so that the
# phases can run apart; default a temporary one, removed at the end).
# Needs data/shakespeare_char/*.bin.
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
GQA=${GQA:-$root/gqa}
out=${1:-$root/docs/mla}
SEEDS=${SEEDS:-3} MAX_ITERS=${MAX_ITERS:-2000}
data=$root/data/shakespeare_char
[ -x "$GQA" ] || { echo "error: $GQA not built (run make)" >&2; exit 1; }
[ -f "$data/train.bin" ] || sh "$root/data/shakespeare_char/prepare.sh"
mkdir -p "$out"
out=$(CDPATH='' cd -- "$out" && pwd)
PHASES=${PHASES:-scratch convert}
if [ -n "${WORK:-}" ]; then
    mkdir -p "$WORK"
    tmp=$(CDPATH='' cd -- "$WORK" && pwd)
else
    tmp=$(mktemp -d /tmp/gqa_mla_XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
fi

# cfg-s: gqa train's defaults (4 layers, 4 heads, n_embd 128, context 64, batch 12)
L=4 NH=4 HS=32
up_steps=$((MAX_ITERS / 10))
# setting name, n_kv_head, kv_lora_rank, latent_norm: the MLA settings with
# DeepSeek-V2's latent RMSNorm and without it (as converted models are)
settings="MHA,4,0,1 GQA-2,2,0,1 MLA-128,4,128,1 MLA-128-nonorm,4,128,0 MQA,1,0,1 MLA-64,4,64,1 MLA-64-nonorm,4,64,0"
# RUN_SETTINGS: the subset to train in this invocation (default all); the report covers what runs.csv holds
RUN_SETTINGS=${RUN_SETTINGS:-$settings}
kv_bytes() {  # bytes per token of the float32 cache: grouped 2 L NKV HS 4, MLA L r 4
    if [ "$2" -gt 0 ]; then echo $((L * $2 * 4)); else echo $((2 * L * $1 * HS * 4)); fi
}
val_at() { awk -v s="$2" '$1 == "eval" && $2 == s { v = $6 } END { print v }' "$1/log.txt"; }
params() { sed -n 's/^vocab_size = [0-9]*, parameters = \([0-9]*\),.*/\1/p' "$1"; }
train() {  # out_dir, then flags
    d=$1; shift
    "$GQA" train --data_dir "$data" --out_dir "$d" --eval_iters 100 --peak_gflops 100 "$@" > "$d.out" 2>&1 ||
        { tail -5 "$d.out" >&2; echo "error: training run $d failed" >&2; exit 1; }
}

csv=$tmp/runs.csv
[ -f "$csv" ] || echo "phase,setting,n_kv_head,kv_lora_rank,seed,kv_bytes_per_token,params,val_loss_start,val_loss" > "$csv"
start=$(date +%s)
n=0 total=0
case $PHASES in *scratch*) total=$((total + SEEDS * $(echo $RUN_SETTINGS | wc -w))) ;; esac
case $PHASES in *convert*) total=$((total + SEEDS * 4)) ;; esac
progress() { n=$((n + 1)); echo "mla_study: run $n/$total ($(( $(date +%s) - start )) s): $*" >&2; }

# ---- 1. from scratch
case $PHASES in *scratch*) ;; *) SCRATCH_SEEDS= ;; esac
for seed in ${SCRATCH_SEEDS-$(seq 1 "$SEEDS")}; do
    for s in $RUN_SETTINGS; do
        IFS=, read -r name kv r norm <<EOF
$s
EOF
        progress "scratch $name, seed $seed"
        d=$tmp/scratch-$name-s$seed
        train "$d" --n_kv_head "$kv" --kv_lora_rank "$r" --latent_norm "$norm" --seed "$seed" --max_iters "$MAX_ITERS"
        echo "scratch,$name,$kv,$r,$seed,$(kv_bytes "$kv" "$r"),$(params "$d.out"),,$(val_at "$d" "$MAX_ITERS")" >> "$csv"
    done
done

# ---- 2. by conversion of seed 1's MHA model, then uptraining
src=$tmp/scratch-MHA-s1/ckpt.bin
case $PHASES in *convert*) CONVERSIONS="GQA-2,2,0 MQA,1,0 MLA-128,4,128 MLA-64,4,64" ;; *) CONVERSIONS= ;; esac
for s in $CONVERSIONS; do
    IFS=, read -r name kv r <<EOF
$s
EOF
    if [ "$r" -gt 0 ]; then how="--kv_lora_rank $r"; else how="--n_kv_head $kv --method mean"; fi
    # shellcheck disable=SC2086
    "$GQA" convert --ckpt "$src" $how --out "$tmp/conv-$name.bin" > "$tmp/conv-$name.out" 2>&1 ||
        { cat "$tmp/conv-$name.out" >&2; exit 1; }
    for seed in $(seq 1 "$SEEDS"); do
        progress "converted $name, uptraining seed $seed"
        d=$tmp/up-$name-s$seed
        train "$d" --init_from "$tmp/conv-$name.bin" --seed "$seed" --max_iters "$up_steps" --decay_lr 0 \
            --learning_rate 2e-4 --eval_interval "$up_steps"
        echo "uptrained,$name,$kv,$r,$seed,$(kv_bytes "$kv" "$r"),$(params "$d.out"),$(val_at "$d" 0),$(val_at "$d" "$up_steps")" >> "$csv"
    done
done
cp "$csv" "$out/runs.csv"
# the wall time of every invocation that trained, summed (phases may run apart)
[ "$n" -gt 0 ] && echo "$PHASES $(( $(date +%s) - start ))" >> "$tmp/wall.txt"
wall=$(awk '{ s += $NF } END { print s + 0 }' "$tmp/wall.txt" 2>/dev/null || echo 0)

# ---- the report, from runs.csv alone
# 95% two-sided t quantiles for 1..10 degrees of freedom
tq='BEGIN { split("12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228", T, " ") }'
stats() {  # phase, setting -> "n mean sd half-width" of val_loss (column 9)
    awk -F, -v ph="$1" -v st="$2" "$tq"' NR > 1 && $1 == ph && $2 == st { n++; v[n] = $9; s += $9 }
        END { m = s / n; ss = 0; for (i = 1; i <= n; i++) ss += (v[i] - m) ^ 2
              sd = n > 1 ? sqrt(ss / (n - 1)) : 0; hw = n > 1 ? T[n - 1 > 10 ? 10 : n - 1] * sd / sqrt(n) : 0
              printf "%d %.4f %.4f %.4f\n", n, m, sd, hw }' "$out/runs.csv"
}
col() { awk -F, -v ph="$1" -v st="$2" -v c="$3" 'NR > 1 && $1 == ph && $2 == st { print $c; exit }' "$out/runs.csv"; }
{
    echo "# Quality at equal KV-cache bytes: MHA, GQA, MQA and MLA on cfg-s"
    echo
    echo "Generated by \`sh scripts/mla_study.sh\` from [runs.csv](runs.csv); the runs took ${wall} s of wall time"
    echo "(on a machine shared with other work; about 65 s per 2000-step run when it was quiet)."
    echo "cfg-s (4 layers, 4 query heads of 32, n_embd 128, context 64, batch 12, learned positions, dropout 0) on"
    echo "Tiny Shakespeare; val loss over 100 batches at the last step. Machine: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1),"
    echo "$(nproc) threads. The interval is mean +- t(0.975, n-1) sd / sqrt(n) over seeds."
    echo
    echo "## From scratch ($MAX_ITERS steps, $SEEDS seeds)"
    echo
    echo "| setting | n_kv_head | kv_lora_rank | KV bytes/token (f32) | params | val loss mean | sd | 95% interval |"
    echo "|:---|---:|---:|---:|---:|---:|---:|:---|"
    for s in $settings; do
        name=${s%%,*}
        grep -q "^scratch,$name," "$out/runs.csv" || continue
        set -- $(stats scratch "$name")
        printf '| %s | %s | %s | %s | %s | %.4f | %.4f | [%.4f, %.4f] |\n' "$name" "$(col scratch "$name" 3)" \
            "$(col scratch "$name" 4)" "$(col scratch "$name" 6)" "$(col scratch "$name" 7)" "$2" "$3" \
            "$(echo "$2 $4" | awk '{ print $1 - $2 }')" "$(echo "$2 $4" | awk '{ print $1 + $2 }')"
    done
    echo
    echo "Per seed, MLA minus the grouped setting with the same cache bytes (negative: MLA better), and the"
    echo "95% t-interval of the mean difference:"
    echo
    echo "| pair | differences by seed | mean | 95% interval | reading |"
    echo "|:---|:---|---:|:---|:---|"
    for pair in MLA-128:GQA-2 MLA-128-nonorm:GQA-2 MLA-64:MQA MLA-64-nonorm:MQA MLA-128:MHA MLA-128-nonorm:MLA-128; do
        a=${pair%%:*} b=${pair##*:}
        grep -q "^scratch,$a," "$out/runs.csv" && grep -q "^scratch,$b," "$out/runs.csv" || continue
        awk -F, -v a="$a" -v b="$b" "$tq"' NR > 1 && $1 == "scratch" { v[$2 "," $5] = $9; if ($5 > ns) ns = $5 }
            END { s = 0; line = ""
                  for (i = 1; i <= ns; i++) { d[i] = v[a "," i] - v[b "," i]; s += d[i]; line = line sprintf("%s%+.4f", i > 1 ? ", " : "", d[i]) }
                  m = s / ns; ss = 0; for (i = 1; i <= ns; i++) ss += (d[i] - m) ^ 2
                  hw = ns > 1 ? T[ns - 1 > 10 ? 10 : ns - 1] * sqrt(ss / (ns - 1)) / sqrt(ns) : 0
                  lo = m - hw; hi = m + hw
                  r = lo > 0 ? a " worse" : hi < 0 ? a " better" : "no difference shown at this scale"
                  printf "| %s - %s | %s | %+.4f | [%+.4f, %+.4f] | %s |\n", a, b, line, m, lo, hi, r }' "$out/runs.csv"
    done
    echo
    echo "## By conversion of one MHA model (seed 1, val $(col scratch MHA 9 | awk '{ printf "%.4f", $1 }')), then uptraining for $up_steps steps"
    echo
    echo "GQA and MQA by mean-pooling the KV heads; MLA by a truncated SVD of the stacked K/V projections"
    echo "(no latent norm). Uptraining: constant learning rate 2e-4, $SEEDS seeds (batch order)."
    echo
    echo "| setting | KV bytes/token (f32) | val loss right after converting | after uptraining: mean | sd | 95% interval | scratch ($MAX_ITERS steps) mean |"
    echo "|:---|---:|---:|---:|---:|:---|---:|"
    for name in GQA-2 MLA-128 MQA MLA-64; do
        set -- $(stats uptrained "$name")
        sm=$(stats scratch "$name" | cut -d' ' -f2)
        printf '| %s | %s | %.4f | %.4f | %.4f | [%.4f, %.4f] | %.4f |\n' "$name" "$(col uptrained "$name" 6)" \
            "$(col uptrained "$name" 8)" "$2" "$3" "$(echo "$2 $4" | awk '{ print $1 - $2 }')" \
            "$(echo "$2 $4" | awk '{ print $1 + $2 }')" "$sm"
    done
} > "$out/mla.md"

if command -v gnuplot > /dev/null; then
    for ph in scratch uptrained; do
        for s in $settings; do
            name=${s%%,*}
            grep -q "^$ph,$name," "$out/runs.csv" || continue
            st=$(stats "$ph" "$name")
            set -- $st
            [ "$1" -gt 0 ] 2>/dev/null || continue
            echo "$(col "$ph" "$name" 6) $2 $4 $name" >> "$tmp/plot-$ph.dat"
        done
    done
    gnuplot <<GP
set terminal pngcairo size 900,560 font ",10" noenhanced
set output '$out/mla.png'
set title 'cfg-s, Tiny Shakespeare: val loss against KV-cache bytes per token (mean, 95% interval)'
set xlabel 'KV cache bytes per token (float32, all 4 layers)'
set ylabel 'val loss'
set logscale x 2
set xrange [600:7000]
set grid
set key top right
# scratch points left of their x, converted ones right, labels beside each: the settings of equal bytes share an x
plot '$tmp/plot-scratch.dat' using (\$1*0.94):2:3 with yerrorbars pt 7 ps 1.3 lc 1 title 'from scratch ($MAX_ITERS steps)', \
     '' using (\$1*0.94):2:4 with labels right offset -1.2,0 notitle, \
     '$tmp/plot-uptrained.dat' using (\$1*1.06):2:3 with yerrorbars pt 5 ps 1.1 lc 2 title 'converted from MHA + $up_steps steps', \
     '' using (\$1*1.06):2:4 with labels left offset 1.2,0 tc rgb '#009e73' notitle
GP
fi
cat "$out/mla.md"
