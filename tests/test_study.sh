#!/bin/sh
# test_study.sh: `make study`'s pipeline (scripts/study.py) in its --quick
# plan on tiny shapes: one runs.csv row per (setting, seed, task) with the
# KV bytes of the formula, the three PNG plots, and a study.md whose numbers
# are the CSV's aggregates (recomputed here with awk, not by the script) and
# whose readings follow from its intervals; the t quantiles and Welch's
# interval against textbook values; a re-run reuses finished runs; bad
# settings are refused with one line.
# Usage: sh tests/test_study.sh ./gqa
GQA=${1:-./gqa}
case $GQA in /*) ;; *) GQA=$(pwd)/$GQA ;; esac
PY=${PYTHON:-/usr/bin/python3}
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d /tmp/gqa_study_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
[ -x "$PY" ] || { echo "FAIL: $PY not found (apt-get install python3, or make test)"; exit 1; }

out=$tmp/out
"$PY" scripts/study.py --quick --gqa "$GQA" --out "$out" --work "$tmp/work" --keep_work > "$tmp/stdout" 2> "$tmp/err" &&
    ok || { bad "study --quick failed: $(tail -5 "$tmp/err")"; echo "$pass passed, $fail failed"; exit 1; }

# runs.csv: 4 settings x 2 seeds x 2 tasks, every (setting, task) with seeds 1 and 2
settings="MHA GQA-2 MQA MLA-16"
[ "$(head -1 "$out/runs.csv")" = "task,setting,n_kv_head,kv_lora_rank,seed,steps,batch_size,block_size,params,kv_bytes_per_token,val_loss,val_acc,train_seconds,n_layer,n_embd,weight_decay" ] &&
    ok || bad "runs.csv header: $(head -1 "$out/runs.csv")"
[ "$(tail -n +2 "$out/runs.csv" | wc -l)" -eq 16 ] && ok || bad "runs.csv has $(tail -n +2 "$out/runs.csv" | wc -l) rows, want 16"
for s in $settings; do
    for t in shakespeare recall; do
        seeds=$(awk -F, -v s="$s" -v t="$t" '$1 == t && $2 == s { printf "%s ", $5 }' "$out/runs.csv")
        [ "$seeds" = "1 2 " ] && ok || bad "$t $s: seeds '$seeds', want '1 2 '"
    done
done
# KV bytes per token (quick shape: 1 layer, 4 heads of 8, float32): grouped 2 L NKV HS 4, MLA L r 4
awk -F, 'NR > 1 { want = $4 > 0 ? 1 * $4 * 4 : 2 * 1 * $3 * 8 * 4; if ($10 != want) { print $2 ": " $10 " != " want; bad = 1 } }
    END { exit bad }' "$out/runs.csv" && ok || bad "kv_bytes_per_token differs from the formula"
awk -F, 'NR > 1 && $1 == "recall" && !($12 >= 0 && $12 <= 1) { bad = 1 } NR > 1 && $1 == "shakespeare" && $12 != "" { bad = 1 }
    NR > 1 && !($11 > 0) { bad = 1 } END { exit bad }' "$out/runs.csv" && ok || bad "val_loss/val_acc columns"
grep -q '^study: run 16/16 ([0-9]* s): recall MLA-16 seed 2: val loss [0-9.]*, val acc [0-9.]* ([0-9]* s)$' "$tmp/err" &&
    ok || bad "no progress line for the last run: $(tail -3 "$tmp/err")"

# the plots are PNG files
for p in quality_kv quality_time budget; do
    [ "$(head -c 4 "$out/$p.png" | od -An -c | tr -d ' ')" = "211PNG" ] && [ "$(wc -c < "$out/$p.png")" -gt 5000 ] &&
        ok || bad "$p.png is not a PNG plot"
done

# study.md: each (measure, setting) row's n, mean, sd and 95% interval are the CSV's (t(0.975, 1) = 12.7062047)
check_row() {  # label task column setting
    want=$(awk -F, -v t="$2" -v c="$3" -v s="$4" 'NR > 1 && $1 == t && $2 == s { n++; x[n] = $c; m += $c }
        END { m /= n; for (i = 1; i <= n; i++) v += (x[i] - m) ^ 2; sd = sqrt(v / (n - 1)); h = 12.7062047 * sd / sqrt(n)
              printf "| %d | %.4f | %.4f | [%.4f, %.4f] |", n, m, sd, m - h, m + h }' "$out/runs.csv")
    got=$(grep "^| $1 | $4 | " "$out/study.md" | cut -d'|' -f5-8)
    [ "|$got|" = "$want" ] && ok || bad "study.md row '$1 | $4': '|$got|', CSV gives '$want'"
}
for s in $settings; do
    check_row "Tiny Shakespeare val loss" shakespeare 11 "$s"
    check_row "recall accuracy on the answers" recall 12 "$s"
    check_row "recall val loss on the answers" recall 11 "$s"
done
# the difference to MHA is the difference of the CSV means, and the reading follows its interval
awk -F, 'NR > 1 && $1 == "shakespeare" { m[$2] += $11 / 2 } END { printf "%+.4f", m["MQA"] - m["MHA"] }' "$out/runs.csv" > "$tmp/d"
grep "^| Tiny Shakespeare val loss | MQA | " "$out/study.md" | grep -qF "| $(cat "$tmp/d") [" && ok ||
    bad "MQA - MHA: want $(cat "$tmp/d") in $(grep '^| Tiny Shakespeare val loss | MQA' "$out/study.md")"
grep '^| [A-Za-z ]* | [A-Z0-9-]* | [0-9]* | 2 |' "$out/study.md" | grep -v '(reference)' |
    awk -F'|' '{ split($9, a, /[][,]/); lo = a[2] + 0; hi = a[3] + 0; in0 = lo <= 0 && 0 <= hi
                 r = $10; ind = r ~ /indistinguishable from MHA at this scale/; dir = r ~ /(worse|better) than MHA/
                 if (in0 != ind || in0 == dir) { print "row:" $0; bad = 1 } n++ }
        END { exit bad || n != 9 }' && ok || bad "a reading does not follow its interval"
grep -q '^Significantly worse than MHA (95% interval of the difference excludes zero): ' "$out/study.md" && ok ||
    bad "no significance sentence"
# the capacity table holds what bench.csv holds: the batch at the budget is the largest that fits
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next } $1 == "budget" && $c["budget_status"] == "fits" {
        b = $c["budget_batch"]; s = $c["budget_seq_bytes"]; if (!(b * s <= 262144 && (b + 1) * s > 262144)) bad = 1; n++ }
    END { exit bad || n != 8 }' "$out/bench.csv" && ok || bad "budget rows in bench.csv"
row=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $1 == "budget" && $c["n_kv_head"] == 1 && $c["kv_lora_rank"] == 0 && $c["ctx"] == 240 {
        printf "%s, %.0f", $c["budget_batch"], $c["decode_tok_s_median"] }' "$out/bench.csv")
grep "^| MQA | " "$out/study.md" | grep -qF "| $row |" && ok || bad "MQA at the budget, ctx 240: '$row' not in study.md"

# statistics against textbook values: t(0.975) for 1, 2, 4, 10 degrees of freedom; Welch on a worked case
(cd scripts && "$PY" -c '
import study
for df, t in ((1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139)):
    assert abs(study.t_quantile(0.975, df) - t) < 1e-5 * t, (df, study.t_quantile(0.975, df))
# means 2 and 5, both variances 1: se = sqrt(2/3), Welch df = (2/3)^2 / (2 (1/3)^2 / 2) = 4, t(0.975, 4) = 2.776445
d, lo, hi = study.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
h = 2.776445 * (2.0 / 3.0) ** 0.5
assert abs(d + 3.0) < 1e-12 and abs(lo - (-3.0 - h)) < 1e-5 and abs(hi - (-3.0 + h)) < 1e-5, (d, lo, hi)
') && ok || bad "t quantiles or Welch interval"

# a second run reuses the finished runs (their logs untouched) and writes the same runs.csv (but times)
log=$tmp/work/shakespeare-MQA-s1/log.txt
before=$(stat -c %Y.%s "$log" 2> /dev/null; md5sum < "$log")
sleep 1
"$PY" scripts/study.py --quick --gqa "$GQA" --out "$tmp/out2" --work "$tmp/work" --keep_work > /dev/null 2> "$tmp/err2" &&
    ok || bad "second study failed: $(tail -3 "$tmp/err2")"
[ "$(stat -c %Y.%s "$log"; md5sum < "$log")" = "$before" ] && ok || bad "a finished run was run again"
[ "$(cut -d, -f1-12 "$out/runs.csv")" = "$(cut -d, -f1-12 "$tmp/out2/runs.csv")" ] && ok || bad "runs.csv differs on reuse"

# bad input: one line, non-zero exit
for args in "--settings MHA,GQA-3" "--settings GQA-2,MHA" "--settings MHA,XYZ" "--seeds 1"; do
    # shellcheck disable=SC2086
    if "$PY" scripts/study.py --quick --gqa "$GQA" --out "$tmp/bad" $args > "$tmp/bad.out" 2>&1; then
        bad "study $args succeeded"
    else
        [ "$(wc -l < "$tmp/bad.out")" -eq 1 ] && grep -q '^study: error: ' "$tmp/bad.out" && ok ||
            bad "study $args: $(cat "$tmp/bad.out")"
    fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
