#!/usr/bin/env python3
"""tiktoken and Hugging Face tokenizers on the same file as `gpt bench tokenizer`, and BPE training time.

Usage: python3 scripts/bench_tokenizer.py FILE [--train FILE --vocab-size 4096]
Needs: pip install tiktoken tokenizers.
"""
import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tiktoken
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
GPT2 = ROOT / "Sources/Tokenizers/Resources/gpt2"
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_tiktoken():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    decoder, n = {}, 0
    for b in range(256):
        decoder[chr(b) if b in printable else chr(256 + n)] = b
        n += b not in printable
    vocab = json.loads((GPT2 / "vocab.json").read_text())
    ranks = {bytes(decoder[c] for c in t): i for t, i in vocab.items() if t != "<|endoftext|>"}
    return tiktoken.Encoding("gpt2", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def median_time(body, runs=3):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--train")
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    text = Path(args.file).read_text(encoding="utf-8")
    mb = len(text.encode()) / 1e6
    enc = gpt2_tiktoken()
    t = median_time(lambda: enc.encode_ordinary(text))
    print(f"tiktoken encode, 1 thread: {mb / t:.1f} MB/s")
    lines = text.splitlines(keepends=True)
    batch = ["".join(lines[i:i + 1000]) for i in range(0, len(lines), 1000)]
    t = median_time(lambda: enc.encode_ordinary_batch(batch, num_threads=2))
    print(f"tiktoken encode_ordinary_batch, 2 threads: {mb / t:.1f} MB/s")
    hf = ByteLevelBPETokenizer(str(GPT2 / "vocab.json"), str(GPT2 / "merges.txt"))
    t = median_time(lambda: hf.encode(text), runs=1)
    print(f"tokenizers encode, 1 call: {mb / t:.1f} MB/s")
    ids = enc.encode_ordinary(text)
    t = median_time(lambda: enc.decode_bytes(ids))
    print(f"tiktoken decode: {mb / t:.1f} MB/s")
    if args.train:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        start = time.perf_counter()
        tokenizer.train([args.train], trainer)
        print(f"tokenizers BpeTrainer, vocabulary {args.vocab_size}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
