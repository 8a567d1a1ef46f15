#!/bin/sh
# test_cli.sh: the command line as a user meets it: help, info, and clear
# errors (message + non-zero exit, never a signal) on bad flags and shapes.
# Usage: sh tests/test_cli.sh ./gqa
GQA=${1:-./gqa}
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect STATUS NEEDLE -- cmd...: exit status must equal STATUS and the
# combined output must contain NEEDLE
expect() {
    want=$1 needle=$2; shift 3
    out=$("$@" 2>&1); got=$?
    if [ "$got" -ne "$want" ]; then bad "$* exited $got, want $want: $out"; return; fi
    case "$out" in *"$needle"*) ok ;; *) bad "$*: output lacks '$needle': $out" ;; esac
}

expect 0 "commands:" -- "$GQA" --help
expect 2 "usage: gqa" -- "$GQA"
expect 2 "unknown command 'frobnicate'" -- "$GQA" frobnicate
expect 0 "--n_kv_head" -- "$GQA" info --help
expect 0 "kv cache per token: 18432 bytes" -- "$GQA" info --n_layer 6 --n_head 6 --n_kv_head 6 --n_embd 384
expect 0 "kv cache per token: 3072 bytes" -- "$GQA" info --n_layer=6 --n_head=6 --n_kv_head=1 --n_embd=384
expect 0 "parameters: 10745088" -- "$GQA" info --n_layer=6 --n_head=6 --n_kv_head=6 --n_embd=384 --vocab_size 65 --block_size 256 --bias 0
expect 1 "n_head 6 is not divisible by n_kv_head 4" -- "$GQA" info --n_head 6 --n_kv_head 4
expect 1 "n_embd 100 is not divisible by n_head 6" -- "$GQA" info --n_embd 100
expect 1 "n_kv_head must be in [1, n_head=6], got 8" -- "$GQA" info --n_kv_head 8
expect 1 "option 'n_layer': 0 is out of range" -- "$GQA" info --n_layer 0
expect 1 "option 'n_head': 'abc' is not an integer" -- "$GQA" info --n_head abc
expect 1 "unknown option 'n_kv_heads'" -- "$GQA" info --n_kv_heads 2
expect 1 "option '--n_embd' needs a value" -- "$GQA" info --n_embd

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
