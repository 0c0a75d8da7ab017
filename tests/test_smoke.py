"""Smoke runs: every method trains a few dozen iterations on the synthetic data; the loss falls and val mIoU beats chance.

"Chance" is a predictor that draws every pixel's class uniformly at random, evaluated on the same val set. At this budget
(60 iterations from scratch) the semi-supervised methods still predict mostly the majority class, whose mIoU is also
computed and reported in the failure message; beating *that* is a question for the benchmarks, not for a smoke test."""
import pytest
import torch

from mkd_nb.core import make_config
from mkd_nb.loader import build_data
from mkd_nb.train import Trainer
from mkd_nb.evaluate import ConfusionMatrix

ITERS = 60


def _cfg(method, out):
    return make_config(method, encoder='resnet18', decoder_channels=32, synthetic_train=64, synthetic_val=16, synthetic_size=48,
                       crop=48, batch_size=4, iters=ITERS, eval_every=ITERS, workers=0, labeled='1/4', optimizer='adamw', lr=0.002,
                       log_every=10, out=str(out))


@pytest.fixture(scope='module')
def chance(tmp_path_factory):
    "(uniform-random, majority-class) predictors' mIoU on the same val set."
    data = build_data(_cfg('sup', tmp_path_factory.mktemp('c')))
    C, val = data['num_classes'], data['val']
    counts = torch.zeros(C)
    for _, m in val: counts += torch.bincount(m[m != 255].flatten(), minlength=C)
    major, rnd = ConfusionMatrix(C), ConfusionMatrix(C)
    g = torch.Generator().manual_seed(0)
    for _, m in val:
        major.update(torch.full_like(m, int(counts.argmax()))[None], m[None])
        rnd.update(torch.randint(0, C, m.shape, generator=g)[None], m[None])
    return 100 * rnd.miou(), 100 * major.miou()


@pytest.mark.parametrize('method', ['sup', 'mt', 'cps', 'unimatch', 'mkd'])
def test_method_learns(method, chance, tmp_path):
    torch.set_num_threads(1)
    tr = Trainer(_cfg(method, tmp_path / method))
    res = tr.fit()
    losses = [r['loss'] for r in tr.history if 'loss' in r]
    assert len(losses) == ITERS // 10
    assert sum(losses[-2:]) < sum(losses[:2]), f"{method}: loss did not fall: {losses}"
    rnd, major = chance
    assert rnd < major
    assert res['final']['miou'] > rnd + 1, f"{method}: mIoU {res['final']['miou']:.2f} is not above chance {rnd:.2f} (majority class: {major:.2f})"
