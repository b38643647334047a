#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of `gpt bench attention`: causal (dense, its flash kernel)
and local (a boolean band mask, which PyTorch materialises as T×T). Prints forward and forward+backward median times
and the peak memory the call adds, one line per pattern and length.

usage: scripts/bench_attention_pytorch.py [--seq 1024,2048,4096] [--heads 12] [--head-width 64] [--window 256] [--steps 3]
needs: pip install torch
"""
import argparse, resource, statistics, time

import torch
import torch.nn.functional as F


def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run(length, heads, d, window, steps):
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, heads, length, d) for _ in range(3))
    mask = None
    if window:
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None, :]
        mask = (j <= i) & (i - j < window)
    seed = torch.randn(1, heads, length, d)
    forward, both, held = [], [], 0
    for step in range(steps + 1):
        start = time.perf_counter()
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        f = time.perf_counter() - start
        before = resident()
        start = time.perf_counter()
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        y = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, is_causal=mask is None)
        y.backward(seed)
        held = max(held, resident() - before)
        b = time.perf_counter() - start
        if step:
            forward.append(f)
            both.append(b)
    name = f"local (w={window}, mask)" if window else "dense (causal)"
    print(f"pytorch {torch.__version__} sdpa {name} B1 H{heads} d{d} T={length}: forward {statistics.median(forward) * 1e3:.1f} ms, "
          f"forward+backward {statistics.median(both) * 1e3:.1f} ms, memory {held / 2**20:.1f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", default="1024,2048,4096")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-width", type=int, default=64)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="also time the local pattern through a mask")
    args = parser.parse_args()
    for length in map(int, args.seq.split(",")):
        run(length, args.heads, args.head_width, None, args.steps)
        if args.local:
            run(length, args.heads, args.head_width, args.window, args.steps)


if __name__ == "__main__":
    main()
