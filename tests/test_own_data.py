"""A user's own folder (issue 35): labeled images, images without masks, a void value, no val split.

From `mkd-data check` to `mkd-train --method mkd` on the defaults (plus tiny sizes), then `mkd-eval` and `mkd-export` on
the result; the run folder keeps what repeats the run, a slim best.pt, and files that follow the umask."""
import json, os, stat, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mkd_nb.train as train_mod
import mkd_nb.cli as cli
from mkd_nb.data import folder, read_split
from mkd_nb.loader import build_data
from mkd_nb.models import load_checkpoint

VOID = 11


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def own_folder(root, n_masks=12, n_bare=6, n_unlabeled=4, size=32):
    "images/ + masks/ (3 classes, a void border of 11), images without masks in images/ and unlabeled/, no val split."
    rng = np.random.default_rng(0)
    for i in range(n_masks + n_bare + n_unlabeled):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        if i < n_masks:
            m = np.full((size, size), VOID, np.uint8); m[2:-2, 2:-2] = rng.integers(0, 3, (size - 4, size - 4))
            _png(root / 'images' / f'a{i:02d}.png', img); _png(root / 'masks' / f'a{i:02d}.png', m)
        elif i < n_masks + n_bare: _png(root / 'images' / f'b{i:02d}.png', img)
        else: _png(root / 'unlabeled' / 'cam2' / f'u{i:02d}.jpg', img)
    return root


def _has(mod):
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def _main(monkeypatch, entry, argv):
    monkeypatch.setattr(sys, 'argv', ['prog', *map(str, argv)])
    try: return entry() or 0
    except SystemExit as e: return e.code


def test_own_folder_end_to_end(tmp_path, monkeypatch, capsys):
    root = own_folder(tmp_path / 'data')
    # mkd-data check: the void value is suggested, and with it the folder is clean; the unlabeled images are counted
    assert cli.main_data(['check', '--root', str(root), '--num-classes', '3']) == 1
    out = capsys.readouterr().out
    assert f'pass --void {VOID}' in out and '(in 12 of 12 masks)' in out, out
    assert cli.main_data(['check', '--root', str(root), '--num-classes', '3', '--void', str(VOID)]) == 0
    out = capsys.readouterr().out
    assert '12 images with masks, 10 without (unlabeled)' in out and 'OK: no errors' in out, out
    # a refused run (the void value not given) leaves no folder behind
    run = tmp_path / 'run'
    tiny = ['--crop', 32, '--batch-size', 2, '--iters', 6, '--eval-every', 3, '--workers', 0, '--threads', 1,
            '--set', 'decoder_channels=16,log_every=1']
    assert _main(monkeypatch, cli.main_train, ['--method', 'mkd', '--dataset', 'folder', '--root', root, '--num-classes', 3,
                                               '--out', run, *tiny]) == 2
    assert f'label values [{VOID}]' in capsys.readouterr().err and not run.exists()
    # mkd-train --method mkd from the defaults: every image with a mask labeled, 10 % held out for validation
    old = os.umask(0o022)
    try:
        assert _main(monkeypatch, cli.main_train, ['--method', 'mkd', '--dataset', 'folder', '--root', root, '--num-classes', 3,
                                                   '--void', VOID, '--out', run, *tiny]) == 0
    finally: os.umask(old)
    log = (run / 'log.txt').read_text()
    assert 'holding out 3 of the 12 images with masks for validation' in log, log
    assert 'mkd on folder: 9 labeled, 10 unlabeled (10 without masks), 3 validation' in log, log
    ds = folder(root, num_classes=3, void=VOID)
    val = read_split(run / 'splits' / 'val.txt', ds)
    lab = read_split(run / 'splits' / 'labeled.txt', ds)
    unl = read_split(run / 'splits' / 'unlabeled.txt', ds)
    assert len(val) == 3 and len(lab) == 9 and len(unl) == 10 and not set(val) & set(lab)
    assert all(k.startswith('images/a') for k in lab + val) and sum(k.startswith('unlabeled/') for k in unl) == 4
    for f in ('last.pt', 'best.pt', 'splits/labeled.txt', 'splits/val.txt'):
        assert stat.S_IMODE((run / f).stat().st_mode) == 0o644, f                 # follows the umask
    # best.pt: only what evaluation and deployment need, a fraction of last.pt
    best, last = load_checkpoint(run / 'best.pt'), load_checkpoint(run / 'last.pt')
    assert 'method' not in best and 'optimizer' not in best and best['class_names'] == last['class_names']
    assert (run / 'best.pt').stat().st_size < 0.5 * (run / 'last.pt').stat().st_size
    # the slim best.pt serves the gallery and MGD's teacher loading as the full one did
    from mkd_nb.viewer import save_gallery
    from mkd_nb.mgd import load_teacher
    assert save_gallery(run / 'best.pt', run / 'gallery.png', n=2, split='val').read_bytes()[:4] == b'\x89PNG'
    assert sum(p.numel() for p in load_teacher(run / 'best.pt', 3).parameters()) > 0
    # mkd-eval finds the held-out images by itself
    assert _main(monkeypatch, cli.main_eval, ['--ckpt', run / 'best.pt', '--quiet', '--device', 'cpu']) == 0
    rep = json.loads((run / 'eval_val.json').read_text())
    assert rep['n_images'] == 3 and 0 <= rep['miou'] <= 100
    # mkd-export: a deployable model of the evaluated network, checked against PyTorch
    formats = ['torchscript'] + (['onnx'] if _has('onnxruntime') and _has('onnx') else [])
    for fmt in formats:
        assert _main(monkeypatch, cli.main_export, ['--ckpt', run / 'best.pt', '--format', fmt, '--size', 32, 64, '--runs', 2,
                                                    '--json-out', run / f'export_{fmt}.json']) == 0
        res = json.loads((run / f'export_{fmt}.json').read_text())
        assert res['max_abs_diff'] < 1e-3 and res['size'] == [32, 64] and Path(res['path']).is_file()
    assert 'max abs diff' in capsys.readouterr().out
    # the same run again repeats the split (resume: nothing left to do, same checksum)
    d2 = build_data(train_mod.make_config('mkd', dataset='folder', root=str(root), num_classes=3, void=VOID,
                                                    labeled='all', split_dir=str(run / 'splits')), log=None)
    assert d2['lab_ids'] == lab and d2['val_ids'] == val
