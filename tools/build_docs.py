"""Executed notebooks and the offline HTML site (`make docs`).

    python tools/build_docs.py --execute [NB ...]   run the notebooks (all of nbs/ by default) in a real Jupyter kernel,
                                                   save their outputs into the .ipynb files, nbdev_clean them, build _docs/
    python tools/build_docs.py [NB ...]            only (re)build the HTML site from the notebooks as they are

A notebook runs as a reader's JupyterLab would run it (ipykernel, inline figures; MPLBACKEND must be unset), except
that cells flagged with one of settings.ini's `tst_flags` (slow, cuda, browser, results) are skipped, as nbdev_test
skips them. The site has one page per notebook (`#| hide` cells and the `#| ...` directives left out), `index.html`
from nbs/index.ipynb, and formulas rendered by a MathJax copied from the `jupyter-server-mathjax` package into
_docs/mathjax/: no page loads anything from the network.
"""
from __future__ import annotations
import argparse, configparser, os, re, shutil, subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NBS = REPO / 'nbs'
MAX_BYTES = 1_500_000           # an executed notebook above this is refused: figures must stay compact PNGs
MATHJAX_CONFIG = 'TeX-AMS-MML_HTMLorMML-full,Safe'   # the one configuration jupyter-server-mathjax ships
# that package ships the STIX web fonts only (MathJax's default is TeX fonts, which would fall back to missing images)
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
                 'webFont: "STIX-Web", imageFont: null}});</script>')
# The images each executed notebook must show at least (checked by `make docs` and tests/test_docs.py): a figure that
# stops rendering, or comes out as `<Figure ...>` text, fails the build. Raise a count when a notebook gains a figure.
MIN_IMAGES = {
    'index.ipynb': 2, '00_core.ipynb': 1, '01_data.ipynb': 1, '02_augment.ipynb': 2, '03_loader.ipynb': 1,
    '04_models.ipynb': 0, '05_ema.ipynb': 1, '06_feature_aug.ipynb': 3, '07_losses.ipynb': 0, '08_methods.ipynb': 1,
    '08a_mgd.ipynb': 4, '09_evaluate.ipynb': 1, '10_train.ipynb': 0, '11_viewer.ipynb': 2, '12_bench.ipynb': 1,
    '13_ablations.ipynb': 7,
}
FIGURE_TEXT = re.compile(r'^<\w*Figure size \d+(\.\d+)?x\d+(\.\d+)? with \d+ Axes>')


def test_flags() -> tuple:
    "settings.ini's `tst_flags`: the cells nbdev_test skips unless asked, skipped here too."
    cfg = configparser.ConfigParser(); cfg.read(REPO / 'settings.ini')
    return tuple(cfg['DEFAULT'].get('tst_flags', '').split())


def _source(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def directives(cell) -> list:
    "The words of a cell's leading `#| ...` lines (`#| hide` -> ['hide'])."
    out = []
    for line in _source(cell).splitlines():
        if not line.startswith('#|'):
            if line.strip(): break
            continue
        out += line[2:].replace(':', ' ').split()
    return out


def is_flagged(cell, flags=None) -> bool:
    "A code cell nbdev_test would skip (a `#| slow`, `#| cuda`, ... directive)."
    flags = test_flags() if flags is None else flags
    return cell.get('cell_type') == 'code' and any(w in flags for w in directives(cell))


def execute_notebook(path, out=None, timeout: int = 1800, cwd=None):
    "Run notebook `path` in a fresh python3 kernel (flagged cells skipped) and write it with its outputs to `out` (default: in place)."
    import nbformat
    from nbclient import NotebookClient
    path = Path(path); out = Path(out) if out else path
    nb = nbformat.read(path, as_version=4)
    flags = test_flags()
    for c in nb.cells:
        if c.cell_type != 'code': continue
        c.outputs, c.execution_count = [], None
        if is_flagged(c, flags): c.metadata['tags'] = ['skip-execution']    # nbdev_clean strips the tag afterwards
    env_backend = os.environ.pop('MPLBACKEND', None)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name='python3',
                       resources={'metadata': {'path': str(cwd or path.parent)}}).execute()
    finally:
        if env_backend is not None: os.environ['MPLBACKEND'] = env_backend
    nbformat.write(nb, out)
    clean(out)
    return out


def clean(path):
    "nbdev_clean one file: outputs stay (settings.ini clear_all = False), metadata and execution counts go."
    from nbdev.clean import nbdev_clean
    nbdev_clean(fname=str(path))


def figure_report(nb) -> dict:
    "Image outputs of a notebook (a path or a loaded notebook) and the outputs that are a figure's text instead of its picture."
    import nbformat
    if not hasattr(nb, 'cells'): nb = nbformat.read(nb, as_version=4)
    images, as_text, executed = 0, [], 0
    for i, c in enumerate(nb.cells):
        if c.get('cell_type') != 'code': continue
        executed += bool(c.get('outputs'))
        for o in c.get('outputs', []):
            data = o.get('data', {})
            if any(k.startswith('image/') for k in data): images += 1; continue
            text = data.get('text/plain', '') if data else o.get('text', '')
            text = ''.join(text) if isinstance(text, list) else text
            if any(FIGURE_TEXT.match(line.strip()) for line in text.splitlines()): as_text.append((i, text.strip()[:80]))
    return dict(images=images, figure_text=as_text, cells_with_output=executed)


# ---------------------------------------------------------------- the site
def mathjax_dir() -> Path:
    "The MathJax 2 copy shipped by the `jupyter-server-mathjax` package (a dev requirement)."
    try: import jupyter_server_mathjax
    except ImportError:
        sys.exit("build_docs: the `jupyter-server-mathjax` package is missing (it ships the MathJax the site uses offline); "
                 "install the dev requirements: pip install -e '.[dev]'")
    return Path(jupyter_server_mathjax.__file__).parent / 'static'


def copy_mathjax(site: Path) -> Path:
    "MathJax into `site/mathjax` (the PNG fallback fonts are left out: browsers use the web fonts)."
    src, dst = mathjax_dir(), site / 'mathjax'
    if not (dst / 'MathJax.js').exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns('png', '*.png', '__pycache__'), dirs_exist_ok=True)
    return dst


def _exporter():
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import Preprocessor

    class ReaderView(Preprocessor):
        "Leave out `#| hide` cells and the `#| default_exp` cell; drop the `#| ...` lines from the code that is shown."
        def preprocess(self, nb, resources):
            keep = []
            for c in nb.cells:
                if c.cell_type == 'code':
                    words = directives(c)
                    if 'hide' in words or 'default_exp' in words: continue
                    lines = _source(c).splitlines()
                    while lines and lines[0].startswith('#|'): lines.pop(0)
                    c.source = '\n'.join(lines)
                keep.append(c)
            nb.cells = keep
            return nb, resources

    ex = HTMLExporter(template_name='lab', mathjax_url=f'mathjax/MathJax.js?config={MATHJAX_CONFIG}', require_js_url='',
                      jupyter_widgets_base_url='', widget_renderer_url='',
                      exclude_input_prompt=True, exclude_output_prompt=True)   # nbdev_clean drops the counts anyway
    ex.register_preprocessor(ReaderView(), enabled=True)
    return ex


def _offline(html: str) -> str:
    "Links between notebooks point at their pages; no script is fetched from elsewhere."
    html = re.sub(r'href="(\./)?([\w.-]+)\.ipynb(#[^"]*)?"', lambda m: f'href="{m[2]}.html{m[3] or ""}"', html)
    html = re.sub(r'<script[^>]*\bsrc="(https?:)?//[^"]*"[^>]*>\s*</script>\s*', '', html)
    html = re.sub(r'<script src=""\s*>\s*</script>\s*', '', html)       # the emptied require.js url
    return html.replace('<script src="mathjax/MathJax.js', MATHJAX_FONTS + '\n<script src="mathjax/MathJax.js', 1)


def build_site(notebooks, site=None) -> list:
    "One HTML page per notebook in `site` (default _docs/) and MathJax beside them; returns the pages."
    import nbformat
    site = Path(site or REPO / '_docs'); site.mkdir(parents=True, exist_ok=True)
    copy_mathjax(site)
    ex, pages = _exporter(), []
    for nb_path in notebooks:
        nb_path = Path(nb_path)
        body, _ = ex.from_notebook_node(nbformat.read(nb_path, as_version=4), resources={'metadata': {'name': nb_path.stem}})
        page = site / f'{nb_path.stem}.html'
        page.write_text(_offline(body), encoding='utf-8'); pages.append(page)
    if not (site / 'index.html').exists():       # no nbs/index.ipynb among them: a plain list of the pages
        items = ''.join(f'<li><a href="{p.name}">{p.stem}</a></li>' for p in pages)
        (site / 'index.html').write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>mkd_nb</title></head>'
                                         f'<body><h1>mkd_nb notebooks</h1><ul>{items}</ul></body></html>', encoding='utf-8')
    return pages


def all_notebooks() -> list:
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('notebooks', nargs='*', help='notebooks (default: every nbs/*.ipynb)')
    ap.add_argument('--execute', action='store_true', help='run them and save the outputs into the notebooks first')
    ap.add_argument('--site', default=str(REPO / '_docs'), help='where the HTML goes (default _docs/)')
    ap.add_argument('--timeout', type=int, default=1800, help='seconds one cell may run')
    a = ap.parse_args(argv)
    nbs = [Path(p).resolve() for p in a.notebooks] or all_notebooks()
    for p in nbs:
        if not p.exists(): sys.exit(f"build_docs: {p}: no such notebook")
    problems = []
    if a.execute:
        for p in nbs:
            t0 = time.time()
            execute_notebook(p, timeout=a.timeout)
            r, size = figure_report(p), p.stat().st_size
            print(f"{p.name}: {time.time() - t0:.0f} s, {r['images']} images, {size / 1e6:.2f} MB", flush=True)
            if size > MAX_BYTES: problems.append(f"{p.name}: {size / 1e6:.2f} MB with outputs (limit {MAX_BYTES / 1e6:.1f} MB)")
            problems += [f"{p.name}: cell {i} shows a figure as text: {t}" for i, t in r['figure_text']]
            if r['images'] < MIN_IMAGES.get(p.name, 0):
                problems.append(f"{p.name}: {r['images']} images, fewer than the {MIN_IMAGES[p.name]} it declares (MIN_IMAGES)")
    pages = build_site(nbs, a.site)
    print(f"{len(pages)} pages in {a.site}")
    if problems: sys.exit('build_docs: ' + '\n  '.join(['problems:'] + problems))


if __name__ == '__main__':
    main()
