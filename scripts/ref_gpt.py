#!/usr/bin/python3
"""ref_gpt.py: an independent PyTorch reference of gqa.c's GPT.

Written from the model description (GPT-2 shape, pre-LN, tanh GELU, tied LM
head, grouped-query attention with repeat_interleave), not from the C code.
It builds a tiny model with random weights, runs it in float64 and writes a
fixture per n_kv_head: config, weights, inputs, targets, logits, loss, every
parameter gradient (in gqa.c's arena order), and the losses of a few AdamW
steps. tests/test_model.c compares the C model against these files.

    /usr/bin/python3 scripts/ref_gpt.py --out_dir tests/fixtures

Fixture format (little-endian): b"GQAF", u32 version=1, 10 x i32 (vocab_size,
block_size, n_layer, n_head, n_kv_head, n_embd, bias, B, T, steps), 5 x f32
(lr, beta1, beta2, eps, weight_decay), then f32 params[P], i32 inputs[B*T],
i32 targets[B*T], f32 logits[B*T*V], f32 loss, f32 grads[P],
f32 step_losses[steps + 1].
"""
import argparse
import math
import os
import struct

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

    def attn(self, x):
        B, T, C = x.shape
        NH, NKV, HS = self.NH, self.NKV, self.HS
        q, k, v = self.c_attn(x).split([NH * HS, NKV * HS, NKV * HS], dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NKV, HS).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
        v = v.view(B, T, NKV, HS).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, maxT, L, NH, NKV, C, bias):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList([Block(C, NH, NKV, bias) for _ in range(L)])
        self.ln_f = LayerNorm(C, bias)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.T  # tied LM head
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss

    def tensors(self, bias):
        """Parameters in gqa.c's arena order, per-layer tensors stacked."""
        def stack(get):
            return [get(b) for b in self.blocks]
        out = [[self.wte.weight], [self.wpe.weight],
               stack(lambda b: b.ln_1.weight), stack(lambda b: b.ln_1.bias) if bias else [],
               stack(lambda b: b.c_attn.weight), stack(lambda b: b.c_attn.bias) if bias else [],
               stack(lambda b: b.c_proj.weight), stack(lambda b: b.c_proj.bias) if bias else [],
               stack(lambda b: b.ln_2.weight), stack(lambda b: b.ln_2.bias) if bias else [],
               stack(lambda b: b.c_fc.weight), stack(lambda b: b.c_fc.bias) if bias else [],
               stack(lambda b: b.mlp_proj.weight), stack(lambda b: b.mlp_proj.bias) if bias else [],
               [self.ln_f.weight], [self.ln_f.bias] if bias else []]
        return out


def flat(groups, grad=False):
    parts = [(t.grad if grad else t).detach().reshape(-1) for g in groups for t in g]
    return torch.cat(parts).to(torch.float32).numpy()


def make_fixture(path, V, maxT, L, NH, NKV, C, bias, B, T, steps, seed):
    torch.manual_seed(seed)
    model = GPT(V, maxT, L, NH, NKV, C, bias).double()
    with torch.no_grad():  # weights larger than GPT-2's init, so every path matters
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
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

    with open(path, "wb") as f:
        f.write(b"GQAF" + struct.pack("<I", 1))
        f.write(struct.pack("<10i", V, maxT, L, NH, NKV, C, int(bias), B, T, steps))
        f.write(struct.pack("<5f", lr, b1, b2, eps, wd))
        f.write(params0.astype("<f4").tobytes())
        f.write(idx.numpy().astype("<i4").tobytes())
        f.write(tgt.numpy().astype("<i4").tobytes())
        f.write(logits.detach().float().numpy().astype("<f4").tobytes())
        f.write(struct.pack("<f", loss.item()))
        f.write(grads.astype("<f4").tobytes())
        f.write(np.array(step_losses, dtype="<f4").tobytes())
    print(f"{path}: n_kv_head={NKV} bias={int(bias)} params={params0.size} loss={loss.item():.6f} "
          f"after {steps} AdamW steps {step_losses[-1]:.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out_dir", default="tests/fixtures")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    # tiny shape: V 29, block 12, 2 layers, 4 query heads of size 8; T=10 < block
    shape = dict(V=29, maxT=12, L=2, NH=4, C=32, B=3, T=10, steps=5)
    for nkv, bias, seed in [(4, True, 1), (2, True, 2), (1, True, 3), (2, False, 4)]:
        name = f"gpt_nkv{nkv}{'' if bias else '_nobias'}.bin"
        make_fixture(os.path.join(args.out_dir, name), NKV=nkv, bias=bias, seed=seed, **shape)


if __name__ == "__main__":
    main()
