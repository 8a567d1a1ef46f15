#!/usr/bin/env python3
"""study.py: the trade-off study behind `make study`: what a smaller KV cache
costs in quality and buys in speed and capacity, for every attention setting
of one model shape, in one command.

    python3 scripts/study.py [--out docs/study] [--seeds 3] [--quick] [--settings MHA,GQA-2,MQA,MLA-128]

For each setting (MHA; GQA-k: k KV heads; MQA; MLA-r: a cached latent of
width r) it drives ./gqa to
  1. train `seeds` seeds on Tiny Shakespeare and on multi-query associative
     recall (`gqa prepare --task recall`), every run the same steps and batch
     (an equal token budget); the settings alternate within each seed, so a
     slow spell of a shared machine falls on all of them alike;
  2. read the final val loss (and on recall the accuracy on the answers);
  3. time decode at batch 1 and the throughput at a KV-cache budget
     (`gqa bench`, random weights of the same shape with a longer context);
and writes to OUT: runs.csv (one row per training run), bench.csv (gqa
bench's rows), study.md (every number and every sentence in it computed from
the two CSVs) and three PNG plots (gnuplot). Statistics: mean, sd and a 95%
t-interval over seeds per setting; each setting minus MHA with Welch's
95% t-interval; "indistinguishable from MHA at this scale" when that
interval contains zero.

--quick runs the same pipeline on tiny shapes in seconds (tests/test_study.sh
checks its output). Runs are kept in --work (default OUT/work, removed at
the end unless --keep_work): a run whose log is complete for the same
command, binary and data is not run again, so an interrupted study resumes
where it stopped.
Standard library only; needs gnuplot for the plots.
"""
import argparse
import csv
import hashlib
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECALL_STEPS = 1000

# The default study (~20 minutes on 2 cores) and the quick one (seconds).
# shape: the model of the text runs and of the bench; its n_head is the MHA
# setting's n_kv_head. recall_shape: the recall runs' model, with the same
# heads and head size (so a setting means the same per layer), trained with
# its own batch and weight decay: cfg-s at batch 12 does not learn recall in
# minutes (docs/history.md). budget: the bench's KV-cache budget; ctx_b1:
# contexts of the batch-1 decode rows (the last is the one plotted).
PLANS = {
    "default": dict(
        shape=dict(n_layer=4, n_head=4, n_embd=128, block_size=64),
        batch_size=12,
        text_steps=2000,
        recall_shape=dict(n_layer=2, n_head=4, n_embd=128, block_size=64),
        recall_batch_size=64,
        recall_weight_decay=0.0,
        recall_steps=RECALL_STEPS,
        eval_iters=100,
        recall=dict(vocab_size=52, num_pairs=4, seq_len=64, num_train=20000, num_val=2000),
        bench_block=4096,
        ctx_b1=[64, 4032],
        budget="64MiB",
        ctx_budget=[512, 1024, 2048, 4032],
        rounds=3,
        repeats=2,
        decode_tokens=64,
    ),
    "quick": dict(
        shape=dict(n_layer=1, n_head=4, n_embd=32, block_size=16),
        batch_size=4,
        text_steps=20,
        recall_shape=dict(n_layer=1, n_head=4, n_embd=32, block_size=16),
        recall_batch_size=4,
        recall_weight_decay=0.0,
        recall_steps=20,
        eval_iters=4,
        recall=dict(vocab_size=20, num_pairs=4, seq_len=16, num_train=200, num_val=50),
        bench_block=256,
        ctx_b1=[16, 240],
        budget="256KiB",
        ctx_budget=[64, 240],
        rounds=1,
        repeats=1,
        decode_tokens=4,
    ),
}
TASKS = ("shakespeare", "recall")

RUN_COLUMNS = ["task", "setting", "n_kv_head", "kv_lora_rank", "seed", "steps", "batch_size", "block_size",
               "params", "kv_bytes_per_token", "val_loss", "val_acc", "train_seconds", "n_layer", "n_embd",
               "weight_decay"]


def die(msg):
    print(f"study: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------
# settings


def parse_setting(name, n_head, head_size):
    """'MHA' | 'GQA-k' | 'MQA' | 'MLA-r' -> (name, n_kv_head, kv_lora_rank)."""
    if name == "MHA":
        return (name, n_head, 0)
    if name == "MQA":
        return (name, 1, 0)
    m = re.fullmatch(r"(GQA|MLA)-([1-9][0-9]*)", name)
    if not m:
        die(f"setting '{name}' is not MHA, GQA-k (k KV heads), MQA or MLA-r (latent width r)")
    k = int(m.group(2))
    if m.group(1) == "GQA":
        if n_head % k != 0 or k in (1, n_head):
            die(f"setting {name}: {k} KV heads must divide n_head {n_head} and lie strictly between 1 and it")
        return (name, k, 0)
    if k > 2 * n_head * head_size:
        die(f"setting {name}: latent width {k} is more than MHA's 2 n_head head_size = {2 * n_head * head_size}")
    return (name, n_head, k)


def kv_bytes_per_token(shape, n_kv_head, kv_lora_rank):
    """The float32 cache per token of one sequence, all layers (docs/design.md)."""
    hs = shape["n_embd"] // shape["n_head"]
    per_layer = kv_lora_rank if kv_lora_rank > 0 else 2 * n_kv_head * hs
    return shape["n_layer"] * per_layer * 4


# ----------------------------------------------------------------------------
# statistics


def betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df (real, > 0) degrees of freedom."""
    p = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - p if t > 0 else p


def t_quantile(p, df):
    """The t with t_cdf(t, df) = p (0.5 < p < 1), by bisection."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def describe(xs):
    """n, mean, sd (n - 1) and the 95% t-interval's half-width of xs."""
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return n, mean, sd, half


def welch(xs, ys):
    """mean(xs) - mean(ys) and Welch's 95% t-interval of it: (diff, lo, hi)."""
    nx, mx, sx, _ = describe(xs)
    ny, my, sy, _ = describe(ys)
    d = mx - my
    vx, vy = sx * sx / nx, sy * sy / ny
    se = math.sqrt(vx + vy)
    if not se > 0:  # no spread on either side (or a single run): the difference is all there is
        return d, d, d
    df = (vx + vy) ** 2 / (vx * vx / (nx - 1) + vy * vy / (ny - 1))
    half = t_quantile(0.975, df) * se
    return d, d - half, d + half


def reading(d, lo, hi, higher_is_better):
    if lo <= 0.0 <= hi:
        return "indistinguishable from MHA at this scale"
    worse = (d < 0) if higher_is_better else (d > 0)
    return "worse than MHA" if worse else "better than MHA"


# ----------------------------------------------------------------------------
# running gqa


def run(cmd, log_path):
    """Run cmd with stdout+stderr to log_path; die with its tail on failure."""
    with open(log_path, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        with open(log_path) as f:
            tail = f.read().splitlines()[-5:]
        die(f"`{' '.join(cmd)}` failed (exit {rc}); the end of {log_path}:\n  " + "\n  ".join(tail))


def final_eval(log_txt, steps):
    """(val_loss, val_acc or None) of the eval line at `steps` in a log.txt, or None."""
    if not os.path.exists(log_txt):
        return None
    found = None
    with open(log_txt) as f:
        for line in f:
            w = line.split()
            if len(w) >= 6 and w[0] == "eval" and w[1] == str(steps):
                acc = float(w[w.index("val_acc") + 1]) if "val_acc" in w else None
                found = (float(w[5]), acc)
    return found


_digests = {}


def digest(path):
    """sha1 of a file (once per path and run of this script)."""
    if path not in _digests:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digests[path] = h.hexdigest()
    return _digests[path]


def train_run(gqa, data_dir, out_dir, flags, steps):
    """Train one run unless out_dir already holds it for the same command, binary
    and data; returns (val_loss, val_acc, params, seconds)."""
    cmd = [gqa, "train", "--data_dir", data_dir, "--out_dir", out_dir] + flags
    stamp = os.path.join(out_dir, "study-cmd.txt")
    done = os.path.join(out_dir, "study-done.txt")
    inputs = [gqa] + [os.path.join(data_dir, f) for f in ("train.bin", "val.bin", "vocab.bin", "recall.bin")]
    key = " ".join(cmd) + "\n" + " ".join(digest(f) for f in inputs if os.path.exists(f)) + "\n"
    if os.path.exists(done) and open(stamp).read() == key:
        ev = final_eval(os.path.join(out_dir, "log.txt"), steps)
        params, seconds = open(done).read().split()
        if ev:
            return ev[0], ev[1], int(params), float(seconds)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with open(stamp, "w") as f:
        f.write(key)
    t0 = time.time()
    run(cmd, out_dir + ".out")
    seconds = time.time() - t0
    ev = final_eval(os.path.join(out_dir, "log.txt"), steps)
    if ev is None:
        die(f"{out_dir}/log.txt has no evaluation at step {steps}")
    m = re.search(r"parameters = (\d+)", open(out_dir + ".out").read())
    if not m:
        die(f"{out_dir}.out does not say the number of parameters")
    with open(done, "w") as f:
        f.write(f"{m.group(1)} {seconds:.1f}\n")
    return ev[0], ev[1], int(m.group(1)), seconds


def shape_flags(shape):
    return [x for k, v in shape.items() for x in (f"--{k}", str(v))]


def train_all(args, plan, settings, work, data):
    rows, start = [], time.time()
    total = len(TASKS) * len(settings) * args.seeds
    n = 0
    for seed in range(1, args.seeds + 1):
        for task in TASKS:
            text = task == "shakespeare"
            steps = plan["text_steps"] if text else plan["recall_steps"]
            shape = plan["shape"] if text else plan["recall_shape"]
            batch = plan["batch_size"] if text else plan["recall_batch_size"]
            wd = 0.1 if text else plan["recall_weight_decay"]  # 0.1: gqa train's default
            for name, kv, r in settings:
                n += 1
                flags = shape_flags(shape) + [
                    "--n_kv_head", str(kv), "--kv_lora_rank", str(r), "--seed", str(seed),
                    "--batch_size", str(batch), "--weight_decay", str(wd), "--max_iters", str(steps),
                    "--lr_decay_iters", str(steps), "--warmup_iters", str(min(100, steps // 10)),
                    "--eval_interval", str(steps), "--eval_iters", str(plan["eval_iters"]),
                    "--log_interval", str(steps), "--dropout", "0", "--pos", "learned"]
                out_dir = os.path.join(work, f"{task}-{name}-s{seed}")
                loss, acc, params, secs = train_run(args.gqa, data[task], out_dir, flags, steps)
                what = f"val loss {loss:.4f}" + (f", val acc {acc:.4f}" if acc is not None else "")
                print(f"study: run {n}/{total} ({time.time() - start:.0f} s): {task} {name} seed {seed}: "
                      f"{what} ({secs:.0f} s)", file=sys.stderr, flush=True)
                rows.append(dict(task=task, setting=name, n_kv_head=kv, kv_lora_rank=r, seed=seed, steps=steps,
                                 batch_size=batch, block_size=shape["block_size"], params=params,
                                 kv_bytes_per_token=kv_bytes_per_token(shape, kv, r), val_loss=f"{loss:.6f}",
                                 val_acc="" if acc is None else f"{acc:.6f}", train_seconds=f"{secs:.1f}",
                                 n_layer=shape["n_layer"], n_embd=shape["n_embd"], weight_decay=wd))
    return rows


def bench_all(args, plan, settings, work):
    """Two gqa bench runs on the trained shape with block_size bench_block: batch 1
    at ctx_b1, and the budget at ctx_budget. Returns the rows of both CSVs."""
    shape = dict(plan["shape"], block_size=plan["bench_block"])
    kvs = ",".join(str(kv) for _, kv, r in settings if r == 0)
    ranks = ",".join(str(r) for _, kv, r in settings if r > 0)
    base = [args.gqa, "bench"] + shape_flags(shape) + ["--vocab_size", "65", "--measure", "infer",
                                                       "--decode_tokens", str(plan["decode_tokens"]),
                                                       "--repeats", str(plan["repeats"])]
    if kvs:
        base += ["--n_kv_head", kvs]
    if ranks:
        base += ["--kv_lora_rank", ranks]
    rows = []
    for what, extra in (("batch 1", ["--batch_size", "1", "--ctx", ",".join(map(str, plan["ctx_b1"])),
                                     "--rounds", str(plan["rounds"])]),
                        ("budget", ["--kv_budget", plan["budget"], "--ctx", ",".join(map(str, plan["ctx_budget"])),
                                    "--rounds", str(plan["rounds"])])):
        csv_path = os.path.join(work, f"bench-{what.replace(' ', '')}.csv")
        t0 = time.time()
        print(f"study: gqa bench, decode at {what} ...", file=sys.stderr, flush=True)
        run(base + extra + ["--csv", csv_path], csv_path[:-4] + ".out")
        print(f"study: gqa bench, decode at {what}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                row["measure"] = what
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------
# the report, from the CSVs alone


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def fmt_ci(lo, hi, nd=4):
    return f"[{lo:.{nd}f}, {hi:.{nd}f}]"


def metrics_of(runs):
    """(task, column, label, higher_is_better) of the quality measures present."""
    out = []
    if any(r["task"] == "shakespeare" for r in runs):
        out.append(("shakespeare", "val_loss", "Tiny Shakespeare val loss", False))
    if any(r["task"] == "recall" for r in runs):
        out.append(("recall", "val_acc", "recall accuracy on the answers", True))
        out.append(("recall", "val_loss", "recall val loss on the answers", False))
    return out


def settings_of(runs):
    seen = []
    for r in runs:
        if r["setting"] not in seen:
            seen.append(r["setting"])
    return seen


def values(runs, task, setting, col):
    return [float(r[col]) for r in runs if r["task"] == task and r["setting"] == setting]


def b1_rows(bench, ctx):
    return {(int(b["n_kv_head"]), int(b["kv_lora_rank"])): b for b in bench
            if b["measure"] == "batch 1" and int(b["ctx"]) == ctx}


def kv_of(runs, task, name):
    """KV bytes per token of a setting's runs on a task (the tasks' shapes differ)."""
    return next(r["kv_bytes_per_token"] for r in runs if r["setting"] == name and r["task"] == task)


def setting_key(runs, name):
    r = next(r for r in runs if r["setting"] == name)
    return int(r["n_kv_head"]), int(r["kv_lora_rank"])


def quality_table(runs, names):
    lines = ["| measure | setting | KV bytes/token | runs | mean | sd | 95% interval | minus MHA [95% interval] | "
             "reading |", "|:---|:---|---:|---:|---:|---:|:---|:---|:---|"]
    verdicts = {}
    for task, col, label, hib in metrics_of(runs):
        ref = values(runs, task, "MHA", col)
        for name in names:
            xs = values(runs, task, name, col)
            if not xs:
                continue
            n, mean, sd, half = describe(xs)
            kvb = kv_of(runs, task, name)
            if name == "MHA" or not ref:
                diff, read = "", "(reference)" if name == "MHA" else ""
            else:
                d, lo, hi = welch(xs, ref)
                diff, read = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]", reading(d, lo, hi, hib)
                verdicts[(label, name)] = (read, d, lo, hi)
            lines.append(f"| {label} | {name} | {kvb} | {n} | {mean:.4f} | {sd:.4f} | "
                         f"{fmt_ci(mean - half, mean + half)} | {diff} | {read} |")
    return lines, verdicts


def summary_lines(runs, names, verdicts, chance, in_context):
    out = []
    for name in names:
        if name == "MHA":
            continue
        parts = []
        for task, col, label, hib in metrics_of(runs):
            if (label, name) in verdicts:
                read, d, lo, hi = verdicts[(label, name)]
                parts.append(f"on {label} {read} ({d:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}])")
        if parts:
            out.append(f"- **{name}**: " + "; ".join(parts) + ".")
    worse = sorted({f"{n} ({label})" for (label, n), v in verdicts.items() if v[0] == "worse than MHA"})
    out.append("")
    out.append("Significantly worse than MHA (95% interval of the difference excludes zero): " +
               (", ".join(worse) if worse else "no setting, on either task") + ".")
    if chance is not None:
        accs = {n: describe(values(runs, "recall", n, "val_acc")) for n in names if values(runs, "recall", n, "val_acc")}
        means = [a[1] for a in accs.values()]
        out.append(f"Recall accuracy ranges over {min(means):.4f}-{max(means):.4f} across settings, against "
                   f"{chance:.4f} for a guess among all {round(1 / chance)} values and {in_context:.4f} for a guess "
                   f"among the {round(1 / in_context)} values of the sequence, which needs no recall.")
        def per_seed(n):
            return ", ".join(f"{x:.3f}" for x in values(runs, "recall", n, "val_acc"))
        learned = {n: sum(x >= 0.9 for x in values(runs, "recall", n, "val_acc")) for n in accs}
        out.append("Runs that learned to recall (accuracy at least 0.9), by setting: " +
                   "; ".join(f"{n} {learned[n]} of {accs[n][0]} ({per_seed(n)})" for n in accs) + ".")
        if len(set(learned.values())) > 1 or min(learned.values()) < max(a[0] for a in accs.values()):
            out.append("Where some seeds learned and others did not, the interval spans both outcomes.")
    return out


def shape_text(shape):
    return (f"{shape['n_layer']} layers, {shape['n_head']} query heads of {shape['n_embd'] // shape['n_head']} "
            f"(n_embd {shape['n_embd']}), context {shape['block_size']}")


def write_report(out, plan_name, plan, cmdline):
    runs = read_csv(os.path.join(out, "runs.csv"))
    w = open(os.path.join(out, "wall.txt")).read().split()  # all, data + training[, bench_only]
    wall, train_wall, rebench = float(w[0]), float(w[1]), w[2:] == ["bench_only"]
    bench = read_csv(os.path.join(out, "bench.csv"))
    names = settings_of(runs)
    shape, rs = plan["shape"], plan["recall_shape"]
    rc = plan["recall"]
    chance = 2.0 / rc["vocab_size"] if any(r["task"] == "recall" for r in runs) else None
    in_context = 1.0 / rc["num_pairs"]
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    seeds = max(int(r["seed"]) for r in runs)
    L = [f"# What a smaller KV cache costs and buys: {', '.join(names)}", "",
         f"Generated by `{cmdline}` ({plan_name} plan) from [runs.csv](runs.csv) and [bench.csv](bench.csv); "
         f"nothing below is written by hand. Machine: {cpu}, {os.cpu_count()} threads. Wall time: {wall:.0f} s "
         f"({train_wall:.0f} s of it data and training, the rest `gqa bench`" +
         ("; speed and capacity measured again later by `python3 scripts/study.py --bench_only`" if rebench else "") + ").", "",
         "## Setup", "",
         f"- Models: {shape_text(shape)} on Tiny Shakespeare (batch {plan['batch_size']}, {plan['text_steps']} steps, "
         f"weight decay 0.1); {shape_text(rs)} on recall (batch {plan['recall_batch_size']}, {plan['recall_steps']} "
         f"steps, weight decay {plan['recall_weight_decay']:g}). Learned positions, dropout 0; the settings differ in "
         "the attention alone (n_kv_head, or MLA's kv_lora_rank), every one trained on the same tokens.",
         f"- Training: {seeds} seeds per setting and task; AdamW with lr 1e-3, cosine to 1e-4 (gqa train's "
         f"defaults); val loss over {plan['eval_iters']} batches at the last step.",
         f"- Recall: `gqa prepare --task recall` with vocab_size {rc['vocab_size']}, num_pairs {rc['num_pairs']}, "
         f"seq_len {rc['seq_len']} ({rc['num_train']} train sequences); loss on the answer positions alone "
         "(loss_on answers); accuracy = argmax hits on the answers.",
         "- Statistics: mean and sd over seeds; 95% interval = mean +- t(0.975, n-1) sd/sqrt(n); the difference "
         "to MHA with Welch's 95% t-interval. A difference whose interval contains zero reads "
         "\"indistinguishable from MHA at this scale\".",
         f"- Speed and capacity: `gqa bench` on the text runs' shape with random weights and block_size "
         f"{plan['bench_block']}, float32 KV cache: decode at batch 1 (ctx {', '.join(map(str, plan['ctx_b1']))}; "
         f"{plan['rounds']} rounds round-robin x {plan['repeats']} repeats, median tok/s), and at a KV-cache budget "
         f"of {plan['budget']} the largest batch that fits at each context and its aggregate decode tok/s.", "",
         "## Quality", ""]
    qt, verdicts = quality_table(runs, names)
    L += qt
    L += ["", "## Speed and capacity", ""]
    ctx_long = plan["ctx_b1"][-1]
    head = "| setting | KV bytes/token | " + " | ".join(f"decode tok/s, batch 1, ctx {c}" for c in plan["ctx_b1"])
    head += f" | ms/token at ctx {ctx_long} | longest ctx at batch 1 in {plan['budget']} |"
    L += [head, "|:---|---:|" + "---:|" * (len(plan["ctx_b1"]) + 2)]
    budget_rows = [b for b in bench if b["measure"] == "budget"]
    for name in names:
        key = setting_key(runs, name)
        kvb = kv_of(runs, "shakespeare", name)  # the bench's shape is the text runs'
        cells = []
        for c in plan["ctx_b1"]:
            b = b1_rows(bench, c).get(key)
            cells.append(f"{float(b['decode_tok_s_median']):.0f}" if b else "-")
        b = b1_rows(bench, ctx_long).get(key)
        ms = f"{1000.0 / float(b['decode_tok_s_median']):.3f}" if b else "-"
        mx = next((b["budget_max_ctx_batch1"] for b in budget_rows
                   if (int(b["n_kv_head"]), int(b["kv_lora_rank"])) == key), "-")
        L.append(f"| {name} | {kvb} | " + " | ".join(cells) + f" | {ms} | {mx} |")
    L += ["", f"At the budget of {plan['budget']} (largest batch whose cache fits, aggregate decode tok/s):", "",
          "| setting | " + " | ".join(f"ctx {c}: batch, tok/s" for c in plan["ctx_budget"]) + " |",
          "|:---|" + "---:|" * len(plan["ctx_budget"])]
    for name in names:
        key = setting_key(runs, name)
        cells = []
        for c in plan["ctx_budget"]:
            b = next((b for b in budget_rows if (int(b["n_kv_head"]), int(b["kv_lora_rank"])) == key
                      and int(b["ctx"]) == c), None)
            if b is None:
                cells.append("-")
            elif b["budget_status"] != "fits":
                cells.append(b["budget_status"].replace("_", " "))
            else:
                cells.append(f"{b['budget_batch']}, {float(b['decode_tok_s_median']):.0f}")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += ["", "## Summary", ""]
    L += summary_lines(runs, names, verdicts, chance, in_context)
    L += ["", "## Plots", "",
          "Quality against KV-cache bytes per token (mean and 95% interval over seeds):", "",
          "![quality against KV bytes](quality_kv.png)", "",
          f"Quality against decode time per token (batch 1, ctx {ctx_long}; the GQA paper's Figure 3):", "",
          "![quality against decode time](quality_time.png)", "",
          f"Aggregate decode throughput at the {plan['budget']} budget against context:", "",
          "![throughput at the budget](budget.png)", ""]
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(L))


def plot(out, plan):
    if not shutil.which("gnuplot"):
        die("gnuplot is not installed (apt-get install gnuplot-nox); the CSVs and study.md are written")
    runs = read_csv(os.path.join(out, "runs.csv"))
    bench = read_csv(os.path.join(out, "bench.csv"))
    names = settings_of(runs)
    tmp = tempfile.mkdtemp(prefix="gqa_study_plot_")
    ctx_long = plan["ctx_b1"][-1]
    b1 = b1_rows(bench, ctx_long)
    panels = metrics_of(runs)[:2]  # Shakespeare val loss, recall accuracy
    for task, col, label, _ in panels:
        with open(os.path.join(tmp, f"{task}-{col}.dat"), "w") as f:
            for name in names:
                xs = values(runs, task, name, col)
                if not xs:
                    continue
                n, mean, sd, half = describe(xs)
                kvb = kv_of(runs, task, name)
                b = b1.get(setting_key(runs, name))
                ms = 1000.0 / float(b["decode_tok_s_median"]) if b else float("nan")
                kind = 2 if name.startswith("MLA") else 1  # colour; MLA drawn a little right of its bytes
                f.write(f"{kvb} {mean} {half if n > 1 else 0} {ms} {name} {kind}\n")
    with open(os.path.join(tmp, "budget.dat"), "w") as f:
        for name in names:
            key = setting_key(runs, name)
            f.write(f"# {name}\n")
            for b in bench:
                if (b["measure"] == "budget" and (int(b["n_kv_head"]), int(b["kv_lora_rank"])) == key
                        and b["budget_status"] == "fits"):
                    f.write(f"{b['ctx']} {b['decode_tok_s_median']}\n")
            f.write("\n\n")
    gp = ["set terminal pngcairo size 1000,460 font ',10' noenhanced", "set grid"]
    for png, xcol, xlabel, logx in (("quality_kv.png", "($1*($6==2?1.07:1))",
                                     "KV-cache bytes per token (float32, all layers)", True),
                                    ("quality_time.png", "4", f"decode ms per token (batch 1, ctx {ctx_long})", False)):
        gp += [f"set output '{out}/{png}'", f"set multiplot layout 1,{len(panels)}",
               "set logscale x 2" if logx else "unset logscale x", "set offsets graph 0.12, graph 0.12, 0, 0"]
        for task, col, label, _ in panels:
            dat = os.path.join(tmp, f"{task}-{col}.dat")
            gp += [f"set title '{label}: mean, 95% interval'", f"set xlabel '{xlabel}'", f"set ylabel '{label}'",
                   f"plot '{dat}' using {xcol}:2:3:6 with yerrorbars pt 7 ps 1.2 lc variable notitle, "
                   f"'' using {xcol}:2:5 with labels left offset 1,0.5 notitle"]
        gp += ["unset multiplot", "unset offsets"]
    gp += [f"set output '{out}/budget.png'", "set terminal pngcairo size 800,500 font ',10' noenhanced",
           "unset logscale x", "set logscale xy 2", f"set title 'aggregate decode tok/s at a {plan['budget']} "
           "KV-cache budget (largest batch that fits)'", "set xlabel 'context (positions in the cache)'",
           "set ylabel 'decode tok/s, all sequences'", "set key top right",
           "plot " + ", ".join(f"'{tmp}/budget.dat' index {i} using 1:2 with linespoints pt 7 title '{n}'"
                               for i, n in enumerate(names))]
    with open(os.path.join(tmp, "plots.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    run(["gnuplot", os.path.join(tmp, "plots.gp")], os.path.join(tmp, "gnuplot.out"))
    shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "study"), help="report directory (default docs/study)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per setting and task (default 3; quick 2)")
    ap.add_argument("--settings", default="MHA,GQA-2,MQA,MLA-128",
                    help="comma list of MHA, GQA-k, MQA, MLA-r (default MHA,GQA-2,MQA,MLA-128; quick: MLA-16)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, seconds: a check of the pipeline")
    ap.add_argument("--gqa", default=os.path.join(ROOT, "gqa"), help="the gqa binary (default ./gqa)")
    ap.add_argument("--work", default=None, help="where runs are kept (default OUT/work)")
    ap.add_argument("--keep_work", action="store_true", help="keep the runs after the report")
    ap.add_argument("--report_only", action="store_true", help="remake study.md and plots from OUT's CSVs")
    ap.add_argument("--bench_only", action="store_true",
                    help="measure speed and capacity again (bench.csv), keep OUT's runs.csv, remake the report")
    args = ap.parse_args()
    plan_name = "quick" if args.quick else "default"
    plan = PLANS[plan_name]
    seeds_given, default_settings = args.seeds, ap.get_default("settings")
    if args.seeds is None:
        args.seeds = 2 if args.quick else 3
    if args.seeds < 2:
        die(f"--seeds {args.seeds}: intervals need at least 2 seeds")
    if args.quick and args.settings == default_settings:
        args.settings = default_settings = "MHA,GQA-2,MQA,MLA-16"
    shape, rs = plan["shape"], plan["recall_shape"]
    hs = shape["n_embd"] // shape["n_head"]
    assert rs["n_head"] == shape["n_head"] and rs["n_embd"] // rs["n_head"] == hs, "a setting must mean the same"
    settings = [parse_setting(s, shape["n_head"], hs) for s in args.settings.split(",")]
    if settings[0][0] != "MHA":
        die("the first setting must be MHA: every difference is taken to it")
    if not (os.access(args.gqa, os.X_OK)):
        die(f"{args.gqa} is not built (run make)")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    work = os.path.abspath(args.work or os.path.join(out, "work"))
    flags = (["--quick"] if args.quick else []) + (["--seeds", str(seeds_given)] if seeds_given else [])
    flags += ["--settings", args.settings] if args.settings != default_settings else []
    cmdline = "make study" + (f" STUDY_FLAGS='{' '.join(flags)}'" if flags else "")
    if args.report_only:
        write_report(out, plan_name, plan, cmdline)
        plot(out, plan)
        print(open(os.path.join(out, "study.md")).read())
        return
    os.makedirs(work, exist_ok=True)
    t0 = time.time()

    # the data: Tiny Shakespeare (shipped; tokenized once) and the recall task
    text = os.path.join(ROOT, "data", "shakespeare_char")
    if not os.path.exists(os.path.join(text, "train.bin")):
        run(["sh", os.path.join(text, "prepare.sh")], os.path.join(work, "prepare-text.out"))
    rec = os.path.join(work, "recall")
    rflags = [x for k, v in plan["recall"].items() for x in (f"--{k}", str(v))]
    run([args.gqa, "prepare", "--task", "recall", "--out_dir", rec] + rflags, os.path.join(work, "prepare-recall.out"))

    if args.bench_only:  # the training runs' share of the wall time stays as recorded
        train_wall = float(open(os.path.join(out, "wall.txt")).read().split()[1])
        bench = bench_all(args, plan, settings, work)
        wall = train_wall + time.time() - t0
    else:
        rows = train_all(args, plan, settings, work, {"shakespeare": text, "recall": rec})
        train_wall = time.time() - t0
        bench = bench_all(args, plan, settings, work)
        wall = time.time() - t0
        with open(os.path.join(out, "runs.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=RUN_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    cols = ["measure"] + [c for c in bench[0].keys() if c != "measure"]
    with open(os.path.join(out, "bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(bench)
    with open(os.path.join(out, "wall.txt"), "w") as f:
        f.write(f"{wall:.0f} {train_wall:.0f}{' bench_only' if args.bench_only else ''}\n")
    write_report(out, plan_name, plan, cmdline)
    plot(out, plan)
    if not args.keep_work and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(open(os.path.join(out, "study.md")).read())
    print(f"study: done in {time.time() - t0:.0f} s; report in {out}/study.md", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\nstudy: interrupted; the finished runs are kept (--work, default OUT/work) and the same "
              "command resumes from them", file=sys.stderr)
        sys.exit(130)
