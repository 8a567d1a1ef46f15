#!/bin/sh
# plot_mem.sh: KV cache size against context length for several n_kv_head
# (group sizes), from `gqa mem`, into one PNG.
#
#   scripts/plot_mem.sh OUT.png [gqa mem flags ...]
#
# default shape: Llama-2-70B-like attention (80 layers, 64 heads of 128,
# f16, context up to 32768) with n_kv_head 64, 8, 1. Needs gnuplot.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUT.png [gqa mem flags ...]" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out=$1; shift
GQA=${GQA:-$(dirname "$0")/../gqa}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ $# -gt 0 ] || set -- --n_layer 80 --n_head 64 --n_embd 8192 --ctx 32768 --kv_dtype f16 --n_kv_head 64,16,8,1
"$GQA" mem "$@" --csv "$tmp/mem.csv" > "$tmp/table.md"
shape=$(head -1 "$tmp/table.md")
plot="" i=0
for g in $(tail -n +2 "$tmp/mem.csv" | cut -d, -f1 | sort -n -r -u); do
    i=$((i + 1))
    awk -F, -v g="$g" 'NR > 1 && $1 == g { print $2, $3 / 1e9 }' "$tmp/mem.csv" > "$tmp/g$g.dat"
    plot="$plot${plot:+, }'$tmp/g$g.dat' using 1:2 with linespoints lw 2 pt 7 lc $i title 'n_kv_head $g'"
done
gnuplot <<GP
set terminal pngcairo size 900,550 font ",10" noenhanced
set output '$out'
set title "KV cache against context length\n$shape"
set xlabel 'context length (tokens)'
set ylabel 'KV cache (GB)'
set logscale xy 2
set grid
set key top left
plot $plot
GP
echo "wrote $out"
