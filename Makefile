# Two commands do all set-up on a fresh machine: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job: DLG and IG against held-out digits, then the attack x defense matrix (ci preset).
demo: $(STAMP)
	$(BIN)/fedleak demo
	$(BIN)/fedleak matrix ci --preset ci --output runs/matrix-ci

test: $(STAMP)
	tools/install_test_deps.sh $(BIN)/python
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# Speed/memory figures side by side with breaching 0.1.2 and scikit-image (docs/performance.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
