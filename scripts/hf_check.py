#!/usr/bin/env python3
"""Load a checkpoint written by SwiftGPT with Hugging Face transformers and compare its logits.

Usage: hf_check.py MODEL_DIR CHECK_FILE
CHECK_FILE is a safetensors file with `input_ids` (int64 [B, T], stored as float32) and `logits` (float32 [B, T, V])
that SwiftGPT computed. Prints the max absolute difference; exits 1 above 1e-4, 2 when the load itself fails.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

model_dir, check_file = sys.argv[1], sys.argv[2]
try:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
except Exception as error:  # noqa: BLE001 - report any load failure
    print(f"transformers could not load {model_dir}: {error}")
    sys.exit(2)
expected = load_file(check_file)
ids = expected["input_ids"].to(torch.long)
with torch.no_grad():
    logits = model(ids).logits
difference = (logits - expected["logits"]).abs().max().item()
print(f"{type(model).__name__}: max |logits difference| = {difference:.3e}")
sys.exit(0 if difference <= 1e-4 else 1)
