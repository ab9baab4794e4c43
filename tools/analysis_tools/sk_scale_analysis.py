#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Does SK pick larger kernels for larger inputs? The detection version of SKNet's Fig. 3.

Runs validation images through a trained detector at several input scales (the test pipeline's
``Resize`` scale times each factor), records the mean softmax weight of every SK branch per
backbone stage and neck level, also per COCO area bucket of the images (an image's bucket is
that of the median area of its ground-truth boxes), and writes into ``--out-dir``:

* ``sk_scale_weights.csv`` / ``.json``: mean weights per bucket, stage/level, scale, branch;
* ``sk_scale_weights.png``: weight of each branch versus scale, one panel per stage/level;
* ``sk_scale_large_by_bucket.png``: large-kernel weight versus scale per area bucket;
* ``sk_scale_verdicts.txt``: per stage/level, whether the weight of the branch with the largest
  receptive field rises with the scale (Spearman correlation and least-squares slope).

    python tools/analysis_tools/sk_scale_analysis.py CONFIG CHECKPOINT \\
        [--scales 0.5 1.0 1.5 2.0] [--num-images 40] [--out-dir DIR] [--cfg-options ...]
"""
import argparse
import os
import os.path as osp
import time

import mmdet_sk  # noqa: F401  (registers modules, allow-lists checkpoint contents)


def parse_args() -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='SK branch weights versus input scale')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--scales', type=float, nargs='+', default=[0.5, 1.0, 1.5, 2.0],
                        help='factors applied to the test pipeline Resize scale')
    parser.add_argument('--num-images', type=int, default=40,
                        help='use the first N images of the test set (0: all)')
    parser.add_argument('--split', choices=['test', 'val'], default='test',
                        help='take the images from test_dataloader or val_dataloader')
    parser.add_argument('--out-dir', default=None,
                        help='output folder (default: work_dirs/sk_scale_analysis/<config>)')
    parser.add_argument('--device', default=None, help='device (default: cuda:0 if available)')
    parser.add_argument('--tol', type=float, default=1e-3,
                        help='smallest change of the large-kernel weight that counts as a trend')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.config import Config

    from mmdet_sk.analysis import (collect_scale_selection, sk_groups, summarize,
                                   write_report)

    if len(set(args.scales)) < 2:
        raise SystemExit('--scales needs at least two distinct values')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if 'init_cfg' in cfg.model.get('backbone', {}):
        cfg.model.backbone.init_cfg = None  # the checkpoint has the weights: no download
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    model = init_detector(cfg, args.checkpoint, device=device)
    model.eval()

    dataset_cfg = cfg[f'{args.split}_dataloader'].dataset
    dataset = DATASETS.build(dataset_cfg)
    n = len(dataset) if args.num_images <= 0 else min(args.num_images, len(dataset))
    indices = list(range(n))
    out_dir = args.out_dir or osp.join(
        'work_dirs', 'sk_scale_analysis', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)

    print(f'{n} images x scales {args.scales} on {device}')
    start = time.perf_counter()
    weights, buckets = collect_scale_selection(model, dataset, dataset_cfg.pipeline,
                                               args.scales, indices)
    table = summarize(weights, buckets, indices)
    meta = dict(config=args.config, checkpoint=args.checkpoint, scales=list(args.scales),
                num_images=n, split=args.split,
                bucket_rule='image bucket = COCO area range of the median GT box area '
                '(w*h, original pixels; small < 32^2 <= medium < 96^2 <= large)',
                bucket_counts={b: sum(v == b for v in buckets.values())
                               for b in ('small', 'medium', 'large', None)},
                weight='softmax weight averaged over channels, images and the SK modules '
                'of a stage/level')
    meta['bucket_counts']['no_gt'] = meta['bucket_counts'].pop(None)
    final = write_report(out_dir, table, sk_groups(model), meta, tol=args.tol)
    print(f'done in {time.perf_counter() - start:.0f} s; images per bucket: '
          f'{meta["bucket_counts"]}')
    for verdict in final.values():
        print(verdict['line'])
    print(f'wrote {out_dir}/sk_scale_weights.{{csv,json,png}}, sk_scale_large_by_bucket.png, '
          f'sk_scale_verdicts.txt')


if __name__ == '__main__':
    main()
