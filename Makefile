# The README's two commands. Both create .venv (if missing) and install embstore into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out

.PHONY: setup demo demo-crops test bench clean

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

# `pytest` (not `python -m pytest`) keeps the checkout off sys.path: the installed package is tested.
test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-crops build *.egg-info
