#!/usr/bin/env python3
"""Hugging Face PEFT's side of SwiftGPT's adapter tests (LowRankAdapterTests): what PEFT computes with a LoRA adapter.

  peft_check.py logits BASE ADAPTER IDS [--classes N]
      Opens the GPT-2 model in BASE (a sequence classifier of N classes, pad token 0, with --classes), applies the
      adapter in ADAPTER with peft.PeftModel.from_pretrained, and prints the logits for the comma-separated token
      IDS (a language model: every position's; a classifier: the last token's) as one JSON list.
  peft_check.py make BASE OUT IDS
      Makes a LoRA adapter for BASE with PEFT (rank 4, alpha 8, on c_attn and mlp.c_proj; A and B both drawn, so
      that it changes the model), saves it in OUT and prints the adapted model's logits for IDS.

Needs: torch, transformers, peft (pip).
"""
import argparse
import json

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["logits", "make"])
    parser.add_argument("base")
    parser.add_argument("adapter")
    parser.add_argument("ids")
    parser.add_argument("--classes", type=int)
    args = parser.parse_args()
    ids = torch.tensor([[int(i) for i in args.ids.split(",")]])
    torch.manual_seed(0)
    if args.classes:
        base = GPT2ForSequenceClassification.from_pretrained(args.base, num_labels=args.classes, pad_token_id=0)
    else:
        base = GPT2LMHeadModel.from_pretrained(args.base)
    if args.mode == "logits":
        model = PeftModel.from_pretrained(base, args.adapter)
    else:
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"], fan_in_fan_out=True,
                            init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        model.save_pretrained(args.adapter)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    print(json.dumps(logits.reshape(-1).tolist()))


if __name__ == "__main__":
    main()
