"""Every config in configs/ builds, counts its SK modules, and runs a loss and a predict step."""
import glob
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.logging import MessageHub

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.utils.preflight import find_config_nodes
from sk_test_utils import with_running_stats

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                            recursive=True)
    # configs/deploy/ holds MMDeploy's deploy configs, not models
    if '_base_' not in p and osp.join('configs', 'deploy') not in p)
# (SK modules in the backbone, SK modules in the neck): SKAttention blocks and SKConv units.
EXPECTED_SK = {
    'configs/faster_rcnn_r50_sk_fpn.py': (4 + 6 + 3, 4),
    'configs/yolox_s_sk_8xb8-300e_coco.py': (3, 3),
    'configs/rtmdet_tiny_sk_8xb32-300e_coco.py': (3, 3),
    'configs/rtmdet_s_sk_8xb32-300e_coco.py': (3, 3),
    'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py': (2 + 2 + 2, 4),
    'configs/demo/faster-rcnn_r18_fpn_shapes.py': (0, 0),
    'configs/faster_rcnn_r50_skconv_fpn.py': (4 + 6 + 3, 0),
    'configs/faster_rcnn_x50_fpn.py': (0, 0),
    'configs/faster_rcnn_x50_skconv_fpn.py': (4 + 6 + 3, 0),
    'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py': (2 + 2 + 2, 0),
    'configs/faster_rcnn_sknet50_fpn.py': (3 + 4 + 6 + 3, 0),
    'configs/retinanet_sknet50_fpn.py': (3 + 4 + 6 + 3, 0),
    'configs/mask_rcnn_sknet50_fpn.py': (3 + 4 + 6 + 3, 0),
    'configs/retinanet_sknet18_fpn.py': (2 + 2 + 2 + 2, 0),
    'configs/demo/faster-rcnn_sknet18_fpn_shapes.py': (2 + 2 + 2 + 2, 0),
    'configs/demo/yolox_tiny_shapes.py': (0, 0),
    'configs/demo/yolox_tiny_sk_shapes.py': (3, 3),
}
SK_TYPES = (SKAttention, SKConv)


def test_every_config_is_listed():
    assert set(CONFIGS) == set(EXPECTED_SK)


def _count(module):
    return sum(isinstance(m, SK_TYPES) for m in module.modules())


def _inherited(unit):
    """The keys of the conv an SKConv replaces: its output passes through a closed gate."""
    return getattr(unit, 'inherited_keys', ())


def _trained(unit):
    """``(name, parameter)`` of an SK unit's trained parameters, but for the branch convs'
    biases of an SKAttention in training mode: its branch BatchNorms subtract their batch
    means, so those biases have no effect and a gradient of rounding errors only."""
    return [(name, p) for name, p in unit.named_parameters() if p.requires_grad and not (
        unit.training and isinstance(unit, SKAttention)
        and re.fullmatch(r'convs\.\d+\.conv\.bias', name))]


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_trains_and_predicts(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.init_cfg = None  # no download of ImageNet weights in tests
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert (_count(model.backbone), _count(model.neck)) == EXPECTED_SK[config]
    # Trained-like norms, as the SK configs start from trained weights: a fresh ResNet block
    # ends in a zero-initialised norm, through which nothing before it in the block (an SK
    # plugin or unit included) gets a gradient. The gates stay closed, as the configs build them.
    with_running_stats(model, gates=False)

    num_classes = (cfg.model.roi_head.bbox_head.num_classes
                   if 'roi_head' in cfg.model else cfg.model.bbox_head.num_classes)
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 96, 128]], num_items=[3, 2],
                            num_classes=num_classes,
                            with_mask='mask_head' in cfg.model.get('roi_head', {}))
    model.train()
    MessageHub.get_current_instance().update_info('iter', 0)  # YOLOX's batch resize reads it
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    units = [m for m in model.modules() if isinstance(m, SK_TYPES)]
    assert bool(units) == (EXPECTED_SK[config] != (0, 0))
    if any(m.gate is not None for m in units):
        # A gated unit starts as the identity (gate 0): at the first step its gradient reaches
        # the gate and an SKConv's replaced conv only; a (small) SGD step opens the gates, and
        # the second step reaches every weight.
        for m in units:
            for name, p in _trained(m):
                assert bool(p.grad.any()) == (name == 'gate' or name in _inherited(m)), name
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        optimizer.step()
        optimizer.zero_grad()
        total, _ = model.parse_losses(model(**data, mode='loss'))
        total.backward()
    # Every SK weight outside the frozen stages (SKNet's stage 1 under frozen_stages=1) learns.
    idle = [name for m in units for name, p in _trained(m) if p.grad is None or not p.grad.any()]
    assert not idle

    model.eval()
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 2
    assert results[0].pred_instances.bboxes.shape[-1] == 4


def test_demo_classes_match_generator():
    from mmdet_sk.datasets import CLASSES
    for config in CONFIGS:
        if 'shapes' in config:
            assert tuple(Config.fromfile(osp.join(REPO, config)).classes) == CLASSES


def test_sk_configs_take_the_shared_runtime_settings():
    """The gates' optimiser settings and the checkpoint hook of configs/_base_/sk_runtime.py
    reach every SK config."""
    shared = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'sk_runtime.py'))
    assert set(shared.sk_gate_custom_keys) == {'.gate'}
    assert shared.sk_checkpoint_hook.type == 'AtomicCheckpointHook'
    gated = 0
    for config in CONFIGS:
        if EXPECTED_SK[config] == (0, 0):
            continue
        cfg = Config.fromfile(osp.join(REPO, config))
        # The shared hook, every key of it, merged into the base's (whose interval stays).
        hook = cfg.default_hooks.checkpoint
        assert {k: hook.get(k) for k in shared.sk_checkpoint_hook} == dict(
            shared.sk_checkpoint_hook), config
        gates = [node.get('gate', False) for _, node in find_config_nodes(cfg.model, 'type')
                 if node['type'] in ('SKAttention', 'SKConv')]
        if any(gates):
            assert all(gates), config
            gated += 1
            custom_keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
            assert custom_keys['.gate'] == shared.sk_gate_custom_keys['.gate'], config
    assert gated == 9


# (SKConv config, its baseline in tools/analysis_tools/benchmark_detector.py, the baseline's
# backbone type): the pair's models differ by the backbone's SKConv slot alone.
SKCONV_PAIRS = [
    ('configs/faster_rcnn_r50_skconv_fpn.py', 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
     'ResNet'),
    ('configs/faster_rcnn_x50_skconv_fpn.py', 'configs/faster_rcnn_x50_fpn.py', 'ResNeXt'),
    ('configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py',
     'configs/demo/faster-rcnn_r18_fpn_shapes.py', 'PluginResNet'),
]


def _benchmark_detector():
    """``tools/analysis_tools/benchmark_detector.py`` as a module, loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        'benchmark_detector', osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_detector.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unscoped(cfg):
    """``cfg`` without the ``_scope_`` keys a config based on ``mmdet::`` gets."""
    if isinstance(cfg, dict):
        return {k: _unscoped(v) for k, v in cfg.items() if k != '_scope_'}
    return cfg


@pytest.mark.parametrize('config, base, base_type', SKCONV_PAIRS)
def test_skconv_config_differs_from_its_baseline_by_sk_only(config, base, base_type):
    load_cfg = _benchmark_detector().load_cfg  # the configs as the benchmark loads its pairs
    sk = _unscoped(load_cfg(config).model.to_dict())
    plain = _unscoped(load_cfg(base).model.to_dict())
    sk_backbone, plain_backbone = sk.pop('backbone'), plain.pop('backbone')
    assert sk == plain
    assert plain_backbone.pop('type') == base_type
    assert sk_backbone.pop('type') == 'Plugin' + base_type.replace('Plugin', '')
    assert sk_backbone.pop('dcn')['type'] == 'SKConv'
    assert sk_backbone.pop('stage_with_dcn') == (False, True, True, True)
    assert sk_backbone == plain_backbone


# (SKNet config, MMDetection's config of the same detector with ResNet/ResNeXt, its depth).
SKNET_PAIRS = [
    ('configs/faster_rcnn_sknet50_fpn.py', 'configs/faster_rcnn_x50_fpn.py', 50),
    ('configs/retinanet_sknet50_fpn.py', 'mmdet::retinanet/retinanet_x101-32x4d_fpn_1x_coco.py',
     101),
    ('configs/mask_rcnn_sknet50_fpn.py', 'mmdet::mask_rcnn/mask-rcnn_x101-32x4d_fpn_1x_coco.py',
     101),
    ('configs/retinanet_sknet18_fpn.py', 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', 18),
]


@pytest.mark.parametrize('config, base, base_depth', SKNET_PAIRS)
def test_sknet_config_is_the_resnext_detector_with_sknet(config, base, base_depth):
    """Only the backbone's type, depth (of an X-101 base) and ImageNet weights differ."""
    load_cfg = _benchmark_detector().load_cfg
    sk = _unscoped(load_cfg(config).model.to_dict())
    plain = _unscoped(load_cfg(base).model.to_dict())
    sk_backbone, plain_backbone = sk.pop('backbone'), plain.pop('backbone')
    assert sk == plain
    assert sk_backbone.pop('type') == 'SKNet'
    assert plain_backbone.pop('type') in ('ResNet', 'ResNeXt')
    assert sk_backbone.pop('init_cfg') == dict(
        type='Pretrained', checkpoint=f'checkpoints/sknet{sk_backbone["depth"]}_timm.pth')
    plain_backbone.pop('init_cfg')
    assert plain_backbone.pop('depth') == base_depth
    sk_backbone.pop('depth')
    assert sk_backbone == plain_backbone
