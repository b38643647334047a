#!/usr/bin/env bash
# InstructGPT's three steps at this machine's scale, on the bundled data: a small GPT pretrained on the texts of the
# demonstration, preference and review data (never a dev split), then (1) supervised fine-tuning on Alpaca
# demonstrations, (2) a reward model on HH-RLHF preference pairs, (3) PPO against an SST-2 sentiment classifier
# (the classic check: the policy learns to continue movie-review openings positively) with a KL penalty toward
# the starting model; then (4) DPO of the SFT policy on the reward model's pairs, whose dev preference accuracy is
# printed beside the reward model's. Stages whose output exists are skipped, so an interrupted run continues.
#   usage: scripts/rlhf_demo.sh [OUT]   (default OUT: .build/rlhf-demo)
# Settings (environment): PRETRAIN_STEPS (500), SFT_LIMIT (1500 demonstrations), RM_LIMIT (all 6478 pairs),
# CLASSIFIER_LIMIT (10000 reviews), PPO_ITERATIONS (40), DPO_LEARNING_RATE (3e-5).
set -euo pipefail
cd "$(dirname "$0")/.."
GPT=${GPT:-.build/release/gpt}
OUT=${1:-.build/rlhf-demo}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-500}
SFT_LIMIT=${SFT_LIMIT:-1500}
RM_LIMIT=${RM_LIMIT:-6478}
CLASSIFIER_LIMIT=${CLASSIFIER_LIMIT:-10000}
PPO_ITERATIONS=${PPO_ITERATIONS:-40}
DPO_LEARNING_RATE=${DPO_LEARNING_RATE:-3e-5}
FIELDS=instruction,input,response,prompt,chosen,text
CORPUS="data/alpaca/train.jsonl data/hh-rlhf/train.jsonl data/sst2/train.jsonl"
mkdir -p "$OUT/data"
start=$(date +%s)
# Runs the command after MARKER unless MARKER exists (the stage finished before), saying so.
unless_done() {
    local marker=$1; shift
    if [ -e "$marker" ]; then echo "already done ($marker exists), skipping; delete it to redo"; else "$@"; fi
}
stage() { echo; echo "== $1 ($(( $(date +%s) - start )) s)"; }

stage "tokenizer and corpus"
unless_done "$OUT/tokenizer/vocab.json" $GPT tokenizer train --vocab-size 4096 --out "$OUT/tokenizer" --fields $FIELDS $CORPUS
unless_done "$OUT/corpus/meta.json" $GPT prepare --tokenizer "$OUT/tokenizer" --out "$OUT/corpus" --val-fraction 0.02 --fields $FIELDS $CORPUS

stage "pretraining: 4 layers, 4 heads, width 128, context 128"
unless_done "$OUT/pretrained/loss.svg" $GPT train --data "$OUT/corpus" --out "$OUT/pretrained" --preset shakespeare-char \
    --layers 4 --heads 4 --width 128 --context 128 --dropout 0 --batch-size 32 --max-iterations "$PRETRAIN_STEPS" \
    --learning-rate 2e-3 --min-learning-rate 2e-4 --warmup-iterations 50 --eval-interval 200 --eval-iterations 5 \
    --log-interval 50 --seed 1

stage "1. supervised fine-tuning on Alpaca demonstrations"
head -n "$SFT_LIMIT" data/alpaca/train.jsonl > "$OUT/data/alpaca-train.jsonl"
unless_done "$OUT/sft/loss.svg" $GPT sft --model "$OUT/pretrained/best" --train "$OUT/data/alpaca-train.jsonl" \
    --dev data/alpaca/dev.jsonl --out "$OUT/sft" --epochs 1 --learning-rate 3e-4 --batch-size 8 --seed 1 --log-interval 50

stage "2. reward model on HH-RLHF preference pairs"
head -n "$RM_LIMIT" data/hh-rlhf/train.jsonl > "$OUT/data/hh-train.jsonl"
unless_done "$OUT/rm/loss.svg" $GPT reward train --model "$OUT/sft/best" --train "$OUT/data/hh-train.jsonl" \
    --dev data/hh-rlhf/dev.jsonl --out "$OUT/rm" --epochs 1 --learning-rate 3e-4 --batch-size 16 --seed 1 --log-interval 50

stage "3. the reward for PPO: an SST-2 sentiment classifier (label 1: positive)"
head -n "$CLASSIFIER_LIMIT" data/sst2/train.jsonl > "$OUT/data/sst2-train.jsonl"
unless_done "$OUT/sentiment/loss.svg" $GPT finetune --task classification --model "$OUT/pretrained/best" \
    --train "$OUT/data/sst2-train.jsonl" --dev data/sst2/dev.jsonl --out "$OUT/sentiment" --epochs 1 \
    --learning-rate 2e-4 --batch-size 32 --seed 1 --log-interval 50

stage "4. PPO: the SFT policy continues review openings; reward = the classifier's log p(positive) − β·KL"
# Prompts: the first four words of training reviews not used by the classifier.
tail -n +$((CLASSIFIER_LIMIT + 1)) data/sst2/train.jsonl | grep -E '^\{"text": "([^ "\\]+ ){4}' \
    | sed -E 's/^\{"text": "(([^ "\\]+ ){3}[^ "\\]+) .*/{"prompt": "\1"}/' | sed -n '1,512p' > "$OUT/data/review-openings.jsonl"
unless_done "$OUT/ppo/reward.svg" $GPT ppo --policy "$OUT/sft/best" --reward "classifier:$OUT/sentiment/best:1" \
    --prompts "$OUT/data/review-openings.jsonl" --out "$OUT/ppo" --iterations "$PPO_ITERATIONS" --rollout-size 64 \
    --batch-size 16 --epochs-per-rollout 4 --max-new-tokens 16 --learning-rate 1.5e-4 --kl-coefficient 0.05 \
    --target-kl 4 --kl-horizon 1000 --fixed-length --sample-interval 10 --seed 1
echo; echo "PPO samples (the first rollout, then the last):"
head -n 3 "$OUT/ppo/samples.jsonl"
tail -n 3 "$OUT/ppo/samples.jsonl"

stage "5. DPO: the SFT policy learns from the reward model's preference pairs directly (no reward model, no sampling)"
unless_done "$OUT/dpo/loss.svg" $GPT dpo --policy "$OUT/sft/best" --train "$OUT/data/hh-train.jsonl" \
    --dev data/hh-rlhf/dev.jsonl --out "$OUT/dpo" --epochs 1 --learning-rate "$DPO_LEARNING_RATE" --batch-size 16 \
    --beta 0.1 --seed 1 --log-interval 50
# The best dev evaluation of each (metrics.jsonl), on the same 436 pairs, a tie counting half in both (DPO's
# evaluation before training, when every implicit reward is 0, is all ties: 0.5).
best() { grep -o '"val_accuracy":[0-9.e-]*' "$1" | cut -d: -f2 | sort -g | tail -n 1 | awk '{ printf "%.4f", $1 }'; }
echo; echo "dev preference accuracy (HH-RLHF dev pairs, best evaluation): reward model $(best "$OUT/rm/metrics.jsonl"), DPO $(best "$OUT/dpo/metrics.jsonl")"

echo; echo "done in $(( $(date +%s) - start )) s"
