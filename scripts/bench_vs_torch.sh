#!/bin/sh
# bench_vs_torch.sh: gqa.c against PyTorch on the reference configs (docs/design.md),
# training tok/s (cfg-s, cfg-m) and decode tok/s (cfg-d), same shapes.
#
#   sh scripts/bench_vs_torch.sh [OUT.csv]    (default docs/perf/vs_torch.csv)
#
# Every row is measured ROUNDS times as A B A B ...: A = `gqa bench
# --measure=train|infer --repeats 1`, B = `scripts/ref_gpt.py bench`, each a
# fresh process, so drift of the machine hits both sides alike. The Markdown
# table (median tok/s of each side and the ratio gqa.c / PyTorch) goes to
# stdout and OUT.md, the rows (with every round's figure) to OUT.csv,
# progress to stderr. Both sides: float32, biases on, THREADS threads
# (OMP_NUM_THREADS for gqa.c, --threads for torch, which runs with the OpenMP
# OpenBLAS through LD_LIBRARY_PATH: Debian's default libblas.so.3 is not it),
# and OMP_WAIT_POLICY=ACTIVE: with libgomp's default policy PyTorch's OpenMP
# workers sleep between its many small parallel regions, its slow mode
# (docs/history.md has the measurements).
# Training: both warm up untimed, then time train_steps optimizer steps. The
# gqa.c side of a training row also times the step's linear-layer GEMMs
# alone (`gqa bench --measure=gemm`, in a process of its own right after the
# training one): the most a step made of those gemm() calls could reach, and
# what both sides' tok/s are given as a fraction of.
# Decode: 32 steps from a cache filled to ctx (gqa.c fills it by a real
# prefill, PyTorch with random values; neither is timed).
# The roofline: every gqa.c round measures it first (`gqa bench`'s own, in a
# child, seconds before the row), and the row's MFU (training) or fraction of
# the read bandwidth (decode) is the median over the rounds of each round's
# figure against its own reading, since a shared host's bandwidth drifts
# within a run.
# About 11-13 minutes on 2 cores (`make bench-torch`); run it on a quiet machine.
# Environment: ROUNDS (default 5), THREADS (2), OMP_WAIT_POLICY (ACTIVE; unset
# it with OMP_WAIT_POLICY= for libgomp's default), GQA (./gqa), PYTHON
# (/usr/bin/python3), QUICK=1: a smoke test of this script on tiny shapes, 1
# round, no roofline, output in /tmp unless OUT.csv is given (a few seconds).
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
GQA=${GQA:-$root/gqa}
PYTHON=${PYTHON:-/usr/bin/python3}
QUICK=${QUICK:-0}
THREADS=${THREADS:-2}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    csv=${1:-${TMPDIR:-/tmp}/vs_torch_quick.csv}
else
    ROUNDS=${ROUNDS:-5}
    csv=${1:-docs/perf/vs_torch.csv}
fi
md=${csv%.csv}.md
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
blas_dir=/usr/lib/$multiarch/openblas-openmp
[ -x "$GQA" ] || { echo "error: $GQA not built (run make)" >&2; exit 1; }
[ -d "$blas_dir" ] || echo "warning: $blas_dir missing (apt-get install libopenblas0-openmp): PyTorch will use" \
    "whatever libblas.so.3 is" >&2
"$PYTHON" -c 'import torch' 2>/dev/null || { echo "error: $PYTHON cannot import torch (apt-get install python3-torch)" >&2; exit 1; }
mkdir -p "$(dirname "$csv")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS="$THREADS"
OMP_WAIT_POLICY=${OMP_WAIT_POLICY-ACTIVE}
if [ -n "$OMP_WAIT_POLICY" ]; then export OMP_WAIT_POLICY; else unset OMP_WAIT_POLICY; fi

# One config per line; lists (comma-separated) are expanded into rows.
#   name measure vocab n_layer n_head n_embd block_size batch n_kv_head ctx steps
# (training: T = block_size, steps = timed optimizer steps; decode: ctx
# tokens in the cache, steps decode steps)
if [ "$QUICK" = 1 ]; then
    cat > "$tmp/configs" <<EOF
quick-t train 11 1 4 16 16 2 4,2 - 2
quick-d decode 11 1 4 16 64 1,2 4,1 8 4
EOF
else
    cat > "$tmp/configs" <<EOF
cfg-s train 65 4 4 128 64 12 4,2,1 - 20
cfg-m train 65 6 6 384 256 8 6,3,2,1 - 4
cfg-d decode 256 6 8 512 4096 1,8 8,1 512,4032 32
EOF
fi
: > "$tmp/rows"
while read -r name what V L NH C T Bs Gs ctxs S; do
    for G in $(echo "$Gs" | tr , ' '); do
        for B in $(echo "$Bs" | tr , ' '); do
            for ctx in $(echo "$ctxs" | tr , ' '); do
                echo "$name $what $V $L $NH $C $T $B $G $ctx $S" >> "$tmp/rows"
            done
        done
    done
done < "$tmp/configs"
nrows=$(wc -l < "$tmp/rows")
total=$((nrows * ROUNDS * 2))

# median of the numbers on stdin (one per line)
median() {
    sort -g | awk '{ x[NR] = $1 } END { if (NR % 2) print x[(NR + 1) / 2]; else print (x[NR / 2] + x[NR / 2 + 1]) / 2 }'
}

# every round's figure in FILE, ';'-separated, or - if there are none
rounds() {
    if [ -s "$1" ]; then tr '\n' ';' < "$1" | sed 's/;$//'; else echo -; fi
}

# ours NAME WHAT V L NH C T B G CTX S -> "tok/s fraction" of one gqa bench
# run (training: "tok/s fraction GEMM-only-tok/s"). The fraction is of the
# roofline gqa bench measured seconds before the row in the same run: MFU in
# training, the fraction of the read bandwidth in decode (- with QUICK=1).
ours() {
    shape="--vocab_size $3 --n_layer $4 --n_head $5 --n_embd $6 --block_size $7 --n_kv_head $9 --bias 1"
    if [ "$2" = train ]; then
        run="--measure=train,gemm --train_batch_size $8 --train_block_size $7 --train_steps ${11}"
        col=5,14,20  # train_tok_s, train_mfu, gemm_tok_s_median
    else
        run="--measure=infer --batch_size $8 --ctx ${10} --decode_tokens ${11} --kv_dtype f32"
        col=8,16  # decode_tok_s, decode_bw_frac
    fi
    roof=true
    [ "$QUICK" = 1 ] && roof=false
    # shellcheck disable=SC2086
    "$GQA" bench $shape $run --repeats 1 --roofline=$roof --csv "$tmp/ours.csv" < /dev/null > "$tmp/ours.out" 2>&1 ||
        { cat "$tmp/ours.out" >&2; echo "error: gqa bench failed ($*)" >&2; exit 1; }
    sed -n 2p "$tmp/ours.csv" | cut -d, -f"$col" | awk -F, '{ printf "%s %s %s\n", $1, ($2 == "" ? "-" : $2), $3 }'
}

# theirs NAME WHAT V L NH C T B G CTX S -> tok/s of one ref_gpt.py bench run
theirs() {
    args="--what $2 --vocab_size $3 --n_layer $4 --n_head $5 --n_embd $6 --block_size $7 --batch_size $8
          --n_kv_head $9 --steps ${11} --repeats 1 --threads $THREADS --bias 1"
    [ "$2" = train ] || args="$args --ctx ${10}"
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH="$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$PYTHON" "$root/scripts/ref_gpt.py" bench $args \
        < /dev/null > "$tmp/theirs.out" 2> "$tmp/theirs.err" ||
        { cat "$tmp/theirs.err" >&2; echo "error: ref_gpt.py bench failed ($*)" >&2; exit 1; }
    grep -q "openblas-openmp" "$tmp/theirs.err" || sed -n '/warning/p' "$tmp/theirs.err" >&2
    sed -n 's/^RESULT [a-z]* //p' "$tmp/theirs.out"
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
# gqa bench's roofline line, with a training run too small to matter, at the
# start and again at the end of the run: how far the host moved meanwhile.
roofline_now() {
    if [ "$QUICK" = 1 ]; then
        echo "roofline: not measured (QUICK=1)"
        return
    fi
    "$GQA" bench --vocab_size 11 --n_layer 1 --n_head 4 --n_embd 16 --block_size 16 --train_batch_size 1 \
        --train_block_size 16 --train_steps 1 --repeats 1 --n_kv_head 4 --measure=train < /dev/null 2>/dev/null |
        grep '^roofline:' || echo "roofline: measurement failed"
}
roofline=$(roofline_now)
echo "bench_vs_torch: $nrows rows x $ROUNDS rounds x 2 sides = $total measurements" >&2

: > "$tmp/results"
i=0
while read -r name what V L NH C T B G ctx S <&3; do
    : > "$tmp/a"
    : > "$tmp/b"
    : > "$tmp/f"
    : > "$tmp/m"
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        for side in gqa torch; do
            i=$((i + 1))
            t0=$(date +%s)
            if [ "$side" = gqa ]; then
                out=$(ours "$name" "$what" "$V" "$L" "$NH" "$C" "$T" "$B" "$G" "$ctx" "$S")
                [ -n "$out" ] || exit 1
                v=$(echo "$out" | cut -d' ' -f1) m=$(echo "$out" | cut -d' ' -f2) f=$(echo "$out" | cut -d' ' -f3)
                [ "$what" = train ] && echo "$f" >> "$tmp/f"
                [ "$m" = - ] || echo "$m" >> "$tmp/m"
                echo "$v" >> "$tmp/a"
            else
                v=$(theirs "$name" "$what" "$V" "$L" "$NH" "$C" "$T" "$B" "$G" "$ctx" "$S")
                [ -n "$v" ] || { echo "error: no RESULT line from ref_gpt.py" >&2; exit 1; }
                echo "$v" >> "$tmp/b"
            fi
            if [ "$what" = train ]; then where="T $T"; else where="ctx $ctx"; fi
            v="$v tok/s"
            if [ "$side" = gqa ] && [ "$what" = train ]; then v="$v (GEMM-only $f, MFU $m)"; fi
            if [ "$side" = gqa ] && [ "$what" = decode ]; then v="$v (of the read bandwidth: $m)"; fi
            echo "[$i/$total] $name $what n_kv_head $G batch $B $where round $r: $side $v ($(($(date +%s) - t0)) s)" >&2
        done
        r=$((r + 1))
    done
    a=$(median < "$tmp/a") b=$(median < "$tmp/b") f=- m=-
    [ -s "$tmp/f" ] && f=$(median < "$tmp/f")
    [ -s "$tmp/m" ] && m=$(median < "$tmp/m")
    echo "$name $what $G $B $T $ctx $S $a $b $(rounds "$tmp/a") $(rounds "$tmp/b") $f $(rounds "$tmp/f") $m" \
        "$(rounds "$tmp/m")" >> "$tmp/results"
done 3< "$tmp/rows"
roofline_end=$(roofline_now | sed 's/^roofline: /roofline at the end of the run: /')

{
    echo "config,measure,n_kv_head,batch_size,block_size,ctx,steps,rounds,gqa_tok_s,torch_tok_s,ratio,gqa_rounds,torch_rounds,gemm_tok_s,gemm_rounds,roofline_frac,roofline_frac_rounds"
    awk -v R="$ROUNDS" '{ printf "%s,%s,%s,%s,%s,%s,%s,%d,%.3f,%.3f,%.4f,%s,%s,%s,%s,%s,%s\n", $1, $2, $3, $4, $5, ($6 == "-" ? "" : $6),
        $7, R, $8, $9, $8 / $9, $10, $11, ($12 == "-" ? "" : sprintf("%.3f", $12)), ($13 == "-" ? "" : $13),
        ($14 == "-" ? "" : sprintf("%.4f", $14)), ($15 == "-" ? "" : $15) }' "$tmp/results"
} > "$csv"
{
    echo "gqa.c vs PyTorch: median tok/s of $ROUNDS alternating rounds, float32, biases on, $THREADS threads"
    echo
    echo "machine: $cpu, $(nproc) cores; torch $torch_version with $blas_dir; gqa.c $commit; OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}"
    echo "$roofline"
    echo "$roofline_end"
    echo
    echo "| config | measure | n_kv_head | batch | T / ctx | steps | gqa.c tok/s | PyTorch tok/s | gqa.c / PyTorch" \
        "| GEMM-only tok/s | gqa.c / GEMM-only | PyTorch / GEMM-only | gqa.c of roofline |"
    echo "|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk '{ if ($12 == "-") g = "| - | - | -"; else g = sprintf("| %.1f | %.2f | %.2f", $12, $8 / $12, $9 / $12)
           if ($14 == "-") m = "-"; else m = sprintf("%.0f%% %s", 100 * $14, ($2 == "train" ? "MFU" : "of read bw"))
           printf "| %s | %s | %s | %s | %s | %s | %.1f | %.1f | %.2f %s | %s |\n", $1, $2, $3, $4,
               ($2 == "train" ? $5 : $6), $7, $8, $9, $8 / $9, g, m }' "$tmp/results"
} | tee "$md"
echo "bench_vs_torch: wrote $csv and $md" >&2
