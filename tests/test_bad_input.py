"""Bad input (issue 9): broken data files, impossible or contradictory configurations, foreign or hostile checkpoints.

Each case goes through a user-facing path (mkd-train / mkd-eval / mkd-data entry points, or `build_data` / `Trainer` /
`load_checkpoint` as the commands call them) and checks that the error names the file or the config field. Property-based
tests (hypothesis) feed the mask, image and split readers arbitrary content: they return the right values or raise `DataError`
naming the file, never anything else. RELIABILITY.md at the repo top summarises the outcomes."""
import io, json, os, pickle, re, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import mkd_nb
import mkd_nb.models as models_mod
import mkd_nb.cli as cli
from mkd_nb.core import ConfigError, make_config
from mkd_nb.data import DataError, get_dataset, folder, read_split, write_split, check_dataset, save_splits, make_split
from mkd_nb.models import (CKPT_FORMAT, CheckpointError, build_model, eval_model_from_checkpoint, load_checkpoint,
                           load_encoder_weights, save_checkpoint)
from mkd_nb.loader import SemiLoader
from mkd_nb.loader import build_data
from mkd_nb.train import Trainer, TrainingError

REPO = Path(__file__).resolve().parents[1]
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def _folder_data(root, n=6, c=3, size=24):
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / 'images' / f'im{i}.png', rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        _png(root / 'masks' / f'im{i}.png', rng.integers(0, c, (size, size), dtype=np.uint8))
    return root


def _fcfg(root, tmp, method='sup', **kw):
    base = dict(dataset='folder', root=str(root), num_classes=3, val_split='train', labeled='1/2', encoder='resnet18',
                decoder_channels=16, crop=32, batch_size=2, workers=0, threads=1, iters=2, eval_every=2, out=str(tmp / 'run'))
    return make_config(method, **{**base, **kw})


def _main(monkeypatch, capsys, entry, argv):
    "Run a console entry point in-process as its console script does (`sys.exit(entry())`); returns (exit status, stderr)."
    monkeypatch.setattr(sys, 'argv', [entry.__module__, *map(str, argv)])
    with pytest.raises(SystemExit) as ex: sys.exit(entry())
    return ex.value.code, capsys.readouterr().err


# ================================================================== data files

def test_broken_files_named_by_build_data(tmp_path):
    root = _folder_data(tmp_path / 'data', n=8)
    raw = (root / 'images' / 'im1.png').read_bytes()
    (root / 'images' / 'im1.png').write_bytes(raw[:len(raw) // 2])                 # truncated image
    (root / 'images' / 'im2.png').write_text('this is not an image\n')             # not an image at all
    (root / 'masks' / 'im3.png').unlink()                                          # no mask: unlabeled
    _png(root / 'masks' / 'im4.png', np.zeros((20, 24), np.uint8))                 # size mismatch
    _png(root / 'masks' / 'im5.png', np.full((24, 24), 7, np.uint8))               # label 7 with 3 classes
    with pytest.raises(DataError) as ex: build_data(_fcfg(root, tmp_path))
    msg = str(ex.value)
    assert 'pass --skip-bad' in msg
    for f, what in (('images/im1.png', 'truncated'), ('images/im2.png', 'unreadable'),
                    ('masks/im4.png', 'size mismatch: mask is 24x20 but image images/im4.png is 24x24'),
                    ('masks/im5.png', 'label values [7] outside [0, 3)')):
        assert re.search(re.escape(f) + '.*' + re.escape(what), msg), (f, what, msg)
    for good in ('im0.png', 'im3.png', 'im6.png', 'im7.png'): assert good not in msg
    # --skip-bad trains on the rest and says which files it left out
    d = build_data(_fcfg(root, tmp_path, skip_bad=True))
    assert sorted(d['lab_ids'] + d['unl_ids']) == ['images/im0.png', 'images/im3.png', 'images/im6.png', 'images/im7.png']
    assert 'images/im3.png' in d['unl_ids']                                        # the image without a mask


def test_mkd_data_check_in_process(tmp_path, capsys):
    root = _folder_data(tmp_path / 'data', n=3)
    _png(root / 'masks' / 'im1.png', np.full((24, 24), 200, np.uint8))
    assert cli.main_data(['check', '--dataset', 'folder', '--root', str(root), '--num-classes', '3']) == 1
    out = capsys.readouterr().out
    assert 'ERROR masks/im1.png: label values [200] outside [0, 3)' in out and 'im0.png' not in out.replace('im0.png:', '')


def test_size_mismatch_and_missing_mask_at_read_time(tmp_path):
    "Even without check_dataset (a file changed after the check), reading the sample names the file."
    root = _folder_data(tmp_path / 'data', n=2)
    ds = folder(root, num_classes=3)
    _png(root / 'masks' / 'im0.png', np.zeros((10, 24), np.uint8))
    with pytest.raises(DataError, match=r'masks/im0.png: mask is 24x10 but image images/im0.png is 24x24'): ds[0]
    (root / 'masks' / 'im1.png').unlink()
    with pytest.raises(DataError, match=r'masks/im1.png: missing mask'): ds[1]


def _image_bytes(mode):
    "A 4x3 image of `mode` with known pixels, as saved bytes, its suffix and the expected RGB array."
    if mode == 'CMYK':
        im = Image.new('CMYK', (4, 3), (0, 0, 0, 0)); buf = io.BytesIO(); im.save(buf, 'JPEG', quality=95)
        return buf.getvalue(), '.jpg', None
    if mode == 'I;16':
        a = np.array([[0, 65535, 32768, 257]] * 3, np.uint16)
        im, want = Image.fromarray(a), np.repeat(np.array([[0, 255, 128, 1]] * 3, np.uint8)[..., None], 3, 2)
    elif mode == 'L':
        a = np.array([[0, 50, 100, 255]] * 3, np.uint8); im, want = Image.fromarray(a, 'L'), np.repeat(a[..., None], 3, 2)
    elif mode == '1':
        a = np.array([[0, 255, 0, 255]] * 3, np.uint8); im = Image.fromarray(a, 'L').convert('1'); want = np.repeat(a[..., None], 3, 2)
    elif mode in ('RGBA', 'LA'):
        a = np.zeros((3, 4, 4), np.uint8); a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 10, 20, 30, 0
        im = Image.fromarray(a, 'RGBA'); want = a[..., :3]
        if mode == 'LA': im = im.convert('LA'); want = np.repeat(np.asarray(im)[..., :1], 3, 2)
    elif mode == 'P':
        im = Image.frombytes('P', (4, 3), bytes([0, 1, 2, 1] * 3)); im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        want = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 255, 0]]] * 3, np.uint8)
    elif mode == 'RGB':
        want = np.arange(36, dtype=np.uint8).reshape(3, 4, 3); im = Image.fromarray(want, 'RGB')
    buf = io.BytesIO(); im.save(buf, 'PNG')
    return buf.getvalue(), '.png', want


@pytest.mark.parametrize('mode', ['L', '1', 'LA', 'RGBA', 'P', 'I;16', 'RGB', 'CMYK'])
def test_any_image_mode_reads_as_rgb(tmp_path, mode):
    raw, suffix, want = _image_bytes(mode)
    (tmp_path / 'images').mkdir(); (tmp_path / 'images' / f'x{suffix}').write_bytes(raw)
    _png(tmp_path / 'masks' / 'x.png', np.zeros((3, 4), np.uint8))
    ds = folder(tmp_path, num_classes=2)
    img, mask = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 3, 4) and mask.shape == (3, 4)
    if want is not None: assert np.array_equal(img.permute(1, 2, 0).numpy(), want), (mode, img)
    if mode != 'RGB': assert any('converted to RGB' in p for _, p in check_dataset(ds).notes)


# ------------------------------------------------------------------ property-based: masks, images, split files

def _mask_image(a, mode):
    if mode == 'P':
        im = Image.frombytes('P', (a.shape[1], a.shape[0]), a.astype(np.uint8).tobytes()); im.putpalette(list(range(256)) * 3)
        return im
    return Image.fromarray(a.astype(np.uint16 if mode == 'I;16' else np.uint8))


@PROPS
@given(h=st.integers(1, 5), w=st.integers(1, 5), C=st.integers(2, 12), mode=st.sampled_from(['L', 'P', 'I;16']), data=st.data())
def test_mask_reader_property(h, w, C, mode, data):
    top = 65535 if mode == 'I;16' else 255
    vals = data.draw(st.lists(st.one_of(st.integers(0, C - 1), st.just(255), st.integers(0, top)), min_size=h * w, max_size=h * w))
    a = np.array(vals, np.int64).reshape(h, w)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _png(root / 'images' / 'x.png', np.zeros((h, w, 3), np.uint8))
        mpath = root / 'masks' / 'x.png'; mpath.parent.mkdir(parents=True, exist_ok=True); _mask_image(a, mode).save(mpath)
        ds = folder(root, num_classes=C)
        bad = sorted({v for v in vals if not (v < C or v == 255)})
        if not bad:
            img, m = ds[0]
            assert m.dtype == torch.int64 and np.array_equal(m.numpy(), a)
            assert check_dataset(ds).ok
        else:
            with pytest.raises(DataError) as ex: ds[0]
            assert str(mpath) in str(ex.value) and f"label values {bad[:8]}" in str(ex.value)
            rep = check_dataset(ds)
            assert not rep.ok and rep.errors[0][0] == 'masks/x.png'


_GOOD_PNG = (lambda b: (Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(b, 'PNG'), b.getvalue())[1])(io.BytesIO())


@PROPS
@given(blob=st.one_of(st.binary(max_size=200), st.integers(0, len(_GOOD_PNG) - 1).map(lambda k: _GOOD_PNG[:k]),
                      st.binary(max_size=64).map(lambda b: _GOOD_PNG[:40] + b)),
       which=st.sampled_from(['images', 'masks']))
def test_garbage_file_property(blob, which):
    "Any bytes in place of an image or a mask: the exact picture, or a DataError naming that file."
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _png(root / 'images' / 'x.png', np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
        _png(root / 'masks' / 'x.png', np.zeros((4, 4), np.uint8))
        (root / which / 'x.png').write_bytes(blob)
        ds = folder(root, num_classes=256 if which == 'masks' else 2)
        try: img, m = ds[0]
        except DataError as e: assert f"{which}/x.png" in str(e), str(e)
        else:   # only possible when the bytes still decode to the whole picture
            if which == 'images': assert np.array_equal(img.permute(1, 2, 0).numpy(), np.arange(48).reshape(4, 4, 3))
        rep = check_dataset(ds)
        assert all(f == f"{which}/x.png" for f, _ in rep.errors)


_TOKEN = st.text(alphabet=st.characters(blacklist_categories=('Cs', 'Zs', 'Zl', 'Zp', 'Cc')), min_size=1, max_size=12)


@PROPS
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.one_of(_TOKEN, st.sampled_from(['images/im0.png masks/im0.png', '# comment', '', 'a b c', 'im1'])),
                               max_size=8).map('\n'.join)))
def test_split_reader_property(text):
    "Arbitrary text as a split file: ids that come from its lines, or a DataError naming the file (and the line)."
    with tempfile.TemporaryDirectory() as d:
        root = _folder_data(Path(d) / 'data', n=3, size=4)
        f = Path(d) / 'split.txt'; f.write_text(text, encoding='utf-8')
        try: ids = read_split(f)
        except DataError as e: assert str(f) in str(e) and 'line' in str(e); ids = None
        if ids is not None:
            assert all(i and not any(c.isspace() for c in i) and i in text for i in ids)
            assert len(ids) <= len(text.splitlines())
        ds = folder(root, num_classes=3)
        try: got = read_split(f, ds)
        except DataError as e: assert str(f) in str(e), str(e)
        else: assert set(got) <= set(ds.ids)
        try: sds = get_dataset('folder', root, str(f), num_classes=3)    # the split file as a dataset split (--val-split)
        except DataError as e: assert str(f) in str(e), str(e)
        else: check_dataset(sds)                                          # reports, never raises


@PROPS
@given(blob=st.binary(max_size=200))
def test_split_reader_binary_property(blob):
    with tempfile.TemporaryDirectory() as d:
        root = _folder_data(Path(d) / 'data', n=2, size=4)
        f = Path(d) / 'split.txt'; f.write_bytes(blob)
        for ds in (None, folder(root, num_classes=3)):
            try: ids = read_split(f, ds)
            except DataError as e: assert str(f) in str(e), str(e)
            else: assert isinstance(ids, list)


@PROPS
@given(pick=st.lists(st.integers(0, 5), unique=True, max_size=6))
def test_split_roundtrip_property(pick):
    with tempfile.TemporaryDirectory() as d:
        ds = folder(_folder_data(Path(d) / 'data', n=6, size=4), num_classes=3)
        ids = [ds.ids[i] for i in pick]
        for fmt in ('pairs', 'ids'):
            write_split(Path(d) / f'{fmt}.txt', ds, ids, fmt=fmt)
            assert read_split(Path(d) / f'{fmt}.txt', ds) == ids


# ------------------------------------------------------------------ splits

def _split_dir(tmp, root, lab, unl):
    sd = tmp / 'split'; sd.mkdir(exist_ok=True)
    (sd / 'labeled.txt').write_text(''.join(i + '\n' for i in lab)); (sd / 'unlabeled.txt').write_text(''.join(i + '\n' for i in unl))
    return sd


def test_empty_and_overlapping_splits(tmp_path):
    root = _folder_data(tmp_path / 'data', n=6)
    ids = [f'images/im{i}.png' for i in range(6)]
    sd = _split_dir(tmp_path, root, [], ids)
    with pytest.raises(DataError, match=f"{sd}: the labeled split is empty"): build_data(_fcfg(root, tmp_path, split_dir=str(sd)))
    sd = _split_dir(tmp_path, root, ids[:3], ids[2:])
    with pytest.raises(DataError, match=r"1 images are both labeled and unlabeled, e.g. images/im2.png"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))
    sd = _split_dir(tmp_path, root, ids[:2], [])                     # no unlabeled images: fine for sup ...
    assert build_data(_fcfg(root, tmp_path, split_dir=str(sd)))['unlabeled'] is None
    with pytest.raises(ConfigError, match=r"data.labeled`: method mkd needs unlabeled images"):   # ... not for mkd
        build_data(_fcfg(root, tmp_path, 'mkd', split_dir=str(sd)))
    with pytest.raises(ConfigError, match=r"data.labeled`: method cps needs unlabeled images"):
        build_data(_fcfg(root, tmp_path, 'cps', labeled='all'))
    (tmp_path / 'empty.txt').write_text('# nothing here\n\n')
    with pytest.raises(DataError, match=f"{tmp_path / 'empty.txt'}: empty split file"):
        build_data(_fcfg(root, tmp_path, val_split=str(tmp_path / 'empty.txt')))
    (tmp_path / 'nothing' / 'images').mkdir(parents=True)
    with pytest.raises(DataError, match='empty split: no images found'): build_data(_fcfg(tmp_path / 'nothing', tmp_path))
    sd = _split_dir(tmp_path, root, ids[:2] + ['images/im99.png'], ids[3:])
    with pytest.raises(DataError, match=r"labeled.txt: line 3: 'images/im99.png' is not in the folder dataset"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))


def test_unreadable_split_files(tmp_path):
    root = _folder_data(tmp_path / 'data', n=4)
    sd = tmp_path / 'split'; sd.mkdir()
    (sd / 'labeled.txt').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary')     # not text
    with pytest.raises(DataError, match=f"{sd / 'labeled.txt'}: not a text split file"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))
    (sd / 'labeled.txt').unlink(); (sd / 'labeled.txt').mkdir()                       # a folder in its place
    with pytest.raises(DataError, match=f"{sd / 'labeled.txt'}: is a folder, not a split file"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))
    (sd / 'labeled.txt').rmdir()                                                        # missing
    with pytest.raises(DataError, match=f"{sd / 'labeled.txt'}: split file not found"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))
    (sd / 'labeled.txt').write_text('images/im0.png masks/im0.png extra\n')            # three fields
    with pytest.raises(DataError, match="line 1: expected 'image mask' or one id, got 3 fields"):
        build_data(_fcfg(root, tmp_path, split_dir=str(sd)))


# ================================================================== configuration

BAD_CONFIGS = [   # (argv, the field the error must name)
    (['--set', 'bogus=1'], 'bogus'),
    (['--set', 'train.iterz=3'], 'train.iterz'),
    (['--iters', '-5'], 'train.iters'),
    (['--set', 'iters=ten'], 'train.iters'),
    (['--eval-every', '0'], 'train.eval_every'),
    (['--set', 'log_every=0'], 'train.log_every'),
    (['--lr', '-0.1'], 'train.lr'),
    (['--set', 'warmup_iters=50', '--iters', '10'], 'train.warmup_iters'),
    (['--amp', 'fp8'], 'train.amp'),
    (['--method', 'unimatch', '--set', 'conf_thresh=1.5'], 'method.conf_thresh'),
    (['--method', 'unimatch', '--set', 'conf_thresh=-0.1'], 'method.conf_thresh'),
    (['--method', 'mt', '--set', 'ema_momentum=1.0'], 'method.ema_momentum'),
    (['--method', 'cps', '--scl-weight', '0.5'], 'method.scl_weight'),
    (['--method', 'mgd'], 'method.teacher_deep'),
    (['--method', 'mkd', '--teacher-deep', 'deep.pt'], 'method.teacher_deep'),
    (['--method', 'mkd', '--set', 'lambda_cps=-1'], 'method.lambda_cps'),
    (['--method', 'nope'], 'method.name'),
    (['--batch-size', '0'], 'data.batch_size'),
    (['--labeled', '2/1'], 'data.labeled'),
    (['--labeled', 'lots'], 'data.labeled'),
    (['--crop', '8'], 'data.crop'),
    (['--dataset', 'imagenet'], 'data.dataset'),
    (['--dataset', 'camvid'], 'data.root'),
    (['--set', 'scale_min=3'], 'data.scale_min'),
    (['--arch', 'segformer'], 'model.arch'),
]


@pytest.mark.parametrize('argv,field', BAD_CONFIGS, ids=[' '.join(a) for a, _ in BAD_CONFIGS])
def test_bad_config_refused_before_work(argv, field, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'run'
    code, err = _main(monkeypatch, capsys, cli.main_train, ['--out', out, '--workers', '0', *argv])
    assert code == 2 and f"mkd-train: error: config field `{field}`" in err, err
    assert 'Traceback' not in err and not out.exists()    # refused before the output folder was even made


@pytest.mark.parametrize('argv,field', [
    (['--num-classes', '5'], 'data.num_classes'),                       # synthetic data has 6
    (['--method', 'mkd', '--labeled', 'all'], 'data.labeled'),          # nothing left to be unlabeled
    (['--set', 'unlabeled_dir=/somewhere'], 'data.unlabeled_dir'),      # synthetic scenes have no files to add to
    (['--encoder', 'resnet9999'], 'model.encoder'),
])
def test_config_data_contradictions_refused_before_training(argv, field, tmp_path, monkeypatch, capsys):
    steps = []
    monkeypatch.setattr(Trainer, 'train_step', lambda self, it: steps.append(it))
    code, err = _main(monkeypatch, capsys, cli.main_train,
                      ['--out', tmp_path / 'run', '--workers', '0', '--set', 'synthetic_train=8,synthetic_val=2,synthetic_size=32', *argv])
    assert code == 2 and f"config field `{field}`" in err, err
    assert not steps and not (tmp_path / 'run' / 'last.pt').exists()


def test_bad_config_console_script(tmp_path):
    "The real `mkd-train` command: one line on stderr naming the field, exit status 2, no traceback."
    exe = Path(sys.executable).parent / 'mkd-train'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'mkd_nb.train']
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    r = subprocess.run(cmd + ['--method', 'unimatch', '--set', 'conf_thresh=2', '--out', str(tmp_path / 'run')],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == \
        ["mkd-train: error: config field `method.conf_thresh`: tau must be in [0, 1], got 2"], r.stderr
    assert not (tmp_path / 'run').exists()


def test_crop_larger_than_images_pads_and_ignores_padding(tmp_path):
    "Decision: a crop larger than the images is allowed; the weak view pads (image 0, mask 255, valid False) and losses skip it."
    cfg = make_config('mt', encoder='resnet18', decoder_channels=16, synthetic_train=8, synthetic_val=2, synthetic_size=24,
                      crop=48, scale_min=1.0, scale_max=1.0, batch_size=2, workers=0, threads=1, iters=2, eval_every=2,
                      out=str(tmp_path / 'run'))
    d = build_data(cfg)
    lab, unl = next(iter(SemiLoader(d['labeled'], d['unlabeled'], cfg.data, seed=0)))
    assert lab['img'].shape[-2:] == (48, 48)
    pad = 48 * 48 - 24 * 24
    assert ((lab['mask'] == 255).flatten(1).sum(1) >= pad).all()
    assert ((~unl['valid']).flatten(1).sum(1) == pad).all()
    m = Trainer(cfg).fit()
    assert m['iters'] == 2 and np.isfinite(m['final']['miou'])


# ================================================================== checkpoints

@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    "A small real checkpoint (random deeplabv3plus/resnet18, 6 synthetic classes) and its payload."
    torch.manual_seed(0)
    cfg = make_config('sup', encoder='resnet18', decoder_channels=16, synthetic_val=2, synthetic_size=32, crop=32)
    net = build_model(cfg.model, 6).eval()
    p = {'config': cfg.to_dict(), 'num_classes': 6, 'class_names': [f'c{i}' for i in range(6)], 'iter': 3,
         'eval_nets': [net.state_dict()], 'method': {}, 'optimizer': {}, 'scaler': {}, 'loader': {'step': 3}, 'rng': {},
         'best': {'miou': 0.0, 'iter': 3}, 'split': {'checksum': 'x', 'labeled': 1, 'unlabeled': 1}}
    d = tmp_path_factory.mktemp('ck')
    return save_checkpoint(d / 'good.pt', p), p


def _variant(tmp_path, payload, name, **change):
    return save_checkpoint(tmp_path / name, {**payload, **change})


class _Evil:
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_with_weights_only(ckpt, monkeypatch, tmp_path):
    calls, real = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    load_checkpoint(ckpt[0])
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'enc.pt')
    net = build_model(make_config('sup', encoder='resnet18', decoder_channels=16).model, 2)
    with pytest.raises(ValueError): load_encoder_weights(net, tmp_path / 'enc.pt')   # wrong keys; read safely all the same
    assert len(calls) == 2 and all(k.get('weights_only') is True for k in calls)
    # and no torch.load anywhere in the package without weights_only=True
    for f in (REPO / 'mkd_nb').glob('*.py'):
        for m in re.finditer(r'torch\.load\(([^)]*)\)', f.read_text()):
            assert 'weights_only=True' in m.group(1), f"{f.name}: {m.group(0)}"


@pytest.mark.parametrize('how', ['torch.save', 'raw pickle'])
def test_crafted_pickle_does_not_execute(how, tmp_path, monkeypatch, capsys):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pt'
    payload = {'format': CKPT_FORMAT, 'version': mkd_nb.__version__, 'x': _Evil(marker)}
    if how == 'torch.save': torch.save(payload, evil)
    else: evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match='evil.pt'): load_checkpoint(evil)
    code, err = _main(monkeypatch, capsys, cli.main_eval, ['--ckpt', evil, '--quiet'])      # mkd-eval
    assert code == 2 and 'evil.pt' in err and 'Traceback' not in err
    code, err = _main(monkeypatch, capsys, cli.main_train, ['--out', tmp_path / 'run', '--workers', '0', '--resume', evil,
                                                             '--set', 'synthetic_train=8,synthetic_val=2,synthetic_size=32'])
    assert code == 2 and 'evil.pt' in err and 'Traceback' not in err                        # mkd-train --resume
    net = build_model(make_config('sup', encoder='resnet18', decoder_channels=16).model, 2)
    with pytest.raises(ValueError, match='evil.pt'): load_encoder_weights(net, evil)          # --encoder-weights
    assert not marker.exists(), "the pickle payload ran"
    if how == 'torch.save': assert 'refused to unpickle' in err


def test_foreign_checkpoints_clear_errors(ckpt, tmp_path, monkeypatch, capsys):
    path, p = ckpt
    cases = [
        (_variant(tmp_path, p, 'unet.pt', config={**p['config'], 'model': {**p['config']['model'], 'arch': 'unet'}}),
         'does not fit unet/resnet18'),
        (_variant(tmp_path, p, 'r34.pt', config={**p['config'], 'model': {**p['config']['model'], 'encoder': 'resnet34'}}),
         'does not fit deeplabv3plus/resnet34'),
        (_variant(tmp_path, p, 'version.pt', version='9.0.0'), 'written by mkd_nb 9.0.0, this is mkd_nb'),
        (_variant(tmp_path, p, 'format.pt', format='someone-else-1'), "not an mkd_nb checkpoint (format 'someone-else-1'"),
    ]
    torch.save(p['eval_nets'][0], tmp_path / 'bare.pt')
    cases.append((tmp_path / 'bare.pt', 'not an mkd_nb checkpoint'))
    (tmp_path / 'empty.pt').write_bytes(b'')
    cases.append((tmp_path / 'empty.pt', 'truncated or corrupt'))
    cases.append((tmp_path, 'is a folder, not a checkpoint file'))
    for f, want in cases:
        code, err = _main(monkeypatch, capsys, cli.main_eval, ['--ckpt', f, '--quiet', '--device', 'cpu'])
        assert code == 2 and want in err and str(f) in err and 'Traceback' not in err, (f.name, err)
    f = _variant(tmp_path, p, 'classes.pt', num_classes=5)     # weights for 6 classes, the entry says 5
    with pytest.raises(CheckpointError, match=r'classes.pt: eval net 0 has 6 output classes but the checkpoint says num_classes=5'):
        eval_model_from_checkpoint(f)


def test_checkpoint_class_count_vs_data(ckpt, tmp_path, monkeypatch, capsys):
    path, p = ckpt
    f = _variant(tmp_path, p, 'five.pt', num_classes=5, eval_nets=[
        build_model(make_config('sup', encoder='resnet18', decoder_channels=16).model, 5).state_dict()])
    code, err = _main(monkeypatch, capsys, cli.main_eval, ['--ckpt', f, '--quiet', '--device', 'cpu'])
    assert code == 2 and 'config field `data.num_classes`: synthetic has 6 classes, not 5' in err, err


def test_resume_from_other_architecture_or_classes(tmp_path):
    base = dict(encoder='resnet18', decoder_channels=16, synthetic_train=8, synthetic_val=2, synthetic_size=32, crop=32,
                batch_size=2, workers=0, threads=1, iters=2, eval_every=2)
    Trainer(make_config('sup', **base, out=str(tmp_path / 'a'))).fit()
    with pytest.raises(TrainingError, match=r"configuration differs \(model.arch: checkpoint 'deeplabv3plus' vs now 'unet'"):
        Trainer(make_config('sup', **base, arch='unet', out=str(tmp_path / 'b'), resume=str(tmp_path / 'a' / 'last.pt')))
    with pytest.raises(TrainingError, match=r"model.decoder_channels: checkpoint 16 vs now 32"):
        Trainer(make_config('sup', **{**base, 'decoder_channels': 32}, out=str(tmp_path / 'c'), resume=str(tmp_path / 'a' / 'last.pt')))
