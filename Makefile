# make train / make test / make bench: each sets up .venv from requirements.txt on first use.
# Extra options go through ARGS, e.g. make train ARGS="trainer.max_epochs=5"

VENV := .venv
PYTHON := $(VENV)/bin/python
# The python .venv is made from. When it already imports torch, torchvision and Lightning (a GPU machine's tuned
# PyTorch), .venv shares them and installs only the rest (bench/install.py); otherwise the pinned torch.
PYTHON3 ?= python3
# pip's options for make setup: PIP_OPTIONS="--no-index --find-links wheels" installs without a registry.
PIP_OPTIONS ?=
# make wheels' folder: what make gpu-check installs from on a machine without a registry, and MNIST.
WHEELS ?= wheels
# MNIST: ../shared/data where a machine holds it (no internet needed), else data/ (downloaded on first use).
MNIST_ROOT ?= $(if $(wildcard ../shared/data/MNIST/raw/train-images-idx3-ubyte),../shared/data,data)

.PHONY: setup browser train test test-fast lint bench gpu-check wheels clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON3) bench/install.py setup $(VENV) requirements.txt $(PIP_OPTIONS)
	touch $@

# The demo page's browser tests drive Debian's Chromium (Playwright cannot download its own browser here):
# installed when missing and this user may install packages; otherwise the one command that does it.
browser:
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2> /dev/null; then SUDO=sudo; \
	  else echo "Error: the browser tests need Chromium, and this user cannot install it. Run \`sudo apt-get install -y chromium\`, then make test again." >&2; exit 1; fi; \
	  echo "Installing Debian's chromium for the browser tests (tests/test_app.py)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium > /dev/null; }

train: setup
	$(PYTHON) train.py data.root=$(MNIST_ROOT) $(ARGS)

# Every test: what CI runs (docs/tests.md says how long it takes).
test: setup browser
	MNIST_ROOT=$(MNIST_ROOT) $(PYTHON) -m pytest $(ARGS)

# The tests not marked slow: a few minutes, without the metric's classifier or a browser.
test-fast: setup
	MNIST_ROOT=$(MNIST_ROOT) $(PYTHON) -m pytest -m "not slow" $(ARGS)

# ruff's checks and its formatter, as configured in pyproject.toml (and .pre-commit-config.yaml)
lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench: setup
	$(PYTHON) -m bench.throughput --data-root $(MNIST_ROOT) $(ARGS)

# One prepared check of a GPU machine, install included (docs/benchmarks.md): ARGS="OUT_DIR", or
# ARGS="--dry-run OUT_DIR" for every step on the CPU at toy sizes. It installs .venv itself, timed, with only
# what it runs, from wheels/ when that folder is there.
gpu-check:
	$(PYTHON3) bench/gpu_check.py $(ARGS)

# Run where pip reaches a registry, then carry wheels/ to a GPU machine that has none (docs/benchmarks.md): what
# gpu-check installs beyond the machine's torch stack, for CPython 3.10-3.14 on x86_64 and aarch64, and MNIST.
wheels: setup
	$(PYTHON) bench/install.py wheels $(WHEELS) $(MNIST_ROOT)

clean:
	rm -rf $(VENV) outputs .pytest_cache
