# Quick start: `make demo` and `make test`. Both create .venv from Python 3.7 when it is missing or
# stale (pyproject.toml or the interpreter changed) and install the project into it; a second run
# reuses it. Override the interpreter with `make test PYTHON=/path/to/python3.7`, the TensorFlow wheel
# with `EXTRAS=cpu-plain,test` (tensorflow-cpu) or `EXTRAS=test` (a TF 1.15 already installed).

PYTHON ?= /root/.pyenv/versions/3.7.16/bin/python
VENV ?= .venv
EXTRAS ?= cpu,test
DEMO ?= demo-project
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.mpltool-installed
FINGERPRINT := $(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)-$(EXTRAS)-$(PYTHON)

.PHONY: venv test demo bench clean-demo FORCE
FORCE:

venv: $(STAMP)

$(STAMP): FORCE
	@if [ ! -x "$(PYTHON)" ]; then echo "error: Python 3.7 not found at $(PYTHON); run make with PYTHON=/path/to/python3.7" >&2; exit 2; fi
	@if [ -f "$(STAMP)" ] && [ "$$(cat $(STAMP))" = "$(FINGERPRINT)" ] && $(VPY) -c 'import mpltool' 2>/dev/null; then touch $(STAMP); exit 0; fi; \
	if [ ! -x "$(VPY)" ] || ! $(VPY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 7))' 2>/dev/null; then \
		echo "creating $(VENV) from $(PYTHON)"; rm -rf "$(VENV)"; "$(PYTHON)" -m venv "$(VENV)" || exit 1; fi; \
	echo "installing mpltool[$(EXTRAS)] into $(VENV)"; \
	$(VPY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]" || exit 1; \
	echo "$(FINGERPRINT)" > $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q

demo: $(STAMP)
	@VPY="$(VPY)" DEMO="$(DEMO)" sh scripts/demo.sh

bench: $(STAMP)
	$(VPY) benchmarks/train_step.py
	$(VPY) benchmarks/input_pipeline.py
	$(VPY) benchmarks/eval.py

clean-demo:
	rm -rf "$(DEMO)"
