# The two set-up commands: `make demo` and `make test`. Both create .venv and install
# everything from nothing on a fresh machine; later runs reuse the venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU wheel; an unpinned torch would resolve a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: install test test-fast demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# Two workers, a test file each at a time: most of a test's time is spent starting Ray,
# DeepSpeed and MPI processes, so two files overlap well on 2 cores (10.5-11.7 minutes here on
# a quiet machine; three workers gained 3%, too little for the extra contention).
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

demo: install
	$(VENV)/bin/nasfleet demo

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info runs
