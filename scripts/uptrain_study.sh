#!/bin/sh
# uptrain_study.sh: the GQA paper's uptraining experiment (Ainslie et al.
# 2023, Figures 3 and 5) at toy scale on Tiny Shakespeare.
#
#   sh scripts/uptrain_study.sh [OUT_DIR]        (default out-uptrain; ~25 min on 2 cores)
#
# 1. Train MHA (6 query heads, 6 KV heads) for N steps.
# 2. Convert it to n_kv_head G in {3, 2, 1} with each method (mean, first,
#    random), evaluate right away, then uptrain for 10% of N at a constant
#    learning rate, evaluating at 2.5%, 5% and 10% of N.
# 3. Train GQA/MQA from scratch for 1.05 N steps (val loss read at N and 1.05 N).
# 4. Measure decode tok/s of each n_kv_head with `gqa bench` (same shape).
# Writes OUT_DIR/uptrain.csv, uptrain.md, fig5-uptraining.png and
# fig3-quality-speed.png. Jobs run two at a time with one thread each.
# Environment: GQA (binary), N (steps, default 1600), JOBS (default 2),
# EVAL_ITERS (batches per evaluation, default 100).
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
GQA=${GQA:-$root/gqa}
out=${1:-out-uptrain}
N=${N:-1600}
JOBS=${JOBS:-2}
mkdir -p "$out"
out=$(CDPATH='' cd -- "$out" && pwd)
[ -x "$GQA" ] || { echo "error: $GQA not built (run make)" >&2; exit 1; }
sh "$root/data/shakespeare_char/prepare.sh" > /dev/null
data=$root/data/shakespeare_char

# the study's shape: cfg-s scale with 6 heads, so that G can be 3, 2 and 1
shape="--data_dir $data --n_layer 4 --n_head 6 --n_embd 192 --block_size 64 --batch_size 12 --bias 1 --dropout 0
       --eval_iters ${EVAL_ITERS:-100} --log_interval 100 --threads 1 --seed 1337 --warmup_iters $((N / 16))"
shape=$(echo $shape)  # one line: job lines are split on newlines
up_steps=$((N / 10)) up_every=$((N / 40)) long=$((N + N / 20))

# run jobs from a file, JOBS at a time (each line is a shell command)
run_jobs() {
    tr '\n' '\0' < "$1" | xargs -0 -P "$JOBS" -I{} sh -c '{}' ||
        { echo "error: a job of $1 failed; see the *.out files in $out" >&2; exit 1; }
}

echo "uptrain study: N=$N, uptraining $up_steps steps (evals every $up_every), scratch $long steps; in $out"
: > "$out/jobs1.txt"
echo "$GQA train $shape --n_kv_head 6 --max_iters $N --lr_decay_iters $N --eval_interval $up_every --out_dir $out/mha > $out/mha.out 2>&1" >> "$out/jobs1.txt"
for g in 3 2 1; do
    echo "$GQA train $shape --n_kv_head $g --max_iters $long --lr_decay_iters $long --eval_interval $((N / 20)) --out_dir $out/scratch-kv$g > $out/scratch-kv$g.out 2>&1" >> "$out/jobs1.txt"
done
run_jobs "$out/jobs1.txt"

: > "$out/jobs2.txt"
for g in 3 2 1; do
    for method in mean first random; do
        name=up-kv$g-$method
        "$GQA" convert --ckpt "$out/mha/ckpt.bin" --n_kv_head $g --method $method --out "$out/$name.bin" > /dev/null
        echo "$GQA train $shape --init_from $out/$name.bin --max_iters $up_steps --decay_lr 0 --learning_rate 2e-4 --eval_interval $up_every --out_dir $out/$name > $out/$name.out 2>&1" >> "$out/jobs2.txt"
    done
done
run_jobs "$out/jobs2.txt"

# decode speed of each n_kv_head at this shape (one process at a time)
"$GQA" bench --vocab_size 65 --n_layer 4 --n_head 6 --n_embd 192 --block_size 64 --bias 1 --n_kv_head 6,3,2,1 \
    --ctx 48 --batch_size 1 --decode_tokens 16 --repeats 5 --train_steps 1 --train_block_size 64 --threads 1 \
    --csv "$out/speed.csv" > /dev/null

# ---- collect: val loss at a step from a run's log
val_at() { awk -v s="$2" '$1 == "eval" && $2 == s { v = $6 } END { print v }' "$1/log.txt"; }
speed() { awk -F, -v g="$1" 'NR > 1 && $1 == g { print $8 }' "$out/speed.csv"; }
csv=$out/uptrain.csv
echo "model,n_kv_head,method,uptrain_steps,uptrain_frac,val_loss,decode_tok_s" > "$csv"
echo "MHA,6,-,0,0,$(val_at "$out/mha" $N),$(speed 6)" >> "$csv"
for g in 3 2 1; do
    echo "scratch-N,$g,-,0,0,$(val_at "$out/scratch-kv$g" $N),$(speed $g)" >> "$csv"
    echo "scratch-1.05N,$g,-,0,0,$(val_at "$out/scratch-kv$g" $long),$(speed $g)" >> "$csv"
    for method in mean first random; do
        for k in 0 1 2 4; do
            steps=$((k * up_every))
            echo "uptrained,$g,$method,$steps,$(awk -v s=$steps -v n=$N 'BEGIN { print s / n }'),$(val_at "$out/up-kv$g-$method" $steps),$(speed $g)" >> "$csv"
        done
    done
done

md=$out/uptrain.md
{
    echo "Val loss (Tiny Shakespeare, ${EVAL_ITERS:-100} batches) after converting the MHA model (N = $N steps, val $(val_at "$out/mha" $N)) and uptraining for a share of N:"
    echo
    echo "| n_kv_head | method | 0% | 2.5% | 5% | 10% | scratch N | scratch 1.05N | decode tok/s |"
    echo "|---:|:---|---:|---:|---:|---:|---:|---:|---:|"
    for g in 3 2 1; do
        for method in mean first random; do
            r=$out/up-kv$g-$method
            printf '| %s | %s | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.0f |\n' $g $method \
                "$(val_at "$r" 0)" "$(val_at "$r" $up_every)" "$(val_at "$r" $((2 * up_every)))" "$(val_at "$r" $up_steps)" \
                "$(val_at "$out/scratch-kv$g" $N)" "$(val_at "$out/scratch-kv$g" $long)" "$(speed $g)"
        done
    done
    printf '| 6 (MHA) | - | %.4f | | | | | | %.0f |\n' "$(val_at "$out/mha" $N)" "$(speed 6)"
} > "$md"
cat "$md"

command -v gnuplot > /dev/null || { echo "gnuplot not found: no plots" >&2; exit 0; }
for g in 3 2 1; do
    for method in mean first random; do
        awk -F, -v g=$g -v m=$method '$1 == "uptrained" && $2 == g && $3 == m { print 100 * $5, $6 }' "$csv" > "$out/p-$g-$method.dat"
    done
done
awk -F, 'NR > 1 { print $7, $6, ($1 == "uptrained" ? $1 "-" $3 "-" $4 : $1) "-kv" $2 }' "$csv" |
    awk '$3 !~ /uptrained/ || $3 ~ /mean-'"$((2 * up_every))"'-/' > "$out/p-speed.dat"
mha=$(val_at "$out/mha" $N)
gnuplot <<GP
set terminal pngcairo size 900,600 font ",10" noenhanced
set output '$out/fig5-uptraining.png'
set title 'Uptraining an MHA checkpoint to GQA/MQA (cf. GQA paper, Figure 5)'
set xlabel 'uptraining steps (% of the N = $N pre-training steps)'
set ylabel 'val loss'
set grid
set key top right
plot $mha with lines lw 2 lc rgb 'black' dt 2 title 'MHA (n_kv_head 6)', \
     '$out/p-3-mean.dat' w lp lw 2 pt 7 lc 1 t 'GQA-3 mean', '$out/p-3-first.dat' w lp dt 2 pt 6 lc 1 t 'GQA-3 first', '$out/p-3-random.dat' w lp dt 3 pt 4 lc 1 t 'GQA-3 random', \
     '$out/p-2-mean.dat' w lp lw 2 pt 7 lc 2 t 'GQA-2 mean', '$out/p-2-first.dat' w lp dt 2 pt 6 lc 2 t 'GQA-2 first', '$out/p-2-random.dat' w lp dt 3 pt 4 lc 2 t 'GQA-2 random', \
     '$out/p-1-mean.dat' w lp lw 2 pt 7 lc 3 t 'MQA mean', '$out/p-1-first.dat' w lp dt 2 pt 6 lc 3 t 'MQA first', '$out/p-1-random.dat' w lp dt 3 pt 4 lc 3 t 'MQA random'
set output '$out/fig3-quality-speed.png'
set title 'Quality against decode speed (cf. GQA paper, Figure 3); uptrained = mean-pooled + 5% of N'
set xlabel 'decode tok/s (batch 1, context 48, 1 thread)'
set ylabel 'val loss'
set offsets graph 0.05, graph 0.3, graph 0.05, graph 0.05
plot '$out/p-speed.dat' using 1:2:3 with labels point pt 7 offset char 1,0.5 left notitle
GP
echo "wrote $csv, $md, $out/fig5-uptraining.png, $out/fig3-quality-speed.png"
