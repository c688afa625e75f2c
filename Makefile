# Quick start:  make run   (set up, build the demo on first launch, open the lab)
#               make test  (set up, run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench demo browser clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) app.py

demo: $(STAMP)
	$(PY) -m lab demo build

browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

test: $(STAMP) browser
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m lab bench

clean:
	rm -rf $(VENV) .cache test-artifacts
