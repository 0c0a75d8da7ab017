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

.PHONY: install demo test test-fast test-slow lab export bench-loader clean

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mkd-train --method sup --dataset synthetic --iters 300 --eval-every 100 --out outputs/demo

# nbdev_test runs the test cells of every notebook; pytest runs tests/ and its summary closes the output.
test: install
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

test-slow: install
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing
	$(BIN)/python -m pytest tests -q -p no:cacheprovider --run-slow

lab: install
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir nbs

export: install
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

clean:
	rm -rf $(VENV) *.egg-info _proc _docs
