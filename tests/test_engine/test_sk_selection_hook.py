"""SKSelectionHook: what it logs, when, and that it leaves nothing behind."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS as ROOT_HOOKS
from torch import nn

from mmdet_sk.analysis import sk_groups
from mmdet_sk.engine import SKSelectionHook
from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.models.necks import LevelPlugins
from sk_test_utils import build_detector

CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SKCONV_CONFIG = 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py'
SKCONV_STAGES = ['backbone.layer2', 'backbone.layer3', 'backbone.layer4']
SK = dict(type='SKAttention', kernels=(3, 3, 5), dilations=(1, 2, 1), groups=4, reduction=4,
          L=4)


class Block(nn.Module):

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.sk = SKAttention(c, **{k: v for k, v in SK.items() if k != 'type'})

    def forward(self, x):
        return self.sk(self.conv(x))


class TinyDetector(nn.Module):
    """backbone.layer1 (2 SK blocks), backbone.layer2 (1), neck = [identity, LevelPlugins]."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.layer1 = nn.Sequential(Block(8), Block(8))
        self.backbone.layer2 = nn.Sequential(Block(8))
        self.neck = nn.Sequential(nn.Identity(),
                                  LevelPlugins(8, num_levels=3, levels=(0, 2), plugin=SK))

    def forward(self, x):
        c1 = self.backbone.layer1(x)
        c2 = self.backbone.layer2(c1)
        return self.neck((c1, c2, c2))


class FakeVisualizer:

    def __init__(self):
        self.calls = []

    def add_scalars(self, scalars, step=0, **kwargs):
        self.calls.append((step, dict(scalars)))


def _sk_modules(model):
    return [m for m in model.modules() if isinstance(m, (SKAttention, SKConv))]


def _run(hook, model, iters, wrap=False, x=None, forward=None):
    """``iters`` iterations of ``forward(x)`` (default: ``model`` on a (2, 8, 6, 6) input)."""
    runner = SimpleNamespace(model=nn.DataParallel(model) if wrap else model, iter=0,
                             visualizer=FakeVisualizer())
    hook.before_train(runner)
    x = torch.randn(2, 8, 6, 6) if x is None else x
    forward = model if forward is None else forward
    for i in range(iters):
        runner.iter = i
        hook.before_train_iter(runner, i)
        due = (i + 1) % hook.interval == 0
        assert all(m.record_selection == due for m in _sk_modules(model))
        with torch.no_grad():
            forward(x)
        if not due:  # nothing is stored on the other iterations
            assert all(m.last_selection is None for m in _sk_modules(model))
        hook.after_train_iter(runner, i)
        assert all(not m.record_selection and m.last_selection is None
                   for m in _sk_modules(model))
    return runner.visualizer.calls, x


def test_groups_and_names():
    groups = sk_groups(TinyDetector())
    assert list(groups) == ['backbone.layer1', 'backbone.layer2', 'neck.level0', 'neck.level2']
    assert [len(g.modules) for g in groups.values()] == [2, 1, 1, 1]
    g = groups['backbone.layer1']
    assert g.labels == ['k3d1', 'k3d2', 'k5d1'] and g.erfs == [3, 5, 5]
    assert g.large_index == 1  # first of the tied largest receptive fields


@pytest.mark.parametrize('wrap', [False, True])
def test_logs_on_interval_only_with_batch_means(wrap):
    torch.manual_seed(0)
    model = TinyDetector().eval()
    calls, x = _run(SKSelectionHook(interval=2), model, iters=5, wrap=wrap)
    assert [step for step, _ in calls] == [2, 4]
    scalars = calls[0][1]
    assert len(scalars) == 4 * 3  # 4 groups x 3 branches
    for group in ('backbone.layer1', 'backbone.layer2', 'neck.level0', 'neck.level2'):
        values = [scalars[f'sk/{group}/{b}'] for b in ('k3d1', 'k3d2', 'k5d1')]
        assert all(0 < v < 1 for v in values)
        assert sum(values) == pytest.approx(1, abs=1e-6)

    # The value is the mean over batch, channels and the stage's modules.
    with torch.no_grad():
        h = model.backbone.layer1[0].conv(x)
        _, w0 = model.backbone.layer1[0].sk.branch_weights(h)
        h = model.backbone.layer1[1].conv(model.backbone.layer1[0].sk(h))
        _, w1 = model.backbone.layer1[1].sk.branch_weights(h)
    expected = (w0.mean((1, 2)) + w1.mean((1, 2))) / 2
    got = [scalars[f'sk/backbone.layer1/{b}'] for b in ('k3d1', 'k3d2', 'k5d1')]
    assert got == pytest.approx(expected.tolist(), abs=1e-6)


def test_skconv_detector_groups_and_logged_weights():
    """The demo detector with SKConv as conv2 of the BasicBlocks of c3-c5."""
    model = build_detector(SKCONV_CONFIG)
    groups = sk_groups(model)
    assert list(groups) == SKCONV_STAGES
    assert groups['backbone.layer2'].module_names == ['backbone.layer2.0.conv2',
                                                      'backbone.layer2.1.conv2']
    assert all(isinstance(m, SKConv) for g in groups.values() for m in g.modules)
    assert all(g.labels == ['k3d1', 'k3d2'] and g.large_index == 1 for g in groups.values())

    calls, _ = _run(SKSelectionHook(interval=2), model, iters=2,
                    x=torch.randn(2, 3, 64, 64), forward=model.extract_feat)
    ((step, scalars), ) = calls
    assert step == 2
    assert sorted(scalars) == sorted(f'sk/{s}/{b}' for s in SKCONV_STAGES
                                     for b in ('k3d1', 'k3d2'))
    for s in SKCONV_STAGES:
        assert scalars[f'sk/{s}/k3d1'] + scalars[f'sk/{s}/k3d2'] == pytest.approx(1, abs=1e-6)
        assert 0 < scalars[f'sk/{s}/k3d2'] < 1


def test_model_without_sk_and_bad_interval():
    calls, _ = _run(SKSelectionHook(interval=1), nn.Sequential(nn.Conv2d(8, 8, 1)), iters=2)
    assert calls == []
    with pytest.raises(ValueError, match='interval'):
        SKSelectionHook(interval=0)


def test_real_runner_writes_scalars_json_and_tensorboard(tiny_coco, tmp_path, repo_root):
    """Two iterations of the demo detector: only the second is due with interval=2.

    The visualizer is docs/tools.md's TensorBoard line (LocalVisBackend + TensorboardVisBackend):
    the scalars land in ``scalars.json`` and in a real TensorBoard event file, read back with
    TensorBoard's own reader. One run for both keeps the suite short.
    """
    from mmengine.runner import Runner
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = str(tiny_coco) + '/'
    cfg = Config.fromfile(f'{repo_root}/{CONFIG}')
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 100
    cfg.val_dataloader = cfg.test_dataloader = cfg.val_cfg = cfg.test_cfg = None
    cfg.val_evaluator = cfg.test_evaluator = None
    cfg.param_scheduler = None
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = None
    cfg.custom_hooks = [dict(type='SKSelectionHook', interval=2)]
    cfg.visualizer = dict(
        type='DetLocalVisualizer',
        vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')],
        name=f'visualizer_{tmp_path.name}')  # a new instance, not one an earlier test made
    runner = Runner.from_cfg(cfg)
    assert any(isinstance(h, SKSelectionHook) for h in runner.hooks)
    assert ROOT_HOOKS.get('SKSelectionHook') is SKSelectionHook  # found from any scope
    runner.train()  # the LoggerHook closes the visualizer at the end: the event file is flushed

    files = list(tmp_path.glob('*/vis_data/scalars.json'))
    assert len(files) == 1
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    sk_lines = [d for d in lines if any(k.startswith('sk/') for k in d)]
    assert [d['step'] for d in sk_lines] == [2]
    sk = {k: v for k, v in sk_lines[0].items() if k.startswith('sk/')}
    stages = ['backbone.layer2', 'backbone.layer3', 'backbone.layer4', 'neck.level1',
              'neck.level2', 'neck.level3', 'neck.level4']
    assert sorted(sk) == sorted(f'sk/{s}/{b}' for s in stages for b in ('k3d1', 'k3d2'))
    for s in stages:
        assert sk[f'sk/{s}/k3d1'] + sk[f'sk/{s}/k3d2'] == pytest.approx(1, abs=1e-6)
        assert 0 < sk[f'sk/{s}/k3d2'] < 1
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    assert all(not m.record_selection and m.last_selection is None
               for m in _sk_modules(model))

    event_files = list(tmp_path.glob('*/vis_data/events.out.tfevents.*'))
    assert len(event_files) == 1
    events = EventAccumulator(str(event_files[0]), size_guidance={'scalars': 0})
    events.Reload()
    tags = events.Tags()['scalars']
    assert 'loss' in tags  # the LoggerHook's scalars go there too
    assert sorted(t for t in tags if t.startswith('sk/')) == sorted(sk)
    for tag in sk:
        (event, ) = events.Scalars(tag)
        assert event.step == 2 and math.isfinite(event.value) and 0 <= event.value <= 1
        assert event.value == pytest.approx(sk[tag], abs=1e-6)  # float32 in the event file
