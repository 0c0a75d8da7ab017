"""JupyterLab on loopback driven by headless Chromium through Playwright: the machinery shared by the browser test of the
viewer (tests/test_viewer_browser.py) and the figure check (tests/lab_figures.py).

Debian's `chromium` (/usr/bin/chromium, or MKD_CHROMIUM) is the browser; Playwright's own download (`playwright install`)
is never used. The server gets its own Jupyter config, data, runtime and settings folders under a scratch folder, a random
token and a free port on 127.0.0.1."""
import contextlib, json, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / 'tests' / '_artifacts'
CHROMIUM = os.environ.get('MKD_CHROMIUM') or ('/usr/bin/chromium' if os.path.exists('/usr/bin/chromium')
                                              else shutil.which('chromium') or '/usr/bin/chromium')
HOW = ("to enable it: install Debian's chromium (`sudo apt-get install chromium`, or `make browser` as root) and the "
       "playwright package (`.venv/bin/pip install -e '.[dev]'`); do not run `playwright install`")
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
IDLE = '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]'


def require(why: str):
    "In a pytest test: skip when the browser machinery is missing (`why`), except under CI=true, where that fails."
    import pytest
    if not why: return
    if os.environ.get('CI') == 'true': pytest.fail(f"browser test cannot run: {why} (under CI=true it must run; {HOW})")
    pytest.skip(f"browser test skipped: {why}; {HOW}")


def python() -> str:
    "The repo's virtual environment python (the kernel must be this one), else the interpreter running us."
    venv = REPO / '.venv' / 'bin' / 'python'
    return str(venv) if venv.exists() else sys.executable


def missing() -> str:
    "Why the browser machinery cannot run here ('' when it can)."
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)): return f"{CHROMIUM} not found"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "the playwright package is not installed"
    probe = subprocess.run([python(), '-c', "import sys, importlib.util as u; sys.exit(any(u.find_spec(m) is None for m in "
                                            "('jupyterlab', 'ipykernel', 'ipywidgets', 'mkd_nb')))"],
                           capture_output=True, env=dict(os.environ, PYTHONPATH=_pythonpath()))
    return '' if probe.returncode == 0 else f"{python()} lacks jupyterlab, ipykernel, ipywidgets or mkd_nb"


def _pythonpath() -> str:
    "PYTHONPATH with this checkout first, so that its mkd_nb is the one imported."
    return os.pathsep.join([str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])


def free_port() -> int:
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


def listen_addresses(pid: int) -> list:
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


def is_loopback(ip: str) -> bool: return ip.startswith('127.') or ip in ('::1', '::ffff:127.0.0.1')


class Lab:
    """`with Lab(root, scratch, env={...}) as lab:` runs `jupyter lab` serving `root` until the block ends.
    `env` overrides the server's (and so the kernels') environment; a value of None removes that variable.
    `settings` maps a JupyterLab plugin id to the user settings it starts with (autosave is always off, so a notebook
    run in the browser is never written back)."""

    def __init__(self, root, scratch, env=None, settings=None, log_name='jupyterlab.log'):
        self.root, self.scratch, self.log_name = Path(root), Path(scratch), log_name
        self.port, self.token = free_port(), secrets.token_hex(24)
        self.base = f'http://127.0.0.1:{self.port}'
        home = self.scratch / 'jupyter'
        self.env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_DATA_DIR=str(home / 'data'),
                        JUPYTER_RUNTIME_DIR=str(home / 'runtime'), IPYTHONDIR=str(home / 'ipython'),
                        HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1', PYTHONPATH=_pythonpath())
        for k in ('JUPYTER_PATH', 'JUPYTER_TOKEN'): self.env.pop(k, None)
        for k, v in (env or {}).items():
            if v is None: self.env.pop(k, None)
            else: self.env[k] = str(v)
        self.settings = {'@jupyterlab/docmanager-extension:plugin': {'autosave': False}, **(settings or {})}
        self.server, self.started = None, None

    def _write_settings(self, folder: Path):
        for plugin, values in self.settings.items():
            package, name = plugin.split(':')
            path = folder / package / f'{name}.jupyterlab-settings'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def __enter__(self):
        home = self.scratch / 'jupyter'
        home.mkdir(parents=True, exist_ok=True)
        self._write_settings(home / 'user-settings')
        cmd = [python(), '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={self.port}',
               '--ServerApp.port_retries=0', f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.root}',
               '--ServerApp.allow_remote_access=False', f'--LabApp.workspaces_dir={home / "workspaces"}',
               f'--LabApp.user_settings_dir={home / "user-settings"}', '--LabApp.news_url=',
               '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.extension_manager=readonly']
        if os.geteuid() == 0: cmd.append('--allow-root')   # containers often run as root
        self.log = open(self.scratch / self.log_name, 'w')
        self.server = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try: self.started = self._wait_ready(45)
        except BaseException:
            self.__exit__(None, None, None); raise
        return self

    def _wait_ready(self, timeout: float) -> float:
        t0, url = time.time(), f'{self.base}/api/status?token={self.token}'
        while time.time() - t0 < timeout:
            if self.server.poll() is not None: raise RuntimeError(f"jupyter lab exited with status {self.server.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200: return time.time() - t0
            except OSError: time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer {self.base}/api/status within {timeout:.0f} s")

    def listen_addresses(self) -> list: return listen_addresses(self.server.pid)

    def start_session(self, path: str, kernel: str = 'python3') -> dict:
        "Start `path`'s kernel session through the REST API, so that JupyterLab attaches to it when the notebook opens."
        body = json.dumps({'path': path, 'name': Path(path).name, 'type': 'notebook', 'kernel': {'name': kernel}}).encode()
        req = urllib.request.Request(f'{self.base}/api/sessions?token={self.token}', data=body, method='POST',
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=60) as r: return json.loads(r.read())

    def url(self, path: str) -> str: return f'{self.base}/lab/tree/{path}?token={self.token}&reset'

    def __exit__(self, *exc):
        try: urllib.request.urlopen(urllib.request.Request(f'{self.base}/api/shutdown?token={self.token}', method='POST'),
                                    timeout=5)
        except OSError: pass
        try: self.server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGTERM)
            try: self.server.wait(timeout=5)
            except subprocess.TimeoutExpired: os.killpg(self.server.pid, signal.SIGKILL); self.server.wait()
        self.log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.scratch / self.log_name, ARTIFACTS / self.log_name)


def chromium(pw, scratch, height: int = 1100):
    "A headless Debian Chromium context (close it when done)."
    return pw.chromium.launch_persistent_context(str(Path(scratch) / 'chromium-profile'), executable_path=CHROMIUM,
                                                 headless=True, args=CHROMIUM_ARGS,
                                                 viewport={'width': 1280, 'height': height})


def open_notebook(page, url: str, timeout_ms: int = 60_000):
    "Open a notebook and wait until its first cell's editor shows and its kernel is idle."
    page.goto(url, wait_until='domcontentloaded')
    page.wait_for_selector('.jp-NotebookPanel .jp-Cell .cm-content', timeout=timeout_ms)
    page.wait_for_selector(IDLE, timeout=timeout_ms)


@contextlib.contextmanager
def notebook_page(lab: Lab, path: str, failure_shot: Path, timeout_ms: int = 60_000, page_timeout_ms: int = 30_000):
    """A Chromium page on notebook `path` of `lab`, its python3 kernel started and idle (within `timeout_ms`; other waits
    default to `page_timeout_ms`). When the block raises, what the browser showed is saved to `failure_shot`."""
    from playwright.sync_api import sync_playwright
    session = lab.start_session(path)
    assert session['kernel']['name'] == 'python3', session
    with sync_playwright() as pw:
        ctx = chromium(pw, lab.scratch)
        try:
            page = ctx.new_page()
            page.set_default_timeout(page_timeout_ms)
            try:
                open_notebook(page, lab.url(path), timeout_ms=timeout_ms)
                yield page
            except Exception:
                page.screenshot(path=str(failure_shot))
                raise
        finally: ctx.close()


def run_all(page, done, timeout: float, what: str = 'the awaited output'):
    """Run -> Run All Cells until `done()` is true. JupyterLab may still put up its 'Select Kernel' dialog (accepted: the
    notebook's python3); cells queued before it are lost with the kernel switch, so after it everything is run again
    once the notebook has been quiet (no dialog, kernel idle) for a moment."""
    t0, pending, quiet = time.time(), True, time.time()
    idle = page.locator(IDLE)
    while time.time() - t0 < timeout:
        if not pending and done(): return time.time() - t0
        dialog = page.locator('.jp-Dialog')
        if dialog.count() and dialog.first.is_visible():
            if 'Kernel' in dialog.first.inner_text(): dialog.first.locator('.jp-Dialog-button.jp-mod-accept').click()
            pending, quiet = True, time.time()
        elif pending and time.time() - quiet > 1.5 and idle.count():
            page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
            page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
            pending = False
        time.sleep(0.25)
    raise TimeoutError(f"Run All: {what} did not come within {timeout:.0f} s")


def dismiss_news(page):
    "JupyterLab's 'official news?' toast, out of the picture."
    no_news = page.get_by_role('button', name='No', exact=True)
    if no_news.count(): no_news.first.click(); page.wait_for_timeout(500)
