"""Issue 33: opened through `make lab`, a notebook shows its figures after Run All. Each notebook runs in a real JupyterLab
(headless Chromium, tests/lab_figures.py) with the kernel environment `make lab` gives (no MPLBACKEND), and must finish
without an error and with every cell run, render at least one image and as many as it declares (MIN_IMAGES of
mkd_nb.docs), and print no `<Figure size ...>` text in place of a picture.

Slow and browser-bound: skipped by default, run by `make test-slow` (pytest --run-slow) or `make lab-check`.
MKD_LAB_NOTEBOOKS (space-separated paths from the repo root) replaces the list of notebooks checked."""
import os

import pytest

import lab_figures
import lab_harness as lh

NOTEBOOKS = os.environ.get('MKD_LAB_NOTEBOOKS', ' '.join(lab_figures.DEFAULT_NOTEBOOKS)).split()


def test_kernel_env_is_make_labs():
    "No non-interactive backend reaches the kernel unless asked for; the hub stays offline; torch gets the threads asked."
    env = lab_figures.kernel_env()
    assert 'MPLBACKEND' in env and env['MPLBACKEND'] is None    # None: removed from the inherited environment
    assert env['HF_HUB_OFFLINE'] == '1' and env['OMP_NUM_THREADS'] == 1
    assert lab_figures.kernel_env('Agg', threads=0)['MPLBACKEND'] == 'Agg'
    assert 'OMP_NUM_THREADS' not in lab_figures.kernel_env(threads=0)


def test_summary_line_and_verdict():
    "The one-line summary carries the counts; a `<Figure` text, an error or an unfinished run fails the notebook."
    seen = lab_figures.Seen('nbs/x.ipynb', images=6, rendered=6, code_cells=21, ran=21, seconds=17.2, finished=True)
    assert seen.line().startswith("nbs/x.ipynb: 6 images, 0 '<Figure' texts, 17 s (21/21 code cells run; 0 errors")
    assert seen.ok(min_images=6) and not seen.ok(min_images=7)
    for bad in ({'figure_texts': 1}, {'errors': ['AssertionError']}, {'finished': False}, {'ran': 20}):
        assert not lab_figures.Seen(**{**seen.__dict__, **bad}).ok(), bad
    assert 'NOT FINISHED' in lab_figures.Seen(**{**seen.__dict__, 'finished': False}).line()
    assert lab_figures.declared_images('nbs/08a_mgd.ipynb') == 4 and lab_figures.declared_images('other.ipynb') == 0


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize('notebook', NOTEBOOKS)
def test_figures_show_after_run_all(notebook):
    lh.require(lh.missing())
    seen = lab_figures.run_notebook(lh.REPO / notebook, lab_figures.kernel_env())
    print(seen.line())
    assert seen.finished, seen.line()
    assert not seen.errors, seen.line()
    assert seen.figure_texts == 0, f"a figure printed as `<Figure ...>` text instead of a picture: {seen.line()}"
    assert seen.ran == seen.code_cells, f"cells left unrun: {seen.line()}"
    assert seen.images >= max(1, lab_figures.declared_images(notebook)) and seen.rendered == seen.images, seen.line()
    assert 'CHANGED' not in seen.note, seen.line()
