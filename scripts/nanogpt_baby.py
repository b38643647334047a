#!/usr/bin/env python3
"""nanoGPT's "baby GPT" recipe in PyTorch, for a side-by-side comparison with `make demo`.

A faithful re-implementation of nanoGPT's model.py and train.py (karpathy/nanoGPT; the package is not on PyPI) with
its shakespeare_char data preparation and the README's CPU settings: n_layer 4, n_head 4, n_embd 128, block 64,
batch 12, 2000 iterations, lr 1e-3, 100 warmup, cosine to 1e-4, betas (0.9, 0.99), weight decay 0.1, clip 1.0,
dropout 0, bias False, exact GELU, eval every 250 iterations over 20 batches, 2 threads.

Usage: python3 scripts/nanogpt_baby.py data/tinyshakespeare/input.txt [--max-iters 2000] [--seed 1337]
"""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=False)
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=False)
        self.n_head = c["n_head"]

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["n_embd"], bias=False)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"], bias=False)
        self.mlp = nn.Sequential(nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=False), nn.GELU(),
                                 nn.Linear(4 * c["n_embd"], c["n_embd"], bias=False))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["block_size"], c["n_embd"])
        self.h = nn.ModuleList([Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], bias=False)
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        self.wte.weight = self.lm_head.weight
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c["n_layer"]))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1))
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    text = open(args.input, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(text)
    train = np.array([stoi[c] for c in text[: int(n * 0.9)]], dtype=np.int64)
    val = np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.int64)
    c = dict(vocab_size=len(chars), block_size=64, n_layer=4, n_head=4, n_embd=128)
    batch, block = 12, 64
    lr, min_lr, warmup, decay = 1e-3, 1e-4, 100, args.max_iters

    def get_batch(data):
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([torch.from_numpy(data[i:i + block]) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block]) for i in ix])
        return x, y

    def get_lr(it):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay:
            return min_lr
        ratio = (it - warmup) / (decay - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    model = GPT(c)
    decay_params = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay_params, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.99))
    start = time.time()
    step_times = []
    for it in range(args.max_iters + 1):
        if it % 250 == 0:
            model.eval()
            with torch.no_grad():
                losses = {name: torch.stack([model(*get_batch(d)) for _ in range(20)]).mean().item()
                          for name, d in (("train", train), ("val", val))}
            model.train()
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} ({time.time() - start:.1f} s)", flush=True)
        if it == args.max_iters:
            break
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        loss = model(*get_batch(train))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.time() - t0)
    print(f"nanoGPT-equivalent (PyTorch {torch.__version__}, 2 threads): median {np.median(step_times) * 1000:.1f} ms/iteration, "
          f"{time.time() - start:.1f} s in all")
    # The whole val split, every token predicted once in consecutive windows (as `gpt loss` does).
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        full = (len(val) - 1) // block
        for i in range(0, full, 64):
            rows = range(i, min(i + 64, full))
            x = torch.stack([torch.from_numpy(val[r * block:(r + 1) * block]) for r in rows])
            y = torch.stack([torch.from_numpy(val[r * block + 1:(r + 1) * block + 1]) for r in rows])
            total += model(x, y).item() * x.numel()
            count += x.numel()
        rest = len(val) - 1 - full * block
        if rest:
            x = torch.from_numpy(val[full * block:full * block + rest]).unsqueeze(0)
            y = torch.from_numpy(val[full * block + 1:]).unsqueeze(0)
            total += model(x, y).item() * rest
            count += rest
    print(f"val loss {total / count:.4f} over the whole val split ({count} tokens in windows of {block})")


if __name__ == "__main__":
    main()
