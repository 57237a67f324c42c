# Two commands matter: `make test` and `make ablate`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch from this machine's local wheel; users with CUDA can override: make CONSTRAINTS=
CONSTRAINTS ?= constraints-cpu.txt
# Data: $FSNET_DATA_DIR when set (CI sets it), else the loader's own lookup (cache, then download).
ABLATE_ARGS ?= --space ultra
# Test processes (pytest-xdist): the unit tests spread over them, the Ray integration tests run on one of them.
TEST_WORKERS ?= 2

.PHONY: setup test lint ablate bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

ablate: setup
	$(PY) -m harness.ablate $(ABLATE_ARGS)

bench: setup
	$(PY) -m harness.bench

clean:
	rm -rf $(VENV) results .pytest_cache
