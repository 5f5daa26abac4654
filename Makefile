# The two commands a user needs. Both start from a fresh clone.
#   make demo   set up .venv, install equinet, run the main job on the embedded default data
#   make test   set up .venv (if missing), install with the test extra, run the test suite
#
# A CPU build of torch is installed first so that pip does not pull GBs of CUDA
# wheels; GPU users override it, e.g. `make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX=`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test clean gpu-wheels

# The main job on the embedded data: train the quickstart MACE model on EMT metals and
# alloys, evaluate it on its test split, then 1 ps of NVE MD on a 108-atom Cu/Ni cell.
demo: $(VENV)/.installed
	$(VENV)/bin/equinet train examples/quickstart.yaml --overwrite
	$(VENV)/bin/equinet evaluate runs/quickstart/model.pt runs/quickstart/test.extxyz
	$(VENV)/bin/equinet md runs/quickstart/model.pt examples/CuNi_108.extxyz --ensemble nve \
		--temperature 300 --timestep 2 --steps 500 --output runs/quickstart/md/nve.extxyz

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: $(VENV)/bin/python
	$(PIP) install -q $(PIP_ARGS) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install -q $(PIP_ARGS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(PIP) install -q $(PIP_ARGS) -e ".[test]"
	touch $@ $(VENV)/.installed

# For scripts/gpu_checks.sh on a lent GPU machine (Python 3.12, CUDA 13, no package index): the
# wheels its image lacks, carried to it in .gpu-wheels/. cuEquivariance's CUDA ops (two wheels of
# 73 MB) go as one xz archive of their contents, to fit the 64 MiB a call carries (checked
# 2026-12-02 with the 0.13.0 wheels: a 27 MB archive, 33M in all; the du printed last must
# stay under 64M, else carry the archive in a second call).
GPU_WHEELS := ase vesin pydantic pydantic-core annotated-types typing-inspection platformdirs cuequivariance cuequivariance-torch
GPU_CUEQ_OPS := cuequivariance-ops-cu13 cuequivariance-ops-torch-cu13
GPU_PLATFORMS := $(foreach p,manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28,--platform $(p)_x86_64)
gpu-wheels: $(VENV)/bin/python
	rm -rf .gpu-wheels
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 $(GPU_PLATFORMS) -d .gpu-wheels $(GPU_WHEELS)
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 $(GPU_PLATFORMS) -d .gpu-wheels/ops $(GPU_CUEQ_OPS)
	for wheel in .gpu-wheels/ops/*.whl; do $(PY) -m zipfile -e "$$wheel" .gpu-wheels/ops/unpacked || exit 1; done
	tar -C .gpu-wheels/ops/unpacked -cf - . | xz -9 -T0 >.gpu-wheels/cueq-ops.tar.xz
	rm -rf .gpu-wheels/ops
	du -sh .gpu-wheels

clean:
	rm -rf $(VENV) build *.egg-info .gpu-wheels .gpu-site
