#!/usr/bin/env python3
"""SwiftGPT's reward model and PPO side by side with TRL's, on the same models and data, in one run.

1. Reward model: `gpt reward train` and TRL's RewardTrainer from the same starting model (a SwiftGPT checkpoint,
   which transformers loads as GPT-2), on the same pairs, with the same epochs, learning rate, batch and schedule;
   both are scored by this script the same way: each dev row keeps its last `context` tokens, and the pairwise
   accuracy is the share of pairs whose chosen row gets the higher reward (ties count half).
2. PPO: seconds per iteration (rollout + updates) of `gpt ppo` and of TRL's PPOTrainer at the same rollout size,
   response length (every response runs to its end), mini-batch, epochs per rollout and thread count, the reward
   being the reward model trained in step 1. TRL's PPO keeps a separate critic (its value model starts from the
   reward model, as TRL's examples do); SwiftGPT's value head shares the policy's body.

Needs: torch, transformers, datasets, and TRL with its PPOTrainer (TRL 0.29.1 keeps it in trl.experimental.ppo;
TRL 1.x has none): `pip install --target /tmp/trl029 --no-deps trl==0.29.1`, then PYTHONPATH=/tmp/trl029.

usage: python3 scripts/trl_compare.py --model DIR --pairs-train F --pairs-dev F --prompts F [--out DIR]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def read_jsonl(path, limit=None):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:limit] if limit else rows


def run_gpt(gpt, arguments):
    """Runs the gpt tool, echoing its output; returns the output."""
    start = time.perf_counter()
    result = subprocess.run([gpt] + arguments, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"gpt {' '.join(arguments[:2])} failed:\n{result.stdout}\n{result.stderr}")
    command = " ".join(arguments[:2] if len(arguments) > 1 and not arguments[1].startswith("-") else arguments[:1])
    print(f"  gpt {command} finished in {time.perf_counter() - start:.1f} s")
    return result.stdout


def pairwise_accuracy(model, tokenizer, pairs, context, torch):
    """Share of pairs whose chosen row (prompt + chosen, its last `context` tokens) gets the higher reward."""
    model.eval()
    wins = 0.0
    with torch.no_grad():
        for pair in pairs:
            rewards = []
            for reply in (pair["chosen"], pair["rejected"]):
                ids = tokenizer(pair["prompt"] + reply)["input_ids"][-context:]
                rewards.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
            wins += 1.0 if rewards[0] > rewards[1] else 0.5 if rewards[0] == rewards[1] else 0.0
    accuracy = wins / len(pairs)
    return accuracy, (accuracy * (1 - accuracy) / len(pairs)) ** 0.5


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="starting model (a SwiftGPT checkpoint folder with its tokenizer)")
    parser.add_argument("--pairs-train", required=True)
    parser.add_argument("--pairs-dev", required=True)
    parser.add_argument("--prompts", required=True, help='JSONL {"prompt": text}')
    parser.add_argument("--out", default=".build/trl-compare")
    parser.add_argument("--gpt", default=".build/release/gpt")
    parser.add_argument("--train-limit", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=6, help="PPO iterations timed (after a first one)")
    parser.add_argument("--rollout-size", type=int, default=64)
    parser.add_argument("--mini-batch", type=int, default=16)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2TokenizerFast
    import trl
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import RewardConfig, RewardTrainer
    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        sys.exit(f"TRL {trl.__version__} has no PPOTrainer: pip install --target /tmp/trl029 --no-deps trl==0.29.1 "
                 "and run with PYTHONPATH=/tmp/trl029")
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
          f"{args.threads} threads")

    model_dir = args.model
    tokenizer = GPT2TokenizerFast.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token = "<|endoftext|>"
    context = json.load(open(os.path.join(model_dir, "config.json")))["n_positions"]
    train = read_jsonl(args.pairs_train, args.train_limit)
    dev = read_jsonl(args.pairs_dev)
    train_file = os.path.join(args.out, "pairs-train.jsonl")
    with open(train_file, "w", encoding="utf-8") as f:
        for pair in train:
            f.write(json.dumps(pair) + "\n")

    # 1. Reward models.
    print(f"\n1. Reward model: {len(train)} train pairs, {len(dev)} dev pairs, {args.epochs} epoch(s), lr {args.learning_rate}, "
          f"batch {args.batch_size}, context {context}")
    swift_rm = os.path.join(args.out, "swiftgpt-rm")
    run_gpt(args.gpt, ["reward", "train", "--model", model_dir, "--train", train_file, "--dev", args.pairs_dev,
                       "--out", swift_rm, "--epochs", str(args.epochs), "--learning-rate", str(args.learning_rate),
                       "--batch-size", str(args.batch_size), "--seed", "1", "--precision", "fp32"])
    swift_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(swift_rm, "last"))
    swift_accuracy = pairwise_accuracy(swift_model, tokenizer, dev, context, torch)

    def keep_end(text):  # TRL appends an end-of-text token and drops rows longer than max_length
        return tokenizer.decode(tokenizer(text)["input_ids"][-(context - 1):])
    trl_rm = os.path.join(args.out, "trl-rm")
    rm_model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    rm_model.config.pad_token_id = rm_model.config.eos_token_id = rm_model.config.bos_token_id = tokenizer.eos_token_id
    dataset = Dataset.from_list([{"chosen": keep_end(p["prompt"] + p["chosen"]), "rejected": keep_end(p["prompt"] + p["rejected"])}
                                 for p in train])
    start = time.perf_counter()
    trainer = RewardTrainer(model=rm_model, processing_class=tokenizer, train_dataset=dataset, args=RewardConfig(
        output_dir=trl_rm, num_train_epochs=args.epochs, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
        lr_scheduler_type="linear", warmup_steps=-(-len(train) // args.batch_size) * args.epochs * 3 // 100 + 1, weight_decay=0.01, max_grad_norm=1.0, max_length=context,
        logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, seed=1, center_rewards_coefficient=None))
    trainer.train()
    print(f"  TRL RewardTrainer finished in {time.perf_counter() - start:.1f} s")
    trl_accuracy = pairwise_accuracy(rm_model, tokenizer, dev, context, torch)
    print(f"\n  dev pairwise accuracy: SwiftGPT {swift_accuracy[0]:.4f} ± {swift_accuracy[1]:.4f}, "
          f"TRL {trl_accuracy[0]:.4f} ± {trl_accuracy[1]:.4f}")

    # 2. PPO time per iteration.
    print(f"\n2. PPO: rollouts of {args.rollout_size} responses of {args.response_length} tokens, mini-batches of "
          f"{args.mini_batch}, {args.ppo_epochs} epochs per rollout, reward = SwiftGPT's reward model above")
    reward_dir = os.path.join(swift_rm, "last")
    output = run_gpt(args.gpt, ["ppo", "--policy", model_dir, "--reward", reward_dir, "--prompts", args.prompts,
                                "--out", os.path.join(args.out, "swiftgpt-ppo"), "--iterations", str(args.iterations),
                                "--rollout-size", str(args.rollout_size), "--batch-size", str(args.mini_batch),
                                "--epochs-per-rollout", str(args.ppo_epochs), "--max-new-tokens", str(args.response_length),
                                "--fixed-length", "--learning-rate", "5e-5", "--seed", "1", "--precision", "fp32",
                                # TRL answers no held-out prompts: neither does this run, so that the times compare.
                                "--held-out", "0"])
    times = [float(t) for t in re.findall(r"rollout \d+: .*\(([0-9.]+) s\)", output)]
    swift_per_iteration = (times[-1] - times[0]) / (len(times) - 1)

    prompts = [row["prompt"] for row in read_jsonl(args.prompts)]
    ppo_tokenizer = GPT2TokenizerFast.from_pretrained(model_dir, padding_side="left")
    ppo_tokenizer.pad_token = ppo_tokenizer.eos_token = "<|endoftext|>"
    prompt_dataset = Dataset.from_list([{"input_ids": ppo_tokenizer(p)["input_ids"]} for p in prompts])
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir)
    reward = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1)
    for m in (policy, reference, reward, value):
        m.config.pad_token_id = m.config.eos_token_id = m.config.bos_token_id = ppo_tokenizer.eos_token_id
        if getattr(m, "generation_config", None) is not None:
            m.generation_config.pad_token_id = m.generation_config.eos_token_id = m.generation_config.bos_token_id = ppo_tokenizer.eos_token_id
    stamps = []

    class Stamp(transformers.TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            stamps.append(time.perf_counter())

    # TRL's rollout is per_device_train_batch_size × gradient_accumulation_steps responses, split into
    # num_mini_batches mini-batches, each one optimizer step when it is one micro-batch: as SwiftGPT's run above.
    config = PPOConfig(output_dir=os.path.join(args.out, "trl-ppo"), per_device_train_batch_size=args.rollout_size,
                       gradient_accumulation_steps=1, num_mini_batches=args.rollout_size // args.mini_batch,
                       total_episodes=args.rollout_size * (args.iterations + 1), num_ppo_epochs=args.ppo_epochs,
                       response_length=args.response_length, stop_token=None, temperature=1.0, learning_rate=5e-5,
                       local_rollout_forward_batch_size=args.rollout_size, num_sample_generations=0, kl_coef=0.05,
                       report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, seed=1)
    ppo = PPOTrainer(args=config, processing_class=ppo_tokenizer, model=policy, ref_model=reference, reward_model=reward,
                     value_model=value, train_dataset=prompt_dataset, eval_dataset=prompt_dataset.select(range(16)))
    ppo.add_callback(Stamp())
    ppo.train()
    trl_per_iteration = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    print(f"\n  seconds per PPO iteration (mean of {len(times) - 1} after the first): SwiftGPT {swift_per_iteration:.2f}, "
          f"TRL {trl_per_iteration:.2f} (mean of {len(stamps) - 1}); SwiftGPT is {trl_per_iteration / swift_per_iteration:.2f}x as fast")


if __name__ == "__main__":
    main()
