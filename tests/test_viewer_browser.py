"""The pseudo-label viewer (nbs/11_viewer.ipynb) in a real browser: JupyterLab on loopback, headless Chromium driven by
Playwright, Run -> Run All Cells, move tau by typing into the slider's readout, wait for the statistics to follow.

Needs Debian's `chromium` (/usr/bin/chromium; `make test` installs it when run as root) and the `playwright` Python package
(a dev requirement). Playwright's own browser download (`playwright install`) is never used. Without them the test skips,
except under CI (CI=true), where it fails. The screenshots land in tests/_artifacts/ (git-ignored). The server and browser
machinery lives in tests/lab_harness.py."""
import json, os, re, subprocess, time

import lab_harness as lh

NB = 'viewer_demo.ipynb'
CELLS = [
    "import sys, torch\ntorch.set_num_threads(1)\nprint('kernel prefix:', sys.prefix)",
    "from mkd_nb.viewer import demo_viewer\nviewer = demo_viewer('mkd', size=48, tau=0.0)\nviewer",
]


def _write_notebook(folder):
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [], 'source': src}
             for i, src in enumerate(CELLS)]
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                                       'language_info': {'name': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (folder / NB).write_text(json.dumps(nb, indent=1))


def _kept(text: str) -> float:
    m = re.search(r'kept at τ = ([0-9.]+): ([0-9.]+) %', text)
    assert m, f"no 'kept at τ' in the statistics: {text!r}"
    return float(m.group(2))


def test_viewer_in_jupyterlab(tmp_path):
    t_start = time.time()
    lh.require(lh.missing())
    prefix = subprocess.run([lh.python(), '-c', 'import sys; print(sys.prefix)'], capture_output=True, text=True).stdout.strip()

    nbdir = tmp_path / 'notebooks'
    nbdir.mkdir()
    _write_notebook(nbdir)
    lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    lab = lh.Lab(nbdir, tmp_path, env={'OMP_NUM_THREADS': 1, 'MPLBACKEND': 'Agg'})
    with lab:
        timings['server_start'] = lab.started
        addrs = lab.listen_addresses()
        assert addrs and all(lh.is_loopback(ip) for ip, _ in addrs), f"jupyter lab listens beyond loopback: {addrs}"
        assert ('127.0.0.1', lab.port) in addrs, addrs
        t0 = time.time()
        with lh.notebook_page(lab, NB, lh.ARTIFACTS / 'viewer_failure.png', timeout_ms=40_000) as page:
            timings['lab_open'] = time.time() - t0
            t0 = time.time()
            out = page.locator('.jp-OutputArea-output', has_text='kernel prefix:').first
            lh.run_all(page, lambda: out.count() and out.is_visible(), 50, "the 'kernel prefix:' output")
            kernel_prefix = out.inner_text().split('kernel prefix:', 1)[1].strip()
            assert os.path.realpath(kernel_prefix) == os.path.realpath(prefix), f"kernel runs {kernel_prefix}, expected {prefix}"
            stats = page.locator('.mkd-stats').first
            page.wait_for_function("() => { const e = document.querySelector('.mkd-stats'); return e && e.innerText.includes('kept at τ = 0.00'); }",
                                   timeout=45_000)
            timings['run_all'] = time.time() - t0
            before = stats.inner_text()
            assert _kept(before) == 100.0, before          # tau = 0 keeps every pixel
            img0 = page.locator('.mkd-image').first.get_attribute('src')

            # move tau: type into the slider's editable readout and press Enter
            t0 = time.time()
            readout = page.locator('.mkd-tau .widget-readout').first
            readout.click()
            page.keyboard.press('Control+A')
            page.keyboard.type('0.3')
            page.keyboard.press('Enter')
            page.wait_for_function("() => document.querySelector('.mkd-stats').innerText.includes('kept at τ = 0.30')", timeout=20_000)
            timings['tau_roundtrip'] = time.time() - t0
            after = stats.inner_text()
            assert after != before and _kept(after) < 100.0, after
            assert page.locator('.mkd-tau .widget-readout').first.inner_text().strip() == '0.30'
            page.wait_for_function("(src) => document.querySelector('.mkd-image').getAttribute('src') !== src", arg=img0, timeout=10_000)

            lh.dismiss_news(page)
            viewer = page.locator('.mkd-viewer').first
            viewer.scroll_into_view_if_needed()
            viewer.screenshot(path=str(lh.ARTIFACTS / 'viewer_widget.png'))
            page.screenshot(path=str(lh.ARTIFACTS / 'viewer_browser.png'))
        addrs = lab.listen_addresses()           # now with the kernel's sockets too
        assert all(lh.is_loopback(ip) for ip, _ in addrs), f"something listens beyond loopback: {addrs}"
    timings['total'] = time.time() - t_start
    print('browser test timings (s):', {k: round(v, 1) for k, v in timings.items()}, '; screenshots in', lh.ARTIFACTS)
    assert lab.server.returncode is not None, "jupyter lab is still running"
