#!/usr/bin/env python3
"""Train a small byte-level BPE with Hugging Face `tokenizers` as GPT-NeoX's tokenizer is set up, and encode test texts.

Usage: tokenizer_json_reference.py TRAINING_TEXT CASES_JSONL OUT_DIR [--digits]
With --digits, the tokenizer is set up as StarCoder's instead: no normalizer, the Digits pre-tokenizer (each digit
alone) before ByteLevel, and no added tokens.
Writes OUT_DIR/tokenizer.json (NFC normalizer, ByteLevel pre-tokenizer without a prefix space, special tokens
<|endoftext|> and <|padding|>, and runs of 2 to 8 spaces as non-special added tokens, as GPT-NeoX-20B's file has
runs of spaces) and OUT_DIR/expected.jsonl: for each {"text"} of CASES_JSONL, {"text", "ids"} as `tokenizers`
encodes it (added tokens cut out first, no special tokens added), and OUT_DIR/tokenizer-string-merges.json, the same
tokenizer with its merges written as "a b" strings (the older form).
"""
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers, AddedToken

text_file, cases_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
digits = "--digits" in sys.argv[4:]
os.makedirs(out, exist_ok=True)
tokenizer = Tokenizer(models.BPE())
if digits:
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
else:
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|padding|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tokenizer.train([text_file], trainer)
if not digits:
    tokenizer.add_tokens([AddedToken(" " * n, normalized=True, special=False) for n in range(8, 1, -1)])
tokenizer.save(os.path.join(out, "tokenizer.json"))

document = json.load(open(os.path.join(out, "tokenizer.json")))
document["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in document["model"]["merges"]]
json.dump(document, open(os.path.join(out, "tokenizer-string-merges.json"), "w"), ensure_ascii=False)

with open(cases_file) as f, open(os.path.join(out, "expected.jsonl"), "w") as expected:
    for line in f:
        text = json.loads(line)["text"]
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        expected.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
