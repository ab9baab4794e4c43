"""Every SK config through MMDeploy to ONNX Runtime: ``end2end.onnx`` exported with the shipped
deploy configs (configs/deploy/), its detections equal to PyTorch's. Needs the deploy stack
(``make deploy``: mmdeploy 1.3.1, onnxruntime 1.15.1); skips elsewhere.

Each detector has random weights everywhere, trained-like BatchNorm statistics and its SK gates
open (``random_weights``: with the gates at 0, the initialisation, SK would be the identity and
prove nothing); it is saved, loaded back by MMDeploy's task processor as the tool loads it, and
exported at 128 x 128 (static; the tool's test exports the dynamic config). The graph has
ONNX's own operators only and runs in a plain ONNX Runtime session as in MMDeploy's. The ten
highest-scoring PyTorch detections of an image must each have an ONNX Runtime detection of the
same label with a box IoU above 0.999 and a score within 1e-4 (measured: docs/deploy.md), and
for Mask R-CNN a mask IoU above 0.99.

Detectors are compared under the rules of MMDeploy's export where they differ from
MMDetection's (docs/deploy.md measures the difference under the configs' own rules):

* its RPN runs one NMS over all levels and keeps zero-area proposals (MMDetection: one NMS per
  level, ``min_bbox_size``): the PyTorch detector's ``test_cfg.rpn`` gets
  ``nms.class_agnostic=True`` and ``min_bbox_size=-1``, and the RPN's regression conv is scaled
  down (x 0.1) so that proposals stay near their anchors, as a trained RPN's do (a random one
  pushes most of them off the image, clipped to zero area, leaving a few detections);
* its RoI head gives each RoI's detections of every class the box of the RoI's top class: the
  RoI head regresses every class with the first class's weights (one box per RoI, as a
  class-agnostic head; the scores stay random);
* its RTMDet graph does not clip boxes to the image (MMDetection clips them; neither clips
  YOLOX's): the boxes are compared clipped, and RTMDet's regression gives boxes half a stride
  wide so that few reach over the border (NMS compares the unclipped ones).
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.utils import deploy as sk_deploy
from sk_test_utils import build_detector, random_weights

pytest.importorskip('mmdeploy', reason='needs mmdeploy 1.3.1 (make deploy: the deploy stack, '
                    'docs/deploy.md); not in CI')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEPLOY = osp.join(REPO, 'configs', 'deploy')
DEMO_SK = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_sk_fpn_shapes.py')
SK_TYPES = ('SKAttention', 'SKConv', 'SKNet')


def sk_configs():
    """Every model config under configs/ with SK in its model."""
    paths = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                   if '_base_' not in p and not p.startswith(DEPLOY + osp.sep))
    return [osp.relpath(p, REPO) for p in paths
            if set(sk_deploy.sk_types_in(Config.fromfile(p).model)) & set(SK_TYPES)]


SK_CONFIGS = sk_configs()


def test_every_sk_config_of_the_issue_is_covered():
    assert {
        'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py',
        'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py',
        'configs/faster_rcnn_r50_sk_fpn.py', 'configs/faster_rcnn_r50_skconv_fpn.py',
        'configs/faster_rcnn_x50_skconv_fpn.py', 'configs/yolox_s_sk_8xb8-300e_coco.py',
        'configs/rtmdet_tiny_sk_8xb32-300e_coco.py', 'configs/rtmdet_s_sk_8xb32-300e_coco.py',
        'configs/faster_rcnn_sknet50_fpn.py', 'configs/retinanet_sknet50_fpn.py',
        'configs/retinanet_sknet18_fpn.py', 'configs/mask_rcnn_sknet50_fpn.py'
    } <= set(SK_CONFIGS)


def deploy_config(cfg: Config, static: bool = True) -> Config:
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    name = (f'{"instance-seg" if with_mask else "detection"}_onnxruntime_'
            f'{"static" if static else "dynamic"}.py')
    return Config.fromfile(osp.join(DEPLOY, name))


def write_image(path: str, h: int, w: int, seed: int = 0) -> str:
    import cv2
    import numpy as np
    cv2.imwrite(path, np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def mmdeploy_rules(cfg: Config) -> Config:
    """``cfg`` with the RPN's test-time rules of MMDeploy's export (see above)."""
    rpn = cfg.model.get('test_cfg', {}).get('rpn')
    if rpn is not None:
        rpn.nms.class_agnostic = True
        rpn.min_bbox_size = -1
    return cfg


def write_checkpoint(cfg: Config, path: str, rpn_scale: float = 0.1) -> str:
    """Random weights with trained-like norms and open gates, proposals near their anchors,
    one box per RoI, RTMDet's boxes of positive size."""
    model = random_weights(build_detector(cfg))
    with torch.no_grad():
        if hasattr(model, 'rpn_head'):  # proposals near their anchors, as a trained RPN's
            model.rpn_head.rpn_reg.weight.mul_(rpn_scale)
        head = getattr(getattr(model, 'roi_head', None), 'bbox_head', None)
        if head is not None and not head.reg_class_agnostic:
            # every class's box regressed with the first class's weights (see above)
            for p in (head.fc_reg.weight, head.fc_reg.bias):
                rows = p.view(head.num_classes, -1, *p.shape[1:])
                rows.copy_(rows[:1].expand_as(rows).clone())
        for conv in getattr(model.bbox_head, 'rtm_reg', []) if hasattr(model, 'bbox_head') \
                else []:
            # RTMDet regresses box sides linearly: positive distances (half a stride), as trained
            conv.weight.mul_(0.1)
            conv.bias.fill_(0.5)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def close_gates(model) -> int:
    """Set every SK gate of ``model`` to 0 (SK the identity); return how many."""
    gates = [m.gate for m in model.modules()
             if isinstance(m, (SKAttention, SKConv)) and m.gate is not None]
    with torch.no_grad():
        for gate in gates:
            gate.zero_()
    return len(gates)


def runs_without_mmdeploy(onnx_file: str, inputs: torch.Tensor, backend) -> None:
    """The graph has standard ONNX operators only (opset 16: RoiAlign and NonMaxSuppression
    are ONNX's): a plain ONNX Runtime session, without MMDeploy's custom-op library, gives
    what MMDeploy's wrapper gives."""
    import numpy as np
    import onnx
    import onnxruntime
    model = onnx.load(onnx_file)
    assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}
    assert [(o.domain, o.version) for o in model.opset_import] == [('', 16)]
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    plain = session.run(None, {'input': inputs.numpy()})
    wrapped = backend.wrapper({'input': inputs})
    assert len(plain) == len(wrapped)
    for a, b in zip(plain, wrapped.values()):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.parametrize('config', SK_CONFIGS)
def test_exports_and_matches_pytorch(config, tmp_path):
    cfg = mmdeploy_rules(Config.fromfile(osp.join(REPO, config)))
    cfg.model.backbone.init_cfg = None  # no ImageNet weights to download
    deploy_cfg = deploy_config(cfg)
    deploy_cfg.onnx_config.input_shape = (128, 128)
    checkpoint = write_checkpoint(cfg, str(tmp_path / 'model.pth'))
    img = write_image(str(tmp_path / 'img.png'), 100, 140)

    task_processor = sk_deploy.build_task_processor(cfg, deploy_cfg, 'cpu')
    model = task_processor.build_pytorch_model(checkpoint)
    data = sk_deploy.create_inputs(task_processor, model, img, deploy_cfg)
    assert sk_deploy.input_shape_of(data) == (128, 128)
    onnx_file = sk_deploy.export_end2end(model, data, deploy_cfg, str(tmp_path))
    assert onnx_file == str(tmp_path / 'end2end.onnx')
    ops = sk_deploy.onnx_op_counts(onnx_file)
    sk_units = sum(isinstance(m, (SKAttention, SKConv)) for m in model.modules())
    assert ops.get('Softmax', 0) >= sk_units > 0  # each SK unit selects with a softmax

    backend = sk_deploy.build_backend_detector(task_processor, onnx_file)
    ref = sk_deploy.predict(model, data)[0]
    ort = sk_deploy.predict(backend, data)[0]
    runs_without_mmdeploy(onnx_file, data['inputs'], backend)
    # MMDeploy's RTMDet graph leaves boxes unclipped (MMDetection clips them to the image;
    # neither clips YOLOX's): the boxes are compared inside the image
    h, w = data['data_samples'][0].ori_shape
    for result in (ref, ort):
        result.bboxes[:, 0::2] = result.bboxes[:, 0::2].clamp(0, w)
        result.bboxes[:, 1::2] = result.bboxes[:, 1::2].clamp(0, h)
    assert len(ref) >= 10 and float(ref.scores.max() - ref.scores.min()) > 0.01
    matches = sk_deploy.match_detections(ref, ort, top_k=10, iou_thr=0.999)
    summary = sk_deploy.matches_summary(matches)
    print(f'\nequal {config}: ops {sum(ops.values())}, PyTorch {len(ref)} detections, ONNX '
          f'Runtime {len(ort)}; top 10 matched {summary["matched"]}, smallest IoU '
          f'{summary["min_iou"]}, largest |score diff| {summary["max_score_diff"]}, smallest '
          f'mask IoU {summary["min_mask_iou"]}')
    assert summary['matched'] == 10, matches
    assert summary['max_score_diff'] <= 1e-4, matches
    if 'masks' in ref:
        assert ref.masks.shape[-2:] == ort.masks.shape[-2:] == (100, 140)
        assert summary['min_mask_iou'] > 0.99, matches

    # SK counts in what was compared: with its gates closed the detector predicts otherwise
    # (SKNet backbones have no gates: SK is their every block).
    if close_gates(model):
        closed = sk_deploy.predict(model, data)[0]
        again = sk_deploy.match_detections(ref, closed, top_k=10, iou_thr=0.999)
        assert any(m['index'] is None or abs(m['score_diff']) > 1e-3 for m in again)


def test_the_tool_end_to_end(tmp_path):
    """tools/deployment/deploy.py on the SK demo with the dynamic deploy config, two images of
    different shapes; then with the BatchNorms folded before the export."""
    config = tmp_path / 'demo_sk_mmdeploy_rules.py'  # the SK demo, MMDeploy's RPN rules
    config.write_text(f"_base_ = {DEMO_SK!r}\nmodel = dict(test_cfg=dict(rpn=dict("
                      "nms=dict(class_agnostic=True), min_bbox_size=-1)))\n")
    config = str(config)
    checkpoint = write_checkpoint(Config.fromfile(config), str(tmp_path / 'demo_sk.pth'))
    imgs = [write_image(str(tmp_path / 'a.png'), 150, 170),
            write_image(str(tmp_path / 'b.png'), 120, 200, seed=1)]
    dynamic = osp.join(DEPLOY, 'detection_onnxruntime_dynamic.py')
    for fold in ([], ['--fold-bn']):
        work_dir = tmp_path / f'wd{len(fold)}'
        out = subprocess.run(
            [sys.executable, osp.join(REPO, 'tools', 'deployment', 'deploy.py'), dynamic,
             config, checkpoint, imgs[0], '--test-img', imgs[1], '--work-dir', str(work_dir),
             '--device', 'cpu', '--rounds', '2', *fold], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (work_dir / 'end2end.onnx').exists()
        lines = out.stdout.splitlines()
        assert any(line.startswith(f'{imgs[0]} (input 192x192)') for line in lines)
        assert any(line.startswith(f'{imgs[1]} (input 128x192)') for line in lines)
        summaries = [line for line in lines if line.startswith('matched 10/10, smallest IoU ')]
        assert len(summaries) == 2
        assert all(float(line.split()[4].rstrip(',')) > 0.999 for line in summaries), summaries
        assert any(line.startswith('export: ') and '0 BatchNormalization' in line
                   for line in lines)
        assert any(line.startswith('latency on 192x192') for line in lines)


def test_static_graph_refuses_images_of_other_shapes(tmp_path):
    checkpoint = write_checkpoint(Config.fromfile(DEMO_SK), str(tmp_path / 'demo_sk.pth'))
    out = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'deployment', 'deploy.py'),
         osp.join(DEPLOY, 'detection_onnxruntime_static.py'), DEMO_SK, checkpoint,
         write_image(str(tmp_path / 'a.png'), 150, 170), '--test-img',
         write_image(str(tmp_path / 'b.png'), 120, 200), '--work-dir', str(tmp_path / 'wd')],
        capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert 'exports a static graph for the input shape' in out.stderr
    assert 'use a dynamic deploy config' in out.stderr
    assert not (tmp_path / 'wd' / 'end2end.onnx').exists()


def test_the_rpn_rules_are_what_differs(tmp_path):
    """The same random SKNet-50 Faster R-CNN under its config's own RPN rules: ONNX Runtime's
    top ten differ from PyTorch's (MMDeploy's RPN does not follow them); under MMDeploy's rules
    (``mmdeploy_rules``) they are equal."""
    config = 'configs/faster_rcnn_sknet50_fpn.py'
    results = {}
    for rules in ('config', 'mmdeploy'):
        cfg = Config.fromfile(osp.join(REPO, config))
        cfg.model.backbone.init_cfg = None
        if rules == 'mmdeploy':
            mmdeploy_rules(cfg)
        deploy_cfg = deploy_config(cfg)
        deploy_cfg.onnx_config.input_shape = (128, 128)
        checkpoint = write_checkpoint(cfg, str(tmp_path / 'model.pth'))
        task_processor = sk_deploy.build_task_processor(cfg, deploy_cfg, 'cpu')
        model = task_processor.build_pytorch_model(checkpoint)
        data = sk_deploy.create_inputs(task_processor, model,
                                       write_image(str(tmp_path / 'img.png'), 100, 140),
                                       deploy_cfg)
        onnx_file = sk_deploy.export_end2end(model, data, deploy_cfg, str(tmp_path / rules))
        backend = sk_deploy.build_backend_detector(task_processor, onnx_file)
        matches = sk_deploy.match_detections(sk_deploy.predict(model, data)[0],
                                             sk_deploy.predict(backend, data)[0], 10, 0.999)
        results[rules] = sk_deploy.matches_summary(matches)
        print(f'\nrules {config} {rules}: top 10 matched {results[rules]["matched"]} '
              f'(IoU > 0.999), smallest IoU {results[rules]["min_iou"]}, largest |score diff| '
              f'{results[rules]["max_score_diff"]}')
    assert results['config']['matched'] < 10
    assert results['mmdeploy']['matched'] == 10


def test_opset_16_computes_mmcv_roialign(tmp_path):
    """The SK demo with a random RPN (proposals thin as a line, clipped at the border) under
    MMDeploy's rules: exported with opset 11 (MMDeploy's), RoIs thinner than a feature cell
    are stretched to one cell and detections move; with opset 16 (configs/deploy/) they
    match."""
    cfg = mmdeploy_rules(Config.fromfile(DEMO_SK))
    checkpoint = write_checkpoint(cfg, str(tmp_path / 'model.pth'), rpn_scale=1.0)
    img = write_image(str(tmp_path / 'img.png'), 100, 140)
    results = {}
    for opset in (11, 16):
        deploy_cfg = deploy_config(cfg)
        deploy_cfg.onnx_config.input_shape = (128, 128)
        deploy_cfg.onnx_config.opset_version = opset
        task_processor = sk_deploy.build_task_processor(cfg, deploy_cfg, 'cpu')
        model = task_processor.build_pytorch_model(checkpoint)
        data = sk_deploy.create_inputs(task_processor, model, img, deploy_cfg)
        onnx_file = sk_deploy.export_end2end(model, data, deploy_cfg, str(tmp_path / str(opset)))
        backend = sk_deploy.build_backend_detector(task_processor, onnx_file)
        matches = sk_deploy.match_detections(sk_deploy.predict(model, data)[0],
                                             sk_deploy.predict(backend, data)[0], 20, 0.5)
        results[opset] = summary = sk_deploy.matches_summary(matches)
        moved = sum(m['index'] is None or m['iou'] < 0.999 for m in matches)
        print(f'\nopset {opset}: of the top 20, {moved} moved or unmatched; smallest IoU '
              f'{summary["min_iou"]}, largest |score diff| {summary["max_score_diff"]}')
        results[opset]['moved'] = moved
    assert results[16]['moved'] == 0 and results[16]['max_score_diff'] < 1e-4
    assert results[11]['moved'] > 0
