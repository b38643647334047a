#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same training run as one process with every core's threads, and as
# RANKS mpirun ranks of one thread each with the batch split between them; tokens/s of each (mean of the logged steps
# after the first two) and, under MPI, the all-reduce time per step and its share of the step.
#   usage: scripts/mpi_scaling.sh [OUT]   (default OUT: .build/mpi-scaling); RANKS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
GPT=${GPT:-.build/release/gpt}
OUT=${1:-.build/mpi-scaling}
RANKS=${RANKS:-2}
THREADS=$(nproc)
MPIRUN="mpirun -np $RANKS --oversubscribe --allow-run-as-root -x SWIFTGPT_THREADS=1 -x OMPI_MCA_btl_vader_single_copy_mechanism=none"
mkdir -p "$OUT"
[ -e "$OUT/char/meta.json" ] || $GPT prepare --tokenizer char --out "$OUT/char" data/tinyshakespeare/input.txt > /dev/null
[ -e "$OUT/gpt2/meta.json" ] || $GPT prepare --tokenizer gpt2 --out "$OUT/gpt2" data/tinyshakespeare/input.txt > /dev/null

mean() { grep -o "\"$1\":[0-9.e+-]*" "$2" | tail -n +3 | cut -d: -f2 | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "-" }'; }

# name, data, global batch, steps, model flags
run() {
    local name=$1 data=$2 batch=$3 steps=$4; shift 4
    local common=(train --data "$OUT/$data" --dropout 0 --max-iterations "$steps" --eval-interval 100000 --eval-iterations 1
                  --log-interval 1 --precision fp32 --seed 1 "$@")
    rm -rf "$OUT/$name-1" "$OUT/$name-$RANKS"
    SWIFTGPT_THREADS=$THREADS $GPT "${common[@]}" --batch-size "$batch" --out "$OUT/$name-1" > /dev/null
    $MPIRUN $GPT "${common[@]}" --batch-size $((batch / RANKS)) --out "$OUT/$name-$RANKS" > /dev/null
    local single parallel step reduce
    single=$(mean tokens_per_s "$OUT/$name-1/metrics.jsonl")
    parallel=$(mean tokens_per_s "$OUT/$name-$RANKS/metrics.jsonl")
    step=$(mean ms_per_step "$OUT/$name-$RANKS/metrics.jsonl")
    reduce=$(mean allreduce_ms "$OUT/$name-$RANKS/metrics.jsonl")
    printf "%-10s 1 process x %d threads: %8s tokens/s | %d ranks x 1 thread: %8s tokens/s, all-reduce %s ms of %s ms a step\n" \
        "$name" "$THREADS" "$single" "$RANKS" "$parallel" "$reduce" "$step"
}

run baby char 12 40 --preset baby --context 64
run gpt2-124M gpt2 4 8 --preset gpt2 --context 256
