#!/usr/bin/env python3
"""Hugging Face PEFT's side of SwiftGPT's adapter tests (LowRankAdapterTests): what PEFT computes with LoRA adapters.

  peft_check.py JOBS.json

JOBS.json is a list of jobs, run in order in this one process; the last line printed is a JSON list holding each
job's logits (a flat list) in the same order. A job is an object:
  {"mode": "logits", "base": DIR, "adapter": DIR, "ids": [...], "classes": N (optional)}
      Opens the model in DIR (any model type transformers' Auto classes know; a sequence classifier of N classes,
      pad token 0, with "classes"), applies the adapter with peft.PeftModel.from_pretrained, and computes the logits
      for the token ids (a language model: every position's; a classifier: the last token's).
  {"mode": "make", "base": DIR, "adapter": OUT, "ids": [...], "targets": [...] (optional)}
      Makes a LoRA adapter for the model in DIR with PEFT (rank 4, alpha 8, on the modules "targets" names, else
      PEFT's default ones for the model type: GPT-Neo's and GPT-J's q_proj and v_proj, for instance; A and B both
      drawn, so that it changes the model), saves it in OUT and computes the adapted model's logits.

Needs: torch, transformers, peft (pip).
"""
import json
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification


def run(job):
    torch.manual_seed(0)
    if job.get("classes"):
        base = AutoModelForSequenceClassification.from_pretrained(job["base"], num_labels=job["classes"], pad_token_id=0)
    else:
        base = AutoModelForCausalLM.from_pretrained(job["base"])
    if job["mode"] == "logits":
        model = PeftModel.from_pretrained(base, job["adapter"])
    else:
        conv1d = base.config.model_type in ("gpt2", "openai-gpt")
        config = LoraConfig(r=4, lora_alpha=8, target_modules=job.get("targets"), fan_in_fan_out=conv1d,
                            init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        model.save_pretrained(job["adapter"])
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([job["ids"]])).logits.reshape(-1).tolist()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps([run(job) for job in jobs]))


if __name__ == "__main__":
    main()
