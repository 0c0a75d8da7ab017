"""The protocol files (mkd_nb/protocols/*.toml) against the Python dict they replaced: tests/data/protocols-before-toml.json
is that dict's expansion, frozen before it was deleted (every cell, its `mkd-train` command and its `make_config` keywords;
the commands' module prefix was rewritten once, `-m mkd_nb.train` to `-m mkd_nb.cli train`, when the command lines moved).
The files must give exactly the same cells, names, commands and configurations, so the committed runs stay 'done'."""
import json, sys
from pathlib import Path

import pytest

from mkd_nb.core import make_config
from mkd_nb.runner import load_protocol, protocol_cells, cell_command, cell_config, protocol_names

FROZEN = json.loads((Path(__file__).parent / 'data' / 'protocols-before-toml.json').read_text())


def test_every_frozen_protocol_has_a_file():
    assert sorted(FROZEN) == protocol_names()


@pytest.mark.parametrize('name', sorted(FROZEN))
def test_protocol_file_expands_like_the_dict_it_replaced(name):
    before, p = FROZEN[name], load_protocol(name)
    head = before['protocol']
    assert (p['doc'], p['config'], list(p['parts']), list(p['seeds']), p['headline'], list(p['image_size']), p['num_classes'],
            p['root_env'], p['default_root']) == \
           (head['doc'], head['cfg'], head['parts'], head['seeds'], head['headline'], head['image_size'], head['num_classes'],
            head['root_env'], head['default_root'])
    cells = protocol_cells(name)
    assert len(cells) == len(before['cells'])
    for c, frozen in zip(cells, before['cells']):
        assert dict(c, groups=list(c['groups'])) == frozen['cell']
        assert list(c['overrides']) == list(frozen['cell']['overrides'])     # the same order, so the same --set string
        cmd = cell_command(name, c, 'OUT', root='/data', threads=1)
        assert cmd[0] == sys.executable and cmd[1:] == frozen['command']
        method, kw = frozen['make_config']
        assert cell_config(name, c, root='/data', out='OUT').to_dict() == make_config(method, **kw).to_dict()
