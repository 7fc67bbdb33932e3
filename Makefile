# The README's two commands. Both create .venv (if missing) and install embstore into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out

.PHONY: setup demo demo-crops test test-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned here (a CPU build available locally); pyproject only asks for torch>=2.4.
# A regular (non-editable) install, so the tests run against what users install.
setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --upgrade --force-reinstall --no-deps .
	$(BIN)/python -m pip install --quiet '.[dev]'

demo: setup
	$(BIN)/embstore demo $(DEMO_DIR)
	$(BIN)/embstore info $(DEMO_DIR)/store
	$(BIN)/embstore log $(DEMO_DIR)/store

# Seed 000 from videos: detections -> crops (tiny DINOv3) -> aggregate -> normalize -> .npy tree
demo-crops: setup
	$(BIN)/embstore demo --seed000 $(DEMO_DIR)-crops
	$(BIN)/embstore info $(DEMO_DIR)-crops/months.store

# Lint, format check and type check (0 errors), then the tests. `pytest` (not `python -m pytest`)
# keeps the checkout off sys.path: the installed package is tested.
test: setup test-deps lint
	$(BIN)/pytest

# What the tests need outside Python (Chromium for the report test): installed when root with
# apt-get, otherwise .ci/test-deps says how to get it.
test-deps:
	.ci/test-deps

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-crops build *.egg-info
