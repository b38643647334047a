#!/usr/bin/env bash
# GPT-1's claim at this machine's scale: pretrain a small GPT on unlabelled text only (the text fields of the task
# data's train splits plus Tiny Shakespeare; never a dev split), then fine-tune it, the same architecture from random
# weights, and the pretrained model without the auxiliary LM loss, on SST-2, RTE, MRPC, STS-B and COPA; print the dev
# metrics side by side. Stages whose output exists are skipped, so an interrupted run continues.
#   usage: scripts/finetune_demo.sh [OUT]   (default OUT: .build/finetune-demo)
# Settings (environment): PRETRAIN_STEPS (2500), TRAIN_LIMIT (3000 training examples per task at most: all of RTE's and
# COPA's, most of MRPC's and STS-B's, 4.5% of SST-2's), EPOCHS (3),
# LEARNING_RATE (5e-4: GPT-1's 6.25e-5 suits its 117M model and barely moves this 5M one), SEEDS of the
# fine-tuning runs (1), TASKS (sst2 rte mrpc stsb copa), VARIANTS (pretrained scratch no-lm).
# A finished run leaves loss.svg in its directory; an unfinished one is resumed or started again.
set -euo pipefail
cd "$(dirname "$0")/.."
GPT=${GPT:-.build/release/gpt}
OUT=${1:-.build/finetune-demo}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-2500}
TRAIN_LIMIT=${TRAIN_LIMIT:-3000}
EPOCHS=${EPOCHS:-3}
LEARNING_RATE=${LEARNING_RATE:-5e-4}
SEEDS=${SEEDS:-1}
TASKS=${TASKS:-sst2 rte mrpc stsb copa}
VARIANTS=${VARIANTS:-pretrained scratch no-lm}
FIELDS=text,premise,hypothesis,text_a,text_b,context,choices
CORPUS="data/sst2/train.jsonl data/rte/train.jsonl data/mrpc/train.jsonl data/stsb/train.jsonl data/copa/train.jsonl data/tinyshakespeare/input.txt"
mkdir -p "$OUT"
start=$(date +%s)
# Runs the command after MARKER unless MARKER exists (the stage finished before), saying so.
unless_done() {
    local marker=$1; shift
    if [ -e "$marker" ]; then echo "already done ($marker exists), skipping; delete it to redo"; else "$@"; fi
}

# 1. A BPE of 8,192 tokens learned from the unlabelled corpus, and the corpus tokenized with it.
unless_done "$OUT/tokenizer/vocab.json" $GPT tokenizer train --vocab-size 8192 --out "$OUT/tokenizer" --fields $FIELDS $CORPUS
unless_done "$OUT/corpus/meta.json" $GPT prepare --tokenizer "$OUT/tokenizer" --out "$OUT/corpus" --val-fraction 0.02 --fields $FIELDS $CORPUS

# 2. Pretraining: 4 layers, 4 heads, width 256, context 128 (5.3M parameters), next-token prediction.
if [ -e "$OUT/pretrained/loss.svg" ]; then
    echo "pretraining already done ($OUT/pretrained/loss.svg exists), skipping; delete it to redo"
else
    if [ -e "$OUT/pretrained/last/training_state.json" ]; then
        $GPT train --resume --out "$OUT/pretrained"
    else
        $GPT train --data "$OUT/corpus" --out "$OUT/pretrained" --preset shakespeare-char --layers 4 --heads 4 --width 256 \
            --context 128 --dropout 0.1 --batch-size 32 --max-iterations "$PRETRAIN_STEPS" --learning-rate 1e-3 \
            --min-learning-rate 1e-4 --warmup-iterations 100 --eval-interval 250 --eval-iterations 10 --log-interval 50 --seed 1
    fi
fi
echo "pretraining done after $(( $(date +%s) - start )) s"

# 3. Fine-tuning: the first TRAIN_LIMIT training examples of each task, the whole dev split, once per seed.
declare -A KIND=([sst2]=classification [rte]=entailment [mrpc]=similarity [stsb]=similarity [copa]=multiple-choice)
mkdir -p "$OUT/tasks"
for task in $TASKS; do head -n "$TRAIN_LIMIT" "data/$task/train.jsonl" > "$OUT/tasks/$task-train.jsonl"; done
for seed in $SEEDS; do
    FT="$OUT/finetuned-lr$LEARNING_RATE-seed$seed"
    mkdir -p "$FT"
    for task in $TASKS; do
        for variant in $VARIANTS; do
            run="$FT/$task-$variant"
            if [ -e "$run/loss.svg" ]; then echo "seed $seed, $task $variant: already done ($run/loss.svg exists), skipping"; continue; fi
            init=pretrained; weight=0.5
            [ "$variant" = scratch ] && init=scratch
            [ "$variant" = no-lm ] && weight=0
            task_start=$(date +%s)
            $GPT finetune --task "${KIND[$task]}" --model "$OUT/pretrained/best" --train "$OUT/tasks/$task-train.jsonl" \
                --dev "data/$task/dev.jsonl" --out "$run" --initialization $init --lm-weight $weight --epochs "$EPOCHS" \
                --learning-rate "$LEARNING_RATE" --log-interval 20 --seed "$seed" > "$run.log" 2>&1 || { cat "$run.log"; exit 1; }
            echo "seed $seed, $task $variant: $(( $(date +%s) - task_start )) s; $(grep 'epoch' "$run.log" | tail -1)"
        done
    done
done

# 4. The tables, one per seed: each run's best dev figures after an epoch of training (accuracy and F1, or Pearson
#    and Spearman for STS-B), as kept in its best/, and the mean over the tasks of the primary figure (accuracy;
#    Pearson for STS-B).
best_line() {  # the metrics line of a run's best evaluation after step 0
    awk '/"score"/ && !/"step":0[,}]/ {
            match($0, /"score":[-0-9.e]+/); score = substr($0, RSTART + 8, RLENGTH - 8) + 0
            if (!seen || score > top) { top = score; line = $0; seen = 1 }
        }
        END { if (seen) print line }' "$1" 2>/dev/null
}
for seed in $SEEDS; do
    FT="$OUT/finetuned-lr$LEARNING_RATE-seed$seed"
    echo
    echo "dev figures, learning rate $LEARNING_RATE, seed $seed, first $TRAIN_LIMIT training examples, $EPOCHS epochs:"
    printf "%-7s %-38s %-38s %-38s\n" task "pretrained, λ=0.5" "from scratch, λ=0.5" "pretrained, λ=0"
    declare -A SUM=()
    for task in $TASKS; do
        row=$(printf "%-7s" $task)
        for variant in $VARIANTS; do
            line=$(best_line "$FT/$task-$variant/metrics.jsonl")
            cell=$(echo "$line" | awk '{
                out = ""
                n = split("accuracy f1 pearson spearman", keys, " ")
                for (k = 1; k <= n; k++) if (match($0, "\"val_" keys[k] "\":[-0-9.e]+")) {
                    value = substr($0, RSTART + length(keys[k]) + 7, RLENGTH - length(keys[k]) - 7)
                    out = out sprintf("%s%s %.3f", out == "" ? "" : ", ", keys[k], value)
                }
                match($0, /"epoch":[0-9.]+/); print out " (epoch " substr($0, RSTART + 8, RLENGTH - 8) ")"
            }')
            score=$(echo "$line" | grep -o '"score":[-0-9.e]*' | cut -d: -f2)
            SUM[$variant]=$(awk -v a="${SUM[$variant]:-0}" -v b="${score:-0}" 'BEGIN { print a + b }')
            row="$row $(printf "%-38s" "${cell:--}")"
        done
        echo "$row"
    done
    row=$(printf "%-7s" mean)
    for variant in $VARIANTS; do
        row="$row $(printf "%-38s" "$(awk -v s="${SUM[$variant]}" -v n="$(echo $TASKS | wc -w)" 'BEGIN { printf "%.3f", s / n }')")"
    done
    echo "$row"
done
echo "total: $(( $(date +%s) - start )) s"
