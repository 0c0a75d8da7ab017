"""The GPU check's dry run (issue 36): `python -m mkd_nb.gpu_check OUT --dry` runs every part of the check at tiny sizes on
the CPU and writes its report, so the script that runs on a lent GPU cannot rot between loans. CUDA-only checks must be
listed as `skipped: no CUDA`, so that the dry report names every check the GPU run makes."""
import json, math, os, subprocess, sys, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ['env', 'amp', 'overflow', 'distributed', 'channels_last', 'bench', 'compile', 'camvid']
METHODS = ['sup', 'mt', 'cps', 'unimatch', 'mkd', 'mgd']


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    "Run the dry check once in a subprocess; (report, markdown, stdout, wall seconds, CamVid present)."
    out = tmp_path_factory.mktemp('gpu-check')
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, '-m', 'mkd_nb.gpu_check', str(out), '--dry'], env=env, capture_output=True, text=True,
                       timeout=600)
    wall = time.perf_counter() - t0
    assert (out / 'gpu_check.json').exists(), p.stdout[-3000:] + p.stderr[-3000:]
    camvid = (Path(env.get('MKD_CAMVID', '')) / 'train.txt').is_file()
    return json.loads((out / 'gpu_check.json').read_text()), (out / 'gpu_check.md').read_text(), p, wall, camvid


def _checks(rep, part):
    return {c['name']: c for c in rep['parts'][part]['checks']}


def test_every_part_ran_and_passed(dry):
    rep, md, p, wall, _ = dry
    assert list(rep['parts']) == PARTS
    bad = {k: (v['status'], v.get('error'), [c for c in v['checks'] if c['status'] == 'failed']) for k, v in rep['parts'].items()
           if v['status'] != 'ok'}
    assert not bad, bad
    assert rep['dry'] is True and rep['counts']['failed'] == 0 and p.returncode == 0, p.stderr[-2000:]
    for k in PARTS: assert f'## {k}' in md
    print(f"dry run: {wall:.0f} s wall, {rep['counts']}")


def test_progress_has_timestamps(dry):
    lines = [l for l in dry[2].stdout.splitlines() if ' s] ' in l]
    assert any(l.endswith('start (time box 120 s)') for l in lines)
    assert all(l[2] == ':' and l[5] == ':' for l in lines)   # HH:MM:SS first
    assert sum('ok after' in l for l in lines) == len(PARTS)


def test_amp_losses_finite_and_falling(dry):
    rep = dry[0]
    ch = _checks(rep, 'amp')
    for m in METHODS:
        c = ch[f'{m} bf16']
        assert c['status'] == 'ok' and c['finite'] and c['sup_falls'] and c['sup_last'] < c['sup_first'], c
        assert all(math.isfinite(c[k]) for k in ('loss_first', 'loss_last', 'sup_first', 'sup_last'))
        assert ch[f'{m} fp16']['status'] in ('ok', 'skipped: no CUDA (float16 on a CPU is slow: the dry run runs sup)')
    assert ch['sup fp16']['status'] == 'ok' and ch['sup fp16']['trainer_skipped'] == 0


def test_overflow_skipped_and_counted(dry):
    ch = _checks(dry[0], 'overflow')
    assert ch['overflow counted']['trainer_skipped'] == 1
    assert ch['loss scale halved']['scale_after'] == ch['loss scale halved']['scale_before'] / 2
    assert ch['overflowing step changed no weight']['status'] == 'ok' and ch['later losses finite']['status'] == 'ok'


def test_cuda_only_checks_listed_as_skipped(dry):
    rep = dry[0]
    skipped = {(part, c['name']) for part, v in rep['parts'].items() for c in v['checks']
               if c['status'].startswith('skipped: no CUDA')}
    for want in [('env', 'CUDA device'), ('distributed', 'all_reduce (nccl)'), ('distributed', 'training step with SyncBatchNorm'),
                 ('compile', 'torch.compile of the mkd step')] + [('amp', f'{m} fp16') for m in METHODS[1:]]:
        assert want in skipped, want
    if dry[4]:
        assert ('camvid', 'sup: cuda fp32 = cpu fp32') in skipped and ('camvid', 'mkd: cuda fp32 = cpu fp32') in skipped


def test_bench_lists_every_recipe_and_method(dry):
    rep = dry[0]
    ch = _checks(rep, 'bench')
    recipes = ['voc-blended-r101', 'cityscapes-r101', 'mkd-official']
    assert set(ch) == {f'{m} @ {r}' for m in METHODS for r in recipes}
    rows = rep['parts']['bench']['data']['rows']
    assert {r['method'] for r in rows} == set(METHODS) and {r['recipe'] for r in rows} == set(recipes)
    for r in rows:
        assert r['images_per_s'] > 0 and r['step_s'] > 0 and r['bare_s'] > 0 and r['peak_gib'] > 0, r
    for r in rows:   # timed in the precision the recipe trains in: 'auto' is float32 on the CPU, fp16 is float16
        assert r['dtype'] == {'auto': 'float32', 'fp16': 'float16'}[r['amp']], r
    assert 'images_per_s' in dry[1] and 'peak_gib' in dry[1]


def test_camvid_against_cpu(dry):
    rep, _, _, _, camvid = dry
    ch = _checks(rep, 'camvid')
    if not camvid:
        assert all(c['status'].startswith('skipped: no CamVid copy') for c in ch.values()) and len(ch) == 2
        pytest.skip('CamVid copy not found (set MKD_CAMVID): the part is listed as skipped')
    for m in ('sup', 'mkd'):
        c = ch[f'{m}: cpu bf16 first loss ~ cpu fp32']
        assert c['status'] == 'ok' and 0 < c['rel_diff'] <= c['tolerance'], c    # bf16 differs, but within the tolerance
        r = ch[f'{m}: cpu bf16 short run']
        assert r['status'] == 'ok' and math.isfinite(r['loss_last']) and r['miou'] >= 0
