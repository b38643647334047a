#!/usr/bin/env bash
# Download speed of `gpt pull` against curl, side by side in one run: LocalHub (Tests/LocalHub, a server on
# 127.0.0.1 that answers as the Hugging Face Hub does) serves MODEL_FOLDER as the repository local/NAME; each round
# times curl fetching the folder's model.safetensors from the server's storage address into a file, then
# `gpt pull local/NAME` into an empty cache (the file list, every file's metadata, all the files, each checked against
# its SHA-256 or git blob id and flushed to the disk), ROUNDS times (default 5), which goes first alternating; then the
# median ratio. Before each timed run the page cache is flushed (`sync`, untimed), so that neither run pays for the
# write-back of the other's file.
# Usage: scripts/bench_download.sh MODEL_FOLDER [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$(cd "$1" && pwd)
rounds=${2:-5}
swift build -c release --product gpt > /dev/null
swift build -c release --product local-hub > /dev/null
work=$(mktemp -d)
.build/release/local-hub "$folder" > "$work/endpoint" 2> /dev/null &
server=$!
trap 'kill $server 2> /dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q '^http' "$work/endpoint" 2> /dev/null && break; sleep 0.2; done
endpoint=$(grep '^http' "$work/endpoint")
port=${endpoint##*:}
weights="$folder/model.safetensors"
blob=$(sha256sum "$weights" | cut -d' ' -f1)
bytes=$(stat -c %s "$weights")
total=$(du -bL --apparent-size "$folder"/*.json "$folder"/*.txt "$folder"/model.safetensors 2> /dev/null | awk '{s += $1} END {print s}')
echo "model.safetensors: $bytes bytes; all files gpt pull fetches: $total bytes; $(nproc) CPUs; $(date -u +%Y-%m-%d)"
printf '%-6s %12s %12s %12s\n' round "curl MB/s" "gpt MB/s" "gpt/curl"
# Each timed run starts with no dirty pages of the one before being written back under it (`sync`, untimed).
time_curl() {
	rm -f "$work/curl.bin"
	sync
	local start=$(date +%s.%N)
	curl -sf -o "$work/curl.bin" "http://127.0.0.1:$port/storage/$blob"
	curl_s=$(awk "BEGIN {print $(date +%s.%N) - $start}")
}
time_gpt() {
	rm -rf "$work/hf"
	sync
	local start=$(date +%s.%N)
	HF_HOME="$work/hf" HF_ENDPOINT="$endpoint" .build/release/gpt pull "local/$(basename "$folder")" > /dev/null 2>&1
	gpt_s=$(awk "BEGIN {print $(date +%s.%N) - $start}")
}
for round in $(seq "$rounds"); do
	# Which goes first alternates, so that neither always follows the other.
	if [ $((round % 2)) = 1 ]; then time_curl; time_gpt; else time_gpt; time_curl; fi
	awk -v r="$round" -v b="$bytes" -v t="$total" -v c="$curl_s" -v g="$gpt_s" \
		'BEGIN {printf "%-6s %12.0f %12.0f %11.0f%%\n", r, b / c / 1e6, t / g / 1e6, 100 * (t / g) / (b / c)}' | tee -a "$work/rounds"
done
sort -n -k4 "$work/rounds" | awk '{ratio[NR] = $4} END {m = (NR % 2) ? ratio[(NR + 1) / 2] : (ratio[NR / 2] + ratio[NR / 2 + 1]) / 2; printf "median gpt/curl: %.0f%%\n", m}'
