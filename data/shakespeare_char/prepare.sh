#!/bin/sh
# prepare.sh: Tiny Shakespeare -> data/shakespeare_char/{train,val,vocab}.bin
# (nanoGPT's data/shakespeare_char/prepare.py, via `gqa prepare`).
#
# Usage: sh data/shakespeare_char/prepare.sh [PATH]
#   The text is PATH, or else data/shakespeare_char/input.txt, which ships
#   with the repository (Tiny Shakespeare as in karpathy/char-rnn, see
#   README.md beside it). It must have the known sha256. Nothing is redone
#   when the three .bin files are newer than the text. GQA=path/to/gqa
#   overrides the binary (default: ./gqa at the repo root).
set -eu

SHA256=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(CDPATH='' cd -- "$here/../.." && pwd)
out_dir=$root/data/shakespeare_char
GQA=${GQA:-$root/gqa}

die() {
    echo "error: $*" >&2
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 -- "$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is installed; cannot verify $1"
    fi
}

# verify FILE: refuse anything that is not Tiny Shakespeare
verify() {
    got=$(sha256_of "$1")
    [ "$got" = "$SHA256" ] ||
        die "$1 has sha256 $got, expected $SHA256 (not Tiny Shakespeare, or damaged; remove it or pass the right file)"
}

# ---- find the text
if [ $# -gt 1 ]; then
    die "usage: sh data/shakespeare_char/prepare.sh [PATH-TO-TINYSHAKESPEARE]"
elif [ $# -eq 1 ]; then
    [ -f "$1" ] || die "$1: no such file"
    input=$1
else
    input=$out_dir/input.txt
    [ -f "$input" ] || die "$input is missing: it ships with the repository (git checkout -- $input restores it)"
fi
verify "$input"
echo "input: $input (sha256 ok)"

# ---- skip when the token files are up to date
newer() { [ -f "$1" ] && [ -n "$(find "$1" -prune -newer "$2")" ]; }
if newer "$out_dir/train.bin" "$input" && newer "$out_dir/val.bin" "$input" && newer "$out_dir/vocab.bin" "$input"; then
    echo "skipped: $out_dir/{train,val,vocab}.bin are newer than $input (delete them to redo)"
    exit 0
fi

# ---- tokenize
if [ ! -x "$GQA" ] && ! command -v "$GQA" >/dev/null 2>&1; then
    die "$GQA not found; build it first (make) or set GQA=path/to/gqa"
fi
"$GQA" prepare --input "$input" --out_dir "$out_dir"
