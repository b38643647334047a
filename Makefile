# SwiftGPT — build, test and demo. Needs only the Swift toolchain; missing system libraries are installed here.
SWIFT ?= swift
GPT = .build/release/gpt
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
GOLDEN = Tests/SwiftGPTTests/Resources/golden

.PHONY: all deps build test demo bench bench-pytorch clean

all: build

# OpenBLAS from Debian on Linux (Accelerate is part of macOS).
deps:
	@if [ "$$(uname)" = Linux ] && ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/aarch64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ]; then \
		echo "Installing OpenBLAS (libopenblas-dev, pkg-config)…"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libopenblas-dev pkg-config >/dev/null; \
	fi

build: deps
	$(SWIFT) build -c release

# Tests run in release mode: the numeric tests are too slow in debug.
test: deps
	$(SWIFT) build -c release --build-tests
	$(SWIFT) test -c release --skip-build

# The main job until pretraining lands: check parity with Hugging Face, then time training steps of the baby GPT.
demo: build
	@for f in gpt2-tiny openai-gpt-tiny gpt2-doubleheads-tiny; do \
		echo "== gpt parity $(GOLDEN)/$$f"; $(GPT) parity $(GOLDEN)/$$f | tail -1 || exit 1; done
	$(GPT) bench train --preset baby --batch 12 --seq 64 --steps 20

bench: build
	$(GPT) bench train --preset gpt2 --batch 4 --seq 256
	$(GPT) bench train --preset baby --batch 12 --seq 64 --steps 20
	$(GPT) bench forward --preset gpt2 --seq 512

# The same shapes in PyTorch (needs: pip install torch).
bench-pytorch:
	python3 scripts/bench_pytorch.py

clean:
	rm -rf .build
