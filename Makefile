# Two entry points that do all the set-up themselves (venv + pip):
#   make demo   the main job end to end
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
OUT ?= exports
# A quick demo: one epoch on 10,000 images, evaluated on the whole test set (a few minutes).
TRAIN_FLAGS ?= --epochs 1 --limit 10000

# Use the read-only copy of real MNIST beside the checkout when the user has not chosen one.
ifeq ($(origin MNIST_EDGE_DATA), undefined)
ifneq ($(wildcard ../shared/data/mnist/MNIST/raw),)
export MNIST_EDGE_DATA := $(abspath ../shared/data/mnist)
endif
endif

.PHONY: demo test lint install clean web-deps browser qemu loadgen ray-deps check-arm grpc-stubs docs

# onnxruntime-web for `mnist-edge export --format web` (the version pinned in mnist_edge/edge/web.py),
# from npm into .web/, where the exporter looks for it.
ORT_WEB_VERSION := $(shell sed -n 's/^ORT_WEB_VERSION = "\(.*\)".*/\1/p' mnist_edge/edge/web.py)
web-deps: .web/node_modules/onnxruntime-web/package.json
.web/node_modules/onnxruntime-web/package.json: mnist_edge/edge/web.py
	npm install --silent --no-audit --no-fund --prefix .web onnxruntime-web@$(ORT_WEB_VERSION)
	touch $@

# The browser the tests drive: Debian's chromium (Playwright's own download does not work offline).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# A load generator nobody here wrote, for the server's tests and benchmarks: Debian's hey.
loadgen:
	@command -v hey >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null)

# Another CPU for the tests: QEMU user mode runs the venv's python on an emulated AVX2-only x86.
qemu:
	@command -v qemu-x86_64-static >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev,executorch,litert-export,tracing]'
	touch $@

install: $(VENV)/.installed

# The documentation site, into site/ (offline: no CDN, no web fonts), strictly: a warning, a
# broken link or a missing reference fails the build. Its measured tables come from
# benchmarks/results/ (benchmarks/readme_tables.py), its reference from the code (docs/hooks.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The gRPC messages, from the proto files in mnist_edge/edge/proto (tests/test_grpc.py checks
# that this writes the committed files byte for byte).
grpc-stubs: install
	$(PY) -m mnist_edge.edge.proto.regenerate

# Ray for the cluster tests (tests/test_ray.py, run inside a network namespace): the [ray]
# extra, into the same venv, the way chromium and hey are installed for theirs.
ray-deps: $(VENV)/.ray
$(VENV)/.ray: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[ray]'
	touch $@

demo: install
	$(BIN)/mnist-edge train $(TRAIN_FLAGS) --output-dir $(OUT)
	$(BIN)/mnist-edge evaluate --checkpoint $(OUT)/mnist_cnn.pt --json $(OUT)/evaluation.json
	$(BIN)/mnist-edge export --format all --checkpoint $(OUT)/mnist_cnn.pt --output-dir $(OUT) \
		--json $(OUT)/parity.json
	$(BIN)/mnist-edge bench --model $(OUT)/mnist_cnn.onnx --checkpoint $(OUT)/mnist_cnn.pt \
		--duration 0.5 --json $(OUT)/bench.json

# mnist-edge on an emulated ARM CPU (qemu-aarch64-static): builds or reuses a Debian arm64 root
# with the edge install under ~/.cache/mnist-edge/arm64, runs predict, evaluate and parity there
# and compares with this machine (benchmarks/arm.py; ARM_ARGS="--quick" is what CI runs).
ARM_ARGS ?=
check-arm: install
	PYTHON=$(PY) bash .ci/arm-root >/dev/null
	$(PY) benchmarks/arm.py $(ARM_ARGS)

lint: install
	$(BIN)/ruff check mnist_edge tests benchmarks
	$(BIN)/ruff format --check mnist_edge tests benchmarks

# pytest exits 5 when it collected no tests: that is a failure here, not a pass. The order is
# random (pytest-randomly); the seed is printed at the end, and `-p no:randomly` runs in file order.
test: install lint web-deps browser qemu loadgen ray-deps
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .web
