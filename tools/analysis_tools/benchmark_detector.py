#!/usr/bin/env python
"""Cost of the SK detectors against their MMDetection baselines: params, FLOPs, CPU latency.

    python tools/analysis_tools/benchmark_detector.py               # 512 x 512, < 10 min on 2 cores
    python tools/analysis_tools/benchmark_detector.py --shape 800 1333 --repeats 3
    python tools/analysis_tools/benchmark_detector.py --models 'faster-rcnn x50 SKConv'
    python tools/analysis_tools/benchmark_detector.py --quick       # tiny input (for tests)
    python tools/analysis_tools/benchmark_detector.py --models 'faster-rcnn r50 SK' --portable

Every model is built from its config (``init_cfg`` of the backbone set to None: nothing is
downloaded, then ``init_weights()``) and measured in one process, on one random (1, 3, H, W)
input padded to the preprocessor's divisor (the demo configs on their own 192 x 192, the scale
they train and test at, whatever ``--shape``); ``--models`` measures some models only, each with
its baseline:

* params, and FLOPs of the whole detector in ``mode='tensor'`` as
  ``tools/analysis_tools/get_flops.py`` counts them (MMEngine's counter: one multiply-add = 1 FLOP,
  operators without a rule count 0), and of backbone + neck alone;
* inference latency: ``mode='predict'`` in eval mode under ``torch.no_grad``, and of the
  backbone + neck alone (the part SK changes);
* train step latency: ``mode='loss'`` on three ground-truth boxes, backward, an SGD step
  with learning rate 0 (the work of a step; the weights stay those that were timed);

each the median of interleaved rounds (every model once per round, the order rotated).
With ``--portable`` every SK model is also timed as ``NAME portable``: the same weights with
Fuse and Select in plain operators (no fused autograd Function, no in-place select; what
``torch.compile`` and ONNX export see, and how SK ran before the Function), so the Function's
gain is measured in the same run.
A two-stage detector's RoI head costs in proportion to the number and size of the proposals
its RPN keeps, which depend on the (random) weights: for every two-stage model the RPN's test
NMS keeps all of them, up to ``test_cfg.rpn.max_per_img``
(:func:`mmdet_sk.utils.benchmark.fix_proposals`; the RoIs column counts them), and its
classification and regression convs are zero, so that it proposes the same anchors in every
model (:func:`mmdet_sk.utils.benchmark.build_benchmark_detector`).
"""
import argparse
import json
import logging
import os
import os.path as osp
import time
from typing import Callable

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from torch import nn

from mmdet_sk.utils.benchmark import (build_benchmark_detector, dummy_samples, fix_proposals,
                                      interleaved, num_classes, train_step)
from mmdet_sk.utils.block_benchmark import portable_copy
from mmdet_sk.utils.complexity import model_complexity

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

GCNET = 'mmdet::gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py'
DEMO_SHAPE = (192, 192)  # the demo configs' Resize scale
# (name, config, name of its baseline or None, input (H, W) or None for --shape)
MODELS = [
    ('faster-rcnn r50', 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', None, None),
    ('faster-rcnn r50 SK', 'configs/faster_rcnn_r50_sk_fpn.py', 'faster-rcnn r50', None),
    ('faster-rcnn r50 SKConv', 'configs/faster_rcnn_r50_skconv_fpn.py', 'faster-rcnn r50', None),
    ('faster-rcnn r50 GCNet', GCNET, 'faster-rcnn r50', None),
    # MMDetection's only X-50 Faster R-CNN has GN + WS: ours is its X-101 delta at depth 50.
    ('faster-rcnn x50', 'configs/faster_rcnn_x50_fpn.py', None, None),
    ('faster-rcnn x50 SKConv', 'configs/faster_rcnn_x50_skconv_fpn.py', 'faster-rcnn x50',
     None),
    ('faster-rcnn x50 SKNet', 'configs/faster_rcnn_sknet50_fpn.py', 'faster-rcnn x50', None),
    ('yolox-s', 'mmdet::yolox/yolox_s_8xb8-300e_coco.py', None, None),
    ('yolox-s SK', 'configs/yolox_s_sk_8xb8-300e_coco.py', 'yolox-s', None),
    ('rtmdet-tiny', 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', None, None),
    ('rtmdet-tiny SK', 'configs/rtmdet_tiny_sk_8xb32-300e_coco.py', 'rtmdet-tiny', None),
    ('rtmdet-s', 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py', None, None),
    ('rtmdet-s SK', 'configs/rtmdet_s_sk_8xb32-300e_coco.py', 'rtmdet-s', None),
    ('demo r18', 'configs/demo/faster-rcnn_r18_fpn_shapes.py', None, DEMO_SHAPE),
    ('demo r18 SK', 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py', 'demo r18', DEMO_SHAPE),
    ('demo r18 SKConv', 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py', 'demo r18',
     DEMO_SHAPE),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='input height and width (default: 512 512, --quick: 128 128)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='interleaved rounds (default: 3, --quick: 1)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny input, one round without warm-up (for tests)')
    parser.add_argument('--models', nargs='+', metavar='NAME', choices=[m[0] for m in MODELS],
                        help='measure these models (and their baselines) only; names: ' +
                        ', '.join(repr(m[0]) for m in MODELS))
    parser.add_argument('--portable', action='store_true',
                        help='also time each SK model with Fuse and Select in plain operators')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args()


def selected(names=None) -> list:
    """The entries of ``MODELS`` named in ``names`` and their baselines (all if None)."""
    if not names:
        return list(MODELS)
    keep = set(names) | {base for name, _, base, _ in MODELS if name in names and base}
    return [m for m in MODELS if m[0] in keep]


def load_cfg(config: str) -> Config:
    """The config of ``config``; for GCNet, Faster R-CNN with the GCNet config's plugins.

    MMDetection ships GCNet only on Mask R-CNN, so the anchor is the Faster R-CNN baseline with
    the backbone plugins (ContextBlock, ratio 1/16, stages c3-c5) of that config.
    """
    if config == GCNET:
        cfg = get_config(MODELS[0][1])
        cfg.model.backbone.plugins = get_config(GCNET).model.backbone.plugins
        return cfg
    # mmdet::x: MMDetection's packaged configs/x, found by MMEngine
    return get_config(config) if '::' in config else Config.fromfile(osp.join(ROOT, config))


class Features(nn.Module):
    """Backbone + neck of a detector as a module, for the FLOP counter."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor):
        return self.detector.extract_feat(x)


def main() -> None:
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmdet_sk  # noqa: F401  (registers the SK modules)

    args = parse_args()
    h, w = args.shape or ((128, 128) if args.quick else (512, 512))
    rounds = args.repeats or (1 if args.quick else 3)
    entries = selected(args.models)
    demo = any(shape is not None for *_, shape in entries)
    print(f'Detector benchmark on cpu: torch {torch.__version__}, {torch.get_num_threads()} '
          f'threads, load average at start {os.getloadavg()[0]:.2f} (other processes may '
          f'share the machine)\ninput (1, 3, {h}, {w})'
          f'{f" (demo configs: (1, 3, {DEMO_SHAPE[0]}, {DEMO_SHAPE[1]}))" if demo else ""} '
          f'padded to the preprocessor divisor; latency: median of {rounds} interleaved rounds'
          f'{"" if args.quick else " after a warm-up"}.\n'
          'GFLOPs: MMEngine counter, one multiply-add = 1; "all" is the whole detector in '
          'mode="tensor", "b+n" backbone + neck.\n/base: this model / its baseline. RoIs: '
          'proposals the RoI head received at inference (two-stage: RPN test NMS off, its\n'
          'cls/reg convs zero, so every model proposes the same anchors).')
    models, info, classes = {}, {}, {}
    logger = MMLogger.get_current_instance()
    level = logger.level
    # Quiet while building and counting: init_weights() logs every parameter and the counter
    # warns of every operator it has no rule for.
    logger.setLevel(logging.ERROR)
    start = time.perf_counter()
    for name, config, base, shape in entries:
        cfg = fix_proposals(load_cfg(config))
        models[name] = model = build_benchmark_detector(cfg)
        classes[name] = num_classes(cfg)
        divisor = cfg.model.data_preprocessor.get('pad_size_divisor', 1) or 1
        mh, mw = shape or (h, w)
        ph, pw = -(-mh // divisor) * divisor, -(-mw // divisor) * divisor
        flops = model_complexity(cfg, (ph, pw))
        with torch.no_grad():
            features = get_model_complexity_info(
                Features(model.eval()), inputs=(torch.rand(1, 3, ph, pw), ),
                show_table=False, show_arch=False)['flops']
        info[name] = dict(name=name, config=config, baseline=base, input=(ph, pw),
                          params=flops['params'], flops=flops['flops'], flops_bn=features,
                          rois=None)
        print(f'built and counted {name} in {time.perf_counter() - start:.0f} s', flush=True)
        if args.portable and any(hasattr(m, '_fuse_select_portable') for m in model.modules()):
            models[f'{name} portable'] = portable_copy(model)
            info[f'{name} portable'] = dict(info[name], name=f'{name} portable')
            classes[f'{name} portable'] = classes[name]
    logger.setLevel(level)

    def count_rois(name: str) -> Callable:

        def hook(module, args, out):
            if not module.training:
                info[name]['rois'] = int(args[1].shape[0])

        return hook

    infer, feat, train = {}, {}, {}
    for key, model in models.items():
        ph, pw = info[key]['input']
        x = torch.rand(1, 3, ph, pw, generator=torch.Generator().manual_seed(0))
        if hasattr(model, 'roi_head'):
            model.roi_head.bbox_roi_extractor.register_forward_hook(count_rois(key))

        def predict(model=model, x=x, s=dummy_samples(ph, pw, False)):
            model.eval()
            with torch.no_grad():
                model(x, s, mode='predict')

        def extract(model=model, x=x):
            model.eval()
            with torch.no_grad():
                model.extract_feat(x)

        infer[key], feat[key] = predict, extract
        train[key] = train_step(model, x, dummy_samples(ph, pw, True, classes[key]))

    for kind, fns in (('infer_ms', infer), ('features_ms', feat), ('train_ms', train)):
        for fn in fns.values() if not args.quick else ():
            fn()  # warm-up
        for key, ms in interleaved(fns, rounds, torch.device('cpu')).items():
            info[key][kind] = ms
        print(f'timed {kind[:-3]} at {time.perf_counter() - start:.0f} s', flush=True)
    nw = max(23, max(len(name) + 1 for name in info))  # the model column's width
    print(f'{"model":<{nw}}{"input":>9}{"params M":>9}{"/base":>7}{"GFLOPs all":>11}{"/base":>7}'
          f'{"GFLOPs b+n":>11}{"/base":>7}{"RoIs":>6}{"infer ms":>10}{"/base":>7}'
          f'{"b+n ms":>9}{"/base":>7}{"train ms":>10}{"/base":>7}')
    for key, r in info.items():
        base = info[r['baseline']] if r['baseline'] else r

        def cell(field, scale, spec, width):
            return f'{r[field] / scale:{width}{spec}}{r[field] / base[field]:7.3f}'

        print(f'{r["name"]:<{nw}}{"x".join(map(str, r["input"])):>9}{cell("params", 1e6, ".2f", 9)}'
              f'{cell("flops", 1e9, ".1f", 11)}{cell("flops_bn", 1e9, ".1f", 11)}'
              f'{r["rois"] if r["rois"] is not None else "-":>6}'
              f'{cell("infer_ms", 1, ".0f", 10)}{cell("features_ms", 1, ".0f", 9)}'
              f'{cell("train_ms", 1, ".0f", 10)}')
    print(f'{time.perf_counter() - start:.0f} s in all; load average at end '
          f'{os.getloadavg()[0]:.2f}')
    if args.json:
        meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), shape=(h, w),
                    demo_shape=DEMO_SHAPE, rounds=rounds)
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, models=list(info.values())), f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
