"""`make docs` machinery (mkd_nb.docs, from nbs/15_docs.ipynb): notebooks run in a real Jupyter kernel show their
figures as PNG, never as `<Figure ...>` text; the HTML site carries the images and renders formulas with the bundled
MathJax, offline; the committed notebooks show at least the images they declare (MIN_IMAGES in mkd_nb.docs)."""
import json, os, re, shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from mkd_nb import docs

TINY = {
    'cells': [
        {'cell_type': 'markdown', 'metadata': {}, 'source': '# A tiny page\n\nThe ramp $\\lambda(t) = \\lambda_{max}\\,'
         '\\frac{1 - \\cos(\\pi t / T)}{2}$ and a display formula:\n\n$$\\sigma^2_c = \\frac{1}{n_c}\\sum_i (f_i - \\mu_c)^2$$\n\n'
         'A link to [the core notebook](00_core.ipynb).'},
        {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [],
         'source': 'from mkd_nb.core import NotebookFigure\n'
                   'fig = NotebookFigure(figsize=(2, 1.5)); fig.add_subplot().plot([0, 1, 4])\nfig'},
        {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [],
         'source': 'import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 1.5)); plt.plot([3, 1, 2]); plt.show()'},
        {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [],
         'source': '#| slow\nraise RuntimeError("a flagged cell must not run")'},
        {'cell_type': 'code', 'metadata': {}, 'execution_count': None, 'outputs': [],
         'source': '#| hide\nhidden_test_marker = 1\nhidden_test_marker'},
    ],
    'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
    'nbformat': 4, 'nbformat_minor': 5}


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The tiny notebook and a copy of nbs/00_core.ipynb, executed in a python3 kernel, and their site."
    d = tmp_path_factory.mktemp('docs')
    (d / 'tiny.ipynb').write_text(json.dumps(TINY))
    shutil.copy(REPO / 'nbs' / '00_core.ipynb', d / '00_core.ipynb')
    os.environ.setdefault('PYTHONPATH', str(REPO))
    for name in ('tiny.ipynb', '00_core.ipynb'):
        docs.execute_notebook(d / name, timeout=300, cwd=REPO / 'nbs')
    docs.build_site([d / 'tiny.ipynb', d / '00_core.ipynb'], d / 'site')
    return d


def test_figures_are_pictures(site):
    import nbformat
    tiny = nbformat.read(site / 'tiny.ipynb', as_version=4)
    outs = [c.outputs for c in tiny.cells if c.cell_type == 'code']
    assert all('image/png' in o.get('data', {}) for o in outs[0] + outs[1]) and outs[0] and outs[1], outs[:2]
    assert outs[2] == []                                          # the flagged cell was skipped, as nbdev_test skips it
    r = docs.figure_report(tiny)
    assert (r['images'], r['figure_text']) == (2, []), r
    core = docs.figure_report(site / '00_core.ipynb')
    assert core['images'] >= docs.MIN_IMAGES['00_core.ipynb'] and core['figure_text'] == [], core
    # nbdev_clean kept the outputs and stripped the metadata (the skip tag, execution counts)
    raw = json.loads((site / 'tiny.ipynb').read_text())
    assert all(c['metadata'] == {} for c in raw['cells']) and all(c.get('execution_count') is None for c in raw['cells'])


def test_figure_text_is_caught():
    "A figure printed as text is reported, a PNG with its text/plain beside it is not."
    nb = {'cells': [{'cell_type': 'code', 'source': '', 'outputs': [
        {'output_type': 'execute_result', 'data': {'text/plain': '<Figure size 800x400 with 8 Axes>'}},
        {'output_type': 'display_data', 'data': {'image/png': 'iVBO', 'text/plain': '<NotebookFigure size 200x150 with 1 Axes>'}},
        {'output_type': 'stream', 'name': 'stdout', 'text': 'x\n<Figure size 640x480 with 0 Axes>\n'}]}]}
    import nbformat
    r = docs.figure_report(nbformat.from_dict(nb))
    assert r['images'] == 1 and len(r['figure_text']) == 2, r


def test_site_is_offline_with_images_and_formulas(site):
    html = (site / 'site' / 'tiny.html').read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert '\\frac{1 - \\cos(\\pi t / T)}{2}' in html and '\\sum_i' in html          # formulas left for MathJax
    srcs = re.findall(r'<script[^>]*\bsrc="([^"]*)"', html)
    assert srcs == [f'mathjax/MathJax.js?config={docs.MATHJAX_CONFIG}'], srcs
    assert not re.search(r'<(script|link|img)[^>]*\b(src|href)="(https?:)?//', html)
    assert (site / 'site' / 'mathjax' / 'MathJax.js').exists()
    assert 'href="00_core.html"' in html and '00_core.ipynb' not in html            # links go to the pages
    assert 'hidden_test_marker' not in html and '#| slow' not in html                # hide cells and directives left out
    core = (site / 'site' / '00_core.html').read_text()
    assert 'src="data:image/png;base64,' in core and 'default_exp' not in core and 'NotebookFigure' in core


def test_committed_notebooks_show_their_figures():
    "Each executed notebook shows at least the images it declares and never a figure as text (after `make docs`)."
    unexecuted, short = [], []
    for name, want in docs.MIN_IMAGES.items():
        r = docs.figure_report(REPO / 'nbs' / name)
        assert r['figure_text'] == [], f"nbs/{name}: figure shown as text in cell(s) {r['figure_text']}"
        if r['cells_with_output'] == 0 and want: unexecuted.append(name); continue
        if r['images'] < want: short.append(f"{name}: {r['images']} images, declares {want}")
    assert not short, 'notebooks show fewer images than they declare: ' + '; '.join(short)
    assert set(docs.MIN_IMAGES) == {p.name for p in docs.all_notebooks()}, 'every notebook declares its images'
    if unexecuted:
        msg = f"notebooks without outputs (run `make docs` and commit them): {', '.join(unexecuted)}"
        if os.environ.get('CI') == 'true': pytest.fail(msg)
        pytest.skip(msg)
