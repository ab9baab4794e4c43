"""Committed results (every JSON file under docs/) name no machine's paths: a path in them is
relative to the repository, so a clone reads the same results wherever it lies."""
import glob
import json
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = sorted(osp.relpath(p, REPO)
                 for p in glob.glob(osp.join(REPO, 'docs', '**', '*.json'), recursive=True))
# An absolute POSIX path ('/work/main/x.pth', '/tmp/a') or a Windows drive path ('C:\\x').
ABSOLUTE = re.compile(r'^(/[^/\s]+(/[^/\s]*)*|[A-Za-z]:[\\/]\S*)$')


def absolute_paths(node, where=''):
    """``(where, string)`` of every string in a JSON document (keys too) that is an absolute
    filesystem path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from absolute_paths(key, f'{where}/{key}')
            yield from absolute_paths(value, f'{where}/{key}')
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from absolute_paths(value, f'{where}/{i}')
    elif isinstance(node, str) and ABSOLUTE.match(node):
        yield where, node


def test_the_pattern():
    found = dict(absolute_paths(dict(a='/work/main/work_dirs/P/iter_500.pth', b=['/tmp/x'],
                                     c='C:\\runs\\x.pth', d={'/abs/key': 1})))
    assert found == {'/a': '/work/main/work_dirs/P/iter_500.pth', '/b/0': '/tmp/x',
                     '/c': 'C:\\runs\\x.pth', '/d//abs/key': '/abs/key'}
    assert not dict(absolute_paths(['work_dirs/P/iter_500.pth', '../p.pth', 'mAP / 2',
                                    '1/2', 'SK/conv', 'a b/c', '']))


def test_there_are_results():
    assert 'docs/sk_ablation.json' in RESULTS and len(RESULTS) > 30


@pytest.mark.parametrize('path', RESULTS)
def test_no_absolute_path(path):
    with open(osp.join(REPO, path)) as f:
        found = list(absolute_paths(json.load(f)))
    assert not found, f'{path} names absolute paths (make them relative to the repository): ' \
        f'{found[:5]}'
