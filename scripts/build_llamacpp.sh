#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-cli, llama-completion, llama-server, llama-perplexity and llama-quantize from the llama.cpp tree
# vendored in the llama_cpp_python source distribution on PyPI, for side-by-side runs (scripts/bench_llamacpp.sh and
# the GGUF tests). Nothing is downloaded at build time (no curl, no web UI); the build is cached.
#
#   scripts/build_llamacpp.sh [SDIST.tar.gz]     # prints the folder of the binaries
#
# Without SDIST the newest llama_cpp_python source distribution is fetched from PyPI's JSON API. The build lands in
# $LLAMACPP_HOME (default .build/llama.cpp): its bin/ folder, and its convert_hf_to_gguf.py with gguf-py beside.
# Needs cmake and a C++ compiler (apt-get install cmake g++).
set -euo pipefail

home="${LLAMACPP_HOME:-$(cd "$(dirname "$0")/.." && pwd)/.build/llama.cpp}"
mkdir -p "$home"
bins="$home/build/bin"
if [[ -x "$bins/llama-bench" && -x "$bins/llama-server" && -x "$bins/llama-perplexity" && -x "$bins/llama-quantize" && -x "$bins/llama-cli" && -x "$bins/llama-completion" ]]; then
    echo "$bins"
    exit 0
fi
command -v cmake > /dev/null || { echo "error: cmake is missing (apt-get install cmake g++)" >&2; exit 1; }

sdist="${1:-}"
if [[ -z "$sdist" ]]; then
    sdist="$home/llama_cpp_python.tar.gz"
    if [[ ! -s "$sdist" ]]; then
        path=$(curl -fsSL https://pypi.org/pypi/llama-cpp-python/json | python3 -c '
import json, sys
urls = [u["url"] for u in json.load(sys.stdin)["urls"] if u["packagetype"] == "sdist"]
print(urls[0].split("/packages/", 1)[1] if urls else "")')
        [[ -n "$path" ]] || { echo "error: PyPI lists no source distribution of llama_cpp_python" >&2; exit 1; }
        curl -fsSL -o "$sdist.partial" "https://pypi.org/packages/$path"
        mv "$sdist.partial" "$sdist"
    fi
fi
[[ -s "$sdist" ]] || { echo "error: $sdist: no such source distribution" >&2; exit 1; }

src="$home/src"
if [[ ! -f "$src/CMakeLists.txt" ]]; then
    rm -rf "$home/unpacked" && mkdir -p "$home/unpacked"
    tar xzf "$sdist" -C "$home/unpacked"
    tree=$(find "$home/unpacked" -maxdepth 3 -type d -path '*/vendor/llama.cpp' | head -1)
    [[ -n "$tree" ]] || { echo "error: $sdist holds no vendor/llama.cpp tree" >&2; exit 1; }
    rm -rf "$src" && mv "$tree" "$src"
    basename "$(dirname "$(dirname "$tree")")" > "$home/VERSION"
    rm -rf "$home/unpacked"
fi

cmake -S "$src" -B "$home/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DBUILD_SHARED_LIBS=OFF > "$home/cmake.log" 2>&1 || { tail -20 "$home/cmake.log" >&2; exit 1; }
cmake --build "$home/build" -j "$(nproc)" --target llama-bench llama-cli llama-completion llama-server llama-perplexity llama-quantize \
    > "$home/build.log" 2>&1 || { tail -30 "$home/build.log" >&2; exit 1; }
echo "$bins"
