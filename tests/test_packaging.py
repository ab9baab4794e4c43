"""``pip install -e .`` into an environment that satisfies setup.py's ranges installs nothing else."""
import ast
import platform
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version


def test_editable_install_changes_nothing_else(repo_root):
    # --no-index: pip may use only what is installed, so a requirement that the environment
    # does not satisfy fails the resolution instead of being downloaded.
    out = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
         '--no-build-isolation', '-e', repo_root],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    would = re.findall(r'^Would install (.*)$', out.stdout, re.MULTILINE)
    assert len(would) == 1, out.stdout
    assert [re.split(r'-\d', p)[0].replace('-', '_') for p in would[0].split()] == ['mmdet_sk']


def _requirement_lines(path):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def _setup_keywords(repo_root):
    """setup()'s literal keywords, read from setup.py without running it."""
    tree = ast.parse(Path(repo_root, 'setup.py').read_text())
    call = next(n for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'setup')
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords
            if isinstance(k.value, (ast.Constant, ast.List))}


def test_lock_pins_public_releases_only(repo_root):
    # A local version (torch==2.13.0+cpu) exists only on PyTorch's own CPU index: with it, make env
    # fails where pip reaches only PyPI. ==2.13.0 also matches 2.13.0+cpu where pip sees it.
    lines = _requirement_lines(Path(repo_root, 'requirements-lock.txt'))
    assert lines
    for line in lines:
        req = Requirement(line)
        assert [s.operator for s in req.specifier] == ['=='], line
        assert Version(next(iter(req.specifier)).version).local is None, line


def test_lock_agrees_with_requirements(repo_root):
    lock = {canonicalize_name(Requirement(line).name): Requirement(line).specifier
            for line in _requirement_lines(Path(repo_root, 'requirements-lock.txt'))}
    pinned = [Requirement(line) for line in _requirement_lines(Path(repo_root, 'requirements.txt'))]
    pinned = [r for r in pinned if [s.operator for s in r.specifier] == ['==']]
    assert pinned
    for req in pinned:
        assert lock[canonicalize_name(req.name)] == req.specifier, req


def test_python_running_the_suite_is_declared(repo_root):
    # python_requires and the classifiers state the Pythons the suite has passed on: every
    # environment that runs it must be one of them, and the two must agree.
    kw = _setup_keywords(repo_root)
    python_requires = SpecifierSet(kw['python_requires'])
    declared = [c.rsplit(' :: ', 1)[1] for c in kw['classifiers']
                if re.fullmatch(r'Programming Language :: Python :: 3\.\d+', c)]
    running = '{}.{}'.format(*sys.version_info[:2])
    assert running in declared, (running, declared)
    assert platform.python_version() in python_requires
    for version in declared:
        assert python_requires.contains(version + '.0'), (version, kw['python_requires'])
    # Nothing between the declared versions is left out, nothing older admitted (newer Pythons
    # are not refused; the classifiers say which ran).
    minors = sorted(int(v.split('.')[1]) for v in declared)
    assert minors == list(range(minors[0], minors[-1] + 1))
    assert not python_requires.contains('3.{}.0'.format(minors[0] - 1))
