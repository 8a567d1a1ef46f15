#!/bin/sh
# test_mpi.sh: data-parallel training over MPI equals one process. With the
# same seed and global batch, `mpirun -np 2` for 10 steps logs the same
# losses as `-np 1` to 1e-5 (dropout on: each rank's rows draw the masks one
# process would, through the model's batch_offset),
# rank 0 alone writes the checkpoint, and resuming it with another number
# of ranks continues. Usage: sh tests/test_mpi.sh build/mpi/gqa
GQA=${1:-build/mpi/gqa}
case $GQA in /*) ;; *) GQA=$(pwd)/$GQA ;; esac
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d /tmp/gqa_mpi_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN="mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS"

head -c 60000 data/shakespeare_char/input.txt > "$tmp/small.txt"
"$GQA" prepare --input "$tmp/small.txt" --out_dir "$tmp/data" > /dev/null || bad "prepare failed"
common="--data_dir $tmp/data --n_layer 2 --n_head 4 --n_kv_head 2 --n_embd 32 --block_size 32 --batch_size 8
    --dropout 0.1 --learning_rate 3e-3 --warmup_iters 2 --lr_decay_iters 10 --eval_interval 5 --eval_iters 2
    --log_interval 1 --seed 3"
$MPIRUN -np 1 "$GQA" train --out_dir "$tmp/np1" $common --max_iters 10 > "$tmp/np1.out" 2>&1 || bad "np 1 failed: $(tail -3 "$tmp/np1.out")"
$MPIRUN -np 2 "$GQA" train --out_dir "$tmp/np2" $common --max_iters 10 > "$tmp/np2.out" 2>&1 || bad "np 2 failed: $(tail -3 "$tmp/np2.out")"
grep -q "ranks = 2 (4 sequences each)" "$tmp/np2.out" && ok || bad "np 2 did not run 2 ranks: $(head -40 "$tmp/np2.out" | tail -5)"
[ "$(grep -c '^iter ' "$tmp/np2/log.txt")" -eq 10 ] && ok || bad "np 2 log has $(grep -c '^iter ' "$tmp/np2/log.txt") iter lines, want 10 (one writer)"
# compare the 10 losses and the evals: |a - b| <= 1e-5 * max(1, |a|)
if paste -d' ' "$tmp/np1/log.txt" "$tmp/np2/log.txt" | awk '
    $1 == "iter" { n++; d = $4 - $(NF / 2 + 4); if (d < 0) d = -d; if (d > 1e-5 * ($4 > 1 ? $4 : 1)) { print "step " $2 ": " $4 " vs " $(NF / 2 + 4); bad = 1 } }
    END { if (n != 10) { print n " steps compared"; bad = 1 } exit bad }'; then ok; else bad "np 2 losses differ from np 1"; fi
awk '/^eval/ { print $2, $6 }' "$tmp/np1/log.txt" > "$tmp/e1"
awk '/^eval/ { print $2, $6 }' "$tmp/np2/log.txt" > "$tmp/e2"
if paste -d' ' "$tmp/e1" "$tmp/e2" | awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-5 * $2) bad = 1 } END { exit bad }'; then ok; else bad "val losses differ"; fi
grep -q "allreduce: " "$tmp/np2.out" && ok || bad "no allreduce time reported"
# resume the 2-rank checkpoint on 1 rank (and the 1-rank one on 2): both continue to the same losses
$MPIRUN -np 1 "$GQA" train --out_dir "$tmp/np2" $common --max_iters 14 --init_from resume > "$tmp/r1.out" 2>&1 &&
    $MPIRUN -np 2 "$GQA" train --out_dir "$tmp/np1" $common --max_iters 14 --init_from resume > "$tmp/r2.out" 2>&1 &&
    grep -q "resuming from .* at step 10" "$tmp/r1.out" && ok || bad "resume with another rank count failed: $(tail -3 "$tmp/r1.out" "$tmp/r2.out")"
if paste -d' ' "$tmp/np1/log.txt" "$tmp/np2/log.txt" | awk '$1 == "iter" && $2 >= 10 { n++; d = $4 - $(NF / 2 + 4); if (d < 0) d = -d; if (d > 1e-5 * ($4 > 1 ? $4 : 1)) bad = 1 } END { exit bad || n != 4 }'; then ok; else bad "resumed runs differ"; fi
$MPIRUN -np 3 "$GQA" train --out_dir "$tmp/np3" $common --max_iters 1 > "$tmp/np3.out" 2>&1
grep -q "batch_size 8 is the global batch and must be divisible by the 3 MPI ranks" "$tmp/np3.out" && ok || bad "no error for 8 rows over 3 ranks"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
