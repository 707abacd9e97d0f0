# Everything runs inside .venv, created on first use. torch is pinned to the
# CPU build first, so no later requirement can pull the multi-GB CUDA wheels.
# `make install` (and so CI) installs the exact releases of constraints.txt, so a
# new upstream release cannot change what CI tests; `make test-latest` tries the
# newest releases in a venv of its own, and `make lock` writes them into
# constraints.txt (commit that refresh on its own).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS ?= constraints.txt
PIP_SPEC ?= pip==26.3
LATEST_VENV := .venv-latest
LATEST_BIN := $(LATEST_VENV)/bin
# The tests cover the JAX path and the evaluation too; the quickstart needs only the training extra.
EXTRAS ?= dev,jax,eval

.PHONY: install quickstart m2-mini test test-slow test-zoo test-all test-latest lock lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install "$(PIP_SPEC)"

install: $(BIN)/python
	$(BIN)/pip install -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/pip install -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"

quickstart: EXTRAS = train
quickstart: install
	$(BIN)/python examples/quickstart.py

# The M2 path: train in JAX/Flax on the embedded corpus, export to safetensors, check parity, evaluate, card.
m2-mini: EXTRAS = train,jax
m2-mini: install
	$(BIN)/python examples/m2_jax/mini.py

# `make test` is the everyday suite (under 15 minutes on 2 cores); the marked slower sets (multi-process
# runs, compiled graphs, trainer and study runs; every decoder of transformers) run in CI after it.
test: install
	$(BIN)/python -m pytest -q -m "not slow and not zoo"

test-slow: install
	$(BIN)/python -m pytest -q -m "slow and not zoo"

test-zoo: install
	$(BIN)/python -m pytest -q -m zoo

test-all: test test-slow test-zoo

# The newest releases our ranges allow (torch stays the CPU build on disk), in .venv-latest.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_BIN)/pip install --upgrade pip
	$(LATEST_BIN)/pip install "$(TORCH_SPEC)"
	$(LATEST_BIN)/pip install --upgrade --upgrade-strategy eager "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	$(LATEST_BIN)/pip list --format=freeze | grep -iE "^(torch|transformers|accelerate|safetensors|huggingface.hub|peft|jax|flax|lm.eval)=="
	$(LATEST_BIN)/python -m pytest -q

# Pin what `make test-latest` installed (run it first, and commit the refresh on its own).
lock:
	test -x $(LATEST_BIN)/python || { echo "run 'make test-latest' first: lock pins the releases it tested"; exit 2; }
	{ sed -n '1,3p' $(CONSTRAINTS); $(LATEST_BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(LATEST_VENV) build dist *.egg-info .pytest_cache .ruff_cache
