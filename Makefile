# The two set-up commands: `make demo` and `make test`. Both create .venv and install
# everything from nothing on a fresh machine; later runs reuse the venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The CPU wheel; an unpinned torch would resolve a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_VARIANT ?= cpu
IMAGE ?= nasfleet:$(VERSION)-$(IMAGE_VARIANT)

.PHONY: install test test-fast demo bench wheel image clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

# Debian's Prometheus, unpacked into the venv without root: the metrics test scrapes a real run
# with it. Where apt-get is missing (macOS) it is skipped with a note, and so is that test.
PROMETHEUS := $(VENV)/opt/prometheus/usr/bin/prometheus
$(PROMETHEUS): | $(STAMP)
	@if command -v apt-get >/dev/null; then \
		rm -rf $(VENV)/opt/prometheus && mkdir -p $(VENV)/opt/prometheus/deb && \
		(cd $(VENV)/opt/prometheus/deb && apt-get download -q prometheus) && \
		dpkg-deb -x $(VENV)/opt/prometheus/deb/prometheus_*.deb $(VENV)/opt/prometheus && \
		rm -rf $(VENV)/opt/prometheus/deb; \
	else echo "note: no apt-get here: Prometheus not installed, its test will be skipped"; fi

install: $(STAMP) $(PROMETHEUS)

# Two workers, a test file each at a time: most of a test's time is spent starting Ray,
# DeepSpeed and MPI processes, so two files overlap well on 2 cores (1,025 tests: 13.3 minutes
# here on the quietest run of 2026-12-04, 15.8-16.4 later that day; three workers gained 3%
# when last tried, too little for the extra contention).
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

demo: install
	$(VENV)/bin/nasfleet demo

bench: install
	$(PY) benchmarks/run_all.py

# The wheel a cluster image installs.
wheel: install
	rm -rf dist
	$(PY) -m pip wheel --no-deps --no-build-isolation --quiet --wheel-dir dist .

# IMAGE_VARIANT=cpu|gpu: Ray's matching 2.60 image with torch, DeepSpeed's ops and the wheel.
image: wheel
	docker build -f cluster_configs/docker/Dockerfile --build-arg VARIANT=$(IMAGE_VARIANT) \
		--build-arg NASFLEET_VERSION=$(VERSION) -t $(IMAGE) .

clean:
	rm -rf $(VENV) build dist *.egg-info runs
