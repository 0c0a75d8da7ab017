"""A page of the offline docs site (mkd_nb.docs) in headless Chromium: its figure renders, its formulas are
typeset by the bundled MathJax, nothing errs and nothing is fetched from beyond the local server.

Needs Debian's `chromium` and the `playwright` package, as tests/lab_harness.py does (`make browser`); without
them it skips, except under CI=true, where it fails. The screenshot lands in tests/_artifacts/docs_page.png."""
import base64, functools, http.server, json, os, shutil, sys, threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from mkd_nb import docs  # noqa: E402
from lab_harness import CHROMIUM, CHROMIUM_ARGS, ARTIFACTS, require  # noqa: E402


def _page_notebook(folder: Path) -> Path:
    "A notebook with two formulas and one figure output (drawn here: no kernel needed to test the site)."
    from mkd_nb.core import NotebookFigure
    fig = NotebookFigure(figsize=(3, 2)); ax = fig.add_subplot(); ax.plot([0, 1, 4, 9]); ax.set(title='a figure')
    png = base64.b64encode(fig._repr_png_()).decode()
    nb = {'cells': [
        {'cell_type': 'markdown', 'id': 'a1', 'metadata': {}, 'source':
         'The ramp $\\lambda(t) = \\lambda_{max}\\,\\frac{1 - \\cos(\\pi t / T)}{2}$, and\n\n$$\\sigma^2_c = \\frac{1}{n_c}\\sum_i (f_i - \\mu_c)^2$$'},
        {'cell_type': 'code', 'id': 'a2', 'metadata': {}, 'execution_count': 1, 'source': 'fig', 'outputs': [
            {'output_type': 'execute_result', 'execution_count': 1, 'metadata': {},
             'data': {'image/png': png, 'text/plain': '<NotebookFigure size 300x200 with 1 Axes>'}}]}],
        'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
        'nbformat': 4, 'nbformat_minor': 5}
    p = folder / 'page.ipynb'; p.write_text(json.dumps(nb)); return p


def test_docs_page_in_chromium(tmp_path):
    require('' if Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK) else f"{CHROMIUM} not found")
    try: from playwright.sync_api import sync_playwright
    except ImportError: require("the playwright package is not installed")
    site = tmp_path / 'site'
    docs.build_site([_page_notebook(tmp_path)], site)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{server.server_address[1]}'
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside, failed, errors = [], [], []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={'width': 1000, 'height': 800})
                page.set_default_timeout(30_000)
                def route(r):
                    if r.request.url.startswith(base) or r.request.url.startswith('data:'): r.continue_()
                    else: outside.append(r.request.url); r.abort()
                page.route('**/*', route)
                page.on('requestfailed', lambda r: failed.append(r.url))
                page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
                page.on('pageerror', lambda e: errors.append(str(e)))
                page.goto(f'{base}/page.html', wait_until='load')
                page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                                       "document.querySelectorAll('.MathJax, .MathJax_Display').length >= 2", timeout=30_000)
                page.wait_for_timeout(300)
                img = page.locator('img[src^="data:image/png"]').first
                width = img.evaluate('e => e.complete ? e.naturalWidth : 0')
                text = page.inner_text('body')
                message = page.evaluate("() => (document.getElementById('MathJax_Message') || {}).innerText || ''")
                page.screenshot(path=str(ARTIFACTS / 'docs_page.png'), full_page=True)
            finally: browser.close()
    finally:
        server.shutdown(); server.server_close()
    assert width > 100, f"the figure did not render (naturalWidth {width})"
    assert 'Math Processing Error' not in text and '\\frac' not in text, text[:300]   # typeset, not left as TeX
    assert not any(w in message for w in ('rror', 'not available', 'fail')), message
    assert outside == [], f"the page asked for something beyond the local site: {outside}"
    # MathJax's HTML-CSS output declares a blank test font at about:blank, which Chromium refuses: not an error of ours
    failed = [u for u in failed if u != 'about:blank']
    errors = [e for e in errors if 'about:blank' not in e and e != 'Failed to load resource: net::ERR_FAILED']
    assert failed == [] and errors == [], (failed, errors)
