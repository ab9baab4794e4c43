"""Committed results and pages (every JSON and Markdown file under docs/, and the Markdown files
at the top of the repository) name no machine's paths: a path in them is relative to the
repository, so a clone reads the same results wherever it lies."""
import glob
import json
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = sorted(osp.relpath(p, REPO)
                 for p in glob.glob(osp.join(REPO, 'docs', '**', '*.json'), recursive=True))
PAGES = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'docs', '**', '*.md'), recursive=True) +
    glob.glob(osp.join(REPO, '*.md')))
# Anywhere in a text: an absolute POSIX path of two components or more ('/work/main/x.pth',
# '/tmp/a') that does not continue a relative path ('docs/a', '../p', './x'), a URL
# ('https://host/a') or a word ('SK/conv', '1/2'); or a Windows drive path ('C:\\x', 'D:/x').
# A single component ('| /base |', a ratio's column in the results pages) is not a path.
ABSOLUTE = re.compile(r'(?<![\w.~:/\\-])/[A-Za-z_][\w.+-]*(?:/[\w.+-]*)+'
                      r'|(?<![\w])[A-Za-z]:[\\/][^\s"\'`|)]*')


def absolute_paths(node, where=''):
    """``(where, path)`` of every absolute filesystem path in the strings of a JSON document
    (keys too), wherever it stands in the string."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from absolute_paths(key, f'{where}/{key}')
            yield from absolute_paths(value, f'{where}/{key}')
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from absolute_paths(value, f'{where}/{i}')
    elif isinstance(node, str):
        for m in ABSOLUTE.finditer(node):
            yield where, m[0]


def test_the_pattern():
    found = list(absolute_paths(dict(
        a='/work/main/work_dirs/P/iter_500.pth', b=['/tmp/x'], c='C:\\runs\\x.pth',
        d={'/abs/key': 1},
        e='python tools/train.py /work/main/configs/x.py --work-dir work_dirs/a',
        f='ckpt=/home/me/a.pth; D:/runs/b.pth')))
    assert found == [('/a', '/work/main/work_dirs/P/iter_500.pth'), ('/b/0', '/tmp/x'),
                     ('/c', 'C:\\runs\\x.pth'), ('/d//abs/key', '/abs/key'),
                     ('/e', '/work/main/configs/x.py'), ('/f', '/home/me/a.pth'),
                     ('/f', 'D:/runs/b.pth')]
    page = 'Saved to `/tmp/run/x.pth` (see [docs](docs/a.md)).\n| C:\\x\\y | /base |'
    assert [m[0] for m in ABSOLUTE.finditer(page)] == ['/tmp/run/x.pth', 'C:\\x\\y']
    assert not list(absolute_paths([
        'work_dirs/P/iter_500.pth', '../p.pth', './configs/a.py', 'mAP / 2', '1/2', 'SK/conv',
        'a b/c', '', '| params M | /base |', 'https://github.com/a/b', '[x](docs/a.md)',
        'python tools/train.py configs/x.py', '~/.cache/pip', 'ratio 3:2 at 1:1/2']))


def test_there_are_results():
    assert 'docs/sk_ablation.json' in RESULTS and len(RESULTS) > 30
    assert {'README.md', 'docs/results.md', 'docs/install.md'} <= set(PAGES)


@pytest.mark.parametrize('path', RESULTS)
def test_no_absolute_path_in_results(path):
    with open(osp.join(REPO, path)) as f:
        found = list(absolute_paths(json.load(f)))
    assert not found, f'{path} names absolute paths (make them relative to the repository): ' \
        f'{found[:5]}'


@pytest.mark.parametrize('path', PAGES)
def test_no_absolute_path_in_pages(path):
    with open(osp.join(REPO, path)) as f:
        found = [(text.count('\n', 0, m.start()) + 1, m[0])
                 for text in [f.read()] for m in ABSOLUTE.finditer(text)]
    assert not found, f'{path} names absolute paths (make them relative to the repository), ' \
        f'(line, path): {found[:5]}'
