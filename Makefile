PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAPARI_STAMP := $(VENV)/.installed-napari

.PHONY: demo test bench lint env napari-env clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

# The napari plugin and its tests (Qt, pytest-qt); `make test` skips them without it.
$(NAPARI_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[napari-test]'
	touch $(NAPARI_STAMP)

napari-env: $(NAPARI_STAMP)

demo: $(STAMP)
	$(BIN)/coordgate demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
