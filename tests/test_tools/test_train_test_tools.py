"""End to end through the command-line tools, as a user runs them."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmdet_sk.datasets import data_root_options

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'


# Small batches, no worker processes, a log line and a checkpoint every iteration.
_FAST_OPTIONS = [
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
    'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
    'test_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=3'
]


def _data_options(root):
    return data_root_options(root) + _FAST_OPTIONS


def _tool(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_train_evaluate_resume_and_test(tiny_coco, tmp_path):
    work = tmp_path / 'work'
    opts = _data_options(tiny_coco)
    out = _tool('tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
                'train_cfg.max_iters=2', 'train_cfg.val_interval=2', *opts)
    assert 'coco/bbox_mAP' in out
    assert osp.isfile(work / 'iter_2.pth')
    ckpt = torch.load(work / 'iter_2.pth', map_location='cpu')  # the safe loader, allow-listed
    assert ckpt['meta']['iter'] == 2

    # --resume picks up the last checkpoint and continues from its iteration.
    out = _tool('tools/train.py', CONFIG, '--work-dir', str(work), '--resume', '--cfg-options',
                'train_cfg.max_iters=3', 'train_cfg.val_interval=3', *opts)
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/3]' in out and 'Iter(train) [1/3]' not in out
    assert torch.load(work / 'iter_3.pth', map_location='cpu')['meta']['iter'] == 3

    # tools/test.py evaluates the checkpoint and draws the predictions.
    out = _tool('tools/test.py', CONFIG, str(work / 'iter_3.pth'), '--work-dir',
                str(tmp_path / 'test'), '--show-dir', 'vis', '--cfg-options', *opts)
    assert 'coco/bbox_mAP' in out
    drawn = list((tmp_path / 'test').glob('*/vis/*.jpg'))
    assert len(drawn) == 8


def _scratch_result(path, sk_config, plain_config):
    """A made-up ``sk_scratch.json`` whose demo is ``sk_config`` against ``plain_config``."""
    stats = lambda v: dict(mean=sum(v) / 3, std=0.01, n=3, values=v)  # noqa: E731
    diff = dict(stats([0.01, 0.02, 0.03]), wins=3, signed=True)
    result = dict(
        demo=dict(arm='sk', config=sk_config, plain_arm='plain', plain_config=plain_config,
                  decided=True, beats_plain=True, why='sk beats its plain arm by +0.020'),
        table=dict(sk=dict(label='R-18 + SK', mAP=stats([0.41, 0.42, 0.43]), vs_plain=diff,
                           vs_plain_verdict='higher'),
                   plain=dict(label='R-18', mAP=stats([0.40, 0.40, 0.40]))))
    path.write_text(json.dumps(result))
    return str(path)


def test_run_demo_prints_the_coco_summary_of_its_test_run(tiny_coco, tmp_path):
    # the demo trains what the from-scratch experiment chose, and prints its paired result
    chosen = _scratch_result(tmp_path / 'sk_scratch.json', CONFIG,
                             'configs/demo/faster-rcnn_r18_fpn_shapes.py')
    out = _tool('tools/run_demo.py', '--work-dir', str(tmp_path / 'demo'), '--data-root',
                str(tiny_coco), '--scratch-result', chosen, '--cfg-options',
                'train_cfg.max_iters=2', 'train_cfg.val_interval=2', *_FAST_OPTIONS)
    summary = out[out.index('=== mmdet-sk demo'):].splitlines()
    assert summary[0] == '=== mmdet-sk demo: faster-rcnn_r18_sk_fpn_shapes'
    assert summary[5:10] == [
        f'From scratch, paired seeds ({chosen}, make scratch), COCO bbox mAP:',
        '  R-18 + SK: 0.420 ± 0.010 (0.410, 0.420, 0.430)',
        '  R-18: 0.400 ± 0.010 (0.400, 0.400, 0.400)',
        '  paired difference: +0.020 ± 0.010 (+0.010, +0.020, +0.030), higher in 3 of 3 seeds: '
        'higher', '  sk beats its plain arm by +0.020']
    values = dict(item.split('=') for item in summary[1].split()[2:])
    assert list(values) == ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
    test_runs = list((tmp_path / 'demo' / 'test').glob('*/*.json'))
    assert len(test_runs) == 1
    metrics = json.loads(test_runs[0].read_text())
    assert {k: float(v) for k, v in values.items()} == pytest.approx(
        {k: round(metrics[f'coco/bbox_{k}'], 3) for k in values}, abs=1e-9)
    drawn = summary[3].split(': ')[1]
    assert drawn == str(test_runs[0].parent / 'vis')
    assert len(list(test_runs[0].parent.glob('vis/*.jpg'))) == 8
    assert summary[2] == f'checkpoint: {tmp_path / "demo" / "iter_2.pth"}'


def test_run_demo_picks_the_chosen_detector_or_its_baseline(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('run_demo', osp.join(REPO, 'tools',
                                                                       'run_demo.py'))
    run_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_demo)
    chosen = _scratch_result(tmp_path / 'r.json', 'configs/demo/yolox_tiny_sk_shapes.py',
                             'configs/demo/yolox_tiny_shapes.py')
    result = run_demo.scratch_result(chosen)
    pick = lambda *argv: run_demo.demo_config(run_demo.parse_args(argv), result)  # noqa: E731
    assert pick() == 'configs/demo/yolox_tiny_sk_shapes.py'
    assert pick('--baseline') == 'configs/demo/yolox_tiny_shapes.py'
    assert pick('--config', 'x.py') == 'x.py'
    # no experiment result yet: the SK demo as it was
    result = None
    assert pick() == run_demo.DEFAULT_CONFIG
    assert pick('--baseline') == run_demo.DEFAULT_BASELINE
    assert run_demo.paired_lines(run_demo.scratch_result(chosen), 'other.py') == []
    assert run_demo.scratch_result(str(tmp_path / 'none.json')) is None

