"""Run ``tools/train.py`` and ``tools/test.py`` on the tiny set as a user does, for the tests."""
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional

import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
DEMO_SK = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_sk_fpn_shapes.py')

# The SK demo detector, trained only (no validation) on the tiny set with batch 2, no
# worker processes, deterministic, SGD with momentum (the demo's AdamW replaced, so that the
# tests do not follow the demo's tuning) at a learning rate that moves the weights within a
# few iterations, a scheduler whose state matters, and checkpoints every 2 iterations.
CONFIG = """
_base_ = {base!r}
custom_imports = dict(imports=['mmdet_sk', 'reliability_hooks'], allow_failed_imports=False)
randomness = dict(seed=0, deterministic=True)
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r}{pipeline}))
val_cfg = None
val_dataloader = None
val_evaluator = None
train_cfg = dict(max_iters={max_iters})
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr={lr}, momentum=0.9, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                        end={max_iters})]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(type={hook!r}, interval=2, max_keep_ckpts={keep}))
custom_hooks = {custom_hooks}
"""


# The demo's training pipeline without its random flip.
NO_FLIP = """[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(192, 192), keep_ratio=True),
        dict(type='PackDetInputs')]"""


def write_config(path, root, max_iters=6, batch_size=2, lr=0.02, hook='AtomicCheckpointHook',
                 keep=2, custom_hooks=(), flip=True, extra: str = '') -> str:
    """Write a config deriving from the SK demo config; return its path.

    ``extra`` is appended; it must not assign ``train_dataloader`` (that would replace the
    one above, not merge with it).
    """
    text = CONFIG.format(base=DEMO_SK, root=str(root) + '/', max_iters=max_iters,
                         batch_size=batch_size, lr=lr, hook=hook, keep=keep,
                         custom_hooks=list(custom_hooks),
                         pipeline='' if flip else f', pipeline={NO_FLIP}')
    with open(path, 'w') as f:
        f.write(text + extra)
    return str(path)


def tool_env() -> dict:
    """The environment of a tool run: one thread, and this folder importable for the hooks."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (HERE, env.get('PYTHONPATH')) if p)
    return env


def run(args: List[str], timeout: float = 170) -> subprocess.CompletedProcess:
    """Run a command in the repository and return it, whatever its exit status."""
    return subprocess.run(args, cwd=REPO, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)


def tool(name: str, *args: str, expect_rc: Optional[int] = 0) -> str:
    """Run ``tools/<name>`` with ``args``; check its exit status; return its output."""
    proc = run([sys.executable, osp.join('tools', name), *args])
    out = proc.stdout + proc.stderr
    if expect_rc is not None:
        assert proc.returncode == expect_rc, f'exit status {proc.returncode}:\n{out[-4000:]}'
    return out


class Background:
    """A tool run in the background (the tests' runs are single-threaded; CI has 2 cores)."""

    def __init__(self, name: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, osp.join('tools', name), *args], cwd=REPO,
                                     env=tool_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.out = None

    def wait(self, expect_rc: int = 0, timeout: float = 170) -> str:
        """Wait for the run, check its exit status and return its output."""
        if self.out is None:
            self.out = self.proc.communicate(timeout=timeout)[0]
        assert self.proc.returncode == expect_rc, \
            f'exit status {self.proc.returncode}:\n{self.out[-4000:]}'
        return self.out


def run_preflight(monkeypatch, name: str, *argv: str) -> None:
    """Run the preflight of ``tools/<name> argv`` in this process, as the tool does."""
    from mmdet_sk.utils.launch import load_tool_config, mmdet_tool_path
    from mmdet_sk.utils.preflight import preflight
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv', [name, *argv])
    args, cfg = load_tool_config(mmdet_tool_path(name))
    preflight(name, args, cfg)


def weights(path) -> dict:
    """The state dict of a checkpoint."""
    return torch.load(path, map_location='cpu')['state_dict']


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)
