# The README's two commands. Each creates .venv if missing and installs into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench docs

# constraints.txt pins every dependency to the versions the committed figures were made with.
$(BIN)/bitcl: pyproject.toml requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=23"
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q -c requirements.txt -c constraints.txt -e ".[dev,rl,atari,avalanche,gpu,ray,slurm]"
	touch $(BIN)/bitcl

setup: $(BIN)/bitcl

# Main job: BLIP on Split-MNIST (embedded 5,000 MNIST digits), prints the accuracy matrix.
demo: setup
	$(BIN)/bitcl run --method blip --benchmark split-mnist --scenario task --out runs/demo --overwrite

# Tests run in TEST_WORKERS pytest-xdist processes (one per core, at most 4; each uses one torch thread,
# tests/conftest.py); `make test TEST_WORKERS=0` runs them in this one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# Every test: what CI runs (.ci/run).
test: setup
	$(PYTEST) tests

# The edit loop: every test not marked slow (@pytest.mark.slow: each over ~5 s on a quiet 2-core machine).
test-fast: setup
	$(PYTEST) -m "not slow" tests

# The documentation site (docs/, mkdocs.yml) into site/; --strict turns every warning into an error.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python benchmarks/bench_kernels.py

# Fuzzing: each tests/fuzz/fuzz_*.py is an atheris harness (libFuzzer flags), run for
# FUZZ_SECONDS seconds. The test suite runs the same harness bodies briefly, without atheris.
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-deps

fuzz-deps: setup
	$(BIN)/pip install -q -c requirements.txt "atheris>=2.3"

fuzz: fuzz-deps
	@for f in tests/fuzz/fuzz_*.py; do \
	  echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  $(BIN)/python $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Every README figure: each script writes its JSON result under benchmarks/results/ (hours on 2 cores).
.PHONY: figures
# parity_drivers.py compares every driver with this older commit (results bit-identical across the refactors)
PARITY_COMMIT ?= 948a59a
PARITY_TREE ?= /tmp/bitcl-parity-$(PARITY_COMMIT)
figures: setup
	$(BIN)/pip install -q -c requirements.txt -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/search_presets.py permuted-blip
	$(BIN)/python benchmarks/search_regularizers.py
	$(BIN)/python benchmarks/bench_blip.py accuracy
	$(BIN)/python benchmarks/bench_blip.py speed
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_backbones.py speed
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios task --methods blip ewc si mas dlcft finetune
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios class --archs alexnet \
		--methods blip ewc si mas dlcft finetune --part class_alexnet
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios class --archs alexnet \
		--methods af anpyc joint masx rewc sib siu sos --part class_alexnet_variants
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios class --archs resnet18 \
		--methods blip ewc si mas dlcft finetune --part class_resnet18
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios task --archs alexnet \
		--methods af anpyc ft-fix joint masx rewc sib siu sos --part task_alexnet_variants
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios task --archs resnet18 \
		--methods af anpyc ft-fix joint masx rewc sib siu sos --part task_resnet18_variants
	$(BIN)/python benchmarks/bench_backbones.py accuracy --scenarios class --archs resnet18 \
		--methods af anpyc joint masx rewc sib siu sos --part class_resnet18_variants
	$(BIN)/python benchmarks/bench_rl.py tune
	$(BIN)/python benchmarks/bench_rl.py sequence
	$(BIN)/python benchmarks/bench_rl.py speed
	$(BIN)/python benchmarks/bench_rl_vs_sb3.py
	$(BIN)/python benchmarks/bench_avalanche.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/search_fit_defaults.py
	$(BIN)/python benchmarks/bench_user_model.py
	$(BIN)/python benchmarks/search_backbones.py
	$(BIN)/python benchmarks/search_blip_prior.py
	$(BIN)/python benchmarks/protocol_time.py --what both
	test -d $(PARITY_TREE) || git worktree add $(PARITY_TREE) $(PARITY_COMMIT)
	cd $(PARITY_TREE) && $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	$(BIN)/python benchmarks/parity_drivers.py $(PARITY_TREE)
	$(BIN)/python benchmarks/figures_status.py --strict

# Which committed results were made by the code at HEAD, and what changed since the others.
.PHONY: figures-status
figures-status: setup
	$(BIN)/python benchmarks/figures_status.py
