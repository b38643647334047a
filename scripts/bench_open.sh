#!/usr/bin/env bash
# Opening large models: for randomly initialised GPT-2-XL-shaped (1.56B parameters) and Pythia-1.4B-shaped (1.41B)
# Hugging Face folders, and GPT-2 124M, per decoding precision: the time to open the model, the time to the first
# token of a short prompt, the peak resident memory against the size of the weights in that precision, and the
# decoding speed.
#
#   scripts/bench_open.sh [FOLDER]     (default .build/bench-open; the models are made there once, by transformers)
#
# Each figure comes from its own `gpt generate` process: with --max-tokens 1, the process's wall time less the
# generation's own time is the time to open the model (loading, packing, tokenizer), the generation's time is the
# time to the first token, and /usr/bin/time's maximum resident size is the peak; with --max-tokens 65, the 64
# tokens after the first over the time they took is the decoding speed. Sizes in MB (10^6 bytes). Needs python3
# with torch and transformers (only to make the folders), about 16 GB of disk and 8 GB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER=${1:-.build/bench-open}
GPT=.build/release/gpt
swift build -c release --product gpt > /dev/null
mkdir -p "$FOLDER"

python3 - "$FOLDER" <<'EOF'
import os, shutil, sys, torch, transformers
folder = sys.argv[1]
torch.manual_seed(0)
shapes = {
    "gpt2-124m": transformers.GPT2Config(),
    "gpt2-xl-shape": transformers.GPT2Config(n_embd=1600, n_layer=48, n_head=25),
    "pythia-1.4b-shape": transformers.GPTNeoXConfig(vocab_size=50304, hidden_size=2048, num_hidden_layers=24,
                                                    num_attention_heads=16, intermediate_size=8192, rotary_pct=0.25,
                                                    max_position_embeddings=2048, use_parallel_residual=True,
                                                    tie_word_embeddings=False),
}
for name, config in shapes.items():
    out = os.path.join(folder, name)
    if os.path.exists(os.path.join(out, "config.json")):
        continue
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out + ".partial", safe_serialization=True)
    for file in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join("Sources/Tokenizers/Resources/gpt2", file), os.path.join(out + ".partial", file))
    os.rename(out + ".partial", out)
    print(f"made {out}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters", flush=True)
EOF

prompt="The history of the region begins with the first settlements along the river, where farmers grew"
printf "%-18s %-5s %10s %9s %10s %12s %11s %10s\n" model prec weights_MB open_s ttft_s peak_RSS_MB RSS/weights tokens/s
for model in gpt2-124m pythia-1.4b-shape gpt2-xl-shape; do
    for precision in fp32 bf16 int8; do
        log=$(mktemp)
        /usr/bin/time -f "TIME %e %M" "$GPT" generate --model "$FOLDER/$model" --prompt "$prompt" --max-tokens 1 \
            --temperature 0 --precision "$precision" 2> "$log" > /dev/null
        wall=$(awk '/^TIME/ {print $2}' "$log"); peak_kb=$(awk '/^TIME/ {print $3}' "$log")
        first=$(awk '/tokens in/ {print $4}' "$log")
        /usr/bin/time -f "TIME %e %M" "$GPT" generate --model "$FOLDER/$model" --prompt "$prompt" --max-tokens 65 \
            --temperature 0 --precision "$precision" 2> "$log" > /dev/null
        read -r count seconds < <(awk '/tokens in/ {print $1, $4}' "$log")
        rm -f "$log"
        # Weights in the decoding precision: every matrix (2-D tensor) at 4, 2 or 1 bytes a weight (int8's scales,
        # 0.1-0.3% more, left out), every vector at 4 bytes, as the safetensors headers give them.
        weights_mb=$(python3 - "$FOLDER/$model" "$precision" <<'EOF'
import json, math, os, struct, sys
folder, precision = sys.argv[1], sys.argv[2]
size = {"fp32": 4, "bf16": 2, "int8": 1}[precision]
total = 0
for f in os.listdir(folder):
    if not f.endswith(".safetensors"):
        continue
    with open(os.path.join(folder, f), "rb") as h:
        header = json.loads(h.read(struct.unpack("<Q", h.read(8))[0]))
    for name, entry in header.items():
        if name != "__metadata__" and not name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            total += math.prod(entry["shape"]) * (size if len(entry["shape"]) == 2 else 4)
print(f"{total / 1e6:.0f}")
EOF
)
        awk -v m="$model" -v p="$precision" -v w="$weights_mb" -v wall="$wall" -v first="$first" -v kb="$peak_kb" \
            -v n="$count" -v s="$seconds" 'BEGIN {
                mb = kb * 1024 / 1e6
                printf "%-18s %-5s %10s %9.2f %10.2f %12.0f %11.2f %10.1f\n", m, p, w, wall - first, first, mb, mb / w,
                    (n - 1) / (s - first)
            }'
    done
done
