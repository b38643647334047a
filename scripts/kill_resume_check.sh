#!/usr/bin/env bash
# Kills a checkpointing training run with SIGKILL at random moments, resumes it each time, and checks that the run
# ends with the weights of a run never killed, bit for bit, and that no kill lost the checkpoint.
# Usage: scripts/kill_resume_check.sh [KILLS (default 100)] [WORK_DIR (default .build/kill-check)]
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-100}
WORK=${2:-.build/kill-check}
GPT=.build/release/gpt
STEPS=${STEPS:-300}
rm -rf "$WORK" && mkdir -p "$WORK"
$GPT prepare --tokenizer char --out "$WORK/data" data/tinyshakespeare/input.txt > /dev/null
# A checkpoint every 5 steps (best/ and last/), so that kills often land inside a save.
TRAIN=(train --preset baby --data "$WORK/data" --eval-interval 5 --eval-iterations 1 --precision fp32 --max-iterations "$STEPS")
$GPT "${TRAIN[@]}" --out "$WORK/reference" > /dev/null
killed=0 lost=0 finished=0
started=$(date +%s)
while [ "$killed" -lt "$KILLS" ]; do
	# Resume once a checkpoint exists (a run killed before its first one starts over: nothing was saved to lose).
	if [ -e "$WORK/seen-checkpoint" ]; then args=(train --resume --out "$WORK/run"); else args=("${TRAIN[@]}" --out "$WORK/run"); fi
	"$GPT" "${args[@]}" > "$WORK/log.txt" 2>&1 &
	pid=$!
	# A random moment within the next 0-2 s.
	sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", r / 32767 * 2 }')"
	if kill -KILL "$pid" 2> /dev/null; then
		wait "$pid" 2> /dev/null || true
		killed=$((killed + 1))
		# A checkpoint once written must stay: last/ complete, or a displaced copy that --resume restores. (The next
		# resume loads it in full and the script stops if it cannot.)
		if [ -e "$WORK/seen-checkpoint" ] && ! [ -e "$WORK/run/last/training_state.json" ] && ! compgen -G "$WORK/run/.last.old-*" > /dev/null; then
			lost=$((lost + 1)); echo "kill $killed: the checkpoint is lost"; ls -la "$WORK/run"
		fi
		[ -e "$WORK/run/last/training_state.json" ] && touch "$WORK/seen-checkpoint"
	else
		wait "$pid" || { echo "the run failed:"; cat "$WORK/log.txt"; exit 1; }
		finished=$((finished + 1))
		cmp -s "$WORK/run/last/model.safetensors" "$WORK/reference/last/model.safetensors" \
			|| { echo "a resumed run ended with weights other than the run never killed"; exit 1; }
		rm -rf "$WORK/run" "$WORK/seen-checkpoint"
	fi
done
echo "$killed SIGKILLs at random moments ($finished runs finished between them) in $(( $(date +%s) - started )) s; checkpoints lost: $lost"
# Finish the interrupted run and compare with the reference.
if [ -e "$WORK/run/last" ]; then
	$GPT train --resume --out "$WORK/run" > /dev/null
else
	rm -rf "$WORK/run"; $GPT "${TRAIN[@]}" --out "$WORK/run" > /dev/null
fi
if cmp -s "$WORK/run/last/model.safetensors" "$WORK/reference/last/model.safetensors"; then
	echo "final weights: identical to the run never killed"
else
	echo "final weights DIFFER from the run never killed"; exit 1
fi
[ "$lost" -eq 0 ]
