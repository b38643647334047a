#!/usr/bin/env python3
"""Load a checkpoint written by SwiftGPT with Hugging Face transformers and compare its outputs.

Usage: hf_check.py MODEL_DIR CHECK_FILE
CHECK_FILE is a safetensors file that SwiftGPT wrote, holding `input_ids` (int64 [B, T], stored as float32) and, by
the class that config.json names:
- a language model (…LMHeadModel): `logits` (float32 [B, T, V]);
- a sequence classifier (…ForSequenceClassification): `logits` (float32 [B, num_labels]) of right-padded rows
  (transformers pools each row at its last non-pad token);
- a double-heads model (…DoubleHeadsModel): `mc_token_ids` (int64 [B, C], as float32) and `mc_logits` ([B, C]) for
  input_ids of shape [B, C, T].
Prints the max absolute difference; exits 1 above 1e-4, 2 when the load itself fails.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file

model_dir, check_file = sys.argv[1], sys.argv[2]
with open(os.path.join(model_dir, "config.json")) as f:
    architecture = json.load(f)["architectures"][0]
try:
    model = getattr(transformers, architecture).from_pretrained(model_dir).eval()
except Exception as error:  # noqa: BLE001 - report any load failure
    print(f"transformers could not load {model_dir} as {architecture}: {error}")
    sys.exit(2)
expected = load_file(check_file)
ids = expected["input_ids"].to(torch.long)
with torch.no_grad():
    if architecture.endswith("DoubleHeadsModel"):
        outputs = model(ids, mc_token_ids=expected["mc_token_ids"].to(torch.long)).mc_logits
        reference = expected["mc_logits"]
    else:
        outputs = model(ids).logits
        reference = expected["logits"]
difference = (outputs - reference).abs().max().item()
print(f"{type(model).__name__}: max |outputs difference| = {difference:.3e}")
sys.exit(0 if difference <= 1e-4 else 1)
