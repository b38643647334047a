#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same training run as one process with every core's threads, and as
# RANKS mpirun ranks of one thread each with the batch split between them; tokens/s of each (mean of the logged steps
# after the first two) and, under MPI, the communication time per step and its share of the step, and the peak
# resident memory of each process (the largest rank's); for GPT-2 also with the optimizer sharded (ZeRO-1).
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

# Peak resident MiB of the largest process among the files $1.rss.*
peak() { cat "$1".rss.* | sort -n | tail -1 | awk '{ printf "%.0f", $1 / 1024 }'; }

# name, data, global batch, steps, then flags: model flags, and for the ranks only after `--`
run() {
    local name=$1 data=$2 batch=$3 steps=$4; shift 4
    local model=() ranks=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do model+=("$1"); shift; done
    [ $# -gt 0 ] && { shift; ranks=("$@"); }
    local common=(train --data "$OUT/$data" --dropout 0 --max-iterations "$steps" --eval-interval 100000 --eval-iterations 1
                  --log-interval 1 --precision fp32 --seed 1 "${model[@]}")
    local single_out="$OUT/$name-1" parallel_out="$OUT/$name-$RANKS"
    rm -rf "$single_out" "$parallel_out" "$single_out".rss.* "$parallel_out".rss.*
    SWIFTGPT_THREADS=$THREADS /usr/bin/time -f %M -o "$single_out.rss.0" $GPT "${common[@]}" --batch-size "$batch" \
        --out "$single_out" > /dev/null
    $MPIRUN sh -c '/usr/bin/time -f %M -o "$0.rss.$OMPI_COMM_WORLD_RANK" "$@"' "$parallel_out" $GPT "${common[@]}" \
        --batch-size $((batch / RANKS)) --out "$parallel_out" "${ranks[@]}" > /dev/null
    local single parallel step reduce
    single=$(mean tokens_per_s "$single_out/metrics.jsonl")
    parallel=$(mean tokens_per_s "$parallel_out/metrics.jsonl")
    step=$(mean ms_per_step "$parallel_out/metrics.jsonl")
    reduce=$(mean allreduce_ms "$parallel_out/metrics.jsonl")
    printf "%-16s 1 process x %d threads: %8s tokens/s, %5s MiB | %d ranks x 1 thread: %8s tokens/s, %5s MiB a rank, communication %s ms of %s ms a step\n" \
        "$name" "$THREADS" "$single" "$(peak "$single_out")" "$RANKS" "$parallel" "$(peak "$parallel_out")" "$reduce" "$step"
}

run baby char 12 40 --preset baby --context 64
run gpt2-124M gpt2 4 8 --preset gpt2 --context 256
run gpt2-124M-ZeRO-1 gpt2 4 8 --preset gpt2 --context 256 -- --shard-optimizer
