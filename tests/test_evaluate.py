"""End-to-end test of the `mkd-eval` command: a checkpoint of a random SegNet on the synthetic dataset, evaluated in a subprocess."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('mkd_nb.data')
from mkd_nb.core import make_config
from mkd_nb.data import get_dataset
from mkd_nb.models import CKPT_FORMAT, build_model, save_checkpoint
from mkd_nb.evaluate import evaluate, predict
from mkd_nb.augment import normalize
import mkd_nb

N_VAL, SIZE = 3, 40


def _cli(*args):
    "Run `mkd-eval` in a fresh process, as `python -m mkd_nb.cli eval` (what the console script runs)."
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', MPLBACKEND='Agg',
               PYTHONPATH=os.pathsep.join([repo] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    return subprocess.run([sys.executable, '-m', 'mkd_nb.cli', 'eval', *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    torch.manual_seed(0)
    cfg = make_config('sup', dataset='synthetic', synthetic_val=N_VAL, synthetic_size=SIZE,
                      encoder='resnet18', decoder_channels=32, crop=32)
    ds = get_dataset('synthetic', split='val', n=N_VAL, size=SIZE)
    C = ds.num_classes
    net = build_model(cfg.model, C).eval()
    out = tmp_path_factory.mktemp('run')
    payload = {'format': CKPT_FORMAT, 'version': mkd_nb.__version__, 'config': cfg.to_dict(), 'num_classes': C,
               'class_names': list(ds.info.classes), 'iter': 7, 'eval_nets': [net.state_dict()], 'method': {},
               'optimizer': {}, 'scaler': None, 'loader': {'step': 7}, 'rng': {}, 'best': {'miou': 0.0, 'iter': 7},
               'split': {'labeled': [], 'unlabeled': []}}
    ckpt = save_checkpoint(out / 'best.pt', payload)
    return dict(ckpt=ckpt, net=net, ds=ds, C=C, out=out)


def test_cli_whole_image_json_and_pngs(run):
    preds = run['out'] / 'preds'
    r = _cli('--ckpt', run['ckpt'], '--save-preds', preds, '--quiet')
    assert r.returncode == 0, r.stderr
    assert 'mIoU' in r.stdout
    rep = json.loads((run['out'] / 'eval_val.json').read_text())
    assert rep['dataset'] == 'synthetic' and rep['split'] == 'val' and rep['mode'] == 'whole' and rep['iter'] == 7
    assert rep['n_images'] == N_VAL and set(rep['iou']) == set(run['ds'].info.classes)
    # the command's numbers are those of evaluate() in this process
    ref = evaluate(run['net'], run['ds'], run['C'], class_names=list(run['ds'].info.classes), progress=False)
    assert rep['miou'] == pytest.approx(ref['miou'], abs=1e-6)
    for k, v in ref['iou'].items():
        assert (rep['iou'][k] is None and v is None) or rep['iou'][k] == pytest.approx(v, abs=1e-6)
    # one palette PNG per image, under its id, holding the predicted class ids in the dataset's colours
    from PIL import Image
    import numpy as np
    pngs = sorted(preds.rglob('*.png'))
    assert len(pngs) == N_VAL
    first = preds / Path(run['ds'].ids[0]).with_suffix('.png')
    im = Image.open(first)
    assert im.mode == 'P'
    pal = im.getpalette()[:3 * run['C']]
    assert [tuple(pal[i:i + 3]) for i in range(0, len(pal), 3)] == [tuple(c) for c in run['ds'].info.palette]
    img, _ = run['ds'][0]
    with torch.no_grad(): want = predict(run['net'], normalize(img[None])).argmax(1)[0].numpy()
    assert (np.array(im) == want).all()


def test_cli_sliding_flip_out(run, tmp_path):
    out = tmp_path / 'sub' / 'res.json'
    r = _cli('--ckpt', run['ckpt'], '--sliding', '--flip', '--out', out, '--quiet')
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep['mode'] == 'sliding' and rep['flip'] is True and rep['window'] == 32
    assert 0.0 <= rep['miou'] <= 100.0


def test_cli_bad_checkpoint(tmp_path):
    bad = tmp_path / 'best.pt'
    bad.write_bytes(b'garbage')
    r = _cli('--ckpt', bad, '--quiet')
    assert r.returncode != 0 and 'mkd-eval: error: checkpoint' in r.stderr and 'best.pt' in r.stderr
    assert 'Traceback' not in r.stderr
    # the same errors when called from Python (no subprocess needed)
    from mkd_nb.cli import mkd_eval
    with pytest.raises(FileNotFoundError, match='missing.pt: no such file'): mkd_eval(ckpt=str(tmp_path / 'missing.pt'))
    with pytest.raises(ValueError, match='--ckpt RUN/best.pt is required'): mkd_eval(quiet=True)


def test_bn_recal_matches_direct_computation_and_keeps_checkpoint(run, tmp_path):
    "`--bn-recal` evaluates the network `recalibrate_bn` gives on weak training crops; the checkpoint file is not touched."
    import hashlib
    from mkd_nb.augment import WeakView
    from mkd_nb.cli import mkd_eval
    from mkd_nb.evaluate import recalibrate_bn
    before = hashlib.sha256(run['ckpt'].read_bytes()).hexdigest()
    rep = mkd_eval(ckpt=str(run['ckpt']), bn_recal=2, out=str(tmp_path / 'bn.json'), quiet=True)
    assert rep['bn_recal'] == 2 and rep['bn_data'] == 'train'
    assert json.loads((tmp_path / 'bn.json').read_text())['bn_recal'] == 2
    cfg = make_config('sup', dataset='synthetic', synthetic_val=N_VAL, synthetic_size=SIZE, crop=32)
    train = get_dataset('synthetic', split='train', n=cfg.data.synthetic_train, size=SIZE)
    net = recalibrate_bn(run['net'], train, WeakView(32, (cfg.data.scale_min, cfg.data.scale_max)), batches=2)
    ref = evaluate(net, run['ds'], run['C'], class_names=list(run['ds'].info.classes), progress=False)
    assert rep['miou'] == pytest.approx(ref['miou'], abs=1e-6)
    # the re-estimated network really differs from the checkpoint's (whose statistics are the initial 0/1), so a --bn-recal
    # that was silently ignored would fail the comparison above; and the checkpoint file is untouched
    x = normalize(run['ds'][0][0][None])
    with torch.no_grad(): assert (net(x).logits - run['net'](x).logits).abs().max() > 1e-3
    assert hashlib.sha256(run['ckpt'].read_bytes()).hexdigest() == before
    plain = mkd_eval(ckpt=str(run['ckpt']), out=str(tmp_path / 'plain.json'), quiet=True)
    assert plain['bn_recal'] == 0 and plain['bn_data'] is None
    assert plain['miou'] != pytest.approx(rep['miou'], abs=1e-3)   # on this network the statistics change the predictions
    # without --out, the re-estimated report is named after its options and leaves the plain evaluation's file alone
    plain_default = mkd_eval(ckpt=str(run['ckpt']), quiet=True)
    mkd_eval(ckpt=str(run['ckpt']), bn_recal=2, quiet=True)
    assert json.loads((run['out'] / 'eval_val_bn2_train.json').read_text())['bn_recal'] == 2
    assert json.loads((run['out'] / 'eval_val.json').read_text())['miou'] == pytest.approx(plain_default['miou'], abs=1e-9)


def test_bn_recal_missing_split_file_is_a_clear_error(run):
    r = _cli('--ckpt', run['ckpt'], '--bn-recal', '2', '--bn-data', 'labeled', '--quiet')
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert 'splits/labeled.txt: no such split file' in r.stderr, r.stderr
