"""mmdet_sk.analysis.sk_output_change: how far each SK site moves its input."""
import pytest
import torch
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config

from mmdet_sk.analysis import sk_output_change
from mmdet_sk.datasets import data_root_options
from mmdet_sk.models.layers import SKConv
from sk_test_utils import RandomImages, build_detector

CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SKCONV_CONFIG = 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py'
SITES = ['backbone.layer2', 'backbone.layer3', 'backbone.layer4', 'neck.level1',
         'neck.level2', 'neck.level3', 'neck.level4']


@pytest.fixture(scope='module')
def model_and_data(tiny_coco):
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(tiny_coco)))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval(), DATASETS.build(cfg.test_dataloader.dataset)


def test_gated_sk_at_init_moves_nothing_then_moves_with_its_gate(model_and_data):
    model, dataset = model_and_data
    usage = sk_output_change(model, dataset, [0, 1])
    assert list(usage) == SITES
    assert all(v['rel_change'] == 0.0 and v['gate_abs_mean'] == 0.0 for v in usage.values())
    assert [v['blocks'] for v in usage.values()] == [2, 2, 2, 1, 1, 1, 1]
    # Neck gates only: the neck's inputs stay those of the plain detector, so each level
    # moves by exactly s times what the bare block does.
    neck_gates = [m.gate for m in model.neck.level_plugins.plugins]
    change = {}
    for s in (0.5, 1.0):
        with torch.no_grad():
            for g in neck_gates:
                g.fill_(s)
        change[s] = sk_output_change(model, dataset, [0, 1])
    with torch.no_grad():
        for g in neck_gates:
            g.zero_()
    for site in SITES:
        if site.startswith('backbone'):
            assert change[1.0][site]['rel_change'] == 0.0
            continue
        assert change[1.0][site]['gate_abs_mean'] == 1.0
        assert change[1.0][site]['rel_change'] > 0.01
        assert change[0.5][site]['rel_change'] == pytest.approx(
            0.5 * change[1.0][site]['rel_change'], rel=1e-4)


def test_gated_skconv_is_its_conv_at_init_then_moves_with_its_gate():
    """SKConv's reference is the replaced conv: ``||out - conv(x)|| / ||conv(x)||``."""
    model = build_detector(SKCONV_CONFIG)
    images = RandomImages(2)
    usage = sk_output_change(model, images, [0, 1])
    assert list(usage) == SITES[:3]
    assert [v['blocks'] for v in usage.values()] == [2, 2, 2]
    assert all(v['rel_change'] == 0.0 and v['gate_abs_mean'] == 0.0 for v in usage.values())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SKConv):
                m.gate.fill_(0.5)
    usage = sk_output_change(model, images, [0, 1])
    assert all(v['rel_change'] > 0.01 and v['gate_abs_mean'] == 0.5 for v in usage.values())
