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
# Headless plots for the targets that run code unattended; `lab` and `docs` unset it so kernels get inline figures
# (ipykernel switches to inline plots only when MPLBACKEND is unset).
test test-slow results results-table demo: export MPLBACKEND := Agg

.PHONY: install demo test test-fast test-slow results results-table lab lab-check docs docs-site export bench-loader clean browser gpu-check gpu-pack

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# MKD beside the supervised baseline on 32 labeled + 224 unlabeled synthetic scenes (mkd_nb/demo.py, nbs/11a_demo.ipynb).
demo: install
	$(BIN)/python -m mkd_nb.demo outputs/demo

# Debian's chromium for tests/test_viewer_browser.py (Playwright drives it; `playwright install` is never used).
# Installed when we are root with apt; otherwise the browser test skips and says how to enable it (under CI=true it fails).
browser:
	@command -v chromium >/dev/null 2>&1 || (test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))) || \
	  echo "note: chromium not installed (needs root + apt); the browser test will skip"

# What a reader sees after Run All in `make lab`: each notebook in JupyterLab + headless Chromium, its rendered figures
# counted, screenshots in tests/_artifacts/. Fails on an error, a cell left unrun, a `<Figure ...>` text or fewer images
# than the notebook declares (MIN_IMAGES in nbs/15_docs.ipynb). Minutes per notebook; without LAB_NOTEBOOKS it checks
# tests/lab_figures.py's DEFAULT_NOTEBOOKS; `make lab-check LAB_NOTEBOOKS="$(ls nbs/*.ipynb)"` checks the whole workbook.
lab-check: install browser
	$(BIN)/python tests/lab_figures.py $(LAB_NOTEBOOKS)

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
	MKD_RUN_TABLE=1 $(BIN)/nbdev_test --path nbs/12a_report.ipynb --flags results --timing

results-table: install
	$(BIN)/mkd-bench table --protocol camvid-cpu --out results/camvid-cpu --results-md RESULTS.md --render-only

lab: install
	env -u MPLBACKEND $(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir nbs

# Executes every notebook on CPU (cells flagged slow/cuda/results are skipped), saves the outputs into nbs/*.ipynb
# (then nbdev_clean: outputs kept, metadata stripped) and builds the offline HTML site in _docs/ (MathJax bundled).
# `make docs NBS="nbs/00_core.ipynb nbs/12a_report.ipynb"` does a few; `make docs-site` only rebuilds the HTML.
docs: install
	env -u MPLBACKEND $(BIN)/python -m mkd_nb.docs --execute $(NBS)

docs-site: install
	env -u MPLBACKEND $(BIN)/python -m mkd_nb.docs $(NBS)

export: install
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

# The GPU check (nbs/14_gpu_check.ipynb): every CUDA path, and memory and speed at the recipes' sizes, into $(GPU_OUT).
# `make gpu-check DRY=1` runs the same script at tiny sizes on the CPU (the suite runs it too: tests/test_gpu_check.py).
GPU_OUT ?= outputs/gpu-check
gpu-check: install
	$(BIN)/python -m mkd_nb.gpu_check $(GPU_OUT) $(if $(DRY),--dry)

# What travels to a GPU machine that has torch, torchvision and timm but no registry: the wheels it lacks (into .whl/) and
# a few CamVid images (into .gpu-data/camvid). Both folders are ignored by git; they travel with the checkout. The one
# command that installs the wheels into a temporary site and runs the check there is in README's GPU section.
# fastprogress 1.0.3: later releases import python-fasthtml and its dependencies; 1.0.3 needs nothing but the standard library.
GPU_WHEELS ?= segmentation-models-pytorch==0.6.0 fastcore==1.14.5 fastprogress==1.0.3
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64
gpu-pack: install
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(addprefix --platform ,$(GPU_PLATFORMS)) -d .whl $(GPU_WHEELS)
	rm -rf .gpu-data/camvid && $(BIN)/python -m mkd_nb.gpu_check .gpu-data/camvid --pack-camvid $(MKD_CAMVID)
	@du -sh .whl .gpu-data

clean:
	rm -rf $(VENV) *.egg-info _proc _docs
