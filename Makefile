# minivid: two commands on a fresh machine.
#   make test   create .venv if missing, install minivid with its test extras, run unit tests and notebooks
#   make demo   same install, then `python -m minivid demo $(DEMO_ARGS)` (e.g. DEMO_ARGS=--resume)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.minivid-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install test unit notebooks demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

unit: $(STAMP)
	$(PY) -m pytest -n 2 tests $(PYTEST_ARGS)

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/ $(PYTEST_ARGS)

test: unit notebooks

demo: $(STAMP)
	$(PY) -m minivid demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
