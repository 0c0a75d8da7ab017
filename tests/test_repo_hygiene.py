"""The repo stands on its own: users never have the workplace's `../shared` folder, so nothing but the data path
settings may name it."""
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The only places allowed to name it: where the test data is looked for (Makefile default, pytest's fixture).
ALLOWED = {'Makefile', 'tests/conftest.py', 'tests/test_repo_hygiene.py'}


def tracked_text_files():
    names = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split('\0')):
        path = REPO / name
        if path.is_file() and path.stat().st_size < 5_000_000:
            try: yield name, path.read_text(encoding='utf-8')
            except UnicodeDecodeError: continue


def test_no_file_points_at_shared():
    hits = [f"{name}:{i}" for name, text in tracked_text_files() if name not in ALLOWED
            for i, line in enumerate(text.splitlines(), 1) if '../shared' in line]
    assert not hits, f"these lines point at ../shared, which users do not have: {hits[:10]}"


def test_the_check_sees_tracked_files():
    names = dict(tracked_text_files())
    assert 'README.md' in names and any(n.startswith('nbs/') for n in names)
