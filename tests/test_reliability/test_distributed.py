"""Distributed training on CPU: ``tools/dist_train.sh CONFIG 2`` (DDP over gloo), SyncBN,
and ``tools/dist_test.sh``.

Two processes with batch 2 must train like one process with batch 4: the same images per
iteration, the same loss curve within tolerance, replicas that stay identical, and final
weights that differ from the single-process ones by a small fraction of what training changed.
What cannot match exactly, and is removed or bounded here:

* BatchNorm statistics are per process without SyncBN (which does not train on CPU, see
  below): the backbone runs with ``norm_eval=True``; the SK blocks (whose norms train under
  ``norm_eval`` too) keep training-mode BN, computed over 2 images instead of 4.
* The proposal samplers draw from each process's own random stream: they take every
  candidate here (``num=100000``), so no draw happens.
* Each process normalises its losses by its own number of samples, and DDP averages the two
  gradients: a weighted mean, not the global mean (a small difference, e.g. in ``loss_bbox``).
"""
import json
import socket
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.model import convert_sync_batchnorm

from mmdet_sk.datasets import data_root_options
from mmdet_sk.models.layers import SKAttention
from reliability_utils import (DEMO_SK, REPO, run_preflight, tool, tool_env,
                               weights, write_config)
from sk_test_utils import with_running_stats

EXTRA = """
model = dict(
    backbone=dict(norm_eval=True),
    train_cfg=dict(rpn=dict(sampler=dict(num=100000)), rcnn=dict(sampler=dict(num=100000))))
param_scheduler = []
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def read(path):
    lines = [json.loads(line) for line in open(path)]
    return [r for r in lines if 'iter' in r], [r for r in lines if 'param_hashes' in r][0]


def test_two_processes_train_like_one_with_the_doubled_batch(tiny_coco, tmp_path):
    def config(name, batch_size):
        recorder = dict(type='RecorderHook', out_file=str(tmp_path / f'{name}.jsonl'))
        return write_config(tmp_path / f'{name}.py', tiny_coco, max_iters=3,
                            batch_size=batch_size, lr=0.005, flip=False, extra=EXTRA,
                            custom_hooks=[recorder])

    tool('train.py', config('single', 4), '--work-dir', str(tmp_path / 'single'))
    env = dict(tool_env(), PYTHON=sys.executable, PORT=str(free_port()))
    # Each rank destroys its process group before it exits (launch.close_process_group):
    # without that, a rank could abort at exit ("terminate called without an active
    # exception", see its docstring).
    proc = subprocess.run(['tools/dist_train.sh', config('ddp', 2), '2', '--work-dir',
                           str(tmp_path / 'ddp')], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=170)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert 'Distributed launcher: pytorch' in proc.stdout + proc.stderr

    single, single_end = read(tmp_path / 'single.jsonl')
    ddp, ddp_end = read(tmp_path / 'ddp.jsonl')
    assert len(single) == len(ddp) == 3
    # The two processes together see exactly the single process's batches.
    assert [r['img_ids'] for r in ddp] == [r['img_ids'] for r in single]
    assert all(len(r['img_ids']) == 4 for r in ddp)
    # DDP keeps the replicas identical.
    assert len(set(ddp_end['param_hashes'])) == 1 and len(ddp_end['param_hashes']) == 2
    # The same loss curve, within tolerance; the curve itself moves far more than that.
    for key in ('loss', 'loss_cls', 'loss_rpn_cls'):
        rel = [abs(a[key] - b[key]) / abs(b[key]) for a, b in zip(ddp, single)]
        print(key, 'single', [round(r[key], 5) for r in single], 'ddp',
              [round(r[key], 5) for r in ddp], 'max rel diff', f'{max(rel):.1e}')
        assert max(rel) < 1e-2
    assert single[0]['loss'] - single[-1]['loss'] > 20 * max(
        abs(a['loss'] - b['loss']) for a, b in zip(ddp, single))
    # Final weights: the difference is small against what the last iteration changed.
    w_ddp, w_one = weights(tmp_path / 'ddp' / 'iter_3.pth'), weights(tmp_path / 'single' /
                                                                       'iter_3.pth')
    w_before = weights(tmp_path / 'single' / 'iter_2.pth')
    keys = [k for k, v in w_one.items() if v.is_floating_point() and 'running' not in k]

    def norm(a, b):
        return sum(((a[k] - b[k]).double()**2).sum() for k in keys).sqrt().item()

    ratio = norm(w_ddp, w_one) / norm(w_one, w_before)
    print(f'|w_ddp - w_single| / |w_single(3) - w_single(2)| = {ratio:.3f}')
    assert ratio < 0.15

    # tools/dist_test.sh evaluates the checkpoint with 2 processes.
    env['PORT'] = str(free_port())
    proc = subprocess.run(['tools/dist_test.sh', config('ddp', 2), str(tmp_path / 'ddp' /
                                                                       'iter_3.pth'), '2',
                           '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                           *[o for o in data_root_options(tiny_coco) if o.startswith('test')],
                           'test_dataloader.num_workers=0',
                           'test_dataloader.persistent_workers=False'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert 'Iter(test) [1/1]' in proc.stdout + proc.stderr and 'coco/bbox_mAP' in proc.stdout


@pytest.fixture
def sk_detector():
    cfg = Config.fromfile(DEMO_SK)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    return with_running_stats(MODELS.build(cfg.model))


def test_syncbn_conversion_reaches_sk_blocks(sk_detector):
    """MMEngine's ``sync_bn='torch'`` conversion turns every BN, SK's included, into
    SyncBatchNorm, keeping the weights; eval-mode outputs are unchanged on CPU. The norms are
    trained-like and the SK gates open, so that the SK norms count in the outputs."""
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = sk_detector.extract_feat(x)
        gates = [m.gate for m in sk_detector.modules() if isinstance(m, SKAttention)]
        opened = [g.clone() for g in gates]
        for g in gates:
            g.zero_()
        closed = sk_detector.extract_feat(x)
        for g, value in zip(gates, opened):
            g.copy_(value)
    # The SK blocks act on every output: closing their gates changes each of them.
    assert all(not torch.allclose(a, b) for a, b in zip(before, closed))
    num_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in sk_detector.modules())
    model = convert_sync_batchnorm(sk_detector, 'torch').eval()  # new norms are in train mode
    sk_blocks = [m for m in model.modules() if isinstance(m, SKAttention)]
    assert len(sk_blocks) == 10
    for block in sk_blocks:
        norms = [branch.bn for branch in block.convs]
        assert all(type(n) is torch.nn.SyncBatchNorm for n in norms)
    assert sum(type(m) is torch.nn.SyncBatchNorm for m in model.modules()) == num_bn
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    with torch.no_grad():
        after = model.extract_feat(x)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_syncbn_in_cpu_distributed_training_is_refused_up_front(monkeypatch, tiny_coco):
    """torch's SyncBatchNorm raises "expected input tensor to be on GPU" in CPU training with a
    process group; the launcher's preflight says so before any process trains."""
    if torch.cuda.is_available():
        pytest.skip('SyncBN trains on GPUs')
    with pytest.raises(ValueError, match=r"sync_bn='torch' with --launcher pytorch needs GPUs"):
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--launcher', 'pytorch',
                      '--cfg-options', 'sync_bn=torch', *data_root_options(tiny_coco))
    with pytest.raises(ValueError, match=r"model.backbone.norm_cfg.type='SyncBN' with "
                       r'--launcher pytorch needs GPUs'):
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--launcher', 'pytorch',
                      '--cfg-options', 'model.backbone.norm_cfg.type=SyncBN',
                      *data_root_options(tiny_coco))
    run_preflight(monkeypatch, 'train.py', DEMO_SK, '--cfg-options', 'sync_bn=torch',
                  *data_root_options(tiny_coco))  # without a launcher MMEngine does not convert
