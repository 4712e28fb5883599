# The README's two commands: `make quickstart` and `make test`. Each sets up $(VENV) first if it is missing.
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu      # a CPU-only torch (about 1 GB less)
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cu126    # another CUDA build
#   make test VENV=/tmp/venv PYTHON=python3.12                            # another place, another Python
# To reinstall (after pyproject.toml changed): rm -rf .venv, then any command.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
BIN := $(VENV)/bin

.PHONY: quickstart test notebooks setup

quickstart: setup
	$(BIN)/clip-inversion fit --config configs/quickstart.yaml
	@echo "Images and manifest in runs/quickstart; TensorBoard: $(BIN)/tensorboard --logdir runs/quickstart"

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# Runs every notebook top to bottom and keeps its outputs (small images), so that it reads on its own.
notebooks: setup
	$(BIN)/python notebooks/execute.py notebooks/*.ipynb

setup: $(BIN)/clip-inversion

# Only when missing: an existing environment is never touched.
$(BIN)/clip-inversion:
	$(PYTHON) -m venv $(VENV)
ifeq ($(TORCH_INDEX),)
	$(BIN)/pip install $(TORCH) -e ".[dev]"
else
	$(BIN)/pip install --index-url $(TORCH_INDEX) $(TORCH)
	$(BIN)/pip install -e ".[dev]"
endif
