"""Summarise the calibration runs under runs/: test mIoU curves, the labels gate and the convergence rule of README.md.

Run from the repo root: `.venv/bin/python results/camvid-calib/summarize.py` (writes calib.json, calib.md, calib.png
beside this file). A run folder is named `<method>-<partition>-<schedule>-s<seed>`, e.g. `sup-1_32-8k-s0`.
"""
import json, re, statistics
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
GATE, FLAT = 8.0, 1.0          # the rule in README.md: all >= smallest + GATE; all-labels gain over its last quarter < FLAT


def read_run(folder: Path) -> dict:
    "One run: its evaluations (iteration -> test mIoU), median step time, and val at the end if evaluated."
    rows = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines() if line.strip()]
    evals = {r['iter']: r['miou'] for r in rows if 'miou' in r}
    steps = [r['step_s'] for r in rows if 'step_s' in r]
    config = json.loads((folder / 'config.json').read_text())
    val_file = folder / 'eval_val.json'
    return dict(name=folder.name, evals=evals, iters=config['train']['iters'], labeled=config['data']['labeled'],
                seed=config['train']['seed'], step_s=statistics.median(steps) if steps else None,
                val=json.loads(val_file.read_text())['miou'] if val_file.exists() else None,
                finished=(folder / 'metrics.json').exists())


def candidate_summary(runs: list) -> dict:
    "Per schedule: seed means at the last iteration of finished runs, the gate and the convergence test."
    out = {}
    for iters in sorted({r['iters'] for r in runs}):
        group = [r for r in runs if r['iters'] == iters and r['finished']]
        def mean_last(labeled):
            vals = [r['evals'][iters] for r in group if r['labeled'] == labeled]
            return (statistics.mean(vals), len(vals)) if vals else (None, 0)
        all_mean, n_all = mean_last('all')
        small_mean, n_small = mean_last('1/32')
        quarter = [r['evals'][iters] - r['evals'].get(iters * 3 // 4, float('nan'))
                   for r in group if r['labeled'] == 'all']
        gain = statistics.mean(quarter) if quarter else None
        out[f'{iters}'] = dict(all=all_mean, all_seeds=n_all, smallest=small_mean, smallest_seeds=n_small,
                               gap=None if all_mean is None or small_mean is None else all_mean - small_mean,
                               last_quarter_gain=gain,
                               gate=None if all_mean is None or small_mean is None else all_mean - small_mean >= GATE,
                               converged=None if gain is None else gain < FLAT)
    return out


def main():
    runs = [read_run(f) for f in sorted((HERE / 'runs').iterdir()) if (f / 'metrics.jsonl').exists()]
    summary = dict(rule=dict(gate=GATE, flat=FLAT), candidates=candidate_summary(runs),
                   runs=[{k: v for k, v in r.items()} for r in runs])
    (HERE / 'calib.json').write_text(json.dumps(summary, indent=1) + '\n')
    lines = ['| run | finished | test mIoU every 1000 iterations | val at end | median step (s) |', '|---|---|---|---|---|']
    for r in runs:
        curve = ', '.join(f'{v:.1f}' for _, v in sorted(r['evals'].items()))
        lines.append(f"| {r['name']} | {'yes' if r['finished'] else 'no'} | {curve} | "
                     f"{'' if r['val'] is None else format(r['val'], '.1f')} | {r['step_s'] or 0:.2f} |")
    lines += ['', '| schedule | all (seeds) | 1/32 (seeds) | gap (gate ≥ 8) | last-quarter gain (< 1) |', '|---|---|---|---|---|']
    fmt = lambda x: '–' if x is None else f'{x:.1f}'
    for iters, c in summary['candidates'].items():
        lines.append(f"| {iters} | {fmt(c['all'])} ({c['all_seeds']}) | {fmt(c['smallest'])} ({c['smallest_seeds']}) | "
                     f"{fmt(c['gap'])} | {fmt(c['last_quarter_gain'])} |")
    (HERE / 'calib.md').write_text('\n'.join(lines) + '\n')
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {'all': 'tab:blue', '1/8': 'tab:green', '1/32': 'tab:red'}
    for r in runs:
        its = sorted(r['evals'])
        ax.plot(its, [r['evals'][i] for i in its], marker='o', ms=3, color=colours.get(r['labeled'], 'grey'),
                ls='-' if r['seed'] == 0 else '--', label=f"sup {r['labeled']} seed {r['seed']}")
        if r['val'] is not None: ax.plot([max(its)], [r['val']], marker='*', ms=10, color=colours.get(r['labeled']))
    ax.set(xlabel='iteration', ylabel='mIoU (%)', title='CamVid test mIoU (lines); val at the end (stars)')
    ax.grid(alpha=.3); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(HERE / 'calib.png', dpi=100)


if __name__ == '__main__':
    main()
