# make train / make test / make bench: each sets up .venv from requirements.txt on first use.
# Extra options go through ARGS, e.g. make train ARGS="trainer.max_epochs=5"

VENV := .venv
PYTHON := $(VENV)/bin/python
# MNIST: ../shared/data where a machine holds it (no internet needed), else data/ (downloaded on first use).
MNIST_ROOT ?= $(if $(wildcard ../shared/data/MNIST/raw/train-images-idx3-ubyte),../shared/data,data)

.PHONY: setup train test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade --quiet pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

train: setup
	$(PYTHON) train.py data.root=$(MNIST_ROOT) $(ARGS)

test: setup
	MNIST_ROOT=$(MNIST_ROOT) $(PYTHON) -m pytest $(ARGS)

# ruff's checks and its formatter, as configured in pyproject.toml (and .pre-commit-config.yaml)
lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench: setup
	$(PYTHON) -m bench.throughput --data-root $(MNIST_ROOT) $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
