PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/securepool run examples/digits.toml --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# three workers on two cores, a test file each at a time: the two deployment files
# (tests/runtime/test_flower_pool.py, test_readme_verbatim.py) mostly wait on Flower's
# polling and heartbeats, so the rest runs beside them on both cores
unit: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile

test: lint typecheck unit

clean:
	rm -rf $(VENV) runs
