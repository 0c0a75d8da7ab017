"""What a reader sees after Run All in JupyterLab: open each notebook as `make lab` serves it, in headless Chromium,
run Run -> Run All Cells, wait until the kernel is idle and count the figures that rendered.

    python tests/lab_figures.py [NB ...] [--mplbackend Agg] [--timeout 480] [--min-images N]

For each notebook it prints one line, `NOTEBOOK: N images, M '<Figure' texts, T s (...)`, where N counts the <img> of
image/png outputs and M the output texts holding `<Figure size` (a figure Jupyter could not draw), and saves into
tests/_artifacts/ (git-ignored) `NAME_lab_full.png` (the whole notebook) and `NAME_lab_figures.png` (the screen at the
first figure). The kernel's environment is the one `make lab` gives: MPLBACKEND unset (`--mplbackend Agg` sets it, to
show what a non-interactive backend hides), HF_HUB_OFFLINE=1, MKD_CAMVID when set or when the CI data copy is beside the repo,
this checkout first on PYTHONPATH; OMP_NUM_THREADS=1 unless `--threads` says otherwise (0: leave it alone). Autosave is
off: the notebook file is never written. One JupyterLab server and one browser per notebook, one notebook at a time.
Exit status 1 when a notebook has an error, a '<Figure' text, a cell left unrun, fewer images than it declares
(MIN_IMAGES of mkd_nb.docs, the same floor `make docs` holds it to; --min-images replaces it) or did not finish.
Without NB it checks DEFAULT_NOTEBOOKS.
Needs Debian's chromium and the playwright package (see tests/lab_harness.py); never `playwright install`."""
import argparse, hashlib, os, sys, tempfile, time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_harness as lh  # noqa: E402

# Notebooks whose figures a reader meets first (pictures of the data, the augmentations, one step of each method)
DEFAULT_NOTEBOOKS = ('nbs/02_augment.ipynb', 'nbs/06_feature_aug.ipynb', 'nbs/08_methods.ipynb')
MAX_SHOT_HEIGHT = 16_000   # Chromium cannot capture a taller page in one picture
COUNT_JS = """() => {
  const outs = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')];
  const images = outs.filter(o => o.dataset.mimeType === 'image/png' || o.classList.contains('jp-RenderedImage'))
                     .flatMap(o => [...o.querySelectorAll('img')]);
  const figureTexts = outs.filter(o => /<Figure size/.test(o.innerText));
  const errors = outs.filter(o => /Traceback \\(most recent call last\\)/.test(o.innerText));
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')]
                    .map(p => p.innerText);
  return {images: images.length, rendered: images.filter(i => i.complete && i.naturalWidth > 0).length,
          figure_texts: figureTexts.length,
          errors: errors.map(e => e.innerText.split('\\n').filter(l => l.trim()).slice(-1)[0] || ''),
          code_cells: prompts.length, ran: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
          busy: prompts.filter(p => p.includes('*')).length};
}"""
FIRST_FIGURE_JS = """() => {
  const o = document.querySelector('.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="image/png"] img')
         || [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
              .find(o => /<Figure size/.test(o.innerText));
  if (!o) return false;
  o.closest('.jp-Cell').scrollIntoView({block: 'start'});
  return true;
}"""
SCROLLER_JS = """() => { const s = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer') || document.body;
  s.scrollTop = 0; return s.scrollHeight; }"""   # back to the top; the notebook's full height


@dataclass
class Seen:
    notebook: str
    images: int = 0
    rendered: int = 0
    figure_texts: int = 0
    errors: list = field(default_factory=list)
    code_cells: int = 0
    ran: int = 0
    seconds: float = 0.0
    finished: bool = False
    shots: list = field(default_factory=list)
    note: str = ''

    def line(self) -> str:
        extra = [f"{self.ran}/{self.code_cells} code cells run", f"{len(self.errors)} errors"]
        if self.rendered != self.images: extra.append(f"{self.images - self.rendered} images not decoded")
        if not self.finished: extra.append('NOT FINISHED')
        if self.errors: extra.append(f"first error: {self.errors[0][:120]}")
        if self.note: extra.append(self.note)
        return (f"{self.notebook}: {self.images} images, {self.figure_texts} '<Figure' texts, {self.seconds:.0f} s "
                f"({'; '.join(extra)})")

    def ok(self, min_images: int = 0) -> bool:
        "Finished with every code cell run, no error, no figure as text and at least `min_images` images."
        return (self.finished and self.ran == self.code_cells and not self.errors and not self.figure_texts
                and self.images >= min_images)


def declared_images(notebook) -> int:
    "The images `notebook` declares it shows after a run (MIN_IMAGES of mkd_nb.docs; 0 for one not listed there)."
    from mkd_nb.docs import MIN_IMAGES
    return MIN_IMAGES.get(Path(notebook).name, 0)


def kernel_env(mplbackend=None, threads=1) -> dict:
    "The environment `make lab` gives the kernels (None removes a variable)."
    camvid = os.environ.get('MKD_CAMVID') or str((lh.REPO.parent / 'shared' / 'data' / 'camvid-240x180').resolve())
    env = {'MPLBACKEND': mplbackend, 'HF_HUB_OFFLINE': '1',
           'MKD_CAMVID': camvid if Path(camvid).exists() else os.environ.get('MKD_CAMVID')}
    if threads: env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def _digest(path: Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()


def run_notebook(path, env: dict, timeout: float = 480, settle: float = 3.0, tag: str = '') -> Seen:
    "Run All on `path` in JupyterLab (served from its folder, as `make lab` serves nbs/) and count what rendered."
    path = Path(path).resolve()
    shown = os.path.relpath(path, Path.cwd()) if path.is_relative_to(Path.cwd()) else str(path)
    seen, stem, before = Seen(shown), path.stem + tag, _digest(path)
    lh.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = {'@jupyterlab/notebook-extension:tracker': {'windowingMode': 'none'}}   # every cell in the page
    with tempfile.TemporaryDirectory(prefix='lab_figures_') as scratch, \
         lh.Lab(path.parent, scratch, env=env, settings=settings, log_name=f'{stem}_jupyterlab.log') as lab, \
         lh.notebook_page(lab, path.name, lh.ARTIFACTS / f'{stem}_lab_failure.png',
                          timeout_ms=120_000, page_timeout_ms=60_000) as page:
        lh.dismiss_news(page)
        page.keyboard.press('Control+b')   # the file browser closed: the notebook gets the width
        t0, quiet_since = time.time(), [None]

        def done() -> bool:
            "Kernel idle, no cell queued or running, at least one cell run, and so for `settle` seconds."
            c = page.evaluate(COUNT_JS)
            calm = c['ran'] > 0 and c['busy'] == 0 and page.locator(lh.IDLE).count() > 0
            if not calm: quiet_since[0] = None; return False
            quiet_since[0] = quiet_since[0] or time.time()
            return time.time() - quiet_since[0] >= settle

        try:
            lh.run_all(page, done, timeout, 'an idle kernel with every cell run')
            seen.finished = True
        except TimeoutError as e: seen.note = str(e)
        seen.seconds = time.time() - t0 - (settle if seen.finished else 0)
        page.wait_for_timeout(500)   # let the last images decode
        c = page.evaluate(COUNT_JS)
        for k in ('images', 'rendered', 'figure_texts', 'errors', 'code_cells', 'ran'): setattr(seen, k, c[k])
        if page.evaluate(FIRST_FIGURE_JS):
            page.wait_for_timeout(300)
            seen.shots.append(lh.ARTIFACTS / f'{stem}_lab_figures.png')
            page.screenshot(path=str(seen.shots[-1]))
        height = page.evaluate(SCROLLER_JS)
        page.set_viewport_size({'width': 1280, 'height': min(MAX_SHOT_HEIGHT, height + 120)})
        page.wait_for_timeout(800)
        seen.shots.append(lh.ARTIFACTS / f'{stem}_lab_full.png')
        page.screenshot(path=str(seen.shots[-1]), full_page=True)
        if height + 120 > MAX_SHOT_HEIGHT:
            seen.note = (seen.note + '; ' if seen.note else '') + f"full screenshot cut at {MAX_SHOT_HEIGHT} of {height} px"
    if _digest(path) != before: seen.note = (seen.note + '; ' if seen.note else '') + 'THE NOTEBOOK FILE CHANGED'
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='notebooks to check (default: DEFAULT_NOTEBOOKS)')
    ap.add_argument('--mplbackend', default=None,
                    help="set MPLBACKEND in the kernel (e.g. Agg); default: unset, as `make lab`")
    ap.add_argument('--threads', type=int, default=1,
                    help='OMP_NUM_THREADS for the kernel (0: leave it as it is); default 1')
    ap.add_argument('--timeout', type=float, default=480, help='seconds Run All may take per notebook (default 480)')
    ap.add_argument('--min-images', type=int, default=None,
                    help="a notebook with fewer images fails (default: the count it declares in mkd_nb.docs.MIN_IMAGES)")
    ap.add_argument('--tag', default='', help='suffix for the screenshot names (e.g. _agg)')
    args = ap.parse_args(argv)
    if why := lh.missing(): print(f"lab_figures: cannot run: {why}; {lh.HOW}", file=sys.stderr); return 2
    args.notebooks = args.notebooks or [lh.REPO / nb for nb in DEFAULT_NOTEBOOKS]
    for nb in args.notebooks:
        if not nb.is_file(): print(f"lab_figures: {nb}: no such notebook", file=sys.stderr); return 2
    env, failed = kernel_env(args.mplbackend, args.threads), 0
    for nb in args.notebooks:
        seen = run_notebook(nb, env, args.timeout, tag=args.tag)
        print(seen.line(), flush=True)
        print('   screenshots:', ', '.join(os.path.relpath(s, Path.cwd()) for s in seen.shots), flush=True)
        failed += not seen.ok(declared_images(nb) if args.min_images is None else args.min_images)
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
