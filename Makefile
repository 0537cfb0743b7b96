# The README's two commands. Both work on a fresh clone: they create .venv, install torch pinned
# (a CPU build on the development machines, the CUDA build on a GPU machine) and this package with
# its dev extras, then run. Re-running is quick: installation is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cgh-installed
TORCH  := torch==2.13.0

.PHONY: test demo demo-quick lint install clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/cgh demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(BIN)/cgh demo --quick $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
