"""Export and BatchNorm folding of the SK detectors.

* ``torch.export.export`` takes the SK block and the demo detector's backbone + neck (ResNet-18
  with SK, FPN with SK on P3-P6) whole; the exported programs match eager on new inputs.
* ``torch.onnx.export`` (torch 2.13's default, ``torch.export``-based exporter: needs ``onnx``
  and ``onnxscript``) exports the backbone + neck of both shipped SK detectors; ONNX Runtime
  (``CPUExecutionProvider``) reproduces PyTorch's eval-mode features on a new input within
  1e-4 of each output's largest magnitude (measured on this project's CPU: up to 3e-6).
* ``mmcv.cnn.fuse_conv_bn(model)`` folds every BatchNorm of the eval-mode detector, SK's
  branch norms included, into the convolution before it; features and head outputs are
  unchanged within 1e-5 (relative to each output's magnitude).
"""
import os.path as osp

import numpy as np
import onnxruntime as ort
import pytest
import torch
from mmcv.cnn import fuse_conv_bn
from mmdet.registry import MODELS
from mmengine.config import Config
from torch import nn

from mmdet_sk.models.layers import SKAttention
from sk_test_utils import requires_torch, with_running_stats
from reliability_utils import DEMO_SK, REPO


class BackboneNeck(nn.Module):
    """The detector's ``extract_feat``: backbone, then neck (whatever its SK attachment)."""

    def __init__(self, detector):
        super().__init__()
        self.backbone, self.neck = detector.backbone, detector.neck

    def forward(self, x):
        return self.neck(self.backbone(x))


@pytest.fixture
def detector():
    cfg = Config.fromfile(DEMO_SK)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    return with_running_stats(MODELS.build(cfg.model))


def close(a, b, rtol=1e-5):
    """Equal within ``rtol`` of the larger magnitude of the two."""
    return (a - b).abs().max() <= rtol * max(a.abs().max(), b.abs().max(), 1e-12)


def test_sk_block_exports():
    block = with_running_stats(SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32))
    program = torch.export.export(block, (torch.rand(2, 64, 16, 16), ))
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        assert close(program.module()(x), block(x))


def test_backbone_and_neck_export(detector):
    net = BackboneNeck(detector).eval()
    program = torch.export.export(net, (torch.rand(1, 3, 128, 128), ))
    # torch 2.13 exports aten.conv2d, torch 2.1 lowers it to aten.convolution
    assert sum(any(op in str(n.target) for op in ('conv2d', 'convolution'))
               for n in program.graph.nodes) > 40
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        eager, exported = net(x), program.module()(x)
    assert len(eager) == len(exported) == 5
    assert all(close(a, b) for a, b in zip(exported, eager))


# The shipped SK detectors and their number of feature levels (FPN P2-P6, PAFPN 3).
SHIPPED = [('configs/faster_rcnn_r50_sk_fpn.py', 5), ('configs/yolox_s_sk_8xb8-300e_coco.py', 3)]


@requires_torch('2.6', 'torch.onnx.export with external_data (torch.export-based)')
@pytest.mark.parametrize('config,num_levels', SHIPPED)
def test_backbone_and_neck_onnx_export(config, num_levels, tmp_path):
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.init_cfg = None  # no download of ImageNet weights
    torch.manual_seed(0)
    net = with_running_stats(BackboneNeck(MODELS.build(cfg.model)))
    assert sum(isinstance(m, SKAttention) for m in net.modules()) > 0
    path = tmp_path / 'backbone_neck.onnx'
    torch.onnx.export(net, (torch.rand(1, 3, 128, 128), ), str(path), external_data=False,
                      verbose=False)

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        eager = [y.numpy() for y in net(x)]
    assert len(outputs) == len(eager) == num_levels
    for out, ref in zip(outputs, eager):
        assert out.shape == ref.shape
        diff = np.abs(out - ref).max()
        assert diff <= 1e-4 * np.abs(ref).max(), f'max abs diff {diff:.3g}'


def test_fuse_conv_bn_keeps_detector_outputs(detector):
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in detector.modules())
    num_sk_bn = sum(isinstance(branch.bn, nn.BatchNorm2d) for m in detector.modules()
                    if isinstance(m, SKAttention) for branch in m.convs)
    assert num_sk_bn == 20 and num_bn > num_sk_bn
    with torch.no_grad():
        feats = detector.extract_feat(x)
        rpn = detector.rpn_head(feats)
        rois = torch.tensor([[0, 4.0, 4.0, 60.0, 70.0], [0, 30.0, 10.0, 120.0, 90.0]])
        roi = detector.roi_head._bbox_forward(feats, rois)

    folded = fuse_conv_bn(detector)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        feats_f = folded.extract_feat(x)
        rpn_f = folded.rpn_head(feats_f)
        roi_f = folded.roi_head._bbox_forward(feats_f, rois)
    assert all(close(a, b) for a, b in zip(feats_f, feats))
    assert all(close(a, b) for level_a, level_b in zip(rpn_f, rpn)
               for a, b in zip(level_a, level_b))
    assert close(roi_f['cls_score'], roi['cls_score'])
    assert close(roi_f['bbox_pred'], roi['bbox_pred'])
