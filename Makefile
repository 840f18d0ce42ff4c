# The README's two commands. Each creates .venv if missing and installs into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

$(BIN)/bitcl: pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=23"
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -c requirements.txt -e ".[dev]"
	touch $(BIN)/bitcl

setup: $(BIN)/bitcl

# Main job: BLIP on Split-MNIST (embedded 5,000 MNIST digits), prints the accuracy matrix.
demo: setup
	$(BIN)/bitcl run --method blip --benchmark split-mnist --scenario task --out runs/demo --overwrite

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python benchmarks/bench_kernels.py
