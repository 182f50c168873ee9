# Every target installs what it needs into a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test e2e images lint bench clean

$(STAMP): pyproject.toml docker/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so nothing below pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The images' pins (docker/constraints.txt) hold here too: tests run what the images ship.
	$(BIN)/python -m pip install --quiet -c docker/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pulsar demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m mypy  # strict on pulsar_core, normal on the images and the CLI (pyproject.toml)
	$(BIN)/python -m pytest -q
	# The lifecycle once more with its trainer and predictor pods run from the built images
	# (the test kubelet's container mode); it skips, saying why, without podman, buildah or root.
	PULSAR_E2E_CONTAINERS=1 $(BIN)/python -m pytest -q -m e2e tests/e2e/test_lifecycle.py

# The real-control-plane tier alone (etcd + kube-apiserver + controllers; see docs/operator.md).
e2e: $(STAMP)
	$(BIN)/python -m pytest -q -m e2e

# Build the three images on a local Debian base (buildah, mmdebstrap; root) and start each
# entrypoint under podman with its pod's security settings (tests/images; `make test` runs it too).
images: $(STAMP)
	$(BIN)/python -m pytest -q -m images tests/images

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pulsar .pytest_cache .ruff_cache
