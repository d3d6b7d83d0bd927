# seedcoder: `make demo` (the main job) and `make test` (the suite).
# Every package that either installs comes from requirements.lock, exact versions, nothing resolved at install time
# (torch 2.13.0 CPU from local disk here, Triton 3.6.0); `make lock` refreshes that file on purpose.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
TORCH_VERSION := 2.13.0
TRITON_VERSION := 3.6.0
RESULTS ?= results

.PHONY: gpu-wheels install lock test test-slow lint ctest compile-gate cuda-gate gpu-check gpu-bench bench demo web-docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# --no-deps: the lock is the whole set; `pip check` proves it is consistent. --no-build-isolation: the build must see
# the torch installed here (isolation would fetch a CUDA torch).
$(VENV)/.installed: $(BIN)/python setup.py pyproject.toml Makefile $(LOCK)
	$(BIN)/pip install -q --no-deps $$(grep -E '^(pip|setuptools|wheel)==' $(LOCK))
	$(BIN)/pip install -q --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Resolve the dev install afresh in a scratch venv and write its exact versions to requirements.lock (then commit it).
lock:
	rm -rf build/lock-venv && $(PY) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q --upgrade pip "setuptools>=77" wheel ninja
	build/lock-venv/bin/pip install -q torch==$(TORCH_VERSION) triton==$(TRITON_VERSION)
	build/lock-venv/bin/pip install -q --no-build-isolation -e ".[dev]"
	{ echo "# Exact versions of everything make test / make demo install (Python $$(build/lock-venv/bin/python -c 'import platform; print(platform.python_version())'), CPU torch)."; \
	  echo "# Made by \`make lock\` on $$(date -u +%Y-%m-%d); do not edit by hand."; \
	  build/lock-venv/bin/pip freeze --all --exclude-editable | grep -v '^seedcoder'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf build/lock-venv

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .

# Two pytest workers (pytest-xdist) on the 2 cores; tests marked slow (the nvcc compile checks) run in test-slow.
test: lint ctest
	$(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=15

test-slow: install
	$(BIN)/python -m pytest -q -m slow --durations=15

# C++ unit tests of the data loader (csrc/loader/tests) through CMake/ctest.
ctest:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/cmake -j2 --target loader_tests
	ctest --test-dir build/cmake --output-on-failure

# Every Triton kernel configuration compiled for sm_90a and sm_80 without a GPU, with the launch's divisibility
# specialisation (registers, shared, spills, vector loads, cp.async/TMA, wgmma); fails on a spill or lost vector loads.
compile-gate: install
	mkdir -p $(RESULTS)
	env -u TRITON_INTERPRET $(BIN)/python -m seedcoder.kernels.compile_gate --arch 90 80 --jobs 2 --json $(RESULTS)/compile-gate.json

# The CUDA C++ kernels compiled with nvcc for sm_80 and sm_90a (registers/spills from ptxas).
cuda-gate:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/cmake -j2 --target seedcoder_cuda_kernels 2>&1 | grep -E "error|Compiling entry|registers|spill"

# On a GPU machine, one call of at most 8 minutes (no network; the box's own python3, no venv): build for the card
# present, bf16 kernel numerics + the gpu-marked tests, the quick kernel benchmarks, one 1B training step with MFU,
# each phase within its own time budget. At most 8 files land in $(RESULTS) (gpu-check.md goes into
# benchmarks/RESULTS.md unchanged); non-zero exit when a phase failed. Small wheels travel in .whl/ (make gpu-wheels).
# Without a GPU it checks its own plumbing and exits 2 (the suite runs that dry run).
gpu-check:
	$(PY) -m benchmarks.gpu_check $(RESULTS)

# Run here, before a device call: the locked wheels the GPU box lacks (the box has no index), into .whl/ (carried).
# liger-kernel is a benchmark peer; tokenizers is what the curation scorer benchmark needs.
GPU_WHEELS = liger_kernel tokenizers
gpu-wheels: install
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
		$$(for name in $(GPU_WHEELS); do grep -E "^$$name==" $(LOCK); done)

# The long version: every test of the kernel/model files, every kernel case and peer (autotuned), the full training
# benchmark. Split it over 10-minute calls: PHASES="install tests", then PHASES="kernels train" (same warm machine).
PHASES ?= install tests kernels train
gpu-bench:
	$(PY) -m benchmarks.gpu_check $(RESULTS) --full --phases $(PHASES)

bench: install
	$(BIN)/python -m benchmarks.kernels --out $(RESULTS)/kernels

# The main job: the interpreter's standard library -> tokenizer -> shards -> a tiny model pretrained with
# torchrun on 2 CPU ranks (GPU when present), interrupted and resumed -> loss curve + a sampled completion ->
# the curation pipeline (stdlib + this repository's history) -> curated shards -> a second pretraining run ->
# SFT -> DPO -> RL -> HumanEval on the result.
demo: install web-docs
	$(BIN)/python -m seedcoder.demo

# The demo's web pages: HTML documentation that Debian packages install (seedcoder/curate/web_corpus.py). Installed
# with apt when missing and this user may (root or sudo without a password); otherwise the web steps read the
# committed fixture tests/data/web and say so.
WEB_DOCS := python3-doc cppreference-doc-en-html gimp-help-en libreoffice-help-en-us debian-reference-en gnucash-docs \
	nodejs-doc sqlite3-doc postgresql-doc-15
web-docs:
	@missing=$$(for p in $(WEB_DOCS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "web-docs: no apt-get; the web steps use the fixture"; exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing"; \
	$$install >/dev/null 2>&1 || { $$sudo apt-get update -q >/dev/null 2>&1 && $$install >/dev/null; } \
	  || echo "web-docs: could not install $$missing; the web steps use what is installed (else the fixture)"

clean:
	rm -rf build *.egg-info $(RESULTS) .pytest_cache .ruff_cache
