# mkd_nb — every target sets itself up on a fresh machine and is cheap when already set up.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where the real CamVid copy lives (tests and benchmarks read it from here; never copied into the repo).
MKD_CAMVID ?= $(abspath ../shared/data/camvid-240x180)
export MKD_CAMVID
# Nothing may reach a model hub at test time.
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.PHONY: install demo test test-fast test-slow results results-table lab export bench-loader clean browser

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# MKD beside the supervised baseline on 32 labeled + 224 unlabeled synthetic scenes (mkd_nb/demo.py, nbs/14_demo.ipynb).
demo: install
	$(BIN)/python -m mkd_nb.demo outputs/demo

# Debian's chromium for tests/test_viewer_browser.py (Playwright drives it; `playwright install` is never used).
# Installed when we are root with apt; otherwise the browser test skips and says how to enable it (under CI=true it fails).
browser:
	@command -v chromium >/dev/null 2>&1 || (test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))) || \
	  echo "note: chromium not installed (needs root + apt); the browser test will skip"

# nbdev_test runs the test cells of every notebook; pytest runs tests/ and its summary closes the output.
test: install browser
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

test-slow: install
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing
	$(BIN)/python -m pytest tests -q -p no:cacheprovider --run-slow

# The camvid-cpu benchmark: runs (or resumes) every unfinished cell, then rewrites results/camvid-cpu/ and RESULTS.md.
# Hours on a 2-core CPU; interrupt at will, run again to continue. `results-table` only re-renders from the finished runs.
results: install
	$(BIN)/nbdev_test --path nbs/13_ablations.ipynb --flags results --timing

results-table: install
	$(BIN)/mkd-bench table --protocol camvid-cpu --out results/camvid-cpu --results-md RESULTS.md --render-only

lab: install
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir nbs

export: install
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

clean:
	rm -rf $(VENV) *.egg-info _proc _docs
