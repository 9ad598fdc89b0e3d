# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,qm9,dft

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/deepsci demo --out demo-report

test: install
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/core.py

clean:
	rm -rf $(VENV) demo-report build *.egg-info
