#!/usr/bin/env bash
# SwiftGPT and llama.cpp side by side on one machine, in one run: decoding tokens/s at batch 1 and prompt processing
# of 512 tokens per precision (GPT-2 124M shape), and the perplexity each weight precision costs on a trained model.
#
#   scripts/bench_llamacpp.sh [--model DIR --data PREPARED [--perplexity-only]] [--server-only | --speeds-only] [--threads N]
#
# --model: a GPT-2 model folder (SwiftGPT or Hugging Face, GPT-2 tokenizer) whose perplexity is measured over --data's
# val split (a `gpt prepare --tokenizer gpt2` folder); without them only speeds are measured. Speeds use GPT-2 124M with
# random weights (speed does not depend on their values), written by `gpt` and converted by llama.cpp's own
# convert_hf_to_gguf.py; q8_0 and q4_0 files are made by llama-quantize. Then both servers under 1, 8 and 32 streaming
# clients (scripts/serve_load.py: `gpt serve` on the fp32 model, `llama-server` on the f32 file, 32 slots each, 30 s a
# level): tokens/s, time to first token, resident memory. llama.cpp is built by scripts/build_llamacpp.sh (cached).
# Python needs numpy, torch, transformers and httpx. Not part of CI.
#
# llama.cpp's spinning threads collapse when another process takes a core, so each measurement waits for a 1-minute
# load average below 0.5 (up to 3 minutes, then says so). Only ratios within one run compare: memory bandwidth on a
# shared VM moves by the hour.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
model="" data="" threads=2 speeds=1 server=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) model="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --perplexity-only) speeds=0; server=0; shift ;;
        --server-only) speeds=0; server=1; shift ;;
        --speeds-only) speeds=1; server=0; shift ;;
        *) echo "usage: $0 [--model DIR --data PREPARED] [--threads N]" >&2; exit 2 ;;
    esac
done
[[ -z "$model" || -n "$data" ]] || { echo "error: --model needs --data (a gpt prepare --tokenizer gpt2 folder)" >&2; exit 2; }

gpt="$root/.build/release/gpt"
[[ -x "$gpt" ]] || (cd "$root" && swift build -c release --product gpt > /dev/null)
bins="$("$root/scripts/build_llamacpp.sh")"
src="$(dirname "$(dirname "$bins")")/src"
work="$root/.build/llama.cpp/bench"
mkdir -p "$work"
export PYTHONPATH="$src/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
export SWIFTGPT_THREADS="$threads"

quiet() {
    for _ in $(seq 36); do
        awk '{ exit !($1 < 0.5) }' /proc/loadavg && return 0
        sleep 5
    done
    echo "note: load average $(cut -d' ' -f1 /proc/loadavg) (not quiet) before the next measurement"
}

# A GGUF file per precision of a model folder: f32 by llama.cpp's converter, q8_0 and q4_0 from it by llama-quantize.
convert() {
    local folder="$1" name="$2"
    [[ -s "$work/$name-f32.gguf" ]] || python3 "$src/convert_hf_to_gguf.py" "$folder" --outtype f32 --outfile "$work/$name-f32.gguf" > "$work/$name-convert.log" 2>&1 \
        || { tail -20 "$work/$name-convert.log" >&2; exit 1; }
    for q in q8_0 q4_0; do
        [[ -s "$work/$name-$q.gguf" ]] || "$bins/llama-quantize" "$work/$name-f32.gguf" "$work/$name-$q.gguf" "$q" > "$work/$name-quantize.log" 2>&1 \
            || { tail -20 "$work/$name-quantize.log" >&2; exit 1; }
    done
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $threads threads; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "llama.cpp: $(cat "$(dirname "$src")/VERSION" 2>/dev/null || echo "version unknown")"
if [[ "$speeds" == 1 || "$server" == 1 ]]; then

# GPT-2 124M with random weights, as a Hugging Face folder with the GPT-2 tokenizer.
if [[ ! -s "$work/gpt2-124m/model.safetensors" ]]; then
    mkdir -p "$work/tiny"
    head -c 200000 "$root/data/tinyshakespeare/input.txt" > "$work/tiny.txt"
    "$gpt" prepare --tokenizer gpt2 --out "$work/tiny" "$work/tiny.txt" > /dev/null
    "$gpt" train --preset gpt2 --data "$work/tiny" --out "$work/gpt2-run" --max-iterations 1 --batch-size 1 \
        --eval-interval 1000 --eval-iterations 1 > "$work/gpt2-run.log" 2>&1
    "$gpt" export --model "$work/gpt2-run/last" --out "$work/gpt2-124m" > /dev/null
fi
convert "$work/gpt2-124m" gpt2
fi

if [[ "$speeds" == 1 ]]; then
echo
echo "## Decoding, batch 1 (128 new tokens), and prompt processing (512 tokens), GPT-2 124M"
echo "| weights | SwiftGPT decode tok/s | llama.cpp | ratio | SwiftGPT prompt 512 tok/s | llama.cpp | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for pair in fp32:f32 int8:q8_0 int4:q4_0; do
    ours="${pair%%:*}" theirs="${pair##*:}"
    quiet
    # The median of three runs each, as llama-bench reports the mean of three after a warm-up run.
    decode=$(for _ in 1 2 3; do "$gpt" bench generate --preset gpt2 --prompt-tokens 16 --new-tokens 128 --batch 1 --precision "$ours" \
        | sed -n 's/^batch 1: \([0-9.]*\) tokens\/s.*/\1/p'; done | sort -n | sed -n 2p)
    prompt=$(for _ in 1 2 3; do "$gpt" bench generate --preset gpt2 --prompt-tokens 512 --new-tokens 1 --batch 1 --precision "$ours" \
        | sed -n 's/.*prefill of 512 tokens \([0-9.]*\) ms.*/\1/p'; done | sort -n | sed -n 2p)
    quiet
    json=$("$bins/llama-bench" -m "$work/gpt2-$theirs.gguf" -t "$threads" -p 512 -n 128 -r 3 -o json 2> /dev/null)
    read -r ltg lpp < <(python3 -c '
import json, sys
rows = json.loads(sys.argv[1])
tg = [r["avg_ts"] for r in rows if r["n_gen"] > 0][0]
pp = [r["avg_ts"] for r in rows if r["n_prompt"] > 0][0]
print(tg, pp)' "$json")
    python3 -c '
import sys
ours, theirs, decode, prompt_ms, ltg, lpp = sys.argv[1:]
pp = 512 / (float(prompt_ms) / 1000)
print(f"| {ours} / {theirs} | {float(decode):.1f} | {float(ltg):.1f} | {float(decode) / float(ltg):.2f} | {pp:.0f} | {float(lpp):.0f} | {pp / float(lpp):.2f} |")' \
        "$ours" "$theirs" "$decode" "$prompt" "$ltg" "$lpp"
done
fi

if [[ "$server" == 1 ]]; then
echo
echo "## Server, GPT-2 124M fp32 / f32: streaming clients sending 32-token prompts for 128 tokens each, 30 s a level"
quiet
python3 "$root/scripts/serve_load.py" --model "$work/gpt2-124m" --clients 1,8,32 --seconds 30 --new-connections \
    --output "$work/serve-gpt.json" > "$work/serve-gpt.log"
quiet
python3 "$root/scripts/serve_load.py" --llama-server "$bins/llama-server" --gguf "$work/gpt2-f32.gguf" --threads "$threads" \
    --clients 1,8,32 --seconds 30 --new-connections --output "$work/serve-llama.json" > "$work/serve-llama.log"
python3 - "$work/serve-gpt.json" "$work/serve-llama.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(f)) for f in sys.argv[1:])
print(f"RSS after loading, before any request: SwiftGPT {ours[0]['rss_loaded_mib']:.0f} MiB, llama-server {theirs[0]['rss_loaded_mib']:.0f} MiB")
print("| clients | SwiftGPT tok/s | llama-server tok/s | ratio | first token p50 / p99 ms, SwiftGPT | llama-server | RSS peak MiB, SwiftGPT | llama-server |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for o, t in zip(ours, theirs):
    ms = lambda row: f"{row['ttft_p50_s'] * 1000:.0f} / {row['ttft_p99_s'] * 1000:.0f}"
    print(f"| {o['clients']} | {o['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | {o['tokens_per_s'] / t['tokens_per_s']:.2f} "
          f"| {ms(o)} | {ms(t)} | {o['rss_peak_mib']:.0f} | {t['rss_peak_mib']:.0f} |")
    for name, row in (("SwiftGPT", o), ("llama-server", t)):
        if row["errors"]:
            print(f"  {name}, {row['clients']} clients: {row['errors']} errors, e.g. {row['error_examples'][0]}")
PY
fi

[[ -n "$model" ]] || exit 0
echo
echo "## Perplexity over $data/val.bin: $model"
name="trained"
if [[ ! -s "$work/$name-hf/model.safetensors" ]]; then "$gpt" export --model "$model" --out "$work/$name-hf" > /dev/null; fi
convert "$work/$name-hf" "$name"
context=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("n_positions") or c.get("n_ctx"))' "$work/$name-hf/config.json")
# The val split as text, for llama-perplexity (it tokenizes it again with the same GPT-2 vocabulary).
python3 -c '
import numpy, sys
from transformers import AutoTokenizer
raw = open(sys.argv[1] + "/val.bin", "rb").read()
# A SwiftGPT token file: a 32-byte header (magic, version, bytes per token, count), then the ids.
assert raw[:8] == b"SGPTTOKS", "not a gpt prepare token file"
width = int.from_bytes(raw[12:16], "little")
ids = numpy.frombuffer(raw[32:], dtype=numpy.uint16 if width == 2 else numpy.uint32)
open(sys.argv[3], "w").write(AutoTokenizer.from_pretrained(sys.argv[2]).decode(ids.tolist()))' "$data" "$work/$name-hf" "$work/val.txt"
echo "SwiftGPT: windows of $context tokens, every token after the first scored; llama.cpp: llama-perplexity -c $context (the second half of each window scored)."
echo "Each tool's own fp32 figure is its baseline: compare the ratios."
echo "| weights | SwiftGPT perplexity | ratio to fp32 | llama.cpp perplexity | ratio to f32 |"
echo "| --- | --- | --- | --- | --- |"
base_ours="" base_theirs=""
for pair in fp32:f32 bf16:- int8:q8_0 int4:q4_0; do
    ours="${pair%%:*}" theirs="${pair##*:}"
    # (its progress lines left out of the table; errors still shown)
    p=$("$gpt" loss --model "$model" --data "$data" --split val --precision "$ours" 2> >(grep -v '^evaluating' >&2) \
        | sed -n 's/.*perplexity \([0-9.]*\),.*/\1/p')
    base_ours="${base_ours:-$p}"
    l="—"
    if [[ "$theirs" != "-" ]]; then
        l=$("$bins/llama-perplexity" -m "$work/$name-$theirs.gguf" -f "$work/val.txt" -c "$context" -t "$threads" 2>&1 \
            | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
        base_theirs="${base_theirs:-$l}"
    fi
    python3 -c '
import sys
ours, theirs, p, bp, l, bl = sys.argv[1:]
lt = f"{float(l):.3f} | {float(l) / float(bl):.4f}" if l != "—" else "— | —"
print(f"| {ours} / {theirs} | {float(p):.3f} | {float(p) / float(bp):.4f} | {lt} |")' "$ours" "$theirs" "$p" "$base_ours" "$l" "${base_theirs:-1}"
done
