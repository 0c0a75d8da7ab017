"""The pseudo-label viewer (nbs/11_viewer.ipynb) in a real browser: JupyterLab on loopback, headless Chromium driven by
Playwright, Run -> Run All Cells, move tau by typing into the slider's readout, wait for the statistics to follow.

Needs Debian's `chromium` (/usr/bin/chromium; `make test` installs it when run as root) and the `playwright` Python package
(a dev requirement). Playwright's own browser download (`playwright install`) is never used. Without them the test skips,
except under CI (CI=true), where it fails. The screenshots land in tests/_artifacts/ (git-ignored)."""
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('MKD_CHROMIUM') or ('/usr/bin/chromium' if os.path.exists('/usr/bin/chromium') else shutil.which('chromium') or '/usr/bin/chromium')
ARTIFACTS = REPO / 'tests' / '_artifacts'
HOW = ("to enable it: install Debian's chromium (`sudo apt-get install chromium`, or `make test` as root) and the playwright "
       "package (`.venv/bin/pip install -e '.[dev]'`); do not run `playwright install`")
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
NB = 'viewer_demo.ipynb'
CELLS = [
    "import sys, torch\ntorch.set_num_threads(1)\nprint('kernel prefix:', sys.prefix)",
    "from mkd_nb.viewer import demo_viewer\nviewer = demo_viewer('mkd', size=48, tau=0.0)\nviewer",
]


def _require(ok: bool, why: str):
    if ok: return
    if os.environ.get('CI') == 'true': pytest.fail(f"browser test cannot run: {why} (under CI=true it must run; {HOW})")
    pytest.skip(f"browser test skipped: {why}; {HOW}")


def _python() -> str:
    "The repo's virtual environment python (the kernel must be this one), else the interpreter running pytest."
    venv = REPO / '.venv' / 'bin' / 'python'
    return str(venv) if venv.exists() else sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tree(pid: int) -> set:
    "`pid` and all its descendants (from /proc)."
    kids = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: ppid = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError): continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop(); out.add(p); todo += kids.get(p, [])
    return out


def _listen_addresses(pid: int) -> list:
    "(address, port) of every TCP socket in LISTEN state owned by `pid` or its children."
    inodes = set()
    for p in _tree(pid):
        try:
            for fd in Path(f'/proc/{p}/fd').iterdir():
                try: link = os.readlink(fd)
                except OSError: continue
                if link.startswith('socket:['): inodes.add(link[8:-1])
        except OSError: continue
    out = []
    for table, v6 in (('/proc/net/tcp', False), ('/proc/net/tcp6', True)):
        try: lines = Path(table).read_text().splitlines()[1:]
        except OSError: continue
        for line in lines:
            f = line.split()
            if f[3] != '0A' or f[9] not in inodes: continue   # 0A = LISTEN
            hexip, hexport = f[1].split(':')
            raw = bytes.fromhex(hexip)
            if v6:
                ip = socket.inet_ntop(socket.AF_INET6, b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            else: ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out.append((ip, int(hexport, 16)))
    return out


def _is_loopback(ip: str) -> bool: return ip.startswith('127.') or ip in ('::1', '::ffff:127.0.0.1')


def _write_notebook(folder: Path):
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': f'c{i}', 'metadata': {}, 'outputs': [], 'source': src}
             for i, src in enumerate(CELLS)]
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                                       'language_info': {'name': 'python'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (folder / NB).write_text(json.dumps(nb, indent=1))


def _wait_ready(proc, url: str, timeout: float):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return time.time() - t0
        except OSError: time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url.split('?')[0]} within {timeout:.0f} s")


def _run_all(page, target, timeout: float):
    """Run -> Run All Cells until `target` shows. JupyterLab may still put up its 'Select Kernel' dialog (accepted: the
    notebook's python3); cells queued before it are lost with the kernel switch, so after it everything is run again once
    the notebook has been quiet (no dialog, kernel idle) for a moment."""
    t0, pending, quiet = time.time(), True, time.time()
    idle = page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    while time.time() - t0 < timeout:
        if target.count() and target.is_visible(): return
        dialog = page.locator('.jp-Dialog')
        if dialog.count() and dialog.first.is_visible():
            if 'Kernel' in dialog.first.inner_text(): dialog.first.locator('.jp-Dialog-button.jp-mod-accept').click()
            pending, quiet = True, time.time()
        elif pending and time.time() - quiet > 1.5 and idle.count():
            page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
            page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
            pending = False
        time.sleep(0.25)
    target.wait_for(timeout=1000)   # raises with Playwright's description of what was awaited


def _start_session(base: str, token: str):
    "Start the notebook's python3 kernel session through the REST API, so that JupyterLab attaches to it when the notebook opens."
    body = json.dumps({'path': NB, 'name': NB, 'type': 'notebook', 'kernel': {'name': 'python3'}}).encode()
    req = urllib.request.Request(f'{base}/api/sessions?token={token}', data=body, method='POST',
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r: return json.loads(r.read())


def _kept(text: str) -> float:
    m = re.search(r'kept at τ = ([0-9.]+): ([0-9.]+) %', text)
    assert m, f"no 'kept at τ' in the statistics: {text!r}"
    return float(m.group(2))


def test_viewer_in_jupyterlab(tmp_path):
    t_start = time.time()
    _require(Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} not found")
    try: from playwright.sync_api import sync_playwright
    except ImportError: _require(False, "the playwright package is not installed")
    py = _python()
    probe = subprocess.run([py, '-c', "import sys, importlib.util as u; print(sys.prefix); "
                                      "sys.exit(any(u.find_spec(m) is None for m in ('jupyterlab', 'ipykernel', 'ipywidgets', 'mkd_nb')))"],
                           capture_output=True, text=True)
    _require(probe.returncode == 0, f"{py} lacks jupyterlab, ipykernel, ipywidgets or mkd_nb")
    prefix = probe.stdout.strip()

    nbdir, home = tmp_path / 'notebooks', tmp_path / 'jupyter'
    nbdir.mkdir(); home.mkdir()
    _write_notebook(nbdir)
    port, token = _free_port(), secrets.token_hex(24)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_DATA_DIR=str(home / 'data'),
               JUPYTER_RUNTIME_DIR=str(home / 'runtime'), IPYTHONDIR=str(home / 'ipython'), HF_HUB_OFFLINE='1',
               OMP_NUM_THREADS='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env.pop('JUPYTER_PATH', None); env.pop('JUPYTER_TOKEN', None)
    cmd = [py, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={nbdir}', '--ServerApp.allow_remote_access=False',
           f'--LabApp.workspaces_dir={home / "workspaces"}', '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--LabApp.extension_manager=readonly']
    if os.geteuid() == 0: cmd.append('--allow-root')   # containers often run tests as root
    log = open(tmp_path / 'jupyterlab.log', 'w')
    server = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    try:
        base = f'http://127.0.0.1:{port}'
        timings['server_start'] = _wait_ready(server, f'{base}/api/status?token={token}', 45)
        addrs = _listen_addresses(server.pid)
        assert addrs and all(_is_loopback(ip) for ip, _ in addrs), f"jupyter lab listens beyond loopback: {addrs}"
        assert ('127.0.0.1', port) in addrs, addrs
        session = _start_session(base, token)
        assert session['kernel']['name'] == 'python3', session

        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp_path / 'chromium-profile'), executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={'width': 1280, 'height': 1100})
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                t0 = time.time()
                page.goto(f'{base}/lab/tree/{NB}?token={token}&reset', wait_until='domcontentloaded')
                page.wait_for_selector('.jp-NotebookPanel .jp-Cell .cm-content', timeout=40_000)
                page.wait_for_selector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=40_000)
                timings['lab_open'] = time.time() - t0
                t0 = time.time()
                out = page.locator('.jp-OutputArea-output', has_text='kernel prefix:').first
                _run_all(page, out, 50)
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

                no_news = page.get_by_role('button', name='No', exact=True)   # JupyterLab's "official news?" toast, out of the picture
                if no_news.count(): no_news.first.click(); page.wait_for_timeout(500)
                viewer = page.locator('.mkd-viewer').first
                viewer.scroll_into_view_if_needed()
                viewer.screenshot(path=str(ARTIFACTS / 'viewer_widget.png'))
                page.screenshot(path=str(ARTIFACTS / 'viewer_browser.png'))
            except Exception:
                page.screenshot(path=str(ARTIFACTS / 'viewer_failure.png'))   # what the browser showed when it went wrong
                raise
            finally: ctx.close()
        addrs = _listen_addresses(server.pid)           # now with the kernel's sockets too
        assert all(_is_loopback(ip) for ip, _ in addrs), f"something listens beyond loopback: {addrs}"
    finally:
        t0 = time.time()
        try: urllib.request.urlopen(urllib.request.Request(f'http://127.0.0.1:{port}/api/shutdown?token={token}', method='POST'), timeout=5)
        except OSError: pass
        try: server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGTERM)
            try: server.wait(timeout=5)
            except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL); server.wait()
        log.close()
        shutil.copy(tmp_path / 'jupyterlab.log', ARTIFACTS / 'jupyterlab.log')
        timings['shutdown'] = time.time() - t0
    timings['total'] = time.time() - t_start
    print('browser test timings (s):', {k: round(v, 1) for k, v in timings.items()}, '; screenshots in', ARTIFACTS)
    assert server.returncode is not None, "jupyter lab is still running"
