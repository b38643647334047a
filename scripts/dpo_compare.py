#!/usr/bin/env python3
"""SwiftGPT's DPO side by side with TRL's DPOTrainer: the same starting model, pairs and hyper-parameters, in one run.

Both train the model in --model (a SwiftGPT checkpoint or a Hugging Face GPT-2 folder with its tokenizer files) on
the first --pairs pairs of --data whose prompt and replies fit --max-length tokens (so that neither cuts anything),
every step on all of them (one batch: the order of pairs within an epoch cannot differ), with no dropout, no weight
decay, no warmup, a linear decay to 0 over --steps steps, gradient clipping at 1 and fp32 throughout (TRL's
DPOConfig turns bf16 autocast on by default where the CPU has bf16; the script turns it off). Each reply is
read after its prompt, tokenized apart from it, and closed by the end-of-text token, as both do. The script prints
both losses at every step and their largest difference, then each run's seconds per step.

Needs: torch, transformers, datasets, trl (pip). usage:
  python3 scripts/dpo_compare.py --model DIR --data ../shared/data/hh-rlhf/dev.jsonl [--loss sigmoid|ipo|hinge]
"""
import argparse
import json
import os
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="starting model: a SwiftGPT checkpoint or Hugging Face GPT-2 folder")
    parser.add_argument("--data", required=True, help='JSONL pairs {"prompt", "chosen", "rejected"}')
    parser.add_argument("--out", default=".build/dpo-compare")
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128, help="longest prompt + reply kept, in tokens")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss", default="sigmoid", choices=["sigmoid", "ipo", "hinge"])
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, GPT2TokenizerFast
    import trl
    from trl import DPOConfig, DPOTrainer
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, {args.threads} threads")

    tokenizer = GPT2TokenizerFast.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.eos_token = "<|endoftext|>"

    def length(text):
        return len(tokenizer(text)["input_ids"])
    pairs = []
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            pair = json.loads(line)
            prompt = length(pair["prompt"])
            if max(prompt + length(pair["chosen"]), prompt + length(pair["rejected"])) + 1 <= args.max_length:
                pairs.append({k: pair[k] for k in ("prompt", "chosen", "rejected")})
            if len(pairs) == args.pairs:
                break
    data = os.path.join(args.out, "pairs.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair) + "\n")
    print(f"{len(pairs)} pairs of at most {args.max_length} tokens, {args.steps} steps of all of them, lr {args.learning_rate}, "
          f"{args.loss} loss, beta {args.beta}, label smoothing {args.label_smoothing}")

    swift_out = os.path.join(args.out, "swiftgpt")
    subprocess.run(["rm", "-rf", swift_out], check=True)
    start = time.perf_counter()
    result = subprocess.run([args.gpt, "dpo", "--policy", args.model, "--train", data, "--dev", data, "--out", swift_out,
                             "--epochs", str(args.steps), "--batch-size", str(len(pairs)), "--learning-rate", str(args.learning_rate),
                             "--beta", str(args.beta), "--loss", args.loss, "--label-smoothing", str(args.label_smoothing),
                             "--warmup-fraction", "0", "--weight-decay", "0", "--gradient-clip", "1", "--schedule", "linear",
                             "--dropout", "0", "--precision", "fp32", "--log-interval", "1", "--seed", "1"],
                            capture_output=True, text=True)
    swift_seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"gpt dpo failed:\n{result.stdout}\n{result.stderr}")
    records = [json.loads(line) for line in open(os.path.join(swift_out, "metrics.jsonl"), encoding="utf-8")]
    swift_losses = {r["step"]: r["train_loss"] for r in records if "train_loss" in r}
    swift_norms = {r["step"]: r["grad_norm"] for r in records if "grad_norm" in r}
    swift_step_ms = [r["ms_per_step"] for r in records if "ms_per_step" in r]

    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.config.pad_token_id = tokenizer.eos_token_id
    trl_losses, trl_norms, stamps = {}, {}, []

    class Record(transformers.TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                trl_losses[state.global_step] = float(logs["loss"])
                trl_norms[state.global_step] = float(logs["grad_norm"])

        def on_step_end(self, *_args, **_kwargs):
            stamps.append(time.perf_counter())

    config = DPOConfig(output_dir=os.path.join(args.out, "trl"), num_train_epochs=args.steps, per_device_train_batch_size=len(pairs),
                       learning_rate=args.learning_rate, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, beta=args.beta, loss_type=args.loss, label_smoothing=args.label_smoothing,
                       max_length=args.max_length, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=1,
                       bf16=False)  # TRL's DPOConfig defaults to bf16 autocast where the CPU has it
    trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=Dataset.from_list(pairs))
    trainer.add_callback(Record())
    start = time.perf_counter()
    trainer.train()
    trl_seconds = time.perf_counter() - start

    print(f"\n{'':>4}  {'loss':^34}  {'gradient norm (before clipping)':^34}")
    print(f"{'step':>4}  {'SwiftGPT':>10}  {'TRL':>10}  {'difference':>10}  {'SwiftGPT':>10}  {'TRL':>10}  {'difference':>10}")
    worst = 0.0
    for step in range(1, args.steps + 1):
        ours, theirs = swift_losses.get(step), trl_losses.get(step)
        if ours is None or theirs is None:
            print(f"{step:>4}  {ours!s:>10}  {theirs!s:>10}")
            continue
        worst = max(worst, abs(ours - theirs))
        norms = (swift_norms[step], trl_norms[step])
        print(f"{step:>4}  {ours:>10.6f}  {theirs:>10.6f}  {ours - theirs:>+10.2e}  {norms[0]:>10.5f}  {norms[1]:>10.5f}  {norms[0] - norms[1]:>+10.2e}")
    print(f"\nlargest difference over {args.steps} steps: {worst:.2e}")
    trl_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000
    swift_step = sorted(swift_step_ms[1:])[len(swift_step_ms[1:]) // 2]
    print(f"ms per step (median after the first): SwiftGPT {swift_step:.1f}, TRL {trl_step:.1f} (mean after the first); "
          f"wall time with loading: SwiftGPT {swift_seconds:.1f} s, TRL {trl_seconds:.1f} s")


if __name__ == "__main__":
    main()
