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

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mnist-edge train $(TRAIN_FLAGS) --output-dir $(OUT)
	$(BIN)/mnist-edge evaluate --checkpoint $(OUT)/mnist_cnn.pt --json $(OUT)/evaluation.json
	$(BIN)/mnist-edge export --format all --checkpoint $(OUT)/mnist_cnn.pt --output-dir $(OUT) \
		--json $(OUT)/parity.json
	$(BIN)/mnist-edge bench --model $(OUT)/mnist_cnn.onnx --checkpoint $(OUT)/mnist_cnn.pt \
		--duration 1 --json $(OUT)/bench.json

lint: install
	$(BIN)/ruff check mnist_edge tests benchmarks
	$(BIN)/ruff format --check mnist_edge tests benchmarks

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: install lint
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
