"Two-process gloo test of ClassStats' all-reduce: every rank ends with the statistics of the concatenated batches."
import os, socket, tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mkd_nb.feature_aug import ClassStats

C, D = 4, 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _batch(rank: int, step: int):
    "A different batch per (rank, step); class 3 only ever appears on rank 1, some pixels ignored."
    g = torch.Generator().manual_seed(100 * rank + step)
    B, h, w = (2, 3, 4) if rank == 0 else (1, 5, 2)
    feats = torch.randn(B, D, h, w, generator=g) * (1 + rank) + rank
    labels = torch.randint(0, 3 if rank == 0 else 4, (B, h, w), generator=g)
    labels[torch.rand(B, h, w, generator=g) < 0.25] = 255
    return feats, labels


def _worker(rank: int, world: int, port: int, out_dir: str, steps: int):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        calls = []
        real = dist.all_reduce
        def counting(t, *a, **k):
            calls.append(tuple(t.shape)); return real(t, *a, **k)
        dist.all_reduce = counting
        st = ClassStats(C, D)
        for s in range(steps): st.update(*_batch(rank, s))
        dist.all_reduce = real
        torch.save({'state': st.state_dict(), 'calls': calls}, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _one_shot(batches):
    f = torch.cat([b[0].permute(0, 2, 3, 1).reshape(-1, D) for b in batches]).double()
    y = torch.cat([b[1].reshape(-1) for b in batches])
    mean = torch.stack([f[y == c].mean(0) for c in range(C)])
    var = torch.stack([f[y == c].var(0, unbiased=False) for c in range(C)])
    cnt = torch.stack([(y == c).sum() for c in range(C)]).double()
    return mean, var, cnt


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason='gloo backend not available')
def test_classstats_allreduce_two_ranks():
    world, steps = 2, 3
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(world, _free_port(), d, steps), nprocs=world, join=True)
        res = [torch.load(os.path.join(d, f'rank{r}.pt'), weights_only=True) for r in range(world)]
    batches = [_batch(r, s) for s in range(steps) for r in range(world)]
    mean, var, cnt = _one_shot(batches)
    for r in range(world):
        st, calls = res[r]['state'], res[r]['calls']
        assert calls == [(C, 1 + 2 * D)] * steps, f'rank {r}: expected one packed all_reduce per update, got {calls}'
        torch.testing.assert_close(st['count'], cnt)
        torch.testing.assert_close(st['mean'].double(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st['var'].double(), var, atol=1e-5, rtol=1e-5)
    # both ranks hold identical buffers
    for k in ('mean', 'var', 'count'): assert torch.equal(res[0]['state'][k], res[1]['state'][k])
    assert res[0]['state']['count'][3] > 0            # class 3 reached rank 0 through the all-reduce
