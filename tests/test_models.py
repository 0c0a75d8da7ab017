"""Pretrained encoder weights on an offline machine: a fresh process with HF_HUB_OFFLINE=1 and an empty hub cache."""
import os, subprocess, sys
from pathlib import Path

import pytest

CODE = """
from mkd_nb.core import ModelConfig
from mkd_nb.models import build_model
for enc in ('resnet18', 'tu-resnet10t'):
    try: build_model(ModelConfig(arch='deeplabv3plus', encoder=enc, encoder_weights='imagenet'), 3)
    except RuntimeError as e: print('RuntimeError:', e)
    else: print('built', enc)
"""


def test_imagenet_offline_one_line_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), TORCH_HOME=str(tmp_path / 'torch'),
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1])] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, '-c', CODE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout   # one line per encoder: the error message has no line breaks
    for enc, line in zip(('resnet18', 'tu-resnet10t'), lines):
        assert line.startswith('RuntimeError: ') and repr(enc) in line and '--encoder-weights PATH' in line, line
