#!/usr/bin/env python3
"""SwiftGPT's LoRA fine-tuning side by side with Hugging Face PEFT and a plain PyTorch loop, in one run.

Both fine-tune the GPT-2 model in --model (a Hugging Face GPT-2 folder; without it a GPT-2 124M of random weights is
made in OUT/base, transformers' initialisation, seed 0, with GPT-2's tokenizer from --tokenizer) on the first
--examples Alpaca demonstrations that fit --max-length tokens, every step on all of them (one batch), for --steps
steps: LoRA of rank --rank and alpha --alpha on --targets, no dropout, no weight decay, no warmup, a linear decay to
0, gradient clipping at 1, fp32, the loss the mean cross-entropy over the reply tokens (prompt tokens are read, not
trained). Each demonstration is "\\n\\nHuman: INSTRUCTION[\\n\\nINPUT]\\n\\nAssistant:" then " RESPONSE" and the
end-of-text token, the two parts tokenized apart, as `gpt sft` does. PEFT's A matrices are set to those `gpt sft`
draws (the script draws them with SwiftGPT's generator, xoshiro256** seeded by SplitMix64), so both runs start
from the same weights.

Printed: both losses at every step and their largest difference; ms per step (median after the first) of
`gpt sft --lora-rank`, of the same over the base held in bf16 and int8 (`--lora-base-precision`, with their largest
loss difference from the fp32 base's run), of `gpt sft` training every weight, and of PEFT + PyTorch; each process's
peak resident memory; the adapter file's size beside the model's.

Needs: torch, transformers, peft (pip). usage:
  python3 scripts/lora_compare.py --data data/alpaca/dev.jsonl [--model DIR] [--steps 20] [--out DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

MASK = (1 << 64) - 1
LAYERS = {"attn": ["attn.c_attn"], "proj": ["attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]}
ORDER = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


class SeededRandom:
    """SwiftGPT's SeededRandom: xoshiro256** seeded through SplitMix64."""

    def __init__(self, seed):
        s = seed
        self.state = []
        for _ in range(4):
            s = (s + 0x9E3779B97F4A7C15) & MASK
            z = s
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.state.append(z ^ (z >> 31))

    def next(self):
        s = self.state
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK
        result = (rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def swiftgpt_a_matrices(seed, layers, shapes):
    """The A of each adapted layer as `gpt sft --seed SEED` draws it: uniform within ±1/√in, layer after layer."""
    import numpy as np
    random = SeededRandom((seed + 2) & MASK)
    matrices = {}
    for name in layers:
        rank, inputs = shapes[name]
        bound = np.float32(1) / np.sqrt(np.float32(inputs))
        draws = np.array([random.next() >> 40 for _ in range(rank * inputs)], dtype=np.float64)
        uniform = (draws * 2.0 ** -24).astype(np.float32)
        matrices[name] = ((np.float32(2) * uniform - np.float32(1)) * bound).astype(np.float32).reshape(rank, inputs)
    return matrices


def encode(tokenizer, example):
    user = example["instruction"] + (("\n\n" + example["input"]) if example.get("input") else "")
    prompt = tokenizer("\n\nHuman: " + user + "\n\nAssistant:")["input_ids"]
    reply = tokenizer(" " + example["response"])["input_ids"] + [tokenizer.eos_token_id]
    return prompt, reply


def torch_run(args):
    """PEFT + a plain PyTorch loop; writes its losses and step times to OUT/torch.json."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast
    torch.set_num_threads(args.threads)
    tokenizer = GPT2TokenizerFast.from_pretrained(args.model)
    examples = [json.loads(line) for line in open(os.path.join(args.out, "train.jsonl"), encoding="utf-8")]
    rows = [encode(tokenizer, e) for e in examples]
    length = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), length), tokenizer.eos_token_id)
    labels = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, reply) in enumerate(rows):
        sequence = prompt + reply
        ids[i, :len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt):len(sequence)] = torch.tensor(reply)
        mask[i, :len(sequence)] = 1
    model = GPT2LMHeadModel.from_pretrained(args.model, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, torch_dtype=torch.float32)
    modules = [m for t in args.targets.split(",") for m in LAYERS[t]]
    if args.rank:
        config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=modules, fan_in_fan_out=True,
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        names = [f"h.{i}.{kind}" for i in range(model.config.n_layer) for kind in ORDER if kind in modules]
        lora = {n.split("transformer.")[1].replace(".lora_A.default", ""): p
                for n, p in model.named_parameters() if ".lora_A." in n}
        drawn = swiftgpt_a_matrices(args.seed, names, {n: tuple(lora[n + ".weight"].shape) for n in names})
        with torch.no_grad():
            for name in names:
                lora[name + ".weight"].copy_(torch.from_numpy(drawn[name]))
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses, stamps = [], []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * (1 - step / args.steps)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        stamps.append(time.perf_counter())
    steps_ms = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
    json.dump({"losses": losses, "ms": steps_ms, "trainable": sum(p.numel() for p in parameters)},
              open(os.path.join(args.out, "torch.json"), "w"))


# Runs its arguments as a command and reports that command's peak resident memory on standard error. A process's peak
# counts the pages of the process it was forked from (Linux keeps the high-water mark across exec), so the commands
# measured are forked from this small interpreter rather than from the script, which holds torch and a model.
PEAK_RUNNER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"peak-rss-kib {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(command):
    """Runs `command` to its end: its output and its own peak resident memory in MiB."""
    process = subprocess.run([sys.executable, "-c", PEAK_RUNNER] + command, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines = process.stdout.rstrip("\n").split("\n")
    if process.returncode != 0 or not lines[-1].startswith("peak-rss-kib "):
        sys.exit(f"{' '.join(command)} failed:\n{process.stdout}")
    return "\n".join(lines[:-1]), int(lines[-1].split()[1]) / 1024


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Alpaca JSONL {instruction, input, response}")
    parser.add_argument("--model", help="Hugging Face GPT-2 folder (default: a random GPT-2 of --size)")
    parser.add_argument("--size", default="124M", choices=["124M", "774M"], help="the random model's shape: GPT-2 or GPT-2 large")
    parser.add_argument("--skip-peft", action="store_true", help="do not run PEFT (nor compare losses)")
    parser.add_argument("--tokenizer", default="../shared/data/gpt2", help="folder with GPT-2's vocab.json and merges.txt")
    parser.add_argument("--out", default=".build/lora-compare")
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--targets", default="attn,proj,mlp")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-full", action="store_true", help="do not time full fine-tuning")
    parser.add_argument("--base-precisions", default="bf16,int8",
                        help="also run LoRA over the base held in these precisions (comma-separated; empty: none)")
    parser.add_argument("--torch-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_run:
        return torch_run(args)

    import torch
    import peft
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, {args.threads} threads")
    if not args.model:
        args.model = os.path.join(args.out, f"base-{args.size}")
        if not os.path.exists(os.path.join(args.model, "model.safetensors")):
            torch.manual_seed(0)
            shape = {"124M": {}, "774M": {"n_embd": 1280, "n_layer": 36, "n_head": 20}}[args.size]
            GPT2LMHeadModel(GPT2Config(**shape)).save_pretrained(args.model)
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(args.tokenizer, name), args.model)
    tokenizer = GPT2TokenizerFast.from_pretrained(args.model)
    examples = []
    for line in open(args.data, encoding="utf-8"):
        example = json.loads(line)
        prompt, reply = encode(tokenizer, example)
        if len(prompt) + len(reply) <= args.max_length:
            examples.append(example)
        if len(examples) == args.examples:
            break
    data = os.path.join(args.out, "train.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example) + "\n")
    tokens = sum(len(encode(tokenizer, e)[0]) + len(encode(tokenizer, e)[1]) for e in examples)
    print(f"{len(examples)} demonstrations, {tokens} tokens, {args.steps} steps of all of them, lr {args.learning_rate}, "
          f"LoRA rank {args.rank} alpha {args.alpha} on {args.targets}")

    def gpt_sft(name, lora, base_precision="fp32"):
        out = os.path.join(args.out, name)
        shutil.rmtree(out, ignore_errors=True)
        options = ["--lora-rank", str(args.rank), "--lora-alpha", str(args.alpha), "--lora-dropout", "0",
                   "--lora-targets", args.targets, "--lora-base-precision", base_precision] if lora else []
        output, rss = measured([args.gpt, "sft", "--model", args.model, "--train", data, "--dev", data, "--out", out,
                                "--epochs", str(args.steps), "--batch-size", str(len(examples)), "--learning-rate", str(args.learning_rate),
                                "--warmup-fraction", "0", "--weight-decay", "0", "--gradient-clip", "1", "--schedule", "linear",
                                "--dropout", "0", "--precision", "fp32", "--log-interval", "1", "--seed", str(args.seed),
                                "--samples", "0"] + options)
        records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
        losses = {r["step"]: r["train_loss"] for r in records if "train_loss" in r}
        ms = [r["ms_per_step"] for r in records if "ms_per_step" in r]
        return losses, median(ms[1:]), rss, out

    swift_losses, swift_ms, swift_rss, swift_out = gpt_sft("swiftgpt-lora", True)
    if not args.skip_peft:
        command = [sys.executable, __file__, "--torch-run", "--data", args.data, "--model", args.model, "--out", args.out,
                   "--steps", str(args.steps), "--learning-rate", str(args.learning_rate), "--rank", str(args.rank),
                   "--alpha", str(args.alpha), "--targets", args.targets, "--seed", str(args.seed), "--threads", str(args.threads)]
        _, torch_rss = measured(command)
        theirs = json.load(open(os.path.join(args.out, "torch.json")))
        print(f"\n{'step':>4}  {'SwiftGPT':>10}  {'PEFT':>10}  {'difference':>10}")
        worst = 0.0
        for step in range(1, args.steps + 1):
            ours, peft_loss = swift_losses[step], theirs["losses"][step - 1]
            worst = max(worst, abs(ours - peft_loss))
            print(f"{step:>4}  {ours:>10.6f}  {peft_loss:>10.6f}  {ours - peft_loss:>+10.2e}")
        print(f"\nlargest loss difference over {args.steps} steps: {worst:.2e}")
    adapter = os.path.getsize(os.path.join(swift_out, "last", "adapter_model.safetensors"))
    model_bytes = os.path.getsize(os.path.join(args.model, "model.safetensors"))
    print(f"adapter_model.safetensors {adapter / 1e6:.2f} MB, {100 * adapter / model_bytes:.2f}% of model.safetensors "
          f"({model_bytes / 1e6:.1f} MB)")
    print(f"\n{'run':<34} {'ms/step':>9} {'peak RSS MiB':>13}")
    print(f"{'gpt sft --lora-rank':<34} {swift_ms:>9.1f} {swift_rss:>13.0f}")
    held = {}
    for precision in filter(None, args.base_precisions.split(",")):
        losses, ms, rss, _ = gpt_sft(f"swiftgpt-lora-{precision}", True, precision)
        held[precision] = (ms, rss)
        worst = max(abs(losses[step] - swift_losses[step]) for step in range(1, args.steps + 1))
        print(f"{'  --lora-base-precision ' + precision:<34} {ms:>9.1f} {rss:>13.0f}   "
              f"(largest loss difference from the fp32 base: {worst:.2e})")
    if not args.skip_full:
        _, full_ms, full_rss, _ = gpt_sft("swiftgpt-full", False)
        print(f"{'gpt sft (every weight)':<34} {full_ms:>9.1f} {full_rss:>13.0f}")
        print(f"LoRA / full: step time {swift_ms / full_ms:.2f}, peak memory {swift_rss / full_rss:.2f}")
        for precision, (ms, rss) in held.items():
            print(f"LoRA over a {precision} base / full: step time {ms / full_ms:.2f}, peak memory {rss / full_rss:.2f}")
    if not args.skip_peft:
        torch_ms = median(theirs["ms"])
        print(f"{'PEFT + PyTorch loop':<34} {torch_ms:>9.1f} {torch_rss:>13.0f}")
        print(f"PEFT / SwiftGPT step time: {torch_ms / swift_ms:.2f}")


if __name__ == "__main__":
    main()
