"""The protocol table runner (issue 6) end to end, as a user drives it: `mkd-bench table` on the tiny synthetic protocol,
killed in the middle of a cell, then run again. The interrupted cell must resume from its checkpoint and end where an
uninterrupted run ends; finished cells must not run again; the table must count what exists and nothing else."""
import json, os, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench(out, *args, fault=None):
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    env.pop('MKD_FAULT_EXIT_AT', None)
    if fault: env['MKD_FAULT_EXIT_AT'] = fault
    cmd = [sys.executable, '-m', 'mkd_nb.cli', 'bench', 'table', '--protocol', 'synthetic-tiny', '--out', str(out), '--threads', '1', *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_table_runner_resumes_an_interrupted_cell(tmp_path):
    killed, straight = tmp_path / 'killed', tmp_path / 'straight'
    sel = ['--only', 'sup', '--parts', '1/4', '--seeds', '0']
    r = _bench(killed, *sel, fault='3')           # the training process dies just before iteration 3 (checkpoint at 2)
    assert r.returncode != 0 and '1 cell(s) failed: sup__1_4__s0' in r.stderr, r.stdout + r.stderr
    assert 'FAILED sup__1_4__s0' in r.stdout
    run = killed / 'runs' / 'sup__1_4__s0'
    assert (run / 'last.pt').exists() and not (run / 'metrics.json').exists()
    assert '| sup | – |' in (killed / 'table.md').read_text()     # nothing finished: nothing imputed

    r = _bench(killed, *sel)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '1 to run' in r.stdout and 'finished sup__1_4__s0' in r.stdout
    assert 'resum' in (run / 'log.txt').read_text().lower()
    assert _bench(straight, *sel).returncode == 0
    a, b = (json.loads((d / 'runs' / 'sup__1_4__s0' / 'metrics.json').read_text()) for d in (killed, straight))
    assert a['iters'] == b['iters'] == 4
    assert a['final']['miou'] == b['final']['miou'] and a['final']['iou'] == b['final']['iou']

    r = _bench(killed, *sel)                      # a finished cell is never run again
    assert r.returncode == 0 and '1 finished, 0 to run' in r.stdout
    t = json.loads((killed / 'table.json').read_text())
    sup = next(x for x in t['rows'] if x['row'] == 'sup' and x['part'] == '1/4')
    assert (sup['n'], sup['planned'], sup['seeds']) == (1, 2, [0]) and sup['miou_std'] is None


def test_table_refuses_unknown_names(tmp_path):
    r = _bench(tmp_path, '--only', 'mkdd', '--plan')
    assert r.returncode == 2 and "unknown row(s) ['mkdd']" in r.stderr
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    r = subprocess.run([sys.executable, '-m', 'mkd_nb.cli', 'bench', 'table', '--protocol', 'nope'], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and 'valid: camvid-cpu' in r.stderr
