"""A non-editable install: the package's wheel, installed apart from the checkout, trains a demo
config through MMDetection's own ``tools/train.py`` (the config's ``custom_imports`` import it).

The environment is a fresh venv that sees this environment's packages (torch, mmcv, mmdet, ...)
through a ``.pth`` file of plain paths: a ``.pth`` file in those folders is not run, so the
editable install of the checkout is not either, and the wheel's ``mmdet_sk`` is the only one.
"""
import glob
import os
import os.path as osp
import re
import shutil
import site
import subprocess
import sys
import venv

import mmdet

from mmdet_sk.datasets import data_root_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_sk_fpn_shapes.py')
MMDET_TRAIN = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
# What a wheel is not built from: environments, outputs, data and the repository's own files.
NOT_SOURCE = {'.git', 'build', 'checkpoints', 'data', 'docs', 'tests', 'work_dirs'}
# Two iterations at batch 2 and the final validation, in the test's own process tree.
OPTIONS = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=2',
    'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1'
]
# Run MMDetection's train.py as a script, then say where the mmdet_sk it imported lies.
RUN_AND_REPORT = ('import runpy, sys; sys.argv = sys.argv[1:]; '
                  "runpy.run_path(sys.argv[0], run_name='__main__'); "
                  "print('MMDET_SK_FILE', sys.modules['mmdet_sk'].__file__)")


def _ignore(folder, names):
    """Leave out what a source tree does not ship (built in a copy: the checkout stays as it
    is, no ``build/`` or ``*.egg-info`` appear in it)."""
    top = osp.abspath(folder) == REPO
    return [n for n in names if n == '__pycache__' or n.endswith('.egg-info') or (
        top and (n in NOT_SOURCE or n.startswith('.venv')))]


def _run(cmd, cwd, **kw):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _fresh_env(path):
    """A venv without packages but for a ``.pth`` of this environment's site folders; its
    Python and its site-packages folder."""
    venv.EnvBuilder(with_pip=False).create(str(path))
    python = str(path / 'bin' / 'python')
    purelib = _run([python, '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=str(path)).strip()
    with open(osp.join(purelib, 'environment.pth'), 'w') as f:
        f.write('\n'.join(site.getsitepackages()) + '\n')
    return python, purelib


def test_wheel_trains_a_demo_config_with_mmdetections_train_py(tiny_coco, tmp_path):
    source = tmp_path / 'src'
    shutil.copytree(REPO, source, ignore=_ignore)
    _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
          '--no-index', '-w', str(tmp_path / 'dist'), str(source)], cwd=str(tmp_path))
    wheel, = glob.glob(str(tmp_path / 'dist' / 'mmdet_sk-*.whl'))

    python, purelib = _fresh_env(tmp_path / 'venv')
    _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', '--target',
          purelib, wheel], cwd=str(tmp_path))
    installed = osp.join(purelib, 'mmdet_sk', '__init__.py')
    assert osp.isfile(installed)

    work = tmp_path / 'work'
    run = tmp_path / 'run'  # not the checkout: its mmdet_sk must not be importable
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = _run([python, '-c', RUN_AND_REPORT, MMDET_TRAIN, CONFIG, '--work-dir', str(work),
                '--cfg-options'] + data_root_options(tiny_coco) + OPTIONS,
               cwd=str(run), env=env, timeout=300)
    assert 'coco/bbox_mAP' in out
    assert osp.isfile(work / 'iter_2.pth')
    used = re.search(r'^MMDET_SK_FILE (.*)$', out, re.MULTILINE).group(1)
    assert used == installed and not used.startswith(REPO + os.sep), used
