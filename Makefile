# The two commands a fresh clone needs (see README):
#   make demo   set everything up, then upscale the bundled Kodak photo with the bundled default model
#   make test   set everything up, then run the test suite (what CI runs, through .ci/run)

PYTHON ?= python3
VENV ?= .venv
# a bare `torch` requirement can pull a multi-GB CUDA build; pin the one to install (override for a GPU build)
TORCH_SPEC ?= torch==2.13.0
SPANDREL_SPEC ?= spandrel==0.4.2 safetensors==0.8.0 einops==0.8.2

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# spandrel without its torchvision requirement: PyPI's torchvision is a CUDA build that cannot load beside the
	# CPU torch above, and spandrel needs it only for two non-upscaling architectures (realsr's loader says so)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(SPANDREL_SPEC)
	touch $(STAMP)

demo: setup
	$(BIN)/realsr upscale realsr_cli/samples/kodim23.png -o upscaled/

test: setup
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) upscaled .pytest_cache
