#!/usr/bin/env python3
"""gguf_export.py: a gqa.c model as a GGUF file of llama.cpp's "gpt2"
architecture, so that llama.cpp can be timed on the same shape and weights
(scripts/bench_vs_llama.sh). Python's standard library only.

    gguf_export.py --ckpt CKPT --out FILE [--type f32|f16|q8_0]
    gguf_export.py --random V,T,L,NH,NKV,C [--seed S] --out FILE [--type ...]

--ckpt reads a gqa.c checkpoint (docs/formats.md, versions 1 to 3): grouped
attention with learned positions only (gpt2 has a wpe and no rotary or
latent attention), biases written as zeros when the model has none. Its
characters become the GGUF vocabulary (ASCII only: gpt2's byte-level BPE
spells other characters as byte sequences, which this file does not merge).
--random writes normal(0, 0.02) weights of a shape instead (timing does not
depend on the values), with a 256-token byte vocabulary (V must be 256).

The matrices (token and position embeddings, qkv, attn_output, ffn_up,
ffn_down) take --type; LayerNorms and biases stay f32. q8_0 is llama.cpp's:
blocks of 32 weights along a row, an f16 scale d = max|w| / 127 and int8
q = round(w / d). The LM head is the token embedding (tied), as in gqa.c.
"""
import argparse
import math
import random
import struct
import sys

GGUF_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}
ALIGN = 32


def bytes_to_unicode():
    """GPT-2's printable stand-in for every byte (its byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def read_checkpoint(path):
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"GQAC":
        sys.exit(f"error: {path}: not a gqa.c checkpoint (magic {buf[:4]!r})")
    version = struct.unpack_from("<I", buf, 4)[0]
    if not 1 <= version <= 3:
        sys.exit(f"error: {path}: checkpoint version {version} (this script reads 1 to 3)")
    V, T, L, NH, NKV, C, bias = struct.unpack_from("<7i", buf, 8)
    np_, vlen = struct.unpack_from("<QI", buf, 44)
    header = {1: 56, 2: 64, 3: 76}[version]
    pos = struct.unpack_from("<i", buf, 56)[0] if version >= 2 else 0
    rank = struct.unpack_from("<i", buf, 64)[0] if version >= 3 else 0
    if pos != 0 or rank != 0:
        sys.exit(f"error: {path}: gpt2 in llama.cpp has learned positions and grouped attention "
                 f"(this model: pos {pos}, kv_lora_rank {rank})")
    vocab = buf[header:header + vlen]
    nv = struct.unpack_from("<I", vocab, 0)[0]
    codepoints = struct.unpack_from(f"<{nv}I", vocab, 4)
    if any(c > 127 for c in codepoints):
        sys.exit(f"error: {path}: the vocabulary has non-ASCII characters, which gpt2's byte-level BPE spells "
                 "as several bytes (not supported here)")
    params = struct.unpack_from(f"<{np_}f", buf, header + vlen)
    cfg = dict(V=V, T=T, L=L, NH=NH, NKV=NKV, C=C, bias=bias)
    enc = bytes_to_unicode()
    tokens = [enc[c] for c in codepoints]
    return cfg, params, tokens


def split_params(cfg, params):
    """The parameter arena (gpt_param_sizes' order) as named flat lists."""
    V, T, L, NH, NKV, C, bias = (cfg[k] for k in ("V", "T", "L", "NH", "NKV", "C", "bias"))
    HS = C // NH
    QKV = (NH + 2 * NKV) * HS
    b = 1 if bias else 0
    sizes = [("wte", V * C), ("wpe", T * C), ("ln1w", L * C), ("ln1b", b * L * C), ("qkvw", L * QKV * C),
             ("qkvb", b * L * QKV), ("attprojw", L * C * C), ("attprojb", b * L * C), ("ln2w", L * C),
             ("ln2b", b * L * C), ("fcw", L * 4 * C * C), ("fcb", b * L * 4 * C), ("fcprojw", L * C * 4 * C),
             ("fcprojb", b * L * C), ("lnfw", C), ("lnfb", b * C)]
    if sum(n for _, n in sizes) != len(params):
        sys.exit(f"error: {len(params)} parameters, but the shape implies {sum(n for _, n in sizes)}")
    out, i = {}, 0
    for name, n in sizes:
        out[name] = params[i:i + n]
        i += n
    return out


def random_params(cfg, seed):
    rng = random.Random(seed)
    V, T, L, C = cfg["V"], cfg["T"], cfg["L"], cfg["C"]
    QKV = (cfg["NH"] + 2 * cfg["NKV"]) * (C // cfg["NH"])

    def normal(n, std=0.02):
        return [rng.gauss(0.0, std) for _ in range(n)]

    return {"wte": normal(V * C), "wpe": normal(T * C), "ln1w": [1.0] * (L * C), "ln1b": [0.0] * (L * C),
            "qkvw": normal(L * QKV * C), "qkvb": [0.0] * (L * QKV), "attprojw": normal(L * C * C),
            "attprojb": [0.0] * (L * C), "ln2w": [1.0] * (L * C), "ln2b": [0.0] * (L * C),
            "fcw": normal(L * 4 * C * C), "fcb": [0.0] * (L * 4 * C), "fcprojw": normal(L * 4 * C * C),
            "fcprojb": [0.0] * (L * C), "lnfw": [1.0] * C, "lnfb": [0.0] * C}


def encode(values, ggml_type):
    if ggml_type == "f32":
        return struct.pack(f"<{len(values)}f", *values)
    if ggml_type == "f16":
        return struct.pack(f"<{len(values)}e", *values)
    out = bytearray()  # q8_0, blocks of 32 along the row (rows are multiples of 32 here)
    for i in range(0, len(values), 32):
        block = values[i:i + 32]
        amax = max(abs(v) for v in block)
        d = amax / 127.0
        inv = 1.0 / d if d else 0.0
        out += struct.pack("<e", d)
        out += struct.pack("<32b", *(max(-127, min(127, int(math.floor(abs(v) * inv + 0.5)) * (1 if v >= 0 else -1))) for v in block))
    return bytes(out)


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def tensor(self, name, dims, ggml_type, values):
        self.tensors.append((name, dims, ggml_type, encode(values, ggml_type)))

    @staticmethod
    def string(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def value(self, vtype, v):
        if vtype == "u32":
            return struct.pack("<I", 4) + struct.pack("<I", v)
        if vtype == "i32":
            return struct.pack("<I", 5) + struct.pack("<i", v)
        if vtype == "f32":
            return struct.pack("<I", 6) + struct.pack("<f", v)
        if vtype == "bool":
            return struct.pack("<I", 7) + struct.pack("<B", 1 if v else 0)
        if vtype == "str":
            return struct.pack("<I", 8) + self.string(v)
        if vtype == "str[]":
            return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(self.string(s) for s in v)
        if vtype == "i32[]":
            return struct.pack("<IIQ", 9, 5, len(v)) + struct.pack(f"<{len(v)}i", *v)
        raise ValueError(vtype)

    def write(self, path):
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        head += b"".join(self.string(k) + self.value(t, v) for k, t, v in self.kv)
        offset, infos = 0, b""
        for name, dims, ggml_type, data in self.tensors:
            infos += self.string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            infos += struct.pack("<IQ", GGUF_TYPES[ggml_type], offset)
            offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
        head += infos
        head += b"\0" * (-len(head) % ALIGN)
        with open(path + ".tmp", "wb") as f:
            f.write(head)
            for _, _, _, data in self.tensors:
                f.write(data + b"\0" * (-len(data) % ALIGN))
        import os
        os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="a gqa.c checkpoint")
    src.add_argument("--random", help="V,T,L,NH,NKV,C: random weights of this shape (V = 256)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--type", choices=sorted(GGUF_TYPES), default="f32", help="the matrices' element type")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.ckpt:
        cfg, params, tokens = read_checkpoint(a.ckpt)
        p = split_params(cfg, params)
    else:
        try:
            V, T, L, NH, NKV, C = (int(x) for x in a.random.split(","))
        except ValueError:
            sys.exit(f"error: --random '{a.random}' is not V,T,L,NH,NKV,C")
        if V != 256 or C % NH or NH % NKV:
            sys.exit("error: --random needs V = 256, n_embd % n_head == 0 and n_head % n_kv_head == 0")
        cfg = dict(V=V, T=T, L=L, NH=NH, NKV=NKV, C=C, bias=1)
        p = random_params(cfg, a.seed)
        enc = bytes_to_unicode()
        tokens = [enc[b] for b in range(256)]
    V, T, L, NH, NKV, C = (cfg[k] for k in ("V", "T", "L", "NH", "NKV", "C"))
    if a.type == "q8_0" and C % 32:
        sys.exit(f"error: q8_0 needs rows of whole blocks of 32 (n_embd {C})")
    QKV = (NH + 2 * NKV) * (C // NH)
    zeros = lambda n: [0.0] * n  # noqa: E731
    w = Writer()
    w.add("general.architecture", "str", "gpt2")
    w.add("general.name", "str", "gqa.c")
    w.add("general.alignment", "u32", ALIGN)
    w.add("gpt2.context_length", "u32", T)
    w.add("gpt2.embedding_length", "u32", C)
    w.add("gpt2.feed_forward_length", "u32", 4 * C)
    w.add("gpt2.block_count", "u32", L)
    w.add("gpt2.attention.head_count", "u32", NH)
    w.add("gpt2.attention.head_count_kv", "u32", NKV)
    w.add("gpt2.attention.layer_norm_epsilon", "f32", 1e-5)
    w.add("tokenizer.ggml.model", "str", "gpt2")
    w.add("tokenizer.ggml.pre", "str", "gpt-2")
    w.add("tokenizer.ggml.tokens", "str[]", tokens)
    w.add("tokenizer.ggml.token_type", "i32[]", [1] * len(tokens))
    w.add("tokenizer.ggml.merges", "str[]", [])
    w.add("tokenizer.ggml.bos_token_id", "u32", 0)
    w.add("tokenizer.ggml.eos_token_id", "u32", 0)
    w.add("tokenizer.ggml.add_bos_token", "bool", False)
    t = a.type
    w.tensor("token_embd.weight", [C, V], t, p["wte"])
    w.tensor("position_embd.weight", [C, T], t, p["wpe"])
    for l in range(L):
        def part(name, n):
            v = p[name]
            return v[l * n:(l + 1) * n] if v else zeros(n)
        w.tensor(f"blk.{l}.attn_norm.weight", [C], "f32", part("ln1w", C))
        w.tensor(f"blk.{l}.attn_norm.bias", [C], "f32", part("ln1b", C))
        w.tensor(f"blk.{l}.attn_qkv.weight", [C, QKV], t, part("qkvw", QKV * C))
        w.tensor(f"blk.{l}.attn_qkv.bias", [QKV], "f32", part("qkvb", QKV))
        w.tensor(f"blk.{l}.attn_output.weight", [C, C], t, part("attprojw", C * C))
        w.tensor(f"blk.{l}.attn_output.bias", [C], "f32", part("attprojb", C))
        w.tensor(f"blk.{l}.ffn_norm.weight", [C], "f32", part("ln2w", C))
        w.tensor(f"blk.{l}.ffn_norm.bias", [C], "f32", part("ln2b", C))
        w.tensor(f"blk.{l}.ffn_up.weight", [C, 4 * C], t, part("fcw", 4 * C * C))
        w.tensor(f"blk.{l}.ffn_up.bias", [4 * C], "f32", part("fcb", 4 * C))
        w.tensor(f"blk.{l}.ffn_down.weight", [4 * C, C], t, part("fcprojw", 4 * C * C))
        w.tensor(f"blk.{l}.ffn_down.bias", [C], "f32", part("fcprojb", C))
    w.tensor("output_norm.weight", [C], "f32", p["lnfw"])
    w.tensor("output_norm.bias", [C], "f32", p["lnfb"] if p["lnfb"] else zeros(C))
    w.write(a.out)
    print(f"wrote {a.out}: gpt2, n_layer {L}, n_head {NH}, n_kv_head {NKV}, n_embd {C}, vocab {V}, ctx {T}, {t}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
