# make install: .venv with the project (editable) and torch pinned: our machines take the local CPU
# build of torch 2.13.0; elsewhere pip takes PyPI's CUDA build of the same version (TORCH=... to change).
# Every other package at the version the tests last passed with (constraints.txt; `make constraints`
# writes it anew from .venv after a deliberate upgrade).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.install.stamp
ARGS ?=
# make test runs the tests on pytest-xdist workers, one per core, each test module on one worker (its
# module-scoped runs made once), the longest modules first (tests/conftest.py); TEST_WORKERS=0: one process, in order
TEST_WORKERS ?= auto

.PHONY: install constraints train test lint format bench clean

install: $(STAMP)

# (pyproject.toml maps conf/ into the package; setuptools then warns about editable installs in general)
$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

constraints: install
	$(BIN)/python tools/constraints.py > constraints.txt.new && mv constraints.txt.new constraints.txt

# The main job: the paper's medium model on PTB (39 epochs), on a GPU when there is one.
train: install
	@echo "make train: rnnreg-train $(or $(ARGS),(the paper's medium model: 39 epochs, minutes on a GPU, 4-6 hours on a 2-core CPU))"
	@echo "  on a CPU: make train ARGS=experiment=smoke (under a minute) or ARGS=experiment=paper_small; the plan and measured time follow"
	$(BIN)/rnnreg-train trainer.accelerator=auto $(ARGS)

test: install lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(ARGS)

# ruff (pyproject.toml): lint and formatting, checked by make test and CI; `make format` applies both.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/bench_speed.py $(ARGS)

clean:
	rm -rf outputs/train outputs/eval outputs/generate outputs/report .pytest_cache bench_results
	find . -name __pycache__ -prune -exec rm -rf {} +
