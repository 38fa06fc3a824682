# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first and pinned: a bare "torch" would pull a multi-GB build from the index.
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/vidbatch demo-library demo/library
	$(VENV)/bin/vidbatch run jobs/demo.yaml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check vidbatch tests
	$(VENV)/bin/mypy vidbatch

test: lint
	$(PY) -m pytest -q --durations=20

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
