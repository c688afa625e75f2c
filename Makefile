# Quick start:  make run   (set up, build the demo on first launch, open the lab)
#               make test  (set up, run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# Optional extras the tests exercise too (their own requirements files, installed by `make test`).
EXTRAS := requirements-gpu.txt requirements-bench.txt requirements-scale.txt requirements-serve.txt requirements-docs.txt

.PHONY: run test bench demo browser screenshots clean

$(RUN_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP) requirements-dev.txt $(EXTRAS)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet -r requirements-dev.txt $(addprefix -r ,$(EXTRAS))
	touch $(TEST_STAMP)

run: $(RUN_STAMP)
	$(PY) app.py

demo: $(RUN_STAMP)
	$(PY) -m lab demo build

browser:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

test: $(TEST_STAMP) browser
	$(PY) -m pytest -q

# The manual's screenshots: the browser tests write them to test-artifacts/, the docs command copies the ones the
# manual and the README link into docs/images/.
screenshots: $(TEST_STAMP) browser
	$(PY) -m pytest -q tests/test_ui_browser.py
	$(PY) -m lab docs --screenshots test-artifacts

bench: $(TEST_STAMP)
	$(PY) -m lab bench

clean:
	rm -rf $(VENV) .cache test-artifacts
