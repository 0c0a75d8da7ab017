"""Fault injection (issue 9): kill -9 of training and of a checkpoint write, non-finite losses and weights, an unwritable or
full output folder, a failing write during training, and a dataset that changes under a resumed run.

Every test checks two things: the fault gives a clear error (naming the iteration, term, file or field), and nothing that was
written before the fault is lost or silently replaced by garbage. RELIABILITY.md at the repo top summarises the outcomes."""
import errno, hashlib, json, os, random, shutil, signal, subprocess, sys, time
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mkd_nb.core import make_config, cli_main, ConfigError
from mkd_nb.data import DataError, save_splits, make_split, folder
from mkd_nb.models import save_checkpoint, load_checkpoint, CheckpointError
import mkd_nb.models as models_mod
import mkd_nb.train as train_mod
from mkd_nb.train import Trainer, TrainingError, check_output_dir, mkd_train
from mkd_nb.cli import main_train

REPO = Path(__file__).resolve().parents[1]
SEED = 20240609   # draws the kill points; change it to try other ones
TINY = 'decoder_channels=16,synthetic_train=16,synthetic_val=4,synthetic_size=40,deterministic=true,log_every=1'
TIMING = {'step_s', 'data_wait', 'wall', 'wall_time_s', 'it_per_s'}   # wall-clock values: the only things allowed to differ


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', HF_HUB_OFFLINE='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1',
                PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))


def _train_cmd():
    exe = Path(sys.executable).parent / 'mkd-train'
    return [str(exe)] if exe.exists() else [sys.executable, '-m', 'mkd_nb.cli', 'train']


def _argv(method, out, iters, eval_every, *extra):
    return ['--method', method, '--encoder', 'resnet18', '--set', TINY, '--crop', '32', '--batch-size', '2', '--workers', '0',
            '--threads', '1', '--iters', str(iters), '--eval-every', str(eval_every), '--out', str(out), *extra]


def _rows(out):
    "metrics.jsonl rows (a torn last line from a kill is skipped, as the Trainer does)."
    f = Path(out) / 'metrics.jsonl'
    if not f.exists(): return []
    rows = []
    for line in f.read_text().splitlines():
        try: rows.append(json.loads(line))
        except json.JSONDecodeError: pass
    return rows


def _no_timing(x):
    if isinstance(x, dict): return {k: _no_timing(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list): return [_no_timing(v) for v in x]
    return x


def _assert_same(a, b, where='state'):
    "Exact equality of nested dicts/lists of tensors and plain values."
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: tensors differ (max |diff| {(a.double() - b.double()).abs().max():.3g})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys differ"
        for k in a: _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)): _assert_same(x, y, f"{where}[{i}]")
    else: assert a == b, f"{where}: {a!r} != {b!r}"


def _kill_when(argv, out, k, timeout=300):
    "Start mkd-train, SIGKILL it once metrics.jsonl shows iteration >= k and last.pt exists; returns the iteration seen."
    log = open(Path(out).parent / f'{Path(out).name}.log', 'w')
    p = subprocess.Popen(_train_cmd() + argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    t0, seen = time.time(), 0
    try:
        while time.time() - t0 < timeout:
            rows = _rows(out)
            seen = max([r.get('iter', 0) for r in rows] + [0])
            if seen >= k and (Path(out) / 'last.pt').exists():
                os.kill(p.pid, signal.SIGKILL); p.wait(30)
                assert p.returncode == -signal.SIGKILL
                return seen
            if p.poll() is not None:
                pytest.fail(f"training ended (rc {p.returncode}) before iteration {k}: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.02)
        pytest.fail(f"no iteration {k} within {timeout} s")
    finally:
        if p.poll() is None: p.kill(); p.wait()
        log.close()


def _kill_resume_equal(method, tmp_path, iters, eval_every):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    # the uninterrupted reference, in this process through the same command-line function
    cli_main(mkd_train, _argv(method, ref, iters, eval_every))
    k = random.Random(f"{SEED}-{method}").randint(eval_every + 1, iters - 1)
    seen = _kill_when(_argv(method, run, iters, eval_every), run, k)
    before = load_checkpoint(run / 'last.pt')['iter']
    assert 0 < before <= seen
    # --resume auto through the same command-line function (in this process: a fresh interpreter would only add start-up time)
    cli_main(mkd_train, _argv(method, run, iters, eval_every, '--resume', 'auto'))
    assert f"resumed from {run / 'last.pt'} at iteration {before}" in (run / 'log.txt').read_text()
    assert 'resumed from' not in (ref / 'log.txt').read_text()     # one run, one log file
    a, b = load_checkpoint(ref / 'last.pt'), load_checkpoint(run / 'last.pt')
    assert a['iter'] == b['iter'] == iters
    for key in ('method', 'eval_nets', 'optimizer', 'loader', 'best'): _assert_same(a[key], b[key], key)
    ma, mb = (json.loads((d / 'metrics.json').read_text()) for d in (ref, run))
    assert _no_timing(ma) == _no_timing(mb)
    assert _no_timing(_rows(ref)) == _no_timing(_rows(run))   # the log has each iteration once, with the same values
    assert not list(run.glob('.*.tmp')), "stray checkpoint temp files left behind"
    return k, seen, before


def test_kill9_resume_sup(tmp_path):
    k, seen, before = _kill_resume_equal('sup', tmp_path, iters=8, eval_every=4)
    print(f"sup: killed after iteration {seen} (k={k}), resumed from {before}: identical weights and metrics")


@pytest.mark.slow
def test_kill9_resume_mkd(tmp_path):
    k, seen, before = _kill_resume_equal('mkd', tmp_path, iters=8, eval_every=2)
    print(f"mkd: killed after iteration {seen} (k={k}), resumed from {before}: identical weights and metrics")


# ------------------------------------------------------------------ kill -9 during a checkpoint write

_WRITER = r'''
import os, sys, time, torch
from mkd_nb.models import save_checkpoint
path, mib = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:                      # one trial per line: write the old checkpoint, then fork a child that writes the new one
    tag = line.strip()
    save_checkpoint(path, {'gen': tag, 'w': torch.arange(10.)})
    pid = os.fork()
    if pid == 0:
        save_checkpoint(path, {'gen': 'new', 'w': torch.ones(mib * 2**18)}); os._exit(0)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
'''


def test_kill_during_checkpoint_write(tmp_path):
    "A process writing a big checkpoint is SIGKILLed mid-write (at a seeded random fraction), several times."
    target, mib = tmp_path / 'last.pt', 128
    rnd = random.Random(SEED)
    p = subprocess.Popen([sys.executable, '-c', _WRITER, str(target), str(mib)], env=_env(), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = 0
    try:
        for attempt in range(8):
            if done == 3: break
            frac = rnd.uniform(0.05, 0.9)   # kill when the temp file holds this fraction of the new checkpoint
            p.stdin.write(f'old{attempt}\n'); p.stdin.flush()
            line = p.stdout.readline()
            assert line.strip().isdigit(), line + p.stderr.read()
            child, killed_at, t0 = int(line), None, time.time()
            while time.time() - t0 < 60 and killed_at is None:
                for tmp in tmp_path.glob('.last.pt.*.tmp'):
                    try: size = tmp.stat().st_size
                    except FileNotFoundError: continue
                    if size >= frac * mib * 2**20:
                        try: os.kill(child, signal.SIGKILL); killed_at = size
                        except ProcessLookupError: pass
                        break
                time.sleep(0.001)
            status = int(p.stdout.readline())
            ck = load_checkpoint(target)
            if status != signal.SIGKILL:                  # the write finished before the kill landed (a loaded machine): again
                assert status == 0 and ck['gen'] == 'new'; continue
            assert ck['gen'] == f'old{attempt}' and torch.equal(ck['w'], torch.arange(10.))   # the previous checkpoint is intact
            strays = list(tmp_path.glob('.last.pt.*.tmp'))   # the half file never carries the checkpoint's name ...
            assert len(strays) == 1 and strays[0].stat().st_size < mib * 2**20
            with pytest.raises(CheckpointError, match='truncated or corrupt'): load_checkpoint(strays[0])   # ... nor loads
            strays[0].unlink()
            done += 1
            print(f"attempt {attempt}: killed with {killed_at / 2**20:.0f} of ~{mib} MiB written; {target.name} still gives old{attempt}")
    finally:
        p.stdin.close(); p.kill(); p.wait()
    assert done == 3, "could not kill the writer mid-write three times"


# ------------------------------------------------------------------ in-process runs

def _cfg(out, method='sup', **kw):
    base = dict(encoder='resnet18', decoder_channels=16, synthetic_train=8, synthetic_val=2, synthetic_size=40, crop=32,
                batch_size=2, workers=0, threads=1, iters=8, eval_every=4, log_every=1, deterministic=True, out=str(out))
    return make_config(method, **{**base, **kw})


def _sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _spy_saves(tr):
    "Record (iter, sha256 of last.pt) after every successful save."
    saved, orig = [], tr.save
    def save(*a, **k):
        orig(*a, **k); saved.append((tr.it, _sha(tr.out / 'last.pt')))
    tr.save = save
    return saved


def _inject(tr, at, fn):
    "Make the method's step at training iteration `at` (0-based call count) return fn(out)."
    orig, calls = tr.method.step, [0]
    def step(lab, unl):
        out = orig(lab, unl)
        i = calls[0]; calls[0] += 1
        return fn(out) if i == at else out
    tr.method.step = step


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path):
    tr = Trainer(_cfg(tmp_path / 'run'))
    saved = _spy_saves(tr)
    def nan_term(out):
        sup = out.terms['sup'] * float('nan'); return replace(out, loss=sup, terms={**out.terms, 'sup': sup})
    _inject(tr, 5, nan_term)                        # iteration 5 (the 6th step), after the checkpoint at 4
    with pytest.raises(TrainingError, match=r"iteration 5: loss term `sup` is nan"): tr.fit()
    assert saved and saved[-1][0] == 4
    assert _sha(tmp_path / 'run' / 'last.pt') == saved[-1][1]          # byte for byte the last good checkpoint
    ck = load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert ck['iter'] == 4 and all(torch.isfinite(v).all() for v in ck['method'].values() if v.is_floating_point())
    rows = _rows(tmp_path / 'run')
    assert max(r['iter'] for r in rows) == 5 and all(np.isfinite(r['loss']) for r in rows if 'loss' in r)
    # the run can go on from there
    m = Trainer(_cfg(tmp_path / 'run', resume='auto')).fit()
    assert m['iters'] == 8 and m['final']['miou'] is not None


def test_inf_loss_term_named(tmp_path):
    tr = Trainer(_cfg(tmp_path / 'run', iters=4, eval_every=2))
    def inf_term(out):
        sup = out.terms['sup'] + float('inf'); return replace(out, loss=sup, terms={**out.terms, 'sup': sup})
    _inject(tr, 0, inf_term)
    with pytest.raises(TrainingError, match=r"iteration 0: loss term `sup` is inf"): tr.fit()
    assert not (tmp_path / 'run' / 'last.pt').exists()       # nothing garbage was saved


def test_nonfinite_weights_never_checkpointed(tmp_path):
    "A finite loss with an infinite gradient poisons the weights; the step just before an evaluation must not save them."
    tr = Trainer(_cfg(tmp_path / 'run'))
    saved = _spy_saves(tr)
    def inf_grad(out):
        p = next(tr.method.students()[0].parameters())
        s = p.sum()
        return replace(out, loss=out.loss + torch.sqrt(s - s.detach()))   # value 0, gradient +inf
    _inject(tr, 7, inf_grad)                         # the last step before the evaluation at 8
    with pytest.raises(TrainingError, match='non-finite'): tr.fit()
    assert saved[-1][0] == 4 and _sha(tmp_path / 'run' / 'last.pt') == saved[-1][1]
    assert not any('miou' in r and r['iter'] == 8 for r in _rows(tmp_path / 'run'))   # no evaluation of garbage weights


def test_fp16_overflow_step_skipped_and_counted_cpu_emulation(tmp_path):
    """fp16 AMP: a step whose loss overflows is skipped (GradScaler) and counted, not an error. Real fp16 AMP needs CUDA;
    here the same Trainer path runs on CPU with autocast(float16) and an enabled CPU GradScaler."""
    tr = Trainer(_cfg(tmp_path / 'run', amp='off', iters=2, eval_every=2))   # CPU float16 kernels are slow: 2 steps
    tr.dtype, tr.scaler = torch.float16, torch.amp.GradScaler('cpu', enabled=True)
    params = tr.method.students()[0].parameters
    snap = {}
    orig, calls = tr.method.step, [0]
    def step(lab, unl):
        i = calls[0]; calls[0] += 1
        out = orig(lab, unl)
        if i == 1:                                   # the last step: overflows
            snap['before'] = [p.detach().clone() for p in params()]
            out = replace(out, loss=out.loss * float('inf'), terms={**out.terms, 'sup': out.terms['sup'] * float('inf')})
        return out
    tr.method.step = step
    m = tr.fit()
    snap['after'] = [p.detach().clone() for p in params()]
    assert m['iters'] == 2 and m['skipped_steps'] == 1
    assert all(torch.equal(a, b) for a, b in zip(snap['before'], snap['after']))   # the overflowing step changed no weight
    assert tr.scaler.get_scale() < 65536.0                                          # and the loss scale went down
    rows = [r for r in _rows(tmp_path / 'run') if 'loss' in r]
    assert all(np.isfinite(r['loss']) for r in rows), rows                         # no inf/NaN in the log
    ck = load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert ck['skipped'] == 1 and all(torch.isfinite(v).all() for v in ck['method'].values() if v.is_floating_point())


# ------------------------------------------------------------------ output folder

def test_unwritable_output_dir_refused_before_work(tmp_path, capsys, monkeypatch):
    f = tmp_path / 'file.txt'; f.write_text('a file, not a folder')
    out = f / 'run'                                   # below a regular file: no one (not even root) can create it
    built = []
    monkeypatch.setattr(train_mod, 'build_data', lambda *a, **k: built.append(1))
    with pytest.raises(TrainingError, match=f"output folder {out} is not writable"): Trainer(_cfg(out))
    monkeypatch.setattr(sys, 'argv', ['mkd-train', *_argv('sup', out, 4, 2)])
    assert main_train() == 2 and 'mkd-train: error: output folder' in capsys.readouterr().err
    assert not built                                  # refused before any data was read


def test_too_little_space_refused_before_training(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: real(p)._replace(free=5 * 2**20))
    steps = []
    monkeypatch.setattr(Trainer, 'train_step', lambda self, it: steps.append(it))
    with pytest.raises(TrainingError, match=r'has 5 MiB free, a run needs about \d+ MiB'): Trainer(_cfg(tmp_path / 'run'))
    assert not steps and not (tmp_path / 'run' / 'last.pt').exists()


def test_write_failure_during_training_keeps_earlier_files(tmp_path, monkeypatch):
    out = tmp_path / 'run'
    real_save = torch.save
    def full_disk(obj, f, *a, **k):   # the checkpoint write at iteration 8 runs out of space half-way
        if tr.it == 8:
            f.write(b'PK\x03\x04' + b'\0' * 4096)
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(models_mod.torch, 'save', full_disk)
    tr = Trainer(_cfg(out))
    saved = _spy_saves(tr)
    with pytest.raises(TrainingError, match=r"last\.pt.*No space left on device"): tr.fit()
    monkeypatch.setattr(models_mod.torch, 'save', real_save)
    assert [i for i, _ in saved] == [4]
    assert _sha(out / 'last.pt') == saved[0][1] and load_checkpoint(out / 'last.pt')['iter'] == 4
    assert not list(out.glob('.*.tmp'))               # the half-written temp file was removed
    for line in (out / 'metrics.jsonl').read_text().splitlines(): json.loads(line)   # every line parses
    m = Trainer(_cfg(out, resume='auto')).fit()       # space is back: the run finishes from iteration 4
    assert m['iters'] == 8


def test_resume_ignores_and_removes_stray_temp_files(tmp_path):
    out = tmp_path / 'run'
    Trainer(_cfg(out, iters=4, eval_every=2)).fit(until=2)
    good = _sha(out / 'last.pt')
    raw = (out / 'last.pt').read_bytes()
    (out / '.last.pt.abc123.tmp').write_bytes(raw[:len(raw) // 3])   # what a writer killed mid-write leaves
    (out / '.best.pt.def456.tmp').write_bytes(b'')
    tr = Trainer(_cfg(out, iters=4, eval_every=2, resume='auto'))
    assert tr.it == 2 and _sha(out / 'last.pt') == good
    assert not list(out.glob('.*.tmp'))
    assert tr.fit()['iters'] == 4


def test_corrupt_last_checkpoint_is_an_error_not_a_fresh_start(tmp_path, capsys, monkeypatch):
    out = tmp_path / 'run'
    Trainer(_cfg(out, iters=4, eval_every=2)).fit(until=2)
    raw = (out / 'last.pt').read_bytes()
    (out / 'last.pt').write_bytes(raw[:len(raw) // 2])
    with pytest.raises(CheckpointError, match='last.pt: cannot read it: truncated or corrupt'):
        Trainer(_cfg(out, iters=4, eval_every=2, resume='auto'))
    monkeypatch.setattr(sys, 'argv', ['mkd-train', *_argv('sup', out, 4, 2, '--resume', 'auto')])
    code, err = main_train(), capsys.readouterr().err
    assert code == 2 and 'mkd-train: error: checkpoint' in err and 'last.pt' in err and 'Traceback' not in err


# ------------------------------------------------------------------ the dataset changes under a resumed run

def _folder_data(root, n=8, c=3, size=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / 'images').mkdir(parents=True, exist_ok=True); (root / 'masks').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.png')
        Image.fromarray(rng.integers(0, c, (size, size), dtype=np.uint8)).save(root / 'masks' / f'im{i}.png')
    return root


def _fcfg(root, out, **kw):
    return _cfg(out, dataset='folder', root=str(root), num_classes=3, val_split='train', labeled='1/2', iters=4, eval_every=2, **kw)


def test_dataset_changed_under_resume(tmp_path):
    root = _folder_data(tmp_path / 'data')
    out = tmp_path / 'run'
    Trainer(_fcfg(root, out)).fit(until=2)
    # 1. an image and its mask removed
    for d in ('images', 'masks'): shutil.move(root / d / 'im3.png', tmp_path / f'{d}-im3.png')
    with pytest.raises(TrainingError, match='the dataset or split changed since the checkpoint was written'):
        Trainer(_fcfg(root, out, resume='auto'))
    for d in ('images', 'masks'): shutil.move(tmp_path / f'{d}-im3.png', root / d / 'im3.png')
    # 2. a mask replaced by another one (other content, other size)
    Image.fromarray(np.ones((40, 40), np.uint8)).save(root / 'masks' / 'im5.png')
    with pytest.raises(TrainingError, match=r'split checksum [0-9a-f]{12} vs now [0-9a-f]{12}'):
        Trainer(_fcfg(root, out, resume='auto'))
    # 3. a mask removed: that image turns unlabeled, so the split changed
    (root / 'masks' / 'im5.png').unlink()
    with pytest.raises(TrainingError, match='the dataset or split changed since the checkpoint was written'):
        Trainer(_fcfg(root, out, resume='auto'))


def test_split_file_edited_under_resume(tmp_path):
    root = _folder_data(tmp_path / 'data')
    ds = folder(root, num_classes=3)
    lab, unl = make_split(ds.ids, '1/2', 0)
    save_splits(tmp_path / 'split', ds, lab, unl)
    out = tmp_path / 'run'
    Trainer(_fcfg(root, out, split_dir=str(tmp_path / 'split'))).fit(until=2)
    f = tmp_path / 'split' / 'labeled.txt'
    f.write_text(''.join(f.read_text().splitlines(keepends=True)[:-1]))    # one labeled image dropped
    with pytest.raises(TrainingError, match='the dataset or split changed'):
        Trainer(_fcfg(root, out, split_dir=str(tmp_path / 'split'), resume='auto'))
