"""``pip install -e .`` into an environment that satisfies setup.py's ranges installs nothing else."""
import re
import subprocess
import sys


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
