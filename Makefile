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

# Two pytest workers (pytest-xdist), each with its own local Ray: the suite mostly waits for
# processes to start (Ray, each run's actors importing torch), so two cut its wall time by a third on
# 2 cores. Whole files go to one worker (--dist loadfile): module fixtures such as test_cluster's
# two-node cluster start once. `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q --durations=20 -n $(PYTEST_WORKERS) --dist loadfile

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
