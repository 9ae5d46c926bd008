# Quick start: `make demo` and `make test` (plain `make` = `make venv`). Each creates .venv from Python 3.7 when
# it is missing or stale (pyproject.toml, EXTRAS or the interpreter changed) and installs the project
# into it (editable, so .venv/bin/mpltool runs this checkout); a second run reuses it.
#
# Python 3.7, when PYTHON is not given: `python3.7` on PATH, then the highest
# $(pyenv root)/versions/3.7.*/bin/python, then $(PYENV_FALLBACK). A candidate counts only if it runs
# and is 3.7 (a pyenv shim whose selected version lacks 3.7 fails and is skipped); the interpreter's own
# path (sys.executable) is used, never the shim. `make which-python` shows the choice.
# Override the interpreter with `make test PYTHON=/path/to/python3.7`, the TensorFlow wheel with
# `EXTRAS=cpu-plain,test` (tensorflow-cpu) or `EXTRAS=test` (a TF 1.15 already installed).

VENV ?= .venv
# `onnx` (tf2onnx, onnx, onnxruntime: `export --format onnx`) resolves beside the numpy/protobuf pins.
EXTRAS ?= cpu,test,onnx,report,dist
# Horovod (extra `dist`) compiles against the TensorFlow already in the venv: installed second, without
# pip's build isolation, with gloo and without MPI, PyTorch and MXNet.
HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
	HOROVOD_WITHOUT_MXNET=1 HOROVOD_GPU_OPERATIONS=
BASE_EXTRAS = $(subst $(eval) ,$(comma),$(filter-out dist,$(subst $(comma), ,$(EXTRAS))))
comma := ,
DEMO ?= demo-project
RECIPE ?= mpl-demo
PYENV_FALLBACK ?= /root/.pyenv/versions/3.7.16/bin/python
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.mpltool-installed

IS_37 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))'
FIND_PYTHON := ok() { "$$1" -c 'import sys; v = sys.version_info[:2] == (3, 7); v and sys.stdout.write(sys.executable + "\n"); sys.exit(not v)' 2>/dev/null; }; \
	p=$$(command -v python3.7) && ok "$$p" && exit 0; \
	root=$$(pyenv root 2>/dev/null) && for p in $$(ls -d "$$root"/versions/3.7.*/bin/python 2>/dev/null | sort -rV); \
	do ok "$$p" && exit 0; done; \
	ok "$(PYENV_FALLBACK)"; exit 0

# Searched at most once per make run, and only when a target needs it (`make clean-demo` runs nothing).
ifeq ($(origin PYTHON),undefined)
PYTHON = $(eval PYTHON := $$(shell $$(FIND_PYTHON)))$(PYTHON)
PYTHON_FROM := found
else
PYTHON_FROM := given
endif

# The interpreter's identity is its installation (sys.base_prefix, symlinks resolved), whatever name,
# shim or symlink reached it; the fingerprint writes it as <prefix>/bin/python, as stamps always have.
PY_HOME_CMD := -c 'import os, sys; print(os.path.realpath(sys.base_prefix))'
PYTHON_HOME = $(eval PYTHON_HOME := $$(shell "$$(PYTHON)" $$(PY_HOME_CMD) 2>/dev/null))$(PYTHON_HOME)
FINGERPRINT = $(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)-$(EXTRAS)-$(PYTHON_HOME)/bin/python

.DEFAULT_GOAL := venv
.PHONY: venv test test-fast demo bench clean-demo which-python FORCE
FORCE:

venv: $(STAMP)

# A missing or wrong interpreter stops make with one line (exit 2) before anything is touched.
PYENV_TRIED = $(if $(shell pyenv root 2>/dev/null),$(shell pyenv root 2>/dev/null)/versions/3.7.*/bin/python,pyenv (not on PATH))
CHECK_PYTHON = $(if $(PYTHON),,$(error no Python 3.7 found (tried python3.7 on PATH, $(PYENV_TRIED), \
	$(PYENV_FALLBACK)); install Python 3.7 or run make with PYTHON=/path/to/python3.7))$(if \
	$(shell "$(PYTHON)" $(IS_37) 2>/dev/null && echo yes),,$(error PYTHON=$(PYTHON) is not a working Python 3.7; \
	run make with PYTHON=/path/to/python3.7))

$(STAMP): FORCE
	$(CHECK_PYTHON)
	@if [ -f "$(STAMP)" ] && [ "$$(cat $(STAMP))" = "$(FINGERPRINT)" ] && $(VPY) -c 'import mpltool' 2>/dev/null; then touch $(STAMP); exit 0; fi; \
	if [ ! -x "$(VPY)" ] || [ "$$($(VPY) $(PY_HOME_CMD) 2>/dev/null)" != "$(PYTHON_HOME)" ]; then \
		echo "creating $(VENV) from $(PYTHON)"; rm -rf "$(VENV)"; "$(PYTHON)" -m venv "$(VENV)" || exit 1; fi; \
	echo "installing mpltool[$(BASE_EXTRAS)] into $(VENV)"; \
	$(VPY) -m pip install --quiet --disable-pip-version-check -e ".[$(BASE_EXTRAS)]" || exit 1; \
	case ",$(EXTRAS)," in *,dist,*) echo "installing horovod==0.28.1 (builds once against TF 1.15, about 2 minutes)"; \
		$(HOROVOD_ENV) $(VPY) -m pip install --quiet --disable-pip-version-check --no-build-isolation \
		horovod==0.28.1 || exit 1;; esac; \
	echo "$(FINGERPRINT)" > $(STAMP)

which-python:
	$(CHECK_PYTHON)
	@echo "PYTHON=$(PYTHON) ($(PYTHON_FROM)); installation $(PYTHON_HOME); venv fingerprint $(FINGERPRINT)"

# Two workers, each test file on one worker (its module fixtures built once): the suite is mostly
# single-threaded Python and TensorFlow start-up, so two of them fill the 2 cores. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(STAMP)
	$(VPY) -m pytest -q $(TEST_PARALLEL)

# Everything but the end-to-end tests marked slow (training, subprocess pipelines, the wheel build).
test-fast: $(STAMP)
	$(VPY) -m pytest -q $(TEST_PARALLEL) -m "not slow"

demo: $(STAMP)
	@VPY="$(VPY)" DEMO="$(DEMO)" RECIPE="$(RECIPE)" sh scripts/demo.sh

bench: $(STAMP)
	$(VPY) benchmarks/train_step.py
	$(VPY) benchmarks/input_pipeline.py
	$(VPY) benchmarks/eval.py

clean-demo:
	rm -rf "$(DEMO)"
