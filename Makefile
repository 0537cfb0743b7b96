# The README's two commands. Both work on a fresh clone: they create .venv, install torch pinned and this package,
# then run. `make demo` installs only what the demo needs (torch and cgh's runtime dependencies); `make test` and
# `make lint` add the dev extras (pytest, ruff, Hypothesis, TensorBoard, W&B, pyarrow). Re-running is quick:
# installation is redone only when pyproject.toml changes.
#
# Which torch build: PyPI's Linux wheel of torch is the CUDA build, with gigabytes of NVIDIA libraries, even on a
# machine without a GPU. So on Linux without `nvidia-smi` torch comes from PyTorch's CPU index (TORCH_INDEX; set
# TORCH_INDEX= to take PyPI's wheel anyway). A torch wheel that pip already finds without any index (pip's
# find-links: a local wheelhouse, as on the development machines) is used as it is.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cgh-installed
DEV_STAMP := $(VENV)/.cgh-dev-installed
TORCH  := torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
ifeq ($(shell uname -s),Linux)
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= --index-url $(TORCH_CPU_INDEX)
endif
endif
TORCH_INDEX ?=

.PHONY: test demo demo-quick lint install install-dev clean

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	if $(BIN)/python -m pip install --quiet --dry-run --no-deps --no-index $(TORCH) >/dev/null 2>&1; then \
	    $(BIN)/python -m pip install --quiet $(TORCH); \
	else \
	    $(BIN)/python -m pip install --quiet $(TORCH_INDEX) $(TORCH); \
	fi
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a time (--dist loadfile: a
# file's module fixtures, such as test_learning's pretraining runs, are built once), one torch thread each
# (tests/conftest.py). Two fill the CI machine's two cores; TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/cgh demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(BIN)/cgh demo --quick $(DEMO_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
