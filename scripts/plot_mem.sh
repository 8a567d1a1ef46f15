#!/bin/sh
# plot_mem.sh: KV cache size against context length for several n_kv_head
# (group sizes) and MLA kv_lora_rank settings, from `gqa mem`, into one PNG.
#
#   scripts/plot_mem.sh OUT.png [gqa mem flags ...]
#
# default shape: Llama-2-70B-like attention (80 layers, 64 heads of 128,
# f16, context up to 32768) with n_kv_head 64, 16, 8, 1. With
# --kv_lora_rank in the flags the MLA rows get lines of their own, e.g.
# DeepSeek-V2's attention: --n_layer 60 --n_head 128 --n_embd 16384
# --n_kv_head 128,8,1 --kv_lora_rank 512 --rope_head_dim 64 --pos rope
# --ctx 32768. Needs gnuplot.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUT.png [gqa mem flags ...]" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out=$1; shift
GQA=${GQA:-$(dirname "$0")/../gqa}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ $# -gt 0 ] || set -- --n_layer 80 --n_head 64 --n_embd 8192 --ctx 32768 --kv_dtype f16 --n_kv_head 64,16,8,1
"$GQA" mem "$@" --csv "$tmp/mem.csv" > "$tmp/table.md"
shape=$(head -1 "$tmp/table.md" | sed 's/; ctx /\\nctx /')  # two title lines: the model, then the cache
# one line per row of the table: grouped rows by n_kv_head (largest first), then MLA rows
# (kv_lora_rank > 0: column 4) by kv_lora_rank
plot="" i=0
for s in $(tail -n +2 "$tmp/mem.csv" | awk -F, '{ print ($4 > 0 ? "1" : "0") "," ($4 > 0 ? $4 : $1) "," $1 }' |
           sort -t, -k1,1n -k2,2nr -u); do
    i=$((i + 1))
    mla=${s%%,*} rest=${s#*,} v=${s#*,}; v=${v%%,*}; g=${rest#*,}
    if [ "$mla" = 1 ]; then
        awk -F, -v r="$v" 'NR > 1 && $4 == r { print $2, $3 / 1e9 }' "$tmp/mem.csv" > "$tmp/r$v.dat"
        dr=$(awk -F, -v r="$v" 'NR > 1 && $4 == r { print $5; exit }' "$tmp/mem.csv")
        plot="$plot${plot:+, }'$tmp/r$v.dat' using 1:2 with linespoints lw 2 pt 5 lc $i title 'MLA kv_lora_rank $v + rope_head_dim $dr'"
    else
        awk -F, -v g="$g" 'NR > 1 && $1 == g && $4 == 0 { print $2, $3 / 1e9 }' "$tmp/mem.csv" > "$tmp/g$g.dat"
        plot="$plot${plot:+, }'$tmp/g$g.dat' using 1:2 with linespoints lw 2 pt 7 lc $i title 'n_kv_head $g'"
    fi
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
