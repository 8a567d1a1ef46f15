#!/bin/sh
# test_train.sh: `gqa prepare` + `gqa train` end to end on a small slice of
# Tiny Shakespeare: seed determinism, 10 steps + resume + 10 steps == 20
# steps straight (with dropout on), a clean stop on SIGINT that resumes,
# and clear errors on missing or damaged data.
# Usage: sh tests/test_train.sh ./gqa
GQA=${1:-./gqa}
case $GQA in /*) ;; *) GQA=$(pwd)/$GQA ;; esac
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d /tmp/gqa_train_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

head -c 60000 data/shakespeare_char/input.txt > "$tmp/small.txt"
"$GQA" prepare --input "$tmp/small.txt" --out_dir "$tmp/data" > "$tmp/prep.log" 2>&1 && ok || bad "prepare failed: $(cat "$tmp/prep.log")"

# a tiny GQA model with dropout, logging every step ($tmp has no spaces)
common="--data_dir $tmp/data --n_layer 2 --n_head 4 --n_kv_head 2 --n_embd 32 --block_size 32 --batch_size 4
    --dropout 0.1 --learning_rate 3e-3 --warmup_iters 3 --lr_decay_iters 20 --eval_interval 10 --eval_iters 2
    --log_interval 1 --seed 7 --threads 2"
train() {
    out=$1; shift
    "$GQA" train --out_dir "$out" $common "$@"
}
losses() { grep '^iter ' "$1/log.txt" | cut -d' ' -f1-4; }

# determinism: same seed, same threads -> bit-identical losses
train "$tmp/a" --max_iters 20 > "$tmp/a.out" 2>&1 || bad "train a failed: $(tail -3 "$tmp/a.out")"
train "$tmp/b" --max_iters 20 > "$tmp/b.out" 2>&1 || bad "train b failed"
[ "$(losses "$tmp/a" | wc -l)" -eq 20 ] && ok || bad "expected 20 logged steps, got $(losses "$tmp/a" | wc -l)"
if [ "$(losses "$tmp/a")" = "$(losses "$tmp/b")" ]; then ok; else bad "same seed gave different losses"; fi
train "$tmp/c" --max_iters 20 --seed 8 > /dev/null 2>&1
if [ "$(losses "$tmp/a")" != "$(losses "$tmp/c")" ]; then ok; else bad "another seed gave the same losses"; fi

# MFU: by default against an sgemm peak measured at the start (the faster of
# the two backends it names); --peak_gflops given, nothing is measured
sed -n 's/^mfu: against a measured sgemm peak of \([0-9.]*\) GFLOP\/s (512^3: gqa.c gemm \([0-9.]*\), OpenBLAS \([0-9.]*\);.*/\1 \2 \3/p' \
    "$tmp/a.out" | awk 'NF == 3 && $1 > 0 && $1 == ($2 > $3 ? $2 : $3) { f = 1 } END { exit !f }' &&
    ok || bad "no measured sgemm peak for MFU: $(grep -i mfu "$tmp/a.out" | head -2)"
train "$tmp/p" --max_iters 1 --peak_gflops 100 > "$tmp/p.out" 2>&1 || bad "train --peak_gflops failed"
grep -q '^iter 0: .*mfu [0-9.]*%$' "$tmp/p.out" && ! grep -q '^mfu: ' "$tmp/p.out" && ok ||
    bad "--peak_gflops 100: $(grep -i mfu "$tmp/p.out" | head -2)"

# shards: 2 threads split the batch of 4 by default; one threaded pass
# (--shards 1) differs only in the order of float sums, dropout masks included
grep -q 'shards = 2$' "$tmp/a.out" && ok || bad "default run not sharded: $(grep shards "$tmp/a.out")"
train "$tmp/d" --max_iters 20 --shards 1 > "$tmp/d.out" 2>&1 || bad "train --shards 1 failed: $(tail -3 "$tmp/d.out")"
grep -q 'shards = 1$' "$tmp/d.out" && ok || bad "--shards 1 not honoured: $(grep shards "$tmp/d.out")"
worst=$(paste "$(losses "$tmp/a" > "$tmp/la"; echo "$tmp/la")" "$(losses "$tmp/d" > "$tmp/ld"; echo "$tmp/ld")" |
    awk '{ d = $4 - $8; if (d < 0) d = -d; if (d > w) w = d } END { if (NR != 20) print "rows " NR; else print w + 0 }')
echo "shards 2 vs 1: worst loss difference over 20 steps $worst"
awk -v w="$worst" 'BEGIN { exit !(w != "" && w < 1e-3) }' && ok || bad "--shards 1 vs sharded losses differ by $worst"

# resume: 10 steps, then resume to 20 == 20 straight
train "$tmp/r" --max_iters 10 > /dev/null 2>&1 || bad "train r (10 steps) failed"
train "$tmp/r" --max_iters 20 --init_from resume > "$tmp/r.out" 2>&1 || bad "resume failed: $(tail -3 "$tmp/r.out")"
grep -q "resuming from $tmp/r/ckpt.bin at step 10" "$tmp/r.out" && ok || bad "no resume message: $(head -40 "$tmp/r.out")"
if [ "$(losses "$tmp/a")" = "$(losses "$tmp/r")" ]; then ok; else
    bad "resume differs from straight run:"; diff "$(losses "$tmp/a" > "$tmp/x"; echo "$tmp/x")" "$(losses "$tmp/r" > "$tmp/y"; echo "$tmp/y")"
fi
[ -f "$tmp/r/best.bin" ] && [ -f "$tmp/r/ckpt.bin" ] && ok || bad "ckpt.bin/best.bin missing"
grep -q '^eval 20 train ' "$tmp/r/log.txt" && ok || bad "no eval at step 20 in the log"

# the log's config lines name n_kv_head, for plots
grep -q '^# run .*n_kv_head=2' "$tmp/a/log.txt" && ok || bad "log has no run header"

# RoPE: no wpe (block_size x n_embd = 32 x 32 parameters fewer); the scheme in the resolved configuration and
# the log header; 10 steps + resume + 10 == 20 straight (the resume takes the scheme from the checkpoint);
# greedy sampling past block_size; gqa convert carries the scheme (repeat: the same greedy text)
train "$tmp/q" --max_iters 20 --pos rope --rope_theta 500 > "$tmp/q.out" 2>&1 || bad "rope train failed: $(tail -3 "$tmp/q.out")"
params() { sed -n 's/^vocab_size = [0-9]*, parameters = \([0-9]*\),.*/\1/p' "$1"; }
pa=$(params "$tmp/a.out") pq=$(params "$tmp/q.out")
[ -n "$pa" ] && [ "$pq" = $((pa - 32 * 32)) ] && ok || bad "rope has $pq parameters, learned $pa: want 1024 fewer"
grep -q '^  pos *= rope$' "$tmp/q.out" && grep -q '^  rope_theta *= 500$' "$tmp/q.out" && ok ||
    bad "rope run's configuration: $(grep -E '^  (pos|rope_theta) ' "$tmp/q.out")"
grep -q '^  pos *= learned$' "$tmp/a.out" && ok || bad "the default is not pos = learned"
grep -q '^# run .* bias=1 pos=rope rope_theta=500 kv_lora_rank=0 rope_head_dim=0 latent_norm=0 init_from=scratch ' "$tmp/q/log.txt" && ok || bad "rope log header: $(head -1 "$tmp/q/log.txt")"
grep -q '^# run .* pos=learned rope_theta=10000 ' "$tmp/a/log.txt" && ok || bad "learned log header: $(head -1 "$tmp/a/log.txt")"
[ "$(losses "$tmp/q" | wc -l)" -eq 20 ] && [ "$(losses "$tmp/q")" != "$(losses "$tmp/a")" ] && ok || bad "rope losses"
train "$tmp/qr" --max_iters 10 --pos rope --rope_theta 500 > /dev/null 2>&1 || bad "rope train qr (10 steps) failed"
train "$tmp/qr" --max_iters 20 --init_from resume > "$tmp/qr.out" 2>&1 || bad "rope resume failed: $(tail -3 "$tmp/qr.out")"
grep -q "note: model shape taken from $tmp/qr/ckpt.bin (.* pos=rope rope_theta=500 kv_lora_rank=0 rope_head_dim=0 latent_norm=0)" "$tmp/qr.out" && ok ||
    bad "no note of the checkpoint's scheme: $(grep note "$tmp/qr.out")"
if [ "$(losses "$tmp/q")" = "$(losses "$tmp/qr")" ]; then ok; else bad "rope resume differs from the straight run"; fi
"$GQA" sample --ckpt "$tmp/q/ckpt.bin" --temperature 0 --max_new_tokens 80 --prompt "ROMEO:" > "$tmp/q.txt" 2> "$tmp/q.err" &&
    [ "$(wc -c < "$tmp/q.txt")" -ge 87 ] && grep -q "including re-prefills past block_size" "$tmp/q.err" && ok ||
    bad "rope sample past block_size: $(cat "$tmp/q.err")"
"$GQA" convert --ckpt "$tmp/q/ckpt.bin" --n_kv_head 4 --method repeat --out "$tmp/q4.bin" > /dev/null 2>&1 &&
    "$GQA" sample --ckpt "$tmp/q4.bin" --temperature 0 --max_new_tokens 80 --prompt "ROMEO:" 2>/dev/null | cmp -s - "$tmp/q.txt" &&
    ok || bad "the repeat-expanded rope model's greedy text differs"
"$GQA" convert --ckpt "$tmp/q/ckpt.bin" --n_kv_head 1 --out "$tmp/q1.bin" > /dev/null 2>&1 &&
    "$GQA" sample --ckpt "$tmp/q1.bin" --max_new_tokens 40 2>&1 | grep -q "n_kv_head 1, 32 positions" && ok ||
    bad "the rope model converted to MQA does not sample"

# MLA (kv_lora_rank 16, n_kv_head = n_head): its parameters by the formula (per layer: the query
# projection, W_dkv, the latent norm, W_uk/W_uv, with biases, in place of the fused qkv of n_kv_head 2);
# the kind in the configuration and the log header; learned and rope (decoupled part of 4) both train;
# 10 steps + resume + 10 == 20 straight; n_kv_head != n_head is refused
mla="--n_kv_head 4 --kv_lora_rank 16"
train "$tmp/m" --max_iters 20 $mla > "$tmp/m.out" 2>&1 || bad "MLA train failed: $(tail -3 "$tmp/m.out")"
pm=$(params "$tmp/m.out")
per_layer_gqa=$(( (4 + 2 * 2) * 8 * 32 + (4 + 2 * 2) * 8 ))
per_layer_mla=$(( 32 * 32 + 32 + 16 * 32 + 16 + 16 + 64 * 16 + 64 ))
[ -n "$pm" ] && [ "$pm" = $((pa + 2 * (per_layer_mla - per_layer_gqa))) ] && ok ||
    bad "MLA has $pm parameters, GQA $pa: want $((pa + 2 * (per_layer_mla - per_layer_gqa)))"
grep -q '^  kv_lora_rank *= 16$' "$tmp/m.out" && grep -q '^  latent_norm *= true$' "$tmp/m.out" && ok ||
    bad "MLA run's configuration: $(grep -E '^  (kv_lora_rank|latent_norm) ' "$tmp/m.out")"
grep -q '^# run .* kv_lora_rank=16 rope_head_dim=0 latent_norm=1 ' "$tmp/m/log.txt" && ok ||
    bad "MLA log header: $(head -1 "$tmp/m/log.txt")"
[ "$(losses "$tmp/m" | wc -l)" -eq 20 ] && [ "$(losses "$tmp/m")" != "$(losses "$tmp/a")" ] && ok || bad "MLA losses"
train "$tmp/mq" --max_iters 20 $mla --pos rope --rope_theta 500 > "$tmp/mq.out" 2>&1 ||
    bad "MLA rope train failed: $(tail -3 "$tmp/mq.out")"
grep -q '^  rope_head_dim *= 4$' "$tmp/mq.out" && ok ||
    bad "MLA rope: rope_head_dim is not head_size/2: $(grep rope_head_dim "$tmp/mq.out")"
train "$tmp/mr" --max_iters 10 $mla --pos rope --rope_theta 500 > /dev/null 2>&1 || bad "MLA rope train mr failed"
train "$tmp/mr" --max_iters 20 --init_from resume > "$tmp/mr.out" 2>&1 || bad "MLA resume failed: $(tail -3 "$tmp/mr.out")"
if [ "$(losses "$tmp/mq")" = "$(losses "$tmp/mr")" ]; then ok; else bad "MLA rope resume differs from the straight run"; fi
train "$tmp/mx" --max_iters 1 --kv_lora_rank 16 > "$tmp/mx.out" 2>&1 && bad "MLA with n_kv_head 2 trained" ||
    grep -q "n_kv_head must equal n_head=4, got 2" "$tmp/mx.out" && ok || bad "MLA with n_kv_head 2: $(tail -1 "$tmp/mx.out")"

# SIGINT: finish the step, save, exit 0; then resume continues
"$GQA" train --out_dir "$tmp/s" $common --max_iters 1000000 --eval_interval 100000 > "$tmp/s.out" 2>&1 &
pid=$!  # gqa itself, so the signal reaches it
for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    grep -q '^iter 20:' "$tmp/s.out" 2>/dev/null && break
done
kill -INT $pid
i=0
while kill -0 $pid 2>/dev/null && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
if kill -0 $pid 2>/dev/null; then kill -9 $pid; bad "gqa train did not stop within 10 s of SIGINT"; fi
wait $pid
rc=$?
[ $rc -eq 0 ] && ok || bad "SIGINT exit status $rc, want 0"
grep -q "stopped by signal 2 after step" "$tmp/s.out" && grep -q -- "--init_from=resume" "$tmp/s.out" && ok ||
    bad "no stop message: $(tail -3 "$tmp/s.out")"
step=$(sed -n 's/.*after step \([0-9]*\);.*/\1/p' "$tmp/s.out")
train "$tmp/s" --max_iters $((step + 3)) --eval_interval 100000 --init_from resume > "$tmp/s2.out" 2>&1 &&
    grep -q "resuming from $tmp/s/ckpt.bin at step $step" "$tmp/s2.out" && grep -q "^iter $((step + 2)):" "$tmp/s2.out" && ok ||
    bad "resume after SIGINT failed: $(tail -3 "$tmp/s2.out")"

# the loss plot: one PNG from two runs' logs (when gnuplot is installed)
if command -v gnuplot >/dev/null; then
    sh "$(dirname "$0")/../scripts/plot_loss.sh" "$tmp/loss.png" "$tmp/a" "$tmp/r" > /dev/null 2>&1 &&
        [ "$(head -c 4 "$tmp/loss.png" | od -An -c | tr -d ' ')" = "211PNG" ] && ok || bad "plot_loss.sh made no PNG"
fi

# a NaN loss stops the run, exit 1, and the last good checkpoint still samples
train "$tmp/n" --max_iters 30 > /dev/null 2>&1
cp "$tmp/n/ckpt.bin" "$tmp/n-before.bin"
out=$(GQA_FAULT_NAN_AT_STEP=35 train "$tmp/n" --max_iters 40 --init_from resume 2>&1); rc=$?
[ $rc -eq 1 ] && ok || bad "NaN run exited $rc, want 1"
case "$out" in *"the loss is nan at step 35; stopping without saving"*) ok ;; *) bad "no NaN message: $(echo "$out" | tail -2)" ;; esac
cmp -s "$tmp/n/ckpt.bin" "$tmp/n-before.bin" && ok || bad "ckpt.bin changed by the failed run"
"$GQA" sample --ckpt "$tmp/n/ckpt.bin" --max_new_tokens 5 > /dev/null 2>&1 && ok || bad "the last good checkpoint does not sample"

# errors: missing data, damaged token file, unknown key, resume without a checkpoint
expect_fail() {
    needle=$1; shift
    out=$("$@" 2>&1); rc=$?
    [ $rc -eq 1 ] || { bad "$* exited $rc, want 1: $out"; return; }
    case "$out" in *"$needle"*) ok ;; *) bad "$*: output lacks '$needle': $out" ;; esac
}
expect_fail "run \`gqa prepare\` first" "$GQA" train --data_dir "$tmp/nothing" --out_dir "$tmp/e"
cp -r "$tmp/data" "$tmp/cut"
head -c 1000 "$tmp/data/train.bin" > "$tmp/cut/train.bin"
expect_fail "cut/train.bin: file is 1000 bytes, expected" "$GQA" train --data_dir "$tmp/cut" --out_dir "$tmp/e"
expect_fail "unknown option 'n_kv_heads'" "$GQA" train --n_kv_heads 2
expect_fail "n_head 4 is not divisible by n_kv_head 3" train "$tmp/e" --n_kv_head 3 --max_iters 1
expect_fail "--init_from=resume: there is no $tmp/nockpt/ckpt.bin to resume from (train with --init_from=scratch first" \
    train "$tmp/nockpt" --init_from resume --max_iters 1
expect_fail "--init_from=$tmp/nope.bin: no such checkpoint" train "$tmp/e" --init_from "$tmp/nope.bin" --max_iters 1
# absurd sizes: refused by range, or a clear allocation error (never a crash)
expect_fail "option 'block_size': 1e9 is out of range" "$GQA" train --block_size 1e9
expect_fail "cannot allocate 131941532" "$GQA" train --data_dir "$tmp/data" --out_dir "$tmp/e" \
    --n_embd 1048576 --n_head 1 --n_kv_head 1 --n_layer 1000

# the recall task (gqa prepare --task recall): windows start at sequence boundaries, each eval line ends in
# train_acc and val_acc in [0, 1] (the loss fields keep their places); the accuracy rises above chance
# (1/6) within 300 steps (towards 1/4, a guess among the sequence's values); a block too short for an answer, or a recall.bin of other data, is refused
"$GQA" prepare --task recall --out_dir "$tmp/rc" --vocab_size 12 --num_pairs 4 --seq_len 16 --num_train 2000 \
    --num_val 50 > "$tmp/rc.out" 2>&1 && ok || bad "prepare --task recall failed: $(cat "$tmp/rc.out")"
rtrain() {
    out=$1; shift
    "$GQA" train --data_dir "$tmp/rc" --out_dir "$out" --n_layer 2 --n_head 4 --n_kv_head 1 --n_embd 64 \
        --block_size 16 --batch_size 16 --learning_rate 3e-3 --warmup_iters 10 --eval_iters 8 --log_interval 50 \
        --seed 7 --threads 2 "$@"
}
rtrain "$tmp/ra" --max_iters 20 --lr_decay_iters 20 --eval_interval 10 > "$tmp/ra.out" 2>&1 ||
    bad "recall train failed: $(tail -3 "$tmp/ra.out")"
grep -q '^recall task: 4 pairs, 4 queries per sequence of 16 tokens; windows of 16 start at sequence boundaries' \
    "$tmp/ra.out" && ok || bad "no recall task line: $(head -30 "$tmp/ra.out" | grep -i recall)"
awk '$1 == "eval" { n++; if (NF == 10 && $3 == "train" && $5 == "val" && $7 == "train_acc" && $9 == "val_acc" &&
        $8 >= 0 && $8 <= 1 && $10 >= 0 && $10 <= 1 && $4 > 0 && $6 > 0) good++ }
    END { exit !(n == 3 && good == 3) }' "$tmp/ra/log.txt" && ok || bad "recall eval lines: $(grep '^eval' "$tmp/ra/log.txt")"
grep -q '^step 20: train loss [0-9.]*, val loss [0-9.]*, train acc [0-9.]*, val acc [0-9.]*$' "$tmp/ra.out" && ok ||
    bad "recall step line: $(grep '^step 20' "$tmp/ra.out")"
rtrain "$tmp/rb" --max_iters 300 --lr_decay_iters 300 --eval_interval 300 --eval_iters 64 > "$tmp/rb.out" 2>&1 ||
    bad "recall train (300 steps) failed: $(tail -3 "$tmp/rb.out")"
acc=$(awk '$1 == "eval" && $2 == 300 { print $10 }' "$tmp/rb/log.txt")
echo "recall: val accuracy after 300 steps $acc (chance 1/6; a guess among the sequence's 4 values 1/4)"
awk -v a="$acc" 'BEGIN { exit !(a != "" && a > 0.19) }' && ok || bad "recall val accuracy $acc after 300 steps, chance 1/6"
grep -q '^eval 0 train [0-9.]* val [0-9.]*$' "$tmp/a/log.txt" && ok || bad "text eval lines changed: $(grep '^eval 0' "$tmp/a/log.txt")"
# loss_on: auto is answers on a recall task (said on stdout and in the log's run line) and all on text;
# all on a recall task counts every target (a higher loss: keys and values are random); answers needs a task
grep -q 'loss on the answers alone; accuracy on the answers (chance 1/6)$' "$tmp/ra.out" && ok ||
    bad "recall loss line: $(grep '^recall task' "$tmp/ra.out")"
grep -q '^# run .* loss_on=answers$' "$tmp/ra/log.txt" && ok || bad "log run line: $(grep '^# run' "$tmp/ra/log.txt")"
grep -q '^# run .* loss_on=all$' "$tmp/a/log.txt" && ok || bad "text log run line: $(grep '^# run' "$tmp/a/log.txt")"
rtrain "$tmp/rall" --loss_on all --max_iters 20 --lr_decay_iters 20 --eval_interval 10 > "$tmp/rall.out" 2>&1 ||
    bad "recall train with loss_on all failed: $(tail -3 "$tmp/rall.out")"
grep -q 'loss on every target; accuracy' "$tmp/rall.out" && ok || bad "loss_on all line: $(grep '^recall task' "$tmp/rall.out")"
awk 'FNR == 1 { f++ } $1 == "eval" && $2 == 20 { v[f] = $6 } END { exit !(v[1] > 0 && v[2] > 0 && v[1] < v[2]) }' \
    "$tmp/ra/log.txt" "$tmp/rall/log.txt" && ok ||
    bad "val loss at step 20, answers vs all: $(grep '^eval 20' "$tmp/ra/log.txt" "$tmp/rall/log.txt")"
expect_fail "loss_on answers needs a recall task, and $tmp/data has no recall.bin" \
    "$GQA" train --data_dir "$tmp/data" --out_dir "$tmp/re" --loss_on answers --max_iters 1
expect_fail "option 'loss_on': 'some' is not one of" \
    "$GQA" train --data_dir "$tmp/data" --out_dir "$tmp/re" --loss_on some --max_iters 1
expect_fail "block_size 8 holds no answer of the recall task: the first is target 8 of a window" \
    rtrain "$tmp/re" --block_size 8 --max_iters 1
mkdir -p "$tmp/rmix" && cp "$tmp/data/"*.bin "$tmp/rmix/" && cp "$tmp/rc/recall.bin" "$tmp/rmix/"
expect_fail "rmix/recall.bin: vocab_size 12, but $tmp/rmix/vocab.bin has" \
    "$GQA" train --data_dir "$tmp/rmix" --out_dir "$tmp/re" --max_iters 1
"$GQA" prepare --task recall --out_dir "$tmp/rc2" --vocab_size 12 --num_pairs 4 --seq_len 16 --num_train 100 \
    --num_val 50 > /dev/null 2>&1
cp "$tmp/rc/"*.bin "$tmp/rmix/" && cp "$tmp/rc2/recall.bin" "$tmp/rmix/"
expect_fail "train.bin has 32000 tokens, but $tmp/rmix/recall.bin says 100 sequences of 16" \
    "$GQA" train --data_dir "$tmp/rmix" --out_dir "$tmp/re" --max_iters 1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
