#!/usr/bin/env python3
"""GPT-1 fine-tuning in PyTorch + transformers, with gpt finetune's recipe, to compare dev metrics and speed.

Usage: finetune_pytorch.py --task TASK --model DIR --train FILE --dev FILE [--epochs 3] [--batch-size 32]
                           [--learning-rate 6.25e-5] [--lm-weight 0.5] [--seed 1] [--threads 2]

DIR is a SwiftGPT checkpoint folder (a Hugging Face GPT2LMHeadModel with vocab.json + merges.txt). Like
`gpt finetune`: three special tokens appended to the vocabulary (new rows N(0, 0.02)); classification
[start] text [extract], entailment [start] premise [delim] hypothesis [extract], similarity both orders with the two
extract states added, multiple choice one sequence per choice and a softmax over them; inputs longer than the context
lose tokens from the end of their longest text; a bias-free linear head (multiple choice: with bias) after dropout
0.1 on the extract state; L = L_task + λ·L_LM over the real tokens; AdamW (0.9, 0.999, eps 1e-8, weight decay 0.01
on parameters of rank ≥ 2), warmup over ceil(0.2% of the steps) then linear decay to 0, gradient clipping at 1; dev
metrics after every epoch. The training order is a seeded shuffle per epoch, not SwiftGPT's (its generator differs).
Prints one line per epoch with the training time (evaluation excluded) and the dev figures.
"""
import argparse
import json
import math
import random
import time

import torch
import torch.nn.functional as F
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Model

FIELDS = {"classification": ["text"], "entailment": ["premise", "hypothesis"], "similarity": ["text_a", "text_b"],
          "multiple-choice": ["context"]}


def load(path, task):
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            segments = [record[k] for k in FIELDS[task]] + (record["choices"] if task == "multiple-choice" else [])
            examples.append((segments, record["label"]))
    return examples


def layout(first, second, special, context):
    """[start] first ([delim] second) [extract], cutting the longest text first as gpt finetune does."""
    start, delimiter, extract = special
    parts = [list(first)] + ([list(second)] if second is not None else [])
    excess = sum(map(len, parts)) - (context - len(parts) - 1)
    while excess > 0:
        order = sorted(range(len(parts)), key=lambda i: -len(parts[i]))
        longest, following = order[0], (len(parts[order[1]]) if len(order) > 1 else 0)
        cut = min(excess, max(1, len(parts[longest]) - following))
        del parts[longest][len(parts[longest]) - cut:]
        excess -= cut
    return [start] + parts[0] + ([delimiter] + parts[1] if len(parts) > 1 else []) + [extract]


def encode(examples, task, tokenizer, special, context):
    encoded = []
    for segments, label in examples:
        ids = [tokenizer.encode(s).ids for s in segments]
        if task == "classification":
            rows = [layout(ids[0], None, special, context)]
        elif task == "multiple-choice":
            rows = [layout(ids[0], choice, special, context) for choice in ids[1:]]
        else:
            rows = [layout(ids[0], ids[1], special, context)]
            if task == "similarity":
                rows.append(layout(ids[1], ids[0], special, context))
        encoded.append((rows, label))
    return encoded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True, choices=FIELDS)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=6.25e-5)
    parser.add_argument("--lm-weight", type=float, default=0.5)
    parser.add_argument("--head-dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    tokenizer = ByteLevelBPETokenizer(f"{args.model}/vocab.json", f"{args.model}/merges.txt")
    body = GPT2Model.from_pretrained(args.model)
    vocabulary, width, context = body.config.vocab_size, body.config.n_embd, body.config.n_positions
    special = (vocabulary, vocabulary + 1, vocabulary + 2)
    body.resize_token_embeddings(vocabulary + 3, mean_resizing=False)
    with torch.no_grad():
        body.wte.weight[vocabulary:].normal_(0, 0.02)
    train = encode(load(args.train, args.task), args.task, tokenizer, special, context)
    dev = encode(load(args.dev, args.task), args.task, tokenizer, special, context)
    regression = args.task == "similarity" and any(isinstance(label, float) for _, label in train)
    if args.task == "multiple-choice":
        head = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(head.bias)
    else:
        head = torch.nn.Linear(width, 1 if regression else max(2, max(label for _, label in train) + 1), bias=False)
    torch.nn.init.normal_(head.weight, 0, 0.02)
    modules = torch.nn.ModuleList([body, head])
    decay = [p for p in modules.parameters() if p.dim() >= 2]
    rest = [p for p in modules.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = math.ceil(0.002 * total)

    def rate(step):  # gpt finetune's schedule: warmup (step+1)/(warmup+1), then linear decay to 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, 1 - (step - warmup) / max(total - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)

    def forward(batch, training):
        rows = [row for rows, _ in batch for row in rows]
        length = max(map(len, rows))
        ids = torch.tensor([row + [special[0]] * (length - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (length - len(row)) for row in rows])
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(row) - 1 for row in rows])
        pooled = hidden[torch.arange(len(rows)), last]
        if args.task == "similarity":
            pooled = pooled[0::2] + pooled[1::2]
        if training:
            pooled = F.dropout(pooled, args.head_dropout)
        return head(pooled), hidden, ids, mask

    def task_loss(outputs, batch):
        labels = [label for _, label in batch]
        if regression:
            return F.mse_loss(outputs.squeeze(-1), torch.tensor(labels, dtype=torch.float32))
        if args.task == "multiple-choice":
            losses, offset = [], 0
            for rows, label in batch:
                scores = outputs[offset:offset + len(rows), 0]
                losses.append(F.cross_entropy(scores[None], torch.tensor([label])))
                offset += len(rows)
            return torch.stack(losses).mean()
        return F.cross_entropy(outputs, torch.tensor(labels))

    def evaluate():
        body.eval()
        predictions, loss_sum = [], 0.0
        with torch.no_grad():
            for i in range(0, len(dev), args.batch_size):
                batch = dev[i:i + args.batch_size]
                outputs, _, _, _ = forward(batch, False)
                loss_sum += task_loss(outputs, batch).item() * len(batch)
                if regression:
                    predictions += outputs.squeeze(-1).tolist()
                elif args.task == "multiple-choice":
                    offset = 0
                    for rows, _ in batch:
                        predictions.append(int(outputs[offset:offset + len(rows), 0].argmax()))
                        offset += len(rows)
                else:
                    predictions += outputs.argmax(-1).tolist()
        body.train()
        labels = [label for _, label in dev]
        figures = {"loss": loss_sum / len(dev)}
        if regression:
            x, y = torch.tensor(predictions, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
            figures["pearson"] = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
            rank = lambda v: torch.tensor([sorted(v.tolist()).index(a) + (sorted(v.tolist()).count(a) - 1) / 2 for a in v.tolist()])
            figures["spearman"] = torch.corrcoef(torch.stack([rank(x), rank(y)]))[0, 1].item()
        else:
            figures["accuracy"] = sum(p == t for p, t in zip(predictions, labels)) / len(labels)
            if args.task != "multiple-choice" and head.out_features == 2:
                tp = sum(p == 1 and t == 1 for p, t in zip(predictions, labels))
                figures["f1"] = 2 * tp / max(1, predictions.count(1) + labels.count(1))
        return figures

    body.train()
    print(f"torch {torch.__version__}, {args.threads} threads; {len(train)} train, {len(dev)} dev examples, "
          f"{steps_per_epoch} steps per epoch", flush=True)
    for epoch in range(args.epochs):
        order = list(range(len(train)))
        random.shuffle(order)
        start = time.time()
        for step in range(steps_per_epoch):
            batch = [train[i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]]
            outputs, hidden, ids, mask = forward(batch, True)
            loss = task_loss(outputs, batch)
            if args.lm_weight > 0:
                logits = hidden[:, :-1] @ body.wte.weight.T
                targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                loss = loss + args.lm_weight * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        seconds = time.time() - start
        figures = evaluate()
        print(f"epoch {epoch + 1}: train {seconds:.1f} s, " + ", ".join(f"dev {k} {v:.4f}" for k, v in figures.items()),
              flush=True)


if __name__ == "__main__":
    main()
