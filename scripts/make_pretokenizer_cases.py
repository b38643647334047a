#!/usr/bin/env python3
"""Writes Tests/TokenizersTests/Resources/random_cases.jsonl: random Unicode strings with GPT-2's pre-tokenization
(by Hugging Face tokenizers' ByteLevel pre-tokenizer) and token ids (by tiktoken with GPT-2's vocabulary).
Run once; the output is committed. (Python's `regex` module is not used: it yields empty matches before combining
marks, unlike the engines behind tiktoken and tokenizers.)

Needs: pip install tokenizers tiktoken. Usage: python3 scripts/make_pretokenizer_cases.py [count]
"""
import json
import random
import sys
from pathlib import Path

import tiktoken
from tokenizers import pre_tokenizers

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ROOT = Path(__file__).resolve().parent.parent
VOCAB = ROOT / "Sources/Tokenizers/Resources/gpt2/vocab.json"

# Characters chosen to exercise every branch: ASCII classes, apostrophes and contraction letters, Unicode spaces,
# letters and numbers of other scripts, combining marks, emoji, and rare planes.
POOL = (list(" \t\n\r\x0b\x0c'sStTrReEvVmMlLdD") + list("abcxyzABC0123456789.,;:!?-_()[]{}\"/\\@#$%^&*+=<>|~`")
        + ["\u00a0", "\u0085", "\u1680", "\u2000", "\u2009", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
           "\ufeff", "é", "ß", "Ω", "ж", "ע", "ش", "अ", "ก", "中", "文", "日", "本", "한", "ǅ", "ʰ", "々",
           "٣", "४", "Ⅻ", "½", "²", "①", "\u0301", "\u0308", "\u20dd", "’", "‘", "“", "—", "…", "€", "©",
           "😀", "👍🏽", "\u200d", "👨", "🇫", "🇷", "𝔘", "𝟘", "𐍈", "\U00020000", "\U000e0001", "\ufffd", "\x00", "\x1b"])


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    vocab = json.loads(VOCAB.read_text())
    byte_for = {c: b for b, c in enumerate(byte_chars())}
    ranks = {bytes(byte_for[c] for c in token): i for token, i in vocab.items() if token != "<|endoftext|>"}
    encoding = tiktoken.Encoding("gpt2-local", pat_str=PATTERN, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": 50256})
    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    rng = random.Random(7)
    out = ROOT / "Tests/TokenizersTests/Resources/random_cases.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for _ in range(count):
            text = "".join(rng.choice(POOL) for _ in range(rng.randint(1, 40)))
            pieces = [bytes(byte_for[c] for c in piece).decode("utf-8")
                      for piece, _ in splitter.pre_tokenize_str(text)]
            assert "".join(pieces) == text
            f.write(json.dumps({"text": text, "pieces": pieces, "ids": encoding.encode_ordinary(text)},
                               ensure_ascii=False) + "\n")
    print(f"wrote {count} cases to {out}")


def byte_chars():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    result, n = [], 0
    for b in range(256):
        if b in printable:
            result.append(chr(b))
        else:
            result.append(chr(256 + n))
            n += 1
    return result


if __name__ == "__main__":
    main()
