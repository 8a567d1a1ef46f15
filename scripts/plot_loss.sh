#!/bin/sh
# plot_loss.sh: train/val loss curves of one or more `gqa train` runs, one
# curve per run (labelled by its shape, n_kv_head and pos), into one PNG.
#
#   scripts/plot_loss.sh OUT.png DIR [DIR ...]      (DIR = a run's out_dir)
#
# Reads DIR/log.txt: the last "# run" header gives the label, "eval N train
# X val Y" lines the points (a resumed run continues the same curve).
# Needs gnuplot (Debian: gnuplot-nox).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUT.png DIR [DIR ...]" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "error: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out=$1; shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
val="" train="" i=0
for dir in "$@"; do
    log=$dir/log.txt
    [ -f "$log" ] || { echo "error: $log not found (is $dir a gqa train out_dir?)" >&2; exit 1; }
    i=$((i + 1))
    awk '/^eval / { print $2, $4, $6 }' "$log" | sort -n -k1,1 -u > "$tmp/$i.dat"
    [ -s "$tmp/$i.dat" ] || { echo "error: $log has no eval lines yet" >&2; exit 1; }
    label=$(awk '/^# run/ { for (k = 3; k <= NF; k++) if ($k ~ /^(n_(head|kv_head|layer|embd)|pos)=/) s = s " " $k; last = s; s = "" }
                 END { print last }' "$log")
    label="$(basename "$dir"):$label"
    val="$val${val:+, }'$tmp/$i.dat' using 1:3 with linespoints lw 2 pt 7 ps 0.5 lc $i title 'val  $label'"
    train="$train${train:+, }'$tmp/$i.dat' using 1:2 with lines dt 2 lw 1 lc $i title 'train $label'"
done
gnuplot <<GP
set terminal pngcairo size 1100,650 font ",10" noenhanced
set output '$out'
set title 'gqa.c: loss against step'
set xlabel 'step'
set ylabel 'cross-entropy loss (nats)'
set grid
set key top right
plot $val, $train
GP
echo "wrote $out"
