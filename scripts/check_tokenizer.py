#!/usr/bin/env python3
"""Checks that a tokenizer SwiftGPT trained (vocab.json + merges.txt, and tokenizer.json when the folder has one)
loads in Hugging Face tokenizers and in tiktoken, and that they all give the ids SwiftGPT gave (tokenizer.json
those of tiktoken with special tokens allowed, as transformers splits them out of any text): CASES is JSON lines {"text": ..., "ids": [...]}, as written by
`gpt encode --jsonl` next to its input, or by the test suite.

Usage: python3 scripts/check_tokenizer.py TOKENIZER_DIR CASES
Exit status 0 when all agree, 1 on a mismatch, 2 when tokenizers or tiktoken is missing.
"""
import json
import sys
from pathlib import Path

try:
    import tiktoken
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
except ImportError:
    print("check_tokenizer.py needs tokenizers and tiktoken (pip install tokenizers tiktoken)")
    sys.exit(2)

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_decoder():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    result, n = {}, 0
    for b in range(256):
        if b in printable:
            result[chr(b)] = b
        else:
            result[chr(256 + n)] = b
            n += 1
    return result


def main():
    folder, cases_file = Path(sys.argv[1]), Path(sys.argv[2])
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merged = {"".join(line.split(" ")) for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line}
    decoder = byte_decoder()
    ranks, specials = {}, {}
    for token, i in vocab.items():
        if len(token) == 1 or token in merged:
            ranks[bytes(decoder[c] for c in token)] = i
        else:
            specials[token] = i
    tik = tiktoken.Encoding("trained", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    hf = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    # tokenizer.json, as transformers' AutoTokenizer reads it, when the folder has one.
    full = Tokenizer.from_file(str(folder / "tokenizer.json")) if (folder / "tokenizer.json").exists() else hf
    cases = [json.loads(line) for line in cases_file.read_text(encoding="utf-8").splitlines() if line]
    mismatches = 0
    for case in cases:
        line, ids = case["text"], case["ids"]
        # tokenizer.json's added tokens are split out of any text (as transformers' GPT-2 tokenizer does): it
        # agrees with tiktoken reading special tokens, where the others read them as ordinary text.
        special = tik.encode(line, allowed_special="all") if full is not hf else ids
        if ids != tik.encode_ordinary(line) or ids != hf.encode(line).ids or special != full.encode(line).ids:
            mismatches += 1
            if mismatches <= 5:
                print(f"mismatch on {line!r}: gpt {ids}, tiktoken {tik.encode_ordinary(line)}, tokenizers {hf.encode(line).ids}, "
                      f"tokenizer.json {full.encode(line).ids}")
    names = "tiktoken, tokenizers" + (" and tokenizer.json" if full is not hf else "")
    print(f"{len(cases)} texts, vocabulary {len(vocab)}: {len(cases) - mismatches} agree with {names}, {mismatches} differ")
    sys.exit(1 if mismatches or not cases else 0)


if __name__ == "__main__":
    main()
