#!/usr/bin/python3
"""ref_gpt.py: an independent PyTorch reference of gqa.c's GPT.

Written from the model description (GPT-2 shape, pre-LN, tanh GELU, tied LM
head, grouped-query attention with repeat_interleave, or multi-head latent
attention), not from the C code. It builds a tiny model with random weights,
runs it in float64 and writes a fixture per n_kv_head and attention variant:
config, weights, inputs, targets, logits, loss, every parameter gradient (in
gqa.c's arena order), and the losses of a few AdamW steps. tests/test_model.c
compares the C model against these files.

Positions are learned (GPT-2's wpe: gpt_nkv*.bin) or rotary (gpt_rope_nkv*.bin:
no wpe; RoPE from its formula in the GPT-NeoX / Llama "rotate half" form,
x * cos + rotate_half(x) * sin on every query and key head before the scores,
angle t * theta^(-2i/HS) for the pair (i, i + HS/2); theta 10000, and 100 for
n_kv_head 2 so that every pair turns noticeably over 10 positions).

Multi-head latent attention (gpt_mla*.bin; DeepSeek-V2, written from the
equations of the paper as agreed in the MLA spec, in its unabsorbed form):
with kv_lora_rank r > 0 (n_kv_head = n_head) each token's keys and values come
from one latent c = rmsnorm(x W_dkv^T + b_dkv) * kvnw (eps 1e-6; no norm when
latent_norm = 0) of width r: k_nope_h = c W_uk_h^T, v_h = c W_uv_h^T (+ biases).
The query projection gives per head [q_nope (HS) | q_rope (dR)], dR =
rope_head_dim. With pos = rope a decoupled key k_rope = x W_kr^T, shared by all
heads, and each head's q_rope are rotated (rotate half over the dR-wide parts only,
angle t * theta^(-2i/dR)); scores are [q_nope | q_rope] . [k_nope | k_rope] /
sqrt(HS + dR). Learned positions have dR = 0. The tensors sit in the arena
between qkvb and attprojw: qkvw is then the query projection only (L, NH*D, C),
D = HS + dR, head h's rows [nope | rope]; dkvw (L, r + dR, C) = [W_dkv | W_kr],
dkvb; kvnw (L, r) when latent_norm = 1; ukvw (L, 2*NH*HS, r) = [W_uk of heads
0..NH-1 | W_uv of heads 0..NH-1], ukvb. They are empty in grouped fixtures.

Regenerate every fixture (it takes seconds; no build step involved):

    /usr/bin/python3 scripts/ref_gpt.py --out_dir tests/fixtures

then `git diff --stat tests/fixtures` should list nothing but files you meant to
add. One known exception: the gradient of the key bias (qkvb's K rows; in MLA
ukvb's W_uk rows) is zero in exact arithmetic (softmax ignores a constant added
to a row of scores), and its float64 round-off, ~1e-17, depends on the torch
build: the committed gpt_nkv{4,2,1}.bin differ in those entries alone when
regenerated with torch 1.13 here; keep the committed files then
(`git checkout tests/fixtures/gpt_nkv4.bin ...`).

The bench mode times the same architecture in float32, as the PyTorch side
of scripts/bench_vs_torch.sh (random weights, GPT-2 init; values do not
matter for timing):

    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
        /usr/bin/python3 scripts/ref_gpt.py bench --what train|decode \
        [--vocab_size V --n_layer L --n_head NH --n_kv_head G --n_embd C \
         --block_size T --batch_size B --ctx N --steps S --repeats R \
         --threads 2 --bias 1 --seed 1337]

  train:  optimizer steps at (batch_size, block_size): forward, cross-entropy,
          backward, AdamW(lr 1e-4, betas (0.9, 0.99), weight_decay 0.1) step,
          zero_grad(set_to_none=True); 2 untimed warm-up steps, then R repeats
          of S steps; prints `RESULT train <tok/s per repeat>`.
  decode: a preallocated K, V cache per layer, (B, G, ctx + S, HS), random up
          to ctx; S steps of one token per sequence at positions ctx.. (the
          argmax of the last logits is the next token), under inference_mode;
          grouped attention without repeating K/V; one untimed repeat, then R
          from ctx each; prints `RESULT decode <B * S / seconds per repeat>`.

The LD_LIBRARY_PATH matters: Debian's python3-torch calls whatever
libblas.so.3 resolves to, by default not the OpenMP OpenBLAS (here once the
slow reference BLAS: a cfg-s step ~1 s instead of ~80 ms). The bench prints
the BLAS library it found on stderr and warns when it is not that one.

Fixture format (little-endian): b"GQAF", u32 version (1: learned positions,
2: with the position fields, 3: with the MLA fields), 10 x i32 (vocab_size,
block_size, n_layer, n_head, n_kv_head, n_embd, bias, B, T, steps), 5 x f32
(lr, beta1, beta2, eps, weight_decay), in versions 2 and 3 then i32 pos
(0 learned, 1 rope) and f32 rope_theta (10000 with learned positions, unused),
in version 3 then i32 kv_lora_rank, i32 rope_head_dim, i32 latent_norm (the
header is 68 bytes in version 1, 76 in 2, 88 in 3), then f32 params[P], i32 inputs[B*T], i32 targets[B*T],
f32 logits[B*T*V], f32 loss, f32 grads[P], f32 step_losses[steps + 1]; params
and grads in the arena order above. Each fixture has the oldest version that
holds it: grouped learned-position fixtures are version 1, grouped RoPE ones
version 2 (both as they were committed), MLA ones version 3.
"""
import argparse
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch 1.13's has none to switch off)."""

    def __init__(self, C, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """z / sqrt(mean(z^2) + eps) * weight, no bias (DeepSeek's kv_a_layernorm on the MLA latent)."""

    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, z):
        return z * torch.rsqrt(z.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(T, HS, theta):
    """cos and sin (T, HS) of the angle t * theta^(-2i/HS) of position t and
    pair i < HS/2, each repeated over both halves of a head (float64).
    MLA rotates only the decoupled parts: there HS is rope_head_dim dR."""
    inv_freq = 1.0 / theta ** (torch.arange(0, HS, 2, dtype=torch.float64) / HS)
    angle = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, HS/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, HS)
    return angle.cos(), angle.sin()


def rotate_half(x):
    """(x1, x2) -> (-x2, x1), halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """x (..., T, HS) rotated by position: the pair (x[i], x[i + HS/2]) turns by angle[t, i]."""
    return x * cos + rotate_half(x) * sin


class Block(nn.Module):
    def __init__(self, C, NH, NKV, bias):
        super().__init__()
        self.C, self.NH, self.NKV, self.HS = C, NH, NKV, C // NH
        self.ln_1 = LayerNorm(C, bias)
        self.c_attn = nn.Linear(C, (NH + 2 * NKV) * self.HS, bias=bias)
        self.c_proj = nn.Linear(C, C, bias=bias)
        self.ln_2 = LayerNorm(C, bias)
        self.c_fc = nn.Linear(C, 4 * C, bias=bias)
        self.mlp_proj = nn.Linear(4 * C, C, bias=bias)

    def attn(self, x, rope=None):
        B, T, C = x.shape
        NH, NKV, HS = self.NH, self.NKV, self.HS
        q, k, v = self.c_attn(x).split([NH * HS, NKV * HS, NKV * HS], dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)  # (B, NH, T, HS)
        k = k.view(B, T, NKV, HS).transpose(1, 2)
        if rope is not None:  # rotate queries and keys by position; values are not
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        k = k.repeat_interleave(NH // NKV, dim=1)
        v = v.view(B, T, NKV, HS).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)

    def forward(self, x, rope=None):
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class MLABlock(Block):
    """Block with multi-head latent attention (DeepSeek-V2), unabsorbed form.

    Shapes: r = kv_lora_rank, dR = rope_head_dim (0 with learned positions),
    D = HS + dR the query/key head width. Every head has its own K and V, both
    expanded from one (r)-wide latent per token; with RoPE a (dR)-wide key is
    shared by all heads.
    """

    def __init__(self, C, NH, bias, r, dR, latent_norm):
        super().__init__(C, NH, NH, bias)  # c_attn is replaced by the query projection below
        HS = self.HS
        self.r, self.dR, self.D = r, dR, HS + dR
        self.c_attn = nn.Linear(C, NH * self.D, bias=bias)  # queries only; head h: [nope (HS) | rope (dR)]
        self.c_dkv = nn.Linear(C, r + dR, bias=bias)  # rows [W_dkv (r) | W_kr (dR)]
        self.kv_norm = RMSNorm(r) if latent_norm else None
        self.c_ukv = nn.Linear(r, 2 * NH * HS, bias=bias)  # rows [W_uk heads 0..NH-1 | W_uv heads 0..NH-1]

    def attn(self, x, rope=None):
        B, T, C = x.shape
        NH, HS, r, dR, D = self.NH, self.HS, self.r, self.dR, self.D
        assert (rope is None) == (dR == 0), "MLA: rope_head_dim > 0 exactly with RoPE"
        q = self.c_attn(x).view(B, T, NH, D).transpose(1, 2)  # (B, NH, T, D)
        q_nope, q_rope = q.split([HS, dR], dim=-1)
        c, k_rope = self.c_dkv(x).split([r, dR], dim=-1)  # (B, T, r), (B, T, dR)
        if self.kv_norm is not None:
            c = self.kv_norm(c)
        if rope is not None:  # the decoupled parts only: nope parts, latent and values are not rotated
            q_rope, k_rope = apply_rope(q_rope, *rope), apply_rope(k_rope, *rope)
        k_nope, v = self.c_ukv(c).split([NH * HS, NH * HS], dim=-1)
        k_nope = k_nope.view(B, T, NH, HS).transpose(1, 2)  # (B, NH, T, HS)
        v = v.view(B, T, NH, HS).transpose(1, 2)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (B, NH, T, D)
        k = torch.cat([k_nope, k_rope.unsqueeze(1).expand(B, NH, T, dR)], dim=-1)  # k_rope shared by the heads
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class GroupedBlock(Block):
    """Block with grouped attention that never repeats K/V (the bench's).

    Query heads are grouped by the KV head they read: query head h reads KV
    head h // group (group = NH // NKV), so the group's queries are stacked
    as rows of one matmul against its K and V.
    """

    def attn(self, x, rope=None):
        assert rope is None, "the bench's grouped block has learned positions only"
        B, T, C = x.shape
        NH, G, HS = self.NH, self.NKV, self.HS
        group = NH // G
        q, k, v = self.c_attn(x).split([NH * HS, G * HS, G * HS], dim=2)
        q = q.view(B, T, G, group, HS).permute(0, 2, 3, 1, 4).reshape(B, G, group * T, HS)
        k = k.view(B, T, G, HS).transpose(1, 2)  # (B, G, T, HS)
        v = v.view(B, T, G, HS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)).view(B, G, group, T, T) * (1.0 / math.sqrt(HS))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = att.view(B, G, group * T, T) @ v  # (B, G, group * T, HS)
        y = y.view(B, G, group, T, HS).permute(0, 3, 1, 2, 4).reshape(B, T, C)
        return self.c_proj(y)

    def decode(self, x, K, V, pos):
        """One token per sequence at position pos. x (B, C); K, V (B, G, maxT, HS),
        filled below pos; the new k, v are written at pos in place."""
        B, C = x.shape
        NH, G, HS = self.NH, self.NKV, self.HS
        q, k, v = self.c_attn(self.ln_1(x)).split([NH * HS, G * HS, G * HS], dim=1)
        K[:, :, pos] = k.view(B, G, HS)
        V[:, :, pos] = v.view(B, G, HS)
        q = q.view(B, G, NH // G, HS)
        att = (q @ K[:, :, :pos + 1].transpose(-1, -2)) * (1.0 / math.sqrt(HS))  # (B, G, group, pos + 1)
        y = att.softmax(dim=-1) @ V[:, :, :pos + 1]  # (B, G, group, HS)
        x = x + self.c_proj(y.reshape(B, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, maxT, L, NH, NKV, C, bias, grouped=False, pos="learned", rope_theta=10000.0,
                 kv_lora_rank=0, rope_head_dim=0, latent_norm=0):
        super().__init__()
        r, dR = kv_lora_rank, rope_head_dim
        assert r == 0 or (NKV == NH and not grouped), "MLA: n_kv_head must equal n_head"
        assert dR == 0 if r == 0 or pos == "learned" else dR >= 2 and dR % 2 == 0, f"rope_head_dim {dR}"
        assert latent_norm in (0, 1)
        self.HS, self.rope_theta = C // NH, rope_theta
        self.rope_dim = dR if r > 0 else self.HS  # width of the rotated parts
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C) if pos == "learned" else None  # rope: no position parameters
        if r > 0:
            blocks = [MLABlock(C, NH, bias, r, dR, latent_norm) for _ in range(L)]
        else:
            blocks = [GroupedBlock(C, NH, NKV, bias) if grouped else Block(C, NH, NKV, bias) for _ in range(L)]
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = LayerNorm(C, bias)

    def forward(self, idx, targets):
        T = idx.shape[1]
        if self.wpe is not None:
            x, rope = self.wte(idx) + self.wpe(torch.arange(T)), None
        else:
            x, rope = self.wte(idx), rope_cos_sin(T, self.rope_dim, self.rope_theta)
        for blk in self.blocks:
            x = blk(x, rope)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied LM head
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss

    def decode(self, tok, pos, caches):
        """Next tokens (argmax) after tok (B,) at position pos; caches [(K, V)] per layer."""
        x = self.wte(tok) + self.wpe.weight[pos]
        for blk, (K, V) in zip(self.blocks, caches):
            x = blk.decode(x, K, V, pos)
        logits = self.ln_f(x) @ self.wte.weight.T  # (B, V), tied LM head
        return logits.argmax(dim=-1)

    def tensors(self, bias):
        """Parameters in gqa.c's arena order, per-layer tensors stacked. The MLA
        tensors (dkvw, dkvb, kvnw, ukvw, ukvb) are empty with grouped attention."""
        def stack(get):
            return [get(b) for b in self.blocks]
        mla = isinstance(self.blocks[0], MLABlock)
        norm = mla and self.blocks[0].kv_norm is not None
        out = [[self.wte.weight], [self.wpe.weight] if self.wpe is not None else [],
               stack(lambda b: b.ln_1.weight), stack(lambda b: b.ln_1.bias) if bias else [],
               stack(lambda b: b.c_attn.weight), stack(lambda b: b.c_attn.bias) if bias else [],
               stack(lambda b: b.c_dkv.weight) if mla else [], stack(lambda b: b.c_dkv.bias) if mla and bias else [],
               stack(lambda b: b.kv_norm.weight) if norm else [],
               stack(lambda b: b.c_ukv.weight) if mla else [], stack(lambda b: b.c_ukv.bias) if mla and bias else [],
               stack(lambda b: b.c_proj.weight), stack(lambda b: b.c_proj.bias) if bias else [],
               stack(lambda b: b.ln_2.weight), stack(lambda b: b.ln_2.bias) if bias else [],
               stack(lambda b: b.c_fc.weight), stack(lambda b: b.c_fc.bias) if bias else [],
               stack(lambda b: b.mlp_proj.weight), stack(lambda b: b.mlp_proj.bias) if bias else [],
               [self.ln_f.weight], [self.ln_f.bias] if bias else []]
        return out


def flat(groups, grad=False):
    parts = [(t.grad if grad else t).detach().reshape(-1) for g in groups for t in g]
    return torch.cat(parts).to(torch.float32).numpy()


def make_fixture(path, V, maxT, L, NH, NKV, C, bias, B, T, steps, seed, pos="learned", rope_theta=10000.0,
                 kv_lora_rank=0, rope_head_dim=0, latent_norm=0):
    torch.manual_seed(seed)
    mla = dict(kv_lora_rank=kv_lora_rank, rope_head_dim=rope_head_dim, latent_norm=latent_norm)
    model = GPT(V, maxT, L, NH, NKV, C, bias, pos=pos, rope_theta=rope_theta, **mla).double()
    with torch.no_grad():  # weights larger than GPT-2's init, so every path matters
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "kv_norm.weight")) or name == "ln_f.weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        # round weights to float32 so both sides start from the same values
        for p in model.parameters():
            p.copy_(p.float().double())
    groups = model.tensors(bias)
    params0 = flat(groups)
    idx = torch.randint(0, V, (B, T))
    tgt = torch.randint(0, V, (B, T))

    logits, loss = model(idx, tgt)
    model.zero_grad()
    loss.backward()
    grads = flat(groups, grad=True)

    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.95, 1e-8, 0.1
    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=lr, betas=(b1, b2), eps=eps)
    step_losses = [loss.item()]
    for _ in range(steps):
        opt.step()
        opt.zero_grad()
        _, l2 = model(idx, tgt)
        l2.backward()
        step_losses.append(l2.item())

    version = 3 if kv_lora_rank > 0 else 1 if pos == "learned" else 2  # the oldest that holds the model
    with open(path, "wb") as f:
        f.write(b"GQAF" + struct.pack("<I", version))
        f.write(struct.pack("<10i", V, maxT, L, NH, NKV, C, int(bias), B, T, steps))
        f.write(struct.pack("<5f", lr, b1, b2, eps, wd))
        if version >= 2:
            f.write(struct.pack("<if", int(pos == "rope"), rope_theta))
        if version >= 3:
            f.write(struct.pack("<3i", kv_lora_rank, rope_head_dim, latent_norm))
        f.write(params0.astype("<f4").tobytes())
        f.write(idx.numpy().astype("<i4").tobytes())
        f.write(tgt.numpy().astype("<i4").tobytes())
        f.write(logits.detach().float().numpy().astype("<f4").tobytes())
        f.write(struct.pack("<f", loss.item()))
        f.write(grads.astype("<f4").tobytes())
        f.write(np.array(step_losses, dtype="<f4").tobytes())
    mla_desc = (f" kv_lora_rank={kv_lora_rank} rope_head_dim={rope_head_dim} latent_norm={latent_norm}"
                if kv_lora_rank > 0 else "")
    print(f"{path}: n_kv_head={NKV} bias={int(bias)} pos={pos}{mla_desc} params={params0.size} "
          f"loss={loss.item():.6f} after {steps} AdamW steps {step_losses[-1]:.6f}")


# ----------------------------------------------------------------------------
# bench: float32 timing

def blas_library():
    """The libblas.so.3 this process has mapped (after a matmul), symlinks resolved."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "libblas" in line.split()[-1]})
    except OSError:
        return "unknown"
    return ", ".join(libs) or "none mapped"


def bench_train(model, args):
    B, T, V = args.batch_size, args.block_size, args.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, AdamW state
        step()
    tps = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        tps.append(args.steps * B * T / (time.perf_counter() - t0))
    return tps


def bench_decode(model, args):
    B, G, HS, ctx, S = args.batch_size, args.n_kv_head, args.n_embd // args.n_head, args.ctx, args.steps
    maxT = ctx + S
    caches = []
    for _ in range(args.n_layer):
        K, V = torch.zeros(B, G, maxT, HS), torch.zeros(B, G, maxT, HS)
        K[:, :, :ctx].normal_()
        V[:, :, :ctx].normal_()
        caches.append((K, V))
    tok0 = torch.randint(0, args.vocab_size, (B,))
    tps = []
    for r in range(args.repeats + 1):  # r = 0: warm-up
        tok = tok0
        t0 = time.perf_counter()
        for s in range(S):
            tok = model.decode(tok, ctx + s, caches)
        if r > 0:
            tps.append(B * S / (time.perf_counter() - t0))
    return tps


def bench_main(argv):
    ap = argparse.ArgumentParser(prog="ref_gpt.py bench", description="Time gqa.c's architecture in PyTorch "
                                 "(float32), see the module docstring. Prints RESULT <what> <tok/s per repeat>.")
    ap.add_argument("--what", choices=["train", "decode"], required=True)
    ap.add_argument("--vocab_size", type=int, default=65)
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--n_kv_head", type=int, default=0, help="0: n_head (default 0)")
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--block_size", type=int, default=64, help="wpe rows; T of training (default 64)")
    ap.add_argument("--batch_size", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=-1, help="decode: tokens already in the cache (default: "
                    "block_size - steps)")
    ap.add_argument("--steps", type=int, default=0, help="steps per repeat (default 0: 5 train, 32 decode)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bias", type=int, choices=[0, 1], default=1)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args(argv)
    if args.n_kv_head == 0:
        args.n_kv_head = args.n_head
    if args.steps == 0:
        args.steps = 5 if args.what == "train" else 32
    if args.ctx < 0:
        args.ctx = args.block_size - args.steps
    for key in ["vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "batch_size", "steps",
                "repeats", "threads"]:
        if getattr(args, key) < 1:
            ap.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.n_embd % args.n_head:
        ap.error(f"n_embd {args.n_embd} is not divisible by n_head {args.n_head}")
    if args.n_kv_head > args.n_head or args.n_head % args.n_kv_head:
        ap.error(f"n_head {args.n_head} is not divisible by n_kv_head {args.n_kv_head}")
    if args.what == "decode" and not 0 <= args.ctx <= args.block_size - args.steps:
        ap.error(f"ctx {args.ctx} + steps {args.steps} exceeds block_size {args.block_size}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = GPT(args.vocab_size, args.block_size, args.n_layer, args.n_head, args.n_kv_head, args.n_embd,
                bool(args.bias), grouped=True)
    with torch.no_grad():  # GPT-2's init: normal(0, 0.02), biases 0, LayerNorm weights 1
        for name, p in model.named_parameters():
            if ".ln_" in f".{name}":
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    if args.what == "train":
        tps = bench_train(model, args)
        shape = f"training at batch {args.batch_size} x {args.block_size}, {args.steps} steps"
    else:
        model.eval()
        with torch.inference_mode():
            tps = bench_decode(model, args)
        shape = f"decode batch {args.batch_size} from ctx {args.ctx}, {args.steps} steps"
    blas = blas_library()
    print(f"ref_gpt bench: torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS {blas}; "
          f"vocab_size={args.vocab_size} n_layer={args.n_layer} n_head={args.n_head} n_kv_head={args.n_kv_head} "
          f"n_embd={args.n_embd} block_size={args.block_size} bias={args.bias}, "
          f"params={sum(p.numel() for p in model.parameters())}; {shape}, {args.repeats} repeats", file=sys.stderr)
    if "openblas-openmp" not in blas:
        print("ref_gpt bench: warning: torch is not using the OpenMP OpenBLAS; run with "
              "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp", file=sys.stderr)
    print(f"RESULT {args.what} " + " ".join(f"{t:.3f}" for t in tps), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        bench_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out_dir", default="tests/fixtures")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    # tiny shape: V 29, block 12, 2 layers, 4 query heads of size 8; T=10 < block
    shape = dict(V=29, maxT=12, L=2, NH=4, C=32, B=3, T=10, steps=5)
    for nkv, bias, seed in [(4, True, 1), (2, True, 2), (1, True, 3), (2, False, 4)]:
        name = f"gpt_nkv{nkv}{'' if bias else '_nobias'}.bin"
        make_fixture(os.path.join(args.out_dir, name), NKV=nkv, bias=bias, seed=seed, **shape)
    for nkv, theta, seed in [(4, 10000.0, 5), (2, 100.0, 6), (1, 10000.0, 7)]:
        make_fixture(os.path.join(args.out_dir, f"gpt_rope_nkv{nkv}.bin"), NKV=nkv, bias=True, seed=seed,
                     pos="rope", rope_theta=theta, **shape)
    # MLA (n_kv_head = n_head = 4, HS 8): a latent narrower than the heads' K and V
    # (r 8 < 2*NH*HS 64) with its norm; the full-width latent r = 64 without norm
    # or biases (the width at which MLA can equal MHA, as a converted model);
    # RoPE with dR = HS/2 = 4 and theta 100 so every pair turns.
    for name, bias, seed, pos, theta, r, dR, norm in [
            ("gpt_mla_r8.bin", True, 8, "learned", 10000.0, 8, 0, 1),
            ("gpt_mla_r64_nonorm.bin", False, 9, "learned", 10000.0, 64, 0, 0),
            ("gpt_mla_rope.bin", True, 10, "rope", 100.0, 8, 4, 1)]:
        make_fixture(os.path.join(args.out_dir, name), NKV=shape["NH"], bias=bias, seed=seed, pos=pos,
                     rope_theta=theta, kv_lora_rank=r, rope_head_dim=dR, latent_norm=norm, **shape)


if __name__ == "__main__":
    main()
