#!/usr/bin/env python3
"""The shapes of `gpt bench` in PyTorch (2 threads, random init), for side-by-side figures.

--precision bf16 trains and runs the forward pass under torch.autocast("cpu", dtype=torch.bfloat16) and decodes with
the model's weights in bfloat16 (PyTorch has no int8 path for GPT-2's Conv1D layers). Needs: pip install torch
transformers. Prints the same kind of lines as `gpt bench`.
"""
import argparse
import resource
import statistics
import sys
import time

try:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:
    sys.exit("bench_pytorch.py needs torch and transformers (pip install torch transformers)")

PRESETS = {
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_layer=12, n_head=12, n_embd=768),
    "baby": dict(vocab_size=65, n_positions=64, n_layer=4, n_head=4, n_embd=128),
}


def model_for(preset):
    config = GPT2Config(**PRESETS[preset], resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    return GPT2LMHeadModel(config), config


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def train(preset, batch, seq, steps, precision):
    model, config = model_for(preset)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        with autocast(precision):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step > 0:
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch train {preset} {precision} b{batch}×s{seq}: median {ms:.1f} ms/step, "
          f"{batch * seq / ms * 1000:.0f} tokens/s, peak RSS {rss:.0f} MiB")


def forward(preset, seq, steps, precision):
    model, config = model_for(preset)
    model.eval()
    ids = torch.randint(0, config.vocab_size, (1, seq))
    times = []
    with torch.no_grad(), autocast(precision):
        for step in range(steps + 1):
            start = time.perf_counter()
            model(ids)
            if step > 0:
                times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    print(f"pytorch forward {preset} {precision} s{seq}: median {ms:.1f} ms, {seq / ms * 1000:.0f} tokens/s (prefill)")


def generate(preset, prompt_tokens, new_tokens, batch, precision):
    model, config = model_for(preset)
    model.eval()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (batch, prompt_tokens))
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                       pad_token_id=0)
        seconds = time.perf_counter() - start
    print(f"pytorch generate {preset} {precision} batch {batch}: {batch * new_tokens / seconds:.1f} tokens/s "
          f"({seconds / new_tokens * 1000:.2f} ms/step incl. prefill of {prompt_tokens} tokens)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", nargs="?", default="all",
                        choices=["all", "train-gpt2", "train-baby", "forward-gpt2", "generate-gpt2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}")
    # Each measurement runs in its own process so that peak RSS belongs to that step alone.
    if args.what == "all":
        import subprocess
        for what in ["train-gpt2", "train-baby", "forward-gpt2", "generate-gpt2"]:
            subprocess.run([sys.executable, __file__, what, "--threads", str(args.threads), "--precision", args.precision], check=True)
    elif args.what == "train-gpt2":
        train("gpt2", 4, 256, 5, args.precision)
    elif args.what == "train-baby":
        train("baby", 12, 64, 20, args.precision)
    elif args.what == "forward-gpt2":
        forward("gpt2", 512, 5, args.precision)
    elif args.what == "generate-gpt2":
        generate("gpt2", 16, 128, 1, args.precision)
        generate("gpt2", 16, 128, 8, args.precision)


if __name__ == "__main__":
    main()
