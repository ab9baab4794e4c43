"""SK inserted into a trained detector: its checkpoint loads whole, nothing changes (features
and predictions) until SK learns, and SK learns.

For the shipped configs that insert SK into a detector's own weights (Faster R-CNN R-50 with
SK blocks or SKConv, YOLOX-s, RTMDet-tiny and -s) and for Mask R-CNN, which no config here is
written for (the Faster R-CNN config's delta applied to MMDetection's Mask R-CNN base, as a
user would). The plain detector's weights are made trained-like first: every BatchNorm gets
non-trivial affine parameters and running statistics (a freshly built ResNet ends each block
with a zero BN, ``zero_init_residual``, and would hide a block that is not the identity).
"""
import os.path as osp
import re
import shutil

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MessageHub

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.utils.checkpoint import new_weights_summary
from mmdet_sk.utils.preflight import find_config_nodes
from sk_test_utils import with_running_stats

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FASTER = 'configs/faster_rcnn_r50_sk_fpn.py'
CASES = {
    'faster_rcnn': (FASTER, 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    'yolox_s': ('configs/yolox_s_sk_8xb8-300e_coco.py', 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'),
    'mask_rcnn': (None, 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'),
    'faster_rcnn_skconv': ('configs/faster_rcnn_r50_skconv_fpn.py',
                           'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    'rtmdet_tiny': ('configs/rtmdet_tiny_sk_8xb32-300e_coco.py',
                    'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'),
    'rtmdet_s': ('configs/rtmdet_s_sk_8xb32-300e_coco.py',
                 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'),
}


def _configs(case, tmp_path):
    sk_config, base = CASES[case]
    if sk_config is None:  # the Faster R-CNN delta on another detector's base
        text = open(osp.join(REPO, FASTER)).read()
        text = re.sub(r"'mmdet::[^']*'", f"'{base}'", text, count=1)
        # Its other base (configs/_base_/sk_runtime.py) where its relative path finds it.
        shutil.copytree(osp.join(REPO, 'configs', '_base_'), tmp_path / '_base_')
        sk_config = tmp_path / 'sk_delta.py'
        sk_config.write_text(text)
    sk_cfg = Config.fromfile(osp.join(REPO, sk_config))
    plain_cfg = get_config(base)
    for cfg in (sk_cfg, plain_cfg):
        cfg.model.backbone.init_cfg = None  # no download of ImageNet weights in tests
        if 'rpn' in cfg.model.get('train_cfg', {}):
            # Every anchor sampled: the coarsest level (P6, 2x2 at 128 px) is seen only
            # through the RPN, whose sampler would otherwise pick a few of its anchors by chance.
            cfg.model.train_cfg.rpn.sampler.num = 100000
        # Every box kept, however low its score or small its size: random heads score every
        # class low (and RTMDet's regress boxes of negative width), and the predictions
        # compared must not be empty by a threshold.
        for _, node in find_config_nodes(cfg.model.test_cfg, 'score_thr'):
            node['score_thr'] = 0.0
        for _, node in find_config_nodes(cfg.model.test_cfg, 'min_bbox_size'):
            node['min_bbox_size'] = -1
    return sk_cfg, plain_cfg


def _trained_like(model):
    model.init_weights()
    return with_running_stats(model, gates=False)


def _sk_blocks(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, (SKAttention, SKConv))}


@pytest.fixture(scope='module', params=list(CASES))
def pair(request, tmp_path_factory):
    """(SK detector with the plain one's weights loaded, the trained-like plain detector)."""
    sk_cfg, plain_cfg = _configs(request.param, tmp_path_factory.mktemp(request.param))
    torch.manual_seed(0)
    plain = _trained_like(MODELS.build(plain_cfg.model))
    sk = MODELS.build(sk_cfg.model)
    sk.init_weights()
    result = sk.load_state_dict(plain.state_dict(), strict=False)
    return request.param, sk, plain, result


def test_plain_checkpoint_loads_whole(pair):
    case, sk, plain, result = pair
    assert not result.missing_keys and not result.unexpected_keys
    blocks = _sk_blocks(sk)
    assert all(m.gate is not None for m in blocks.values())
    new = set(sk.state_dict()) - set(plain.state_dict())
    assert new and all(k.startswith(tuple(n + '.' for n in blocks)) for k in new)
    for key, value in plain.state_dict().items():
        assert torch.equal(sk.state_dict()[key], value), key
    summary = new_weights_summary(sk, plain.state_dict())
    new = [k for k in new if 'num_batches' not in k]
    values = sum(sk.state_dict()[k].numel() for k in new)
    assert (f'{len(new)} tensors ({values:,} values) new in {len(blocks)} SK blocks keep '
            f'their initialisation (gate=True: each computes what it replaced') in summary
    assert 'other tensors are missing' not in summary


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_sk_detector_computes_what_the_plain_one_computes(pair, mode):
    case, sk, plain, _ = pair
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (plain, sk):
        getattr(model, mode)()
        with torch.no_grad():
            outs.append(model.extract_feat(x))
    # Not an identity by accident: the maps differ from level to level and are not zero.
    assert len(outs[0]) == len(outs[1]) and outs[0][0].abs().sum() > 0
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def _num_classes(model):
    return (model.roi_head.bbox_head.num_classes if hasattr(model, 'roi_head')
            else model.bbox_head.num_classes)


def test_sk_detector_predicts_what_the_plain_one_predicts(pair):
    case, sk, plain, _ = pair
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 96, 128]], num_items=[3, 2],
                            num_classes=_num_classes(plain), with_mask=case == 'mask_rcnn')
    results = []
    for model in (plain, sk):
        model.eval()
        with torch.no_grad():
            results.append(model(**model.data_preprocessor(packed, False), mode='predict'))
    fields = ('bboxes', 'scores', 'labels') + (('masks', ) if case == 'mask_rcnn' else ())
    for a, b in zip(*results):
        a, b = a.pred_instances, b.pred_instances
        assert len(a) > 10 and a.scores.max() > a.scores.min()
        for field in fields:
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_sk_learns_from_the_first_steps(pair):
    case, sk, plain, _ = pair
    sk.train()
    blocks = _sk_blocks(sk)
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 128]], num_items=[3, 2],
                            num_classes=_num_classes(sk), with_mask=case == 'mask_rcnn')
    MessageHub.get_current_instance().update_info('iter', 0)  # YOLOX's batch resize reads it
    params = [p for m in blocks.values() for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    grads = []
    for _ in range(2):
        opt.zero_grad()
        data = sk.data_preprocessor(packed, True)
        total, _ = sk.parse_losses(sk(**data, mode='loss'))
        total.backward()
        grads.append({f'{b}.{n}': p.grad.abs().sum().item() if p.grad is not None else 0.0
                      for b, m in blocks.items() for n, p in m.named_parameters()})
        opt.step()
    gates = [k for k in grads[0] if k.endswith('.gate')]
    assert len(gates) == len(blocks)
    assert not [k for k in gates if not grads[0][k] > 0], grads[0]
    dead = [k for k, v in grads[1].items() if not v > 0]
    assert not dead, f'no gradient at step 2: {dead[:5]}'
