# SwiftGPT — build, test and demo. Needs only the Swift toolchain; missing system libraries are installed here.
SWIFT ?= swift
GPT = .build/release/gpt
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
GOLDEN = Tests/SwiftGPTTests/Resources/golden

.PHONY: all deps build test example docs fuzz demo finetune-demo rlhf-demo icl-demo bench bench-pytorch demo-pytorch clean

all: build

# On Linux: oneDNN (matrix products, fp32 and bf16), OpenBLAS and Open MPI (data-parallel training) from Debian.
# Accelerate is part of macOS; Open MPI comes from Homebrew there (brew install open-mpi).
deps:
	@if [ "$$(uname)" = Linux ] && { ! [ -e /usr/include/oneapi/dnnl/dnnl.h ] || \
		{ ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/aarch64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ]; } || \
		! pkg-config --exists ompi-c 2>/dev/null || ! command -v mpirun >/dev/null; }; then \
		echo "Installing oneDNN, OpenBLAS and Open MPI (libdnnl-dev, libopenblas-dev, libopenmpi-dev, openmpi-bin, pkg-config)…"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libdnnl-dev libopenblas-dev \
			libopenmpi-dev openmpi-bin pkg-config >/dev/null; \
	fi

build: deps
	$(SWIFT) build -c release

# Tests run in release mode: the numeric tests are too slow in debug.
test: deps
	$(SWIFT) build -c release --build-tests
	$(SWIFT) test -c release --skip-build

# Examples/SwiftGPTExample: a package of its own that uses SwiftGPT through its public API only (generation, chat,
# scoring, embedding, fine-tuning and prediction), built and run, so that the API keeps what it needs.
example: deps
	cd Examples/SwiftGPTExample && $(SWIFT) build -c release && .build/release/SwiftGPTExample

# The documentation: a DocC archive of every library module, with SwiftGPT's articles (Sources/SwiftGPT/SwiftGPT.docc),
# in .build/plugins/Swift-DocC/outputs; fails on any DocC warning (a broken symbol link, an undocumented parameter)
# and, first, on a public declaration without a doc comment (scripts/public_api.py counts them).
DOC_TARGETS = SwiftGPT GPTUtilities TensorCore Tokenizers GPTModels GPTTraining GPTEvaluation GPTServer
docs: deps
	python3 scripts/public_api.py
	$(SWIFT) package --disable-sandbox generate-documentation $(addprefix --target ,$(DOC_TARGETS)) \
		--enable-experimental-combined-documentation --warnings-as-errors

# libFuzzer targets for every parser of untrusted bytes (safetensors, config.json, tokenizer files, chat templates,
# task data, LoRA adapters, Hub answers, API request bodies), each run FUZZ_SECONDS on the seeds in Fuzz/corpus; fails on a crash, leak or timeout.
FUZZ_SECONDS ?= 60
fuzz: deps
	SWIFTGPT_FUZZ=1 $(SWIFT) build -c release --scratch-path .build/fuzz --product swiftgpt-fuzz -Xswiftc -sanitize=fuzzer,address
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The main job: nanoGPT's "baby GPT" recipe on Tiny Shakespeare at character level, then a sample.
DEMO = .build/demo
demo: build
	$(GPT) prepare --tokenizer char --out $(DEMO)/shakespeare-char data/tinyshakespeare/input.txt
	$(GPT) train --config configs/baby-shakespeare-char.json
	$(GPT) sample --model $(DEMO)/baby --prompt "ROMEO:" --max-tokens 300 --temperature 0.8 --top-k 200 --seed 1337 --sliding-window
	$(GPT) loss --model $(DEMO)/baby/last --data $(DEMO)/shakespeare-char --split val

# GPT-1's claim at small scale: pretrain on unlabelled text, fine-tune on SST-2, RTE, MRPC, STS-B and COPA, against
# the same architecture from scratch and without the auxiliary LM loss (scripts/finetune_demo.sh; about 2 hours here).
finetune-demo: build
	scripts/finetune_demo.sh

# The ChatGPT pipeline at small scale: pretraining, SFT on Alpaca, a reward model on HH-RLHF, an SST-2 sentiment
# classifier, then PPO that teaches the SFT policy to continue review openings positively, and DPO of the SFT policy
# on the reward model's pairs, its dev accuracy printed beside the reward model's (scripts/rlhf_demo.sh).
rlhf-demo: build
	scripts/rlhf_demo.sh

# In-context learning at small scale: a model pretrained on episodes whose label only the context reveals, then its
# accuracy against the number of demonstrations (gpt eval; table, results.json and accuracy.svg in .build/icl-demo).
ICL = .build/icl-demo
icl-demo: build
	$(GPT) icl-data --out $(ICL)
	$(GPT) prepare --tokenizer char --out $(ICL)/prepared $(ICL)/corpus.txt
	$(GPT) train --config configs/noisy-label-char.json
	$(GPT) eval --model $(ICL)/model --task $(ICL)/noisy-label.json --shots 0,1,2,4,8,16 --plot $(ICL)/accuracy.svg --output $(ICL)/results.json

bench: build
	$(GPT) bench train --preset gpt2 --batch 4 --seq 256
	$(GPT) bench train --preset baby --batch 12 --seq 64 --steps 20
	$(GPT) bench forward --preset gpt2 --seq 512
	$(GPT) bench generate --preset gpt2 --prompt-tokens 16 --new-tokens 128
	$(GPT) bench tokenizer --file data/tinyshakespeare/input.txt

# The same shapes in PyTorch, and the demo's recipe in a PyTorch re-implementation of nanoGPT
# (needs: pip install torch transformers).
bench-pytorch:
	python3 scripts/bench_pytorch.py

demo-pytorch: build
	$(GPT) prepare --tokenizer char --out $(DEMO)/shakespeare-char data/tinyshakespeare/input.txt
	python3 scripts/nanogpt_baby.py data/tinyshakespeare/input.txt

clean:
	rm -rf .build
