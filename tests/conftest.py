"""Shared pytest set-up: no hub access, headless matplotlib, and the `slow` marker (run by `make test-slow`)."""
import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault('MKD_CAMVID', str((REPO.parent / 'shared' / 'data' / 'camvid-240x180').resolve()))


def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', default=False, help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running test, run by `make test-slow` (pytest --run-slow)')
    config.addinivalue_line('markers', 'browser: drives JupyterLab in headless Chromium (select with -m browser)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--run-slow'): return
    skip = pytest.mark.skip(reason='slow: run with `make test-slow` (pytest --run-slow)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)


@pytest.fixture(scope='session')
def camvid_root():
    "The real CamVid 240x180 copy (MKD_CAMVID); under CI its absence is a failure, elsewhere a skip."
    root = Path(os.environ['MKD_CAMVID'])
    if not (root / 'train.txt').exists():
        if os.environ.get('CI') == 'true': pytest.fail(f'CamVid copy not found at {root} (set MKD_CAMVID)')
        pytest.skip(f'CamVid copy not found at {root} (set MKD_CAMVID)')
    return root
