"""Multi-process training on the CPU (gloo, 2 processes): equivalence with one process, identical state on every rank,
only rank 0 writes, and a rank that dies makes the job fail; `--resume auto` then finishes it.

Each test keeps to tiny synthetic configurations (ResNet-18 DeepLabV3+ with 16 decoder channels, crop 32, a few
iterations, no loader workers) so that it runs in well under a minute on a shared 2-core machine.
"""
import json, os, socket, subprocess, sys, tempfile, time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from mkd_nb.core import make_config
from mkd_nb.methods import Supervised, build_method

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason='gloo backend not available')

TINY = dict(encoder='resnet18', decoder_channels=16, synthetic_train=16, synthetic_val=4, synthetic_size=40, crop=32,
            workers=0, labeled='1/2', device='cpu', amp='off', log_every=1, threads=1)
CLI_TINY = ['--encoder', 'resnet18', '--crop', '32', '--batch-size', '2', '--workers', '0', '--labeled', '1/2', '--device', 'cpu',
            '--threads', '1', '--set', 'decoder_channels=16,synthetic_train=16,synthetic_val=4,synthetic_size=40,log_every=1']
RUN_FILES = {'config.json', 'splits', 'metrics.jsonl', 'metrics.json', 'last.pt', 'best.pt', 'curves.png', 'log.txt'}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKD_DIST_TIMEOUT='60', HF_HUB_OFFLINE='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MKD_FAULT_EXIT_AT'): env.pop(k, None)
    env.update(extra)
    return env


class _FrozenBNSup(Supervised):
    "Test-only: BatchNorm always uses its running statistics and dropout is off, so a step does not depend on how the batch is split."
    def __init__(self, cfg, num_classes):
        super().__init__(cfg, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Dropout): m.p = 0.0
    def train(self, mode=True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm): m.eval()
        return self


def _float_state(sd):
    return {k: v.detach().double() for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point()}


def _worker(rank, world, port, tmp, kind, out_for):
    "One rank of a spawned job: torchrun's variables, then the ordinary Trainer (which joins the group itself)."
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port), MKD_DIST_TIMEOUT='60')
    torch.set_num_threads(1)
    from mkd_nb.train import Trainer, cleanup_distributed
    try:
        if kind == 'sup':
            cfg = make_config('sup', batch_size=2, iters=4, eval_every=4, scale_min=1.0, scale_max=1.0, out=out_for[rank], **TINY)
            tr = Trainer(cfg, method=_FrozenBNSup(cfg, 6))
        else:
            cfg = make_config('mkd', batch_size=2, iters=3, eval_every=3, out=out_for[rank], **TINY)
            tr = Trainer(cfg)
        m = tr.fit()
        torch.save({'state': tr.method.state_dict(), 'metrics': json.dumps(m, default=str)}, os.path.join(tmp, f'rank{rank}.pt'))
    finally:
        cleanup_distributed()


def test_two_processes_equal_one_process_with_twice_the_batch():
    """(a) 2 processes x batch 2 == 1 process x batch 4 for `sup`, with BatchNorm frozen (see _FrozenBNSup) and no crop padding.

    Why frozen: on the CPU there is no SyncBatchNorm, so in train mode each process would normalise with the statistics
    of its own 2 images instead of all 4 - a real, documented difference, not a bug. With BN in eval mode and every
    crop fully valid (scale 1, image 40 > crop 32: the per-process losses are means over equally many pixels) the mean of
    the two processes' gradients IS the gradient of the 4-image batch, up to float32 summation order. Tolerance: 1e-4
    absolute on every weight after 4 SGD steps (observed differences are ~1e-7: rounding, not a different computation).
    """
    torch.set_num_threads(1)
    from mkd_nb.train import Trainer
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        out2 = os.path.join(tmp, 'two')
        mp.spawn(_worker, args=(2, _free_port(), tmp, 'sup', [out2, out2]), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f'rank{r}.pt'), weights_only=True) for r in range(2))
        for r in (r0, r1): r['metrics'] = json.loads(r['metrics'])
        cfg = make_config('sup', batch_size=4, iters=4, eval_every=4, scale_min=1.0, scale_max=1.0, out=os.path.join(tmp, 'one'), **TINY)
        one = Trainer(cfg, method=_FrozenBNSup(cfg, 6))
        m1 = one.fit()
        ref = _float_state(one.method.state_dict())
        a, b = _float_state(r0['state']), _float_state(r1['state'])
        for k in ref:
            assert torch.equal(a[k], b[k]), f'ranks differ in {k}'
        worst = max((a[k] - ref[k]).abs().max().item() for k in ref)
        init = _float_state(_FrozenBNSup(cfg, 6).state_dict())
        moved = max((ref[k] - init[k]).abs().max().item() for k in ref)
        print(f'max |2 procs - 1 proc| = {worst:.2e} (weights moved by up to {moved:.2e}); {time.time() - t0:.1f}s')
        assert moved > 1e-3                       # training did change the weights, so the comparison means something
        assert worst < 1e-4
        assert r0['metrics']['world'] == 2 and r0['metrics']['total_batch'] == 4 and m1['total_batch'] == 4
        assert abs(r0['metrics']['final']['miou'] - m1['final']['miou']) < 0.5   # evaluation split over ranks, matrices summed
        assert r0['metrics']['final']['miou'] == r1['metrics']['final']['miou']


def test_mkd_state_identical_on_every_rank_and_rank1_writes_nothing():
    """(b) after 3 MKD steps on 2 processes, every tensor of the method - students, EMA teachers (parameters and BN
    buffers) and the four networks' class statistics (ClassStats all-reduces) - is bitwise identical on both ranks.
    (c, strong form) rank 1's output folder lies under a regular FILE, so any attempt of rank 1 to write there would fail."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        Path(tmp, 'afile').write_text('not a folder')
        outs = [os.path.join(tmp, 'run'), os.path.join(tmp, 'afile', 'run')]
        mp.spawn(_worker, args=(2, _free_port(), tmp, 'mkd', outs), nprocs=2, join=True)
        s0, s1 = (torch.load(os.path.join(tmp, f'rank{r}.pt'), weights_only=True)['state'] for r in range(2))
        assert s0.keys() == s1.keys()
        for k in s0: assert torch.equal(s0[k], s1[k]), f'ranks differ in {k}'
        assert any(k.startswith('stats.') for k in s0) and s0['stats.0.count'].sum() > 0
        assert any(k.startswith('t1.') for k in s0) and any('running_mean' in k and k.startswith('t1.') for k in s0)
        assert not torch.equal(s0['t1.classifier.weight'], s0['s1.classifier.weight'])   # the teacher is an EMA, not a copy
        assert int(s0['iteration']) == 3
        assert {p.name for p in Path(outs[0]).iterdir()} == RUN_FILES
        print(f'mkd 2 ranks: {time.time() - t0:.1f}s')


def _torchrun(nproc, args, timeout, **env):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', str(nproc), '--master-port', str(_free_port()),
           '-m', 'mkd_nb.cli', 'train', *args]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def test_nproc_launcher_only_rank0_writes():
    "(c) `python -m mkd_nb.cli train --nproc 2` re-runs itself through torchrun; the folder holds one run's files, each written once."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, 'run')
        t0 = time.time()
        p = subprocess.run([sys.executable, '-m', 'mkd_nb.cli', 'train', '--nproc', '2', '--method', 'sup', '--iters', '4', '--eval-every', '2',
                            '--out', str(out), *CLI_TINY], env=_env(), capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert 'torch.distributed.run' in p.stderr and '--nproc-per-node=2' in p.stderr
        assert 'total batch of 4 = 2 x 2 processes x 1 accumulation' in p.stdout + p.stderr
        assert {f.name for f in out.iterdir()} == RUN_FILES, sorted(f.name for f in out.iterdir())
        rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
        keys = [(r['iter'], 'miou' in r) for r in rows]
        assert len(keys) == len(set(keys)) and (4, True) in keys          # one row per iteration / evaluation: one writer
        log = (out / 'log.txt').read_text()
        assert log.count('2 process(es)') == 1 and 'done: final mIoU' in log
        m = json.loads((out / 'metrics.json').read_text())
        assert (m['world'], m['total_batch'], m['iters']) == (2, 4, 4)
        print(f'--nproc 2 run: {time.time() - t0:.1f}s')


def test_dead_rank_fails_the_job_and_resume_auto_finishes_it():
    "(d) rank 1 dies abruptly at iteration 3 (MKD_FAULT_EXIT_AT=3:1): the job exits non-zero; `--resume auto` completes it."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, 'run')
        args = ['--method', 'mt', '--iters', '6', '--eval-every', '2', '--out', str(out), *CLI_TINY]
        t0 = time.time()
        p = _torchrun(2, args, timeout=150, MKD_FAULT_EXIT_AT='3:1')
        t_fail = time.time() - t0
        assert p.returncode != 0, 'the job should fail when a rank dies'
        assert 'MKD_FAULT_EXIT_AT: rank 1 exits at iteration 3' in p.stdout + p.stderr
        ck = torch.load(out / 'last.pt', weights_only=True)
        assert ck['iter'] == 2 and ck['world'] == 2 and len(ck['rng_ranks']) == 2
        assert not (out / 'metrics.json').exists() or json.loads((out / 'metrics.json').read_text())['iters'] < 6
        t1 = time.time()
        p = _torchrun(2, args + ['--resume', 'auto'], timeout=150)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert 'resumed from' in p.stdout + p.stderr
        m = json.loads((out / 'metrics.json').read_text())
        assert m['iters'] == 6 and m['world'] == 2
        rows = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines()]
        assert [r['iter'] for r in rows if 'miou' in r] == [2, 4, 6]
        print(f'failed run ended after {t_fail:.1f}s; resumed run {time.time() - t1:.1f}s')
