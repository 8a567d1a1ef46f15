#!/bin/sh
# valgrind.sh: memcheck over a short `gqa prepare` + `gqa train` (with a
# resume) + `gqa sample` on a slice of Tiny Shakespeare, then rope and MLA
# models trained and sampled, and a q8 inference-only checkpoint written and
# sampled. Any memory error or definite leak fails.
# Usage: sh scripts/valgrind.sh GQA_BINARY
# The binary must be built without -march=native (valgrind 3.19 has no
# AVX-512); OpenBLAS is pinned to its Haswell kernels for the same reason.
set -eu
GQA=$1
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/gqa_valgrind_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell
VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
head -c 20000 "$root/data/shakespeare_char/input.txt" > "$tmp/small.txt"
run() { echo "valgrind: gqa $1"; $VG "$GQA" "$@" > "$tmp/out.txt" 2>&1 || { tail -30 "$tmp/out.txt"; echo "valgrind: gqa $1 FAILED"; exit 1; }; }
run prepare --input "$tmp/small.txt" --out_dir "$tmp/data"
common="--data_dir $tmp/data --out_dir $tmp/out --n_layer 2 --n_head 4 --n_kv_head 2 --n_embd 16 --block_size 16
    --batch_size 2 --dropout 0.1 --eval_interval 2 --eval_iters 1 --log_interval 1"
run train $common --max_iters 3
# (the resume gives the MFU peak, whose measurement under memcheck is slow)
run train $common --max_iters 5 --init_from resume --peak_gflops 200
run sample --ckpt "$tmp/out/best.bin" --max_new_tokens 40 --num_samples 2 --kv_dtype bf16
# 16- and 8-bit weights (the portable kernels: this build has no AVX-512)
run sample --ckpt "$tmp/out/best.bin" --max_new_tokens 40 --num_samples 2 --weight_dtype q8
run sample --ckpt "$tmp/out/best.bin" --max_new_tokens 40 --weight_dtype bf16 --kv_dtype f16
# an inference-only checkpoint: written, then read without the float32 weights
run convert --ckpt "$tmp/out/best.bin" --weight_dtype q8 --out "$tmp/q8.bin"
run sample --ckpt "$tmp/q8.bin" --max_new_tokens 40 --num_samples 2
# rotary positions: training (rotation and its inverse), then decode past block_size
run train $common --out_dir "$tmp/rope" --pos rope --max_iters 2 --peak_gflops 200
run sample --ckpt "$tmp/rope/ckpt.bin" --max_new_tokens 40 --num_samples 2
# multi-head latent attention: training (unabsorbed), then the absorbed decode
# over the latent cache (16-bit, converted tile by tile), past block_size
run train $common --out_dir "$tmp/mla" --n_kv_head 4 --kv_lora_rank 8 --pos rope --max_iters 2 --peak_gflops 200
run sample --ckpt "$tmp/mla/ckpt.bin" --max_new_tokens 40 --num_samples 2 --kv_dtype f16
# an error path: exit status 1 from the bad prompt, never valgrind's 99
echo "valgrind: gqa sample (bad prompt)"
rc=0
$VG "$GQA" sample --ckpt "$tmp/out/ckpt.bin" --max_new_tokens 5 --prompt "no such char: ~" > "$tmp/out.txt" 2>&1 || rc=$?
[ $rc -eq 1 ] || { tail -30 "$tmp/out.txt"; echo "valgrind: bad-prompt run exited $rc, want 1"; exit 1; }
echo "valgrind: clean (no memory errors, no definite leaks)"
