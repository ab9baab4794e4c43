#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Export a detector to ONNX Runtime through MMDeploy, check it against PyTorch, time both.

    python tools/deployment/deploy.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMG \\
        [--test-img IMG ...] --work-dir DIR --device cpu [--top-k 10] [--fold-bn] [--json OUT]

MMDeploy's ``tools/deploy.py`` arguments, in its order: the deploy config (e.g.
``configs/deploy/detection_onnxruntime_static.py``), the model config and checkpoint, the
image the graph is traced on. Before anything is built or traced, the deploy config's backend
(its package installed), the model config's ``custom_imports``, the checkpoint's keys, then
mmdeploy and its custom-op library are checked, in this order (:mod:`mmdet_sk.utils.deploy`;
all but the last need no mmdeploy): a failed check exits with status 2 and says what is wrong.
Then:

1. the model is built with MMDeploy's task processor, the checkpoint loaded (with
   ``--fold-bn``, every BatchNorm folded into its convolution, ``mmcv.cnn.fuse_conv_bn``);
2. ``WORK_DIR/end2end.onnx`` is exported as MMDeploy's ``torch2onnx`` exports it (timed);
3. ONNX Runtime (MMDeploy's ``End2EndModel``, its custom ops loaded) and PyTorch predict on
   each image (``IMG`` and ``--test-img``) from the same preprocessed input; the ``--top-k``
   highest-scoring PyTorch detections are matched with ONNX Runtime's (same label, largest
   box IoU, at least ``--iou-thr``) and printed with their IoU and score difference;
4. both are timed on the first image: the median of ``--rounds`` interleaved rounds, each
   prediction from the preprocessed input to the detections in the original image.

The exit status is 1 if some of the top-k PyTorch detections have no ONNX Runtime match.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config

from mmdet_sk.utils import deploy as sk_deploy
from mmdet_sk.utils.benchmark import interleaved


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('deploy_cfg', help='MMDeploy deploy config (configs/deploy/)')
    parser.add_argument('model_cfg', help='model config')
    parser.add_argument('checkpoint', help='model checkpoint')
    parser.add_argument('img', help='image the graph is traced on (and compared on)')
    parser.add_argument('--test-img', nargs='+', default=[],
                        help='more images to compare PyTorch and ONNX Runtime on')
    parser.add_argument('--work-dir', default=os.getcwd(),
                        help='where end2end.onnx is written (default: the current folder)')
    parser.add_argument('--device', default='cpu', help='cpu (what ONNX Runtime runs on here)')
    parser.add_argument('--top-k', type=int, default=10,
                        help='PyTorch detections to match per image (default: 10)')
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='smallest box IoU of a match (default: 0.5)')
    parser.add_argument('--rounds', type=int, default=10,
                        help='interleaved timing rounds; 0: no timing (default: 10)')
    parser.add_argument('--fold-bn', action='store_true',
                        help='fold every BatchNorm into its conv before the export')
    parser.add_argument('--json', help='also write the results to this file')
    return parser.parse_args(argv)


def check_inputs(args) -> tuple:
    """The loaded deploy and model configs, after every check that needs no tracing."""
    for path, what in ((args.deploy_cfg, 'deploy config'), (args.model_cfg, 'model config'),
                       (args.img, 'image'), *((p, 'test image') for p in args.test_img)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path} does not exist')
    if args.device != 'cpu':
        raise ValueError(f'--device {args.device}: this tool runs ONNX Runtime on the CPU '
                         f'(the CPU build of onnxruntime); use --device cpu')
    deploy_cfg = Config.fromfile(args.deploy_cfg)
    backend = sk_deploy.check_deploy_config(deploy_cfg, args.deploy_cfg,
                                            backends=('onnxruntime', ))
    model_cfg = Config.fromfile(args.model_cfg)
    sk_deploy.check_custom_imports(model_cfg, args.model_cfg)
    new_sk = sk_deploy.check_checkpoint_for_config(model_cfg, args.checkpoint)
    if new_sk:
        print(f'deploy.py: warning: {args.checkpoint}: {new_sk}; the exported detector pays '
              f'for SK without using it', file=sys.stderr)
    sk_deploy.check_mmdeploy(backend)
    return deploy_cfg, model_cfg


def format_matches(name: str, shape, n_ref: int, n_ort: int, matches: list) -> str:
    lines = [f'{name} (input {shape[0]}x{shape[1]}): PyTorch {n_ref} detections, ONNX Runtime '
             f'{n_ort}; the top {len(matches)} of PyTorch matched:',
             f'{"rank":>4} {"label":>5} {"score":>8} {"IoU":>8} {"score diff":>11}' +
             (f' {"mask IoU":>8}' if any('mask_iou' in m for m in matches) else '')]
    for m in matches:
        if m['index'] is None:
            lines.append(f'{m["rank"]:>4} {m["label"]:>5} {m["score"]:>8.4f} '
                         f'{"no match":>8} (best IoU {m["iou"]:.3f})')
            continue
        mask = f' {m["mask_iou"]:>8.4f}' if 'mask_iou' in m else ''
        lines.append(f'{m["rank"]:>4} {m["label"]:>5} {m["score"]:>8.4f} {m["iou"]:>8.5f} '
                     f'{m["score_diff"]:>11.2e}{mask}')
    s = sk_deploy.matches_summary(matches)
    if s['matched']:
        lines.append(f'matched {s["matched"]}/{s["total"]}, smallest IoU {s["min_iou"]:.5f}, '
                     f'largest |score diff| {s["max_score_diff"]:.2e}' +
                     (f', smallest mask IoU {s["min_mask_iou"]:.4f}'
                      if s['min_mask_iou'] is not None else ''))
    else:
        lines.append(f'matched 0/{s["total"]}')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mmdet_sk  # noqa: F401  (registers SK; the model config imports it too)
    from mmdet.utils import register_all_modules
    register_all_modules()
    try:
        deploy_cfg, model_cfg = check_inputs(args)
    except (FileNotFoundError, ImportError, RuntimeError, ValueError) as e:
        print(f'deploy.py: error: {e}', file=sys.stderr)
        return 2

    from mmcv.cnn import fuse_conv_bn
    task_processor = sk_deploy.build_task_processor(model_cfg, deploy_cfg, args.device)
    model = task_processor.build_pytorch_model(args.checkpoint)
    if args.fold_bn:
        model = fuse_conv_bn(model)
    images = [args.img] + list(args.test_img)
    datas = [sk_deploy.create_inputs(task_processor, model, img, deploy_cfg) for img in images]
    static = 'dynamic_axes' not in deploy_cfg.onnx_config
    shapes = [sk_deploy.input_shape_of(d) for d in datas]
    if static and len(set(shapes)) > 1:
        print(f'deploy.py: error: {args.deploy_cfg} exports a static graph for the input shape '
              f'of {args.img} ({shapes[0]}), but the test pipeline gives other images other '
              f'shapes ({", ".join(f"{p}: {s}" for p, s in zip(images, shapes))}); use a '
              f'dynamic deploy config (e.g. configs/deploy/detection_onnxruntime_dynamic.py) or '
              f'set onnx_config.input_shape', file=sys.stderr)
        return 2

    start = time.perf_counter()
    onnx_file = sk_deploy.export_end2end(model, datas[0], deploy_cfg, args.work_dir)
    export_s = time.perf_counter() - start
    ops = sk_deploy.onnx_op_counts(onnx_file)
    backend = sk_deploy.build_backend_detector(task_processor, onnx_file)

    report = dict(deploy_cfg=args.deploy_cfg, model_cfg=args.model_cfg,
                  checkpoint=args.checkpoint, onnx=onnx_file, fold_bn=args.fold_bn,
                  export_s=export_s, onnx_nodes=sum(ops.values()),
                  batch_norm_nodes=ops.get('BatchNormalization', 0), images=[])
    unmatched = 0
    for img, data, shape in zip(images, datas, shapes):
        ref = sk_deploy.predict(model, data)[0]
        ort = sk_deploy.predict(backend, data)[0]
        matches = sk_deploy.match_detections(ref, ort, args.top_k, args.iou_thr)
        print(format_matches(img, shape, len(ref), len(ort), matches))
        summary = sk_deploy.matches_summary(matches)
        unmatched += summary['total'] - summary['matched']
        report['images'].append(dict(image=img, input=list(shape), pytorch=len(ref),
                                     onnxruntime=len(ort), matches=matches, **summary))
    print(f'export: {export_s:.1f} s -> {onnx_file} ({sum(ops.values())} nodes, '
          f'{ops.get("BatchNormalization", 0)} BatchNormalization)')

    if args.rounds > 0:
        data = datas[0]
        fns = dict(pytorch=lambda: sk_deploy.predict(model, data),
                   onnxruntime=lambda: sk_deploy.predict(backend, data))
        for fn in fns.values():  # warm-up
            fn()
        ms = interleaved(fns, args.rounds, torch.device('cpu'))
        report['latency_ms'] = ms
        report['latency'] = dict(rounds=args.rounds, torch_threads=torch.get_num_threads(),
                                 load_average=os.getloadavg()[0])
        print(f'latency on {shapes[0][0]}x{shapes[0][1]} (cpu, torch {torch.get_num_threads()} '
              f'threads, median of {args.rounds} interleaved rounds, load average '
              f'{os.getloadavg()[0]:.2f}): PyTorch {ms["pytorch"]:.1f} ms, ONNX Runtime '
              f'{ms["onnxruntime"]:.1f} ms (ONNX Runtime / PyTorch = '
              f'{ms["onnxruntime"] / ms["pytorch"]:.3f})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 1 if unmatched else 0


if __name__ == '__main__':
    sys.exit(main())
