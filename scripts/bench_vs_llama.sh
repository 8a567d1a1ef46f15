#!/bin/sh
# bench_vs_llama.sh: gqa.c's decode against llama.cpp's on the cfg-d shape
# (docs/design.md), at the same weight precision: f16 against f16, q8 against
# llama.cpp's Q8_0; the KV cache f16 on both sides (llama.cpp's default).
#
#   sh scripts/bench_vs_llama.sh [OUT.csv]    (default docs/perf/vs_llama.csv)
#
# llama.cpp is the one the npm package node-llama-cpp (pinned 3.21.1) ships
# prebuilt, timed by scripts/bench_llama.c, a small C program linked to the
# package's libllama (its headers come from the llama.cpp source bundle in
# the package). It needs node and npm (once, to install the package into
# LLAMA_DIR), git, gcc and python3; nothing of it is part of gqa.c's build.
# The models: scripts/gguf_export.py writes the cfg-d shape with random
# weights as GGUF ("gpt2" architecture, tied head); gqa.c's side is `gqa
# bench` with its own random weights (timing does not depend on the values).
# First, as a check of the export, the tiny test checkpoint's greedy tokens
# from llama.cpp (f32 and f16 GGUF) must equal `gqa sample`'s.
# Every row is measured ROUNDS times as A B A B ...: A = `gqa bench
# --measure=infer --repeats 3`, B = bench_llama --repeats 3, each a fresh
# process; 64 decode steps from a cache filled to ctx, each sequence with its
# own cache. The Markdown table (median decode tok/s of each side over
# rounds x repeats, the ratio gqa.c / llama.cpp) goes to stdout and OUT.md,
# every round's figures to OUT.csv, progress to stderr.
# About 15 minutes on 2 cores (`make bench-llama`); run it on a quiet machine.
# Environment: ROUNDS (default 3), THREADS (2), GQA (./gqa), PYTHON
# (/usr/bin/python3), LLAMA_DIR (where node-llama-cpp is installed and the
# harness built; default ~/.cache/gqa-llama), QUICK=1: a smoke test on
# small shapes, 1 round, output in /tmp unless OUT.csv is given.
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
GQA=${GQA:-$root/gqa}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
QUICK=${QUICK:-0}
LLAMA_DIR=${LLAMA_DIR:-$HOME/.cache/gqa-llama}
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    csv=${1:-${TMPDIR:-/tmp}/vs_llama_quick.csv}
else
    ROUNDS=${ROUNDS:-3}
    csv=${1:-docs/perf/vs_llama.csv}
fi
md=${csv%.csv}.md
[ -x "$GQA" ] || { echo "error: $GQA not built (run make)" >&2; exit 1; }
for tool in node npm git gcc "$PYTHON"; do
    command -v "$tool" > /dev/null 2>&1 || { echo "error: $tool is needed (node and npm: apt-get install nodejs npm)" >&2; exit 1; }
done
mkdir -p "$LLAMA_DIR" "$(dirname "$csv")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS="$THREADS"

# ---- llama.cpp: the package, its headers, the harness
pkg=$LLAMA_DIR/node_modules/node-llama-cpp
if [ ! -d "$pkg" ]; then
    echo "bench_vs_llama: npm install node-llama-cpp@3.21.1 into $LLAMA_DIR ..." >&2
    (cd "$LLAMA_DIR" && npm install --no-audit --no-fund --ignore-scripts node-llama-cpp@3.21.1 > npm.log 2>&1) ||
        { echo "error: npm install failed: $(tail -3 "$LLAMA_DIR/npm.log")" >&2; exit 1; }
fi
libs=$LLAMA_DIR/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
[ -d "$libs" ] || { echo "error: no prebuilt llama.cpp for linux-x64 in $libs" >&2; exit 1; }
if [ ! -f "$LLAMA_DIR/src/include/llama.h" ]; then
    rm -rf "$LLAMA_DIR/src"
    git clone -q "$pkg/llama/gitRelease.bundle" "$LLAMA_DIR/src" 2> /dev/null ||
        { echo "error: cannot unpack llama.cpp's sources from $pkg/llama/gitRelease.bundle" >&2; exit 1; }
fi
harness=$LLAMA_DIR/bench_llama
gcc -O2 -Wall "$root/scripts/bench_llama.c" -I "$LLAMA_DIR/src/include" -I "$LLAMA_DIR/src/ggml/include" \
    "$libs"/libllama.v*.so "$libs"/libggml.v*.so "$libs/libggml-base.so" -Wl,-rpath,"$libs" -o "$harness"
tag=$(sed -n 's/.*"tag": "\(.*\)".*/\1/p' "$pkg/llama/llama.cpp.info.json")
echo "bench_vs_llama: llama.cpp $tag from node-llama-cpp 3.21.1" >&2

# ---- the export reproduces gqa.c's greedy tokens (the tiny test checkpoint: GQA, learned positions, biases)
fx=$root/tests/fixtures/tiny_gqa.bin
want=$("$GQA" sample --ckpt "$fx" --temperature 0 --max_new_tokens 20 --prompt "ROMEO:" 2>/dev/null | tail -c +7 | head -c 20 |
    "$PYTHON" -c 'import sys; v = "\n !$&'"'"',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"; print(",".join(str(v.index(c)) for c in sys.stdin.read()))')
for t in f32 f16; do
    "$PYTHON" "$root/scripts/gguf_export.py" --ckpt "$fx" --type "$t" --out "$tmp/tiny_$t.gguf" 2> /dev/null
    got=$("$harness" "$tmp/tiny_$t.gguf" "$libs" --greedy 20 --prompt_ids 30,27,25,17,27,10 --vocab 65 2> /dev/null)
    [ "$got" = "$want" ] || { echo "error: llama.cpp's greedy tokens from the $t export ($got) differ from gqa.c's ($want)" >&2; exit 1; }
done
echo "bench_vs_llama: the export's greedy tokens equal gqa sample's (f32, f16)" >&2

# ---- the rows
if [ "$QUICK" = 1 ]; then
    shape="--vocab_size 256 --n_layer 2 --n_head 8 --n_embd 256 --block_size 1024"; dims="256,1024,2,8,%d,256"
    nkvs="8 1"; batches="1 8"; ctxs="128"; steps=16
else
    shape=""; dims="256,4096,6,8,%d,512"; nkvs="8 1"; batches="1 8"; ctxs="512 4032"; steps=64
fi
for nkv in $nkvs; do
    for t in f16 q8_0; do
        # shellcheck disable=SC2059
        "$PYTHON" "$root/scripts/gguf_export.py" --random "$(printf "$dims" "$nkv")" --type "$t" --out "$tmp/m_${nkv}_$t.gguf" 2> /dev/null
    done
done
echo "nkv,batch,ctx,weights,round,gqa_tok_s,llama_tok_s" > "$tmp/rows.csv"
for round in $(seq 1 "$ROUNDS"); do
    for nkv in $nkvs; do for b in $batches; do for c in $ctxs; do for t in f16 q8_0; do
        w=$t; [ "$t" = q8_0 ] && w=q8
        echo "bench_vs_llama: round $round/$ROUNDS: n_kv_head $nkv, batch $b, ctx $c, $w weights ..." >&2
        # shellcheck disable=SC2086
        "$GQA" bench $shape --n_kv_head "$nkv" --ctx "$c" --batch_size "$b" --kv_dtype f16 --weight_dtype "$w" \
            --measure infer --repeats 3 --decode_tokens "$steps" --roofline=false --csv "$tmp/g.csv" > /dev/null 2>&1 ||
            { echo "error: gqa bench failed" >&2; exit 1; }
        g=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next } { print $(c["decode_tok_s_median"]) }' "$tmp/g.csv")
        l=$("$harness" "$tmp/m_${nkv}_$t.gguf" "$libs" --batch "$b" --ctx "$c" --decode_tokens "$steps" --repeats 3 \
            --threads "$THREADS" 2> /dev/null | sed 's/.*tok\/s //') || { echo "error: bench_llama failed" >&2; exit 1; }
        for x in $l; do echo "$nkv,$b,$c,$w,$round,$g,$x"; done >> "$tmp/rows.csv"
    done; done; done; done
done
cp "$tmp/rows.csv" "$csv"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
{
    echo "gqa.c $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?') against llama.cpp $tag (node-llama-cpp"
    echo "3.21.1), decode tok/s, medians of $ROUNDS alternating rounds x 3 repeats; $cpu, $THREADS threads"
    echo
    echo "| n_kv_head | batch | ctx | weights | gqa.c tok/s | llama.cpp tok/s | gqa.c / llama.cpp |"
    echo "|---:|---:|---:|:---|---:|---:|---:|"
    awk -F, 'NR > 1 { k = $1 "," $2 "," $3 "," $4; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
                       g[k] = g[k] " " $6; l[k] = l[k] " " $7 }
        function median(s,   a, m, i, j, t) { m = split(s, a, " ")
            for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2 }
        END { for (i = 1; i <= n; i++) { split(order[i], p, ","); gm = median(g[order[i]]); lm = median(l[order[i]])
                  printf "| %s | %s | %s | %s | %.0f | %.0f | %.2fx |\n", p[1], p[2], p[3], p[4], gm, lm, gm / lm } }' "$csv"
} | tee "$md"
echo "bench_vs_llama: wrote $csv and $md" >&2
