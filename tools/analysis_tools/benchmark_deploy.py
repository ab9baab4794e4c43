#!/usr/bin/env python
"""SK's cost at deployment: ONNX Runtime latency of each SK detector against its plain base.

    python tools/analysis_tools/benchmark_deploy.py [--rounds 10] [--models NAME ...]
        [--shape H W] [--json docs/benchmarks/deploy_onnxruntime.json]

Needs the deploy stack (``make deploy``: mmdeploy 1.3.1, onnxruntime 1.15.1). Every model is
built from its config as ``tools/analysis_tools/benchmark_detector.py`` builds it (no download,
``init_weights()``, trained-like BatchNorm statistics; a two-stage detector's RPN keeps
``test_cfg.rpn.max_per_img`` proposals, its classification and regression convs zero so that
every model proposes the same anchors: :func:`mmdet_sk.utils.benchmark.build_benchmark_detector`;
and its RoI head keeps ``max_per_img`` detections, :func:`fix_detections`; the ``dets`` column
counts the detections of each graph), its SK gates set to 0.5, and exported through MMDeploy with ``configs/deploy``'s static ONNX
Runtime config (instance-seg for Mask R-CNN) at one input shape: 512 x 512 (``--shape``),
640 x 640 for YOLOX and RTMDet (their test scale), 192 x 192 for the demo configs. Every SK
model is exported twice: as built, and with every BatchNorm folded into its convolution first
(``mmcv.cnn.fuse_conv_bn``; ``NAME folded``).

Timed: one ONNX Runtime session run (MMDeploy's wrapper, its custom ops loaded; the
preprocessed image in, ``dets``/``labels`` out), the median of ``--rounds`` interleaved rounds
of each group (a base and its SK models, the order rotated every round) after one warm-up
run each. The ratio of each model to its base comes from the same rounds.

The plain base of each SK config is the same config without SK: MMDetection's own config where
the SK config is its delta, and for the SKNet-50 detectors the same detector with MMDetection's
ResNeXt-50 32x4d (the backbone of ``configs/faster_rcnn_x50_fpn.py``), whose weights SKNet-50's
blocks extend.
"""
import argparse
import copy
import json
import logging
import os
import os.path as osp
import tempfile
import time

import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MMLogger

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.utils import deploy as sk_deploy
from mmdet_sk.utils.benchmark import (build_benchmark_detector, fix_proposals, interleaved,
                                      trained_like_norms)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
X50 = 'configs/faster_rcnn_x50_fpn.py'  # its backbone: MMDetection's ResNeXt-50 32x4d
DEMO, YOLO = (192, 192), (640, 640)
# (name, config, baseline or None, input (H, W) or None for --shape). 'x50:CONFIG' is CONFIG
# with the backbone of X50 (the SKNet-50 detector's plain base).
MODELS = [
    ('demo r18', 'configs/demo/faster-rcnn_r18_fpn_shapes.py', None, DEMO),
    ('demo r18 SK', 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py', 'demo r18', DEMO),
    ('demo r18 SKConv', 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py', 'demo r18', DEMO),
    ('faster-rcnn r50', 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', None, None),
    ('faster-rcnn r50 SK', 'configs/faster_rcnn_r50_sk_fpn.py', 'faster-rcnn r50', None),
    ('faster-rcnn r50 SKConv', 'configs/faster_rcnn_r50_skconv_fpn.py', 'faster-rcnn r50',
     None),
    ('faster-rcnn x50', X50, None, None),
    ('faster-rcnn x50 SKConv', 'configs/faster_rcnn_x50_skconv_fpn.py', 'faster-rcnn x50',
     None),
    ('faster-rcnn SKNet-50', 'configs/faster_rcnn_sknet50_fpn.py', 'faster-rcnn x50', None),
    ('retinanet x50', 'x50:configs/retinanet_sknet50_fpn.py', None, None),
    ('retinanet SKNet-50', 'configs/retinanet_sknet50_fpn.py', 'retinanet x50', None),
    ('retinanet r18', 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', None, None),
    ('retinanet SKNet-18', 'configs/retinanet_sknet18_fpn.py', 'retinanet r18', None),
    ('mask-rcnn x50', 'x50:configs/mask_rcnn_sknet50_fpn.py', None, None),
    ('mask-rcnn SKNet-50', 'configs/mask_rcnn_sknet50_fpn.py', 'mask-rcnn x50', None),
    ('yolox-s', 'mmdet::yolox/yolox_s_8xb8-300e_coco.py', None, YOLO),
    ('yolox-s SK', 'configs/yolox_s_sk_8xb8-300e_coco.py', 'yolox-s', YOLO),
    ('rtmdet-tiny', 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', None, YOLO),
    ('rtmdet-tiny SK', 'configs/rtmdet_tiny_sk_8xb32-300e_coco.py', 'rtmdet-tiny', YOLO),
    ('rtmdet-s', 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py', None, YOLO),
    ('rtmdet-s SK', 'configs/rtmdet_s_sk_8xb32-300e_coco.py', 'rtmdet-s', YOLO),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=(512, 512),
                        help='input of the Faster R-CNN, RetinaNet and Mask R-CNN models '
                        '(default: 512 512)')
    parser.add_argument('--rounds', type=int, default=10, help='interleaved rounds per group')
    parser.add_argument('--models', nargs='+', metavar='NAME', choices=[m[0] for m in MODELS],
                        help='these SK models (and their bases) only; names: ' +
                        ', '.join(repr(m[0]) for m in MODELS))
    parser.add_argument('--work-dir', help='keep the exported graphs here (default: a '
                        'temporary folder, removed at the end: they take gigabytes)')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args()


def load_cfg(config: str) -> Config:
    """The config named in ``MODELS``, its backbone's ``init_cfg`` dropped (no download)."""
    plain = config.startswith('x50:')
    path = config[4:] if plain else config
    cfg = get_config(path) if '::' in path else Config.fromfile(osp.join(ROOT, path))
    if plain:
        cfg.model.backbone = Config.fromfile(osp.join(ROOT, X50)).model.backbone
    cfg.model.backbone.init_cfg = None
    return cfg


def fix_detections(cfg: Config) -> Config:
    """Let a two-stage detector keep ``test_cfg.rcnn.max_per_img`` detections, always.

    The work after the RoI head (NMS, and Mask R-CNN's mask head, which runs on every
    detection) grows with the detections, and how many of its 80,000 candidates a random RoI
    head scores above ``score_thr`` depends on its weights (measured here: 0 in one model, 95
    in another): with ``score_thr=0`` every model keeps ``max_per_img`` (100).
    """
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn')
    if rcnn is not None:
        rcnn.score_thr = 0.0
    return cfg


def groups(names=None) -> list:
    """``[(base entry, [SK entries])]`` of ``MODELS`` (only those with an SK model in
    ``names``, if given)."""
    out = []
    for entry in MODELS:
        if entry[2] is not None:
            continue
        sks = [m for m in MODELS if m[2] == entry[0] and (not names or m[0] in names)]
        if sks:
            out.append((entry, sks))
    return out


def export(name: str, cfg: Config, model, shape, work_dir: str) -> dict:
    """Export ``model`` at ``shape`` (H, W); its ONNX Runtime session runner and graph facts."""
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    deploy_cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'deploy',
        f'{"instance-seg" if with_mask else "detection"}_onnxruntime_static.py'))
    deploy_cfg.onnx_config.input_shape = (shape[1], shape[0])  # MMDeploy's (W, H)
    import numpy as np
    img = np.random.RandomState(0).randint(0, 256, shape + (3, ), dtype=np.uint8)
    task_processor = sk_deploy.build_task_processor(cfg, deploy_cfg, 'cpu')
    data = sk_deploy.create_inputs(task_processor, model, img, deploy_cfg)
    out_dir = osp.join(work_dir, name.replace(' ', '_'))
    start = time.perf_counter()
    onnx_file = sk_deploy.export_end2end(model, data, deploy_cfg, out_dir)
    seconds = time.perf_counter() - start
    ops = sk_deploy.onnx_op_counts(onnx_file)
    backend = sk_deploy.build_backend_detector(task_processor, onnx_file)
    x = data['inputs']
    dets = backend.wrapper({'input': x})['dets']
    return dict(run=lambda: backend.wrapper({'input': x}),
                info=dict(name=name, input=list(x.shape[-2:]), export_s=seconds,
                          onnx_nodes=sum(ops.values()), conv=ops.get('Conv', 0),
                          batch_norm=ops.get('BatchNormalization', 0),
                          detections=int((dets[0, :, 4] > 0).sum()),
                          onnx_mb=osp.getsize(onnx_file) / 2**20))


def main() -> None:
    args = parse_args()
    sk_deploy.check_mmdeploy('onnxruntime')
    if args.work_dir:
        run(args, args.work_dir)
    else:  # the graphs take gigabytes: removed at the end
        with tempfile.TemporaryDirectory(prefix='benchmark_deploy_') as work_dir:
            run(args, work_dir)


def run(args: argparse.Namespace, work_dir: str) -> None:
    """Export, time and print every group of ``args.models``; write ``args.json``."""
    from mmcv.cnn import fuse_conv_bn
    from mmdet.utils import register_all_modules
    import onnxruntime
    register_all_modules()
    load = os.getloadavg()[0]
    print(f'ONNX Runtime {onnxruntime.__version__} (CPUExecutionProvider, default threads) on '
          f'{os.cpu_count()} CPUs, torch {torch.__version__}; load average at start {load:.2f} '
          f'(other processes may share the machine). Median ms of one session run over '
          f'{args.rounds} interleaved rounds per group; /base: this model / its base, same '
          f'rounds.', flush=True)
    logger = MMLogger.get_current_instance()
    results, header = [], False
    for base, sks in groups(args.models):
        runs, infos = {}, {}
        logger.setLevel(logging.ERROR)  # init_weights() and MMDeploy log every step
        for name, config, baseline, shape in [base] + sks:
            cfg = fix_detections(fix_proposals(load_cfg(config)))
            model = trained_like_norms(build_benchmark_detector(cfg)).eval()
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, (SKAttention, SKConv)) and m.gate is not None:
                        m.gate.fill_(0.5)
            shape = tuple(shape or args.shape)
            variants = [(name, model)]
            if baseline is not None:
                variants.append((f'{name} folded', fuse_conv_bn(copy.deepcopy(model))))
            for key, net in variants:
                exported = export(key, cfg, net, shape, work_dir)
                runs[key] = exported['run']
                infos[key] = dict(exported['info'], config=config,
                                  baseline=baseline if key == name else name)
                runs[key]()  # warm-up
        logger.setLevel(logging.INFO)
        ms = interleaved(runs, args.rounds, torch.device('cpu'))
        if not header:
            print(f'{"model":<30} {"input":>9} {"ms":>8} {"/base":>6} {"nodes":>6} {"Conv":>5} '
                  f'{"BN":>3} {"dets":>4} {"export s":>8}')
            header = True
        for key, info in infos.items():
            info['ms'] = ms[key]
            info['ratio'] = ms[key] / ms[info['baseline']] if info['baseline'] else None
            ratio = f'{info["ratio"]:.3f}' if info['ratio'] else '-'
            print(f'{key:<30} {"x".join(map(str, info["input"])):>9} {ms[key]:>8.1f} '
                  f'{ratio:>6} {info["onnx_nodes"]:>6} {info["conv"]:>5} '
                  f'{info["batch_norm"]:>3} {info["detections"]:>4} {info["export_s"]:>8.1f}',
                  flush=True)
            results.append(info)
    end_load = os.getloadavg()[0]
    print(f'load average at the end {end_load:.2f}')
    if args.json:
        meta = dict(onnxruntime=onnxruntime.__version__, torch=torch.__version__,
                    cpus=os.cpu_count(), rounds=args.rounds, shape=list(args.shape),
                    load_average=[load, end_load])
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, models=results), f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
