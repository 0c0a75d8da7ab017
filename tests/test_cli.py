"""The command lines as a user starts them: every `python -m mkd_nb...` form the package offers answers `--help` with exit
status 0 in a fresh process, every command of `mkd_nb.cli` has its console script, and no module parses `sys.argv` while
it is being imported (fastcore's `@call_parse` does, under `python -m`, before the rest of the module is defined)."""
import ast, configparser, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mkd_nb.cli import COMMANDS, _DATA_SUBCOMMANDS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'mkd_nb'


def _runs_as_main(path: Path) -> bool:
    "True when the module does something under `python -m` (it has an `if __name__ == '__main__'` block)."
    return any(isinstance(node, ast.If) and '__main__' in ast.unparse(node.test) for node in ast.parse(path.read_text()).body)


MODULES = sorted(p.stem for p in PACKAGE.glob('*.py') if _runs_as_main(p))
FORMS = ([['mkd_nb.' + m] for m in MODULES if m != 'cli'] + [['mkd_nb.cli']] + [['mkd_nb.cli', name] for name in COMMANDS]
         + [['mkd_nb.cli', 'data', sub] for sub in _DATA_SUBCOMMANDS])


def _help(form):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', MPLBACKEND='Agg',
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    return subprocess.run([sys.executable, '-m', *form, '--help'], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def test_every_python_m_form_answers_help():
    assert 'cli' in MODULES and not {'data', 'evaluate'} & set(MODULES), MODULES   # their commands moved to mkd_nb.cli
    with ThreadPoolExecutor(2) as pool: results = list(pool.map(_help, FORMS))
    failed = [f"python -m {' '.join(form)} --help: exit {r.returncode}\n{r.stderr[-800:]}"
              for form, r in zip(FORMS, results) if r.returncode != 0 or 'usage:' not in r.stdout]
    assert not failed, '\n'.join(failed)
    listing = results[FORMS.index(['mkd_nb.cli'])].stdout
    assert all(f'  {name}  ' in listing for name in COMMANDS), listing


def test_cli_runs_main_after_every_command():
    "The `__main__` block is the module's last statement, so `python -m mkd_nb.cli NAME` finds every command."
    body = ast.parse((PACKAGE / 'cli.py').read_text()).body
    assert _runs_as_main(PACKAGE / 'cli.py') and isinstance(body[-1], ast.If) and '__main__' in ast.unparse(body[-1].test)


def test_each_command_has_its_console_script():
    cfg = configparser.ConfigParser(); cfg.read(REPO / 'settings.ini')
    scripts = dict(line.strip().split('=', 1) for line in cfg['DEFAULT']['console_scripts'].split('\n') if line.strip())
    for name, entry in COMMANDS.items():
        assert scripts.get(f'mkd-{name}') == f'mkd_nb.cli:{entry.__name__}', (name, scripts)


def test_no_module_parses_argv_on_import():
    decorated = [f"mkd_nb/{p.name}:{node.lineno} {node.name}" for p in sorted(PACKAGE.glob('*.py'))
                 for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.FunctionDef)
                 and any('call_parse' in ast.unparse(d) for d in node.decorator_list)]
    assert not decorated, f"@call_parse parses sys.argv at import under `python -m`: {decorated}"
