#!/bin/sh
# plot_bench.sh: PNGs from `gqa bench --csv FILE`.
#
#   scripts/plot_bench.sh bench.csv OUT_PREFIX
#
# writes OUT_PREFIX-decode.png (decode tok/s against context length, one
# line per attention setting (n_kv_head, or MLA's kv_lora_rank) x batch x
# kv_dtype, one panel per batch size) and
# OUT_PREFIX-memory.png (KV cache bytes, solid, and measured peak resident
# memory, dashed, against context length). A CSV of `gqa bench --kv_budget`
# (its rows' batches are the budget's, one per setting and ctx) gives instead
# OUT_PREFIX-budget.png: decode tok/s at the budget against context length,
# one line per attention setting x kv_dtype, beside the batch that fits the
# budget (settings that do not fit at a ctx have no point there).
# Needs gnuplot (gnuplot-nox).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 bench.csv OUT_PREFIX" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
csv=$1 out=$2
head -1 "$csv" | grep -q '^n_kv_head,batch,ctx,kv_dtype,' || { echo "error: $csv is not a gqa bench CSV" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --kv_budget rows: budget_status (a later column) is fits, does_not_fit or exceeds_memory
if awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        ("budget_status" in col) && $(col["budget_status"]) != "" { found = 1 } END { exit !found }' "$csv"; then
    # one data file per setting x kv_dtype, rows measured at the budget: ctx decode_tok_s budget_batch
    awk -F, -v dir="$tmp" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        { r = $(col["kv_lora_rank"]) + 0; name = $(col["attention"]); key = name SUBSEP $4
          if (!(key in file)) {
              file[key] = dir "/b" (++n) ".dat"
              printf "%d%09d %s %s %s\n", (r > 0), 999999999 - (r > 0 ? r : $1), file[key], name, $4 > (dir "/budget.txt")
              printf "" > file[key]
          }
          if ($(col["budget_status"]) == "fits" && $8 != "") print $3, $8, $(col["budget_batch"]) > file[key]
        }' "$csv"
    label=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        NR == 2 { b = $(col["kv_budget_bytes"]); u = "bytes"; split("KiB MiB GiB TiB", us, " ")
                  for (i = 1; i <= 4 && b >= 1024; i++) { b /= 1024; u = us[i] } printf "%.4g %s", b, u }' "$csv")
    # a colour per setting, a dash type per kv_dtype (f32 solid)
    sort -s -k1,1 "$tmp/budget.txt" > "$tmp/budget.sorted"
    clause_tok="" clause_batch="" i=0 last=""
    while read -r _order f name dt; do
        [ "$name" = "$last" ] || i=$((i + 1))
        last=$name
        case $dt in f32) d=1 ;; bf16) d=2 ;; *) d=3 ;; esac
        sort -n "$f" -o "$f"
        [ -s "$f" ] || continue
        style="with linespoints lw 2 pt 7 lc $i dt $d title '$name $dt'"
        clause_tok="$clause_tok${clause_tok:+, }'$f' using 1:2 $style"
        clause_batch="$clause_batch${clause_batch:+, }'$f' using 1:3 $style"
    done < "$tmp/budget.sorted"
    [ -n "$clause_tok" ] || { echo "error: $csv has --kv_budget rows but none that fits the budget" >&2; exit 1; }
    {
        echo "set terminal pngcairo size 1200,560 font ',10' noenhanced"
        echo "set output '$out-budget.png'"
        echo "set multiplot layout 1,2 title 'gqa.c at a KV cache budget of $label: the largest batch that fits, decoding'"
        echo "set xlabel 'context length (tokens in the KV cache)'; set grid; set key top right; set logscale x 2"
        echo "set title 'aggregate decode tok/s at the budget'; set ylabel 'decode tok/s (all sequences)'; set yrange [0:*]"
        echo "plot $clause_tok"
        echo "set title 'batch that fits the budget'; set ylabel 'sequences'; set logscale y 2; set yrange [*:*]"
        echo "plot $clause_batch"
        echo "unset multiplot"
    } > "$tmp/budget.gp"
    gnuplot "$tmp/budget.gp"
    echo "wrote $out-budget.png"
    exit 0
fi

# one data file per series (attention setting x batch x kv_dtype): ctx decode_tok_s
# decode_sd kv_bytes rss_bytes (columns 3, 8-11: fixed since the first CSV); series.txt
# lists them as "order batch file label": grouped settings first, most KV heads first,
# then MLA (kv_lora_rank > 0, a column of later CSVs), largest rank first.
awk -F, -v dir="$tmp" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { r = ("kv_lora_rank" in col) ? $(col["kv_lora_rank"]) + 0 : 0
      name = r > 0 ? "MLA kv_lora_rank " r : "n_kv_head " $1
      key = name SUBSEP $2 SUBSEP $4
      if (!(key in file)) {
          file[key] = dir "/s" (++n) ".dat"
          printf "%d%09d %s %s %s %s\n", (r > 0), 999999999 - (r > 0 ? r : $1), $2, file[key], name, $4 > (dir "/series.txt")
      }
      print $3, $8, $9, $10, $11 >> file[key]
    }' "$csv"
batches=$(tail -n +2 "$csv" | cut -d, -f2 | sort -n -u)
nb=$(echo "$batches" | wc -l)

series() {  # series BATCH COLUMN STYLE TITLE_SUFFIX -> gnuplot plot clause
    b=$1 col=$2 style=$3 suffix=$4 clause="" i=0
    sort -k1,1 -k5 "$tmp/series.txt" > "$tmp/series.sorted"
    while read -r _order batch f label; do
        [ "$batch" = "$b" ] || continue
        i=$((i + 1))
        sort -n "$f" -o "$f"
        clause="$clause${clause:+, }'$f' using 1:$col $style lc $i title '$label$suffix'"
    done < "$tmp/series.sorted"
    echo "$clause"
}

{
    echo "set terminal pngcairo size $((600 * nb)),560 font ',10' noenhanced"
    echo "set output '$out-decode.png'"
    echo "set multiplot layout 1,$nb title 'gqa.c decode tokens/sec against context length'"
    for b in $batches; do
        echo "set title 'batch $b'; set xlabel 'context length (tokens in the KV cache)'; set ylabel 'decode tok/s'"
        echo "set grid; set key top right; set logscale x 2; set yrange [0:*]"
        echo "plot $(series "$b" 2 'with linespoints lw 2 pt 7' '')"
    done
    echo "unset multiplot"
    echo "set output '$out-memory.png'"
    echo "set multiplot layout 1,$nb title 'KV cache (solid, exact) and peak resident memory (dashed, measured)'"
    for b in $batches; do
        echo "set title 'batch $b'; set xlabel 'context length'; set ylabel 'MiB'; set logscale y 2; set yrange [*:*]"
        echo "set key below maxrows 4 font ',8'"
        echo "plot $(series "$b" '($4/1048576)' 'with linespoints lw 2 pt 7' ' KV'), \\"
        echo "     $(series "$b" '($5/1048576)' 'with linespoints dt 2 lw 1 pt 6' ' RSS')"
        echo "unset logscale y"
    done
    echo "unset multiplot"
} > "$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "wrote $out-decode.png $out-memory.png"
