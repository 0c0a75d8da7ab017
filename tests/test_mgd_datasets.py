"""`mkd-train --method mgd` from teacher checkpoints on every kind of dataset (the MGD issue's "works on every dataset").

For each dataset: two one-iteration teacher runs of `mkd-train` (deep: ResNet-34; wide: ResNet-18 with a wider decoder,
so that student and wide-teacher features differ in size as in the real setting), then an MGD run that reads both
`last.pt` files. CamVid is the real copy (a few images through split files); VOC and Cityscapes are tiny trees in their
published layouts; `folder` is images/ + masks/. The MGD run must finish, log its three distillation terms, evaluate, and
record which teachers it read (path and weight fingerprint, as a resumed run checks them). That training never changes the
teachers' weights is tested bit for bit on the method in `nbs/08a_mgd.ipynb`, where the synthetic data's run also is. One
dataset goes through the console entry point, the way a user types it."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

from mkd_nb.data import VOC_INFO
from mkd_nb.mgd import load_teacher, weights_fingerprint
from mkd_nb.models import load_checkpoint
from mkd_nb.train import mkd_train
from mkd_nb.cli import main_train

TINY = dict(crop=32, batch_size=2, iters=1, eval_every=1, workers=0, labeled='1/2', threads=1)


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def _voc(root):
    d, rng = root / 'VOCdevkit' / 'VOC2012', np.random.default_rng(1)
    ids = [f'2007_0000{i:02d}' for i in range(5)]
    for i in ids:
        _png(d / f'JPEGImages/{i}.jpg', rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        m = np.zeros((24, 32), np.uint8); m[4:20, 8:24] = rng.integers(1, 21); m[4, 8:24] = 255
        p = Image.fromarray(m, 'P'); p.putpalette(sum(VOC_INFO.palette, ()) + (0, 0, 0) * 235)
        (d / 'SegmentationClass').mkdir(exist_ok=True); p.save(d / f'SegmentationClass/{i}.png')
    (d / 'ImageSets/Segmentation').mkdir(parents=True)
    (d / 'ImageSets/Segmentation/train.txt').write_text('\n'.join(ids[:4]) + '\n')
    (d / 'ImageSets/Segmentation/val.txt').write_text(ids[4] + '\n')
    return dict(dataset='voc', root=str(root))


def _cityscapes(root):
    rng = np.random.default_rng(2)
    for split, city, k in (('train', 'aachen', 3), ('train', 'bremen', 1), ('val', 'lindau', 1)):
        for i in range(k):
            stem = f'{city}_{i:06d}_000019'
            _png(root / f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png', rng.integers(0, 255, (24, 48, 3), dtype=np.uint8))
            _png(root / f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png',
                 rng.choice(np.array([7, 8, 11, 21, 23, 24, 26, 0], np.uint8), (24, 48)))
    return dict(dataset='cityscapes', root=str(root))


def _folder(root):
    rng = np.random.default_rng(3)
    for i in range(5):
        _png(root / f'images/im{i}.png', rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
        _png(root / f'masks/im{i}.png', rng.integers(0, 4, (24, 24), dtype=np.uint8))
    return dict(dataset='folder', root=str(root), num_classes=4, val_split='train')


def _camvid(root, camvid):
    "The real CamVid copy, restricted to 6 training and 2 val images by split files (paths relative to the copy)."
    lines = lambda split, n: [l for l in (camvid / f'{split}.txt').read_text().splitlines() if l.strip()][:n]
    (root / 'train.txt').write_text('\n'.join(lines('train', 6)) + '\n')
    (root / 'val.txt').write_text('\n'.join(lines('val', 2)) + '\n')
    return dict(dataset='camvid', root=str(camvid), train_split=str(root / 'train.txt'), val_split=str(root / 'val.txt'))


def _teachers(data, tmp):
    deep = mkd_train(method='sup', encoder='resnet34', out=str(tmp / 'deep'), set=_set(data, decoder_channels=16), **_flags(data))
    wide = mkd_train(method='sup', encoder='resnet18', out=str(tmp / 'wide'), set=_set(data, decoder_channels=32), **_flags(data))
    assert deep['iters'] == wide['iters'] == 1
    return tmp / 'deep' / 'last.pt', tmp / 'wide' / 'last.pt'


def _flags(data):
    "The dataset fields mkd_train takes as flags; the others go through --set."
    return dict(TINY, dataset=data['dataset'], root=data['root'])


def _set(data, **kw):
    extra = {k: v for k, v in data.items() if k not in ('dataset', 'root')}
    return ','.join(f'{k}={v}' for k, v in {**extra, **kw, 'log_every': 1}.items())


def _check_mgd_run(run, deep, wide):
    rows = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines() if l.strip()]
    assert {'sup', 'pixel', 'img', 'region'} <= set(rows[0]), rows[0]
    assert any('miou' in r for r in rows)
    seen = load_checkpoint(run / 'last.pt')['method']['_extra_state']['teachers']
    C = load_checkpoint(deep)['num_classes']
    for role, path in (('deep', deep), ('wide', wide)):
        assert seen[role]['path'] == str(path)
        assert seen[role]['fingerprint'] == weights_fingerprint(load_teacher(path, C, role))


@pytest.mark.parametrize('kind', ['voc', 'cityscapes', 'folder'])      # synthetic: end to end in nbs/08a_mgd.ipynb
def test_mgd_from_checkpoints(kind, tmp_path):
    data = dict(voc=_voc, cityscapes=_cityscapes, folder=_folder)[kind](tmp_path / 'data')
    deep, wide = _teachers(data, tmp_path)
    m = mkd_train(method='mgd', teacher_deep=str(deep), teacher_wide=str(wide), out=str(tmp_path / 'mgd'),
                  set=_set(data, decoder_channels=16), **_flags(data))
    assert m['method'] == 'mgd' and m['iters'] == 1
    _check_mgd_run(tmp_path / 'mgd', deep, wide)


def test_mgd_console_script_on_camvid(camvid_root, tmp_path, monkeypatch):
    data = _camvid(tmp_path, camvid_root)
    deep, wide = _teachers(data, tmp_path)
    argv = ['mkd-train', '--method', 'mgd', '--teacher-deep', deep, '--teacher-wide', wide, '--dataset', 'camvid',
            '--root', camvid_root, '--crop', 32, '--batch-size', 2, '--iters', 1, '--eval-every', 1, '--workers', 0,
            '--labeled', '1/2', '--threads', 1, '--out', tmp_path / 'mgd', '--set', _set(data, decoder_channels=16)]
    monkeypatch.setattr(sys, 'argv', list(map(str, argv)))
    assert main_train() == 0
    _check_mgd_run(tmp_path / 'mgd', deep, wide)
    labeled = (tmp_path / 'mgd' / 'splits' / 'labeled.txt').read_text().splitlines()
    assert len(labeled) == 3 and all(l.startswith('train/') for l in labeled), labeled     # half of the 6-image pool
