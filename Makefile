# One entry point for people and CI. `make serve` sets up and serves; `make test` runs the tests.
# Set-up is a virtual environment in .venv, reinstalled only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint format docs train image-lint image-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# MALLOC_ARENA_MAX=2 as in the image: it keeps a busy worker's memory from creeping up.
serve: setup
	MALLOC_ARENA_MAX=2 $(BIN)/python -m app

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The documentation site (mkdocs.yml, docs/) into site/: open site/index.html. --strict: a broken
# link or anchor, a page left out of the nav or a setting without a description fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

train: setup
	$(BIN)/python -m training

# The Docker image's checks without Docker: hadolint on the Dockerfile, shellcheck on its
# scripts, every Kubernetes manifest against the API schemas (offline; --strict rejects unknown
# fields), and the KServe manifests against the kserve SDK's schema (deploy/kserve/, as strict).
image-lint: setup
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck docker/*.sh
	$(BIN)/kubernetes-validate --strict $(wildcard deploy/k8s/*.yaml deploy/k8s/*/*.yaml)
	$(BIN)/python deploy/kserve/kserve_schema.py validate deploy/kserve/*.yaml

# image-lint, then the image's install-and-start path in a fresh venv (a minute or more): the
# Dockerfile's own install RUN and CMD, and a real request to /predict: the CPU image's install,
# without torch, unless EXTRAS names extras (EXTRAS=gpu: the CUDA image's).
image-check: image-lint
	S4_TEST_IMAGE_INSTALL=1 $(BIN)/python -m pytest tests/test_docker_image.py

# Refresh docs/screenshot.png (the README's and the docs' picture) from a real browser run: the page after
# drawing a 7, served by the committed weights. Needs Debian's chromium (apt-get install chromium).
.PHONY: screenshot
screenshot: setup
	mkdir -p docs
	S4_REQUIRE_BROWSER=1 S4_README_SCREENSHOT=docs/screenshot.png \
		$(BIN)/python -m pytest tests/browser -k 'draws-7'

# Regenerate the gRPC stubs in app/protocols/kserve/ from the .proto there, with the pinned
# grpcio-tools. Their messages go in a descriptor pool of their own: tritonclient's copy of the
# same `inference` package (Triton's grpc_service.proto) can then be imported beside them.
.PHONY: grpc-stubs
grpc-stubs: setup
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		app/protocols/kserve/grpc_predict_v2.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default()/DESCRIPTOR = _descriptor_pool.DescriptorPool()/' \
		app/protocols/kserve/grpc_predict_v2_pb2.py
