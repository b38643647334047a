#!/usr/bin/env bash
# Runs every libFuzzer target (Fuzz/Sources) for SECONDS each on the committed seed corpus (Fuzz/corpus/TARGET) plus
# the inputs it finds (kept in WORK, not in the repository), and fails on any crash, leak, timeout or out-of-memory.
# Prints executions, coverage (edges) and corpus size per target.
# Usage: scripts/fuzz.sh [SECONDS (default 60)] [TARGETS (default: all)]   (make fuzz builds the binary first)
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
TARGETS=${2:-"safetensors config tokenizer tokenizer-json chat-template task-data request hub-answer adapter gguf"}
FUZZER=${FUZZER:-.build/fuzz/release/swiftgpt-fuzz}
WORK=${WORK:-.build/fuzz-work}
[ -x "$FUZZER" ] || { echo "no fuzzing build at $FUZZER (make fuzz builds it)"; exit 1; }
mkdir -p "$WORK/crashes"
failed=0
printf '%-14s %10s %8s %10s %8s %s\n' target executions exec/s coverage corpus result
for target in $TARGETS; do
	mkdir -p "$WORK/corpus/$target"
	log="$WORK/$target.log"
	FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=Fuzz/lsan-suppressions.txt "$FUZZER" "$WORK/corpus/$target" "Fuzz/corpus/$target" \
		-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$WORK/crashes/$target-" > "$log" 2>&1
	status=$?
	runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
	speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
	corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
	if [ "$status" -eq 0 ]; then result=ok; else result="FAILED (exit $status; see $log)"; failed=1; fi
	printf '%-14s %10s %8s %10s %8s %s\n' "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${corpus:-?}" "$result"
	if [ "$status" -ne 0 ]; then grep -E 'ERROR|Fatal|SUMMARY|==[0-9]+==|Test unit written' "$log" | head -20; fi
done
exit $failed
