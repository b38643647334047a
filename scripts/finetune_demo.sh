#!/usr/bin/env bash
# GPT-1's claim at this machine's scale: pretrain a small GPT on unlabelled text only (the text fields of the task
# data's train splits plus Tiny Shakespeare; never a dev split), then fine-tune it, the same architecture from random
# weights, and the pretrained model without the auxiliary LM loss, on SST-2, RTE, MRPC, STS-B and COPA; print the dev
# metrics side by side. Stages whose output exists are skipped, so an interrupted run continues.
#   usage: scripts/finetune_demo.sh [OUT]   (default OUT: .build/finetune-demo)
# Settings (environment): PRETRAIN_STEPS (1500), TRAIN_LIMIT (1000 training examples per task), EPOCHS (3),
# LEARNING_RATE (GPT-1's 6.25e-5), TASKS (sst2 rte mrpc stsb copa), VARIANTS (pretrained scratch no-lm).
# A finished run leaves loss.svg in its directory; an unfinished one is resumed or started again.
set -euo pipefail
cd "$(dirname "$0")/.."
GPT=${GPT:-.build/release/gpt}
OUT=${1:-.build/finetune-demo}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1500}
TRAIN_LIMIT=${TRAIN_LIMIT:-1000}
EPOCHS=${EPOCHS:-3}
LEARNING_RATE=${LEARNING_RATE:-6.25e-5}
TASKS=${TASKS:-sst2 rte mrpc stsb copa}
VARIANTS=${VARIANTS:-pretrained scratch no-lm}
FIELDS=text,premise,hypothesis,text_a,text_b,context,choices
CORPUS="data/sst2/train.jsonl data/rte/train.jsonl data/mrpc/train.jsonl data/stsb/train.jsonl data/copa/train.jsonl data/tinyshakespeare/input.txt"
mkdir -p "$OUT"
start=$(date +%s)

# 1. A BPE of 8,192 tokens learned from the unlabelled corpus, and the corpus tokenized with it.
[ -e "$OUT/tokenizer/vocab.json" ] || $GPT tokenizer train --vocab-size 8192 --out "$OUT/tokenizer" --fields $FIELDS $CORPUS
[ -e "$OUT/corpus/meta.json" ] || $GPT prepare --tokenizer "$OUT/tokenizer" --out "$OUT/corpus" --val-fraction 0.02 --fields $FIELDS $CORPUS

# 2. Pretraining: 4 layers, 4 heads, width 256, context 128 (5.3M parameters), next-token prediction.
if [ ! -e "$OUT/pretrained/loss.svg" ]; then
    if [ -e "$OUT/pretrained/last/training_state.json" ]; then
        $GPT train --resume --out "$OUT/pretrained"
    else
        $GPT train --data "$OUT/corpus" --out "$OUT/pretrained" --preset shakespeare-char --layers 4 --heads 4 --width 256 \
            --context 128 --dropout 0.1 --batch-size 32 --max-iterations "$PRETRAIN_STEPS" --learning-rate 1e-3 \
            --min-learning-rate 1e-4 --warmup-iterations 100 --eval-interval 250 --eval-iterations 10 --log-interval 50 --seed 1
    fi
fi
echo "pretraining done after $(( $(date +%s) - start )) s"

# 3. Fine-tuning: the first TRAIN_LIMIT training examples of each task, the whole dev split.
declare -A KIND=([sst2]=classification [rte]=entailment [mrpc]=similarity [stsb]=similarity [copa]=multiple-choice)
FT="$OUT/finetuned-lr$LEARNING_RATE"
mkdir -p "$OUT/tasks" "$FT"
for task in $TASKS; do
    head -n "$TRAIN_LIMIT" "data/$task/train.jsonl" > "$OUT/tasks/$task-train.jsonl"
    for variant in $VARIANTS; do
        run="$FT/$task-$variant"
        [ -e "$run/loss.svg" ] && continue
        init=pretrained; weight=0.5
        [ "$variant" = scratch ] && init=scratch
        [ "$variant" = no-lm ] && weight=0
        task_start=$(date +%s)
        $GPT finetune --task "${KIND[$task]}" --model "$OUT/pretrained/best" --train "$OUT/tasks/$task-train.jsonl" \
            --dev "data/$task/dev.jsonl" --out "$run" --initialization $init --lm-weight $weight --epochs "$EPOCHS" \
            --learning-rate "$LEARNING_RATE" --log-interval 20 --seed 1 > "$run.log" 2>&1 || { cat "$run.log"; exit 1; }
        echo "$task $variant: $(( $(date +%s) - task_start )) s; $(grep 'epoch' "$run.log" | tail -1)"
    done
done

# 4. The table: each run's best dev figures after an epoch of training (accuracy and F1, or Pearson and Spearman
#    for STS-B), as kept in its best/.
echo
echo "dev figures, learning rate $LEARNING_RATE, first $TRAIN_LIMIT training examples, $EPOCHS epochs:"
printf "%-6s %-34s %-34s %-34s\n" task "pretrained, λ=0.5" "from scratch, λ=0.5" "pretrained, λ=0"
for task in $TASKS; do
    row=$(printf "%-6s" $task)
    for variant in $VARIANTS; do
        best=$(awk '/"score"/ && !/"step":0[,}]/ {
                match($0, /"score":[-0-9.e]+/); score = substr($0, RSTART + 8, RLENGTH - 8) + 0
                if (!seen || score > top) { top = score; line = $0; seen = 1 }
            }
            END {
                if (!seen) { print "-"; exit }
                out = ""
                n = split("accuracy f1 pearson spearman", keys, " ")
                for (k = 1; k <= n; k++) if (match(line, "\"val_" keys[k] "\":[-0-9.e]+")) {
                    value = substr(line, RSTART + length(keys[k]) + 7, RLENGTH - length(keys[k]) - 7)
                    out = out sprintf("%s%s %.3f", out == "" ? "" : ", ", keys[k], value)
                }
                match(line, /"epoch":[0-9.]+/); print out " (epoch " substr(line, RSTART + 8, RLENGTH - 8) ")"
            }' "$FT/$task-$variant/metrics.jsonl" 2>/dev/null || echo "-")
        row="$row $(printf "%-34s" "$best")"
    done
    echo "$row"
done
echo "total: $(( $(date +%s) - start )) s"
